//! Synchronous signal handling: the daemon blocks its signals in every
//! thread and takes them one at a time in its control loop with
//! `sigtimedwait`, so no handler ever runs in an arbitrary context.

use std::io;
use std::time::Duration;

/// Ignores `signals` (SIG_IGN) in the whole process. For a service, the
/// signals it has no use for: their default action (for SIGHUP, SIGUSR1 and
/// SIGUSR2) is to terminate, and a stray `kill -USR1` must not stop it. The
/// setting survives `exec`: call it in services, not in tools that start
/// other programs.
pub fn ignore(signals: &[libc::c_int]) -> io::Result<()> {
    for &s in signals {
        // SAFETY: SIG_IGN installs no handler; `s` is a signal number the
        // kernel checks (an invalid one gives SIG_ERR).
        if unsafe { libc::signal(s, libc::SIG_IGN) } == libc::SIG_ERR {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A set of blocked signals.
pub struct Signals {
    set: libc::sigset_t,
}

impl Signals {
    /// Blocks `signals` in the calling thread; threads it starts afterwards
    /// inherit the mask. Call before spawning threads.
    pub fn block(signals: &[libc::c_int]) -> io::Result<Signals> {
        // SAFETY: sigemptyset/sigaddset initialise and fill a local set;
        // pthread_sigmask reads it and changes only this thread's mask.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for &s in signals {
                if libc::sigaddset(&mut set, s) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            if rc != 0 {
                return Err(io::Error::from_raw_os_error(rc));
            }
            Ok(Signals { set })
        }
    }

    /// Waits at most `timeout` for one of the signals; `None` on time-out.
    pub fn wait(&self, timeout: Duration) -> io::Result<Option<libc::c_int>> {
        let ts = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: `self.set` is an initialised set, `ts` a valid timespec;
        // the info pointer may be null.
        let rc = unsafe { libc::sigtimedwait(&self.set, std::ptr::null_mut(), &ts) };
        if rc >= 0 {
            return Ok(Some(rc));
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(None),
            _ => Err(e),
        }
    }
}
