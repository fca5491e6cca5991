//! The ring: one writer, many readers, fixed slots in shared memory.
//!
//! See the crate documentation for the guarantees, and `docs/abi.md` for
//! the protocol as another language would implement it.

mod damage;
mod frame;
mod lifecycle;
mod reader;
mod region;
mod writer;

#[cfg(all(test, loom))]
mod loom_tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::layout::{self, *};
use crate::shm::{NameError, Namespace};
use crate::sync::{host, Ordering};

pub use crate::shm::RingFile;
pub use damage::{Damaged, RepairError, RingName};
pub use frame::{Frame, FrameError, FrameInfo, FrameRef};
#[doc(hidden)]
pub use lifecycle::create_hook;
pub use lifecycle::{live_writer, scan, RingEntry, RingState};
pub use reader::{Overrun, ReadError, Reader, ReaderOptions, Start, TryReadError};
pub use region::Geometry;
pub use writer::{Claim, LeaseError, PublishError, Writer};

pub(crate) use region::Region;

/// Largest number of slots a ring may have (2^32).
pub const MAX_CAPACITY: u64 = 1 << 32;
/// Largest payload of one frame (16 MiB).
pub const MAX_PAYLOAD: u32 = 16 << 20;
/// Largest reader table.
pub const MAX_READERS: u32 = 1024;

/// What the writer does when the ring is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize), serde(rename_all = "lowercase"))]
pub enum Policy {
    /// Real time: the writer never waits; a reader that falls a whole ring
    /// behind gets an [`Overrun`] and resumes at the oldest intact frame.
    Overwrite,
    /// Lossless: the writer never overwrites a slot a gating reader has not
    /// consumed; it waits for it, bounded by the stall timeout, after which
    /// the stalled reader is demoted to non-gating (and that is counted).
    Block,
}

impl Policy {
    pub(crate) fn to_raw(self) -> u32 {
        match self {
            Policy::Overwrite => POLICY_OVERWRITE,
            Policy::Block => POLICY_BLOCK,
        }
    }

    pub(crate) fn from_raw(raw: u32) -> Option<Policy> {
        match raw {
            POLICY_OVERWRITE => Some(Policy::Overwrite),
            POLICY_BLOCK => Some(Policy::Block),
            _ => None,
        }
    }

    /// `"overwrite"` or `"block"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Overwrite => "overwrite",
            Policy::Block => "block",
        }
    }
}

impl std::str::FromStr for Policy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "overwrite" => Ok(Policy::Overwrite),
            "block" => Ok(Policy::Block),
            _ => Err(format!("unknown overflow policy {s:?}: expected \"overwrite\" or \"block\"")),
        }
    }
}

/// Named ring geometries ("T-shirt sizes"), by largest payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Preset {
    /// 64-byte payloads (128-byte slots).
    Xs,
    /// 256-byte payloads.
    S,
    /// 1 KiB payloads.
    M,
    /// 4 KiB payloads.
    L,
    /// 16 KiB payloads.
    Xl,
}

impl Preset {
    /// Every preset, smallest first.
    pub const ALL: [Preset; 5] = [Preset::Xs, Preset::S, Preset::M, Preset::L, Preset::Xl];

    /// Largest payload in bytes.
    pub fn max_payload(self) -> u32 {
        match self {
            Preset::Xs => 64,
            Preset::S => 256,
            Preset::M => 1024,
            Preset::L => 4096,
            Preset::Xl => 16384,
        }
    }

    /// `"xs"`, `"s"`, `"m"`, `"l"` or `"xl"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Preset::Xs => "xs",
            Preset::S => "s",
            Preset::M => "m",
            Preset::L => "l",
            Preset::Xl => "xl",
        }
    }
}

impl std::str::FromStr for Preset {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Preset::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("unknown size preset {s:?}: expected one of xs, s, m, l, xl"))
    }
}

/// How to create a ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingOptions {
    /// Number of slots; a power of two from 2 to [`MAX_CAPACITY`].
    pub capacity: u64,
    /// Largest payload in bytes, 0 to [`MAX_PAYLOAD`]; slots are this plus a
    /// 16-byte header, rounded up to 64 bytes.
    pub max_payload: u32,
    /// Overflow policy.
    pub policy: Policy,
    /// Reader table size, 1 to [`MAX_READERS`].
    pub max_readers: u32,
    /// A gating reader that has not released what a waiting writer needs
    /// this long after the writer started waiting for it is demoted
    /// (whatever its cursor did meanwhile).
    pub stall_timeout: Duration,
    /// File mode of the control region; the data region gets the same
    /// without group and other write bits.
    pub mode: u32,
    /// Group owner of both files (default: the creator's group).
    pub group: Option<u32>,
}

impl Default for RingOptions {
    fn default() -> Self {
        RingOptions {
            capacity: 4096,
            max_payload: Preset::Xs.max_payload(),
            policy: Policy::Overwrite,
            max_readers: 16,
            stall_timeout: Duration::from_secs(2),
            mode: 0o660,
            group: None,
        }
    }
}

impl RingOptions {
    /// Options for a preset geometry with `capacity` slots.
    pub fn preset(preset: Preset, capacity: u64) -> Self {
        RingOptions { capacity, max_payload: preset.max_payload(), ..Default::default() }
    }

    /// Checks the options as [`Ring::create`] does, without touching any
    /// file; returns the slot size.
    pub fn validate(&self) -> Result<u32, CreateError> {
        let bad = |field: &'static str, reason: String| CreateError::Options { field, reason };
        if self.capacity < 2 || !self.capacity.is_power_of_two() || self.capacity > MAX_CAPACITY {
            return Err(bad("capacity", format!("{} is not a power of two from 2 to {MAX_CAPACITY}", self.capacity)));
        }
        if self.max_payload > MAX_PAYLOAD {
            return Err(bad("max_payload", format!("{} is larger than {MAX_PAYLOAD}", self.max_payload)));
        }
        if self.max_readers == 0 || self.max_readers > MAX_READERS {
            return Err(bad("max_readers", format!("{} is not from 1 to {MAX_READERS}", self.max_readers)));
        }
        if self.stall_timeout.is_zero() {
            return Err(bad("stall_timeout", "must be longer than zero".into()));
        }
        if self.mode & !0o777 != 0 || self.mode & 0o600 != 0o600 {
            return Err(bad(
                "mode",
                format!("{:o} must be permission bits including owner read and write (0o600)", self.mode),
            ));
        }
        let slot_size = layout::slot_size_for(self.max_payload as usize) as u64;
        if self.capacity.checked_mul(slot_size).is_none_or(|b| b > isize::MAX as u64 / 2) {
            return Err(bad("capacity", format!("{} slots of {slot_size} bytes do not fit in memory", self.capacity)));
        }
        Ok(slot_size as u32)
    }

    /// Bytes of shared memory the ring will use (both files): what
    /// [`Geometry::memory`] says once it exists.
    pub fn memory(&self) -> u64 {
        let slot = layout::slot_size_for(self.max_payload as usize) as u64;
        memory(self.capacity, slot, self.max_readers)
    }
}

impl Geometry {
    /// Bytes of shared memory the ring uses: its data region (header and
    /// slots) and its control region (reader table).
    pub fn memory(&self) -> u64 {
        memory(self.capacity, self.slot_size as u64, self.max_readers)
    }
}

/// Bytes of a ring's two files; saturating, as options may not have been
/// validated.
fn memory(capacity: u64, slot_size: u64, max_readers: u32) -> u64 {
    (RING_HEADER_SIZE as u64)
        .saturating_add(capacity.saturating_mul(slot_size))
        .saturating_add(readers_file_size(max_readers))
}

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
    #[error("not enough space in /dev/shm for {path}: {source} (free some, or make the ring smaller)")]
    NoSpace { path: PathBuf, source: std::io::Error },
    /// Another system call failed.
    #[error("cannot {op} {path}: {source}")]
    Io { path: PathBuf, op: &'static str, source: std::io::Error },
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
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
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

    pub(crate) fn io(path: &Path, source: std::io::Error) -> AttachError {
        AttachError::Io { path: path.to_owned(), source }
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

/// A read-write attachment to a ring: what the creator, the daemon and a
/// writer hold. Readers and tools attach read-only through
/// [`Reader::attach`] and [`RingView::attach`].
#[derive(Clone)]
pub struct Ring {
    region: Arc<Region>,
}

impl Ring {
    /// Creates a new ring `name` in `ns`; fails if it exists. Crash-atomic:
    /// the ring appears whole or not at all, and what a creator that died
    /// left of a half-made ring is replaced (see [`scan`] and
    /// `docs/abi.md` §3.1).
    pub fn create(ns: &Namespace, name: &str, opts: &RingOptions) -> Result<Ring, CreateError> {
        Ok(Ring { region: Arc::new(region::create(ns, name, opts)?) })
    }

    /// Replaces whatever is at `name` (a ring of another geometry, a
    /// corrupt one, one file of a ring) with a new, empty ring: the
    /// sequence starts again at 1. Refused with [`CreateError::LiveWriter`]
    /// while a live process holds the existing ring's writer lease; the
    /// lease is held during the replacement, so no writer can take it
    /// meanwhile. Processes still attached to the old ring keep its memory
    /// and see no new frames.
    pub fn recreate(ns: &Namespace, name: &str, opts: &RingOptions) -> Result<Ring, CreateError> {
        Ok(Ring { region: Arc::new(lifecycle::recreate(ns, name, opts)?) })
    }

    /// Attaches read-write to an existing ring.
    pub fn open(ns: &Namespace, name: &str) -> Result<Ring, AttachError> {
        Ok(Ring { region: Arc::new(region::attach(ns, name, true)?) })
    }

    /// Removes a ring's files. Processes attached keep their mappings until
    /// they detach; new attaches fail.
    pub fn unlink(ns: &Namespace, name: &str) -> Result<(), AttachError> {
        region::unlink(ns, name)
    }

    /// Takes the writer lease; see [`Writer`].
    pub fn writer(&self) -> Result<Writer, LeaseError> {
        Writer::new(self.region.clone())
    }

    /// Registers a reader on this attachment's mapping.
    pub fn reader(&self, opts: &ReaderOptions) -> Result<Reader, AttachError> {
        Reader::new(self.region.clone(), opts)
    }

    /// The ring's name.
    pub fn name(&self) -> &str {
        &self.region.name
    }

    /// The ring's geometry.
    pub fn geometry(&self) -> &Geometry {
        &self.region.geometry
    }

    /// A lock-free snapshot of every counter.
    pub fn stats(&self) -> RingStats {
        stats(&self.region)
    }

    /// Frees the entries of dead readers (demoting them first if they were
    /// gating) and releases a dead writer's lease.
    pub fn sweep(&self) -> SweepReport {
        sweep(&self.region)
    }

    /// Whether a file of the ring shrank under this attachment (see
    /// [`Damaged`]). Touches the first and last page of both mappings, so
    /// a shrink no access has met yet is found now; no system call unless
    /// a file did shrink. Cheap enough for a daemon's periodic check.
    pub fn is_damaged(&self) -> bool {
        self.region.probe().is_some()
    }

    /// Like [`Ring::is_damaged`], naming the file that shrank.
    pub fn damage(&self) -> Option<Damaged> {
        self.region.probe()
    }

    /// Gives a ring whose control region (`@readers`) was destroyed a new,
    /// empty one, keeping its data region: the frames, the sequence (the
    /// next writer continues it) and the writer lease epoch survive; every
    /// reader must join again.
    ///
    /// For the ring's owner (the daemon), after [`Ring::damage`] reported
    /// [`RingFile::Readers`], once every [`Writer`] of the ring in the
    /// process is dropped: the repair holds the writer lease while it
    /// works, so it fails with [`RepairError::Lease`] while a live writer
    /// holds it. It creates the new control file beside the old one (same
    /// mode and group), renames it into place, and truncates the old file,
    /// so every process still attached to it reports [`Damaged`] at its
    /// next access and attaches again. If the control region is intact it
    /// only attaches. A ring whose *data* region is damaged cannot be
    /// repaired ([`RepairError::Attach`]): unlink and create it.
    pub fn repair_readers(ns: &Namespace, name: &str) -> Result<Ring, RepairError> {
        Ok(Ring { region: Arc::new(damage::repair_readers(ns, name)?) })
    }
}

/// A read-only attachment for tools: stats and sweeps, never writes frames.
#[derive(Clone)]
pub struct RingView {
    region: Arc<Region>,
}

impl RingView {
    /// Attaches read-only (the data region is mapped read-only).
    pub fn attach(ns: &Namespace, name: &str) -> Result<RingView, AttachError> {
        Ok(RingView { region: Arc::new(region::attach(ns, name, false)?) })
    }

    /// The ring's name.
    pub fn name(&self) -> &str {
        &self.region.name
    }

    /// The ring's geometry.
    pub fn geometry(&self) -> &Geometry {
        &self.region.geometry
    }

    /// A lock-free snapshot of every counter.
    pub fn stats(&self) -> RingStats {
        stats(&self.region)
    }

    /// Each registered reader's pid and lag (frames published and not yet
    /// consumed), without the liveness check [`stats`](Self::stats) makes
    /// for every reader (a read of `/proc/PID/stat` each): cheap enough to
    /// sample every few milliseconds beside a latency-sensitive reader.
    pub fn lags(&self) -> Vec<(u32, u64)> {
        // Relaxed: a number to show; nothing is read on the strength of it.
        let published = self.region.header().published.load(Ordering::Relaxed);
        self.region
            .entries()
            .filter_map(|(_, e)| {
                // SYNC POINT: reader entry published (its pid and cursor).
                let (pid, tag) = entry_parts(e.state.load(Ordering::Acquire));
                (tag == ENTRY_ACTIVE).then(|| (pid, lag(published, e.cursor.load(Ordering::Relaxed))))
            })
            .collect()
    }

    /// Frees dead readers' entries (the control region is writable to every
    /// attached process). Dead writer leases need a read-write attachment.
    pub fn sweep(&self) -> SweepReport {
        sweep(&self.region)
    }

    /// See [`Ring::is_damaged`].
    pub fn is_damaged(&self) -> bool {
        self.region.probe().is_some()
    }

    /// See [`Ring::damage`].
    pub fn damage(&self) -> Option<Damaged> {
        self.region.probe()
    }

    /// Removes reader entry `index`. A live reader is refused unless `force`;
    /// a forced eviction stops it gating, and its next join fails loudly.
    pub fn evict(&self, index: usize, force: bool) -> Result<FreedReader, EvictError> {
        evict(&self.region, index, force)
    }
}

/// Why [`RingView::evict`] did nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvictError {
    /// No such entry, or it is not a registered reader.
    #[error("reader entry {index} is not in use")]
    NotInUse { index: usize },
    /// The reader's process is alive.
    #[error("reader {name:?} (entry {index}, pid {pid}) is alive; use --force to evict it anyway")]
    Alive { index: usize, pid: u32, name: String },
    /// `force` on a live reader of another user: only the reader's own user
    /// (or root) may evict it.
    #[error("reader {name:?} (entry {index}, pid {pid}) belongs to uid {owner}, not to you (uid {caller}); only its user or root may evict it")]
    NotOwner { index: usize, pid: u32, name: String, owner: u32, caller: u32 },
    /// The entry changed while being evicted (its reader left or another
    /// process evicted it).
    #[error("reader entry {index} changed while being evicted")]
    Raced { index: usize },
}

fn evict(region: &Region, index: usize, force: bool) -> Result<FreedReader, EvictError> {
    if index >= region.geometry.max_readers as usize {
        return Err(EvictError::NotInUse { index });
    }
    let e = region.entry(index);
    // SYNC POINT: reader entry published (the fields read below are the
    // owner's).
    let state = e.state.load(Ordering::Acquire);
    let (pid, tag) = entry_parts(state);
    if tag != ENTRY_ACTIVE && tag != ENTRY_CLAIMING {
        return Err(EvictError::NotInUse { index });
    }
    let name = read_name(&e.name);
    let alive =
        if tag == ENTRY_ACTIVE { host::alive(pid, e.start_time.load(Ordering::Relaxed)) } else { host::exists(pid) };
    if alive && !force {
        return Err(EvictError::Alive { index, pid, name });
    }
    if alive {
        // Write access to the reader table lets any member of the ring's
        // group evict; a live reader is its user's own business.
        let caller = host::my_uid();
        match host::uid_of(pid) {
            Some(owner) if owner == caller || caller == 0 => {}
            owner => return Err(EvictError::NotOwner { index, pid, name, owner: owner.unwrap_or(u32::MAX), caller }),
        }
    }
    let was_gating = tag == ENTRY_ACTIVE && e.gating.load(Ordering::Relaxed) == GATING_YES;
    let was_parked = e.parked.load(Ordering::Relaxed) == 1;
    // SYNC POINT: reader entry released. Release: our reads of the owner's
    // fields above come before the next owner's writes (it claims with an
    // Acquire CAS). Acquire: pairs with `reader entry published` of
    // whichever owner wrote the word we replace.
    if e.state.compare_exchange(state, ENTRY_FREE, Ordering::AcqRel, Ordering::Relaxed).is_err() {
        return Err(EvictError::Raced { index });
    }
    let rd = region.readers();
    if was_parked && !alive {
        // A count: no ordering (see `Reader::park`).
        let _ = rd.waiters.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| w.checked_sub(1));
    }
    rd.swept.fetch_add(1, Ordering::Relaxed);
    // SYNC POINT: reader table changed. Release: a writer that sees the new
    // epoch (Acquire, `Writer::reserve`) rescans and sees the entry FREE.
    // Not SeqCst: a writer that misses the bump keeps a tighter gate than
    // needed, and rescans anyway when it waits, which `wake_writer` below
    // covers.
    rd.table_epoch.fetch_add(1, Ordering::Release);
    wake_writer(region);
    Ok(FreedReader { index, pid, name, was_gating })
}

/// The writer lease as seen in the header.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct LeaseInfo {
    /// Holder pid, if held.
    pub pid: Option<u32>,
    /// Epoch: incremented by every acquisition.
    pub epoch: u64,
    /// Whether the holder is a live process.
    pub alive: bool,
    /// Leases taken from dead holders (by a new writer or a sweep), ever.
    pub takeovers: u64,
}

/// One reader as seen in the table (serialised as-is by helixctl's JSON).
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ReaderStats {
    /// Entry index in the table.
    pub index: usize,
    /// The name the reader registered with.
    pub name: String,
    /// Its pid.
    pub pid: u32,
    /// Whether that process is alive (pid and start time match).
    pub alive: bool,
    /// Whether it currently gates the writer.
    pub gating: bool,
    /// Whether it was demoted from gating.
    pub demoted: bool,
    /// Next sequence it will read.
    pub cursor: u64,
    /// Published frames it has not consumed.
    pub lag: u64,
    /// `lag / capacity`.
    pub backpressure: f64,
    /// Overrun events it saw.
    pub overruns: u64,
    /// Sequences it lost to overruns.
    pub lost: u64,
    /// Frames it consumed.
    pub frames: u64,
    /// Nanoseconds since its last heartbeat.
    pub heartbeat_age_ns: u64,
}

/// A snapshot of a ring's counters, read without locks (serialised as-is
/// by helixctl's JSON, the lease as `writer`).
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct RingStats {
    /// Highest published sequence (= frames published, ever).
    pub published: u64,
    /// Payload bytes published, ever.
    pub bytes: u64,
    /// Times the writer waited for space.
    pub writer_waits: u64,
    /// Nanoseconds the writer waited.
    pub writer_wait_ns: u64,
    /// Gating readers demoted.
    pub demotions: u64,
    /// Dead readers' entries freed by sweeps.
    pub swept: u64,
    /// Readers currently parked.
    pub parked: u32,
    /// The writer lease.
    #[cfg_attr(feature = "serde", serde(rename = "writer"))]
    pub lease: LeaseInfo,
    /// Every registered reader.
    pub readers: Vec<ReaderStats>,
}

impl RingStats {
    /// Overrun events over all current readers.
    pub fn overruns(&self) -> u64 {
        self.readers.iter().map(|r| r.overruns).sum()
    }
}

/// Frames published and not consumed by a reader at `cursor`. Both words
/// are written by other processes: saturating, so no value can overflow.
pub(crate) fn lag(published: u64, cursor: u64) -> u64 {
    published.saturating_add(1).saturating_sub(cursor)
}

pub(crate) fn read_name(words: &[crate::sync::AtomicU64; 4]) -> String {
    let mut bytes = [0u8; MAX_READER_NAME_LEN];
    for (chunk, w) in bytes.chunks_exact_mut(8).zip(words) {
        chunk.copy_from_slice(&w.load(Ordering::Relaxed).to_ne_bytes());
    }
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

fn lease_info(region: &Region) -> LeaseInfo {
    let h = region.header();
    // SYNC POINT: lease committed (the holder's start time is visible).
    let (pid, epoch, _) = lease_parts(h.lease.load(Ordering::Acquire));
    let start = h.lease_start_time.load(Ordering::Relaxed);
    LeaseInfo {
        pid: (pid != 0).then_some(pid),
        epoch,
        alive: pid != 0 && host::alive(pid, start),
        takeovers: h.takeovers.load(Ordering::Relaxed),
    }
}

fn stats(region: &Region) -> RingStats {
    let h = region.header();
    let rd = region.readers();
    // Relaxed: a number to show; nothing is read on the strength of it.
    let published = h.published.load(Ordering::Relaxed);
    let cap = region.capacity();
    let now = host::now_ns();
    let readers = region
        .entries()
        .filter_map(|(index, e)| {
            // SYNC POINT: reader entry published (the fields read below are
            // the owner's).
            let (pid, tag) = entry_parts(e.state.load(Ordering::Acquire));
            (tag == ENTRY_ACTIVE).then_some((index, e, pid))
        })
        .map(|(index, e, pid)| {
            let cursor = e.cursor.load(Ordering::Relaxed);
            let lag = lag(published, cursor);
            let gating = e.gating.load(Ordering::Relaxed);
            ReaderStats {
                index,
                name: read_name(&e.name),
                pid,
                alive: host::alive(pid, e.start_time.load(Ordering::Relaxed)),
                gating: gating == GATING_YES && region.geometry.policy == Policy::Block,
                demoted: gating == GATING_DEMOTED,
                cursor,
                lag,
                backpressure: lag as f64 / cap as f64,
                overruns: e.overruns.load(Ordering::Relaxed),
                lost: e.lost.load(Ordering::Relaxed),
                frames: e.frames.load(Ordering::Relaxed),
                heartbeat_age_ns: now.saturating_sub(e.heartbeat_ns.load(Ordering::Relaxed)),
            }
        })
        .collect();
    RingStats {
        published,
        bytes: h.bytes_published.load(Ordering::Relaxed),
        writer_waits: h.writer_waits.load(Ordering::Relaxed),
        writer_wait_ns: h.writer_wait_ns.load(Ordering::Relaxed),
        demotions: rd.demotions.load(Ordering::Relaxed),
        swept: rd.swept.load(Ordering::Relaxed),
        parked: rd.waiters.load(Ordering::Relaxed),
        lease: lease_info(region),
        readers,
    }
}

/// A dead reader whose entry a sweep freed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FreedReader {
    /// Entry index.
    pub index: usize,
    /// The dead process.
    pub pid: u32,
    /// The name it registered with.
    pub name: String,
    /// Whether it was still gating the writer.
    pub was_gating: bool,
}

/// What a sweep found and freed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Each dead reader whose entry was freed.
    pub readers_freed: Vec<FreedReader>,
    /// The pid of a dead writer whose lease was released.
    pub lease_released: Option<u32>,
}

impl SweepReport {
    /// Whether the sweep changed nothing.
    pub fn is_empty(&self) -> bool {
        self.readers_freed.is_empty() && self.lease_released.is_none()
    }
}

/// Demotes the gating reader in `entry` if the entry still belongs to the
/// owner seen as `state` and it still gates; returns whether this call did
/// it. Counted in the control region's `demotions`.
pub(crate) fn demote(region: &Region, entry: &ReaderEntry, state: u32) -> bool {
    // SYNC POINT: reader entry published (still the owner the caller saw).
    if entry.state.load(Ordering::Acquire) != state {
        return false;
    }
    // Relaxed: only the writer demotes, and it reads `gating` again itself
    // (program order); no other access is ordered by this flag. A demoted
    // reader learns of it from the stamps (overruns), not from the flag.
    let done = entry.gating.compare_exchange(GATING_YES, GATING_DEMOTED, Ordering::Relaxed, Ordering::Relaxed).is_ok();
    if done {
        region.readers().demotions.fetch_add(1, Ordering::Relaxed);
        wake_writer(region);
    }
    done
}

/// Wakes the writer if it waits for space. Called after a gating reader's
/// cursor moved or a gating reader went away.
#[inline]
pub(crate) fn wake_writer(region: &Region) {
    let rd = region.readers();
    // SYNC POINT: writer-wait Dekker. This SeqCst fence pairs with the one in
    // `Writer::wait_for_space`: either the writer's re-check after raising
    // `writer_waiting` sees our cursor store, or this load sees the flag.
    // Acquire/Release cannot order a store before a later load.
    crate::sync::fence(Ordering::SeqCst);
    if rd.writer_waiting.load(Ordering::Relaxed) != 0 {
        // SYNC POINT: writer woken. Pairs with the writer's Acquire load of
        // `writer_wake` before it sleeps: if it sees this bump, our cursor
        // store is visible to its re-check.
        rd.writer_wake.fetch_add(1, Ordering::Release);
        let _ = crate::sync::futex::wake_all(&rd.writer_wake);
    }
}

fn sweep(region: &Region) -> SweepReport {
    let mut report = SweepReport::default();
    let rd = region.readers();
    for (index, e) in region.entries() {
        // SYNC POINT: reader entry published (the start time read below is
        // the owner's).
        let state = e.state.load(Ordering::Acquire);
        let (pid, tag) = entry_parts(state);
        let dead = match tag {
            ENTRY_ACTIVE => !host::alive(pid, e.start_time.load(Ordering::Relaxed)),
            // A joining reader may not have written its start time yet: only
            // a pid that no longer exists counts as dead.
            ENTRY_CLAIMING => !host::exists(pid),
            _ => false,
        };
        if !dead {
            continue;
        }
        // The owner is dead: nobody else writes these fields until the
        // entry is free again, so read them first and free it by a CAS on
        // the exact owner, which fails if another sweep got there first.
        let was_gating = tag == ENTRY_ACTIVE && e.gating.load(Ordering::Relaxed) == GATING_YES;
        let was_parked = e.parked.load(Ordering::Relaxed) == 1;
        let name = read_name(&e.name);
        // SYNC POINT: reader entry released. Release: our reads of the dead
        // owner's fields above come before the next owner's writes (it
        // claims with an Acquire CAS). Acquire: pairs with `reader entry
        // published` of whichever owner wrote the word we replace.
        if e.state.compare_exchange(state, ENTRY_FREE, Ordering::AcqRel, Ordering::Relaxed).is_err() {
            continue;
        }
        if was_parked {
            // It died parked: take back its count, so the writer goes back
            // to making no system call when nobody sleeps. A count: no
            // ordering (see `Reader::park`).
            let _ = rd.waiters.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| w.checked_sub(1));
        }
        rd.swept.fetch_add(1, Ordering::Relaxed);
        // SYNC POINT: reader table changed. Release, not SeqCst, as in
        // `evict`: the `wake_writer` at the end covers a writer that waits.
        rd.table_epoch.fetch_add(1, Ordering::Release);
        report.readers_freed.push(FreedReader { index, pid, name, was_gating });
    }
    if region.writable {
        let h = region.header();
        // SYNC POINT: lease committed (the holder's start time is visible).
        let word = h.lease.load(Ordering::Acquire);
        let (pid, epoch, committed) = lease_parts(word);
        let dead = pid != 0
            && if committed {
                !host::alive(pid, h.lease_start_time.load(Ordering::Relaxed))
            } else {
                !host::exists(pid)
            };
        // SYNC POINT: lease released (pairs with the Acquire CAS in
        // `take_lease`; the Acquire half here with `lease committed`).
        if dead
            && h.lease.compare_exchange(word, lease_word(0, epoch, true), Ordering::AcqRel, Ordering::Relaxed).is_ok()
        {
            h.takeovers.fetch_add(1, Ordering::Relaxed);
            // (A flag the dead writer left up in `writer_waiting` is reset by
            // the next writer; resetting it here could clobber that writer's.)
            report.lease_released = Some(pid);
        }
    }
    wake_writer(region);
    report
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_ring_s_memory_is_its_two_files_and_what_its_options_promised() {
        let ns = Namespace::new(&format!("mem{}", std::process::id())).unwrap();
        let opts = RingOptions { capacity: 128, max_payload: 100, max_readers: 3, ..Default::default() };
        let ring = Ring::create(&ns, "m", &opts).unwrap();
        let on_disk = |p: PathBuf| std::fs::metadata(p).unwrap().len();
        let files = on_disk(ns.data_path("m")) + on_disk(ns.readers_path("m"));
        assert_eq!((ring.geometry().memory(), opts.memory()), (files, files));
        drop(ring);
        Ring::unlink(&ns, "m").unwrap();
        // Options not validated yet saturate instead of wrapping.
        assert_eq!(RingOptions { capacity: u64::MAX, ..Default::default() }.memory(), u64::MAX);
    }
}
