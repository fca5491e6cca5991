//! Names given and taken in a folder anyone may write: a replacement
//! linked under a fresh name and renamed into place ([`link_fresh`]), what
//! such a replacement left when its maker died, a rename that never
//! replaces, and whether a name still holds an open file.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use super::link_unnamed;

/// Links `file` (made by [`create_unnamed`](super::create_unnamed)) beside `stem` under a name
/// nobody took, `<stem>.<pid>.<hex>.new` with the number from the clock,
/// to be renamed over `stem`; returns that name. Anyone who may make files
/// where `stem` is (anyone, in /dev/shm) could take a name that can be
/// guessed, and a sticky folder keeps its owner from removing it: the
/// replacement would then never be made.
pub(crate) fn link_fresh(file: &File, stem: &Path) -> io::Result<PathBuf> {
    remove_dead_fresh(stem);
    let mut err = io::Error::from(io::ErrorKind::AlreadyExists);
    for attempt in 0u64..64 {
        let salt = crate::process::realtime_ns() ^ attempt.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut name = stem.as_os_str().to_owned();
        name.push(format!(".{}.{salt:016x}.new", std::process::id()));
        let tmp = PathBuf::from(name);
        match link_unnamed(file, &tmp) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => err = e,
            r => return r.map(|()| tmp),
        }
    }
    Err(err)
}

/// Removes what [`link_fresh`] left beside `stem` for a process killed
/// between its link and its rename: the regular files
/// `<stem>.<pid>.<16 hex digits>.new` of this process's uid whose pid no
/// longer exists, last written over a minute ago. Best effort, and only
/// those: another user's, one of a live pid (which may be renaming it
/// now), or a new one (a process in another pid namespace that shares
/// /dev/shm looks dead from here) are left.
fn remove_dead_fresh(stem: &Path) {
    const LEFTOVER_AGE: std::time::Duration = std::time::Duration::from_secs(60);
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    let (Some(dir), Some(base)) = (stem.parent(), stem.file_name()) else { return };
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let me = crate::process::my_uid();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.as_bytes().strip_prefix(base.as_bytes()) else { continue };
        let Some(rest) = rest.strip_prefix(b".").and_then(|r| r.strip_suffix(b".new")) else { continue };
        let Some((pid, salt)) = std::str::from_utf8(rest).ok().and_then(|r| r.split_once('.')) else { continue };
        let Ok(pid) = pid.parse::<u32>() else { continue };
        if salt.len() != 16 || !salt.bytes().all(|b| b.is_ascii_hexdigit()) || crate::process::exists(pid) {
            continue;
        }
        let path = entry.path();
        let old = |m: &std::fs::Metadata| m.modified().ok().and_then(|t| t.elapsed().ok()) > Some(LEFTOVER_AGE);
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_file() && m.uid() == me && old(&m)) {
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// Renames `from` to `to` unless `to` exists (`RENAME_NOREPLACE`): for
/// publishing a directory made under a temporary name.
pub(crate) fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(|_| io::ErrorKind::InvalidInput);
    let (from, to) = (c(from)?, c(to)?);
    // SAFETY: both paths are NUL-terminated strings that outlive the call.
    let rc =
        unsafe { libc::renameat2(libc::AT_FDCWD, from.as_ptr(), libc::AT_FDCWD, to.as_ptr(), libc::RENAME_NOREPLACE) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether `path` still names the open `file` (same device and inode).
pub(crate) fn names_file(path: &Path, file: &File) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let (a, b) = match (std::fs::symlink_metadata(path), file.metadata()) {
        (Err(e), _) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        (a, b) => (a?, b?),
    };
    Ok((a.dev(), a.ino()) == (b.dev(), b.ino()))
}
