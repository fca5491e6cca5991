//! Signals taken synchronously: a program blocks the signals it handles in
//! every thread and reads them from a signalfd in its control loop, so no
//! handler ever runs in an arbitrary context, and a signal the program has
//! no use for (a stray `kill -USR1`) is read and set aside instead of
//! taking its default action (for SIGHUP, SIGUSR1 and SIGUSR2: terminate).

use std::io;
use std::os::fd::AsFd;
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::SigSet;
use nix::sys::signalfd::{SfdFlags, SignalFd};

pub use nix::sys::signal::Signal;

/// A set of blocked signals, read through a signalfd.
pub struct Signals {
    fd: SignalFd,
}

impl Signals {
    /// Blocks `signals` in the calling thread and opens a signalfd for them.
    /// Threads started afterwards inherit the mask: call it before spawning
    /// any, or a signal may go to a thread that does not block it.
    pub fn block(signals: &[Signal]) -> io::Result<Signals> {
        let mut set = SigSet::empty();
        for &s in signals {
            set.add(s);
        }
        set.thread_block()?;
        let fd = SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
        Ok(Signals { fd })
    }

    /// Waits at most `timeout` (rounded up to a millisecond; zero polls)
    /// for one of the signals; `None` on time-out.
    pub fn wait(&self, timeout: Duration) -> io::Result<Option<Signal>> {
        if let Some(s) = self.take()? {
            return Ok(Some(s));
        }
        if timeout.is_zero() {
            return Ok(None);
        }
        let ms = timeout.as_nanos().div_ceil(1_000_000);
        let timeout = PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => self.take(),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether one of the signals is pending (it stays pending, for
    /// [`Signals::wait`] to take).
    pub fn pending(&self) -> io::Result<bool> {
        let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::ZERO) {
            Ok(n) => Ok(n > 0),
            Err(nix::errno::Errno::EINTR) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// A pending signal, without waiting.
    fn take(&self) -> io::Result<Option<Signal>> {
        match self.fd.read_signal()? {
            // The kernel sends only the signals of the set, all valid.
            Some(info) => Ok(Signal::try_from(info.ssi_signo as i32).ok()),
            None => Ok(None),
        }
    }
}
