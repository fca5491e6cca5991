//! The trust rules of a fan-in ring's folder (`docs/abi.md` §11.1,
//! `docs/security.md`): whose folder it must be, who may read a lane file,
//! and how the consumer moves an entry it refuses out of a lane's name
//! without racing the producer that put it there.

use std::fs::{File, Metadata};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::shm;

use super::FanInError;

const ACL_ACCESS: &std::ffi::CStr = c"system.posix_acl_access";
const ACL_DEFAULT: &std::ffi::CStr = c"system.posix_acl_default";
/// `posix_acl_xattr_header.a_version`.
const ACL_VERSION: u32 = 2;
const ACL_USER_OBJ: u16 = 0x01;
const ACL_USER: u16 = 0x02;
const ACL_GROUP_OBJ: u16 = 0x04;
const ACL_GROUP: u16 = 0x08;
const ACL_MASK: u16 = 0x10;
const ACL_OTHER: u16 = 0x20;
const ACL_UNDEFINED_ID: u32 = u32::MAX;
const READ: u16 = 4;

/// Checks the folder before anything in it is trusted: a directory (not a
/// symlink to one), sticky (nobody removes another user's lane file),
/// owned by `owner` if given (the consumer: the folder it created), else
/// by root or by the owner of its `ring` file (`ring_owner`). Returns the
/// folder's owner: the consumer's uid.
pub(crate) fn check(dir: &Path, owner: Option<u32>) -> Result<u32, FanInError> {
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) => return Err(FanInError::io(dir, "look at", e)),
    };
    let bad = |reason: String| Err(FanInError::Folder { path: dir.to_owned(), reason });
    if !meta.file_type().is_dir() {
        return bad(format!("it is a {}, not a directory", shm::file_kind(&meta)));
    }
    if meta.mode() & 0o1000 == 0 {
        return bad(format!(
            "its mode {:o} is not sticky (anyone who may write it could remove lane files)",
            meta.mode() & 0o7777
        ));
    }
    match owner {
        Some(uid) if meta.uid() != uid => bad(format!(
            "it belongs to uid {}, not to this consumer (uid {uid}): it was not made by this ring's consumer",
            meta.uid()
        )),
        _ => Ok(meta.uid()),
    }
}

/// A producer's (and a tool's) half of [`check`]: the folder's owner must
/// be root or the owner of the consumer's file in it (a folder someone
/// else made first, around a ring file they did not, is refused). Returns
/// the owner of the consumer's file: the consumer's uid.
pub(crate) fn check_ring_owner(dir: &Path, folder_owner: u32, ring: &File) -> Result<u32, FanInError> {
    let ring_owner = ring.metadata().map_err(|e| FanInError::io(dir, "stat", e))?.uid();
    if folder_owner != 0 && folder_owner != ring_owner {
        return Err(FanInError::Folder {
            path: dir.to_owned(),
            reason: format!("it belongs to uid {folder_owner}, its ring file to uid {ring_owner}: not one consumer's"),
        });
    }
    Ok(ring_owner)
}

fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut v = ACL_VERSION.to_le_bytes().to_vec();
    for &(tag, perm, id) in entries {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

/// Gives the folder a default ACL, so that every file made in it (a lane
/// file: mode 0640) may be read by its owner and the consumer (`uid`)
/// only: `user::rwx, user:<uid>:r--, group::---, mask::r--, other::---`.
/// The mode's group bits become the mask, so a lane file's group (its
/// producer's) reads nothing.
pub(crate) fn set_lane_acl(dir: &Path, uid: u32) -> io::Result<()> {
    let entries = [
        (ACL_USER_OBJ, 7, ACL_UNDEFINED_ID),
        (ACL_USER, READ, uid),
        (ACL_GROUP_OBJ, 0, ACL_UNDEFINED_ID),
        (ACL_MASK, READ, ACL_UNDEFINED_ID),
        (ACL_OTHER, 0, ACL_UNDEFINED_ID),
    ];
    shm::set_xattr(dir, ACL_DEFAULT, &acl(&entries))
}

/// Why lane file `file` (of `mode`, owned by `owner`) may be read by
/// someone other than its owner and the consumer (`consumer`), if it may:
/// other read, group read without an ACL, or an ACL entry of the group
/// class that grants read (after the mask) to anyone else.
pub(crate) fn readable_by_others(file: &File, mode: u32, owner: u32, consumer: u32) -> Result<(), String> {
    if mode & 0o004 != 0 {
        return Err(format!("it is readable by every user (mode {:o})", mode & 0o777));
    }
    let Some(raw) = shm::get_xattr(file, ACL_ACCESS).map_err(|e| format!("cannot read its ACL: {e}"))? else {
        if mode & 0o040 != 0 {
            return Err(format!("it is readable by its group, every producer (mode {:o})", mode & 0o777));
        }
        return Ok(());
    };
    let entries: Vec<(u16, u16, u32)> = raw
        .get(4..)
        .unwrap_or_default()
        .chunks_exact(8)
        .map(|c| {
            let u16_at = |a: usize| u16::from_le_bytes([c[a], c[a + 1]]);
            (u16_at(0), u16_at(2), u32::from_le_bytes([c[4], c[5], c[6], c[7]]))
        })
        .collect();
    if raw.len() < 4 || u32::from_le_bytes(raw[..4].try_into().unwrap()) != ACL_VERSION || (raw.len() - 4) % 8 != 0 {
        return Err("its ACL is not one this consumer reads".into());
    }
    let mask = entries.iter().find(|e| e.0 == ACL_MASK).map_or(7, |e| e.1);
    for &(tag, perm, id) in &entries {
        let reads = match tag {
            ACL_OTHER => perm & READ != 0,
            ACL_GROUP_OBJ | ACL_GROUP => perm & mask & READ != 0,
            ACL_USER => id != owner && id != consumer && perm & mask & READ != 0,
            _ => false,
        };
        if reads {
            let who = match tag {
                ACL_OTHER => "every user".to_owned(),
                ACL_GROUP_OBJ => "its group, every producer".to_owned(),
                ACL_GROUP => format!("group {id}"),
                _ => format!("uid {id}"),
            };
            return Err(format!("its ACL lets {who} read it"));
        }
    }
    Ok(())
}

/// The identity of an entry the consumer judged: it moves aside only that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Judged {
    pub(crate) dev: u64,
    pub(crate) ino: u64,
    /// A regular file (removed once aside); anything else is left aside.
    pub(crate) regular: bool,
}

impl Judged {
    pub(crate) fn of(m: &Metadata) -> Judged {
        Judged { dev: m.dev(), ino: m.ino(), regular: m.file_type().is_file() }
    }

    /// What is under `path` now, not following a link; `None` if nothing.
    pub(crate) fn at(path: &Path) -> Option<Judged> {
        std::fs::symlink_metadata(path).ok().map(|m| Judged::of(&m))
    }
}

/// What [`move_aside`] did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Aside {
    /// The name was already free.
    Gone,
    /// The judged regular file was renamed aside and removed.
    Removed,
    /// The judged entry (not a regular file) was renamed to this name,
    /// which says why, and left there for the folder's owner to look at.
    Kept(PathBuf),
    /// Another entry had taken the name since it was judged: it was put
    /// back (`Some`: what it is) or, its name being taken again (or it
    /// gone), left aside (`None`).
    Swapped(Option<Judged>),
}

/// Frees lane `k`'s name of the entry judged `judged`, for the reason
/// `why` (a word): renames `lane.<k>` to `aside.<k>.<why>.<n>` (never
/// replacing), then compares what it renamed with `judged` by device and
/// inode. Only the judged entry is removed (a regular file) or left aside
/// (anything else); an entry swapped in after the judgement (the sticky
/// folder lets its owner do that) is put back under the lane's name. So
/// no producer can have the consumer remove a file it did not judge.
pub(crate) fn move_aside(dir: &Path, k: usize, why: &str, judged: Judged) -> io::Result<Aside> {
    static N: AtomicU64 = AtomicU64::new(0);
    let lane = dir.join(super::files::lane_name(k));
    let n = N.fetch_add(1, Ordering::Relaxed);
    let aside = dir.join(format!("aside.{k}.{why}.{}.{}.{n}", std::process::id(), crate::process::realtime_ns()));
    match shm::rename_noreplace(&lane, &aside) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Aside::Gone),
        Err(e) => return Err(e),
    }
    let now = Judged::at(&aside);
    if now != Some(judged) {
        let back = now.filter(|_| shm::rename_noreplace(&aside, &lane).is_ok());
        return Ok(Aside::Swapped(back));
    }
    if judged.regular {
        std::fs::remove_file(&aside)?;
        Ok(Aside::Removed)
    } else {
        Ok(Aside::Kept(aside))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A folder in /dev/shm (tmpfs, as a ring's), removed on drop.
    struct Dir(PathBuf);

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn lane(d: &Dir) -> PathBuf {
        d.0.join(crate::fanin::files::lane_name(0))
    }

    /// Found by review: the consumer removed a refused lane file by name
    /// after checking it, so a file swapped in after the check (by the
    /// refused file's owner, which the sticky folder allows) was removed
    /// in its place. Moving aside renames first (atomic), then removes
    /// only what it judged.
    #[test]
    fn only_the_judged_entry_is_moved_aside_and_a_swapped_in_one_is_put_back() {
        let d = Dir(PathBuf::from(format!("/dev/shm/helix-aside-test.{}", std::process::id())));
        std::fs::create_dir(&d.0).unwrap();
        std::fs::write(lane(&d), b"judged").unwrap();
        let judged = Judged::at(&lane(&d)).unwrap();
        // Swapped after the judgement: another file under the name.
        std::fs::remove_file(lane(&d)).unwrap();
        std::fs::write(lane(&d), b"someone else's").unwrap();
        let other = Judged::at(&lane(&d)).unwrap();
        assert_eq!(move_aside(&d.0, 0, "test", judged).unwrap(), Aside::Swapped(Some(other)));
        assert_eq!(Judged::at(&lane(&d)), Some(other));
        assert_eq!(std::fs::read(lane(&d)).unwrap(), b"someone else's");
        assert_eq!(std::fs::read_dir(&d.0).unwrap().count(), 1);
        // The judged one is removed.
        assert_eq!(move_aside(&d.0, 0, "test", other).unwrap(), Aside::Removed);
        assert_eq!(std::fs::read_dir(&d.0).unwrap().count(), 0);
        assert_eq!(move_aside(&d.0, 0, "test", other).unwrap(), Aside::Gone);
        // A directory is kept aside, under a name that says why.
        std::fs::create_dir(lane(&d)).unwrap();
        let dir = Judged::at(&lane(&d)).unwrap();
        let Aside::Kept(path) = move_aside(&d.0, 0, "not-a-file", dir).unwrap() else { panic!("not kept") };
        assert!(path.file_name().unwrap().to_str().unwrap().starts_with("aside.0.not-a-file."), "{path:?}");
        assert!(!lane(&d).exists() && path.is_dir());
    }

    #[test]
    fn who_else_may_read_a_lane_file_is_found_in_its_mode_and_acl() {
        let d = Dir(PathBuf::from(format!("/dev/shm/helix-acl-test.{}", std::process::id())));
        std::fs::create_dir(&d.0).unwrap();
        let f = |name: &str| {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new().write(true).create_new(true).mode(0o640).open(d.0.join(name)).unwrap()
        };
        let mode = |file: &File| file.metadata().unwrap().mode();
        // No ACL: the group reads it.
        let plain = f("plain");
        let err = readable_by_others(&plain, mode(&plain), 0, 0).unwrap_err();
        assert!(err.contains("readable by its group"), "{err}");
        // Under the folder's ACL: the owner and uid 4242 only, whatever the mode's group bits.
        set_lane_acl(&d.0, 4242).unwrap();
        let lane = f("lane");
        assert_eq!(readable_by_others(&lane, mode(&lane), 0, 4242), Ok(()));
        // The same file judged by another consumer: uid 4242 is someone else.
        let err = readable_by_others(&lane, mode(&lane), 0, 7).unwrap_err();
        assert_eq!(err, "its ACL lets uid 4242 read it");
    }
}
