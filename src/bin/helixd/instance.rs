//! One helixd a namespace. A second one started beside the first (a
//! `helixd --config try.toml` as the service's user, say) adopted its live
//! rings, gave them its own modes, and on its stop unlinked those it was
//! told to (`unlink_on_stop`), or retired them at a reload, under the
//! running daemon; it was refused only by accident, where one of its
//! sources met a writer lease or its control path the journal's lock.
//! (Found by review.) Now each holds the lock of `/dev/shm/<ns>.helixd@lock`
//! (`flock`, released by the kernel however helixd exits) for its life, and
//! writes its pid there. The file is never removed: a helixd removing it
//! as it stops could leave the next one locking a file no longer under
//! the name, beside a third that makes it again.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use helix::Namespace;

/// The instance lock file of namespace `ns`.
pub fn path(ns: &Namespace) -> PathBuf {
    PathBuf::from(helix::shm::SHM_DIR).join(format!("{ns}.helixd@lock"))
}

/// Takes namespace `ns` for this helixd: its lock, held while the file
/// returned is open. Refused while another process holds it, naming the
/// pid it wrote, and for a file not helixd's own (anyone may make files in
/// /dev/shm: as for a ring of another user's under a configured name, root
/// removes it).
pub fn take(ns: &Namespace) -> Result<File> {
    let path = path(ns);
    let what = || format!("helixd's lock of namespace {ns}, {}", path.display());
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&path)
        .with_context(what)?;
    let meta = file.metadata().with_context(what)?;
    let me = helix::process::my_uid();
    // Mode 0600 and one link, as helixd makes it: anyone else who could
    // open it could hold a shared lock on it (`flock` needs no write
    // access) and keep every helixd out (found by review: it was made
    // 0644).
    if !meta.is_file() || meta.uid() != me || meta.mode() & 0o077 != 0 || meta.nlink() != 1 {
        bail!(
            "{} is not helixd's own file (a {}, owner uid {}, mode {:o}, {} links; helixd runs as uid {me} and \
             makes it mode 600): remove it as root",
            what(),
            helix::shm::file_kind(&meta),
            meta.uid(),
            meta.mode() & 0o7777,
            meta.nlink()
        );
    }
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = (&file).take(32).read_to_string(&mut pid);
            bail!(
                "another helixd runs namespace {ns} (pid {}, which holds {}): one helixd a namespace; stop it, or \
                 give this one another namespace",
                pid.trim(),
                path.display()
            );
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(anyhow::Error::new(e).context(what())),
    }
    file.set_len(0).with_context(what)?;
    file.rewind().with_context(what)?;
    writeln!(file, "{}", std::process::id()).with_context(what)?;
    Ok(file)
}
