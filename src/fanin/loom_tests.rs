//! loom models of the fan-in lane protocol, run by `tools/test` with the
//! ring's (`RUSTFLAGS="--cfg loom" cargo test --release --lib -- loom_`).
//! They drive the real `Writing`, `Reading` and doorbell code over heap
//! lanes of loom atomics; futexes are `sync::futex`'s model, so a lost
//! wake-up is a deadlock loom reports.

use std::sync::Arc;

use loom::thread;

use super::heap::HeapLane;
use super::lane::{park_consumer, ring_bell, Reading, Writing};
use crate::sync::{AtomicU32, Ordering};

/// The doorbell and the consumer's `sleeping` flag.
struct Bell {
    sleeping: AtomicU32,
    bell: AtomicU32,
}

fn bell() -> Arc<Bell> {
    Arc::new(Bell { sleeping: AtomicU32::new(0), bell: AtomicU32::new(0) })
}

/// A producer thread writing records 1..=n (8 bytes each: the number),
/// publishing each, waiting for space when full, ringing when the
/// consumer sleeps.
fn producer(lane: &Arc<HeapLane>, b: &Arc<Bell>, n: u64) -> thread::JoinHandle<()> {
    let (lane, b) = (lane.clone(), b.clone());
    thread::spawn(move || {
        let e = lane.ends();
        let mut w = Writing::new(1);
        for i in 1..=n {
            if !w.fits(&e, 8) {
                assert!(w.wait_space(&e, 8, 0, None));
            }
            w.write(&e, 0, &i.to_ne_bytes());
            if w.publish(&e, &b.sleeping) {
                ring_bell(&b.bell);
            }
        }
    })
}

/// Reads what is there from each lane, checking order and contents;
/// returns how many records it read.
fn drain(lanes: &[Arc<HeapLane>], readers: &mut [Reading]) -> u64 {
    let mut n = 0;
    for (lane, r) in lanes.iter().zip(readers.iter_mut()) {
        let e = lane.ends();
        while let Some(f) = r.next(&e).expect("an honest producer breaks no rule") {
            let got = e.data[f.word].load(Ordering::Relaxed);
            assert_eq!((f.len, got), (8, f.seq), "torn or out of order");
            r.consume(&f);
            n += 1;
        }
        r.release(&e);
    }
    n
}

/// The consumer: drains, and parks on the doorbell when every lane is
/// empty, until `total` records arrived.
fn consume(lanes: &[Arc<HeapLane>], b: &Bell, total: u64) {
    let mut readers: Vec<Reading> = lanes.iter().map(|_| Reading::new(0, 1, 8)).collect();
    let mut got = 0;
    while got < total {
        got += drain(lanes, &mut readers);
        if got < total {
            park_consumer(&b.sleeping, &b.bell, None, || {
                lanes.iter().zip(readers.iter_mut()).any(|(l, r)| r.ready(&l.ends()).unwrap())
            });
        }
    }
}

/// A lane of `capacity` bytes with one producer writing records 1..=n,
/// read by `read`; the producer is joined after it.
fn one_producer(capacity: usize, n: u64, read: impl FnOnce(&Arc<HeapLane>, &Bell)) {
    let lane = Arc::new(HeapLane::new(capacity));
    let b = bell();
    let p = producer(&lane, &b, n);
    read(&lane, &b);
    p.join().unwrap();
}

/// Publish and release across the wrap: a 64-byte lane holds two
/// 24-byte records, so the third is preceded by padding and waits for the
/// consumer to release the first (the producer waiting for space, woken
/// by the release).
#[test]
fn loom_lane_publish_and_release_across_the_wrap() {
    loom::model(|| {
        one_producer(64, 3, |lane, _| {
            let mut r = [Reading::new(0, 1, 8)];
            let mut got = 0;
            while got < 3 {
                let n = drain(std::slice::from_ref(lane), &mut r);
                if n == 0 {
                    thread::yield_now();
                }
                got += n;
            }
        })
    });
}

/// The doorbell with two producers: the consumer sleeps only when every
/// lane is empty, and each producer's publish wakes it (no lost wake-up).
#[test]
fn loom_doorbell_with_two_producers_loses_no_wake_up() {
    loom::model(|| {
        let lanes = [Arc::new(HeapLane::new(64)), Arc::new(HeapLane::new(64))];
        let b = bell();
        let ps: Vec<_> = lanes.iter().map(|l| producer(l, &b, 1)).collect();
        consume(&lanes, &b, 2);
        for p in ps {
            p.join().unwrap();
        }
    });
}

/// Both sides park: a producer waiting for space on a full lane and the
/// consumer sleeping on the doorbell wake each other.
#[test]
fn loom_producer_waiting_for_space_and_sleeping_consumer() {
    loom::model(|| one_producer(32, 2, |lane, b| consume(std::slice::from_ref(lane), b, 2)));
}
