//! Counters of a fan-in ring and its lanes, for tools (`helixctl`) and
//! tests: read lock-free from the consumer's file, plus what each lane's
//! producer says of itself (its waits), read from its lane file.

use std::path::{Path, PathBuf};

use crate::shm::{self, Namespace};
use crate::sync::Ordering;

use super::files::{self, FanInGeometry, RingFiles};
use super::lane_file;
use super::layout::*;
use super::{FanIn, FanInError};

/// One lane, as the consumer and its producer count it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct LaneStats {
    /// Lane index.
    pub lane: usize,
    /// Whether the consumer reads a lane file here now.
    pub bound: bool,
    /// Lease epoch of the bound (or last) lane file.
    pub epoch: u64,
    /// Lease epochs this lane has had.
    pub leases: u64,
    /// The bound file's owner (kernel-attested).
    pub uid: u32,
    /// Its producer's pid (kernel-attested; 0 if unknown).
    pub pid: u32,
    /// Records consumed, every producer of this lane.
    pub records: u64,
    /// Payload bytes consumed.
    pub bytes: u64,
    /// Lane files dropped for breaking the protocol.
    pub faults: u64,
    /// Bytes published and not yet consumed (from the lane file; 0 if none).
    pub backlog: u64,
    /// Times the producer found the lane full (as it reports).
    pub full_waits: u64,
    /// Nanoseconds it waited for space (as it reports).
    pub wait_ns: u64,
    /// Whether a live process holds the bound lane file's lease (its
    /// byte-0 lock, from the kernel); false for a free lane.
    pub producer_alive: bool,
    /// Whether the bound lane's producer let it go (it is freed once
    /// drained).
    pub closed: bool,
}

/// A fan-in ring's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct FanInStats {
    /// The ring's identity.
    pub geometry: FanInGeometry,
    /// The consumer's pid (0: none attached).
    pub consumer_pid: u32,
    /// Whether a live process is the consumer: it holds the lock on the
    /// ring's file (from the kernel; a consumer killed leaves its pid).
    pub consumer_alive: bool,
    /// CLOCK_REALTIME ns when the consumer attached (0: never).
    pub consumer_since_ns: u64,
    /// Drain rounds that delivered records.
    pub rounds: u64,
    /// Times the consumer slept on the doorbell.
    pub sleeps: u64,
    /// Lane-file rescans.
    pub rescans: u64,
    /// Rescan requests that came sooner than the consumer's limit (16 at
    /// once, then one every 10 ms) allowed; served together later.
    pub rescans_refused: u64,
    /// Lanes dropped for breaking the protocol.
    pub faults: u64,
    /// Lanes freed after their producer left or died.
    pub reclaimed: u64,
    /// Every lane.
    pub lanes: Vec<LaneStats>,
}

/// A read-only look at a fan-in ring, for tools.
pub struct FanInView {
    pub(super) files: RingFiles,
}

impl FanInView {
    /// Opens fan-in ring `name` read-only.
    pub fn open(ns: &Namespace, name: &str) -> Result<FanInView, FanInError> {
        Ok(FanInView { files: files::open_ring_as(ns, name, false, false)? })
    }

    /// A snapshot of every counter.
    pub fn stats(&self) -> FanInStats {
        stats(&self.files)
    }

    /// The ring's geometry.
    pub fn geometry(&self) -> &FanInGeometry {
        &self.files.geometry
    }

    /// The ring's own file or doorbell, if one shrank under this view's
    /// mapping since it was opened: the figures then read as zeros, not
    /// the ring's.
    pub fn damage(&self) -> Option<PathBuf> {
        self.files.damaged()
    }

    /// The ring's folder.
    pub fn dir(&self) -> &Path {
        &self.files.dir
    }
}

impl FanIn {
    /// A snapshot of every counter.
    pub fn stats(&self) -> FanInStats {
        stats(self.files())
    }
}

/// Counts in `h.rescans_refused` the rescan requests of `bumps`, the
/// change of `attach_seq` since it was last counted. Producers bump it by
/// one a request; one that puts it back (it is a producer's to write) made
/// one request, as far as can be told, not 2^32 - 1 of them.
pub(super) fn count_refused(h: &FanInHeader, bumps: u32) {
    let refused = if bumps <= u32::MAX / 2 { u64::from(bumps) } else { 1 };
    h.rescans_refused.store(h.rescans_refused.load(Ordering::Relaxed).saturating_add(refused), Ordering::Relaxed);
}

fn stats(files: &RingFiles) -> FanInStats {
    let h = files.header();
    let lanes = (0..files.geometry.lanes as usize).map(|k| lane_stats(files, k)).collect();
    let c = |a: &crate::sync::AtomicU64| a.load(Ordering::Relaxed);
    FanInStats {
        geometry: files.geometry.clone(),
        consumer_pid: h.consumer_pid.load(Ordering::Relaxed),
        // The consumer holds its lease's lock while it lives (a tool takes
        // none): see `files::consumer_alive`.
        consumer_alive: super::files::consumer_alive(&files.dir, &files.ring_file).unwrap_or(false),
        consumer_since_ns: h.consumer_since_ns.load(Ordering::Relaxed),
        rounds: c(&h.rounds),
        sleeps: c(&h.sleeps),
        rescans: c(&h.rescans),
        rescans_refused: c(&h.rescans_refused),
        faults: c(&h.faults),
        reclaimed: c(&h.reclaimed),
        lanes,
    }
}

fn lane_stats(files: &RingFiles, k: usize) -> LaneStats {
    let st = files.state(k);
    let c = |a: &crate::sync::AtomicU64| a.load(Ordering::Relaxed);
    let bound = st.status.load(Ordering::Relaxed) == LANE_BOUND;
    let mut s = LaneStats {
        lane: k,
        bound,
        epoch: c(&st.epoch),
        leases: c(&st.leases),
        uid: st.uid.load(Ordering::Relaxed),
        pid: st.pid.load(Ordering::Relaxed),
        records: c(&st.records),
        bytes: c(&st.bytes),
        faults: c(&st.faults),
        ..Default::default()
    };
    // What the bound file's producer says of itself: only the file the
    // consumer bound (same epoch and inode), and none of it trusted beyond
    // being numbers.
    let Ok(Some(lf)) = lane_file::open_lane(&files.lane_paths[k], k, &files.geometry, files.consumer_uid) else {
        return s;
    };
    if !bound || lf.epoch != s.epoch || lf.judged.ino != st.ino.load(Ordering::Relaxed) {
        return s;
    }
    // SAFETY: `open_lane` checked the mapping is a whole lane file of the
    // ring's capacity, page aligned; its fields are read as atomics.
    let hdr = unsafe { lane_file::lane_view(&lf.map, lf.capacity) }.0;
    let (head, full_waits, wait_ns) = (c(&hdr.head), c(&hdr.full_waits), c(&hdr.wait_ns));
    let closed = hdr.closed.load(Ordering::Relaxed) == LANE_CLOSED;
    // A file shrunk under the mapping reads as zeros: not the producer's.
    if !lf.map.is_damaged() {
        s.backlog = head.saturating_sub(c(&st.tail)).min(files.geometry.lane_capacity);
        (s.full_waits, s.wait_ns, s.closed) = (full_waits, wait_ns, closed);
    }
    s.producer_alive = shm::live_lock_held(&lf.file).unwrap_or(false);
    s
}
