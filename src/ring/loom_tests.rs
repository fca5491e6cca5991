//! loom models of the ring protocol, run with
//! `RUSTFLAGS="--cfg loom" cargo test --release --lib -- loom_`
//! (`tools/test` does). They drive the real `Writer` and `Reader` over a
//! heap-allocated region of loom atomics; futexes are modelled by
//! `sync::futex`, so a lost wake-up is a deadlock loom reports.

use std::sync::Arc;

use loom::thread;

use super::region::heap;
use super::*;
use crate::wait::WaitStrategy;

fn ring(capacity: u64, policy: Policy) -> Arc<Region> {
    Arc::new(heap::region(capacity, policy, 2))
}

fn reader(region: &Arc<Region>, gating: bool, start: Start, wait: WaitStrategy) -> Reader {
    Reader::new(region.clone(), &ReaderOptions { name: "m".into(), gating, start, wait }).unwrap()
}

/// Payload of sequence `seq`: two words that must always agree.
fn frame(seq: u64) -> [u64; 2] {
    [seq, !seq]
}

/// The start of most models: a reader of `region` from the oldest frame
/// (`gating`, waiting with `wait`), then the writer, its lease taken here,
/// publishing frames 1 to `n` with [`Writer::publish_pod`] (waiting for
/// space on a block ring) in a thread of its own.
fn reader_and_writer(
    region: &Arc<Region>,
    gating: bool,
    wait: WaitStrategy,
    n: u64,
) -> (Reader, thread::JoinHandle<()>) {
    let r = reader(region, gating, Start::Oldest, wait);
    let mut w = Writer::new(region.clone()).unwrap();
    let writer = thread::spawn(move || {
        for seq in 1..=n {
            assert_eq!(w.publish_pod(&frame(seq)).unwrap(), seq);
        }
    });
    (r, writer)
}

/// Tries `tries` reads without waiting, as a reader the writer may lap:
/// every frame returned is intact and the next in order, every overrun
/// accounts exactly for the sequences it skips, and the reader's counts of
/// frames read and lost add up. Returns the next sequence expected.
fn read_lossy(r: &mut Reader, tries: usize) -> u64 {
    let mut expected = 1;
    for _ in 0..tries {
        match r.try_read_pod::<[u64; 2]>() {
            Ok((seq, v)) => {
                assert_eq!((seq, v), (expected, frame(expected)), "torn or out of order");
                expected += 1;
            }
            Err(TryReadError::Overrun(o)) => {
                assert_eq!(o.resume_at, expected + o.lost);
                expected = o.resume_at;
            }
            Err(TryReadError::Empty) => thread::yield_now(),
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(r.frames() + r.lost(), expected - 1);
    expected
}

/// A reader parked on the futex (`gating` or not) reads frames 1 to `n`
/// with the blocking read, each intact and in order, while the writer
/// publishes them on a ring of `capacity` slots.
fn parked_reader_reads_all(capacity: u64, policy: Policy, gating: bool, n: u64) {
    let (mut r, writer) = reader_and_writer(&ring(capacity, policy), gating, WaitStrategy::Park, n);
    for seq in 1..=n {
        assert_eq!(r.read_pod::<[u64; 2]>().unwrap(), (seq, frame(seq)));
    }
    writer.join().unwrap();
}

/// A reader racing a writer that laps it never accepts a torn frame: every
/// frame it returns has matching words and the right sequence, and frames
/// read plus frames reported lost never exceed what was published, in order.
#[test]
fn loom_overwrite_never_delivers_a_torn_frame() {
    loom::model(|| {
        let (mut r, writer) = reader_and_writer(&ring(2, Policy::Overwrite), false, WaitStrategy::Spin, 3);
        assert!(read_lossy(&mut r, 3) <= 4);
        writer.join().unwrap();
    });
}

/// On a block ring a gating reader sees every frame exactly once and in
/// order: the writer, waiting (parked) for space, never overwrites a slot
/// the reader has not consumed, and the reader's wake-up of the parked
/// writer is never lost.
#[test]
fn loom_gating_reader_gets_every_frame_and_wakes_the_writer() {
    loom::model(|| {
        let (mut r, writer) = reader_and_writer(&ring(2, Policy::Block), true, WaitStrategy::Spin, 3);
        let mut seq = 1;
        while seq <= 3 {
            match r.try_read_pod::<[u64; 2]>() {
                Ok((s, v)) => {
                    assert_eq!((s, v), (seq, frame(seq)));
                    seq += 1;
                }
                Err(TryReadError::Empty) => thread::yield_now(),
                Err(e) => panic!("gating reader lost frames: {e}"),
            }
        }
        writer.join().unwrap();
        assert_eq!(r.overruns(), 0);
    });
}

/// A reader that parks on the futex is always woken by the publish it waits
/// for (the writer checks `waiters` after a SeqCst fence).
#[test]
fn loom_parked_reader_is_never_left_asleep() {
    loom::model(|| parked_reader_reads_all(4, Policy::Overwrite, false, 2));
}

/// Both sides park: a gating parked reader and a writer parked for space on
/// a full ring wake each other without a lost wake-up.
#[test]
fn loom_writer_and_reader_both_parking_make_progress() {
    loom::model(|| parked_reader_reads_all(2, Policy::Block, true, 3));
}

/// A reader joining while the writer publishes on a block ring is gated
/// from the cursor it reports: it never sees an overrun at its start.
#[test]
fn loom_joining_gating_reader_is_not_overrun() {
    loom::model(|| {
        let region = ring(2, Policy::Block);
        let mut w = Writer::new(region.clone()).unwrap();
        let joiner = {
            let region = region.clone();
            thread::spawn(move || {
                let mut r = reader(&region, true, Start::Newest, WaitStrategy::Spin);
                let first = r.cursor();
                // Drain whatever arrives after joining: all in order, no loss.
                for _ in 0..2 {
                    match r.try_read_pod::<[u64; 2]>() {
                        Ok((s, v)) => assert_eq!(v, frame(s)),
                        Err(TryReadError::Empty) => thread::yield_now(),
                        Err(e) => panic!("joining reader starting at {first}: {e}"),
                    }
                }
            })
        };
        for _ in 0..3 {
            // try_publish: the joiner may stop reading, so the writer must
            // not wait for it; a full ring is fine here.
            let seq = w.next_seq();
            let _ = w.try_publish(bytemuck::bytes_of(&frame(seq)));
            thread::yield_now();
        }
        joiner.join().unwrap();
    });
}

/// Demotion racing a gating reader's progress. With a stall timeout of 0
/// the waiting writer demotes every gating reader short of what it needs
/// at its first look, while the reader may be consuming at that moment:
/// the writer always finishes (no lost wake-up around the demotion), the
/// reader never gets a torn or out-of-order frame, every sequence is read
/// or reported lost, and a reader that lost anything was demoted first.
#[test]
fn loom_demotion_races_a_consuming_reader() {
    loom::model(|| {
        let mut region = heap::region(2, Policy::Block, 2);
        region.geometry.stall_timeout_ns = 0;
        let region = Arc::new(region);
        let (mut r, writer) = reader_and_writer(&region, true, WaitStrategy::Spin, 3);
        read_lossy(&mut r, 3);
        writer.join().unwrap();
        if r.lost() > 0 {
            assert!(r.was_demoted(), "a gating reader lost frames without being demoted");
        }
        assert!(region.readers().demotions.load(crate::sync::Ordering::Relaxed) <= 1);
    });
}
