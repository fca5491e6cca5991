//! The ring: one writer, many readers, fixed slots in shared memory.
//!
//! See the crate documentation for the guarantees, and `docs/abi.md` for
//! the protocol as another language would implement it.

mod damage;
mod error;
mod frame;
mod lifecycle;
mod options;
mod reader;
mod region;
mod stats;
mod sweep;
mod writer;

#[cfg(all(test, loom))]
mod loom_tests;

use std::sync::Arc;
use std::time::Duration;

use crate::layout::*;
use crate::shm::Namespace;
use crate::sync::Ordering;

pub use crate::shm::RingFile;
pub use damage::{Damaged, RepairError, RingName};
pub use error::{
    AttachError, CreateError, ForeignRing, LeaseError, Overrun, Owners, PublishError, ReadError, TryReadError,
};
pub use frame::{Frame, FrameError, FrameInfo, FrameRef};
#[doc(hidden)]
pub use lifecycle::create_hook;
pub use lifecycle::{live_writer, scan, RingEntry, RingState};
pub use options::{Policy, Preset, RingOptions};
pub use reader::{Reader, ReaderOptions, Start};
pub use region::Geometry;
pub use stats::{LeaseInfo, ReaderStats, RingStats};
pub use sweep::{EvictError, FreedReader, SweepReport};
pub use writer::{Claim, Writer};

pub(crate) use error::check_published;
pub(crate) use frame::{load_bytes, store_bytes};
pub(crate) use region::Region;
pub(crate) use stats::lag;

/// Largest number of slots a ring may have (2^32).
pub const MAX_CAPACITY: u64 = 1 << 32;
/// Largest payload of one frame (16 MiB).
pub const MAX_PAYLOAD: u32 = 16 << 20;
/// Largest reader table.
pub const MAX_READERS: u32 = 1024;

/// A read-write attachment to a ring: what the creator, the daemon and a
/// writer hold. Readers and tools attach read-only through
/// [`Reader::attach`] and [`RingView::attach`]. A `Ring` is a view too: it
/// dereferences to [`RingView`] for the name, geometry, counters, sweeps
/// and damage checks.
#[derive(Clone)]
pub struct Ring {
    view: RingView,
}

impl From<Region> for Ring {
    fn from(region: Region) -> Ring {
        Ring { view: RingView { region: Arc::new(region) } }
    }
}

impl std::ops::Deref for Ring {
    type Target = RingView;

    fn deref(&self) -> &RingView {
        &self.view
    }
}

impl Ring {
    /// Creates a new ring `name` in `ns`; fails if it exists. Crash-atomic:
    /// the ring appears whole or not at all, and what a creator that died
    /// left of a half-made ring is replaced (see [`scan`] and
    /// `docs/abi.md` §3.1). Refused with [`CreateError::FanInNamed`] while
    /// a fan-in ring has that name: one name is one ring.
    pub fn create(ns: &Namespace, name: &str, opts: &RingOptions) -> Result<Ring, CreateError> {
        Ok(Ring::from(region::create(ns, name, opts)?))
    }

    /// Replaces whatever is at `name` (a ring of another geometry, a
    /// corrupt one, one file of a ring) with a new, empty ring: the
    /// sequence starts again at 1. Refused with [`CreateError::LiveWriter`]
    /// while a live process holds the existing ring's writer lease; the
    /// lease is held during the replacement, so no writer can take it
    /// meanwhile. Processes still attached to the old ring keep its memory
    /// and see no new frames.
    pub fn recreate(ns: &Namespace, name: &str, opts: &RingOptions) -> Result<Ring, CreateError> {
        Ok(Ring::from(lifecycle::recreate(ns, name, opts)?))
    }

    /// Attaches read-write to an existing ring.
    pub fn open(ns: &Namespace, name: &str) -> Result<Ring, AttachError> {
        Ok(Ring::from(region::attach(ns, name, true)?))
    }

    /// Removes a ring's files. Processes attached keep their mappings until
    /// they detach; new attaches fail.
    pub fn unlink(ns: &Namespace, name: &str) -> Result<(), AttachError> {
        region::unlink(ns, name)
    }

    /// Takes the writer lease; see [`Writer`].
    pub fn writer(&self) -> Result<Writer, LeaseError> {
        Writer::new(self.view.region.clone())
    }

    /// Gives a ring whose control region (`@readers`) was destroyed a new,
    /// empty one, keeping its data region: the frames, the sequence (the
    /// next writer continues it) and the writer lease epoch survive; every
    /// reader must join again.
    ///
    /// For the ring's owner (the daemon), after [`RingView::damage`] reported
    /// [`RingFile::Readers`], once every [`Writer`] of the ring in the
    /// process is dropped: the repair holds the writer lease while it
    /// works, so it fails with [`RepairError::Lease`] while a live writer
    /// holds it. It creates the new control file beside the old one (same
    /// mode and group), renames it into place, and truncates the old file,
    /// so every process still attached to it reports [`Damaged`] at its
    /// next access and attaches again. If the control region is intact it
    /// only attaches. A ring whose *data* region is damaged cannot be
    /// repaired ([`RepairError::Attach`]): unlink and create it. A new
    /// control region broken again before the repair attached to it
    /// ([`RepairError::BrokenAgain`]) is a reason to try again.
    pub fn repair_readers(ns: &Namespace, name: &str) -> Result<Ring, RepairError> {
        Ok(Ring::from(damage::repair_readers(ns, name)?))
    }
}

/// What [`RingView::under_name`] found under a ring's name.
pub enum UnderName {
    /// The ring asked about, attached again here.
    Same(RingView),
    /// Another ring (another `created_ns`), attached here.
    Replaced(RingView),
    /// No ring: its files were removed.
    Gone,
    /// Nothing to go by for now (a ring being created, a damaged or
    /// unreadable one): look again later.
    Unknown(AttachError),
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

    /// What is under `name` now, against the ring created at
    /// `created_ns` that a caller attached earlier: the same ring, another
    /// one made under the name since, or none. A program that follows a
    /// name (the ledger, the bridge, `helixctl tail -f`) asks this every
    /// so often, since a ring replaced or removed under it sends nothing
    /// more to the attachments of the old one.
    pub fn under_name(ns: &Namespace, name: &str, created_ns: u64) -> UnderName {
        match RingView::attach(ns, name) {
            Ok(v) if v.geometry().created_ns == created_ns => UnderName::Same(v),
            Ok(v) => UnderName::Replaced(v),
            Err(AttachError::NotFound { .. }) => UnderName::Gone,
            Err(e) => UnderName::Unknown(e),
        }
    }

    /// The ring's name.
    pub fn name(&self) -> &str {
        &self.region.name
    }

    /// The ring's geometry.
    pub fn geometry(&self) -> &Geometry {
        &self.region.geometry
    }

    /// Registers a reader on this attachment's mapping: the ring judged
    /// through this attachment (its owner, its creation time) is the one
    /// read, whatever the name means by now.
    pub fn reader(&self, opts: &ReaderOptions) -> Result<Reader, AttachError> {
        Reader::new(self.region.clone(), opts)
    }

    /// The uid that owns the data file mapped here: who can write its
    /// frames (read from the open file, not from the name).
    pub fn owner_uid(&self) -> u32 {
        self.region.owner
    }

    /// `Err` naming the file and its owner unless the data file mapped here
    /// is owned by this process's effective uid or root. A program that
    /// records or acts on what a ring carries (the ledger, the twin, the
    /// bridge) follows only such rings: anyone may create a ring under an
    /// expected name while its real writer is down.
    pub fn check_owner(&self) -> Result<(), ForeignRing> {
        self.region.check_owner_in(&Owners::MINE)
    }

    /// [`RingView::check_owner`] believing `owners`: an operator's tool
    /// reading the services' rings believes their user too.
    pub fn check_owner_in(&self, owners: &Owners) -> Result<(), ForeignRing> {
        self.region.check_owner_in(owners)
    }

    /// The highest sequence published so far (0: none), as the header
    /// says; one load, without the reader-table walk of
    /// [`stats`](Self::stats). A hostile writer can store anything here:
    /// a reader joining on the strength of it still checks each slot.
    pub fn published(&self) -> u64 {
        // SYNC POINT: published count (pairs with the commit's Release).
        self.region.header().published.load(Ordering::Acquire)
    }

    /// A lock-free snapshot of every counter.
    pub fn stats(&self) -> RingStats {
        stats::read(&self.region)
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

    /// Frees the entries of dead readers (the control region is writable
    /// to every attached process; a freed entry is not demoted: nothing
    /// gates on a free entry), and, through a read-write attachment
    /// ([`Ring`]), releases a dead writer's lease.
    pub fn sweep(&self) -> SweepReport {
        sweep::sweep(&self.region)
    }

    /// Whether a file of the ring shrank under this attachment (see
    /// [`Damaged`]). Touches the first and last page of both mappings, so
    /// a shrink no access has met yet is found now; no system call unless
    /// a file did shrink. Cheap enough for a daemon's periodic check.
    pub fn is_damaged(&self) -> bool {
        self.region.probe().is_some()
    }

    /// Like [`is_damaged`](Self::is_damaged), naming the file that shrank.
    pub fn damage(&self) -> Option<Damaged> {
        self.region.probe()
    }

    /// Why a process attaching to this ring now would refuse its control
    /// region, judged on the control file mapped here, which any reader
    /// may write: grown (tmpfs takes any sparse size), or its header
    /// written over. This attachment works on; new readers cannot join
    /// until the ring's owner repairs it ([`Ring::repair_readers`]).
    /// `None` if they can, or if the name holds another file now.
    pub fn control_refusal(&self) -> Option<AttachError> {
        self.region.control_refusal()
    }

    /// Removes reader entry `index`. A live reader is refused unless `force`;
    /// a forced eviction stops it gating, and its next join fails loudly.
    pub fn evict(&self, index: usize, force: bool) -> Result<FreedReader, EvictError> {
        sweep::evict(&self.region, index, None, force)
    }

    /// [`evict`](Self::evict), only if entry `index` still belongs to
    /// process `pid`, as the caller found it (looking the reader up by its
    /// name, say): if that reader left meanwhile and another took its
    /// entry, the other is not evicted in its place
    /// ([`EvictError::Raced`]).
    pub fn evict_reader(&self, index: usize, pid: u32, force: bool) -> Result<FreedReader, EvictError> {
        sweep::evict(&self.region, index, Some(pid), force)
    }
}

/// The monotonic-clock deadline `timeout` from now (saturating).
pub(crate) fn deadline(timeout: Duration) -> u64 {
    crate::sync::host::now_ns().saturating_add(timeout.as_nanos().min(u64::MAX as u128) as u64)
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
