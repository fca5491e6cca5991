//! Shared test support, a file a topic:
//! - here: a private namespace per test that cleans up after itself, a
//!   watchdog, and deterministic payloads;
//! - `children`: re-executing this test binary as a child process, and
//!   children that are killed and reaped on drop;
//! - `env`: a namespace and a scratch folder together, and the programs
//!   started in them;
//! - `service`: a socket standing in for systemd's NOTIFY_SOCKET;
//! - `ledger`: a ledger folder rewritten as someone who can write it would.
#![allow(dead_code)]

/// The programs' child-process type (spawn, signal, wait with a deadline,
/// kill and reap on drop). A test that also compiles in the programs'
/// whole `shared` folder (tests/twin.rs) has it twice, harmlessly.
#[path = "../../src/bin/shared/child.rs"]
#[allow(clippy::duplicate_mod)]
pub mod child;
mod children;
mod env;
mod ledger;
mod reader_entry;
mod service;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::Duration;

use child::Signal;
use helix::Namespace;

// Each test file uses some of these; the rest would be unused imports.
#[allow(unused_imports)]
pub use children::{arg, child, signal, stderr_of, AsUser, Kid, Reaped, ROLE_VAR};
#[allow(unused_imports)]
pub use env::{ctl, ring_toml, sim_toml, Env};
#[allow(unused_imports)]
pub use ledger::{rewrite, small_ledger};
#[allow(unused_imports)]
pub use reader_entry::hand_entry_to;
#[allow(unused_imports)]
pub use service::Notify;

/// Namespaces, child pids and scratch folders alive in this test process,
/// so that a watchdog that aborts the process still removes the files and
/// kills the children.
static LIVE_NAMESPACES: Mutex<Vec<Namespace>> = Mutex::new(Vec::new());
static LIVE_CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());
static LIVE_DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Locks one of the lists above; a test that panicked holding it does not
/// poison it for the others.
fn live<T>(list: &Mutex<Vec<T>>) -> std::sync::MutexGuard<'_, Vec<T>> {
    list.lock().unwrap_or_else(|e| e.into_inner())
}

/// A namespace no other test (or test process) uses; its files in /dev/shm
/// are removed on drop.
pub struct TestNs {
    pub ns: Namespace,
    /// The test's watchdog, if the namespace was made with one: it stops
    /// watching when the namespace goes, at the end of the test.
    dog: Option<Watchdog>,
}

impl TestNs {
    pub fn new() -> TestNs {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!("t{}x{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        let ns = Namespace::new(&name).unwrap();
        remove_files(&ns);
        live(&LIVE_NAMESPACES).push(ns.clone());
        note_owner(&name);
        TestNs { ns, dog: None }
    }

    /// A namespace as `new` makes, for a test that could hang: its
    /// watchdog fails the test with `what` if the namespace is still in
    /// use after `limit`.
    pub fn watched(what: &'static str, limit: Duration) -> TestNs {
        let dog = watchdog(what, limit);
        let mut ns = TestNs::new();
        ns.dog = Some(dog);
        ns
    }

    /// Every file this namespace has in /dev/shm.
    pub fn files(&self) -> Vec<String> {
        let prefix = format!("{}.", self.ns.as_str());
        let mut v: Vec<String> = std::fs::read_dir("/dev/shm")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with(&prefix))
            .collect();
        v.sort();
        v
    }
}

/// Under `tools/test`, which sets HELIX_TEST_NAMESPACES to a folder of its
/// own: notes there which test made namespace `name`, so that a file left
/// in /dev/shm after the suite (tools/test looks) is named with the test
/// that left it.
fn note_owner(name: &str) {
    let Some(dir) = std::env::var_os("HELIX_TEST_NAMESPACES") else { return };
    let exe = std::env::current_exe().ok();
    let exe = exe.as_ref().and_then(|p| p.file_name()).map_or("?".into(), |n| n.to_string_lossy());
    let test = std::thread::current().name().unwrap_or("?").to_owned();
    let _ = std::fs::write(PathBuf::from(dir).join(name), format!("{test} (in {exe})\n"));
}

fn remove_files(ns: &Namespace) {
    let prefix = format!("{}.", ns.as_str());
    if let Ok(dir) = std::fs::read_dir("/dev/shm") {
        for e in dir.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                // Fan-in rings are folders.
                let _ = std::fs::remove_file(e.path()).or_else(|_| std::fs::remove_dir_all(e.path()));
            }
        }
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        remove_files(&self.ns);
        live(&LIVE_NAMESPACES).retain(|n| n != &self.ns);
    }
}

impl std::ops::Deref for TestNs {
    type Target = Namespace;
    fn deref(&self) -> &Namespace {
        &self.ns
    }
}

/// Fails the whole test process with `what` if not dropped within `limit`.
pub struct Watchdog(Option<mpsc::Sender<()>>);

pub fn watchdog(what: &'static str, limit: Duration) -> Watchdog {
    let (tx, rx) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
            eprintln!("WATCHDOG: {what} did not finish within {limit:?}; aborting");
            // Leave nothing behind: kill the children, remove the rings and
            // the scratch folders.
            for &pid in live(&LIVE_CHILDREN).iter() {
                // A child this process started and has not reaped (a
                // `Reaped` leaves the list before it reaps).
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
            for ns in live(&LIVE_NAMESPACES).iter() {
                remove_files(ns);
            }
            for dir in live(&LIVE_DIRS).iter() {
                let _ = std::fs::remove_dir_all(dir);
            }
            std::process::abort();
        }
    });
    Watchdog(Some(tx))
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

/// Whether this test process runs as root; if not, says that the test is
/// skipped and `why` it needs root.
pub fn root_or_skip(why: &str) -> bool {
    let root = helix::process::my_uid() == 0;
    if !root {
        eprintln!("skipped: {why}");
    }
    root
}

/// Waits until `done` holds, failing the test with `what` after 20 s: for
/// what another thread or process does in its own time (never a fixed
/// sleep before an assertion that it happened).
pub fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "{what}: not within 20 s");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `BIN verify DIR --json` (`BIN` helix-ledger, or another binary with
/// that verb): its exit code and JSON.
pub fn verify_json(bin: &str, dir: &std::path::Path) -> (i32, serde_json::Value) {
    let out = std::process::Command::new(bin).arg("verify").arg(dir).arg("--json").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text:?} {:?}", out.stderr));
    (out.status.code().unwrap(), v)
}

/// A deterministic payload for sequence `seq`: `len` bytes derived from it,
/// so a reader can check content without a side channel.
pub fn payload(seq: u64, len: usize, out: &mut [u8]) {
    let mut x = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for b in out[..len].iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
}

/// A deterministic pseudo-random source (xorshift64, from `seed`, not
/// zero): each call gives a number below its argument.
pub fn xorshift(seed: u64) -> impl FnMut(u64) -> u64 {
    let mut x = seed;
    move |n| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    }
}

/// The payload length used for sequence `seq` in ring tests of `max` bytes.
pub fn payload_len(seq: u64, max: usize) -> usize {
    (seq as usize * 7) % (max + 1)
}

/// Publishes sequences `from..=to` through `w` (the next it publishes must
/// be `from`), each with its [`payload`] of [`payload_len`] up to 64 bytes.
pub fn publish_payloads(w: &mut helix::Writer, from: u64, to: u64) {
    let mut buf = [0u8; 64];
    for seq in from..=to {
        let len = payload_len(seq, 64);
        payload(seq, len, &mut buf);
        assert_eq!(w.publish(&buf[..len]).unwrap(), seq);
    }
}

/// Sweeps fan-in ring `fan` once, then drains a few rounds: the records'
/// payloads and the lanes reported dropped (a lane it could not take,
/// [`helix::fanin::Event::Unbindable`], fails the test: see
/// [`sweep_and_drain_all`]).
pub fn sweep_and_drain(fan: &mut helix::fanin::FanIn) -> (Vec<Vec<u8>>, Vec<helix::fanin::LaneReport>) {
    let (records, reports, unbindable) = sweep_and_drain_all(fan);
    assert!(unbindable.is_empty(), "{unbindable:?}");
    (records, reports)
}

/// What [`sweep_and_drain_all`] found: the records' payloads, the lanes
/// reported dropped, and those the consumer could not take (lane, why).
pub type Drained = (Vec<Vec<u8>>, Vec<helix::fanin::LaneReport>, Vec<(usize, String)>);

/// [`sweep_and_drain`], with the lanes the consumer said it could not
/// take (lane, reason).
pub fn sweep_and_drain_all(fan: &mut helix::fanin::FanIn) -> Drained {
    use helix::fanin::Event;
    let (mut records, mut reports, mut unbindable) = (Vec::new(), Vec::new(), Vec::new());
    let mut on = |e: Event<'_>| match e {
        Event::Record(r) => records.push(r.to_vec().unwrap()),
        Event::Dropped(report) => reports.push(report),
        Event::Unbindable { lane, reason } => unbindable.push((lane, reason)),
    };
    fan.sweep(&mut on);
    for _ in 0..4 {
        fan.drain_timeout(1000, Duration::ZERO, &mut on);
    }
    (records, reports, unbindable)
}

/// A read lock anyone may take on the first `len` bytes of `file` (0: all
/// of it), opened for reading.
pub fn read_lock(file: &std::fs::File, len: libc::off_t) {
    use nix::fcntl::{fcntl, FcntlArg};
    // SAFETY: `flock` is a plain C struct of integers; zeros are valid.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_RDLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_len = len;
    fcntl(file, FcntlArg::F_OFD_SETLK(&fl)).expect("a read lock on the file");
}
