//! The replay's own parts: its schedule, its claims, its two walks.

use super::*;

/// A ledger in a new folder whose ring "t" (of payloads up to 32
/// bytes) has one block of frames 1, 2, ... of these lengths.
fn one_block(lens: &[usize]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let (mut l, _) = crate::ledger::Ledger::open(dir.path(), 1 << 20).unwrap();
    let decl = RingDecl { created_ns: 1, capacity: 64, max_payload: 32, policy: 0, name: "t".into() };
    let (id, _) = l.declare(&decl).unwrap();
    for (seq, &len) in (1..).zip(lens) {
        l.reserve_frame(id, seq, 1, 1000, 7, len).fill(1);
    }
    l.seal(id, lens.len());
    l.flush().unwrap();
    dir
}

/// A frame the ring cannot take is named by its own sequence, and
/// nothing of its claim is published; the claims before it are, and
/// are counted. (Found by audit: the error named the claim's first
/// sequence, and the frames pushed before the long one went out
/// uncounted.)
#[test]
fn a_frame_the_ring_cannot_take_is_named_and_nothing_of_its_claim_is_published() {
    use crate::{Namespace, Ring, RingOptions};
    let dir = one_block(&[8, 8, 8, 100, 8]);
    let ns = Namespace::new(&format!("rp{}", std::process::id())).unwrap();
    let _ = Ring::unlink(&ns, "narrow");
    // Claims of two: 1-2 is published, 3-4 holds the long frame.
    let ring = Ring::create(&ns, "narrow", &RingOptions { capacity: 2, max_payload: 32, ..Default::default() });
    let mut w = ring.unwrap().writer().unwrap();
    let mut published = 0;
    let mut got = Ok(());
    walk_blocks(dir.path(), |_, block, _, _| {
        if block.rtype() == Some(RecordType::Frame) {
            let (lo, hi, stop) = (block.header.seq, block.last_seq(), &AtomicBool::new(false));
            got = publish_frames(&mut w, block, lo, hi, stop, &mut published);
        }
        if got.is_ok() {
            ControlFlow::Continue(())
        } else {
            ControlFlow::Break(())
        }
    })
    .unwrap()
    .unwrap();
    let _ = Ring::unlink(&ns, "narrow");
    match got {
        Err(ReplayError::Publish { seq: 4, error: PublishError::TooLarge { len: 100, .. } }) => {}
        other => panic!("expected the long frame, sequence 4, named: {other:?}"),
    }
    assert_eq!((published, w.next_seq() - 1), (2, 2));
}

/// A replay into a `block` ring whose gating reader does not read stops
/// when asked, counting what it published: held in a claim of frames, or
/// of a gap marker. (Found by review: it waited in its claim for the
/// ring's whole stall timeout, deaf to Ctrl-C; and a block cut short was
/// left out of the span.)
#[test]
fn a_replay_held_by_a_reader_that_does_not_read_stops_when_asked() {
    // Two slots: frames 1 and 2 fill them; the next claim (frames 3 to 5,
    // or the marker of the gap 3 to 5) waits for the reader.
    held_replay_stops(one_block(&[8; 5]));
    let dir = tempfile::tempdir().unwrap();
    let (mut l, _) = crate::ledger::Ledger::open(dir.path(), 1 << 20).unwrap();
    let decl = RingDecl { created_ns: 1, capacity: 64, max_payload: 32, policy: 0, name: "t".into() };
    let (id, _) = l.declare(&decl).unwrap();
    for seq in 1..=2 {
        l.reserve_frame(id, seq, 1, 1000, 7, 8).fill(1);
    }
    l.seal(id, 2);
    l.append_gap(id, 3, 5, 1);
    l.flush().unwrap();
    held_replay_stops(dir);
}

/// Replays sequences 1 to 5 of ring "t" of `dir` into a ring of two
/// slots whose gating reader does not read, stops the replay once it
/// waits, and checks it stopped having published frames 1 and 2.
fn held_replay_stops(dir: tempfile::TempDir) {
    use crate::{Namespace, Policy, Reader, ReaderOptions, Ring, RingOptions, RingView, Start};
    use std::sync::{mpsc, Arc};
    let ns = Namespace::new(&format!("rq{}", std::process::id())).unwrap();
    let _ = Ring::unlink(&ns, "held");
    // A stall that would not be judged for an hour.
    let hour = Duration::from_secs(3600);
    let opts = RingOptions { capacity: 2, policy: Policy::Block, stall_timeout: hour, ..Default::default() };
    let ring = Ring::create(&ns, "held", &opts).unwrap();
    let reader_opts = ReaderOptions { gating: true, start: Start::Oldest, ..ReaderOptions::named("idle") };
    let _idle = Reader::attach(&ns, "held", &reader_opts).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let flag = stop.clone();
    std::thread::spawn(move || {
        let range = Range { ring: "t".into(), from: 1, to: 5 };
        let first = first_walk(dir.path(), &range, &flag).unwrap();
        let pacing = Pacing { pace: Pace::Max, max_pause: None };
        let open = move |_: &RingDecl| ring.writer().map_err(ReplayError::Lease);
        _ = tx.send(second_walk(dir.path(), &range, first, pacing, open, |_, _| {}, &flag));
    });
    let view = RingView::attach(&ns, "held").unwrap();
    while view.stats().writer_waits == 0 {
        std::thread::sleep(Duration::from_millis(2));
    }
    stop.store(true, Ordering::Relaxed);
    let got = rx.recv_timeout(Duration::from_secs(60));
    let _ = Ring::unlink(&ns, "held");
    let stopped = got.expect("the replay still waits for room, a minute after it was asked to stop").unwrap_err();
    assert!(matches!(stopped.error, ReplayError::Interrupted), "{}", stopped.error);
    assert_eq!((stopped.done.frames, stopped.done.gaps), (2, 0));
    assert_eq!(stopped.done.spans, [(1, 2)]);
    assert_eq!(view.stats().published, 2);
}

/// A second walk that begins after the first one did (retention pruned
/// the oldest segments between them) stops before publishing anything,
/// naming the segment gone. (Found by audit: the frames of the range in
/// the pruned segments were left out without a word.)
#[test]
fn a_replay_whose_oldest_segment_was_pruned_after_its_first_walk_stops_and_says_so() {
    let dir = one_block(&[8]);
    let range = Range { ring: "t".into(), from: 1, to: 1 };
    let first = first_walk(dir.path(), &range, &AtomicBool::new(false)).unwrap();
    let begin = first.begin.expect("a block");
    let pacing = Pacing { pace: Pace::Max, max_pause: None };
    let open = |_: &RingDecl| -> Result<Writer, ReplayError> { panic!("nothing is published") };
    // As if the range had begun a segment earlier, since pruned.
    let earlier = FirstWalk { begin: Some((begin.0 - 1, begin.1)), ..first };
    let stopped =
        second_walk(dir.path(), &range, earlier, pacing, open, |_, _| {}, &AtomicBool::new(false)).unwrap_err();
    match stopped.error {
        ReplayError::Verify(VerifyFailure::PrunedMeanwhile { segment }) => assert_eq!(segment, begin.0 - 1),
        other => panic!("expected the segment pruned to be named: {other}"),
    }
    assert_eq!(stopped.done, Replayed::default());
}

/// A stop asked for while the second walk passes blocks outside the range
/// ends it as interrupted, not as a replay that finished.
#[test]
fn a_stop_asked_for_outside_the_range_ends_the_second_walk_as_interrupted() {
    let dir = one_block(&[8, 8]);
    // Nothing of the range is recorded: every block is outside it.
    let range = Range { ring: "t".into(), from: 10, to: 20 };
    let first = first_walk(dir.path(), &range, &AtomicBool::new(false)).unwrap();
    let pacing = Pacing { pace: Pace::Max, max_pause: None };
    let open = |_: &RingDecl| -> Result<Writer, ReplayError> { panic!("nothing is published") };
    let stopped = second_walk(dir.path(), &range, first, pacing, open, |_, _| {}, &AtomicBool::new(true)).unwrap_err();
    assert!(matches!(stopped.error, ReplayError::Interrupted), "{}", stopped.error);
    assert_eq!(stopped.done, Replayed::default());
}

#[test]
fn a_pace_too_slow_for_a_duration_waits_for_ever_instead_of_panicking() {
    // An hour of recording at x1e-16: 3.6e19 s, past a Duration (it
    // panicked in `Duration::from_secs_f64`).
    assert_eq!(paced(3_600_000_000_000, 1e-16), Duration::MAX);
    assert_eq!(paced(2_000_000_000, 2.0), Duration::from_secs(1));
    assert_eq!(paced(0, 1e-300), Duration::ZERO);
}

#[test]
fn the_schedule_cuts_long_pauses_and_takes_a_clock_stepped_back_as_no_pause() {
    const MS: u64 = 1_000_000;
    let schedule = |recv: &[u64], factor: f64, max: Option<Duration>| {
        let mut c = Clock { start: Instant::now(), last: recv[0], due: Duration::ZERO };
        let steps: Vec<_> = recv.iter().map(|&r| (c.advance(r, factor, max), c.due)).collect();
        steps
    };
    let ms = Duration::from_millis;
    // 1 ms, a 1,000 s pause (cut to 10 ms), 1 ms.
    let recv = [0, MS, MS + 1_000_000 * MS, 2 * MS + 1_000_000 * MS];
    let got = schedule(&recv, 1.0, Some(ms(10)));
    assert_eq!(got, [(None, ms(0)), (None, ms(1)), (Some(ms(999_990)), ms(11)), (None, ms(12))]);
    // Twice as fast: the pause is 500 s at the pace, the steps 0.5 ms.
    let got = schedule(&recv, 2.0, Some(ms(10)));
    assert_eq!(got[2], (Some(ms(499_990)), ms(10) + Duration::from_micros(500)));
    // Kept whole without a longest pause.
    assert_eq!(schedule(&recv, 1.0, None)[3], (None, ms(1_000_002)));
    // The recorder's clock stepped back 50 ms, then on 10 ms: the block
    // after the step is due at once, the next 10 ms later; a cut
    // afterwards counts only what passed since the last block.
    let recv = [100 * MS, 50 * MS, 60 * MS, 60 * MS + 1_000_000 * MS];
    let got = schedule(&recv, 1.0, Some(ms(10)));
    assert_eq!(got, [(None, ms(0)), (None, ms(0)), (None, ms(10)), (Some(ms(999_990)), ms(20))]);
}
