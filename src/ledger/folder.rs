//! Opening the files of a ledger folder.
//!
//! Whoever may write the folder (the `helix` user the recorder runs as)
//! can put anything under a file's name: a symbolic link, to a file of
//! root's say, that an operator's `sudo helix-ledger ...` would follow,
//! truncate and write; a FIFO, that would hold an open (and so a start, or
//! the retention thread) waiting for a writer for good; a device. Every
//! file of the folder is opened through here: a link is never followed, an
//! open never waits, and only a regular file is taken. Anything else is an
//! error saying what it is, which the caller names with the path.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::path::Path;

/// Opens `path` as `o` says (read, write, append, create), if it is a
/// regular file ([`crate::shm::open_regular`]).
pub(crate) fn open(path: &Path, o: &mut OpenOptions) -> io::Result<File> {
    crate::shm::open_regular(path, o)
}

/// Opens `path` to read it, if it is a regular file.
pub(crate) fn open_read(path: &Path) -> io::Result<File> {
    open(path, OpenOptions::new().read(true))
}

/// The bytes of `path`, if it is a regular file.
pub(crate) fn read(path: &Path) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    open_read(path)?.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// [`read`] of a file that is `limit` bytes at most (a manifest, a lock
/// file): a larger one is an error saying so, read no further. (Found by
/// review: a sparse file of the size of the memory under such a name was
/// read whole, by the recorder's start among others.)
pub(crate) fn read_small(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    open_read(path)?.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("larger than {limit} bytes")));
    }
    Ok(bytes)
}

/// Makes `path` afresh, to write: whatever is under its name (a temporary
/// a crash left, a link put there) is removed first, and the file is
/// created new (`O_EXCL`: a link put back meanwhile is refused, never
/// followed).
pub(crate) fn create_new(path: &Path) -> io::Result<File> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    open(path, OpenOptions::new().write(true).create_new(true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_fifos_and_folders_are_refused_and_nothing_is_written_through_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let (victim, link, fifo) = (dir.path().join("victim"), dir.path().join("link"), dir.path().join("fifo"));
        fs::write(&victim, "keep").unwrap();
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        for (path, what) in [(&link, "a symbolic link"), (&fifo, "a FIFO"), (&dir.path().to_owned(), "a directory")] {
            let e = read(path).unwrap_err().to_string();
            assert!(e.starts_with(what) && e.ends_with("not a regular file: refused"), "{}: {e}", path.display());
        }
        let e = open(&link, OpenOptions::new().write(true).create(true)).unwrap_err();
        assert!(e.to_string().starts_with("a symbolic link"), "{e}");
        // A FIFO opened to write is refused as one too, and a regular
        // file's descriptor blocks again.
        let e = open(&fifo, OpenOptions::new().write(true)).unwrap_err().to_string();
        assert!(e.starts_with("a FIFO, not a regular file"), "{e}");
        let f = open(&victim, OpenOptions::new().append(true)).unwrap();
        use std::os::fd::AsRawFd;
        // SAFETY: F_GETFL on an open descriptor.
        assert_eq!(unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETFL) } & libc::O_NONBLOCK, 0);
        // A link to nothing is not followed to make its target.
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink(dir.path().join("made"), &dangling).unwrap();
        assert!(open(&dangling, OpenOptions::new().write(true).create(true)).is_err());
        assert!(!dir.path().join("made").exists());
        // A temporary under a link's name is made in its place.
        create_new(&link).unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "keep");
        assert!(fs::symlink_metadata(&link).unwrap().file_type().is_file());
        assert_eq!(read(&link).unwrap(), b"");
    }
}
