//! Shared test support: a private namespace per test that cleans up after
//! itself, a watchdog, and re-executing this test binary as a child process.
#![allow(dead_code)]

/// The programs' child-process type (spawn, signal, wait with a deadline,
/// kill and reap on drop). A test that also compiles in the programs'
/// whole `shared` folder (tests/twin.rs) has it twice, harmlessly.
#[path = "../../src/bin/shared/child.rs"]
#[allow(clippy::duplicate_mod)]
pub mod child;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use child::{ChildProcess, Signal};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::Duration;

use helix::Namespace;

/// Namespaces and child pids alive in this test process, so that a watchdog
/// that aborts the process still removes the files and kills the children.
static LIVE_NAMESPACES: Mutex<Vec<Namespace>> = Mutex::new(Vec::new());
static LIVE_CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// A namespace no other test (or test process) uses; its files in /dev/shm
/// are removed on drop.
pub struct TestNs {
    pub ns: Namespace,
}

impl TestNs {
    pub fn new() -> TestNs {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!("t{}x{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        let ns = Namespace::new(&name).unwrap();
        remove_files(&ns);
        LIVE_NAMESPACES.lock().unwrap_or_else(|e| e.into_inner()).push(ns.clone());
        TestNs { ns }
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

fn remove_files(ns: &Namespace) {
    let prefix = format!("{}.", ns.as_str());
    if let Ok(dir) = std::fs::read_dir("/dev/shm") {
        for e in dir.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        remove_files(&self.ns);
        LIVE_NAMESPACES.lock().unwrap_or_else(|e| e.into_inner()).retain(|n| n != &self.ns);
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
            // Leave nothing behind: kill the children, remove the rings.
            for &pid in LIVE_CHILDREN.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                // A child this process started and has not reaped (a
                // `Reaped` leaves the list before it reaps).
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
            for ns in LIVE_NAMESPACES.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                remove_files(ns);
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

/// The env var that tells a re-executed test binary which role to play.
pub const ROLE_VAR: &str = "HELIX_TEST_ROLE";

/// A command that re-runs this test binary as a child playing `role`; the
/// test binary must have a `#[test] fn child_entry()` that dispatches on
/// `ROLE_VAR`. Arguments go through environment variables.
pub fn child(role: &str, ns: &Namespace) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["child_entry", "--exact", "--nocapture", "--test-threads=1", "-q"])
        .env(ROLE_VAR, role)
        .env("HELIX_NAMESPACE", ns.as_str());
    cmd
}

/// A child the test started: killed and reaped on drop, so no test leaves
/// processes behind, and killed by the watchdog if the test hangs. `.0`
/// is the shared child type, which dereferences to `std::process::Child`.
pub struct Reaped(pub ChildProcess);

impl Reaped {
    /// Takes charge of `child`.
    pub fn new(child: Child) -> Reaped {
        LIVE_CHILDREN.lock().unwrap_or_else(|e| e.into_inner()).push(child.id());
        Reaped(ChildProcess::adopt("child", child))
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        LIVE_CHILDREN.lock().unwrap_or_else(|e| e.into_inner()).retain(|&p| p != self.0.pid());
        let _ = self.0.kill();
    }
}

/// Sends signal `sig` (a libc signal number) to `child`, which the test
/// started and has not reaped; a child that has already exited is not an
/// error.
pub fn signal(child: &Child, sig: i32) {
    let sig = Signal::try_from(sig).expect("a signal number");
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig);
}

/// Reads an environment variable the parent set for a child.
pub fn arg<T: std::str::FromStr>(name: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    std::env::var(name).unwrap_or_else(|_| panic!("missing {name}")).parse().unwrap()
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

/// The payload length used for sequence `seq` in ring tests of `max` bytes.
pub fn payload_len(seq: u64, max: usize) -> usize {
    (seq as usize * 7) % (max + 1)
}

/// A Unix datagram socket standing in for systemd's NOTIFY_SOCKET.
pub struct Notify {
    pub sock: UnixDatagram,
    pub path: PathBuf,
}

impl Notify {
    /// Binds `notify.sock` in `dir`; pass `path` as NOTIFY_SOCKET.
    pub fn new(dir: &Path) -> Notify {
        Notify::at(dir.join("notify.sock"))
    }

    /// Binds a socket at `path` (for tests with several services).
    pub fn at(path: PathBuf) -> Notify {
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Notify { sock, path }
    }

    pub fn next(&self) -> String {
        let mut buf = [0u8; 4096];
        loop {
            match self.sock.recv(&mut buf) {
                Ok(n) => return String::from_utf8_lossy(&buf[..n]).into_owned(),
                // A receive time-out returns EINTR when a signal arrives,
                // even with SA_RESTART.
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => panic!("no notification within 20 s: {e}"),
            }
        }
    }

    /// The next message containing `what`.
    pub fn until(&self, what: &str) -> String {
        loop {
            let m = self.next();
            if m.lines().any(|l| l == what || l.starts_with(what)) {
                return m;
            }
        }
    }
}
