//! The fan-in consumer out of fault-guard slots: its own trouble, never
//! counted against a producer. Alone in its test binary: it fills this
//! process's guard table, which every mapping the library makes takes a
//! slot of.

mod common;

use std::time::Duration;

use common::{sweep_and_drain, sweep_and_drain_all, TestNs};
use helix::fanin::{files, FanIn, FanInOptions, Producer};
use helix::shm::Mapping;

/// A lane file the consumer cannot map (its process out of memory, or of
/// guard slots) is left for the next scan. Before, it was refused as a
/// bad header and removed: the producer's record was lost, the report
/// blamed it, and, its epoch not spent, it was never told.
#[test]
fn a_lane_the_consumer_cannot_map_is_left_for_the_next_scan_not_refused() {
    let ns = TestNs::watched("fan-in out of guard slots", Duration::from_secs(60));
    let opts = FanInOptions { lanes: 1, lane_capacity: 4096, max_payload: 256, ..Default::default() };
    let mut fan = FanIn::create(&ns, "fan", &opts).unwrap();
    let mut p = Producer::attach(&ns, "fan").unwrap();
    p.try_send(1, b"kept").unwrap();
    let file = tempfile::tempfile().unwrap();
    file.set_len(4096).unwrap();
    let mut held = Vec::new();
    while let Ok(m) = Mapping::new(&file, false) {
        held.push(m);
        assert!(held.len() <= 4096, "the guard table never filled");
    }
    let (records, reports, unbindable) = sweep_and_drain_all(&mut fan);
    assert!(records.is_empty() && reports.is_empty(), "{records:?} {reports:?}");
    assert_eq!(unbindable.len(), 1, "said once: {unbindable:?}");
    assert!(unbindable[0].0 == 0 && unbindable[0].1.contains("cannot map it"), "{unbindable:?}");
    assert!(files::dir_path(&ns, "fan").join(files::lane_name(0)).exists(), "the lane file was removed");
    // Said once until it is taken.
    assert_eq!(sweep_and_drain_all(&mut fan).2, []);
    held.clear();
    let (records, reports) = sweep_and_drain(&mut fan);
    assert_eq!((records, reports.len()), (vec![b"kept".to_vec()], 0));
}
