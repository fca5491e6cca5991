//! The futex system call on a word in shared memory.
//!
//! Always the shared (not `FUTEX_PRIVATE_FLAG`) variants: the word lives in a
//! file mapping that other processes map too, and the kernel keys a shared
//! futex by the file and offset, so a reader that maps the data region
//! read-only can wait on a word that the writer wakes through its read-write
//! mapping (measured on these machines: docs/design.md, "Facts the design rests on").

use std::io;
use std::path::Path;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

/// Sleeps while `*word == expected`, at most `timeout` (forever if `None`).
///
/// Returns `Ok(())` when woken, when the word no longer held `expected`
/// (`EAGAIN`), on a signal (`EINTR`) and on time-out: callers always re-check
/// their condition, so these are all the same to them.
pub fn wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> io::Result<()> {
    let ts = timeout.map(|d| libc::timespec {
        tv_sec: d.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    });
    let ts_ptr = ts.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `word` is a valid, aligned 32-bit atomic for the duration of the
    // call; the kernel only reads it. `ts_ptr` is null or points to a live
    // timespec on this stack frame.
    let rc = unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAIT, expected, ts_ptr, std::ptr::null::<u32>(), 0u32)
    };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EINTR) | Some(libc::ETIMEDOUT) => Ok(()),
        _ => Err(err),
    }
}

/// Wakes every thread of any process sleeping on `word`; returns how many.
pub fn wake_all(word: &AtomicU32) -> io::Result<usize> {
    // SAFETY: `word` is a valid, aligned 32-bit atomic; FUTEX_WAKE does not
    // dereference the remaining arguments.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            i32::MAX,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc as usize)
    }
}

/// Checks that `FUTEX_WAKE` and `FUTEX_WAIT` work on a shared file mapping,
/// as the rings use them (for `helixctl doctor`): makes an unnamed file in
/// folder `dir` (`O_TMPFILE`: no name that another user could have taken
/// first, nothing left behind), maps a page of it read-write, wakes its
/// first word and waits on it for a millisecond. A kernel without futexes
/// or a seccomp policy that forbids them fails with the system call's
/// error.
pub fn probe(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let file =
        std::fs::OpenOptions::new().read(true).write(true).custom_flags(libc::O_TMPFILE).mode(0o600).open(dir)?;
    file.set_len(4096)?;
    let map = crate::shm::Mapping::new(&file, true)?;
    // SAFETY: the mapping is 4096 bytes, page aligned, writable and alive
    // until the end of this function, which outlives the reference; the
    // word is only ever accessed atomically (the file is unlinked: nobody
    // else is meant to map it).
    let word = unsafe { &*(map.ptr() as *const AtomicU32) };
    wake_all(word)?;
    wait(word, 1, Some(Duration::from_millis(1)))
}

#[cfg(test)]
mod tests {
    /// The probe takes no name in its folder (none that another user could
    /// have made first: `helixctl doctor` failed on such a file) and
    /// leaves nothing behind.
    #[test]
    fn the_probe_works_on_an_unnamed_file_and_leaves_its_folder_as_it_was() {
        let dir = tempfile::Builder::new().prefix("helix-futex-probe-").tempdir_in("/dev/shm").unwrap();
        super::probe(dir.path()).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
