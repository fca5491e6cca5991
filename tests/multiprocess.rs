//! Real processes attaching by name: throughput with content checks, a
//! writer killed with SIGKILL at random points, a gating reader killed with
//! SIGKILL, and the read-only mapping enforced by the MMU.
//!
//! Children are this test binary re-executed with a role (see `child_entry`).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{arg, child, payload, payload_len, Kid, TestNs};
use helix::*;

const MAX_PAYLOAD: usize = 48;

/// Entry point of child processes; a no-op when run as a normal test.
#[test]
fn child_entry() {
    let Ok(role) = std::env::var(common::ROLE_VAR) else { return };
    let ns = Namespace::from_env().unwrap();
    match role.as_str() {
        "writer" => run_writer(&ns, arg("RING"), arg("FRAMES"), arg("BATCH")),
        "reader" => run_reader(&ns, arg("RING"), arg("FRAMES")),
        "sleeping-gate" => {
            let _r = Reader::attach(
                &ns,
                &arg::<String>("RING"),
                &ReaderOptions { gating: true, ..ReaderOptions::named("sleeper") },
            )
            .unwrap();
            println!("ready");
            std::thread::sleep(Duration::from_secs(3600));
        }
        "scribble" => scribble(&ns, &arg::<String>("RING")),
        "parked" => {
            let mut r = Reader::attach(
                &ns,
                &arg::<String>("RING"),
                &ReaderOptions { wait: WaitStrategy::Park, ..ReaderOptions::named("parked") },
            )
            .unwrap();
            println!("ready");
            // Parks on the futex until killed (nothing is ever published).
            let _ = r.read(&mut [0u8; 64]);
        }
        other => panic!("unknown role {other}"),
    }
    std::process::exit(0);
}

/// Publishes deterministic frames until sequence `frames` (u64::MAX: until
/// killed), in batches of 1..=`batch` frames.
fn run_writer(ns: &Namespace, ring: String, frames: u64, batch: u64) {
    let mut w = Writer::attach(ns, &ring).unwrap();
    println!("writer epoch {} starts at {}", w.epoch(), w.next_seq());
    let mut buf = [0u8; MAX_PAYLOAD];
    let mut rng = std::process::id() as u64;
    while w.next_seq() <= frames {
        rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let n = (1 + (rng >> 33) % batch).min(frames - w.next_seq() + 1);
        let mut claim = w.claim(n).unwrap();
        for _ in 0..n {
            let seq = claim.next_seq();
            let len = payload_len(seq, MAX_PAYLOAD);
            payload(seq, len, &mut buf);
            claim.push(&buf[..len]).unwrap();
        }
    }
}

/// Reads frames 1..=`frames` as a gating reader, checking every byte and the
/// sequence continuity; prints a summary line.
fn run_reader(ns: &Namespace, ring: String, frames: u64) {
    let mut r = Reader::attach(
        ns,
        &ring,
        &ReaderOptions { gating: true, start: Start::At(1), ..ReaderOptions::named("checker") },
    )
    .unwrap();
    println!("ready");
    let (mut buf, mut want) = ([0u8; MAX_PAYLOAD], [0u8; MAX_PAYLOAD]);
    let mut sum = 0u64;
    for expect in 1..=frames {
        let info = r.read_timeout(&mut buf, Duration::from_secs(20)).unwrap_or_else(|e| panic!("at {expect}: {e}"));
        assert_eq!(info.seq, expect, "sequence gap or repeat");
        let len = payload_len(expect, MAX_PAYLOAD);
        payload(expect, len, &mut want);
        assert_eq!((info.len, &buf[..len]), (len, &want[..len]), "content of frame {expect}");
        sum = sum.wrapping_add(buf[..len].iter().map(|&b| b as u64).sum::<u64>());
    }
    println!("read {frames} frames, overruns {}, byte sum {sum}", r.overruns());
}

/// Attaches as a reader, then writes into the frame data through the
/// mapping it finds in /proc/self/maps: the MMU must kill it with SIGSEGV.
fn scribble(ns: &Namespace, ring: &str) {
    let _r = Reader::attach(ns, ring, &ReaderOptions::named("scribbler")).unwrap();
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let data = ns.data_path(ring);
    let control = ns.readers_path(ring);
    let find = |path: &std::path::Path| {
        maps.lines()
            .find(|l| l.ends_with(path.to_str().unwrap()))
            .unwrap_or_else(|| panic!("{path:?} not mapped"))
            .to_owned()
    };
    let (data_line, control_line) = (find(&data), find(&control));
    let perms = |l: &str| l.split_whitespace().nth(1).unwrap().to_owned();
    assert_eq!(perms(&data_line), "r--s", "data region must be mapped read-only and shared");
    assert_eq!(perms(&control_line), "rw-s", "control region must be mapped read-write and shared");
    let addr = usize::from_str_radix(data_line.split('-').next().unwrap(), 16).unwrap();
    println!("writing to the data region at {addr:#x}");
    // SAFETY: deliberately not safe: this write must fault, which is the
    // property under test; the process dies before anything else runs.
    unsafe { std::ptr::write_volatile((addr + 2048) as *mut u8, 0xFF) };
    println!("the write went through");
}

fn block_ring(ns: &TestNs, name: &str, capacity: u64, stall: Duration) -> Ring {
    let opts = RingOptions {
        capacity,
        max_payload: MAX_PAYLOAD as u32,
        policy: Policy::Block,
        stall_timeout: stall,
        ..Default::default()
    };
    Ring::create(ns, name, &opts).unwrap()
}

/// A block ring `name` of 8 slots, a child process holding a gating reader
/// on it that never reads, and the ring's writer.
fn ring_gated_by_a_sleeper(ns: &TestNs, name: &str, stall: Duration) -> (Ring, Kid, Writer) {
    let ring = block_ring(ns, name, 8, stall);
    let sleeper = Kid::until(child("sleeping-gate", ns).env("RING", name), "ready");
    let w = ring.writer().unwrap();
    (ring, sleeper, w)
}

#[test]
fn one_writer_three_reader_processes_move_ten_million_frames_intact() {
    const FRAMES: u64 = 10_000_000;
    let ns = TestNs::watched("10M frames through 3 reader processes", Duration::from_secs(300));
    let ring = block_ring(&ns, "bulk", 4096, Duration::from_secs(30));
    let mut readers: Vec<Kid> = (0..3)
        .map(|_| Kid::until(child("reader", &ns).env("RING", "bulk").env("FRAMES", FRAMES.to_string()), "ready"))
        .collect();
    let writer =
        Kid::spawn(child("writer", &ns).env("RING", "bulk").env("FRAMES", FRAMES.to_string()).env("BATCH", "64"));
    writer.finish();
    let sums: Vec<String> = readers.iter_mut().map(|r| r.expect("read ")).collect();
    readers.into_iter().for_each(|r| drop(r.finish()));
    assert!(sums.iter().all(|s| s == &sums[0]), "{sums:?}");
    assert!(sums[0].starts_with(&format!("read {FRAMES} frames, overruns 0")), "{}", sums[0]);
    let s = ring.stats();
    assert_eq!((s.published, s.demotions), (FRAMES, 0));
}

#[test]
fn a_writer_killed_at_random_points_leaves_no_torn_frame_and_the_next_continues_the_sequence() {
    const KILLS: usize = 50;
    let ns = TestNs::watched("50 writer kills", Duration::from_secs(300));
    let ring = block_ring(&ns, "kill", 64, Duration::from_secs(60));
    let mut r =
        ring.reader(&ReaderOptions { gating: true, start: Start::At(1), ..ReaderOptions::named("verify") }).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    // The verifying reader drains concurrently, checking every frame.
    let verifier = {
        let (stop, ring) = (stop.clone(), ring.clone());
        std::thread::spawn(move || {
            let (mut buf, mut want) = ([0u8; MAX_PAYLOAD], [0u8; MAX_PAYLOAD]);
            let mut expect = 1u64;
            loop {
                match r.read_timeout(&mut buf, Duration::from_millis(20)) {
                    Ok(info) => {
                        assert_eq!(info.seq, expect, "gap or repeat after a writer kill");
                        let len = payload_len(expect, MAX_PAYLOAD);
                        payload(expect, len, &mut want);
                        assert_eq!(&buf[..info.len], &want[..len], "torn or wrong frame {expect}");
                        expect += 1;
                    }
                    Err(ReadError::Timeout) if stop.load(Ordering::Acquire) && expect > ring.stats().published => {
                        return expect - 1;
                    }
                    Err(ReadError::Timeout) => {}
                    Err(e) => panic!("at {expect}: {e}"),
                }
            }
        })
    };
    let mut last_published = 0;
    let mut rng = 0x5EEDu64;
    for i in 0..KILLS {
        let mut w =
            Kid::spawn(child("writer", &ns).env("RING", "kill").env("FRAMES", u64::MAX.to_string()).env("BATCH", "8"));
        // The new writer announces where it continues: right after the last
        // published (or recovered) frame, never earlier.
        let line = w.expect("writer epoch");
        let start: u64 = line.split_whitespace().last().unwrap().parse().unwrap();
        assert!(
            start > last_published,
            "kill {i}: writer restarted at {start}, {last_published} already published: {line}"
        );
        rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1);
        // Where the kill lands is random; what is checked never depends on it.
        std::thread::sleep(Duration::from_micros((rng >> 40) % 3000));
        drop(w); // SIGKILL and reap
        last_published = ring.stats().published;
    }
    stop.store(true, Ordering::Release);
    let verified = verifier.join().unwrap();
    let s = ring.stats();
    assert_eq!(verified, s.published);
    assert!(s.published > 0);
    assert_eq!(s.lease.takeovers, KILLS as u64 - 1);
    assert!(!s.lease.alive);
    // One more writer still continues the sequence.
    let mut w = ring.writer().unwrap();
    assert_eq!(w.publish(b"after").unwrap(), s.published + 1);
}

#[test]
fn a_gating_reader_killed_with_sigkill_releases_the_writer() {
    let ns = TestNs::watched("dead gating reader", Duration::from_secs(60));
    let (ring, sleeper, mut w) = ring_gated_by_a_sleeper(&ns, "gate", Duration::from_millis(500));
    for _ in 0..8 {
        w.try_publish(b"x").unwrap();
    }
    assert!(matches!(w.try_publish(b"x"), Err(PublishError::Full { .. })));
    drop(sleeper); // SIGKILL and reap
                   // The blocking publish returns: the dead reader stops gating.
    assert_eq!(w.publish(b"x").unwrap(), 9);
    let s = ring.stats();
    assert_eq!(s.demotions, 1);
    assert_eq!(s.readers.len(), 1);
    assert!(!s.readers[0].alive && s.readers[0].demoted);
    let report = ring.sweep();
    assert_eq!(report.readers_freed.len(), 1);
    assert_eq!(report.readers_freed[0].name, "sleeper");
    // The writer demoted it before the sweep came: no longer gating.
    assert!(!report.readers_freed[0].was_gating);
    assert!(ring.stats().readers.is_empty());
}

#[test]
fn a_stalled_gating_reader_process_is_demoted_after_the_stall_timeout() {
    let ns = TestNs::watched("stalled gating reader", Duration::from_secs(60));
    let (ring, _sleeper, mut w) = ring_gated_by_a_sleeper(&ns, "stall", Duration::from_millis(200));
    for seq in 1..=9 {
        assert_eq!(w.publish(b"x").unwrap(), seq);
    }
    let s = ring.stats();
    assert_eq!((s.demotions, s.writer_waits), (1, 1));
    assert!(s.readers[0].alive && s.readers[0].demoted && !s.readers[0].gating);
    // It stalled, it was not dead: a sweep leaves it registered.
    assert!(ring.sweep().readers_freed.is_empty());
}

#[test]
fn a_reader_that_writes_into_frame_data_is_killed_by_the_mmu() {
    let ns = TestNs::watched("read-only mapping", Duration::from_secs(60));
    let ring = block_ring(&ns, "ro", 8, Duration::from_secs(1));
    let out = child("scribble", &ns).env("RING", "ro").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        out.status.signal(),
        Some(SIGSEGV),
        "{}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("writing to the data region") && !stdout.contains("went through"), "{stdout}");
    assert_eq!(ring.stats().published, 0);
}

/// SIGSEGV on Linux.
const SIGSEGV: i32 = 11;

#[test]
fn a_reader_killed_while_parked_is_swept_and_its_wait_count_taken_back() {
    let ns = TestNs::watched("parked reader sweep", Duration::from_secs(60));
    let ring = block_ring(&ns, "park", 8, Duration::from_secs(1));
    let kid = Kid::until(child("parked", &ns).env("RING", "park"), "ready");
    while ring.stats().parked == 0 {
        std::thread::yield_now();
    }
    drop(kid); // SIGKILL and reap, while parked
               // Its count stays until a sweep: the writer would wake for nobody.
    assert_eq!(ring.stats().parked, 1);
    let report = ring.sweep();
    assert_eq!(report.readers_freed.len(), 1);
    assert_eq!(report.readers_freed[0].name, "parked");
    let s = ring.stats();
    assert_eq!((s.parked, s.swept, s.readers.len()), (0, 1, 0));
}

/// A joiner killed before it cleared its entry's `parked` word, left at 1
/// by the entry's last owner (who died parked: the sweep that freed it
/// took its count back then): the sweep that frees the joiner's entry
/// takes nothing from `waiters` again. (Found by review: it did, and a
/// reader really parked went uncounted: not woken by the writer's commits
/// until its 100 ms re-check, and its own unpark then wrapped the count,
/// so every commit made a system call for the ring's life.)
#[test]
fn a_sweep_of_a_joiner_that_died_takes_no_parked_count_back_twice() {
    use std::os::unix::fs::FileExt;
    let ns = TestNs::watched("a stale parked word", Duration::from_secs(60));
    let ring = block_ring(&ns, "stale", 8, Duration::from_secs(1));
    let mut w = ring.writer().unwrap();
    let opts = ReaderOptions { wait: WaitStrategy::Park, ..ReaderOptions::named("parked") };
    let mut parked = ring.reader(&opts).unwrap();
    let index = parked.index();
    let waiting = std::thread::spawn(move || {
        let mut buf = [0u8; 8];
        parked.read_timeout(&mut buf, Duration::from_secs(30)).map(|i| i.seq)
    });
    common::eventually("the reader parks", || ring.stats().parked == 1);
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = gone.id();
    gone.wait().unwrap();
    let other = if index == 0 { 1 } else { 0 };
    let at = |field: usize| (layout::READERS_HEADER_SIZE + other * layout::READER_ENTRY_SIZE + field) as u64;
    let f = std::fs::OpenOptions::new().write(true).open(ns.readers_path("stale")).unwrap();
    f.write_all_at(&1u32.to_ne_bytes(), at(std::mem::offset_of!(layout::ReaderEntry, parked))).unwrap();
    let state = layout::entry_state(dead_pid, layout::ENTRY_CLAIMING);
    f.write_all_at(&state.to_ne_bytes(), at(std::mem::offset_of!(layout::ReaderEntry, state))).unwrap();
    assert_eq!(ring.sweep().readers_freed.len(), 1);
    assert_eq!(ring.stats().parked, 1, "the parked reader is still counted");
    w.publish(b"wake").unwrap();
    assert_eq!(waiting.join().unwrap(), Ok(1));
    assert_eq!(ring.stats().parked, 0);
}

#[test]
fn a_sweep_frees_an_entry_whose_joiner_died_and_releases_a_dead_writers_lease() {
    use std::os::unix::fs::FileExt;
    let ns = TestNs::new();
    let ring = block_ring(&ns, "dead", 8, Duration::from_secs(1));
    // A process that has exited (reaped) stands for a joiner that died
    // between claiming entry 0 and activating it, and for a dead writer.
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = gone.id();
    gone.wait().unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(ns.readers_path("dead")).unwrap();
    let entry0_state = (layout::READERS_HEADER_SIZE + 128) as u64;
    f.write_all_at(&layout::entry_state(dead_pid, layout::ENTRY_CLAIMING).to_ne_bytes(), entry0_state).unwrap();
    let d = std::fs::OpenOptions::new().write(true).open(ns.data_path("dead")).unwrap();
    d.write_all_at(&layout::lease_word(dead_pid, 5, true).to_ne_bytes(), 256).unwrap();
    assert_eq!(ring.stats().lease.pid, Some(dead_pid));
    assert!(!ring.stats().lease.alive);
    let report = ring.sweep();
    assert_eq!((report.readers_freed.len(), report.readers_freed[0].index), (1, 0));
    assert_eq!(report.lease_released, Some(dead_pid));
    assert_eq!(ring.stats().lease.takeovers, 1);
    // The next writer gets the next epoch.
    assert_eq!(ring.writer().unwrap().epoch(), 6);
    // A live process's entry is never swept.
    let _r = ring.reader(&ReaderOptions::named("alive")).unwrap();
    assert!(ring.sweep().is_empty());
}
