//! One child-process type for the programs and the tests: started from a
//! `Command`, signalled, waited for with a deadline, and killed and reaped
//! when dropped, so a child never outlives its owner by accident nor stays
//! behind as a zombie. Signals go through nix; nothing here is `unsafe`.
//!
//! It dereferences to the `std::process::Child` it owns, for the pipes
//! (`stdout`, `stderr`) and anything else std offers.

use std::io;
use std::ops::{Deref, DerefMut};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use nix::unistd::Pid;

pub use nix::sys::signal::Signal;

/// How often a deadline wait looks at the child.
const POLL: Duration = Duration::from_millis(2);

/// A started child process; killed (SIGKILL) and reaped on drop if it is
/// still running.
pub struct ChildProcess {
    child: std::process::Child,
    name: String,
}

impl ChildProcess {
    /// Starts `cmd`; `name` is what errors call the process.
    pub fn spawn(name: &str, cmd: &mut Command) -> io::Result<ChildProcess> {
        let child = cmd.spawn().map_err(|e| {
            let program = cmd.get_program().to_string_lossy();
            io::Error::new(e.kind(), format!("cannot start {name} ({program}): {e}"))
        })?;
        Ok(ChildProcess::adopt(name, child))
    }

    /// Takes charge of a child started elsewhere.
    pub fn adopt(name: &str, child: std::process::Child) -> ChildProcess {
        ChildProcess { child, name: name.into() }
    }

    /// What errors call it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends it `signal`; nothing if it has exited and been reaped (its pid
    /// may then be another process's).
    pub fn signal(&mut self, signal: Signal) -> io::Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        // Not reaped, so the pid is still this child's (a zombie at worst).
        let pid = Pid::from_raw(i32::try_from(self.pid()).map_err(io::Error::other)?);
        nix::sys::signal::kill(pid, signal).map_err(io::Error::from)
    }

    /// Its exit status if it has exited (and reaps it); never blocks.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        self.child.try_wait()
    }

    /// Waits for it to exit and reaps it.
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        self.child.wait()
    }

    /// Waits at most `timeout` for it to exit; `None` if it still runs.
    pub fn wait_timeout(&mut self, timeout: Duration) -> io::Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(POLL.min(deadline - Instant::now()));
        }
    }

    /// Asks it to stop (SIGTERM) and waits at most `patience`; an error if
    /// it did not exit by then (it is killed) or exited unsuccessfully.
    pub fn stop(&mut self, patience: Duration) -> io::Result<ExitStatus> {
        self.signal(Signal::SIGTERM)?;
        match self.wait_timeout(patience)? {
            Some(status) if status.success() => Ok(status),
            Some(status) => Err(io::Error::other(format!("{} exited ({status})", self.name))),
            None => {
                self.kill()?;
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("{} did not stop within {patience:?} of SIGTERM", self.name),
                ))
            }
        }
    }

    /// Kills it (SIGKILL) if it still runs, and reaps it.
    pub fn kill(&mut self) -> io::Result<ExitStatus> {
        self.signal(Signal::SIGKILL)?;
        self.child.wait()
    }
}

impl Deref for ChildProcess {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.child
    }
}

impl DerefMut for ChildProcess {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.child
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}
