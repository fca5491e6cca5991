//! Extended attributes of ring files: how a fan-in ring's folder hands
//! its lane files a POSIX ACL (`docs/abi.md` §11.1). The calls only; what
//! the attribute holds is the caller's business.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Sets attribute `name` of `path` (not following a final symlink) to `value`.
pub(crate) fn set_xattr(path: &Path, name: &CStr, value: &[u8]) -> io::Result<()> {
    let p = CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: both strings are NUL-terminated and outlive the call; `value`
    // is valid for `value.len()` bytes.
    let rc = unsafe { libc::lsetxattr(p.as_ptr(), name.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Attribute `name` of the open `file`; `None` if it has none.
pub(crate) fn get_xattr(file: &File, name: &CStr) -> io::Result<Option<Vec<u8>>> {
    // An ACL of the 32 entries this ever reads is 260 bytes; more is
    // refused as too big (ERANGE), which the caller reports.
    let mut buf = vec![0u8; 4 + 32 * 8];
    // SAFETY: the descriptor is open, `name` is NUL-terminated, and `buf`
    // is valid for writes of `buf.len()` bytes for the whole call.
    let n = unsafe { libc::fgetxattr(file.as_raw_fd(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n >= 0 {
        buf.truncate(n as usize);
        return Ok(Some(buf));
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::ENODATA) => Ok(None),
        _ => Err(e),
    }
}
