//! A reader joining a ring: claiming a free entry of the reader table,
//! filling it in, activating it and settling where its cursor starts
//! (`docs/abi.md` §4.5).

use std::sync::Arc;

use crate::layout::*;
use crate::sync::{fence, host, Ordering};

use super::super::sweep;
use super::{
    trusted_published, AttachError, Policy, Reader, ReaderCore, ReaderOptions, Region, Start, HEARTBEAT_EVERY,
};

impl Reader {
    /// Registers a reader on `region`: checks what can be checked before
    /// anything is claimed (so a refusal leaves no trace), claims an entry,
    /// fills it in and activates it.
    pub(crate) fn new(region: Arc<Region>, opts: &ReaderOptions) -> Result<Reader, AttachError> {
        if opts.name.len() > MAX_READER_NAME_LEN {
            return Err(AttachError::ReaderName { name: opts.name.clone() });
        }
        if let Start::At(seq) = opts.start {
            if seq > MAX_SEQ {
                return Err(AttachError::StartPastMax { seq });
            }
        }
        if let Some(d) = region.probe() {
            return Err(AttachError::Damaged(d));
        }
        let (pid, start_time) = host::identity();
        let published = trusted_published(&region).map_err(|p| untrusted_published(&region, p))?;
        let idx = claim_or_sweep(&region, pid)?;
        let block_ring = region.geometry.policy == Policy::Block;
        fill_entry(region.entry(idx), opts, pid, start_time, opts.gating && block_ring);
        let cursor = activate(&region, idx, pid, opts.start, published)?;
        Ok(Reader {
            core: ReaderCore {
                idx,
                cursor,
                released: cursor,
                frames: 0,
                lost: 0,
                overruns: 0,
                block_ring,
                heartbeat_at: HEARTBEAT_EVERY,
                pid,
                deferred: false,
            },
            region,
            wait: opts.wait,
        })
    }
}

/// Claims a free entry for process `pid`; if every entry is taken, sweeps
/// dead readers' entries and tries once more.
fn claim_or_sweep(region: &Region, pid: u32) -> Result<usize, AttachError> {
    if let Some(i) = claim_entry(region, pid) {
        return Ok(i);
    }
    sweep::sweep(region);
    claim_entry(region, pid)
        .ok_or_else(|| AttachError::ReaderTableFull { ring: region.name.clone(), max: region.geometry.max_readers })
}

/// Fills in the entry `e` this process claimed (CLAIMING): identity, name,
/// zeroed counters, clocks and the gating flag. Nobody reads these before
/// the activation publishes them.
fn fill_entry(e: &ReaderEntry, opts: &ReaderOptions, pid: u32, start_time: u64, gating: bool) {
    e.pid.store(pid, Ordering::Relaxed);
    e.start_time.store(start_time, Ordering::Relaxed);
    e.parked.store(0, Ordering::Relaxed);
    let mut name = [0u8; MAX_READER_NAME_LEN];
    name[..opts.name.len()].copy_from_slice(opts.name.as_bytes());
    for (w, c) in e.name.iter().zip(name.chunks_exact(8)) {
        w.store(u64::from_ne_bytes(c.try_into().unwrap()), Ordering::Relaxed);
    }
    for counter in [&e.overruns, &e.lost, &e.frames] {
        counter.store(0, Ordering::Relaxed);
    }
    e.heartbeat_ns.store(host::now_ns(), Ordering::Relaxed);
    // Never the entry's last value, even from a coarse or stepped clock:
    // a writer tells a new join from a reader it demoted by it (§4.10).
    let last = e.joined_ns.load(Ordering::Relaxed);
    e.joined_ns.store(host::realtime_ns().max(last.wrapping_add(1)), Ordering::Relaxed);
    e.gating.store(if gating { GATING_YES } else { GATING_NO }, Ordering::Relaxed);
}

/// The first sequence a reader starting at `start` reads, with `published`
/// frames published on a ring of `cap` slots.
fn start_at(start: Start, published: u64, cap: u64) -> u64 {
    match start {
        Start::Newest => published + 1,
        Start::Oldest => (published + 1).saturating_sub(cap).max(1),
        Start::At(seq) => seq.max(1),
    }
}

/// Activates the filled-in entry `idx` (CLAIMING → ACTIVE) of process `pid`
/// and returns the cursor it starts at. `published` was read before the
/// claim.
fn activate(region: &Region, idx: usize, pid: u32, start: Start, published: u64) -> Result<u64, AttachError> {
    let e = region.entry(idx);
    let cap = region.capacity();
    // A conservative cursor first (from `published` read before the
    // claim), so a writer that scans the table the moment the entry
    // turns active never runs past frames we want.
    let first = start_at(start, published, cap);
    e.cursor.store(first, Ordering::Relaxed);
    // SYNC POINT: reader entry published. Pairs with the Acquire loads of
    // `state` in `Writer::gate`, sweeps and the tools. Only a sweep that
    // found us dead could have changed our CLAIMING state.
    if e.state
        .compare_exchange(
            entry_state(pid, ENTRY_CLAIMING),
            entry_state(pid, ENTRY_ACTIVE),
            Ordering::Release,
            Ordering::Relaxed,
        )
        .is_err()
    {
        return Err(AttachError::Evicted { ring: region.name.clone(), index: idx });
    }
    // SYNC POINT: reader table changed. Release: a writer whose Acquire
    // load in `Writer::reserve` sees the new epoch rescans and sees our
    // entry active, with its gating flag and conservative cursor.
    region.readers().table_epoch.fetch_add(1, Ordering::Release);
    // SYNC POINT: join Dekker. This fence pairs with the SeqCst fence at
    // the end of every publish: either the writer's next gate check sees
    // the new epoch, or the load below sees everything it published. So
    // at most the batch it had already reserved is written without
    // regard to us. For `Newest` none of that batch touches our cursor's
    // slot; an `Oldest` or `At` reader may find its first frames
    // overwritten by it, which its first read reports as an overrun.
    // Our epoch store must be ordered before our later load of
    // `published` (a store before a load): only SeqCst fences on both
    // sides do that; Acquire/Release cannot. (The fence is what makes
    // it; the RMW above need not be SeqCst itself.)
    fence(Ordering::SeqCst);
    let cursor = match start {
        Start::At(_) => first,
        // (A value that turned untrustworthy since the check above is
        // not followed.)
        _ => trusted_published(region).map_or(first, |p| first.max(start_at(start, p, cap))),
    };
    // SYNC POINT: slot released to the writer.
    e.cursor.store(cursor, Ordering::Release);
    Ok(cursor)
}

/// The join's error for a `published` of `p` that [`trusted_published`]
/// refused.
fn untrusted_published(region: &Region, p: u64) -> AttachError {
    if let Err(e) = super::super::check_published(&region.path, p) {
        return e;
    }
    let in_slot = region.slot(p).header.stamp.load(Ordering::Relaxed) & !STAMP_WRITING;
    AttachError::BadField {
        path: region.path.clone(),
        field: "published",
        found: p,
        expected: format!("a sequence the slots hold (the slot of {p} holds {in_slot})"),
    }
}

/// Claims a free entry for process `pid`: FREE → pid|CLAIMING.
fn claim_entry(region: &Region, pid: u32) -> Option<usize> {
    let claiming = entry_state(pid, ENTRY_CLAIMING);
    region.entries().find_map(|(i, e)| {
        // SYNC POINT: reader entry released. The Acquire half: the previous
        // owner (or the sweep that freed the entry) is done with it before
        // we write it. (The Release half orders nothing anyone relies on:
        // the fields are published by the activation CAS.)
        e.state.compare_exchange(ENTRY_FREE, claiming, Ordering::AcqRel, Ordering::Relaxed).ok().map(|_| i)
    })
}
