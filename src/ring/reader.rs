//! The reading side: cursors, reading in place and in batches, overrun
//! detection, releasing slots to the writer. Joining the ring is in
//! `join.rs`, waiting for a frame in `wait.rs`.

mod join;
mod published;
mod wait;

use std::sync::Arc;
use std::time::Duration;

use bytemuck::Pod;

use crate::layout::*;
use crate::shm::Namespace;
use crate::sync::{host, Ordering};
use crate::wait::WaitStrategy;

use super::frame::{Frame, FrameError, FrameInfo, FrameRef};
use super::{region, AttachError, Damaged, Geometry, Overrun, Policy, ReadError, Region, TryReadError};
use published::{published_frame, trusted_published};

/// Where a new reader starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Start {
    /// With the first frame published after it joined.
    #[default]
    Newest,
    /// With the oldest frame still in the ring.
    Oldest,
    /// At this sequence (a restarting consumer resuming). If that frame is
    /// gone, the first read reports the overrun with the exact loss.
    At(u64),
}

/// How a reader registers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReaderOptions {
    /// Shown by tools; at most 32 bytes.
    pub name: String,
    /// On a `block` ring, hold the writer back until this reader consumed a
    /// slot (ignored on `overwrite` rings).
    pub gating: bool,
    /// Where to start.
    pub start: Start,
    /// How blocking reads wait.
    pub wait: WaitStrategy,
}

impl Default for ReaderOptions {
    fn default() -> Self {
        let name = std::env::current_exe()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "reader".into());
        ReaderOptions {
            name: truncate(&name, MAX_READER_NAME_LEN),
            gating: false,
            start: Start::Newest,
            wait: WaitStrategy::default(),
        }
    }
}

impl ReaderOptions {
    /// Options with this name, the rest default.
    pub fn named(name: &str) -> Self {
        ReaderOptions { name: name.to_owned(), ..Default::default() }
    }
}

fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// The reader's private state; separate from the region so that a borrowed
/// [`Frame`] can hold the region shared and this exclusively.
pub(crate) struct ReaderCore {
    idx: usize,
    cursor: u64,
    /// The cursor last shown to the writer (this reader's own copy: the
    /// entry's, any process that may attach can write).
    released: u64,
    frames: u64,
    lost: u64,
    overruns: u64,
    block_ring: bool,
    /// Frame count at which the next heartbeat is due.
    heartbeat_at: u64,
    pid: u32,
    /// The cursor is shown to the writer only by [`Reader::release`].
    deferred: bool,
}

/// A reading reader refreshes its heartbeat at least every this many frames.
const HEARTBEAT_EVERY: u64 = 4096;

impl ReaderCore {
    /// Moves the cursor to `next` after consuming `n` frames.
    #[inline]
    pub(crate) fn consumed(&mut self, region: &Region, next: u64, n: u64) {
        self.cursor = next;
        self.frames += n;
        let e = region.entry(self.idx);
        e.frames.store(self.frames, Ordering::Relaxed);
        if self.frames >= self.heartbeat_at {
            self.heartbeat_at = self.frames + HEARTBEAT_EVERY;
            e.heartbeat_ns.store(host::now_ns(), Ordering::Relaxed);
        }
        if !self.deferred {
            self.release(region, self.cursor);
        }
    }

    /// Shows the writer `upto`, at most the cursor and not before what was
    /// released: every slot before it may be reused.
    #[inline]
    pub(crate) fn release(&mut self, region: &Region, upto: u64) {
        debug_assert!(self.released <= upto && upto <= self.cursor);
        let e = region.entry(self.idx);
        self.released = upto;
        // SYNC POINT: slot released to the writer. Pairs with the Acquire
        // load of cursors in `Writer::gate`; our payload loads happen before
        // the writer's next stores to these slots.
        e.cursor.store(upto, Ordering::Release);
        if self.block_ring && e.gating.load(Ordering::Relaxed) == GATING_YES {
            super::wake_writer(region);
        }
    }

    /// Classifies a slot whose stamp is not `seq`.
    #[inline]
    fn not_ready(&mut self, region: &Region, seq: u64, stamp: u64) -> TryReadError {
        // The stamp may have been read from zeros (a fault just now).
        if let Some(d) = region.damaged() {
            return TryReadError::Damaged(d);
        }
        if stamp & !STAMP_WRITING <= seq {
            // An older lap's frame, or `seq` itself still being written.
            TryReadError::Empty
        } else {
            self.overrun(region, seq, stamp)
        }
    }

    /// The slot of `seq` holds a newer sequence: skip to the oldest frame
    /// that can still be intact and report exactly what was lost.
    fn overrun(&mut self, region: &Region, seq: u64, stamp: u64) -> TryReadError {
        let in_slot = stamp & !STAMP_WRITING;
        if in_slot <= seq {
            return TryReadError::Empty;
        }
        let newest_in_slot = if stamp & STAMP_WRITING != 0 { in_slot - 1 } else { in_slot };
        // A `published` the slots do not bear out is not followed: resuming
        // at a sequence no writer will reach would wait for ever. Nor is a
        // stamp more than a ring past a trusted `published`: no claim
        // reaches further, and one stamp a peer rewrote (and put back)
        // would send the reader to a sequence no writer reaches.
        let newest = trusted_published(region)
            .map_or(newest_in_slot, |p| p.max(newest_in_slot.min(p.saturating_add(region.capacity()))));
        let resume = (seq + 1).max((newest + 1).saturating_sub(region.capacity()));
        let lost = resume - seq;
        self.overruns += 1;
        self.lost += lost;
        let e = region.entry(self.idx);
        e.overruns.store(self.overruns, Ordering::Relaxed);
        e.lost.store(self.lost, Ordering::Relaxed);
        self.cursor = resume;
        if !self.deferred {
            self.release(region, self.cursor);
        }
        TryReadError::Overrun(Overrun { lost, resume_at: resume })
    }

    /// The slot holding the cursor, and whether its frame is published.
    #[inline]
    fn ready(&self, region: &Region) -> bool {
        // SYNC POINT: slot payload visible to readers.
        let stamp = region.slot(self.cursor).header.stamp.load(Ordering::Acquire);
        stamp == self.cursor || stamp & !STAMP_WRITING > self.cursor
    }
}

/// A registered reader with its own cursor. Dropping it unregisters it.
///
/// Non-blocking calls are `try_*`; plain calls wait with the reader's
/// [`WaitStrategy`]; `*_timeout` calls wait at most that long.
pub struct Reader {
    region: Arc<Region>,
    core: ReaderCore,
    wait: WaitStrategy,
}

impl Reader {
    /// Attaches to ring `name` in `ns` and registers. The data region is
    /// mapped read-only.
    pub fn attach(ns: &Namespace, name: &str, opts: &ReaderOptions) -> Result<Reader, AttachError> {
        Reader::new(Arc::new(region::attach(ns, name, false)?), opts)
    }

    /// Copies the next frame into `buf` without waiting.
    #[inline]
    pub fn try_read(&mut self, buf: &mut [u8]) -> Result<FrameInfo, TryReadError> {
        let frame = self.try_peek()?;
        match frame.copy_to(buf) {
            Ok(_) => Ok(frame.info()),
            Err(FrameError::Overwritten { .. }) => {
                drop(frame);
                Err(self.overrun_now())
            }
            Err(e) => {
                // Not consumed: the caller may retry with a larger buffer.
                frame.inner.torn.set(true);
                Err(TryReadError::Frame(e))
            }
        }
    }

    /// Copies the next frame into `buf`, waiting for it.
    #[inline]
    pub fn read(&mut self, buf: &mut [u8]) -> Result<FrameInfo, ReadError> {
        self.wait_ready(None)?;
        self.try_read(buf).map_err(ReadError::from)
    }

    /// Copies the next frame into `buf`, waiting at most `timeout`.
    pub fn read_timeout(&mut self, buf: &mut [u8], timeout: Duration) -> Result<FrameInfo, ReadError> {
        self.wait_ready_for(timeout)?;
        self.try_read(buf).map_err(ReadError::from)
    }

    /// Reads the next frame as a `T` without waiting. A frame of another size
    /// is consumed and reported as [`FrameError::WrongSize`].
    #[inline]
    pub fn try_read_pod<T: Pod>(&mut self) -> Result<(u64, T), TryReadError> {
        let frame = self.try_peek()?;
        match frame.read::<T>() {
            Ok(v) => Ok((frame.seq(), v)),
            Err(FrameError::Overwritten { .. }) => {
                drop(frame);
                Err(self.overrun_now())
            }
            Err(e) => Err(TryReadError::Frame(e)),
        }
    }

    /// Reads the next frame as a `T`, waiting for it.
    #[inline]
    pub fn read_pod<T: Pod>(&mut self) -> Result<(u64, T), ReadError> {
        self.wait_ready(None)?;
        self.try_read_pod().map_err(ReadError::from)
    }

    /// Reads the next frame as a `T`, waiting at most `timeout`.
    pub fn read_pod_timeout<T: Pod>(&mut self, timeout: Duration) -> Result<(u64, T), ReadError> {
        self.wait_ready_for(timeout)?;
        self.try_read_pod().map_err(ReadError::from)
    }

    /// Borrows the next frame in place without waiting; dropping the
    /// [`Frame`] consumes it.
    #[inline]
    pub fn try_peek(&mut self) -> Result<Frame<'_>, TryReadError> {
        let seq = self.core.cursor;
        let region: &Region = &self.region;
        if let Some(d) = region.damaged() {
            return Err(TryReadError::Damaged(d));
        }
        let inner = published_frame(region, seq).map_err(|stamp| self.core.not_ready(region, seq, stamp))?;
        Ok(Frame { inner, region, core: &mut self.core })
    }

    /// Borrows the next frame in place, waiting for it.
    #[inline]
    pub fn peek(&mut self) -> Result<Frame<'_>, ReadError> {
        self.wait_ready(None)?;
        self.try_peek().map_err(ReadError::from)
    }

    /// Borrows the next frame in place, waiting at most `timeout`.
    pub fn peek_timeout(&mut self, timeout: Duration) -> Result<Frame<'_>, ReadError> {
        self.wait_ready_for(timeout)?;
        self.try_peek().map_err(ReadError::from)
    }

    /// Hands up to `max` available frames to `f` in order, then moves the
    /// cursor once. Returns how many were consumed; stops early at a frame
    /// that `f` found overwritten (the next call reports the overrun). With
    /// nothing available it returns the reason, like [`Reader::try_read`].
    #[inline]
    pub fn try_read_batch(&mut self, max: usize, mut f: impl FnMut(&FrameRef<'_>)) -> Result<usize, TryReadError> {
        self.batch(max, |fr| {
            f(fr);
            true
        })
    }

    /// Like [`Reader::try_read_batch`], ending the batch before the first
    /// frame `f` returns `false` for (that frame stays unread, for the next
    /// call). A reader of a ring that carries several frame kinds takes a
    /// run of one kind at a time this way (the Python package's
    /// `read_batch`).
    #[inline]
    pub fn try_read_batch_while(
        &mut self,
        max: usize,
        f: impl FnMut(&FrameRef<'_>) -> bool,
    ) -> Result<usize, TryReadError> {
        self.batch(max, f)
    }

    /// Copies up to `out.len()` consecutive frames of type `T`, moving the
    /// cursor once. Stops before a frame of another size (the next call
    /// consumes it and reports [`FrameError::WrongSize`]) or an overwritten
    /// one (the next call reports the overrun).
    #[inline]
    pub fn try_read_batch_pod<T: Pod>(&mut self, out: &mut [T]) -> Result<usize, TryReadError> {
        let mut bad = None;
        let mut i = 0;
        let taken = self.batch(out.len(), |f| match f.read::<T>() {
            Ok(v) => {
                out[i] = v;
                i += 1;
                true
            }
            Err(e) => {
                if let FrameError::WrongSize { .. } = e {
                    bad = Some(e);
                }
                false
            }
        })?;
        match bad {
            Some(e) if taken == 0 => {
                self.core.consumed(&self.region, self.core.cursor + 1, 1);
                Err(TryReadError::Frame(e))
            }
            _ => Ok(taken),
        }
    }

    /// The batch loop: `take` returns whether to consume the frame it saw;
    /// the first frame not taken (or not published) ends the batch.
    #[inline]
    fn batch(&mut self, max: usize, mut take: impl FnMut(&FrameRef<'_>) -> bool) -> Result<usize, TryReadError> {
        let region: &Region = &self.region;
        if let Some(d) = region.damaged() {
            return Err(TryReadError::Damaged(d));
        }
        let start = self.core.cursor;
        let mut n = 0u64;
        while (n as usize) < max {
            let seq = start + n;
            let fr = match published_frame(region, seq) {
                Ok(fr) => fr,
                Err(stamp) if n == 0 => return Err(self.core.not_ready(region, seq, stamp)),
                Err(_) => break,
            };
            // A frame counts as consumed only if it was intact throughout,
            // whatever the callback looked at.
            if !take(&fr) || !fr.is_intact() {
                if n == 0 && fr.torn.get() {
                    return Err(self.overrun_now());
                }
                break;
            }
            n += 1;
        }
        if n > 0 {
            self.core.consumed(region, start + n, n);
        }
        Ok(n as usize)
    }

    /// Re-classifies the frame at the cursor after a failed validation.
    fn overrun_now(&mut self) -> TryReadError {
        let seq = self.core.cursor;
        // SYNC POINT: slot payload visible to readers.
        let stamp = self.region.slot(seq).header.stamp.load(Ordering::Acquire);
        // A copy torn by a fault read zeros, not a newer frame.
        if let Some(d) = self.region.damaged() {
            return TryReadError::Damaged(d);
        }
        self.core.overrun(&self.region, seq, stamp)
    }

    /// With `deferred`, reading no longer frees slots: the cursor the writer
    /// (and a gating check) sees moves only when [`Reader::release`] is
    /// called. A consumer that must make frames durable first (the ledger)
    /// reads a batch, writes it out, then releases it, so a crash in between
    /// leaves the frames in the ring for its successor. Turning it off
    /// releases at once. Held frames count against the ring's capacity and
    /// the stall timeout: release at least that often.
    pub fn set_deferred_release(&mut self, deferred: bool) {
        self.core.deferred = deferred;
        if !deferred {
            self.release();
        }
    }

    /// Frees every slot read so far for the writer (see
    /// [`Reader::set_deferred_release`]; without it reads release at once).
    pub fn release(&mut self) {
        self.core.release(&self.region, self.core.cursor);
    }

    /// Frees the slots before `seq` only: a consumer that hands what it
    /// read to be written elsewhere (the ledger's writing thread) releases
    /// each batch once it is written, while it reads on. A `seq` before
    /// what was released, or past the cursor, is taken as that bound.
    pub fn release_to(&mut self, seq: u64) {
        let upto = seq.min(self.core.cursor).max(self.core.released);
        self.core.release(&self.region, upto);
    }

    /// Reads again from the first frame not yet released (see
    /// [`Reader::set_deferred_release`]), of this same ring, whatever is
    /// under its name now: a consumer whose hand-off of what it read
    /// failed (a publish not acknowledged) takes those frames again. A
    /// gating reader's held frames are still there; ones the writer has
    /// overwritten since (a reader not gating, or demoted) are reported as
    /// an overrun, exactly. The position is this reader's own record of
    /// what it released, not its entry's (which any process that may
    /// attach can write).
    pub fn rewind(&mut self) {
        self.core.cursor = self.core.released;
    }

    /// The cursor the writer sees: the next sequence not yet released.
    pub fn released(&self) -> u64 {
        self.region.entry(self.core.idx).cursor.load(Ordering::Relaxed)
    }

    /// Records a sign of life (done automatically while reading and waiting).
    pub fn heartbeat(&self) {
        self.region.entry(self.core.idx).heartbeat_ns.store(host::now_ns(), Ordering::Relaxed);
    }

    /// The next sequence this reader will read.
    pub fn cursor(&self) -> u64 {
        self.core.cursor
    }

    /// Published frames not yet consumed.
    pub fn lag(&self) -> u64 {
        super::lag(self.region.header().published.load(Ordering::Relaxed), self.core.cursor)
    }

    /// [`lag`](Self::lag) by a `published` count the slots bear out, one a
    /// reader may record as a fact (`None`: the count is one no writer
    /// stored, anyone who maps the data region writable having written it).
    pub fn trusted_lag(&self) -> Option<u64> {
        trusted_published(&self.region).ok().map(|p| super::lag(p, self.core.cursor))
    }

    /// `lag / capacity`: 0 is caught up, 1 a whole ring behind.
    pub fn backpressure_ratio(&self) -> f64 {
        self.lag() as f64 / self.region.capacity() as f64
    }

    /// Half a ring or more behind.
    pub fn is_under_pressure(&self) -> bool {
        self.backpressure_ratio() >= 0.5
    }

    /// Four fifths of a ring or more behind: a producer that can should slow
    /// down, or this reader will overrun (or, gating, stall the writer).
    pub fn should_throttle(&self) -> bool {
        self.backpressure_ratio() >= 0.8
    }

    /// Frames consumed by this reader.
    pub fn frames(&self) -> u64 {
        self.core.frames
    }

    /// Overrun events.
    pub fn overruns(&self) -> u64 {
        self.core.overruns
    }

    /// Sequences lost to overruns.
    pub fn lost(&self) -> u64 {
        self.core.lost
    }

    /// Whether this reader currently holds the writer back.
    pub fn is_gating(&self) -> bool {
        self.core.block_ring && self.region.entry(self.core.idx).gating.load(Ordering::Relaxed) == GATING_YES
    }

    /// Whether this reader was demoted from gating (it stalled, or looked
    /// dead to the waiting writer; a sweep frees entries, it does not
    /// demote them).
    pub fn was_demoted(&self) -> bool {
        self.region.entry(self.core.idx).gating.load(Ordering::Relaxed) == GATING_DEMOTED
    }

    /// The writer lease epoch now (incremented by every writer start).
    pub fn writer_epoch(&self) -> u64 {
        // Relaxed: only the epoch bits are used.
        lease_parts(self.region.header().lease.load(Ordering::Relaxed)).1
    }

    /// The ring's geometry.
    pub fn geometry(&self) -> &Geometry {
        &self.region.geometry
    }

    /// As [`RingView::owner_uid`](super::RingView::owner_uid), of the
    /// mapping this reader reads.
    pub fn owner_uid(&self) -> u32 {
        self.region.owner
    }

    /// As [`RingView::check_owner`](super::RingView::check_owner), of the
    /// mapping this reader reads.
    pub fn check_owner(&self) -> Result<(), super::ForeignRing> {
        self.region.check_owner_in(&super::Owners::MINE)
    }

    /// As [`RingView::check_owner_in`](super::RingView::check_owner_in),
    /// of the mapping this reader reads.
    pub fn check_owner_in(&self, owners: &super::Owners) -> Result<(), super::ForeignRing> {
        self.region.check_owner_in(owners)
    }

    /// The entry index in the reader table.
    pub fn index(&self) -> usize {
        self.core.idx
    }

    /// Whether a file of the ring shrank under this reader (see
    /// [`RingView::is_damaged`](super::RingView::is_damaged)); reads report
    /// [`TryReadError::Damaged`] from then on.
    pub fn is_damaged(&self) -> bool {
        self.region.probe().is_some()
    }

    /// Like [`Reader::is_damaged`], naming the file that shrank.
    pub fn damage(&self) -> Option<Damaged> {
        self.region.probe()
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        // A process forked after the join drops its copy: the entry is
        // the parent's.
        if self.core.pid != crate::sync::host::identity().0 {
            return;
        }
        let region: &Region = &self.region;
        let e = region.entry(self.core.idx);
        // Freeing the entry takes it out of the gate; nothing else to undo.
        // SYNC POINT: reader entry released. Pairs with the Acquire CAS of
        // `state` in `claim_entry`: our last uses of the entry come before
        // the next owner's writes. A CAS: if we were evicted, the entry may
        // belong to someone else by now.
        let mine = entry_state(self.core.pid, ENTRY_ACTIVE);
        if e.state.compare_exchange(mine, ENTRY_FREE, Ordering::Release, Ordering::Relaxed).is_ok() {
            // SYNC POINT: reader table changed. Release, not SeqCst: a
            // writer that misses it keeps a tighter gate than needed until
            // it waits, and then rescans; `wake_writer` below covers that.
            region.readers().table_epoch.fetch_add(1, Ordering::Release);
        }
        super::wake_writer(region);
    }
}
