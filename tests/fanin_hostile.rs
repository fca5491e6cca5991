//! A hostile producer (garbage in its lane, a stall, a shrunk lane file)
//! hurts only its own lane; the consumer reports it and goes on. And the
//! fan-in ring's life: lanes freed and taken again, a consumer restarted,
//! the allow-list, options.

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use common::TestNs;
use helix::fanin::layout::{BellHeader, LaneState, FANIN_HEADER_SIZE, LANE_FREE, LANE_HEADER_SIZE};
use helix::fanin::{
    files, Event, FanIn, FanInError, FanInOptions, LaneFault, LaneProblem, LaneReport, Producer, SendError,
};

const RING: &str = "fan";

fn opts(lanes: u32) -> FanInOptions {
    FanInOptions { lanes, lane_capacity: 4096, max_payload: 256, ..Default::default() }
}

/// A record as (lane, seq, payload).
type Got = (usize, u64, Vec<u8>);

/// Drains one round: the records, and the reports.
fn drain(fan: &mut FanIn) -> (Vec<Got>, Vec<LaneReport>) {
    let (mut records, mut reports) = (Vec::new(), Vec::new());
    fan.drain_timeout(1000, Duration::ZERO, |e| match e {
        Event::Record(r) => records.push((r.lane, r.seq, r.to_vec().unwrap())),
        Event::Dropped(report) => reports.push(report),
        Event::Unbindable { lane, reason } => panic!("lane {lane}: {reason}"),
    });
    (records, reports)
}

/// A ring of two lanes, a good producer and a bad one, and the bad one's
/// lane file.
fn good_and_bad(what: &'static str) -> (TestNs, FanIn, Producer, Producer, std::path::PathBuf) {
    let ns = TestNs::watched(what, Duration::from_secs(60));
    let fan = FanIn::create(&ns, RING, &opts(2)).unwrap();
    let good = Producer::attach(&ns, RING).unwrap();
    let bad = Producer::attach(&ns, RING).unwrap();
    let path = files::dir_path(&ns, RING).join(files::lane_name(bad.lane()));
    (ns, fan, good, bad, path)
}

/// Where the hostile producer's fourth record starts in its lane file.
const FOURTH: u64 = LANE_HEADER_SIZE as u64 + 3 * 56;

/// A good producer and a hostile one; `harm` does its worst to the
/// hostile one's lane file once it published 3 records, the consumer read
/// them, and it published a fourth (at [`FOURTH`]). Returns the
/// consumer's one report; checks the good lane lost nothing.
fn good_beside_hostile(harm: impl FnOnce(&std::fs::File)) -> LaneReport {
    let (ns, mut fan, mut good, mut bad, path) = good_and_bad("hostile producer");
    for i in 0..3u8 {
        bad.try_send(0, &[i; 40]).unwrap();
    }
    let (records, reports) = drain(&mut fan);
    assert_eq!((records.len(), reports.len()), (3, 0));
    bad.try_send(0, &[3; 40]).unwrap();
    let file = OpenOptions::new().read(true).write(true).open(&path).unwrap();
    harm(&file);
    let mut got = Vec::new();
    let mut reports = Vec::new();
    for i in 0..200u32 {
        good.try_send(1, &i.to_ne_bytes()).unwrap();
        let (r, mut d) = drain(&mut fan);
        got.extend(r.into_iter().filter(|r| r.0 == good.lane()).map(|r| r.2));
        reports.append(&mut d);
    }
    let want: Vec<Vec<u8>> = (0..200u32).map(|i| i.to_ne_bytes().to_vec()).collect();
    assert_eq!(got, want, "the good lane lost or reordered records");
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert!(!path.exists(), "the bad lane's file is still there");
    // The bad producer learns it was dropped once its lane fills.
    let err = loop {
        match bad.try_send(0, &[9; 200]) {
            Ok(()) => {}
            Err(e) => break e,
        }
    };
    let revoked = SendError::Revoked { lane: bad.lane(), epoch: bad.epoch() };
    // Its own mapping of a file shrunk under it is damaged, too.
    assert!(err == revoked || err == SendError::Damaged { lane: bad.lane() }, "{err}");
    let report = reports.pop().unwrap();
    assert_eq!((report.lane, report.uid, report.pid), (bad.lane(), helix::process::my_uid(), std::process::id()));
    // The lane is free again.
    drop(bad);
    let again = Producer::attach(&ns, RING).unwrap();
    assert_eq!(again.epoch(), report.epoch + 1);
    report
}

#[test]
fn a_garbage_head_drops_only_that_lane() {
    let report = good_beside_hostile(|f| f.write_all_at(&13u64.to_ne_bytes(), 128).unwrap());
    assert_eq!(report.problem, LaneProblem::Protocol(LaneFault::Misaligned { head: 13 }));
    assert!(report.to_string().contains("head 13 is not a multiple of 8; lane dropped"), "{report}");
}

#[test]
fn a_garbage_record_length_drops_only_that_lane() {
    let report = good_beside_hostile(|f| {
        f.write_all_at(&0xFFFF_0000u32.to_ne_bytes(), FOURTH).unwrap();
    });
    assert_eq!(report.problem, LaneProblem::Protocol(LaneFault::TooLong { at: 168, len: 0xFFFF_0000, max: 256 }));
    assert!(report.to_string().contains("claims 4294901760 payload bytes; the maximum is 256"), "{report}");
}

#[test]
fn a_forged_sequence_drops_only_that_lane() {
    let report = good_beside_hostile(|f| f.write_all_at(&77u64.to_ne_bytes(), FOURTH + 8).unwrap());
    assert_eq!(report.problem, LaneProblem::Protocol(LaneFault::Sequence { at: 168, found: 77, expected: 4 }));
}

#[test]
fn a_shrunk_lane_file_drops_only_that_lane_and_faults_nobody() {
    let report = good_beside_hostile(|f| f.set_len(0).unwrap());
    assert_eq!(report.problem, LaneProblem::Protocol(LaneFault::Shrunk));
}

#[test]
fn a_lane_file_of_the_wrong_size_is_never_mapped_as_a_lane() {
    let ns = TestNs::new();
    let mut fan = FanIn::create(&ns, RING, &opts(1)).unwrap();
    let p = Producer::attach(&ns, RING).unwrap();
    let path = files::dir_path(&ns, RING).join(files::lane_name(p.lane()));
    OpenOptions::new().write(true).open(&path).unwrap().set_len(100).unwrap();
    let (_, reports) = drain(&mut fan);
    assert_eq!(reports.len(), 1);
    let want = format!("its file is not a lane of this ring: it is 100 bytes, not a regular file of {}", 512 + 4096);
    assert!(reports[0].to_string().contains(&want), "{}", reports[0]);
    assert!(!path.exists());
}

#[test]
fn a_stalled_lane_holds_back_nobody() {
    let ns = TestNs::watched("stalled lane", Duration::from_secs(60));
    let mut fan = FanIn::create(&ns, RING, &opts(2)).unwrap();
    let mut stalled = Producer::attach(&ns, RING).unwrap();
    let mut good = Producer::attach(&ns, RING).unwrap();
    // Written, never published; then it fills its lane and stops.
    while stalled.try_push(0, &[1; 100]).is_ok() {}
    for i in 0..1000u32 {
        good.send_timeout(1, &i.to_ne_bytes(), Duration::from_secs(10)).unwrap();
        let (records, reports) = drain(&mut fan);
        assert!(reports.is_empty(), "{reports:?}");
        assert_eq!(records, [(good.lane(), i as u64 + 1, i.to_ne_bytes().to_vec())]);
    }
    assert_eq!(stalled.pending(), 4096 / 120);
}

#[test]
fn a_producer_that_leaves_frees_its_lane_after_its_records_are_read() {
    let ns = TestNs::watched("lane churn", Duration::from_secs(60));
    let mut fan = FanIn::create(&ns, RING, &opts(1)).unwrap();
    let mut a = Producer::attach(&ns, RING).unwrap();
    let err = Producer::attach(&ns, RING).err().unwrap();
    assert!(matches!(err, FanInError::NoFreeLane { lanes: 1, .. }), "{err}");
    assert_eq!(err.to_string(), "every one of the 1 lanes of fan-in ring \"fan\" is taken");
    a.try_push(3, b"last words").unwrap();
    drop(a);
    let (records, _) = drain(&mut fan);
    assert_eq!(records, [(0, 1, b"last words".to_vec())]);
    let b = Producer::attach(&ns, RING).unwrap();
    assert_eq!((b.lane(), b.epoch()), (0, 2));
    drain(&mut fan);
    let stats = fan.stats();
    assert_eq!((stats.reclaimed, stats.lanes[0].leases), (1, 2));
}

#[test]
fn a_restarted_consumer_resumes_where_the_last_one_released() {
    let ns = TestNs::watched("consumer restart", Duration::from_secs(60));
    let mut fan = FanIn::create(&ns, RING, &opts(1)).unwrap();
    let mut p = Producer::attach(&ns, RING).unwrap();
    for i in 0..10u8 {
        p.try_send(0, &[i]).unwrap();
    }
    let mut first = Vec::new();
    fan.drain_timeout(4, Duration::ZERO, |e| {
        if let Event::Record(r) = e {
            first.push(r.seq)
        }
    });
    assert_eq!(first, [1, 2, 3, 4]);
    let err = FanIn::attach(&ns, RING).err().unwrap();
    assert!(matches!(err, FanInError::ConsumerHeld { pid, .. } if pid == std::process::id()), "{err}");
    drop(fan);
    let mut fan = attach_consumer(&ns);
    let (records, reports) = drain(&mut fan);
    assert!(reports.is_empty(), "{reports:?}");
    assert_eq!(records.iter().map(|r| r.1).collect::<Vec<_>>(), (5..=10).collect::<Vec<u64>>());
}

/// Found by review: a lane file the consumer drops while attaching (made
/// or spoiled while helixd restarted) was counted in `faults` and nothing
/// else, so nobody was told whose lane it was or why. The first drain
/// after the attach reports it.
#[test]
fn a_lane_dropped_while_the_consumer_attaches_is_reported_by_its_first_drain() {
    let (ns, fan, mut p) = one_bound_producer("dropped at attach", 2);
    p.try_send(0, b"lost with the lane").unwrap();
    drop(fan);
    // While no consumer runs, the producer pushes its epoch ahead.
    let path = files::dir_path(&ns, RING).join(files::lane_name(p.lane()));
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    let epoch = std::mem::offset_of!(helix::fanin::layout::LaneHeader, epoch) as u64;
    file.write_all_at(&(p.epoch() + 5).to_ne_bytes(), epoch).unwrap();
    let mut fan = attach_consumer(&ns);
    assert_eq!(fan.stats().faults, 1, "dropped at attach");
    let (records, reports) = drain(&mut fan);
    assert!(records.is_empty(), "{records:?}");
    assert_eq!(reports.len(), 1, "{reports:?}");
    let r = &reports[0];
    assert_eq!((r.lane, r.pid, r.epoch), (p.lane(), std::process::id(), p.epoch() + 5));
    assert!(r.to_string().contains("is not the lane's next"), "{r}");
    // Told once.
    assert_eq!(sweep_and_drain(&mut fan), (vec![], vec![]));
    assert!(!path.exists(), "the dropped file is still there");
}

/// Found by review: refusing a lane file of the lane's next epoch freed
/// the lane's name first and spent the epoch after. An honest producer
/// that linked its file in between had read the epoch unspent, so its
/// link check passed and it published; then its file was refused as of a
/// spent epoch, reported as its fault, and its records were lost. The
/// producer's check holds only if nobody finds the name free while the
/// refused file's epoch is unspent: a thread plants a file of the next
/// epoch that is no lane file, watches the name while the consumer
/// refuses it, and reads the epoch once the name is free. (A race: the
/// old order showed the unspent epoch in 995 to 1,000 of 1,000 rounds.)
#[test]
fn a_refused_file_of_the_next_epoch_has_its_epoch_spent_before_its_name_is_free() {
    use helix::fanin::layout::{lane_file_size, LaneHeader};
    use std::sync::mpsc;
    let ns = TestNs::watched("refused next epoch", Duration::from_secs(120));
    let mut fan = FanIn::create(&ns, RING, &opts(1)).unwrap();
    let dir = files::dir_path(&ns, RING);
    let (planted_tx, planted) = mpsc::channel();
    let (refused_tx, refused) = mpsc::channel::<()>();
    let watcher = std::thread::spawn(move || {
        let ring = std::fs::File::open(dir.join(files::RING_FILE)).unwrap();
        let lane = dir.join(files::lane_name(0));
        let at = (FANIN_HEADER_SIZE + std::mem::offset_of!(LaneState, epoch)) as u64;
        let epoch_now = || {
            let mut word = [0u8; 8];
            ring.read_exact_at(&mut word, at).unwrap();
            u64::from_ne_bytes(word)
        };
        let mut unspent = 0;
        for round in 0..1000 {
            // The lane's next epoch, in a file of the right size that is
            // no lane file (no magic): refused, and the epoch spent.
            let next = epoch_now() + 1;
            let mut file = vec![0u8; lane_file_size(4096) as usize];
            let epoch = std::mem::offset_of!(LaneHeader, epoch);
            file[epoch..epoch + 8].copy_from_slice(&next.to_ne_bytes());
            let tmp = lane.with_file_name(format!("planted.{round}"));
            std::fs::write(&tmp, &file).unwrap();
            std::fs::hard_link(&tmp, &lane).unwrap();
            std::fs::remove_file(&tmp).unwrap();
            planted_tx.send(()).unwrap();
            while lane.exists() {}
            let seen = epoch_now();
            unspent += (seen < next) as u32;
            refused.recv().unwrap();
            assert_eq!(epoch_now(), next, "round {round}: the refusal spent no epoch");
        }
        unspent
    });
    let mut reports = 0;
    while planted.recv().is_ok() {
        let (records, dropped) = sweep_and_drain(&mut fan);
        assert!(records.is_empty(), "{records:?}");
        reports += dropped.len();
        let _ = refused_tx.send(());
    }
    let unspent = watcher.join().unwrap();
    assert_eq!(reports, 1000, "each planted file is refused and reported once");
    assert_eq!(unspent, 0, "rounds in which the name was free before the refused file's epoch was spent");
}

/// A ring of `lanes` lanes, and a producer whose lane the consumer bound.
fn one_bound_producer(what: &'static str, lanes: u32) -> (TestNs, FanIn, Producer) {
    let ns = TestNs::watched(what, Duration::from_secs(60));
    let mut fan = FanIn::create(&ns, RING, &opts(lanes)).unwrap();
    let p = Producer::attach(&ns, RING).unwrap();
    assert_eq!(sweep_and_drain(&mut fan), (vec![], vec![]));
    (ns, fan, p)
}

#[test]
fn a_consumer_killed_while_binding_a_lane_loses_none_of_its_records() {
    // Binding stores the lane's epoch, then its status: a consumer killed
    // between the two left the producer publishing (it saw its epoch),
    // and the next consumer refused its lane file as of a wrong epoch,
    // with every record in it.
    let (ns, fan, mut p) = one_bound_producer("killed while binding", 1);
    p.try_send(0, b"kept").unwrap();
    drop(fan);
    // The state of the kill: lane 0's status still free.
    let ring = OpenOptions::new().write(true).open(files::dir_path(&ns, RING).join(files::RING_FILE)).unwrap();
    let status = FANIN_HEADER_SIZE + std::mem::offset_of!(LaneState, status);
    ring.write_all_at(&LANE_FREE.to_ne_bytes(), status as u64).unwrap();
    let mut fan = attach_consumer(&ns);
    let (records, reports) = sweep_and_drain(&mut fan);
    assert!(reports.is_empty(), "{reports:?}");
    assert_eq!(records, [(0, 1, b"kept".to_vec())]);
    p.try_send(0, b"more").expect("the lane is still the producer's");
    assert_eq!(drain(&mut fan).0, [(0, 2, b"more".to_vec())]);
}

#[test]
fn a_lane_file_removed_while_bound_is_dropped_and_its_lane_given_to_the_next_producer() {
    // A live producer that removed its own lane file (or an operator who
    // did) kept the lane bound to it for ever: the next producer's file
    // under the free name was never bound, and it waited without end.
    let (ns, mut fan, mut a) = one_bound_producer("lane file removed", 2);
    a.try_send(0, b"read").unwrap();
    let k = a.lane();
    assert_eq!(drain(&mut fan).0, [(k, 1, b"read".to_vec())]);
    std::fs::remove_file(files::dir_path(&ns, RING).join(files::lane_name(k))).unwrap();
    a.try_send(0, b"dropped with the lane, reported").unwrap();
    let mut b = Producer::attach(&ns, RING).unwrap();
    assert_eq!(b.lane(), k, "the next producer takes the free name");
    b.try_send(1, b"hi").unwrap();
    let (records, reports) = sweep_and_drain(&mut fan);
    assert_eq!(records, [(k, 1, b"hi".to_vec())], "the new file is bound");
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert!(reports[0].to_string().contains("its file was removed or renamed while bound"), "{}", reports[0]);
    // The one that removed its file has lost its lane.
    let err = loop {
        match a.try_send(0, &[9; 200]) {
            Ok(()) => {}
            Err(e) => break e,
        }
    };
    assert!(matches!(err, SendError::Revoked { .. }), "{err}");
}

#[test]
fn a_producer_that_puts_the_attach_count_back_keeps_no_lane_from_being_bound() {
    // Any producer may write the doorbell's `attach_seq`; put back after
    // another producer's bump, the consumer never bound that producer's
    // lane (unless swept), and it waited for ever.
    let ns = TestNs::watched("attach count reset", Duration::from_secs(60));
    let mut fan = FanIn::create(&ns, RING, &opts(2)).unwrap();
    let bell =
        OpenOptions::new().read(true).write(true).open(files::dir_path(&ns, RING).join(files::BELL_FILE)).unwrap();
    let at = std::mem::offset_of!(BellHeader, attach_seq) as u64;
    let mut before = [0u8; 4];
    bell.read_exact_at(&mut before, at).unwrap();
    let mut p = Producer::attach(&ns, RING).unwrap();
    bell.write_all_at(&before, at).unwrap();
    p.try_send(0, b"x").unwrap();
    // Drains only, as a consumer that never sweeps.
    let mut got = Vec::new();
    while got.is_empty() {
        got = drain_for(&mut fan, Duration::from_millis(500));
    }
    assert_eq!(got, [(p.lane(), 1, b"x".to_vec())]);
}

/// What one `drain_timeout` of up to `wait` delivers.
fn drain_for(fan: &mut FanIn, wait: Duration) -> Vec<Got> {
    let mut records = Vec::new();
    fan.drain_timeout(16, wait, |e| {
        if let Event::Record(r) = e {
            records.push((r.lane, r.seq, r.to_vec().unwrap()))
        }
    });
    records
}

#[test]
fn the_allow_list_and_the_options_are_enforced() {
    let ns = TestNs::new();
    let me = helix::process::my_uid();
    let opts = FanInOptions { allow_uids: vec![me.wrapping_add(1)], ..opts(1) };
    let _fan = FanIn::create(&ns, RING, &opts).unwrap();
    let err = Producer::attach(&ns, RING).err().unwrap();
    assert_eq!(err.to_string(), format!("uid {me} may not produce into fan-in ring \"fan\" (not on its allow-list)"));
    let err = FanIn::create(&ns, RING, &opts).err().unwrap();
    assert!(matches!(err, FanInError::Exists { .. }), "{err}");
    let bad = FanInOptions { lane_capacity: 100, ..Default::default() };
    let err = FanIn::create(&ns, "other", &bad).err().unwrap();
    assert!(err.to_string().starts_with("fan-in option `lane_capacity`: 100 is not a power of two"), "{err}");
    let err = Producer::attach(&ns, "missing").err().unwrap();
    assert!(matches!(err, FanInError::NotFound { .. }), "{err}");
}

/// A child forked by another thread while the ring is being made inherits
/// its files until it execs; the consumer's lease must not be taken from
/// under the creator by that (it was: `create` reopened the file and found
/// the creation lock still held by such a child, `ConsumerHeld`).
#[test]
fn creating_rings_while_another_thread_forks_never_finds_the_consumer_lease_taken() {
    let ns = TestNs::watched("create while forking", Duration::from_secs(120));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let forker = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = std::process::Command::new("true").status();
            }
        })
    };
    for _ in 0..300 {
        let fan = FanIn::create(&ns, RING, &opts(1)).unwrap();
        drop(fan);
        FanIn::unlink(&ns, RING).unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    forker.join().unwrap();
}

/// Sweeps once and drains a few rounds: the records and the reports.
fn sweep_and_drain(fan: &mut FanIn) -> (Vec<Got>, Vec<LaneReport>) {
    let mut reports = Vec::new();
    fan.sweep(|e| {
        if let Event::Dropped(r) = e {
            reports.push(r)
        }
    });
    let mut records = Vec::new();
    for _ in 0..4 {
        let (mut r, mut d) = drain(fan);
        records.append(&mut r);
        reports.append(&mut d);
    }
    (records, reports)
}

#[test]
fn a_fifo_planted_under_a_lane_name_neither_blocks_the_consumer_nor_takes_the_lane() {
    // Found by review: the consumer opened lane files without O_NONBLOCK,
    // and a FIFO's open blocks until a writer comes (the watchdog fails
    // the test if the sweep hangs).
    let ns = TestNs::watched("a FIFO as a lane file", Duration::from_secs(60));
    let mut fan = FanIn::create(&ns, RING, &opts(2)).unwrap();
    let path = files::dir_path(&ns, RING).join(files::lane_name(0));
    let made = std::process::Command::new("mkfifo").arg(&path).status().unwrap();
    assert!(made.success());
    let (records, reports) = sweep_and_drain(&mut fan);
    assert!(records.is_empty());
    assert!(reports.iter().any(|r| r.lane == 0), "the FIFO is not reported: {reports:?}");
    let mut p = Producer::attach(&ns, RING).unwrap();
    p.try_send(1, b"after the fifo").unwrap();
    let (records, _) = sweep_and_drain(&mut fan);
    assert_eq!(records.iter().map(|r| r.2.as_slice()).collect::<Vec<_>>(), [b"after the fifo"]);
}

#[test]
fn a_producer_cannot_push_its_lanes_epoch_ahead_for_the_producers_after_it() {
    // Found by review: the consumer took any epoch above the lane's, so a
    // producer claiming u64::MAX left the next producer an epoch that
    // overflowed (a panic, or a lane whose records were thrown away).
    let ns = TestNs::watched("a forged epoch", Duration::from_secs(60));
    let mut fan = FanIn::create(&ns, RING, &opts(1)).unwrap();
    let hostile = Producer::attach(&ns, RING).unwrap();
    let path = files::dir_path(&ns, RING).join(files::lane_name(hostile.lane()));
    OpenOptions::new().write(true).open(&path).unwrap().write_at(&u64::MAX.to_le_bytes(), 40).unwrap();
    let (_, reports) = sweep_and_drain(&mut fan);
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert!(reports[0].to_string().contains("epoch"), "{}", reports[0]);
    drop(hostile);
    let mut honest = Producer::attach(&ns, RING).unwrap();
    assert_eq!(honest.epoch(), 1);
    for i in 0..10u32 {
        honest.try_send(1, &i.to_ne_bytes()).unwrap();
    }
    let (records, reports) = sweep_and_drain(&mut fan);
    assert!(reports.is_empty(), "{reports:?}");
    assert_eq!(records.len(), 10, "the honest producer's records were lost");
}

/// Garbage inside a published batch: a producer claims room for five
/// records at once, publishes them with one store, then rewrites the third
/// one's length. The consumer delivers the two before it, drops the lane
/// at it (naming the record), and the other lane, publishing batches of
/// its own meanwhile, loses nothing.
#[test]
fn garbage_inside_a_batch_is_caught_and_the_other_lanes_are_unharmed() {
    let (_ns, mut fan, mut good, mut bad, path) = good_and_bad("garbage inside a batch");
    let mut batch = bad.try_claim_batch(5, 40).unwrap();
    assert_eq!(batch.claimed(), 5);
    for i in 0..5u8 {
        batch.push(0, &[i; 40]).unwrap();
    }
    assert_eq!(batch.commit(), 5);
    let third = LANE_HEADER_SIZE as u64 + 2 * 56;
    let file = OpenOptions::new().read(true).write(true).open(&path).unwrap();
    file.write_all_at(&0xFFFF_0000u32.to_ne_bytes(), third).unwrap();
    let (mut got, mut reports) = (Vec::new(), Vec::new());
    for round in 0..40u64 {
        let mut b = good.try_claim_batch(5, 8).unwrap();
        for i in 0..5 {
            b.push(1, &(round * 5 + i).to_ne_bytes()).unwrap();
        }
        b.commit();
        let (r, mut d) = drain(&mut fan);
        got.extend(r);
        reports.append(&mut d);
    }
    let from_bad: Vec<Got> = got.iter().filter(|r| r.0 == bad.lane()).cloned().collect();
    assert_eq!(from_bad, [(bad.lane(), 1, vec![0; 40]), (bad.lane(), 2, vec![1; 40])]);
    let from_good: Vec<Vec<u8>> = got.into_iter().filter(|r| r.0 == good.lane()).map(|r| r.2).collect();
    assert_eq!(from_good, (0..200u64).map(|i| i.to_ne_bytes().to_vec()).collect::<Vec<_>>());
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!(reports[0].lane, bad.lane());
    assert_eq!(reports[0].problem, LaneProblem::Protocol(LaneFault::TooLong { at: 112, len: 0xFFFF_0000, max: 256 }));
    assert!(!path.exists(), "the bad lane's file is still there");
}

/// A batch refuses what it has no room for: a record longer than the ring
/// allows, one past the room it claimed (a lane of 4096 bytes holds 73
/// records of 40 bytes, 56 each: a 74th), and one longer than the room left
/// holds; what it did push arrives whole, and nothing past it.
#[test]
fn a_batch_refuses_records_past_its_room() {
    let ns = TestNs::new();
    let mut fan = FanIn::create(&ns, RING, &opts(1)).unwrap();
    let mut p = Producer::attach(&ns, RING).unwrap();
    let mut batch = p.try_claim_batch(100, 40).unwrap();
    assert_eq!(batch.claimed(), 73);
    assert_eq!(batch.push(0, &[0; 257]), Err(SendError::TooLarge { len: 257, max: 256 }));
    for i in 0..72u8 {
        batch.push(0, &[i; 40]).unwrap();
    }
    // 64 bytes are left: a record of 56 takes 72.
    assert_eq!(batch.push(0, &[9; 56]), Err(SendError::BatchFull { claimed: 73 }));
    batch.push(0, &[72; 40]).unwrap();
    assert_eq!(batch.push(0, &[0; 0]), Err(SendError::BatchFull { claimed: 73 }));
    assert_eq!(batch.commit(), 73);
    let (records, reports) = drain(&mut fan);
    assert!(reports.is_empty(), "{reports:?}");
    let want: Vec<Got> = (0..73u8).map(|i| (0, i as u64 + 1, vec![i; 40])).collect();
    assert_eq!(records, want);
    assert_eq!(p.try_claim_batch(1, 40).unwrap().claimed(), 1);
}

/// Becomes the consumer of `RING` again after this process dropped the
/// last one. Another test of this binary forks (`creating_rings_while_...`):
/// a child between its fork and its exec holds this process's descriptors,
/// the consumer's lock among them, for a moment; so a lease held while the
/// header names no consumer (pid 0) is asked for again, for at most 10 s.
fn attach_consumer(ns: &TestNs) -> FanIn {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match FanIn::attach(ns, RING) {
            Err(FanInError::ConsumerHeld { pid: 0, .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5))
            }
            r => return r.expect("the consumer attaches"),
        }
    }
}

/// The doorbell is the one file of the ring producers may write. One that
/// a producer shrank, scribbled on or grew keeps no consumer out: the next
/// consumer gives the ring a new one, with the old one's mode; the records
/// in the lanes survive and producers attach to the new one.
#[test]
fn a_doorbell_a_producer_broke_is_replaced_by_the_next_consumer() {
    use std::os::unix::fs::PermissionsExt;
    let ns = TestNs::watched("bell broken", Duration::from_secs(60));
    let bell = files::dir_path(&ns, RING).join(files::BELL_FILE);
    let fan = FanIn::create(&ns, RING, &FanInOptions { mode: 0o660, ..opts(4) }).unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&bell), 0o660);
    let mut p = Producer::attach(&ns, RING).unwrap();
    p.try_send(0, b"before").unwrap();
    drop(fan);
    // Grown past what can be mapped too (tmpfs takes any sparse size):
    // before, mapping it failed, which was taken for a failing system
    // call, not a broken doorbell, and kept the consumer out for good.
    let harms: [fn(&std::fs::File); 4] = [
        |f| f.set_len(0).unwrap(),
        |f| f.write_all_at(&[0xff; 64], 0).unwrap(),
        |f| f.set_len(8192).unwrap(),
        |f| f.set_len(1 << 62).unwrap(),
    ];
    let mut got = Vec::new();
    for harm in harms {
        harm(&OpenOptions::new().write(true).open(&bell).unwrap());
        assert!(Producer::attach(&ns, RING).is_err(), "a producer attached to a broken doorbell");
        let mut fan = attach_consumer(&ns);
        let why = fan.bell_replaced().expect("the doorbell was replaced").to_string();
        assert!(why.contains("bell"), "{why}");
        assert_eq!(mode(&bell), 0o660, "the new doorbell's mode");
        let mut q = Producer::attach(&ns, RING).expect("a producer attaches to the new doorbell");
        q.try_send(0, b"after").unwrap();
        got.extend(drain(&mut fan).0.into_iter().map(|r| r.2));
    }
    assert_eq!(got, [&b"before"[..], b"after", b"after", b"after", b"after"]);
    let left: Vec<_> = std::fs::read_dir(files::dir_path(&ns, RING)).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(!left.iter().any(|n| n.to_string_lossy().ends_with(".new")), "a temporary file is left: {left:?}");
}

/// A doorbell shrunk under a running consumer is found (`damage`) and
/// replaced (`repair_bell`); until then no producer can attach.
#[test]
fn a_name_a_producer_took_in_the_folder_keeps_no_doorbell_from_being_replaced() {
    // The new doorbell was linked in as bell.<pid>.new: a producer that
    // made that name first (a folder, which the consumer may not remove
    // from the sticky folder) kept it from ever being replaced, producers
    // from attaching, and a consumer from starting.
    let ns = TestNs::watched("bell name taken", Duration::from_secs(60));
    let dir = files::dir_path(&ns, RING);
    let bell = dir.join(files::BELL_FILE);
    let mut fan = FanIn::create(&ns, RING, &opts(2)).unwrap();
    std::fs::create_dir(dir.join(format!("{}.{}.new", files::BELL_FILE, std::process::id()))).unwrap();
    OpenOptions::new().write(true).open(&bell).unwrap().set_len(0).unwrap();
    drain(&mut fan);
    assert!(fan.repair_bell().expect("the doorbell is replaced under another name"));
    Producer::attach(&ns, RING).expect("a producer attaches to the new doorbell");
    drop(fan);
    OpenOptions::new().write(true).open(&bell).unwrap().set_len(0).unwrap();
    FanIn::attach(&ns, RING).expect("a consumer starts, replacing the doorbell");
    Producer::attach(&ns, RING).expect("a producer attaches to it");
}

/// A doorbell scribbled on or grown under a running consumer (its own
/// mapping whole) is replaced too, and producers attach again. (Found by
/// review: only a shrink under the consumer's mapping was repaired, so one
/// write of zeros by any producer kept every new producer out, and new
/// senders from helixd, until the consumer started again.)
#[test]
fn a_doorbell_scribbled_on_or_grown_under_the_consumer_is_replaced_while_it_runs() {
    let ns = TestNs::watched("bell scribbled", Duration::from_secs(60));
    let bell = files::dir_path(&ns, RING).join(files::BELL_FILE);
    let mut fan = FanIn::create(&ns, RING, &opts(4)).unwrap();
    let harms: [fn(&std::fs::File); 3] =
        [|f| f.write_all_at(&[0; 8], 0).unwrap(), |f| f.set_len(8192).unwrap(), |f| f.set_len(1 << 62).unwrap()];
    for harm in harms {
        harm(&OpenOptions::new().write(true).open(&bell).unwrap());
        drain(&mut fan);
        assert_eq!(fan.damage(), None, "the consumer's mapping is whole");
        assert!(Producer::attach(&ns, RING).is_err(), "a producer attached to a broken doorbell");
        assert!(fan.repair_bell().unwrap(), "not replaced");
        let why = fan.bell_replaced().expect("it says why").to_string();
        assert!(why.contains("bell"), "{why}");
        let mut p = Producer::attach(&ns, RING).expect("a producer attaches to the new doorbell");
        p.try_send(0, b"x").unwrap();
        // The producer's record arrives.
        assert_eq!(drain_for(&mut fan, Duration::from_secs(30)), [(p.lane(), 1, b"x".to_vec())]);
        assert!(!fan.repair_bell().unwrap(), "a sound doorbell was replaced");
    }
}

#[test]
fn a_doorbell_shrunk_under_the_consumer_is_replaced_while_it_runs() {
    let ns = TestNs::watched("bell shrunk", Duration::from_secs(60));
    let bell = files::dir_path(&ns, RING).join(files::BELL_FILE);
    let mut fan = FanIn::create(&ns, RING, &opts(2)).unwrap();
    assert!(!fan.repair_bell().unwrap(), "a sound doorbell was replaced");
    OpenOptions::new().write(true).open(&bell).unwrap().set_len(0).unwrap();
    drain(&mut fan);
    fan.drain_timeout(1, Duration::from_millis(1), |_| {});
    assert_eq!(fan.damage(), Some(bell.clone()));
    assert!(Producer::attach(&ns, RING).is_err(), "a producer attached to a shrunk doorbell");
    assert!(fan.repair_bell().unwrap());
    assert_eq!(fan.damage(), None);
    let mut p = Producer::attach(&ns, RING).expect("a producer attaches to the new doorbell");
    p.try_send(0, b"x").unwrap();
    let mut got = Vec::new();
    fan.drain_timeout(8, Duration::from_secs(10), |e| {
        if let Event::Record(r) = e {
            got.push(r.to_vec().unwrap())
        }
    });
    assert_eq!(got, [b"x".to_vec()]);
}
