//! loom models of the fan-in lane protocol, run by `tools/test` with the
//! ring's (`RUSTFLAGS="--cfg loom" cargo test --release --lib -- loom_`).
//! They drive the real `Writing`, `Reading` and doorbell code over heap
//! lanes of loom atomics; futexes are `sync::futex`'s model, so a lost
//! wake-up is a deadlock loom reports.

use std::sync::Arc;

use loom::thread;

use super::heap::HeapLane;
use super::lane::{park_consumer, put, ring_bell, Ends, Reading, Writing};
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

/// Reads what is there from each lane through the consumer's batch view
/// (`Reading::take`, at most `budget` a lane), checking order and
/// contents (a record of 8 bytes carries its sequence, a record of 0
/// bytes nothing); returns how many records it read.
fn drain_some(lanes: &[Arc<HeapLane>], readers: &mut [Reading], budget: usize) -> u64 {
    let mut n = 0;
    for (lane, r) in lanes.iter().zip(readers.iter_mut()) {
        let e = lane.ends();
        let mut due = r.next_seq;
        let taken = r.take(&e, budget, |f| {
            assert_eq!(f.seq, due, "out of order");
            if f.len == 8 {
                assert_eq!(e.data[f.word].load(Ordering::Relaxed), f.seq, "torn");
            } else {
                assert_eq!(f.len, 0, "a record nobody wrote");
            }
            due += 1;
            true
        });
        taken.end.expect("an honest producer breaks no rule");
        n += taken.records as u64;
        r.release(&e);
    }
    n
}

fn drain(lanes: &[Arc<HeapLane>], readers: &mut [Reading]) -> u64 {
    drain_some(lanes, readers, usize::MAX)
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

/// A producer thread on `lane` running `body` with its `Writing` (epoch 1).
fn writer(
    lane: &Arc<HeapLane>,
    b: &Arc<Bell>,
    body: impl FnOnce(&Ends, &mut Writing, &Bell) + Send + 'static,
) -> thread::JoinHandle<()> {
    let (lane, b) = (lane.clone(), b.clone());
    thread::spawn(move || body(&lane.ends(), &mut Writing::new(1), &b))
}

/// Writes `n` records at the head as one batch (its room checked by the
/// caller): 8 bytes carrying their sequence if `numbered`, else empty;
/// then publishes them with one store, ringing if the consumer sleeps.
fn write_batch(e: &Ends, w: &mut Writing, b: &Bell, n: u64, numbered: bool) {
    let (mut at, head, seq) = (w.head, w.head, w.next_seq);
    for s in seq..seq + n {
        let word = s.to_ne_bytes();
        at = put(e, at, s, 0, if numbered { &word } else { &[] });
    }
    assert!(at <= w.limit(e), "the batch ran past its room");
    w.ended(at - head, n, if numbered { 8 * n } else { 0 });
    if w.publish(e, &b.sleeping) {
        ring_bell(&b.bell);
    }
}

/// A batch published across the wrap: after record 1 (24 bytes) the
/// producer claims room for three empty records (16 bytes each) at once in
/// a 64-byte lane: two fit before the end, the third goes to offset 0
/// behind padding, so the batch fits only once the consumer released
/// record 1. The three are written, then published with one store; the
/// consumer, taking at most two a round, sees records 1 to 4 in order and
/// never a partial batch past the head.
#[test]
fn loom_a_batch_published_across_the_wrap() {
    loom::model(|| {
        let lane = Arc::new(HeapLane::new(64));
        let p = writer(&lane, &bell(), |e, w, b| {
            write_batch(e, w, b, 1, true);
            while w.fit_n(e, 3, 0) < 3 {
                thread::yield_now();
            }
            write_batch(e, w, b, 3, false);
        });
        let mut r = [Reading::new(0, 1, 8)];
        let mut got = 0;
        while got < 4 {
            let n = drain_some(std::slice::from_ref(&lane), &mut r, 2);
            if n == 0 {
                thread::yield_now();
            }
            got += n;
        }
        p.join().unwrap();
    });
}

/// The consumer's batch view against a producer publishing concurrently:
/// two batches of two records each, the consumer taking at most three a
/// round and sleeping on the doorbell when the lane is empty: every
/// record arrives once, in order, whole, and no wake-up is lost.
#[test]
fn loom_the_consumers_batch_view_with_a_concurrent_producer() {
    loom::model(|| {
        let lanes = [Arc::new(HeapLane::new(128))];
        let b = bell();
        let p = writer(&lanes[0], &b, |e, w, b| {
            for _ in 0..2 {
                assert_eq!(w.fit_n(e, 2, 8), 2);
                write_batch(e, w, b, 2, true);
            }
        });
        let mut readers = [Reading::new(0, 1, 8)];
        let mut got = 0;
        while got < 4 {
            got += drain_some(&lanes, &mut readers, 3);
            if got < 4 {
                park_consumer(&b.sleeping, &b.bell, None, || readers[0].ready(&lanes[0].ends()).unwrap());
            }
        }
        p.join().unwrap();
    });
}

/// The lease's two sides (`lease::bind_fresh`, `lease::revoked`): while the
/// consumer binds the file of epoch 2 (inode 7) in the place of epoch 1's
/// (inode 5, its lane freed), the new file's producer never reads itself
/// dropped, and the old file's producer always does. (Found by review:
/// with `status` stored after `epoch`, the new producer could read its
/// epoch with the lane free, and took its lane as revoked.)
#[test]
fn loom_a_lane_being_bound_never_reads_as_revoked_to_its_producer() {
    use super::layout::LANE_FREE;
    use super::lease::{bind_fresh, revoked};
    loom::model(|| {
        let lane = Arc::new(HeapLane::new(64));
        let st = lane.ends().state;
        st.ino.store(5, Ordering::Relaxed);
        st.status.store(LANE_FREE, Ordering::Relaxed);
        let consumer = {
            let lane = lane.clone();
            thread::spawn(move || bind_fresh(lane.ends().state, 2, 7, 0, 0, 0))
        };
        for _ in 0..2 {
            let st = lane.ends().state;
            assert!(!revoked(st, 2, 7), "the producer being bound read itself revoked");
            assert!(revoked(st, 1, 5), "the dropped producer read its lane as its own");
        }
        consumer.join().unwrap();
        assert!(!revoked(lane.ends().state, 2, 7));
    });
}

/// A restarted consumer's repair (`Reading::resume`) against a hostile
/// producer that keeps publishing the sequence it skips: the last consumer
/// left `next_seq` at 6 and `tail` at 0, and the 64-byte lane is full with
/// records 1 to 4 (16 bytes each). While the repair skips them, the
/// producer writes record 5 over record 1 and publishes it. The repair
/// never skips past a lane's worth of bytes from `tail`: no honest lane
/// holds more unreleased (before, the skip was bounded only by
/// `next_seq - found`, so a producer writing as fast as the skip read held
/// a restarted consumer's attach).
#[test]
fn loom_a_resumed_lane_is_never_skipped_past_a_lanes_worth() {
    loom::model(|| {
        let lane = Arc::new(HeapLane::new(64));
        let e = lane.ends();
        let head = (1..=4).fold(0, |at, seq| put(&e, at, seq, 0, &[]));
        e.hdr.head.store(head, Ordering::Release);
        e.state.next_seq.store(6, Ordering::Relaxed);
        let hostile = {
            let lane = lane.clone();
            thread::spawn(move || {
                let e = lane.ends();
                let head = put(&e, 64, 5, 0, &[]);
                e.hdr.head.store(head, Ordering::Release);
            })
        };
        let resumed = Reading::resume(&lane.ends(), 8);
        assert!(resumed.tail <= 64, "the repair skipped to {} in a lane of 64 bytes", resumed.tail);
        hostile.join().unwrap();
    });
}
