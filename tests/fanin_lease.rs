//! A fan-in ring's consumer lease against locks its producers may take, in
//! a test binary of its own: a child another test of a binary forks holds
//! this process's open files (and so their locks) until it runs its
//! program, which a check of a consumer's liveness right after it let go
//! would meet.

mod common;

use common::{read_lock, TestNs};
use helix::fanin::{FanIn, FanInOptions};

const RING: &str = "fan";

/// A producer (anyone who may read the consumer's file, mode 0640) holds a
/// read lock on all of `ring` while the consumer is away: the next
/// consumer attaches all the same, a second is still refused, and the lock
/// never makes a dead consumer look alive. (Found by review: the
/// consumer's lease was a write lock on `ring`, which the read lock kept
/// it from taking: helixd's control path could not start again after a
/// restart, and `stat` showed the dead consumer alive.)
#[test]
fn a_read_lock_on_the_consumers_file_keeps_no_consumer_out_and_no_dead_one_alive() {
    use helix::fanin::{FanInError, FanInView};
    let ns = TestNs::watched("a read lock on ring", std::time::Duration::from_secs(60));
    let opts = FanInOptions { lanes: 1, lane_capacity: 4096, max_payload: 64, ..Default::default() };
    drop(FanIn::create(&ns, RING, &opts).unwrap());
    let ring = helix::fanin::files::dir_path(&ns, RING).join(helix::fanin::files::RING_FILE);
    let held = std::fs::File::open(&ring).unwrap();
    read_lock(&held, 0);
    assert!(!FanInView::open(&ns, RING).unwrap().stats().consumer_alive, "a read lock is no consumer");
    let fan = FanIn::attach(&ns, RING).expect("the consumer attaches past a read lock");
    assert!(FanInView::open(&ns, RING).unwrap().stats().consumer_alive);
    match FanIn::attach(&ns, RING) {
        Err(FanInError::ConsumerHeld { pid, .. }) => assert_eq!(pid, std::process::id()),
        other => panic!("a second consumer: {:?}", other.map(|_| ())),
    }
    drop(fan);
    assert!(!FanInView::open(&ns, RING).unwrap().stats().consumer_alive);
    drop(held);
    // A ring made before the lock file: the consumer makes it, its own.
    let lock = helix::fanin::files::dir_path(&ns, RING).join(helix::fanin::files::LOCK_FILE);
    std::fs::remove_file(&lock).unwrap();
    let fan = FanIn::attach(&ns, RING).expect("a consumer of a ring without a lock file");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&lock).unwrap().permissions().mode() & 0o7777, 0o600);
    assert!(FanInView::open(&ns, RING).unwrap().stats().consumer_alive);
    drop(fan);
    // A producer may write the doorbell, and so link it in as `lock` (in a
    // ring made before there was one) and lock it: neither a consumer kept
    // out nor a dead one alive (found by review of the fix). The consumer
    // puts a file of its own in its place.
    std::fs::remove_file(&lock).unwrap();
    let bell = helix::fanin::files::dir_path(&ns, RING).join(helix::fanin::files::BELL_FILE);
    std::fs::hard_link(&bell, &lock).unwrap();
    let planted = std::fs::File::open(&lock).unwrap();
    read_lock(&planted, 0);
    assert!(!FanInView::open(&ns, RING).unwrap().stats().consumer_alive, "a planted lock is no consumer");
    let fan = FanIn::attach(&ns, RING).expect("the consumer attaches past a planted lock file");
    use std::os::unix::fs::MetadataExt;
    let (now, bell) = (std::fs::metadata(&lock).unwrap(), std::fs::metadata(&bell).unwrap());
    assert!(now.ino() != bell.ino() && now.nlink() == 1 && now.mode() & 0o777 == 0o600);
    assert!(FanInView::open(&ns, RING).unwrap().stats().consumer_alive);
    drop((fan, planted));
}
