//! Freeing what dead processes left in a ring: a sweep frees dead readers'
//! entries and a dead writer's lease; an eviction frees one entry on an
//! operator's word.

use crate::layout::*;
use crate::sync::{host, Ordering};

use super::stats::read_name;
use super::writer::holder_alive;
#[cfg(doc)]
use super::RingView;
use super::{wake_writer, Region};

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

/// Frees reader entry `index` (see [`RingView::evict`]); only if its
/// owner is process `owner`, if given ([`RingView::evict_reader`]).
pub(super) fn evict(region: &Region, index: usize, owner: Option<u32>, force: bool) -> Result<FreedReader, EvictError> {
    if index >= region.geometry.max_readers as usize {
        return Err(EvictError::NotInUse { index });
    }
    let e = region.entry(index);
    // SYNC POINT: reader entry published (the fields read below are the
    // owner's).
    let state = e.state.load(Ordering::Acquire);
    let (pid, tag) = entry_parts(state);
    if !is_owned(tag) {
        return Err(EvictError::NotInUse { index });
    }
    // The reader the caller looked up left, and another took its entry:
    // not the one meant. (`free_entry` below frees it only by a CAS on the
    // state read here, so a change after this look fails too.)
    if owner.is_some_and(|owner| owner != pid) {
        return Err(EvictError::Raced { index });
    }
    let name = read_name(&e.name);
    let alive = owner_alive(e, pid, tag);
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
    let freed = free_entry(region, index, state, name, !alive).ok_or(EvictError::Raced { index })?;
    wake_writer(region);
    Ok(freed)
}

/// Frees dead readers' entries and a dead writer's lease (see
/// [`RingView::sweep`]).
pub(super) fn sweep(region: &Region) -> SweepReport {
    let mut report = SweepReport::default();
    for (index, e) in region.entries() {
        // SYNC POINT: reader entry published (the start time read below is
        // the owner's).
        let state = e.state.load(Ordering::Acquire);
        let (pid, tag) = entry_parts(state);
        if !is_owned(tag) || owner_alive(e, pid, tag) {
            continue;
        }
        // The owner is dead: nobody else writes its fields until the entry
        // is free again, so read them first and free it by a CAS on the
        // exact owner, which fails if another sweep got there first.
        let name = read_name(&e.name);
        report.readers_freed.extend(free_entry(region, index, state, name, true));
    }
    if region.writable {
        report.lease_released = release_dead_lease(region.header());
    }
    wake_writer(region);
    report
}

/// Whether an entry's tag says a reader owns it (joining or registered).
fn is_owned(tag: u32) -> bool {
    tag == ENTRY_ACTIVE || tag == ENTRY_CLAIMING
}

/// Whether the owner `pid` of entry `e` (tag `tag`, owned) is alive. A
/// joining reader may not have written its start time yet: then only a
/// pid that no longer exists counts as dead.
fn owner_alive(e: &ReaderEntry, pid: u32, tag: u32) -> bool {
    if tag == ENTRY_ACTIVE {
        host::alive(pid, e.start_time.load(Ordering::Relaxed))
    } else {
        host::exists(pid)
    }
}

/// Frees entry `index`, whose owner was seen as `state` and registered as
/// `name`, and counts it; `None` if the entry changed meanwhile (its reader
/// left, or another sweep or eviction got there first). `owner_dead`: a
/// dead owner that was parked leaves its count in `waiters`, taken back
/// here so the writer goes back to making no system call when nobody
/// sleeps.
fn free_entry(region: &Region, index: usize, state: u32, name: String, owner_dead: bool) -> Option<FreedReader> {
    let e = region.entry(index);
    let (pid, tag) = entry_parts(state);
    let was_gating = tag == ENTRY_ACTIVE && e.gating.load(Ordering::Relaxed) == GATING_YES;
    // A joining owner has not parked: a `parked` word of 1 in its entry is
    // the last owner's, whose count was taken back when it was freed.
    let was_parked = tag == ENTRY_ACTIVE && e.parked.load(Ordering::Relaxed) == 1;
    // SYNC POINT: reader entry released. Release: our reads of the owner's
    // fields above come before the next owner's writes (it claims with an
    // Acquire CAS). Acquire: pairs with `reader entry published` of
    // whichever owner wrote the word we replace.
    if e.state.compare_exchange(state, ENTRY_FREE, Ordering::AcqRel, Ordering::Relaxed).is_err() {
        return None;
    }
    let rd = region.readers();
    if was_parked && owner_dead {
        // A count: no ordering (see `Reader::park`).
        let _ = rd.waiters.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| w.checked_sub(1));
    }
    rd.swept.fetch_add(1, Ordering::Relaxed);
    // SYNC POINT: reader table changed. Release: a writer that sees the new
    // epoch (Acquire, `Writer::reserve`) rescans and sees the entry FREE.
    // Not SeqCst: a writer that misses the bump keeps a tighter gate than
    // needed, and rescans anyway when it waits, which the caller's
    // `wake_writer` covers.
    rd.table_epoch.fetch_add(1, Ordering::Release);
    Some(FreedReader { index, pid, name, was_gating })
}

/// Releases the lease of a dead writer; returns its pid. (A flag the dead
/// writer left up in `writer_waiting` is reset by the next writer;
/// resetting it here could clobber that writer's.)
fn release_dead_lease(h: &RingHeader) -> Option<u32> {
    // SYNC POINT: lease committed (the holder's start time is visible).
    let word = h.lease.load(Ordering::Acquire);
    let (pid, epoch, committed) = lease_parts(word);
    if pid == 0 || holder_alive(h, pid, committed) {
        return None;
    }
    // SYNC POINT: lease released (pairs with the Acquire CAS in
    // `take_lease`; the Acquire half here with `lease committed`).
    h.lease.compare_exchange(word, lease_word(0, epoch, true), Ordering::AcqRel, Ordering::Relaxed).ok()?;
    h.takeovers.fetch_add(1, Ordering::Relaxed);
    Some(pid)
}
