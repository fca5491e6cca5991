//! Names, namespaces, and the files and mappings behind a ring.
//!
//! Every object of one installation lives in `/dev/shm` under a namespace
//! prefix (default `helix`, or `HELIX_NAMESPACE`), so installations and
//! tests run side by side without touching each other's rings:
//!
//! - `/dev/shm/<namespace>.<ring>`: the data region;
//! - `/dev/shm/<namespace>.<ring>@readers`: the control region.
//!
//! `@` can appear in neither a namespace nor a ring name, so the two files
//! of one ring never collide with another ring's. A ring's files are made
//! unnamed (`O_TMPFILE`) and given their names only when complete, so no
//! other name ever appears (see `docs/abi.md` §3.1).

use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::layout::MAX_NAME_LEN;

mod locks;
mod mapping;
mod renames;
mod xattr;
pub(crate) use locks::*;
pub use mapping::Mapping;
pub(crate) use renames::*;
pub(crate) use xattr::*;

/// Where ring files live.
pub const SHM_DIR: &str = "/dev/shm";
/// The namespace when `HELIX_NAMESPACE` is not set.
pub const DEFAULT_NAMESPACE: &str = "helix";
/// Suffix of the control region's file name.
pub const READERS_SUFFIX: &str = "@readers";
/// Longest namespace in bytes.
pub const MAX_NAMESPACE_LEN: usize = 32;

/// Why a ring name or namespace was refused. Nothing on disk was touched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("{what} is empty")]
    Empty { what: &'static str },
    /// The name is longer than allowed.
    #[error("{what} {name:?} is {len} bytes long; at most {max} are allowed")]
    TooLong { what: &'static str, name: String, len: usize, max: usize },
    /// The name contains a character outside its alphabet.
    #[error("{what} {name:?} has {ch:?} at byte {at}; allowed are {allowed}")]
    BadChar { what: &'static str, name: String, ch: char, at: usize, allowed: &'static str },
}

const RING_ALPHABET: &str = "a-z 0-9 . _ - (starting with a-z or 0-9)";
const NS_ALPHABET: &str = "a-z 0-9 _ - (starting with a-z or 0-9)";

fn check(what: &'static str, name: &str, max: usize, dots: bool, allowed: &'static str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty { what });
    }
    for (at, ch) in name.char_indices() {
        let ok = match ch {
            'a'..='z' | '0'..='9' => true,
            '_' | '-' => at > 0,
            '.' => dots && at > 0,
            _ => false,
        };
        if !ok {
            return Err(NameError::BadChar { what, name: name.to_owned(), ch, at, allowed });
        }
    }
    if name.len() > max {
        return Err(NameError::TooLong { what, name: name.to_owned(), len: name.len(), max });
    }
    Ok(())
}

/// Checks a ring name: `[a-z0-9][a-z0-9._-]{0,62}`.
pub fn validate_ring_name(name: &str) -> Result<(), NameError> {
    check("ring name", name, MAX_NAME_LEN, true, RING_ALPHABET)
}

/// A validated namespace: `[a-z0-9][a-z0-9_-]{0,31}` (no dots, so the first
/// dot of a file name always ends the namespace).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Namespace(String);

impl Namespace {
    /// Validates `name` as a namespace.
    pub fn new(name: &str) -> Result<Self, NameError> {
        check("namespace", name, MAX_NAMESPACE_LEN, false, NS_ALPHABET)?;
        Ok(Namespace(name.to_owned()))
    }

    /// `HELIX_NAMESPACE` if set (and valid), else `helix`.
    pub fn from_env() -> Result<Self, NameError> {
        match std::env::var("HELIX_NAMESPACE") {
            Ok(ns) if !ns.is_empty() => Namespace::new(&ns),
            _ => Ok(Namespace(DEFAULT_NAMESPACE.to_owned())),
        }
    }

    /// The namespace as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Path of a ring's data region; `ring` must be a valid ring name.
    pub fn data_path(&self, ring: &str) -> PathBuf {
        Path::new(SHM_DIR).join(format!("{}.{}", self.0, ring))
    }

    /// Path of a ring's control region; `ring` must be a valid ring name.
    pub fn readers_path(&self, ring: &str) -> PathBuf {
        Path::new(SHM_DIR).join(format!("{}.{}{}", self.0, ring, READERS_SUFFIX))
    }

    /// Names of the rings in this namespace that have a data region file,
    /// sorted. Files whose remainder is not a valid ring name are skipped.
    pub fn list_rings(&self) -> io::Result<Vec<String>> {
        let prefix = format!("{}.", self.0);
        let mut names = Vec::new();
        for entry in std::fs::read_dir(SHM_DIR)? {
            let file_name = entry?.file_name();
            let Some(file_name) = file_name.to_str() else { continue };
            if let Some(ring) = file_name.strip_prefix(&prefix) {
                if validate_ring_name(ring).is_ok() {
                    names.push(ring.to_owned());
                }
            }
        }
        names.sort();
        Ok(names)
    }

    /// Which ring, and which of its files, `file_name` (a name in
    /// [`SHM_DIR`]) is, if it is one of this namespace's ring files.
    pub fn parse_file_name<'a>(&self, file_name: &'a str) -> Option<(&'a str, RingFile)> {
        let rest = file_name.strip_prefix(self.0.as_str())?.strip_prefix('.')?;
        let (ring, kind) = match rest.strip_suffix(READERS_SUFFIX) {
            Some(ring) => (ring, RingFile::Readers),
            None => (rest, RingFile::Data),
        };
        validate_ring_name(ring).is_ok().then_some((ring, kind))
    }

    /// Every ring name in this namespace that has at least one of its two
    /// files, with which of them exist, sorted by name: rings missing a
    /// file are included (`list_rings` shows only those with a data file).
    pub fn list_ring_files(&self) -> io::Result<Vec<RingFiles>> {
        let mut rings = std::collections::BTreeMap::<String, RingFiles>::new();
        for entry in std::fs::read_dir(SHM_DIR)? {
            let file_name = entry?.file_name();
            let Some((ring, kind)) = file_name.to_str().and_then(|f| self.parse_file_name(f)) else { continue };
            let e = rings.entry(ring.to_owned()).or_insert_with(|| RingFiles {
                name: ring.to_owned(),
                data: false,
                readers: false,
            });
            match kind {
                RingFile::Data => e.data = true,
                RingFile::Readers => e.readers = true,
            }
        }
        Ok(rings.into_values().collect())
    }
}

/// One of a ring's two files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize), serde(rename_all = "lowercase"))]
pub enum RingFile {
    /// `<namespace>.<ring>`: the header and the slots.
    Data,
    /// `<namespace>.<ring>@readers`: the control region.
    Readers,
}

/// Which files of one ring name exist (from [`Namespace::list_ring_files`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingFiles {
    /// The ring name.
    pub name: String,
    /// Whether the data file exists.
    pub data: bool,
    /// Whether the control file exists.
    pub readers: bool,
}

impl Default for Namespace {
    fn default() -> Self {
        Namespace(DEFAULT_NAMESPACE.to_owned())
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn reserve(file: &File, size: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let len = libc::off_t::try_from(size).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: the descriptor is open for writing for the whole call.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

/// Opens an existing ring file for reading, or reading and writing. Not
/// through a link, and without blocking: a FIFO (or device) planted under a
/// ring's name by whoever can write the folder opens at once, and the
/// caller's type and size checks refuse it (`O_NONBLOCK` changes nothing
/// for a regular file).
pub(crate) fn open_file(path: &Path, writable: bool) -> io::Result<File> {
    let flags = libc::O_CLOEXEC | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY;
    std::fs::OpenOptions::new().read(true).write(writable).custom_flags(flags).open(path)
}

/// Whether what is at `path` (anything, the link itself if it is one)
/// holds a ring's name against this process: it exists and is this
/// user's (effective uid) or root's. Another user's does not: anyone may
/// make files in `/dev/shm`, and a stranger's must not keep this user's
/// ring of the other kind from being made (attaching to the stranger's
/// is refused where it matters: [`ForeignRing`](crate::ring::ForeignRing)).
pub(crate) fn holds_name(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    path.symlink_metadata().is_ok_and(|m| m.uid() == 0 || m.uid() == crate::process::my_uid())
}

/// Creates an unnamed file in [`SHM_DIR`] (`O_TMPFILE`: it has no name until
/// [`link_unnamed`] gives it one, and vanishes with its last reference if
/// it never gets one) with exactly `mode` (not masked by the umask), group
/// `gid` if given, an exclusive lock (see [`try_lock`]) held on it, and
/// `size` bytes reserved with `posix_fallocate`, so a full `/dev/shm` is an
/// error now rather than a SIGBUS on first touch.
pub(crate) fn create_unnamed(size: u64, mode: u32, gid: Option<u32>) -> Result<File, (&'static str, io::Error)> {
    create_unnamed_in(Path::new(SHM_DIR), size, mode, gid)
}

/// [`create_unnamed`] in the directory `dir` (a fan-in ring's folder).
pub(crate) fn create_unnamed_in(
    dir: &Path,
    size: u64,
    mode: u32,
    gid: Option<u32>,
) -> Result<File, (&'static str, io::Error)> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .mode(mode)
        .custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC)
        .open(dir)
        .map_err(|e| ("create", e))?;
    file.set_permissions(std::fs::Permissions::from_mode(mode)).map_err(|e| ("chmod", e))?;
    if let Some(gid) = gid {
        std::os::unix::fs::fchown(&file, None, Some(gid)).map_err(|e| ("chown", e))?;
    }
    if !try_lock(&file).map_err(|e| ("lock", e))? {
        // Nobody else can reach an unnamed file.
        return Err(("lock", io::Error::from(io::ErrorKind::WouldBlock)));
    }
    reserve(&file, size).map_err(|e| ("reserve space for", e))?;
    Ok(file)
}

/// Gives `file`, made by [`create_unnamed`], the name `path`. Never
/// replaces: an existing `path` is `AlreadyExists`.
pub(crate) fn link_unnamed(file: &File, path: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;
    let to = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let fd = file.as_raw_fd();
    // Through /proc, which needs no privilege; AT_EMPTY_PATH needs
    // CAP_DAC_READ_SEARCH and is the fallback where /proc is not mounted.
    let proc = std::ffi::CString::new(format!("/proc/self/fd/{fd}")).expect("no NUL in a number");
    // SAFETY: both paths are NUL-terminated strings that outlive the call.
    let rc =
        unsafe { libc::linkat(libc::AT_FDCWD, proc.as_ptr(), libc::AT_FDCWD, to.as_ptr(), libc::AT_SYMLINK_FOLLOW) };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() != Some(libc::ENOENT) {
        return Err(e);
    }
    // SAFETY: `fd` is open for the whole call; the paths are NUL-terminated.
    let rc = unsafe { libc::linkat(fd, c"".as_ptr(), libc::AT_FDCWD, to.as_ptr(), libc::AT_EMPTY_PATH) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A private copy of a header in shared memory (`T` is a `#[repr(C)]`
/// layout of integers and atomic integers, its size a multiple of 8), taken
/// word by word with atomic loads: checks made on the copy, and what is
/// kept from it, are of the same bytes, whatever a process that may write
/// the header stores meanwhile.
///
/// # Safety
///
/// `shared` is 8-aligned, and every bit pattern is a `T`.
pub(crate) unsafe fn snapshot<T>(shared: &T) -> Box<T> {
    use std::sync::atomic::{AtomicU64, Ordering};
    // Whole words, and a copy (a `Box<T>`) aligned for them.
    const { assert!(std::mem::size_of::<T>().is_multiple_of(8) && std::mem::align_of::<T>() >= 8) };
    let mut copy = Box::<T>::new_uninit();
    let (from, to) = (shared as *const T as *const AtomicU64, copy.as_mut_ptr() as *mut u64);
    for i in 0..std::mem::size_of::<T>() / 8 {
        // SAFETY: in bounds of both (size_of::<T>() bytes); both 8-aligned
        // (the caller's promise; a Box of T is aligned for T, at least 8 by
        // the assertion above). Loaded atomically: other processes
        // update some words (counters, leases) while we copy.
        unsafe { to.add(i).write((*from.add(i)).load(Ordering::Relaxed)) };
    }
    // SAFETY: every byte was written above; any bit pattern is a T.
    unsafe { copy.assume_init() }
}

/// Opens `path` as `o` says (read, write, append, create), if it is a
/// regular file: a symbolic link is not followed, and the open does not
/// wait (a FIFO); anything else is refused, saying what it is
/// (`InvalidInput`: "a FIFO, not a regular file: refused"), for the caller
/// to name with the path. For files under a name someone else may write
/// (the ledger's folder, /dev/shm): a link there, to a file of root's, say,
/// must never be followed, nor a FIFO hold a program's start. The
/// descriptor returned blocks, as a regular file's does.
pub fn open_regular(path: &Path, o: &mut std::fs::OpenOptions) -> io::Result<File> {
    use std::os::fd::AsRawFd;
    let refused =
        |what: &str| io::Error::new(io::ErrorKind::InvalidInput, format!("a {what}, not a regular file: refused"));
    let file = o.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path).map_err(|e| match e.raw_os_error() {
        Some(libc::ELOOP) => refused("symbolic link"),
        // A FIFO opened to write, with no reader.
        Some(libc::ENXIO) => refused("FIFO"),
        _ => e,
    })?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(refused(file_kind(&meta)));
    }
    // Blocking again: the flag was for the open alone (a file system that
    // honours it on regular files, a FUSE one say, would fail writes with
    // EAGAIN).
    // SAFETY: fcntl on a descriptor this function owns, with plain flags.
    let flags = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(file)
}

/// What a file is, in words for an error ("a {kind}"): a program that
/// expects a regular file under a name others may write names what it
/// found there instead.
pub fn file_kind(m: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = m.file_type();
    match () {
        _ if t.is_symlink() => "symbolic link",
        _ if t.is_dir() => "directory",
        _ if t.is_file() => "regular file",
        _ if t.is_socket() => "socket",
        _ if t.is_fifo() => "FIFO",
        _ => "device",
    }
}

/// Looks a group up by name (or a decimal gid) in the system's group database.
pub fn group_id(group: &str) -> io::Result<u32> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    let c = std::ffi::CString::new(group).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut grp: libc::group = unsafe_zeroed_group();
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut out: *mut libc::group = std::ptr::null_mut();
    // SAFETY: all pointers are valid for the call; `buf` outlives it and its
    // length is passed; `out` is written by the callee.
    let rc = unsafe { libc::getgrnam_r(c.as_ptr(), &mut grp, buf.as_mut_ptr(), buf.len(), &mut out) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    if out.is_null() {
        return Err(io::Error::new(io::ErrorKind::NotFound, format!("no group named {group:?}")));
    }
    Ok(grp.gr_gid)
}

fn unsafe_zeroed_group() -> libc::group {
    // SAFETY: `libc::group` is a plain C struct of integers and pointers, for
    // which all-zero bytes (null pointers) are a valid value.
    unsafe { std::mem::zeroed() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_names_follow_the_grammar() {
        for ok in ["telemetry", "twin.state", "a", "0-x_y.z", &"a".repeat(63)] {
            assert_eq!(validate_ring_name(ok), Ok(()), "{ok}");
        }
        assert!(matches!(validate_ring_name(""), Err(NameError::Empty { .. })));
        assert!(matches!(validate_ring_name(&"a".repeat(64)), Err(NameError::TooLong { len: 64, .. })));
        for (bad, ch, at) in [
            ("../x", '.', 0),
            ("a/b", '/', 1),
            ("Upper", 'U', 0),
            ("-x", '-', 0),
            ("a@readers", '@', 1),
            ("a b", ' ', 1),
            (".x", '.', 0),
        ] {
            match validate_ring_name(bad) {
                Err(NameError::BadChar { ch: c, at: a, .. }) => assert_eq!((c, a), (ch, at), "{bad}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn namespaces_have_no_dots() {
        assert!(Namespace::new("helix").is_ok());
        assert!(Namespace::new("t-1_x").is_ok());
        assert!(Namespace::new("a.b").is_err());
        assert!(Namespace::new(&"n".repeat(33)).is_err());
        let ns = Namespace::new("ns").unwrap();
        assert_eq!(ns.data_path("twin.state"), Path::new("/dev/shm/ns.twin.state"));
        assert_eq!(ns.readers_path("twin.state"), Path::new("/dev/shm/ns.twin.state@readers"));
    }

    #[test]
    fn shared_words_are_seen_through_a_second_mapping_and_checked() {
        use std::sync::atomic::Ordering;
        let file = tempfile_in_shm();
        file.set_len(256).unwrap();
        let (a, b) = (Mapping::new(&file, true).unwrap(), Mapping::new(&file, true).unwrap());
        a.atomic_u64(128).store(7, Ordering::Release);
        assert_eq!(b.atomic_u64(128).load(Ordering::Acquire), 7);
        assert_eq!(b.atomic_u32(128).load(Ordering::Acquire), 7);
        for (offset, size) in [(4, 8), (2, 4), (256, 4), (252, 8), (usize::MAX - 3, 4)] {
            let caught = std::panic::catch_unwind(|| match size {
                8 => a.atomic_u64(offset).load(Ordering::Relaxed),
                _ => u64::from(a.atomic_u32(offset).load(Ordering::Relaxed)),
            });
            assert!(caught.is_err(), "{size} bytes at {offset}");
        }
        let read_only = Mapping::new(&file, false).unwrap();
        assert!(std::panic::catch_unwind(|| read_only.atomic_u32(0).load(Ordering::Relaxed)).is_err());
    }

    /// An unlinked file in /dev/shm, gone when closed.
    fn tempfile_in_shm() -> File {
        let path = Path::new(SHM_DIR).join(format!("shm-test-{}", std::process::id()));
        let file = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        file
    }

    #[test]
    fn errors_name_the_problem() {
        let e = validate_ring_name("Bad").unwrap_err().to_string();
        assert!(e.contains("'B'") && e.contains("byte 0"), "{e}");
    }
}
