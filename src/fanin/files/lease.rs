//! The consumer's lease of a fan-in ring (`docs/abi.md` §11.2): the lock
//! of the folder's `lock` file, which no producer can open, and the lock on
//! `ring` that tells the tools the consumer lives.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::{FanInError, LOCK_FILE, RING_FILE};
use crate::shm;

/// The consumer's lease: the lock of the folder's `lock` file, held, and
/// whether it holds the lock on `ring` too (a reader's read lock may have
/// kept it off when it attached).
pub(crate) struct Lease {
    pub(super) _lock: File,
    pub(super) ring_locked: bool,
}

/// Takes the consumer's lease of the ring in `dir`: the lock of its `lock`
/// file, which only the consumer's user may open (made here for a ring made
/// before there was one); then the lock on `ring_file` that tells the tools
/// it lives, unless only read locks keep it off (any producer may read
/// `ring`, and hold one: found by review, when the lease was that lock, a
/// producer's read lock kept every consumer out for good). `None` if
/// another consumer holds either (one of a version before `lock` holds
/// only the second).
pub(super) fn take_lease(dir: &Path, ring_file: &File) -> Result<Option<Lease>, FanInError> {
    let path = dir.join(LOCK_FILE);
    let path = path.as_path();
    let io = |op| move |e| FanInError::io(path, op, e);
    let lock = match shm::open_file(path, true) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use std::os::unix::fs::OpenOptionsExt;
            let mut o = std::fs::OpenOptions::new();
            o.read(true).write(true).create_new(true).mode(0o600).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
            match o.open(path) {
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => shm::open_file(path, true),
                r => r,
            }
        }
        r => r,
    }
    .map_err(io("open"))?;
    let m = lock.metadata().map_err(io("stat"))?;
    if !m.is_file() || m.uid() != crate::process::my_uid() {
        let want = format!(
            "a regular file of the consumer's uid {} (this is a {}: remove it)",
            crate::process::my_uid(),
            shm::file_kind(&m)
        );
        return Err(FanInError::field(path, "owner", m.uid().into(), want));
    }
    if !shm::try_lock(&lock).map_err(io("lock"))? {
        return Ok(None);
    }
    let ring_path = dir.join(RING_FILE);
    let ring_locked = shm::try_lock(ring_file).map_err(|e| FanInError::io(&ring_path, "lock", e))?;
    if !ring_locked
        && shm::write_locked(ring_file).map_err(|e| FanInError::io(&ring_path, "look at the locks of", e))?
    {
        return Ok(None);
    }
    Ok(Some(Lease { _lock: lock, ring_locked }))
}

/// Whether the consumer of the ring in `dir` lives: its lease on `lock`,
/// where this process may open that file (the consumer's user, root); else
/// the write lock it keeps on `ring_file` (a reader's read lock may keep
/// that off for a while: then a live consumer reads as gone, never a dead
/// one as alive).
pub(crate) fn consumer_alive(dir: &Path, ring_file: &File) -> std::io::Result<bool> {
    match shm::open_file(&dir.join(LOCK_FILE), false) {
        Ok(lock) if lock.metadata()?.is_file() => shm::is_locked(&lock),
        _ => shm::write_locked(ring_file),
    }
}
