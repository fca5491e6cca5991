//! What tools read: a lock-free snapshot of a ring's counters, its lease
//! and every registered reader.

use crate::layout::*;
use crate::sync::{host, AtomicU64, Ordering};

use super::{Policy, Region};

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
    /// Overrun events over all current readers (saturating: each count is
    /// its reader's to write, so any number may stand there).
    pub fn overruns(&self) -> u64 {
        self.readers.iter().fold(0u64, |n, r| n.saturating_add(r.overruns))
    }
}

/// Frames published and not consumed by a reader at `cursor`. Both words
/// are written by other processes: saturating, so no value can overflow.
pub(crate) fn lag(published: u64, cursor: u64) -> u64 {
    published.saturating_add(1).saturating_sub(cursor)
}

/// A reader entry's name, as it registered it.
pub(crate) fn read_name(words: &[AtomicU64; 4]) -> String {
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

/// Reads every counter of the ring in `region`, without locks.
pub(super) fn read(region: &Region) -> RingStats {
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
