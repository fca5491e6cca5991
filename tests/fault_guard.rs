//! A peer shrinking a shared ring file must not SIGBUS anyone else
//! (DESIGN.md section 2.1, docs/security.md "Shrinking a shared file"):
//! every mapping of a ring file is guarded, so the fault becomes a damaged
//! attachment that reports `Damaged`, and the process lives on. A fault
//! outside the guarded mappings still kills.
//!
//! Children are this test binary re-executed with a role (see `child_entry`).

mod common;

use std::fs::OpenOptions;
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use common::{arg, child, Kid, TestNs};
use helix::*;

/// Entry point of child processes; a no-op when run as a normal test.
#[test]
fn child_entry() {
    let Ok(role) = std::env::var(common::ROLE_VAR) else { return };
    let ns = Namespace::from_env().unwrap();
    match role.as_str() {
        "writer" => writer(&ns, &arg::<String>("RING")),
        "gating-reader" => gating_reader(&ns, &arg::<String>("RING")),
        "parked-reader" => parked_reader(&ns, &arg::<String>("RING")),
        "stray-fault" => stray_fault(&ns, std::env::var("PREVIOUS").is_ok_and(|p| p == "default")),
        other => panic!("unknown role {other}"),
    }
    std::process::exit(0);
}

/// A frame's payload: its own sequence number, so a reader can tell a
/// bogus frame (zeros, or another frame's bytes) from the real one.
fn check(buf: &[u8], info: FrameInfo) {
    assert_eq!(info.len, 8, "frame {}: length {}", info.seq, info.len);
    assert_eq!(u64::from_ne_bytes(buf[..8].try_into().unwrap()), info.seq, "bogus frame {}", info.seq);
}

/// Creates ring `name`, moves a frame through it, removes it: the process
/// still works after a damage.
fn fresh_ring_works(ns: &Namespace, name: &str) {
    let ring = Ring::create(ns, name, &RingOptions { capacity: 8, ..Default::default() }).unwrap();
    let mut w = ring.writer().unwrap();
    let mut r = ring.reader(&ReaderOptions { start: Start::Oldest, ..ReaderOptions::named("fresh") }).unwrap();
    let seq = w.publish(&1u64.to_ne_bytes()).unwrap();
    let mut buf = [0u8; 64];
    let info = r.read_timeout(&mut buf, Duration::from_secs(5)).unwrap();
    assert_eq!(info.seq, seq);
    check(&buf, info);
    drop((r, w, ring));
    Ring::unlink(ns, name).unwrap();
}

/// Publishes until the ring is damaged, then shows it lives on.
fn writer(ns: &Namespace, ring: &str) {
    let mut w = Writer::attach(ns, ring).unwrap();
    println!("writer ready");
    loop {
        let next = w.next_seq();
        match w.publish(&next.to_ne_bytes()) {
            Ok(seq) => assert_eq!(seq, next),
            Err(PublishError::Damaged(d)) => {
                assert_eq!((d.ring.as_str(), d.file), (ring, RingFile::Readers), "{d}");
                assert!(w.is_damaged() && w.damage() == Some(d));
                // It stays damaged: nothing is published into the zeros.
                assert_eq!(w.try_publish(b"x"), Err(PublishError::Damaged(d)));
                println!("writer damaged after {}: {d}", next - 1);
                break;
            }
            Err(e) => panic!("writer at {next}: {e}"),
        }
    }
    drop(w);
    fresh_ring_works(ns, "fresh-w");
    println!("writer fresh ring ok");
}

/// Reads as a gating reader, checking every frame, until the ring is
/// damaged; then shows it lives on.
fn gating_reader(ns: &Namespace, ring: &str) {
    let opts = ReaderOptions { gating: true, start: Start::At(1), ..ReaderOptions::named("victim") };
    let mut r = Reader::attach(ns, ring, &opts).unwrap();
    println!("reader ready");
    let mut buf = [0u8; 64];
    let mut expect = 1;
    loop {
        match r.read_timeout(&mut buf, Duration::from_secs(20)) {
            Ok(info) => {
                assert_eq!(info.seq, expect, "gap or repeat");
                check(&buf, info);
                if expect == 1000 {
                    println!("reader reading");
                }
                expect += 1;
            }
            Err(ReadError::Damaged(d)) => {
                assert_eq!((d.ring.as_str(), d.file), (ring, RingFile::Readers), "{d}");
                assert!(r.is_damaged());
                assert_eq!(r.try_read(&mut buf), Err(TryReadError::Damaged(d)));
                println!("reader damaged after {}: {d}", expect - 1);
                break;
            }
            Err(e) => panic!("reader at {expect}: {e}"),
        }
    }
    drop(r);
    // Attaching to the broken ring is an error, not a crash.
    match Reader::attach(ns, ring, &ReaderOptions::named("again")) {
        Err(e) => println!("reader attach refused: {e}"),
        Ok(_) => panic!("attached to a ring whose control region is empty"),
    }
    fresh_ring_works(ns, "fresh-r");
    println!("reader fresh ring ok");
}

/// Waits for frames with a plain `read` (no time-out), parked on the futex:
/// only the damage can end the wait.
fn parked_reader(ns: &Namespace, ring: &str) {
    let opts = ReaderOptions { wait: WaitStrategy::Park, start: Start::At(1), ..ReaderOptions::named("parked") };
    let mut r = Reader::attach(ns, ring, &opts).unwrap();
    println!("ready");
    let mut buf = [0u8; 64];
    loop {
        match r.read(&mut buf) {
            Ok(info) => {
                check(&buf, info);
                println!("got {}", info.seq);
            }
            Err(ReadError::Damaged(d)) => {
                assert_eq!((d.ring.as_str(), d.file), (ring, RingFile::Data), "{d}");
                println!("damaged: {d}");
                return;
            }
            Err(e) => panic!("{e}"),
        }
    }
}

/// With the guard installed and guarding a ring, touches a mapping of its
/// own whose file was truncated: a real bug, which must still kill.
fn stray_fault(ns: &Namespace, default_before: bool) {
    if default_before {
        // The guard then chains to the default action, not to Rust's own
        // SIGBUS handler.
        // SAFETY: SIG_DFL installs no handler.
        unsafe { libc::signal(libc::SIGBUS, libc::SIG_DFL) };
    }
    let no_core = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: a valid rlimit struct; this process only.
    unsafe { libc::setrlimit(libc::RLIMIT_CORE, &no_core) };
    let ring = Ring::create(ns, "guarded", &RingOptions::default()).unwrap();
    let path = ns.data_path("stray");
    let f = OpenOptions::new().read(true).write(true).create_new(true).open(&path).unwrap();
    f.set_len(8192).unwrap();
    let map = memmap2::MmapOptions::new().map_raw(&f).unwrap();
    f.set_len(0).unwrap();
    println!("touching");
    // SAFETY: deliberately not safe: the page is past the end of the file,
    // so this read must raise SIGBUS, which is the property under test; the
    // process dies before anything else runs.
    let v = unsafe { std::ptr::read_volatile(map.as_ptr().add(4096)) };
    println!("still alive: read {v}");
    drop(ring);
}

#[test]
fn truncating_the_readers_file_damages_the_writer_and_the_reader_and_kills_neither() {
    let ns = TestNs::watched("@readers truncated under a writer and a reader", Duration::from_secs(60));
    // The gating reader is waited for however slow the machine: demotion
    // is not what this test checks.
    let opts = RingOptions {
        capacity: 16,
        policy: Policy::Block,
        stall_timeout: Duration::from_secs(60),
        ..Default::default()
    };
    drop(Ring::create(&ns, "tel", &opts).unwrap());
    let mut reader = Kid::until(child("gating-reader", &ns).env("RING", "tel"), "reader ready");
    let mut writer = Kid::until(child("writer", &ns).env("RING", "tel"), "writer ready");
    reader.expect("reader reading");

    // The third party: any member of the ring's group may open the control
    // region for writing, and so truncate it.
    OpenOptions::new().write(true).open(ns.readers_path("tel")).unwrap().set_len(0).unwrap();

    let w = writer.expect("writer damaged");
    let r = reader.expect("reader damaged");
    for line in [&w, &r] {
        assert!(line.contains("\"tel\"") && line.contains("control region (@readers)"), "{line}");
    }
    let refused = reader.expect("reader attach refused");
    assert!(refused.contains("truncated"), "{refused}");
    writer.expect("writer fresh ring ok");
    reader.expect("reader fresh ring ok");
    writer.finish();
    reader.finish();

    // The owner repairs it: the data region, its frames and its sequence
    // survive; readers join the new table.
    let ring = Ring::repair_readers(&ns, "tel").unwrap();
    assert!(!ring.is_damaged());
    let s = ring.stats();
    assert!(s.published >= 1000 && s.readers.is_empty() && !s.lease.alive, "{s:?}");
    let mut r = ring
        .reader(&ReaderOptions { gating: true, start: Start::At(s.published), ..ReaderOptions::named("back") })
        .unwrap();
    let mut w = ring.writer().unwrap();
    assert_eq!(w.next_seq(), s.published + 1);
    w.publish(&(s.published + 1).to_ne_bytes()).unwrap();
    let mut buf = [0u8; 64];
    for seq in [s.published, s.published + 1] {
        let info = r.read_timeout(&mut buf, Duration::from_secs(5)).unwrap();
        assert_eq!(info.seq, seq);
        check(&buf, info);
    }
    // And a ring created afterwards works.
    fresh_ring_works(&ns, "after");
}

#[test]
fn truncating_the_data_file_under_a_parked_reader_ends_its_wait_with_damaged() {
    let ns = TestNs::watched("data file truncated under a parked reader", Duration::from_secs(60));
    let ring = Ring::create(&ns, "data", &RingOptions { capacity: 64, ..Default::default() }).unwrap();
    let mut w = ring.writer().unwrap();
    let mut kid = Kid::until(child("parked-reader", &ns).env("RING", "data"), "ready");
    for seq in 1..=3u64 {
        w.publish(&seq.to_ne_bytes()).unwrap();
    }
    kid.expect("got 3");
    while ring.stats().parked == 0 {
        std::thread::yield_now();
    }
    // Its owner truncates the data file while the reader sleeps on a futex
    // word in it (and while this process maps it read-write too).
    OpenOptions::new().write(true).open(ns.data_path("data")).unwrap().set_len(0).unwrap();
    let line = kid.expect("damaged");
    assert!(line.contains("\"data\"") && line.contains("data region"), "{line}");
    kid.finish();

    // The owner's own handles are damaged, not dead.
    match w.publish(&4u64.to_ne_bytes()) {
        Err(PublishError::Damaged(d)) => assert_eq!(d.file, RingFile::Data),
        other => panic!("{other:?}"),
    }
    assert_eq!(ring.damage().map(|d| d.file), Some(RingFile::Data));
    assert!(matches!(ring.reader(&ReaderOptions::named("late")), Err(AttachError::Damaged(_))));
    // A ring without its data cannot be repaired, only recreated.
    assert!(matches!(Ring::repair_readers(&ns, "data"), Err(RepairError::Attach(_))));
    drop((w, ring));
    Ring::unlink(&ns, "data").unwrap();
    fresh_ring_works(&ns, "data");
}

/// A reader spinning with no deadline (`WaitStrategy::Spin` parks only
/// after u32::MAX polls, minutes) looks for damage as a parked one does:
/// a data file cut short behind the slot it polls ends its wait.
#[test]
fn cutting_the_data_file_short_under_a_spinning_reader_ends_its_wait_with_damaged() {
    let ns = TestNs::watched("data file cut short under a spinning reader", Duration::from_secs(60));
    let ring = Ring::create(&ns, "spun", &RingOptions { capacity: 256, ..Default::default() }).unwrap();
    let mut r = ring.reader(&ReaderOptions { wait: WaitStrategy::Spin, ..ReaderOptions::named("spinner") }).unwrap();
    let spinner = std::thread::spawn(move || r.wait());
    // 1024 header bytes and 128-byte slots: one page keeps the slot of
    // sequence 1, which the reader polls, readable.
    OpenOptions::new().write(true).open(ns.data_path("spun")).unwrap().set_len(4096).unwrap();
    match spinner.join().unwrap() {
        Err(ReadError::Damaged(d)) => assert_eq!((d.ring.as_str(), d.file), ("spun", RingFile::Data)),
        other => panic!("expected the damage, got {other:?}"),
    }
}

#[test]
fn a_data_file_cut_short_never_delivers_a_bogus_frame() {
    let ns = TestNs::new();
    let ring = Ring::create(&ns, "cut", &RingOptions { capacity: 256, ..Default::default() }).unwrap();
    let mut w = ring.writer().unwrap();
    let mut r = ring.reader(&ReaderOptions { start: Start::At(1), ..ReaderOptions::named("cut") }).unwrap();
    for seq in 1..=256u64 {
        w.publish(&seq.to_ne_bytes()).unwrap();
    }
    // 1024 header bytes and 128-byte slots, sequence s in slot s (s < 256):
    // four pages keep frames 1 to 119.
    OpenOptions::new().write(true).open(ns.data_path("cut")).unwrap().set_len(4 * 4096).unwrap();
    let mut buf = [0u8; 64];
    let mut delivered = 0;
    let damage = loop {
        match r.try_read(&mut buf) {
            Ok(info) => {
                assert_eq!(info.seq, delivered + 1);
                check(&buf, info);
                delivered += 1;
            }
            Err(TryReadError::Damaged(d)) => break d,
            Err(e) => panic!("after {delivered} frames: {e}"),
        }
    };
    assert_eq!((delivered, damage.file), (119, RingFile::Data));
    assert_eq!(w.try_publish(b"x"), Err(PublishError::Damaged(damage)));
    // A new attach sees the short file for what it is.
    assert!(matches!(RingView::attach(&ns, "cut"), Err(AttachError::Truncated { size: 16384, .. })));
}

#[test]
fn a_fault_outside_the_guarded_mappings_still_kills_with_sigbus() {
    let ns = TestNs::watched("stray SIGBUS", Duration::from_secs(60));
    // Chained to Rust's own SIGBUS handler, and to the default action.
    for previous in ["rust", "default"] {
        let out = child("stray-fault", &ns).env("PREVIOUS", previous).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGBUS),
            "previous disposition {previous}: {}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("touching") && !stdout.contains("still alive"), "{stdout}");
        let _ = std::fs::remove_file(ns.data_path("stray"));
        let _ = Ring::unlink(&ns, "guarded");
    }
}

#[test]
fn repair_readers_works_under_the_lease_and_keeps_the_data_region() {
    use std::os::unix::fs::PermissionsExt;
    let ns = TestNs::new();
    let ring = Ring::create(&ns, "fix", &RingOptions { capacity: 8, ..Default::default() }).unwrap();
    let mut w = ring.writer().unwrap();
    for seq in 1..=5u64 {
        w.publish(&seq.to_ne_bytes()).unwrap();
    }
    let mode = |ns: &TestNs| std::fs::metadata(ns.readers_path("fix")).unwrap().permissions().mode() & 0o777;
    // Intact: it only attaches, live writer or not.
    assert!(!Ring::repair_readers(&ns, "fix").unwrap().is_damaged());
    // Wiped (zeros, full size): the live writer's lease holds the repair off.
    let f = OpenOptions::new().write(true).open(ns.readers_path("fix")).unwrap();
    let len = f.metadata().unwrap().len();
    f.set_len(0).unwrap();
    f.set_len(len).unwrap();
    assert!(matches!(RingView::attach(&ns, "fix"), Err(AttachError::BadField { field: "magic", .. })));
    assert!(matches!(Ring::repair_readers(&ns, "fix"), Err(RepairError::Lease(LeaseError::Held { .. }))));
    drop(w);
    let fixed = Ring::repair_readers(&ns, "fix").unwrap();
    assert_eq!((fixed.stats().published, mode(&ns)), (5, 0o660));
    // The repair truncated the old file: the old attachment sees the damage.
    assert_eq!(ring.damage().map(|d| d.file), Some(RingFile::Readers));
    assert!(matches!(ring.writer(), Err(LeaseError::Damaged(_))));
    // Missing altogether: made again, its mode derived from the data region's.
    drop((ring, fixed));
    std::fs::remove_file(ns.readers_path("fix")).unwrap();
    let again = Ring::repair_readers(&ns, "fix").unwrap();
    assert_eq!(mode(&ns), 0o660);
    assert_eq!(again.writer().unwrap().publish(&6u64.to_ne_bytes()), Ok(6));
}

/// A name taken beside the control file, where a repair once made its new
/// one, keeps no repair from succeeding. (Found by review: the repair made
/// `<ring>@readers.new`, removing what was there first; anyone may make
/// files in /dev/shm, and a file of another user's, which a sticky
/// folder keeps the repairer from removing, or a folder, made every repair
/// fail for good.)
#[test]
fn a_name_taken_beside_the_control_file_keeps_no_repair_from_succeeding() {
    let ns = TestNs::new();
    let ring = Ring::create(&ns, "squat", &RingOptions { capacity: 8, ..Default::default() }).unwrap();
    ring.writer().unwrap().publish(b"kept").unwrap();
    let mut taken = ns.readers_path("squat").into_os_string();
    taken.push(".new");
    std::fs::create_dir(&taken).unwrap();
    std::fs::remove_file(ns.readers_path("squat")).unwrap();
    let repaired = Ring::repair_readers(&ns, "squat");
    std::fs::remove_dir(&taken).unwrap();
    let repaired = repaired.unwrap();
    assert_eq!(repaired.writer().unwrap().publish(b"next"), Ok(2));
    // Nothing of the repair's is left beside the control file.
    assert_eq!(ns.files(), [format!("{}.squat", ns.as_str()), format!("{}.squat@readers", ns.as_str())]);
    drop(ring);
}

/// Found by review: a repair killed between linking its new control file
/// and renaming it over the old one left `<ring>@readers.<pid>.<hex>.new`
/// in /dev/shm for good (the old fixed name was reused, and so cleaned,
/// by the next repair). The next repair removes the leftovers of dead
/// processes of its own user; a live process's, or another user's, stay.
#[test]
fn a_repair_killed_before_its_rename_leaves_nothing_the_next_repair_keeps() {
    use std::os::unix::fs::chown;
    let ns = TestNs::new();
    let ring = Ring::create(&ns, "left", &RingOptions { capacity: 8, ..Default::default() }).unwrap();
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let beside = |pid: u32, salt: &str| {
        let mut name = ns.readers_path("left").into_os_string();
        name.push(format!(".{pid}.{salt}.new"));
        std::path::PathBuf::from(name)
    };
    let killed = beside(dead, "00000000deadbeef");
    let live = beside(std::process::id(), "0123456789abcdef");
    let others = beside(dead, "fedcba9876543210");
    let not_ours = beside(dead, "not-a-salt");
    let young = beside(dead, "0000000000000001");
    // Older than a minute, as a leftover is: a file made just now may be
    // a process's in another pid namespace (which looks dead from here)
    // between its link and its rename.
    let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    for p in [&killed, &live, &others, &not_ours, &young] {
        let f = std::fs::File::create(p).unwrap();
        if p != &young {
            f.set_modified(hour_ago).unwrap();
        }
    }
    let foreign = common::root_or_skip("giving a file to another user needs root");
    if foreign {
        chown(&others, Some(65534), Some(65534)).unwrap();
    }
    std::fs::remove_file(ns.readers_path("left")).unwrap();
    let repaired = Ring::repair_readers(&ns, "left").unwrap();
    assert!(!killed.exists(), "a dead repair's file is left");
    let kept = [&live, &not_ours, &young];
    for p in kept {
        assert!(p.exists(), "{p:?} was removed");
    }
    if foreign {
        assert!(others.exists(), "another user's was removed");
    }
    for p in kept.into_iter().chain([&others]) {
        let _ = std::fs::remove_file(p);
    }
    drop((repaired, ring));
}
