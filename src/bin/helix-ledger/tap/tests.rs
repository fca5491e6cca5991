//! The tap's unit tests.

use super::*;
use helix::ledger::format::GAP_OVERRUN;
use helix::{Ring, RingOptions, Writer};

/// A ring of this test's own, unlinked when dropped.
struct Scratch(Namespace);

impl Scratch {
    /// A namespace of its own (`tag` and this process's pid) holding
    /// ring `t`, made anew of `o`, and its writer.
    fn ring(tag: &str, o: &RingOptions) -> (Scratch, Writer) {
        let ns = Scratch(Namespace::new(&format!("{tag}{}", std::process::id())).unwrap());
        let _ = Ring::unlink(&ns.0, "t");
        let w = Ring::create(&ns.0, "t", o).unwrap().writer().unwrap();
        (ns, w)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = Ring::unlink(&self.0, "t");
    }
}

/// Publishes `n` frames and reads them through the tap's reader.
fn read(t: &mut Tap, w: &mut Writer, n: usize) {
    for _ in 0..n {
        w.try_publish(b"x").unwrap();
    }
    assert_eq!(t.reader.as_mut().unwrap().try_read_batch(64, |_| {}), Ok(n));
}

/// With the writing behind, a batch's frames stay held in the ring
/// until the flush that carried them is written: a crash before then
/// leaves them for the next recorder.
#[test]
fn a_batch_is_released_only_once_the_flush_that_carried_it_is_written() {
    let ns = Scratch(Namespace::new(&format!("ldgtap{}", std::process::id())).unwrap());
    let _ = Ring::unlink(&ns.0, "t");
    let o = RingOptions { capacity: 64, max_payload: 8, policy: Policy::Block, ..Default::default() };
    let ring = Ring::create(&ns.0, "t", &o).unwrap();
    let mut w = ring.writer().unwrap();
    let mut r = ring.reader(&ReaderOptions { gating: true, ..ReaderOptions::named("helix-ledger") }).unwrap();
    r.set_deferred_release(true);
    let mut t = Tap { reader: Some(r), batch: 64, ..Tap::new("t") };
    let released = |t: &Tap| t.reader.as_ref().unwrap().released();
    // Nothing read: a flush holds nothing back.
    t.flushed(0);
    assert!(t.unwritten.is_empty());
    read(&mut t, &mut w, 4); // 1..=4, out with flush 1
    t.flushed(1);
    read(&mut t, &mut w, 3); // 5..=7, out with flush 2
    t.flushed(2);
    // A flush that found nothing new changes nothing.
    t.flushed(2);
    read(&mut t, &mut w, 2); // 8 and 9, not flushed yet
    assert_eq!(t.unwritten, [(1, 5), (2, 8)]);
    t.release_written(0);
    assert_eq!(released(&t), 1, "nothing written: nothing released");
    t.release_written(1);
    assert_eq!(released(&t), 5);
    t.release_written(9);
    assert_eq!(released(&t), 8, "frames read after the last flush stay held");
    t.flushed(3);
    t.release_written(2);
    assert_eq!(released(&t), 8);
    t.release_written(3);
    assert_eq!((released(&t), t.unwritten.len()), (10, 0));
}

/// A tap let go (its ring replaced, or the ledger demoted) has written
/// what it read: a frame let go unwritten would be lost to a crash,
/// with no GAP, once the ring's reader entry is gone. Written behind,
/// the flush (over 64 KiB) goes to the writing thread; that `let_go`
/// waits for it is not shown here (the thread has mostly written it by
/// the time the folder is read), only that it flushes.
#[test]
fn a_tap_let_go_has_written_what_it_read() {
    const FRAMES: u64 = 2000;
    let ns = Scratch(Namespace::new(&format!("ldglet{}", std::process::id())).unwrap());
    let _ = Ring::unlink(&ns.0, "t");
    let ring = Ring::create(&ns.0, "t", &RingOptions { capacity: 4096, max_payload: 64, ..Default::default() });
    let mut w = ring.unwrap().writer().unwrap();
    for i in 0..FRAMES {
        w.publish(&[i as u8; 64]).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    for behind in [false, true] {
        let folder = dir.path().join(format!("behind-{behind}"));
        let (mut ledger, _) = Ledger::open(&folder, 1 << 20).unwrap();
        if behind {
            ledger.write_behind().unwrap();
        }
        let mut tap = Tap::new("t");
        tap.attach(&ns.0, &mut ledger).unwrap();
        let mut read = 0;
        while read < FRAMES as usize {
            read += tap.pump(&mut ledger);
        }
        assert!(ledger.buffered() > 64 << 10, "{}", ledger.buffered());
        tap.let_go(&mut ledger).unwrap();
        assert!(tap.reader.is_none());
        // On disk now, whatever becomes of the ledger.
        let summary = helix::ledger::verify::verify(&folder).unwrap().unwrap();
        let next = summary.rings.first().map(|r| r.next_seq);
        assert_eq!(next, Some(FRAMES + 1), "written behind: {behind}");
    }
}

/// Ring `t` of `o` in a namespace of its own (`tag`), its writer, and a
/// ledger in a folder of its own whose tap has recorded the `n` frames
/// ("old") published into it, to its end.
fn recorded_to_its_end(tag: &str, o: &RingOptions, n: usize) -> (Scratch, Writer, tempfile::TempDir, Ledger, Tap) {
    let (ns, mut old) = Scratch::ring(tag, o);
    let dir = tempfile::tempdir().unwrap();
    let (mut ledger, _) = Ledger::open(dir.path(), 1 << 20).unwrap();
    let mut tap = Tap::new("t");
    tap.attach(&ns.0, &mut ledger).unwrap();
    for _ in 0..n {
        old.publish(b"old").unwrap();
    }
    while !tap.drained {
        tap.pump(&mut ledger);
    }
    (ns, old, dir, ledger, tap)
}

/// A ring replaced while its old writer still publishes: what it
/// published after the ledger last found the ring empty is recorded
/// before the ledger lets the old ring go. (Found by review: the tap
/// let it go as drained, and those frames were neither recorded nor a
/// GAP.)
#[test]
fn a_replaced_rings_last_frames_are_recorded_before_it_is_let_go() {
    let o = RingOptions { capacity: 64, max_payload: 8, ..Default::default() };
    let (ns, mut old, dir, mut ledger, mut tap) = recorded_to_its_end("ldgrep", &o, 3);
    old.publish(b"old").unwrap();
    old.publish(b"old").unwrap();
    Ring::unlink(&ns.0, "t").unwrap();
    let mut new = Ring::create(&ns.0, "t", &o).unwrap().writer().unwrap();
    new.publish(b"new").unwrap();
    tap.check(&ns.0, &mut ledger).unwrap();
    while tap.pump(&mut ledger) == 0 {}
    ledger.flush().unwrap();
    let frames: Vec<(u64, Vec<u8>)> = recorded(dir.path()).into_iter().map(|(seq, _, p, _)| (seq, p)).collect();
    let want: Vec<(u64, Vec<u8>)> = (1..=5).map(|seq| (seq, b"old".to_vec())).chain([(1, b"new".to_vec())]).collect();
    assert_eq!(frames, want, "the old ring's 5 frames, then the new one's");
}

/// Every FRAME and GAP record of the ledger in `dir`, in order: (its
/// first and last sequence, a frame's payload, a GAP's reason or 0).
fn recorded(dir: &std::path::Path) -> Vec<(u64, u64, Vec<u8>, u32)> {
    use helix::ledger::format::{GapInfo, RecordType};
    let mut got = Vec::new();
    helix::ledger::verify::walk(dir, |at| {
        let h = &at.record.header;
        match RecordType::from_u16(h.rtype) {
            Some(RecordType::Frame) => got.push((h.seq, h.seq, at.record.payload.to_vec(), 0)),
            Some(RecordType::Gap) => {
                let g = GapInfo::decode(at.record.payload).unwrap();
                got.push((h.seq, g.last, Vec::new(), g.reason));
            }
            _ => {}
        }
    })
    .unwrap()
    .unwrap();
    got
}

/// A frame too large for a record, overwritten before the tap passes
/// it: the overrun is a GAP, and what follows is recorded. (Found by
/// review: the overrun was dropped there, the next block skipped the
/// sequences lost, and the recorder panicked, as often as the writer
/// liked.)
#[test]
fn a_frame_too_large_overwritten_before_it_is_passed_is_an_overrun_gap() {
    let o = RingOptions { capacity: 4, max_payload: helix::ring::MAX_PAYLOAD, ..Default::default() };
    let (ns, mut w) = Scratch::ring("ldgbgo", &o);
    w.publish(&vec![7; MAX_PAYLOAD + 1]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (mut ledger, _) = Ledger::open(dir.path(), 1 << 20).unwrap();
    let mut tap = Tap::new("t");
    tap.attach(&ns.0, &mut ledger).unwrap();
    let epoch = w.epoch();
    let (got, big) = read_batch(tap.reader.as_mut().unwrap(), &mut ledger, tap.id, epoch, tap.batch);
    assert_eq!((got, big), (Ok(0), Some((1, MAX_PAYLOAD + 1))));
    ledger.seal(tap.id, 0);
    for _ in 0..5 {
        w.publish(b"x").unwrap();
    }
    assert_eq!(tap.record_too_large(&mut ledger, big.unwrap(), epoch), 1);
    let mut records = 1;
    while records < 5 {
        records += tap.pump(&mut ledger);
    }
    ledger.flush().unwrap();
    let frames = (3..=6).map(|seq| (seq, seq, b"x".to_vec(), 0));
    let want: Vec<_> = [(1, 2, vec![], GAP_OVERRUN)].into_iter().chain(frames).collect();
    assert_eq!(recorded(dir.path()), want);
}

/// A frame larger than a record may carry (a ring configured for
/// 16 MiB holds 48 bytes more) is a GAP of its own reason, and the
/// frames around it are recorded. Before, the recorder panicked on it,
/// and again at each start.
#[test]
fn a_frame_larger_than_a_record_may_carry_is_a_gap_and_the_others_are_recorded() {
    let o = RingOptions { capacity: 4, max_payload: helix::ring::MAX_PAYLOAD, ..Default::default() };
    let (ns, mut w) = Scratch::ring("ldgbig", &o);
    assert!(w.geometry().max_payload as usize > MAX_PAYLOAD);
    w.publish(b"before").unwrap();
    w.publish(&vec![7; MAX_PAYLOAD + 1]).unwrap();
    w.publish(b"after").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (mut ledger, _) = Ledger::open(dir.path(), 1 << 20).unwrap();
    let mut tap = Tap::new("t");
    tap.attach(&ns.0, &mut ledger).unwrap();
    let mut records = 0;
    while records < 3 {
        records += tap.pump(&mut ledger);
    }
    ledger.flush().unwrap();
    let got = recorded(dir.path());
    assert_eq!(got, [(1, 1, b"before".to_vec(), 0), (2, 2, vec![], GAP_TOO_LARGE), (3, 3, b"after".to_vec(), 0)]);
}

/// A replaced ring whose `published` count someone who maps it writable
/// set to u64::MAX before the ledger let it go: no GAP is made of it.
/// (Found by review: the let-go's GAP took the count as it was, and
/// recorded 1.8e19 sequences lost, which verify passed.)
#[test]
fn a_published_count_written_by_hand_makes_no_gap_at_a_let_go() {
    use std::os::unix::fs::FileExt;
    let o = RingOptions { capacity: 64, max_payload: 8, ..Default::default() };
    let (ns, _old, dir, mut ledger, mut tap) = recorded_to_its_end("ldgforge", &o, 1);
    let data = std::fs::OpenOptions::new().write(true).open(ns.0.data_path("t")).unwrap();
    Ring::unlink(&ns.0, "t").unwrap();
    Ring::create(&ns.0, "t", &o).unwrap().writer().unwrap().publish(b"new").unwrap();
    data.write_all_at(&u64::MAX.to_ne_bytes(), 384).unwrap();
    tap.check(&ns.0, &mut ledger).unwrap();
    while tap.pump(&mut ledger) == 0 {}
    ledger.flush().unwrap();
    let got: Vec<(u64, u64, u32)> = recorded(dir.path()).into_iter().map(|(a, b, _, r)| (a, b, r)).collect();
    assert_eq!(got, [(1, 1, 0), (1, 1, 0)], "the old ring's frame, then the new one's, and no GAP");
}

/// The same with the stamp that bears the count out written too (found by
/// review of the fix above): the GAP is a ring's worth at most.
#[test]
fn a_published_count_and_its_stamp_written_by_hand_make_a_gap_of_a_ring_at_most() {
    use std::os::unix::fs::FileExt;
    let o = RingOptions { capacity: 64, max_payload: 8, ..Default::default() };
    let (ns, _old, dir, mut ledger, mut tap) = recorded_to_its_end("ldgforge2", &o, 1);
    let data = std::fs::OpenOptions::new().write(true).open(ns.0.data_path("t")).unwrap();
    // Slot `seq`'s stamp: after the 1024-byte header, 64-byte slots.
    let slot = |seq: u64| helix::layout::RING_HEADER_SIZE as u64 + (seq & 63) * 64;
    let forged = (1u64 << 63) - 1;
    Ring::unlink(&ns.0, "t").unwrap();
    Ring::create(&ns.0, "t", &o).unwrap().writer().unwrap().publish(b"new").unwrap();
    data.write_all_at(&forged.to_ne_bytes(), slot(forged)).unwrap();
    data.write_all_at(&forged.to_ne_bytes(), 384).unwrap();
    tap.check(&ns.0, &mut ledger).unwrap();
    while tap.pump(&mut ledger) == 0 {}
    ledger.flush().unwrap();
    let got: Vec<(u64, u64, u32)> = recorded(dir.path()).into_iter().map(|(a, b, _, r)| (a, b, r)).collect();
    assert_eq!(got, [(1, 1, 0), (2, 65, super::GAP_LET_GO), (1, 1, 0)], "a GAP of the ring's 64 slots past the cursor");
}

/// A writer that never stops publishing into a replaced ring does not
/// keep the ledger from the new one past [`SWITCH_WITHIN`]: the old
/// ring's rest is read, and a GAP. (Found by review: the switch waited
/// for the old ring to be found empty, for ever, and the new ring's
/// writer went unrecorded.)
#[test]
fn a_writer_publishing_into_a_replaced_ring_for_ever_does_not_hold_the_ledger_from_the_new_one() {
    let o = RingOptions { capacity: 64, max_payload: 8, policy: Policy::Overwrite, ..Default::default() };
    let (ns, mut old, dir, mut ledger, mut tap) = recorded_to_its_end("ldgbusy", &o, 1);
    Ring::unlink(&ns.0, "t").unwrap();
    let mut new = Ring::create(&ns.0, "t", &o).unwrap().writer().unwrap();
    let created = new.geometry().created_ns;
    new.publish(b"new").unwrap();
    // Each look finds a frame more in the old ring: never drained.
    for _ in 0..3 {
        old.publish(b"old").unwrap();
        tap.pump(&mut ledger);
        old.publish(b"old").unwrap();
        tap.check(&ns.0, &mut ledger).unwrap();
        assert_ne!(tap.created_ns, created, "the ledger switched before the old ring was drained or its time was up");
    }
    // Its time is up (set back here, not waited for).
    tap.replaced_since = Some(std::time::Instant::now() - SWITCH_WITHIN);
    tap.check(&ns.0, &mut ledger).unwrap();
    assert_eq!(tap.created_ns, created, "the ledger is still on the old ring");
    while tap.pump(&mut ledger) == 0 {}
    ledger.flush().unwrap();
    let got: Vec<(u64, u64, Vec<u8>)> = recorded(dir.path()).into_iter().map(|(a, b, p, _)| (a, b, p)).collect();
    let old_frames = (1..=7).map(|seq| (seq, seq, b"old".to_vec()));
    assert_eq!(got, old_frames.chain([(1, 1, b"new".to_vec())]).collect::<Vec<_>>(), "every old frame, then the new");
}

/// Publishes `n` frames into `old`, and has the tap read the first of them
/// (a frame a batch): the others it has seen published, not read.
fn read_the_first_of(tap: &mut Tap, ledger: &mut Ledger, old: &mut Writer, n: usize) {
    for _ in 0..n {
        old.publish(b"old").unwrap();
    }
    tap.batch = 1;
    assert_eq!(tap.pump(ledger), 1);
}

/// Ring `t` made again of `o`, a frame ("new") published into it, the tap
/// following it: every FRAME and GAP record of the ledger in `dir` then
/// (first and last sequence, a GAP's reason or 0).
fn made_again_and_recorded(
    ns: &Namespace,
    o: &RingOptions,
    ledger: &mut Ledger,
    tap: &mut Tap,
    dir: &std::path::Path,
) -> Vec<(u64, u64, u32)> {
    Ring::unlink(ns, "t").unwrap();
    Ring::create(ns, "t", o).unwrap().writer().unwrap().publish(b"new").unwrap();
    tap.check(ns, ledger).unwrap();
    while tap.pump(ledger) == 0 {}
    ledger.flush().unwrap();
    recorded(dir).into_iter().map(|(a, b, _, r)| (a, b, r)).collect()
}

/// A ring whose data region a peer shrank, made again under its name
/// (helixd does so: its sequence starts again at 1): what the recorder had
/// found published in the old one and not read is a GAP of reason 4
/// before the new one's frames. (Found by review: the old one ended in the
/// ledger where the recorder last read it, without a word.)
#[test]
fn a_ring_made_again_after_its_data_was_damaged_leaves_a_gap_for_what_was_not_read() {
    use helix::ledger::format::GAP_RING_LOST;
    let o = RingOptions { capacity: 64, max_payload: 8, ..Default::default() };
    let (ns, mut old, dir, mut ledger, mut tap) = recorded_to_its_end("ldglost", &o, 5);
    // 6 is read, 7 and 8 are seen published.
    read_the_first_of(&mut tap, &mut ledger, &mut old, 3);
    std::fs::OpenOptions::new().write(true).open(ns.0.data_path("t")).unwrap().set_len(0).unwrap();
    assert_eq!(tap.pump(&mut ledger), 0);
    assert!(tap.reader.is_none(), "the damaged ring's reader is dropped");
    // Said at once: a recorder started again before the ring is made
    // again would not know it.
    ledger.flush().unwrap();
    let gap = recorded(dir.path()).last().map(|&(a, b, _, r)| (a, b, r));
    assert_eq!(gap, Some((7, 8, GAP_RING_LOST)));
    drop(old);
    let got = made_again_and_recorded(&ns.0, &o, &mut ledger, &mut tap, dir.path());
    let old_frames = (1..=6).map(|seq| (seq, seq, 0));
    let want: Vec<(u64, u64, u32)> = old_frames.chain([(7, 8, GAP_RING_LOST), (1, 1, 0)]).collect();
    assert_eq!(got, want);
}

/// Marks the tap's reader demoted, as a writer does one that stalled (its
/// entry's `gating` word, written in the control file).
fn demote(ns: &Namespace, tap: &Tap) {
    use std::os::unix::fs::FileExt;
    let index = tap.reader.as_ref().unwrap().index() as u64;
    let at = helix::layout::READERS_HEADER_SIZE as u64 + index * helix::layout::READER_ENTRY_SIZE as u64 + 132;
    let readers = std::fs::OpenOptions::new().write(true).open(ns.readers_path("t")).unwrap();
    readers.write_all_at(&helix::layout::GATING_DEMOTED.to_ne_bytes(), at).unwrap();
    assert!(tap.reader.as_ref().unwrap().was_demoted());
}

/// A demoted tap whose ring's name no longer holds it reads it on, to its
/// end, then follows the ring made again under the name. (Found by
/// review: it let the ring go, though it could still read it, and the
/// frames its writer published after were neither FRAME nor GAP.)
#[test]
fn a_demoted_tap_whose_ring_was_removed_reads_it_on() {
    let o = RingOptions { capacity: 64, max_payload: 8, ..Default::default() };
    let (ns, mut old, dir, mut ledger, mut tap) = recorded_to_its_end("ldgdemgone", &o, 1);
    demote(&ns.0, &tap);
    Ring::unlink(&ns.0, "t").unwrap();
    tap.check(&ns.0, &mut ledger).unwrap();
    old.publish(b"old").unwrap();
    old.publish(b"old").unwrap();
    while tap.pump(&mut ledger) > 0 {}
    Ring::create(&ns.0, "t", &o).unwrap().writer().unwrap().publish(b"new").unwrap();
    tap.check(&ns.0, &mut ledger).unwrap();
    while tap.pump(&mut ledger) == 0 {}
    ledger.flush().unwrap();
    let got: Vec<(u64, u64, Vec<u8>)> = recorded(dir.path()).into_iter().map(|(a, b, p, _)| (a, b, p)).collect();
    let old_frames = (1..=3).map(|seq| (seq, seq, b"old".to_vec()));
    assert_eq!(got, old_frames.chain([(1, 1, b"new".to_vec())]).collect::<Vec<_>>());
}

/// A demoted tap that cannot join its ring again (here its files were
/// given to another user), the ring then made again: what it had seen
/// published and not read is a GAP of reason 3 before the new ring's
/// frames. (The known item "a tap whose re-register after a demotion
/// failed and whose ring is then replaced declares the new incarnation
/// without a GAP for the old one's rest".) Needs root, to give the files
/// away.
#[test]
fn a_demoted_tap_that_cannot_join_again_leaves_a_gap_when_its_ring_is_made_again() {
    if helix::process::my_uid() != 0 {
        eprintln!("skipped: giving a ring's files to another user needs root");
        return;
    }
    let o = RingOptions { capacity: 64, max_payload: 8, ..Default::default() };
    let (ns, mut old, dir, mut ledger, mut tap) = recorded_to_its_end("ldgdemjoin", &o, 1);
    // 2 is read, 3 to 5 are seen published.
    read_the_first_of(&mut tap, &mut ledger, &mut old, 4);
    demote(&ns.0, &tap);
    for path in [ns.0.data_path("t"), ns.0.readers_path("t")] {
        std::os::unix::fs::chown(&path, Some(65534), Some(65534)).unwrap();
    }
    tap.check(&ns.0, &mut ledger).unwrap();
    assert!(tap.reader.is_none(), "it joined a ring of another user's");
    drop(old);
    let got = made_again_and_recorded(&ns.0, &o, &mut ledger, &mut tap, dir.path());
    let want: Vec<(u64, u64, u32)> = [(1, 1, 0), (2, 2, 0), (3, 5, super::GAP_LET_GO), (1, 1, 0)].into();
    assert_eq!(got, want);
}
