//! A ring's two files as a whole: publishing a new ring so that a crash
//! never leaves one that blocks the next creation, replacing a ring
//! (refused while a live writer holds it), and what a namespace holds,
//! half-made rings included.
//!
//! The rule every step keeps: **the data file exists only when the ring is
//! whole.** A creator makes both files unnamed (`O_TMPFILE`), initialises
//! them, then links the control file under its name and the data file
//! last. The only thing a creator that dies can leave is a control file
//! without its data file, and the next creation replaces it. A creator
//! holds an exclusive lock (an open-file-description lock, which its death
//! releases) on both files until both have their names, so a control file
//! that is locked is being published, and one that is not was abandoned.
//! Whoever removes a file of a ring that is not whole takes that lock
//! first and checks again, so two processes never both replace it.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::layout::{RING_HEADER_SIZE, RING_MAGIC};
use crate::shm::{self, Namespace, RingFile};

use super::region::{self, Region, ABANDONED_AFTER};
use super::{AttachError, CreateError, LeaseError, RingOptions, Writer};

/// How long a creator waits for another process that holds the lock on a
/// half-made ring's file (publishing takes microseconds) before it gives
/// up with [`CreateError::InProgress`].
const PATIENCE: Duration = Duration::from_secs(1);

/// Times the publishing loop re-inspects a ring that changed under it.
const ATTEMPTS: usize = 8;

/// Test support, not API: lets a test stop a creator at a stage of
/// [`Ring::create`](super::Ring::create), to kill it there. Never set
/// outside tests (`tests/creation.rs`); it costs one load per creation.
#[doc(hidden)]
pub mod create_hook {
    use std::sync::OnceLock;

    /// Where creation is when the hook runs.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Stage {
        /// Both files exist unnamed and initialised; nothing is published.
        Initialised,
        /// The control file has its name; the data file has none yet.
        ReadersPublished,
        /// Both files have their names; the locks are still held.
        DataPublished,
    }

    static HOOK: OnceLock<fn(Stage)> = OnceLock::new();

    /// Runs `hook` at every stage of every later creation in this process.
    pub fn set(hook: fn(Stage)) {
        let _ = HOOK.set(hook);
    }

    pub(crate) fn run(stage: Stage) {
        if let Some(hook) = HOOK.get() {
            hook(stage);
        }
    }
}
use create_hook::Stage;

fn io_err(path: &Path, op: &'static str, error: io::Error) -> CreateError {
    CreateError::Io { path: path.to_owned(), op, error }
}

/// Gives the unnamed, initialised, locked files of a new ring their names:
/// the control file first, the data file last, then releases the locks.
///
/// What an attacher sees meanwhile: before the first link, no ring; between
/// the links, a control file without its data file, which attach reports as
/// no ring (its lock says it is being published); after the second, the
/// whole ring. What is already there decides:
/// - a published data file: the ring exists ([`CreateError::Exists`]), or,
///   without its control file, is incomplete and may be in use
///   ([`CreateError::Incomplete`], for [`Ring::recreate`](super::Ring::recreate));
/// - a data file never initialised (left by a creator from before this
///   protocol): replaced once abandoned, [`CreateError::InProgress`] before;
/// - a control file alone: replaced, unless its creator is alive and
///   publishing it (then, after waiting [`PATIENCE`] for it, `InProgress`).
pub(crate) fn publish(ns: &Namespace, name: &str, rfile: &File, dfile: &File) -> Result<(), CreateError> {
    let (dpath, rpath) = (ns.data_path(name), ns.readers_path(name));
    create_hook::run(Stage::Initialised);
    for _ in 0..ATTEMPTS {
        match inspect_data(&dpath).map_err(|e| io_err(&dpath, "read", e))? {
            DataFile::Absent => {}
            DataFile::Published if rpath.exists() => return Err(CreateError::Exists { path: dpath }),
            DataFile::Published => {
                return Err(CreateError::Incomplete {
                    ring: name.to_owned(),
                    present: dpath,
                    missing: rpath,
                    missing_file: RingFile::Readers,
                })
            }
            DataFile::Unfinished { age } if age < ABANDONED_AFTER => {
                return Err(CreateError::InProgress { path: dpath })
            }
            DataFile::Unfinished { .. } => {
                remove_locked(
                    &dpath,
                    |f| matches!(inspect(f), Ok(DataFile::Unfinished { age }) if age >= ABANDONED_AFTER),
                )?;
                continue;
            }
        }
        match shm::link_unnamed(rfile, &rpath) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // A control file without a data file: left by a creator that
                // died between its two links (or by hand), or being
                // published right now by a live one, which holds its lock.
                remove_locked(&rpath, |_| !exists(&dpath))?;
                continue;
            }
            Err(e) => return Err(link_err(&rpath, e)),
        }
        create_hook::run(Stage::ReadersPublished);
        if let Err(e) = shm::link_unnamed(dfile, &dpath) {
            // Only a process outside this protocol can have put a data file
            // there while our control file stood alone: take ours back.
            if shm::names_file(&rpath, rfile).unwrap_or(false) {
                let _ = std::fs::remove_file(&rpath);
            }
            return Err(match e.kind() {
                io::ErrorKind::AlreadyExists => CreateError::Exists { path: dpath },
                _ => link_err(&dpath, e),
            });
        }
        create_hook::run(Stage::DataPublished);
        // The locks outlive `close` while the files are mapped: release them
        // now, or the ring would look half-made to `scan` for our lifetime.
        shm::unlock(rfile).map_err(|e| io_err(&rpath, "unlock", e))?;
        shm::unlock(dfile).map_err(|e| io_err(&dpath, "unlock", e))?;
        return Ok(());
    }
    Err(CreateError::InProgress { path: rpath })
}

fn link_err(path: &Path, e: io::Error) -> CreateError {
    if e.raw_os_error() == Some(libc::ENOSPC) {
        CreateError::NoSpace { path: path.to_owned(), error: e }
    } else {
        io_err(path, "link", e)
    }
}

fn exists(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

/// Removes `path` if, holding its lock, it still names the file that was
/// locked and `still(file)` holds. Returns `Ok` whether or not it removed
/// it (the caller looks again); `InProgress` if another process holds the
/// lock for longer than [`PATIENCE`].
fn remove_locked(path: &Path, still: impl Fn(&File) -> bool) -> Result<(), CreateError> {
    let file = match shm::open_file(path, true) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(path, "open", e)),
    };
    let deadline = Instant::now() + PATIENCE;
    while !shm::try_lock(&file).map_err(|e| io_err(path, "lock", e))? {
        if Instant::now() >= deadline {
            return Err(CreateError::InProgress { path: path.to_owned() });
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    if shm::names_file(path, &file).map_err(|e| io_err(path, "stat", e))? && still(&file) {
        if let Err(e) = std::fs::remove_file(path) {
            if e.kind() != io::ErrorKind::NotFound {
                return Err(io_err(path, "remove", e));
            }
        }
    }
    Ok(())
    // Dropping `file` (never mapped) releases the lock.
}

/// What a data file is, judged from its first bytes.
enum DataFile {
    Absent,
    /// Anything but a creator's unfinished file: a ring (whether it
    /// validates is for attach to say), or a foreign file.
    Published,
    /// Empty, or a header whose version word is still 0: a creator from
    /// before crash-atomic creation is initialising it or died doing so.
    Unfinished {
        age: Duration,
    },
}

fn inspect_data(path: &Path) -> io::Result<DataFile> {
    match shm::open_file(path, false) {
        Ok(f) => inspect(&f),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(DataFile::Absent),
        Err(e) => Err(e),
    }
}

/// Reads the magic and version with `pread`: no mapping, so a file shrunk
/// meanwhile cannot fault, and no data race with a writer of the header.
fn inspect(file: &File) -> io::Result<DataFile> {
    let meta = file.metadata()?;
    let age = meta.modified().ok().and_then(|t| t.elapsed().ok()).unwrap_or_default();
    if meta.len() == 0 {
        return Ok(DataFile::Unfinished { age });
    }
    let mut head = [0u8; 12];
    if meta.len() < RING_HEADER_SIZE as u64 || file.read_exact_at(&mut head, 0).is_err() {
        return Ok(DataFile::Published);
    }
    let magic = u64::from_ne_bytes(head[..8].try_into().expect("8 bytes"));
    let version = u32::from_ne_bytes(head[8..].try_into().expect("4 bytes"));
    Ok(if version == 0 && (magic == 0 || magic == RING_MAGIC) {
        DataFile::Unfinished { age }
    } else {
        DataFile::Published
    })
}

/// The error for a ring whose data file is missing, if its control file
/// exists and nobody is publishing it (a creator that is, holding its lock,
/// has simply not finished: that is no ring yet, not a broken one).
pub(crate) fn missing_data(ns: &Namespace, name: &str) -> Option<AttachError> {
    let rpath = ns.readers_path(name);
    let being_published = match shm::open_file(&rpath, false) {
        Ok(f) => shm::is_locked(&f).unwrap_or(false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(_) => false,
    };
    (!being_published).then(|| AttachError::Incomplete {
        ring: name.to_owned(),
        present: rpath,
        missing: ns.data_path(name),
        missing_file: RingFile::Data,
    })
}

/// Replaces whatever is at `name` with a new ring: see
/// [`Ring::recreate`](super::Ring::recreate).
pub(crate) fn recreate(ns: &Namespace, name: &str, opts: &RingOptions) -> Result<Region, CreateError> {
    shm::validate_ring_name(name)?;
    opts.validate()?;
    // Before the old ring is taken down: refused, it stays.
    region::refuse_fan_in_named(ns, name)?;
    let dpath = ns.data_path(name);
    for _ in 0..ATTEMPTS {
        // Holding the old ring's lease while replacing it keeps any other
        // writer (and any other `recreate`) off it until the new one exists.
        let _old_lease = hold_lease(ns, name)?;
        // Unpublish: without its data file the rest is a lone control file,
        // which `create` replaces under its lock.
        if let Err(e) = std::fs::remove_file(&dpath) {
            if e.kind() != io::ErrorKind::NotFound {
                return Err(io_err(&dpath, "remove", e));
            }
        }
        match region::create(ns, name, opts) {
            // Another creator got in between: look at its ring's lease.
            Err(CreateError::Exists { .. }) => continue,
            other => return other,
        }
    }
    Err(CreateError::InProgress { path: dpath })
}

/// The lease of the ring now at `name`, held, if it is whole; refused if a
/// live process holds it. A broken ring's lease is checked, not held.
fn hold_lease(ns: &Namespace, name: &str) -> Result<Option<Writer>, CreateError> {
    let live = |pid, epoch| CreateError::LiveWriter { ring: name.to_owned(), pid, epoch };
    match region::attach(ns, name, true) {
        Ok(old) => match Writer::new(std::sync::Arc::new(old)) {
            Ok(w) => Ok(Some(w)),
            Err(LeaseError::Held { pid, epoch, .. }) => Err(live(pid, epoch)),
            Err(_) => Ok(None),
        },
        Err(_) => match region::live_lease_holder(ns, name) {
            Some((pid, epoch)) => Err(live(pid, epoch)),
            None => Ok(None),
        },
    }
}

/// The live process that holds the writer lease of ring `name`, as `(pid,
/// epoch)`, judged as [`Ring::recreate`](super::Ring::recreate) judges it
/// (pid and start time) and read from the data file alone, so it answers
/// for a ring whose control file is missing or broken too. `None` if no
/// live process holds it, if there is no data file, or if the data file
/// does not validate (its lease cannot be trusted then). It maps the data
/// file read-only and changes nothing: for tools that remove rings
/// (`helixctl rm`) and say who still writes one.
pub fn live_writer(ns: &Namespace, name: &str) -> Option<(u32, u64)> {
    region::live_lease_holder(ns, name)
}

/// A ring name in a namespace and the state of its files.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct RingEntry {
    /// The ring name.
    pub name: String,
    /// What its files are.
    #[cfg_attr(feature = "serde", serde(flatten))]
    pub state: RingState,
}

/// The state of one ring name's files, from [`scan`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize), serde(tag = "state", rename_all = "snake_case"))]
pub enum RingState {
    /// Both files, the data region published. Whether they validate as a
    /// ring is for attach to say (a corrupt file is also `Complete`).
    Complete,
    /// Only the control file. `being_created`: a live creator holds it and
    /// is about to publish the data file. Otherwise its creator died
    /// between its two links, or the data file was removed by hand: it is
    /// no ring, and [`Ring::create`](super::Ring::create) replaces it.
    MissingData { being_created: bool },
    /// Only the data file: its control file was removed by hand. Nobody can
    /// attach, but a writer attached before may still write it; only
    /// [`Ring::recreate`](super::Ring::recreate) replaces it.
    MissingReaders,
    /// A data file never initialised, left by a creator from before
    /// crash-atomic creation (or a foreign empty file). `abandoned` once
    /// unchanged for 10 s: [`Ring::create`](super::Ring::create) replaces
    /// it then.
    Unfinished { age_secs: u64, abandoned: bool },
    /// A file under the name that cannot be inspected (anyone may put a
    /// link, a file of another owner, or a socket in /dev/shm): `error`
    /// names the file and why. Nobody can attach to it either.
    Unreadable { error: String },
}

/// Every ring name in `ns` with at least one of its files, and the state of
/// its files, sorted by name. Reads headers with `pread` and probes locks;
/// never maps, locks or changes anything. A file that cannot be inspected
/// is that name's state ([`RingState::Unreadable`]), never the scan's
/// failure: the others are still listed.
pub fn scan(ns: &Namespace) -> io::Result<Vec<RingEntry>> {
    let mut out = Vec::new();
    for files in ns.list_ring_files()? {
        let (dpath, rpath) = (ns.data_path(&files.name), ns.readers_path(&files.name));
        let unreadable =
            |path: &Path, e: io::Error| RingState::Unreadable { error: format!("{}: {e}", path.display()) };
        let data = if files.data { inspect_data(&dpath) } else { Ok(DataFile::Absent) };
        let state = match data {
            Err(e) => unreadable(&dpath, e),
            Ok(DataFile::Unfinished { age }) => {
                RingState::Unfinished { age_secs: age.as_secs(), abandoned: age >= ABANDONED_AFTER }
            }
            Ok(DataFile::Published) if exists(&rpath) => RingState::Complete,
            Ok(DataFile::Published) => RingState::MissingReaders,
            // Removed since it was listed, like the ring it belonged to.
            Ok(DataFile::Absent) if !files.readers => continue,
            Ok(DataFile::Absent) => match shm::open_file(&rpath, false) {
                Ok(f) => match shm::is_locked(&f) {
                    Ok(being_created) => RingState::MissingData { being_created },
                    Err(e) => unreadable(&rpath, e),
                },
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(_) => RingState::MissingData { being_created: false },
            },
        };
        out.push(RingEntry { name: files.name, state });
    }
    Ok(out)
}
