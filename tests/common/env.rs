//! One test's surroundings: a ring namespace of its own and a scratch
//! folder (a `tempfile` directory), both removed when the test ends, and
//! the programs started in them.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{live, TestNs, LIVE_DIRS};
use helix::Namespace;

/// A private namespace and a scratch folder; on drop (or when the watchdog
/// fires) the namespace's files in /dev/shm and the folder with all in it
/// are removed.
pub struct Env {
    pub ns: TestNs,
    /// The scratch folder.
    pub dir: PathBuf,
    tmp: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        Env::with(TestNs::new())
    }

    /// An `Env` for a test that could hang: its watchdog fails the test
    /// with `what` if the `Env` is still in use after `limit`.
    pub fn watched(what: &'static str, limit: Duration) -> Env {
        Env::with(TestNs::watched(what, limit))
    }

    fn with(ns: TestNs) -> Env {
        let tmp = tempfile::Builder::new().prefix(&format!("helix-test-{}-", ns.as_str())).tempdir().unwrap();
        live(&LIVE_DIRS).push(tmp.path().to_owned());
        Env { ns, dir: tmp.path().to_owned(), tmp }
    }

    /// `name` in the scratch folder.
    pub fn path(&self, name: impl AsRef<Path>) -> PathBuf {
        self.dir.join(name)
    }

    /// Writes the configuration file `name` in the scratch folder: this
    /// test's namespace, then `body`. Returns its path.
    pub fn file(&self, name: &str, body: &str) -> PathBuf {
        let path = self.path(name);
        let mut f = std::fs::File::create(&path).unwrap();
        writeln!(f, "namespace = \"{}\"\n{body}", self.ns.as_str()).unwrap();
        path
    }

    /// The service `exe` with `--config config`, outside systemd (no
    /// NOTIFY_SOCKET, no WATCHDOG_USEC), its standard error piped.
    pub fn program(&self, exe: &str, config: &Path) -> Command {
        let mut c = Command::new(exe);
        c.arg("--config")
            .arg(config)
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        c
    }

    /// helixd with `--config config`, as `program`.
    pub fn helixd(&self, config: &Path) -> Command {
        self.program(env!("CARGO_BIN_EXE_helixd"), config)
    }

    /// The recorder's signing key `ledger.key` in the scratch folder,
    /// created on first use (checkpoints are signed as in production:
    /// tests/ledger_signing.rs checks them).
    pub fn ledger_key(&self) -> PathBuf {
        let path = self.path("ledger.key");
        if !path.exists() {
            let key = ed25519_dalek::SigningKey::from_bytes(&[0x5a; 32]);
            std::fs::write(&path, helix::ledger::sign::format_secret(&key)).unwrap();
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o400)).unwrap();
        }
        path
    }

    /// helix-ledger in this test's namespace, outside systemd (no
    /// NOTIFY_SOCKET, no WATCHDOG_USEC), its standard output discarded and
    /// its standard error to `stderr`; the caller adds the arguments.
    pub fn helix_ledger(&self, stderr: impl Into<Stdio>) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_helix-ledger"));
        c.env("HELIX_NAMESPACE", self.ns.as_str())
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .stdout(Stdio::null())
            .stderr(stderr);
        c
    }

    /// The file `name` in the scratch folder, opened to append to (created
    /// if missing): a program's log.
    pub fn append_log(&self, name: &str) -> std::fs::File {
        std::fs::OpenOptions::new().create(true).append(true).open(self.path(name)).unwrap()
    }

    /// helixctl in this test's namespace: (success, stdout, stderr).
    pub fn ctl(&self, args: &[&str]) -> (bool, String, String) {
        ctl(&self.ns, args)
    }

    /// Gives both files of broadcast ring `ring` to `uid` (root only): a
    /// ring another user made.
    #[allow(dead_code)]
    pub fn chown_ring(&self, ring: &str, uid: u32) {
        for path in [self.ns.data_path(ring), self.ns.readers_path(ring)] {
            std::os::unix::fs::chown(&path, Some(uid), Some(uid)).unwrap();
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        live(&LIVE_DIRS).retain(|d| d != self.tmp.path());
    }
}

/// helixctl in namespace `ns`: (success, stdout, stderr).
pub fn ctl(ns: &Namespace, args: &[&str]) -> (bool, String, String) {
    let out =
        Command::new(env!("CARGO_BIN_EXE_helixctl")).arg("--namespace").arg(ns.as_str()).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A helixd `[[ring]]` table; `size` is its payload line, such as
/// `max_payload = 48` (a telemetry sample) or `preset = "s"`.
pub fn ring_toml(name: &str, size: &str, capacity: u64, policy: &str) -> String {
    format!("[[ring]]\nname = \"{name}\"\n{size}\ncapacity = {capacity}\npolicy = \"{policy}\"\n")
}

/// A helixd `[[source]]` table: the simulator writing `streams` streams at
/// 100 Hz into `ring`.
pub fn sim_toml(ring: &str, streams: u32) -> String {
    format!("[[source]]\nkind = \"sim\"\nring = \"{ring}\"\nstreams = {streams}\nrate_hz = 100.0\n")
}
