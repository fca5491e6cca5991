//! File locks on ring files: whole-file `flock`-like open-file-description
//! locks (a ring's creation and ownership), byte-range locks whose holder
//! the kernel names (a fan-in lane's liveness and its producer's pid).

use std::fs::File;
use std::io;

fn ofd_lock(file: &File, cmd: libc::c_int, kind: libc::c_int) -> io::Result<libc::flock> {
    // Start 0, length 0: the whole file.
    range_lock(file, cmd, kind, 0, 0)
}

/// Takes an exclusive open-file-description lock on all of `file` (which
/// must be open for writing) without waiting; `false` if another open file
/// description holds a lock on it. The lock goes with the open file
/// description: [`unlock`] releases it, and so does the death of its
/// holder, but while a mapping of the file lives it outlives `close`.
pub(crate) fn try_lock(file: &File) -> io::Result<bool> {
    match ofd_lock(file, libc::F_OFD_SETLK, libc::F_WRLCK) {
        Ok(_) => Ok(true),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Releases a lock taken with [`try_lock`] or [`create_unnamed`](super::create_unnamed).
pub(crate) fn unlock(file: &File) -> io::Result<()> {
    ofd_lock(file, libc::F_OFD_SETLK, libc::F_UNLCK).map(drop)
}

/// Whether another open file description holds a lock on `file` (any
/// mode of opening will do); takes none.
pub(crate) fn is_locked(file: &File) -> io::Result<bool> {
    Ok(ofd_lock(file, libc::F_OFD_GETLK, libc::F_WRLCK)?.l_type != libc::F_UNLCK as libc::c_short)
}

/// Whether another open file description holds a *write* lock on any of
/// `file`: read locks, which anyone who may read the file can take, do not
/// count.
pub(crate) fn write_locked(file: &File) -> io::Result<bool> {
    // A read lock conflicts with write locks only.
    Ok(ofd_lock(file, libc::F_OFD_GETLK, libc::F_RDLCK)?.l_type == libc::F_WRLCK as libc::c_short)
}

fn byte_lock(file: &File, cmd: libc::c_int, kind: libc::c_int, byte: libc::off_t) -> io::Result<libc::flock> {
    range_lock(file, cmd, kind, byte, 1)
}

fn range_lock(
    file: &File,
    cmd: libc::c_int,
    kind: libc::c_int,
    start: libc::off_t,
    len: libc::off_t,
) -> io::Result<libc::flock> {
    use std::os::fd::AsRawFd;
    // SAFETY: `flock` is a plain C struct of integers; all zeros is valid
    // (pid must be 0 for OFD locks).
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = start;
    fl.l_len = len;
    // SAFETY: the descriptor is open and `fl` is a valid flock for the call.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), cmd, &mut fl) };
    if rc == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(fl)
}

/// Takes an open-file-description write lock on byte 0 of `file` (open
/// for writing) without waiting; `false` if another holds it. Like
/// [`try_lock`]'s, it lives as long as the open file description (and a
/// mapping of the file), so it ends exactly when its holder dies: a fan-in
/// lane's liveness.
pub(crate) fn try_live_lock(file: &File) -> io::Result<bool> {
    match byte_lock(file, libc::F_OFD_SETLK, libc::F_WRLCK, 0) {
        Ok(_) => Ok(true),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether another open file description holds the lock of
/// [`try_live_lock`] on `file` (opened in any mode).
pub(crate) fn live_lock_held(file: &File) -> io::Result<bool> {
    // Only the holder's write lock counts: anyone who can open the file
    // for reading could hold a read lock and keep a dead lane "alive".
    Ok(byte_lock(file, libc::F_OFD_GETLK, libc::F_WRLCK, 0)?.l_type == libc::F_WRLCK as libc::c_short)
}

/// Takes a classic (process-owned) POSIX write lock on byte 1 of `file`
/// (open for writing), so that [`pid_lock_holder`] can learn this
/// process's pid from the kernel. Closing *any* descriptor of the file in
/// this process drops it, so it attests identity, never liveness.
pub(crate) fn pid_lock(file: &File) -> io::Result<()> {
    byte_lock(file, libc::F_SETLK, libc::F_WRLCK, 1).map(drop)
}

/// The pid (in this process's pid namespace) of the process holding the
/// [`pid_lock`] of `file`, as the kernel reports it; `None` if nobody
/// does, or only this process does (its own locks never conflict).
pub(crate) fn pid_lock_holder(file: &File) -> io::Result<Option<u32>> {
    let fl = byte_lock(file, libc::F_GETLK, libc::F_WRLCK, 1)?;
    Ok((fl.l_type != libc::F_UNLCK as libc::c_short && fl.l_pid > 0).then_some(fl.l_pid as u32))
}
