//! Children of a test: this test binary re-executed in a role, or a
//! program; killed and reaped on drop, and by the watchdog if the test
//! hangs.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::child::{ChildProcess, Signal};
use super::{live, LIVE_CHILDREN};
use helix::Namespace;

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

/// A copy of this test binary that other users may run (the build's own
/// folder may be closed to them), and commands that run it as another
/// user. Needs root.
pub struct AsUser {
    copy: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl AsUser {
    pub fn new() -> AsUser {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let exe = std::env::current_exe().unwrap();
        let copy = dir.path().join(exe.file_name().unwrap());
        std::fs::copy(&exe, &copy).unwrap();
        AsUser { copy, _dir: dir }
    }

    /// A command that runs the copy as `uid`:`gid` in `role` (see
    /// [`child`]).
    pub fn command(&self, ns: &Namespace, role: &str, uid: u32, gid: u32) -> Command {
        use std::os::unix::process::CommandExt;
        let cmd = child(role, ns);
        let mut c = Command::new(&self.copy);
        c.args(cmd.get_args()).envs(cmd.get_envs().filter_map(|(k, v)| Some((k, v?))));
        c.uid(uid).gid(gid);
        c
    }
}

/// Reads an environment variable the parent set for a child.
pub fn arg<T: std::str::FromStr>(name: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    std::env::var(name).unwrap_or_else(|_| panic!("missing {name}")).parse().unwrap()
}

/// A child the test started: killed and reaped on drop, so no test leaves
/// processes behind, and killed by the watchdog if the test hangs. `.0`
/// is the shared child type, which dereferences to `std::process::Child`.
pub struct Reaped(pub ChildProcess);

impl Reaped {
    /// Takes charge of `child`.
    pub fn new(child: Child) -> Reaped {
        live(&LIVE_CHILDREN).push(child.id());
        Reaped(ChildProcess::adopt("child", child))
    }

    /// Stops it with SIGTERM and asserts that it exits successfully.
    pub fn terminate(&mut self) {
        signal(&self.0, libc::SIGTERM);
        let status = self.0.wait().unwrap();
        assert!(status.success(), "exited with {status} after SIGTERM");
    }

    /// Kills it with SIGKILL once `pause` has passed, spinning until then
    /// (a sleep is too coarse to land at a random point of its work), and
    /// returns its status.
    pub fn kill_after(&mut self, pause: Duration) -> ExitStatus {
        let until = Instant::now() + pause;
        while Instant::now() < until {
            std::hint::spin_loop();
        }
        signal(&self.0, libc::SIGKILL);
        self.0.wait().unwrap()
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        live(&LIVE_CHILDREN).retain(|&p| p != self.0.pid());
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

/// All of `child`'s standard error (it must have been piped), read to its
/// end: the child has exited or closed it.
pub fn stderr_of(child: &mut Child) -> String {
    let mut s = String::new();
    if let Some(mut e) = child.stderr.take() {
        std::io::Read::read_to_string(&mut e, &mut s).unwrap();
    }
    s
}

/// A child whose standard output the test reads line by line: it prints
/// where it has got to.
pub struct Kid {
    pub child: Reaped,
    pub out: BufReader<ChildStdout>,
}

impl Kid {
    /// Starts `cmd` with its standard output piped to the test.
    pub fn spawn(cmd: &mut Command) -> Kid {
        // A program file just written (`AsUser`'s copy) is "busy" while a
        // child another test forked meanwhile still holds its write
        // descriptor, until that child's exec closes it: try again.
        let mut tries = 0;
        let mut child = loop {
            match cmd.stdout(Stdio::piped()).spawn() {
                Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 200 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
                r => break r.unwrap(),
            }
        };
        let out = BufReader::new(child.stdout.take().unwrap());
        Kid { child: Reaped::new(child), out }
    }

    /// Starts `cmd` and waits for its line that starts with `prefix`.
    pub fn until(cmd: &mut Command, prefix: &str) -> Kid {
        let mut kid = Kid::spawn(cmd);
        kid.expect(prefix);
        kid
    }

    /// The next line (with its newline); empty once the child has closed
    /// its standard output.
    pub fn line(&mut self) -> String {
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        line
    }

    /// The first line that starts with `prefix` (a re-executed test binary
    /// prints the harness's lines around its own); fails if the child ends
    /// first.
    pub fn expect(&mut self, prefix: &str) -> String {
        loop {
            let line = self.line();
            if line.is_empty() {
                let status = self.child.0.wait().unwrap();
                panic!("child ended ({status}) before printing {prefix:?}");
            }
            if line.starts_with(prefix) {
                return line.trim_end().to_owned();
            }
        }
    }

    /// Waits for a successful exit (not a signal); returns the rest of its
    /// output.
    pub fn finish(mut self) -> String {
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut self.out, &mut rest).unwrap();
        let status = self.child.0.wait().unwrap();
        assert!(status.success(), "child failed: {status}\n{rest}");
        rest
    }
}
