//! The consumer's lease of a fan-in ring (`docs/abi.md` §11.2): the lock
//! of the folder's `lock` file, which no producer can open, and the lock on
//! `ring` that tells the tools the consumer lives.

use std::fs::{File, Metadata};
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
    let lock = open_lock(path)?;
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

/// Whether `m` is of a lock file the consumer (`owner`) made: a regular
/// file of its uid, which nobody else may open, and the name of no other
/// file (a producer may write the doorbell, and so hard-link it).
fn sound(m: &Metadata, owner: u32) -> bool {
    m.is_file() && m.uid() == owner && m.mode() & 0o077 == 0 && m.nlink() == 1
}

/// Opens the consumer's lock file at `path`, read-write. One that is
/// missing (a ring made before there was one), or that is not sound (a
/// producer may make names in the folder: a file of its own, or a link to
/// the doorbell, which it may lock; found by review), is made anew: the
/// name removed (the consumer owns the folder) and the file made
/// `O_EXCL`, mode `0600`.
fn open_lock(path: &Path) -> Result<File, FanInError> {
    use std::os::unix::fs::OpenOptionsExt;
    let me = crate::process::my_uid();
    let io = |op| move |e| FanInError::io(path, op, e);
    for _ in 0..3 {
        let found = match shm::open_file(path, true) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            r => Some(r),
        };
        match found {
            Some(Ok(f)) if f.metadata().is_ok_and(|m| sound(&m, me)) => return Ok(f),
            Some(_) => match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io("remove a stranger's")(e)),
                _ => {}
            },
            None => {}
        }
        let mut o = std::fs::OpenOptions::new();
        o.read(true).write(true).create_new(true).mode(0o600).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
        match o.open(path) {
            Ok(f) => return Ok(f),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io("create")(e)),
        }
    }
    let want = "a file of the consumer's: another is put in its place as fast as it is removed";
    Err(FanInError::field(path, "owner", 0, want))
}

/// Whether the consumer of the ring in `dir` lives: its lease on `lock`,
/// where this process may open that file (the consumer's user, root); else
/// the write lock it keeps on `ring_file` (a reader's read lock may keep
/// that off for a while: then a live consumer reads as gone, never a dead
/// one as alive).
pub(crate) fn consumer_alive(dir: &Path, ring_file: &File) -> std::io::Result<bool> {
    let owner = ring_file.metadata()?.uid();
    match shm::open_file(&dir.join(LOCK_FILE), false) {
        Ok(lock) if lock.metadata().is_ok_and(|m| sound(&m, owner)) => shm::is_locked(&lock),
        _ => shm::write_locked(ring_file),
    }
}
