//! Why a ring operation failed: one error enum per operation, each
//! variant naming what the caller needs (the file, the header field, the
//! live process in the way).

use std::path::{Path, PathBuf};

use crate::layout::{MAX_READER_NAME_LEN, MAX_SEQ};
use crate::shm::{NameError, Namespace, RingFile};

use super::{Damaged, FrameError};
#[cfg(doc)]
use super::{Reader, Ring, RingView};

/// Why a ring could not be created. A failed creation leaves no files (it
/// may have removed what a dead creator left of a half-made ring).
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// The ring name is invalid.
    #[error(transparent)]
    Name(#[from] NameError),
    /// An option is out of range.
    #[error("ring option `{field}`: {reason}")]
    Options { field: &'static str, reason: String },
    /// A ring of that name already exists.
    #[error("{path} already exists (attach to it, or unlink it first)")]
    Exists { path: PathBuf },
    /// A fan-in ring of that name, this user's or root's, exists: the two
    /// kinds share one name space, so that a name means one ring to every
    /// tool.
    #[error("a fan-in ring named {ring:?} exists ({path}); a broadcast ring may not share its name (choose another, or remove that ring first)")]
    FanInNamed { ring: String, path: PathBuf },
    /// The ring's data file exists without its control file (removed by
    /// hand). A writer attached before may still use it, so only
    /// [`Ring::recreate`] replaces it.
    #[error("ring {ring:?} is incomplete: {present} exists but {missing} does not ({})", incomplete_advice(.missing_file))]
    Incomplete { ring: String, present: PathBuf, missing: PathBuf, missing_file: RingFile },
    /// Another live process is creating this ring right now (it holds the
    /// lock on a half-published file for longer than creation takes), or a
    /// data file an older creator has not initialised yet is younger than
    /// 10 s.
    #[error("{path} is being created by another process; retry, or stop that process")]
    InProgress { path: PathBuf },
    /// [`Ring::recreate`] refused: a live process holds the existing ring's
    /// writer lease.
    #[error("ring {ring:?} is in use: its writer lease is held by live pid {pid} (epoch {epoch}); stop that process before recreating the ring")]
    LiveWriter { ring: String, pid: u32, epoch: u64 },
    /// `/dev/shm` has no room for the ring.
    #[error("not enough space in /dev/shm for {path}: {error} (free some, or make the ring smaller)")]
    NoSpace { path: PathBuf, error: std::io::Error },
    /// Another system call failed.
    #[error("cannot {op} {path}: {error}")]
    Io { path: PathBuf, op: &'static str, error: std::io::Error },
    /// The newly created region failed validation (a bug, or a concurrent
    /// process overwrote it).
    #[error(transparent)]
    Attach(AttachError),
}

/// Why a ring could not be attached. Each variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// The ring name is invalid.
    #[error(transparent)]
    Name(#[from] NameError),
    /// No such ring in the namespace.
    #[error("no ring {name:?} in namespace {namespace:?} ({path} does not exist)")]
    NotFound { name: String, namespace: String, path: PathBuf },
    /// The file exists but may not be opened this way.
    #[error("permission denied opening {path} (ring files' mode and group come from the ring's configuration)")]
    Permission { path: PathBuf },
    /// Another system call failed.
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },
    /// The creator has not finished initialising the region (or died doing so).
    #[error("{path} is not initialised yet (its version word is 0)")]
    Initializing { path: PathBuf },
    /// The file is shorter than its header says.
    #[error("{path} is truncated: {size} bytes, {needed} needed")]
    Truncated { path: PathBuf, size: u64, needed: u64 },
    /// A header field is wrong.
    #[error("{path}: header field `{field}` is {found}, expected {expected}")]
    BadField { path: PathBuf, field: &'static str, found: u64, expected: String },
    /// The region was made by another version of the ABI.
    #[error("{path} has ABI version {found}; this program speaks version {expected}")]
    Version { path: PathBuf, found: u32, expected: u32 },
    /// The header names another ring.
    #[error("{path}: header field `name` is {found:?}, expected {expected:?}")]
    NameMismatch { path: PathBuf, found: String, expected: String },
    /// Any other inconsistency.
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    /// Every reader entry is taken by a live reader.
    #[error("ring {ring:?}: all {max} reader entries are in use by live readers")]
    ReaderTableFull { ring: String, max: u32 },
    /// The reader's entry was freed while it was joining (a sweep judged it
    /// dead, or an operator evicted it).
    #[error("ring {ring:?}: reader entry {index} was taken away while joining")]
    Evicted { ring: String, index: usize },
    /// The creator died before initialising the region; it will never be
    /// usable and must be unlinked.
    #[error("{path} was created {age_secs} s ago and never initialised (its creator died); unlink the ring")]
    Abandoned { path: PathBuf, age_secs: u64 },
    /// The reader name is too long.
    #[error("reader name {name:?} is longer than {MAX_READER_NAME_LEN} bytes")]
    ReaderName { name: String },
    /// `Start::At` a sequence past [`MAX_SEQ`](crate::layout::MAX_SEQ)
    /// (2^63 - 1): no frame ever has it, and a cursor there would alias a
    /// slot's "being written" stamp.
    #[error("start sequence {seq} is past the largest sequence number, {max}", max = crate::layout::MAX_SEQ)]
    StartPastMax { seq: u64 },
    /// One of the ring's two files exists, the other does not.
    #[error("ring {ring:?} is incomplete: {present} exists but {missing} does not ({})", incomplete_advice(.missing_file))]
    Incomplete { ring: String, present: PathBuf, missing: PathBuf, missing_file: RingFile },
    /// A file of the ring shrank under the mapping (while it was being
    /// checked, or under the attachment a reader joins through).
    #[error(transparent)]
    Damaged(Damaged),
}

fn incomplete_advice(missing: &RingFile) -> &'static str {
    match missing {
        RingFile::Data => {
            "its creator died before publishing it, or the data file was removed; creating the ring replaces it"
        }
        RingFile::Readers => "the control file was removed; only recreating the ring replaces it",
    }
}

impl AttachError {
    pub(crate) fn open(name: &str, ns: &Namespace, path: &Path, e: std::io::Error) -> AttachError {
        match e.kind() {
            std::io::ErrorKind::NotFound => {
                AttachError::NotFound { name: name.to_owned(), namespace: ns.to_string(), path: path.to_owned() }
            }
            std::io::ErrorKind::PermissionDenied => AttachError::Permission { path: path.to_owned() },
            _ => AttachError::io(path, e),
        }
    }

    pub(crate) fn io(path: &Path, error: std::io::Error) -> AttachError {
        AttachError::Io { path: path.to_owned(), error }
    }

    /// Whether there is no usable ring and nothing there can be in use: no
    /// ring, a control file without its data file, or a data file its
    /// creator never initialised and abandoned. [`Ring::create`] replaces
    /// what is left; anything else needs [`Ring::recreate`].
    pub fn is_absent(&self) -> bool {
        matches!(
            self,
            AttachError::NotFound { .. }
                | AttachError::Abandoned { .. }
                | AttachError::Incomplete { missing_file: RingFile::Data, .. }
        )
    }
}

/// A ring whose data file is owned by a user the attaching process does
/// not believe: neither this process's, nor root, nor the services' user
/// when that is believed too ([`Owners`];
/// [`RingView::check_owner`](super::RingView::check_owner)).
/// Anyone may create files in /dev/shm: a ring made under an expected name
/// by another user carries whatever frames its maker writes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path} is owned by uid {owner}, neither this process's uid {me} nor root's{also}: another user made it, and could forge what it carries or read what is sent into it (root can remove it: `helixctl rm --force {ring}`)", also = service_clause(*.service))]
pub struct ForeignRing {
    pub ring: String,
    pub path: PathBuf,
    pub owner: u32,
    pub me: u32,
    /// The services' user's uid, if it was believed as well.
    pub service: Option<u32>,
}

fn service_clause(service: Option<u32>) -> String {
    service.map_or_else(String::new, |uid| format!(" nor the services' user's (uid {uid})"))
}

/// Whose rings a process believes: root's, its own uid's, and (if given)
/// those of the user the HELIX services run as. Anyone may create a ring
/// under an expected name while its real maker is down, and a ring carries
/// whatever its owner writes into it.
///
/// The services themselves believe [`Owners::MINE`]: they run as the user
/// whose rings they follow. An operator's tool (helixctl, the Python
/// package) runs as someone else, and believes [`Owners::packaged`] or the
/// user it is told the services run as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Owners {
    /// The services' user's uid, believed besides root and this process's.
    pub service: Option<u32>,
}

impl Owners {
    /// Root and this process's uid only.
    pub const MINE: Owners = Owners { service: None };

    /// Root, this process's uid and `uid`.
    pub const fn with_service(uid: u32) -> Owners {
        Owners { service: Some(uid) }
    }

    /// Root, this process's uid and the packaged services' user
    /// ([`SERVICE_USER`](crate::process::SERVICE_USER)) if the user
    /// database holds it (else, or if it cannot be asked, as
    /// [`Owners::MINE`]).
    pub fn packaged() -> Owners {
        Owners { service: crate::process::user_uid(crate::process::SERVICE_USER).ok().flatten() }
    }

    /// Whether a ring owned by `uid` is believed.
    pub fn allows(&self, uid: u32) -> bool {
        uid == 0 || uid == crate::process::my_uid() || self.service == Some(uid)
    }

    /// `Err` unless `owner` (of the ring `ring`'s file at `path`) is one
    /// of these.
    pub(crate) fn check(&self, ring: &str, path: &Path, owner: u32) -> Result<(), ForeignRing> {
        if self.allows(owner) {
            return Ok(());
        }
        let me = crate::process::my_uid();
        Err(ForeignRing { ring: ring.to_owned(), path: path.to_owned(), owner, me, service: self.service })
    }
}

/// Why the writer lease could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The ring could not be attached.
    #[error(transparent)]
    Attach(#[from] AttachError),
    /// A live process holds the lease.
    #[error("ring {ring:?} already has a live writer: pid {pid} (lease epoch {epoch})")]
    Held { ring: String, pid: u32, epoch: u64 },
    /// The attachment maps the data region read-only.
    #[error("ring {ring:?} is attached read-only; a writer needs a read-write attachment")]
    ReadOnly { ring: String },
    /// A file of the ring shrank under the attachment (see [`Damaged`]).
    #[error(transparent)]
    Damaged(Damaged),
}

/// Why frames could not be published. Nothing was published.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// The payload is larger than the ring's slots hold.
    #[error("frame of {len} bytes exceeds the ring's largest payload of {max} bytes")]
    TooLarge { len: usize, max: usize },
    /// A `block` ring has no room: gating readers have not consumed enough
    /// (from `try_*`, or when a `*_timeout` call's time ran out).
    #[error("ring full: {needed} slots needed, {free} free until gating readers advance")]
    Full { needed: u64, free: u64 },
    /// More slots were claimed at once than the ring has.
    #[error("cannot claim {n} slots at once in a ring of {capacity}")]
    BatchTooLarge { n: u64, capacity: u64 },
    /// More frames were pushed into a claim than it reserved.
    #[error("the claim of {claimed} slots is full")]
    ClaimFull { claimed: u64 },
    /// The claim would take sequence numbers past [`MAX_SEQ`] (2^63 - 1);
    /// the ring cannot carry more frames.
    #[error("sequence numbers exhausted: the claim of {n} slots from {next} would pass {MAX_SEQ}")]
    SequenceExhausted { next: u64, n: u64 },
    /// A file of the ring shrank under the writer's mapping (see
    /// [`Damaged`]); it will never publish again: drop it. A claim that was
    /// being filled when it happened was lost with the mapping.
    #[error(transparent)]
    Damaged(Damaged),
}

/// Sequences a reader lost because the writer overwrote them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overrun {
    /// How many sequences were lost.
    pub lost: u64,
    /// The sequence the reader continues with (the oldest still intact).
    pub resume_at: u64,
}

/// Why [`Reader::try_read`] and friends returned no frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TryReadError {
    /// Nothing new has been published.
    #[error("no frame available")]
    Empty,
    /// The reader fell behind and lost frames; it now points at the oldest
    /// intact one.
    #[error("overrun: {} frames lost, resuming at {}", .0.lost, .0.resume_at)]
    Overrun(Overrun),
    /// The frame does not fit the request (see [`FrameError`]).
    #[error(transparent)]
    Frame(FrameError),
    /// A file of the ring shrank under this reader's mapping; it will
    /// never read again (see [`Damaged`]).
    #[error(transparent)]
    Damaged(Damaged),
}

/// Why [`Reader::read`] and friends returned no frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// The deadline passed with nothing new.
    #[error("timed out waiting for a frame")]
    Timeout,
    /// See [`TryReadError::Overrun`].
    #[error("overrun: {} frames lost, resuming at {}", .0.lost, .0.resume_at)]
    Overrun(Overrun),
    /// See [`TryReadError::Frame`].
    #[error(transparent)]
    Frame(FrameError),
    /// See [`TryReadError::Damaged`]. A waiting reader notices within
    /// 100 ms even while parked.
    #[error(transparent)]
    Damaged(Damaged),
}

impl From<TryReadError> for ReadError {
    fn from(e: TryReadError) -> Self {
        match e {
            TryReadError::Empty => ReadError::Timeout,
            TryReadError::Overrun(o) => ReadError::Overrun(o),
            TryReadError::Frame(f) => ReadError::Frame(f),
            TryReadError::Damaged(d) => ReadError::Damaged(d),
        }
    }
}

/// `published` if it is a sequence number (at most [`MAX_SEQ`]), else the
/// error naming the field. Sequences share the slot stamp with its WRITING
/// bit, so on a ring past `MAX_SEQ` a lapped reader would take every newer
/// frame for one still being written and wait for ever.
pub(crate) fn check_published(path: &Path, published: u64) -> Result<u64, AttachError> {
    if published > MAX_SEQ {
        return Err(AttachError::BadField {
            path: path.to_owned(),
            field: "published",
            found: published,
            expected: format!("at most {MAX_SEQ} (2^63 - 1, the largest sequence number)"),
        });
    }
    Ok(published)
}
