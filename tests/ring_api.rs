//! The ring's behaviour through its public API, in one process.

mod common;

use std::time::Duration;

use common::TestNs;
use helix::*;

fn opts(capacity: u64, policy: Policy) -> RingOptions {
    RingOptions { capacity, max_payload: 64, policy, ..Default::default() }
}

/// A namespace of the test's own with ring "r" made with `o` in it, and
/// the ring's writer.
fn ring_with_writer(o: RingOptions) -> (TestNs, Ring, Writer) {
    let ns = TestNs::new();
    let ring = Ring::create(&ns, "r", &o).unwrap();
    let w = ring.writer().unwrap();
    (ns, ring, w)
}

#[test]
fn frames_arrive_in_order_with_sequence_numbers_from_one() {
    let (ns, ring, mut w) = ring_with_writer(opts(8, Policy::Overwrite));
    let mut r = Reader::attach(&ns, "r", &ReaderOptions::named("a")).unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(r.try_read(&mut buf), Err(TryReadError::Empty));
    for i in 1..=20u64 {
        assert_eq!(w.publish(&i.to_le_bytes()).unwrap(), i);
        let info = r.try_read(&mut buf).unwrap();
        assert_eq!((info.seq, info.len), (i, 8));
        assert_eq!(u64::from_le_bytes(buf[..8].try_into().unwrap()), i);
    }
    assert_eq!(r.try_read(&mut buf), Err(TryReadError::Empty));
    assert_eq!(ring.stats().published, 20);
    assert_eq!(ring.stats().bytes, 160);
}

#[test]
fn an_overrun_reports_exactly_what_was_lost_and_resumes_at_the_oldest_intact_frame() {
    let (_ns, ring, mut w) = ring_with_writer(opts(8, Policy::Overwrite));
    let mut r = ring.reader(&ReaderOptions { start: Start::Oldest, ..ReaderOptions::named("slow") }).unwrap();
    for i in 1..=30u64 {
        w.publish(&i.to_le_bytes()).unwrap();
    }
    let mut buf = [0u8; 8];
    // 30 published, 8 slots: 23..=30 are intact, 1..=22 are lost.
    assert_eq!(r.try_read(&mut buf), Err(TryReadError::Overrun(Overrun { lost: 22, resume_at: 23 })));
    for i in 23..=30u64 {
        assert_eq!(r.try_read(&mut buf).unwrap().seq, i);
        assert_eq!(u64::from_le_bytes(buf), i);
    }
    assert_eq!((r.overruns(), r.lost(), r.frames()), (1, 22, 8));
    let s = ring.stats();
    assert_eq!((s.readers[0].overruns, s.readers[0].lost, s.readers[0].frames), (1, 22, 8));
}

#[test]
fn newest_oldest_and_explicit_starts() {
    let (_ns, ring, mut w) = ring_with_writer(opts(8, Policy::Overwrite));
    for i in 1..=5u64 {
        w.publish(&i.to_le_bytes()).unwrap();
    }
    let newest = ring.reader(&ReaderOptions::named("n")).unwrap();
    let oldest = ring.reader(&ReaderOptions { start: Start::Oldest, ..ReaderOptions::named("o") }).unwrap();
    let at = ring.reader(&ReaderOptions { start: Start::At(4), ..ReaderOptions::named("a") }).unwrap();
    assert_eq!((newest.cursor(), oldest.cursor(), at.cursor()), (6, 1, 4));
    assert_eq!((newest.lag(), oldest.lag(), at.lag()), (0, 5, 2));
}

#[test]
fn a_block_ring_holds_the_writer_for_a_gating_reader_and_not_for_others() {
    let (_ns, ring, mut w) = ring_with_writer(opts(4, Policy::Block));
    let mut gate = ring.reader(&ReaderOptions { gating: true, ..ReaderOptions::named("gate") }).unwrap();
    let _free = ring.reader(&ReaderOptions::named("free")).unwrap();
    for i in 1..=4u64 {
        assert_eq!(w.try_publish(b"x").unwrap(), i);
    }
    assert_eq!(w.try_publish(b"x"), Err(PublishError::Full { needed: 1, free: 0 }));
    assert!(gate.is_gating() && gate.should_throttle());
    let mut buf = [0u8; 8];
    gate.try_read(&mut buf).unwrap();
    assert_eq!(w.try_publish(b"x").unwrap(), 5);
    assert_eq!(w.try_publish(b"x"), Err(PublishError::Full { needed: 1, free: 0 }));
    assert_eq!(w.publish_timeout(b"x", Duration::from_millis(20)), Err(PublishError::Full { needed: 1, free: 0 }));
    assert_eq!(ring.stats().writer_waits, 1);
    drop(gate);
    // The gating reader left: nothing holds the writer back any more.
    for _ in 0..10 {
        w.try_publish(b"x").unwrap();
    }
}

#[test]
fn a_wait_carried_over_several_calls_counts_once() {
    let (_ns, ring, mut w) =
        ring_with_writer(RingOptions { stall_timeout: Duration::from_secs(3600), ..opts(4, Policy::Block) });
    let mut gate = ring.reader(&ReaderOptions { gating: true, ..ReaderOptions::named("gate") }).unwrap();
    for _ in 0..4 {
        w.try_publish(b"x").unwrap();
    }
    // A caller that waits in short slices (to look for Ctrl-C between them,
    // as the Python writer does) waits once for the same reader.
    for _ in 0..3 {
        assert!(matches!(w.publish_timeout(b"x", Duration::from_millis(5)), Err(PublishError::Full { .. })));
    }
    assert_eq!(ring.stats().writer_waits, 1);
    // Once that reader released what the writer needed, the next wait is
    // another.
    let mut buf = [0u8; 8];
    gate.try_read(&mut buf).unwrap();
    w.try_publish(b"x").unwrap();
    assert!(matches!(w.publish_timeout(b"x", Duration::from_millis(5)), Err(PublishError::Full { .. })));
    assert_eq!(ring.stats().writer_waits, 2);
}

#[test]
fn a_stalled_gating_reader_is_demoted_and_then_sees_an_overrun() {
    let _dog = common::watchdog("stall demotion", Duration::from_secs(30));
    let o = RingOptions { stall_timeout: Duration::from_millis(50), ..opts(4, Policy::Block) };
    let (_ns, ring, mut w) = ring_with_writer(o);
    let mut gate = ring.reader(&ReaderOptions { gating: true, ..ReaderOptions::named("stuck") }).unwrap();
    for _ in 0..4 {
        w.try_publish(b"x").unwrap();
    }
    // Blocks until the stall timeout demotes the reader, then proceeds.
    assert_eq!(w.publish(b"x").unwrap(), 5);
    assert!(gate.was_demoted() && !gate.is_gating());
    let s = ring.stats();
    assert_eq!((s.demotions, s.writer_waits), (1, 1));
    assert!(s.readers[0].demoted);
    let mut buf = [0u8; 8];
    assert_eq!(gate.try_read(&mut buf), Err(TryReadError::Overrun(Overrun { lost: 1, resume_at: 2 })));
}

#[test]
fn batches_publish_and_consume_together() {
    let (_ns, ring, mut w) = ring_with_writer(opts(16, Policy::Overwrite));
    let mut r = ring.reader(&ReaderOptions::named("b")).unwrap();
    let mut claim = w.claim(5).unwrap();
    for i in 0..3u64 {
        claim.push_pod(&(i * 10)).unwrap();
    }
    // Nothing is visible before the commit.
    assert_eq!(r.try_read(&mut [0u8; 8]), Err(TryReadError::Empty));
    assert_eq!(claim.remaining(), 2);
    assert_eq!(claim.commit(), Some(3));
    let mut out = [0u64; 8];
    assert_eq!(r.try_read_batch_pod(&mut out).unwrap(), 3);
    assert_eq!(&out[..3], &[0, 10, 20]);
    // Unfilled reserved slots were not published: the sequence continues.
    assert_eq!(w.publish_pod(&7u64).unwrap(), 4);
    let mut seen = vec![];
    assert_eq!(r.try_read_batch(10, |f| seen.push((f.seq(), f.read::<u64>().unwrap()))).unwrap(), 1);
    assert_eq!(seen, [(4, 7)]);
    assert_eq!(w.try_claim(17).err(), Some(PublishError::BatchTooLarge { n: 17, capacity: 16 }));
    let mut c = w.claim(1).unwrap();
    c.push(b"a").unwrap();
    assert_eq!(c.push(b"b"), Err(PublishError::ClaimFull { claimed: 1 }));
}

#[test]
fn a_batch_while_stops_before_the_first_frame_refused_and_leaves_it_unread() {
    let (_ns, ring, mut w) = ring_with_writer(opts(16, Policy::Overwrite));
    let mut r = ring.reader(&ReaderOptions { start: Start::Oldest, ..ReaderOptions::named("w") }).unwrap();
    for kind in [1, 1, 2, 1] {
        w.publish_kind(kind, &[kind as u8]).unwrap();
    }
    let mut seen = vec![];
    let ones = |seen: &mut Vec<u64>, f: &FrameRef<'_>| {
        let take = f.kind() == 1;
        if take {
            seen.push(f.seq());
        }
        take
    };
    assert_eq!(r.try_read_batch_while(10, |f| ones(&mut seen, f)), Ok(2));
    // The frame of kind 2 is refused at once: nothing consumed.
    assert_eq!(r.try_read_batch_while(10, |f| ones(&mut seen, f)), Ok(0));
    assert_eq!((r.cursor(), r.frames()), (3, 2));
    assert_eq!(r.try_read_batch_while(10, |f| f.kind() == 2), Ok(1));
    assert_eq!(r.try_read_batch_while(10, |f| ones(&mut seen, f)), Ok(1));
    assert_eq!(seen, [1, 2, 4]);
    assert_eq!(r.try_read_batch_while(10, |_| true), Err(TryReadError::Empty));
}

#[test]
fn zero_copy_frames_release_their_slot_on_drop() {
    let (_ns, ring, mut w) = ring_with_writer(opts(4, Policy::Block));
    let mut r = ring.reader(&ReaderOptions { gating: true, ..ReaderOptions::named("z") }).unwrap();
    for i in 0..4u32 {
        w.publish_kind(9, &[i as u8; 12]).unwrap();
    }
    {
        let f = r.try_peek().unwrap();
        assert_eq!((f.seq(), f.len(), f.kind()), (1, 12, 9));
        assert_eq!(f.read_at::<u32>(8).unwrap(), 0);
        assert!(matches!(f.read::<u64>(), Err(FrameError::WrongSize { len: 12, wanted: 8, .. })));
        // Still held: the writer may not reuse slot 1.
        assert!(matches!(w.try_publish(b"x"), Err(PublishError::Full { .. })));
    }
    assert_eq!(w.try_publish(b"x").unwrap(), 5);
    assert_eq!(r.cursor(), 2);
}

/// A reader of `ring` that releases only when told, then frames 1 to `n`
/// (each its sequence, 8 bytes) published with `w`.
fn holding_reader(ring: &Ring, gating: bool, w: &mut Writer, n: u64) -> Reader {
    let mut r = ring.reader(&ReaderOptions { gating, ..ReaderOptions::named("holder") }).unwrap();
    r.set_deferred_release(true);
    for i in 1..=n {
        w.try_publish(&i.to_le_bytes()).unwrap();
    }
    r
}

/// The ledger hands each batch to a thread to write and releases it once
/// written, while it reads on: `release_to` frees the slots before a
/// sequence and no more, and never goes back.
#[test]
fn release_to_frees_the_slots_before_a_sequence_and_never_goes_back_or_past_the_cursor() {
    let (_ns, ring, mut w) = ring_with_writer(opts(4, Policy::Block));
    let mut r = holding_reader(&ring, true, &mut w, 4);
    assert_eq!(r.try_read_batch(8, |_| {}), Ok(4));
    r.release_to(3);
    assert_eq!((r.cursor(), r.released()), (5, 3));
    // Slots 1 and 2 are free again, 3 and 4 held.
    assert_eq!(w.try_publish(b"a").unwrap(), 5);
    assert_eq!(w.try_publish(b"b").unwrap(), 6);
    assert_eq!(w.try_publish(b"c"), Err(PublishError::Full { needed: 1, free: 0 }));
    // Behind what was released: nothing moves back.
    r.release_to(1);
    assert_eq!(r.released(), 3);
    // Past the cursor: only what was read is released.
    r.release_to(99);
    assert_eq!(r.released(), 5);
    assert_eq!(w.try_publish(b"c").unwrap(), 7);
    assert_eq!(w.try_publish(b"d").unwrap(), 8);
    assert_eq!(w.try_publish(b"e"), Err(PublishError::Full { needed: 1, free: 0 }));
}

#[test]
fn a_deferred_release_holds_read_slots_until_released() {
    let (_ns, ring, mut w) = ring_with_writer(opts(4, Policy::Block));
    let mut r = holding_reader(&ring, true, &mut w, 4);
    let mut buf = [0u8; 64];
    let mut seen = Vec::new();
    assert_eq!(r.try_read_batch(8, |f| seen.push(f.seq())), Ok(4));
    assert_eq!(seen, [1, 2, 3, 4]);
    // Read but held: the writer may not reuse any of the four slots.
    assert_eq!((r.cursor(), r.released()), (5, 1));
    assert_eq!(w.try_publish(b"x"), Err(PublishError::Full { needed: 1, free: 0 }));
    r.release();
    assert_eq!(r.released(), 5);
    assert_eq!(w.try_publish(b"x").unwrap(), 5);
    // Turning deferral off releases what was read and every read after it.
    assert_eq!(r.try_read(&mut buf).unwrap().seq, 5);
    assert_eq!(r.released(), 5);
    r.set_deferred_release(false);
    assert_eq!(r.released(), 6);
    w.try_publish(b"y").unwrap();
    assert_eq!(r.try_read(&mut buf).unwrap().seq, 6);
    assert_eq!(r.released(), 7);
}

#[test]
fn a_rewind_reads_again_from_the_first_frame_not_released_of_the_same_ring() {
    let (ns, ring, mut w) = ring_with_writer(opts(4, Policy::Overwrite));
    let mut r = holding_reader(&ring, false, &mut w, 3);
    let mut seen = Vec::new();
    assert_eq!(r.try_read_batch(1, |f| seen.push(f.seq())), Ok(1));
    r.release();
    assert_eq!(r.try_read_batch(8, |f| seen.push(f.seq())), Ok(2));
    // The hand-off of 2 and 3 failed: read them again, from this ring even
    // once another is under its name.
    drop(w);
    let mut other = Ring::recreate(&ns, "r", &opts(4, Policy::Overwrite)).unwrap().writer().unwrap();
    other.try_publish(b"another ring").unwrap();
    r.rewind();
    assert_eq!(r.cursor(), 2);
    let mut again = Vec::new();
    assert_eq!(r.try_read_batch(8, |f| again.push((f.seq(), f.read::<u64>().unwrap()))), Ok(2));
    assert_eq!(again, [(2, 2), (3, 3)]);
    // Frames overwritten since the release (a reader not gating) are an
    // overrun, exactly.
    r.release();
    let mut w = ring.writer().unwrap();
    assert_eq!(r.try_read_batch(8, |_| {}), Err(TryReadError::Empty));
    for i in 4..=9u64 {
        w.try_publish(&i.to_le_bytes()).unwrap();
    }
    assert_eq!(r.try_read_batch(8, |_| {}), Err(TryReadError::Overrun(Overrun { lost: 2, resume_at: 6 })));
    r.rewind();
    assert_eq!(r.try_read_batch(8, |_| {}), Err(TryReadError::Overrun(Overrun { lost: 2, resume_at: 6 })));
}

#[test]
fn oversize_frames_and_small_buffers_are_refused_without_loss() {
    let (_ns, ring, mut w) = ring_with_writer(opts(4, Policy::Overwrite));
    let mut r = ring.reader(&ReaderOptions::named("s")).unwrap();
    // Slots round up to whole cache lines: 64 requested, 112 usable.
    assert_eq!(w.geometry().max_payload, 112);
    assert_eq!(w.publish(&[0; 113]), Err(PublishError::TooLarge { len: 113, max: 112 }));
    w.publish(&[1; 112]).unwrap();
    let mut small = [0u8; 10];
    assert_eq!(
        r.try_read(&mut small),
        Err(TryReadError::Frame(FrameError::TooSmall { seq: 1, len: 112, capacity: 10 }))
    );
    // Not consumed: a big enough buffer gets it.
    let mut big = [0u8; 112];
    assert_eq!(r.try_read(&mut big).unwrap().seq, 1);
    assert_eq!(big, [1; 112]);
    // A wrong-size typed read consumes the frame and says so.
    w.publish(&[2; 3]).unwrap();
    assert!(matches!(r.try_read_pod::<u64>(), Err(TryReadError::Frame(FrameError::WrongSize { seq: 2, len: 3, .. }))));
    assert_eq!(r.cursor(), 3);
}

#[test]
fn a_second_live_writer_is_refused_and_the_next_writer_continues_the_sequence() {
    let (ns, ring, mut w) = ring_with_writer(opts(8, Policy::Overwrite));
    let e1 = w.epoch();
    w.publish(b"a").unwrap();
    match Writer::attach(&ns, "r") {
        Err(LeaseError::Held { pid, epoch, .. }) => assert_eq!((pid, epoch), (std::process::id(), e1)),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("second writer accepted"),
    }
    drop(w);
    let mut w2 = Writer::attach(&ns, "r").unwrap();
    assert_eq!(w2.epoch(), e1 + 1);
    assert_eq!(w2.publish(b"b").unwrap(), 2);
    assert_eq!(ring.stats().lease.pid, Some(std::process::id()));
}

#[test]
fn a_read_only_view_sees_the_same_counters() {
    let (ns, ring, mut w) = ring_with_writer(opts(8, Policy::Overwrite));
    w.publish(b"abc").unwrap();
    let view = RingView::attach(&ns, "r").unwrap();
    assert_eq!(view.geometry(), ring.geometry());
    let s = view.stats();
    assert_eq!((s.published, s.bytes, s.lease.pid, s.lease.alive), (1, 3, Some(std::process::id()), true));
}

#[test]
fn under_name_tells_the_same_ring_from_one_made_again_and_from_none() {
    let ns = TestNs::new();
    let first = Ring::create(&ns, "r", &opts(8, Policy::Overwrite)).unwrap().geometry().created_ns;
    assert!(matches!(RingView::under_name(&ns, "r", first), UnderName::Same(v) if v.geometry().created_ns == first));
    let again = Ring::recreate(&ns, "r", &opts(8, Policy::Overwrite)).unwrap().geometry().created_ns;
    assert_ne!(again, first);
    let now = RingView::under_name(&ns, "r", first);
    assert!(matches!(now, UnderName::Replaced(v) if v.geometry().created_ns == again));
    Ring::unlink(&ns, "r").unwrap();
    assert!(matches!(RingView::under_name(&ns, "r", first), UnderName::Gone));
    // A data file alone (a ring being made, say) is nothing to go by.
    std::fs::write(format!("/dev/shm/{}.half", ns.as_str()), [0u8; 4096]).unwrap();
    assert!(matches!(RingView::under_name(&ns, "half", first), UnderName::Unknown(_)));
}

#[test]
fn the_reader_table_fills_and_frees() {
    let ns = TestNs::new();
    let ring = Ring::create(&ns, "r", &RingOptions { max_readers: 2, ..opts(8, Policy::Overwrite) }).unwrap();
    let a = ring.reader(&ReaderOptions::named("a")).unwrap();
    let _b = ring.reader(&ReaderOptions::named("b")).unwrap();
    assert!(matches!(ring.reader(&ReaderOptions::named("c")), Err(AttachError::ReaderTableFull { max: 2, .. })));
    drop(a);
    let c = ring.reader(&ReaderOptions::named("c")).unwrap();
    assert_eq!(c.index(), 0);
    let names: Vec<String> = ring.stats().readers.into_iter().map(|r| r.name).collect();
    assert_eq!(names, ["c", "b"]);
    assert!(matches!(ring.reader(&ReaderOptions::named(&"n".repeat(33))), Err(AttachError::ReaderName { .. })));
}

#[test]
fn presets_and_options_are_validated_before_any_file_is_made() {
    let ns = TestNs::new();
    for p in Preset::ALL {
        let ring = Ring::create(&ns, p.as_str(), &RingOptions::preset(p, 4)).unwrap();
        assert_eq!(ring.geometry().max_payload, p.max_payload().next_multiple_of(64) + 48);
    }
    let bad = [
        RingOptions { capacity: 3, ..Default::default() },
        RingOptions { capacity: 1, ..Default::default() },
        RingOptions { max_payload: 17 << 20, ..Default::default() },
        RingOptions { max_readers: 0, ..Default::default() },
        RingOptions { stall_timeout: Duration::ZERO, ..Default::default() },
        RingOptions { mode: 0o400, ..Default::default() },
    ];
    for o in bad {
        assert!(matches!(Ring::create(&ns, "bad", &o), Err(CreateError::Options { .. })), "{o:?}");
    }
    for name in ["../x", "", &"a".repeat(64), "Upper", "a/b"] {
        assert!(matches!(Ring::create(&ns, name, &RingOptions::default()), Err(CreateError::Name(_))), "{name:?}");
        assert!(matches!(Reader::attach(&ns, name, &ReaderOptions::default()), Err(AttachError::Name(_))), "{name:?}");
    }
    assert!(matches!(Ring::create(&ns, "xs", &RingOptions::default()), Err(CreateError::Exists { .. })));
    assert!(matches!(Reader::attach(&ns, "nope", &ReaderOptions::default()), Err(AttachError::NotFound { .. })));
    assert_eq!(ns.files().len(), 10, "{:?}", ns.files());
}

#[test]
fn file_modes_give_readers_no_write_access_to_frame_data() {
    use std::os::unix::fs::PermissionsExt;
    let ns = TestNs::new();
    Ring::create(&ns, "r", &RingOptions { mode: 0o660, ..Default::default() }).unwrap();
    let mode = |p: std::path::PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(ns.data_path("r")), 0o640);
    assert_eq!(mode(ns.readers_path("r")), 0o660);
}

#[test]
fn unlink_removes_both_files_and_attached_handles_keep_working() {
    let (ns, ring, mut w) = ring_with_writer(opts(8, Policy::Overwrite));
    let mut r = ring.reader(&ReaderOptions::named("r")).unwrap();
    Ring::unlink(&ns, "r").unwrap();
    assert!(ns.files().is_empty());
    w.publish(b"still").unwrap();
    assert_eq!(r.try_read(&mut [0u8; 8]).unwrap().len, 5);
}

#[test]
fn blocking_reads_time_out_and_wake_on_publish() {
    let ns = TestNs::watched("blocking read", Duration::from_secs(30));
    let ring = Ring::create(&ns, "r", &opts(8, Policy::Overwrite)).unwrap();
    for wait in [WaitStrategy::Spin, WaitStrategy::Park, WaitStrategy::SpinThenPark { spins: 100 }] {
        let mut r = ring.reader(&ReaderOptions { wait, ..ReaderOptions::named("w") }).unwrap();
        assert_eq!(r.read_timeout(&mut [0u8; 8], Duration::from_millis(5)), Err(ReadError::Timeout));
        let ring2 = ring.clone();
        let t = std::thread::spawn(move || {
            let mut w = ring2.writer().unwrap();
            std::thread::sleep(Duration::from_millis(20));
            w.publish(b"wake").unwrap()
        });
        let info = r.read(&mut [0u8; 8]).unwrap();
        assert_eq!(info.seq, t.join().unwrap());
    }
}

#[test]
fn the_group_option_sets_both_files_group() {
    use std::os::unix::fs::MetadataExt;
    let ns = TestNs::new();
    // Our own primary group: chown to it needs no privilege.
    let gid = std::fs::metadata("/proc/self").unwrap().gid();
    Ring::create(&ns, "g", &RingOptions { group: Some(gid), mode: 0o600, ..Default::default() }).unwrap();
    for path in [ns.data_path("g"), ns.readers_path("g")] {
        let m = std::fs::metadata(&path).unwrap();
        assert_eq!(m.gid(), gid);
        assert_eq!(m.mode() & 0o777, 0o600, "{path:?}");
    }
    assert_eq!(shm::group_id(&gid.to_string()).unwrap(), gid);
    assert!(shm::group_id("no-such-group-hopefully").is_err());
}

#[test]
fn a_ring_another_user_owns_is_named_by_check_owner_on_what_is_mapped() {
    // Anyone may create files in /dev/shm: a program that records or acts
    // on a ring's frames must be able to tell a ring another user made
    // under the name it expects.
    if !common::root_or_skip("making a file another user's needs root") {
        return;
    }
    let (ns, ring, w) = ring_with_writer(opts(8, Policy::Overwrite));
    assert_eq!((ring.check_owner(), w.check_owner()), (Ok(()), Ok(())));
    drop(w);
    for path in [ns.data_path("r"), ns.readers_path("r")] {
        std::os::unix::fs::chown(&path, Some(65534), Some(65534)).unwrap();
    }
    let view = RingView::attach(&ns, "r").unwrap();
    let e = view.check_owner().unwrap_err();
    assert_eq!((e.owner, e.me, e.path.clone()), (65534, 0, ns.data_path("r")));
    assert!(e.to_string().contains("is owned by uid 65534"), "{e}");
    assert_eq!(view.owner_uid(), 65534);
    let reader = Reader::attach(&ns, "r", &ReaderOptions::named("a")).unwrap();
    assert_eq!(reader.check_owner(), Err(e.clone()));
    assert_eq!(Writer::attach(&ns, "r").unwrap().check_owner(), Err(e.clone()));
    // The owner is read once, from the file an attachment maps: a ring
    // attached before the change is still judged by its owner then.
    assert_eq!(ring.check_owner(), Ok(()));
    for path in [ns.data_path("r"), ns.readers_path("r")] {
        std::os::unix::fs::chown(&path, Some(0), Some(0)).unwrap();
    }
    assert_eq!(view.check_owner(), Err(e));
    assert_eq!(RingView::attach(&ns, "r").unwrap().check_owner(), Ok(()));
}

#[test]
fn a_forked_child_is_its_own_process_and_lets_go_of_nothing_its_parent_holds() {
    // Found by review: the process identity was cached once per address
    // space, so a child forked after the parent had touched a ring (Python's
    // multiprocessing does, by default) registered its reader entries and
    // leases as its parent, alive for as long as the parent lived; and a
    // child dropping what it inherited let go of the parent's lease, reader
    // entry, fan-in consumer role and lane.
    use helix::fanin::{FanIn, FanInOptions, Producer};
    let _dog = common::watchdog("fork", Duration::from_secs(60));
    let (ns, ring, writer) = ring_with_writer(opts(64, Policy::Block));
    let reader = Reader::attach(&ns, "r", &ReaderOptions::named("parent")).unwrap();
    let fopts = FanInOptions { lanes: 2, lane_capacity: 4096, max_payload: 64, ..Default::default() };
    let fan = FanIn::create(&ns, "f", &fopts).unwrap();
    let producer = Producer::attach(&ns, "f").unwrap();
    // SAFETY: the child runs only what the test writes here and leaves by
    // _exit; the parent waits for it.
    let child = match unsafe { nix::unistd::fork() }.unwrap() {
        nix::unistd::ForkResult::Child => {
            drop((reader, writer, fan, producer));
            // A reader entry of its own, left behind as a killed process's.
            let code = match Reader::attach(&ns, "r", &ReaderOptions::named("child")) {
                Ok(r) => {
                    std::mem::forget(r);
                    0
                }
                Err(_) => 1,
            };
            // SAFETY: ends the child without running the parent's exit code.
            unsafe { libc::_exit(code) }
        }
        nix::unistd::ForkResult::Parent { child } => child,
    };
    let status = nix::sys::wait::waitpid(child, None).unwrap();
    assert_eq!(status, nix::sys::wait::WaitStatus::Exited(child, 0));
    let me = std::process::id();
    let stats = ring.stats();
    assert_eq!(stats.lease.pid, Some(me), "the parent's lease stands");
    let entry = |name: &str| stats.readers.iter().find(|r| r.name == name).cloned();
    assert!(entry("parent").is_some_and(|r| r.pid == me && r.alive), "{:?}", stats.readers);
    let theirs = entry("child").expect("the child's entry");
    assert_eq!((theirs.pid, theirs.alive), (child.as_raw() as u32, false), "the child's entry is its own");
    let fstats = helix::fanin::FanInView::open(&ns, "f").unwrap().stats();
    assert_eq!(fstats.consumer_pid, me, "the parent is still the consumer");
    assert!(fstats.lanes.iter().all(|l| !l.closed), "the parent's lane is still open: {:?}", fstats.lanes);
    drop((reader, writer, fan, producer));
}

/// A caller that looked a reader up (by its name: `helixctl evict RING
/// NAME --force`) and evicts it after that reader left and another process
/// took its entry does not evict the other. (Found by review: a reader
/// restarting at that moment was evicted in its place.)
#[test]
fn evicting_a_reader_looked_up_before_spares_the_next_owner_of_its_entry() {
    let (ns, ring, _w) = ring_with_writer(opts(64, Policy::Overwrite));
    let view = RingView::attach(&ns, "r").unwrap();
    let first = ring.reader(&ReaderOptions::named("ledger")).unwrap();
    let found = view.stats().readers.into_iter().find(|r| r.name == "ledger").unwrap();
    // It leaves (its entry stays claimed here), and another process joins
    // in the same entry.
    let mut next = std::process::Command::new("sleep").arg("60").spawn().unwrap();
    common::hand_entry_to(&ns, "r", found.index, next.id());
    assert_eq!(view.evict_reader(found.index, found.pid, true), Err(EvictError::Raced { index: found.index }));
    let still = view.stats().readers.into_iter().find(|r| r.index == found.index).unwrap();
    assert_eq!((still.pid, still.alive), (next.id(), true));
    next.kill().unwrap();
    next.wait().unwrap();
    // The reader looked up, still there, is evicted.
    let second = ring.reader(&ReaderOptions::named("twin")).unwrap();
    let found = view.stats().readers.into_iter().find(|r| r.name == "twin").unwrap();
    assert_eq!(view.evict_reader(found.index, found.pid, true).unwrap().index, second.index());
    drop((first, second));
}
