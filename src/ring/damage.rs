//! Damage: a ring file that shrank under this process's mapping, and the
//! repair of a ring whose control region a peer destroyed.
//!
//! The fault guard (`crate::guard`) turns the SIGBUS of an access past the
//! new end of a truncated file into a mapping of zeros and a damaged flag.
//! The ring code reads that flag where zeros could fool it, and every
//! operation of a damaged attachment then fails with [`Damaged`], which
//! names the ring and the file. Nothing read from zeros is ever delivered
//! (a zero stamp never matches a sequence, which starts at 1).

use std::fmt;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::layout::MAX_NAME_LEN;
use crate::shm::{self, Mapping, Namespace, RingFile};
use crate::sync::{futex, Ordering};

use super::region::{self, Region};
use super::{writer, AttachError, Geometry, LeaseError};

impl RingFile {
    /// `"data region"` or `"control region (@readers)"`.
    pub fn as_str(self) -> &'static str {
        match self {
            RingFile::Data => "data region",
            RingFile::Readers => "control region (@readers)",
        }
    }
}

impl fmt::Display for RingFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A ring name held inline, so that errors carrying it stay `Copy`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RingName {
    len: u8,
    bytes: [u8; MAX_NAME_LEN],
}

impl RingName {
    /// `name`, cut at 63 bytes (a valid ring name is never longer).
    pub fn new(name: &str) -> RingName {
        let mut end = name.len().min(MAX_NAME_LEN);
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        let mut bytes = [0u8; MAX_NAME_LEN];
        bytes[..end].copy_from_slice(&name.as_bytes()[..end]);
        RingName { len: end as u8, bytes }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or("?")
    }
}

impl fmt::Debug for RingName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for RingName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A ring file shrank under this process's mapping (a peer truncated it).
/// The fault guard kept the process alive by mapping zeros over the whole
/// region, so this attachment (every handle sharing its mapping) is
/// unusable from now on: every read, publish and join reports this. Drop
/// the handles and attach again once the ring's owner has repaired
/// ([`Ring::repair_readers`](super::Ring::repair_readers)) or recreated it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "ring {ring:?}: its {file} shrank under this process's mapping (truncated by a peer); this attachment now \
     reads zeros and is unusable: detach, and attach again once the ring's owner has repaired or recreated it"
)]
pub struct Damaged {
    /// The ring.
    pub ring: RingName,
    /// The file that shrank (the data region if both did).
    pub file: RingFile,
}

impl Damaged {
    pub(crate) fn new(ring: &str, file: RingFile) -> Damaged {
        Damaged { ring: RingName::new(ring), file }
    }
}

/// Why [`Ring::repair_readers`](super::Ring::repair_readers) did not repair.
#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    /// The ring cannot be attached for a reason a new control region does
    /// not fix: its data region is missing, corrupt, truncated or damaged,
    /// or a file cannot be opened. Recreate the ring.
    #[error(transparent)]
    Attach(AttachError),
    /// A live process holds the writer lease. The repair replaces the
    /// reader table under the lease, so every writer must let go first
    /// (a writer of a damaged ring gets [`PublishError::Damaged`]; drop it).
    ///
    /// [`PublishError::Damaged`]: super::PublishError::Damaged
    #[error(transparent)]
    Lease(LeaseError),
    /// Creating or installing the new control region failed.
    #[error("cannot {op} {path}: {error}")]
    Io { path: PathBuf, op: &'static str, error: std::io::Error },
    /// The new control region was broken again (truncated, rewritten,
    /// removed) between its installation and the repair's attach to it:
    /// a process that may write it, at once. The data region is whole;
    /// try again rather than recreate the ring.
    #[error("the new control region was broken again at once: {0}")]
    BrokenAgain(AttachError),
}

/// Whether attaching failed because of the control region alone: the
/// errors a new control region fixes.
fn control_broken(e: &AttachError, readers_path: &Path) -> bool {
    match e {
        AttachError::Damaged(d) => d.file == RingFile::Readers,
        AttachError::Incomplete { missing_file, .. } => *missing_file == RingFile::Readers,
        AttachError::NotFound { path, .. }
        | AttachError::Truncated { path, .. }
        | AttachError::BadField { path, .. }
        | AttachError::Version { path, .. }
        | AttachError::Invalid { path, .. } => path == readers_path,
        _ => false,
    }
}

/// See [`Ring::repair_readers`](super::Ring::repair_readers).
pub(crate) fn repair_readers(ns: &Namespace, name: &str) -> Result<Region, RepairError> {
    let readers_path = ns.readers_path(name);
    match region::attach(ns, name, true) {
        Ok(r) => return Ok(r),
        Err(e) if !control_broken(&e, &readers_path) => return Err(RepairError::Attach(e)),
        Err(_) => {}
    }
    let data_path = ns.data_path(name);
    let dfile = shm::open_file(&data_path, true)
        .map_err(|e| RepairError::Attach(AttachError::open(name, ns, &data_path, e)))?;
    let dmap = Mapping::new(&dfile, true).map_err(|e| RepairError::Attach(AttachError::io(&data_path, e)))?;
    let (h, g) = region::data_header(&dmap, &data_path, name).map_err(RepairError::Attach)?;
    // Under the writer lease: no writer gates on the old table meanwhile,
    // and two repairs (two daemons) cannot replace each other's table.
    let epoch = writer::take_lease(h, name).map_err(RepairError::Lease)?;
    // Someone may have repaired it while we were getting here.
    let replaced = match region::attach(ns, name, false) {
        Ok(_) => Ok(()),
        Err(_) => replace_control(&readers_path, &dfile, &g),
    };
    if replaced.is_ok() {
        // Readers parked on the data region wake, meet their truncated
        // control region, and report the damage (rather than after their
        // next park time-out).
        h.notify.fetch_add(1, Ordering::Release);
        let _ = futex::wake_all(&h.notify);
    }
    writer::release_lease(h, epoch);
    replaced?;
    drop(dmap);
    region::attach(ns, name, true).map_err(|e| after_install(e, &readers_path))
}

/// Why attaching to a ring whose new control region was just installed
/// failed: the data region's fault (recreate the ring), or the new control
/// region's, broken again at once by a process that may write it (try
/// again: were the ring recreated for it, such a peer would turn a broken
/// control file, which a repair fixes keeping every frame, into the loss
/// of them all).
fn after_install(e: AttachError, readers_path: &Path) -> RepairError {
    if control_broken(&e, readers_path) {
        RepairError::BrokenAgain(e)
    } else {
        RepairError::Attach(e)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_control_region_broken_again_after_its_install_is_tried_again_and_a_broken_data_region_is_not() {
        let (data, readers) = (Path::new("/dev/shm/t.r"), Path::new("/dev/shm/t.r@readers"));
        let truncated = |path: &Path| AttachError::Truncated { path: path.to_owned(), size: 0, needed: 512 };
        assert!(matches!(after_install(truncated(readers), readers), RepairError::BrokenAgain(_)));
        assert!(matches!(after_install(truncated(data), readers), RepairError::Attach(_)));
        let damaged = |file| AttachError::Damaged(Damaged::new("r", file));
        assert!(matches!(after_install(damaged(RingFile::Readers), readers), RepairError::BrokenAgain(_)));
        assert!(matches!(after_install(damaged(RingFile::Data), readers), RepairError::Attach(_)));
    }
}

/// Installs a new, empty control region for the ring of geometry `g` in
/// place of the broken one at `readers_path`, then truncates the old file,
/// so every process still mapping it faults at its next access and reports
/// the damage (also one whose file shrank by less than a page).
fn replace_control(readers_path: &Path, dfile: &File, g: &Geometry) -> Result<(), RepairError> {
    fn io<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(std::io::Error) -> RepairError + 'a {
        move |error| RepairError::Io { path: path.to_owned(), op, error }
    }
    let old = match shm::open_file(readers_path, true) {
        Ok(f) => Some(f),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io(readers_path, "open")(e)),
    };
    // The old file's mode and group; without one, the data region's with
    // the group and other write bits its control region would have had.
    let (mode, gid) = match &old {
        Some(f) => f.metadata().map(|m| (m.mode() & 0o777, m.gid())).map_err(io(readers_path, "stat"))?,
        None => {
            let m = dfile.metadata().map_err(io(readers_path, "stat the data region of"))?;
            let mode = m.mode() & 0o777;
            (mode | (mode & 0o044) >> 1, m.gid())
        }
    };
    let file = region::new_control(g, mode, Some(gid)).map_err(|(op, e)| io(readers_path, op)(e))?;
    // Under a name of its own: anyone may make files in /dev/shm, and the
    // repairer could not remove another user's file at a name it could
    // guess (found by review: `<ring>@readers.new` made by anyone kept
    // every repair from succeeding).
    let tmp = shm::link_fresh(&file, readers_path).map_err(io(readers_path, "link a new control region beside"))?;
    let _ = shm::unlock(&file);
    if let Err(e) = std::fs::rename(&tmp, readers_path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(readers_path, "rename a new control region over")(e));
    }
    if let Some(old) = old {
        // Best effort: the new table is in place whatever happens here.
        let _ = old.set_len(0);
    }
    Ok(())
}
