//! The reading side: registration, cursors, overrun detection, waiting.

use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;

use bytemuck::Pod;

use crate::layout::*;
use crate::shm::Namespace;
use crate::sync::{fence, futex, host, spin_hint, Ordering};
use crate::wait::WaitStrategy;

use super::frame::{Frame, FrameError, FrameInfo, FrameRef};
use super::{region, AttachError, Damaged, Geometry, Policy, Region};

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

/// The reader's private state; separate from the region so that a borrowed
/// [`Frame`] can hold the region shared and this exclusively.
pub(crate) struct ReaderCore {
    idx: usize,
    cursor: u64,
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

/// A parked reader wakes at least this often to look for damage (a file
/// shrunk under it: a writer whose mapping turned to zeros never wakes it)
/// and to refresh its heartbeat; it stays counted as parked meanwhile.
pub(crate) const PARK_RECHECK: Duration = Duration::from_millis(100);

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
            self.release(region);
        }
    }

    /// Shows the writer our cursor: every slot before it may be reused.
    #[inline]
    pub(crate) fn release(&mut self, region: &Region) {
        let e = region.entry(self.idx);
        // SYNC POINT: slot released to the writer. Pairs with the Acquire
        // load of cursors in `Writer::gate`; our payload loads happen before
        // the writer's next stores to these slots.
        e.cursor.store(self.cursor, Ordering::Release);
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
        // at a sequence no writer will reach would wait for ever.
        let newest = trusted_published(region).map_or(newest_in_slot, |p| p.max(newest_in_slot));
        let resume = (seq + 1).max((newest + 1).saturating_sub(region.capacity()));
        let lost = resume - seq;
        self.overruns += 1;
        self.lost += lost;
        let e = region.entry(self.idx);
        e.overruns.store(self.overruns, Ordering::Relaxed);
        e.lost.store(self.lost, Ordering::Relaxed);
        self.cursor = resume;
        if !self.deferred {
            self.release(region);
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

    pub(crate) fn new(region: Arc<Region>, opts: &ReaderOptions) -> Result<Reader, AttachError> {
        if opts.name.len() > MAX_READER_NAME_LEN {
            return Err(AttachError::ReaderName { name: opts.name.clone() });
        }
        if let Some(d) = region.probe() {
            return Err(AttachError::Damaged(d));
        }
        let (pid, start_time) = host::identity();
        // Checked before anything is claimed, so a refusal leaves no trace.
        let published = trusted_published(&region).map_err(|p| untrusted_published(&region, p))?;
        let idx = match claim_entry(&region, pid) {
            Some(i) => i,
            None => {
                super::sweep::sweep(&region);
                claim_entry(&region, pid).ok_or_else(|| AttachError::ReaderTableFull {
                    ring: region.name.clone(),
                    max: region.geometry.max_readers,
                })?
            }
        };
        let block_ring = region.geometry.policy == Policy::Block;
        let e = region.entry(idx);
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
        e.joined_ns.store(realtime(), Ordering::Relaxed);
        e.gating.store(if opts.gating && block_ring { GATING_YES } else { GATING_NO }, Ordering::Relaxed);

        let cap = region.capacity();
        let start_at = |published: u64| match opts.start {
            Start::Newest => published + 1,
            Start::Oldest => (published + 1).saturating_sub(cap).max(1),
            Start::At(seq) => seq.max(1),
        };
        let rd = region.readers();
        // A conservative cursor first (from `published` read before the
        // claim), so a writer that scans the table the moment the entry
        // turns active never runs past frames we want.
        let first = start_at(published);
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
        rd.table_epoch.fetch_add(1, Ordering::Release);
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
        let cursor = match opts.start {
            Start::At(_) => first,
            // (A value that turned untrustworthy since the check above is
            // not followed.)
            _ => trusted_published(&region).map_or(first, |p| first.max(start_at(p))),
        };
        // SYNC POINT: slot released to the writer.
        e.cursor.store(cursor, Ordering::Release);
        Ok(Reader {
            core: ReaderCore {
                idx,
                cursor,
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
        self.wait_ready(Some(deadline(timeout)))?;
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
        self.wait_ready(Some(deadline(timeout)))?;
        self.try_read_pod().map_err(ReadError::from)
    }

    /// Waits, with the reader's strategy, until a frame is available (or an
    /// overrun is, which the next read reports). Pairs with the batch reads.
    pub fn wait(&mut self) -> Result<(), ReadError> {
        self.wait_ready(None)
    }

    /// Like [`Reader::wait`], for at most `timeout`.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<(), ReadError> {
        self.wait_ready(Some(deadline(timeout)))
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
        let slot = region.slot(seq);
        // SYNC POINT: slot payload visible to readers. Pairs with the
        // Release store of the stamp in `Claim::commit`.
        let stamp = slot.header.stamp.load(Ordering::Acquire);
        if stamp != seq {
            return Err(self.core.not_ready(region, seq, stamp));
        }
        let len = (slot.header.len.load(Ordering::Relaxed) as usize).min(region.max_payload());
        let kind = slot.header.kind.load(Ordering::Relaxed);
        Ok(Frame {
            inner: FrameRef { slot, info: FrameInfo { seq, len, kind }, torn: Cell::new(false) },
            region,
            core: &mut self.core,
        })
    }

    /// Borrows the next frame in place, waiting for it.
    #[inline]
    pub fn peek(&mut self) -> Result<Frame<'_>, ReadError> {
        self.wait_ready(None)?;
        self.try_peek().map_err(ReadError::from)
    }

    /// Borrows the next frame in place, waiting at most `timeout`.
    pub fn peek_timeout(&mut self, timeout: Duration) -> Result<Frame<'_>, ReadError> {
        self.wait_ready(Some(deadline(timeout)))?;
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
            let slot = region.slot(seq);
            // SYNC POINT: slot payload visible to readers. Pairs with the
            // Release store of the stamp in `Claim::commit`.
            let stamp = slot.header.stamp.load(Ordering::Acquire);
            if stamp != seq {
                if n == 0 {
                    return Err(self.core.not_ready(region, seq, stamp));
                }
                break;
            }
            let len = (slot.header.len.load(Ordering::Relaxed) as usize).min(region.max_payload());
            let kind = slot.header.kind.load(Ordering::Relaxed);
            let fr = FrameRef { slot, info: FrameInfo { seq, len, kind }, torn: Cell::new(false) };
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

    /// Waits, per the strategy, until the frame at the cursor is published
    /// (or overwritten, which the following read reports), or the ring is
    /// found damaged.
    fn wait_ready(&mut self, deadline_ns: Option<u64>) -> Result<(), ReadError> {
        let region: &Region = &self.region;
        let mut spins = self.wait.spins();
        loop {
            if self.core.ready(region) {
                return Ok(());
            }
            if let Some(d) = region.damaged() {
                return Err(ReadError::Damaged(d));
            }
            if spins > 0 {
                spins -= 1;
                spin_hint();
                if spins & 0x3FF == 0 && deadline_ns.is_some_and(|d| host::now_ns() >= d) {
                    return Err(ReadError::Timeout);
                }
                continue;
            }
            if deadline_ns.is_some_and(|d| host::now_ns() >= d) {
                return Err(ReadError::Timeout);
            }
            self.park(deadline_ns);
        }
    }

    /// Sleeps on the ring's futex until the writer publishes, the deadline
    /// passes, or the ring is found damaged; looks for damage (and
    /// refreshes the heartbeat) every [`PARK_RECHECK`] meanwhile.
    fn park(&self, deadline_ns: Option<u64>) {
        let region: &Region = &self.region;
        let (h, rd) = (region.header(), region.readers());
        let e = region.entry(self.core.idx);
        e.heartbeat_ns.store(host::now_ns(), Ordering::Relaxed);
        // A count, Relaxed: the fence below orders it before our re-check,
        // and read-modify-writes never lose one another's changes, so the
        // writer sees at least 1 from our increment until our decrement.
        rd.waiters.fetch_add(1, Ordering::Relaxed);
        // Marked after counting and cleared before uncounting: a reader that
        // dies in between leaves one spurious waiter, never a negative count.
        e.parked.store(1, Ordering::Relaxed);
        // SYNC POINT: reader park Dekker. Pairs with the SeqCst fence in
        // `Writer::finish`: either the writer's load of `waiters` sees us and
        // it bumps `notify` and wakes, or our check below sees its stamp. A
        // store followed by a load needs SeqCst fences on both sides;
        // Acquire/Release cannot order them. The count stays up across the
        // re-checks, so the argument holds for each.
        fence(Ordering::SeqCst);
        loop {
            // SYNC POINT: readers woken. Pairs with the writer's Release bump
            // of `notify`: if we see it, the stamps it committed before are
            // visible to the check below.
            let seen = h.notify.load(Ordering::Acquire);
            if self.core.ready(region) || region.damaged().is_some() {
                break;
            }
            let now = host::now_ns();
            let timeout = match deadline_ns {
                Some(d) if now >= d => break,
                Some(d) => Duration::from_nanos(d - now).min(PARK_RECHECK),
                None => PARK_RECHECK,
            };
            // A failure here (it cannot happen for a valid mapping; a file
            // truncated under the word gives EFAULT) just means we poll.
            let _ = futex::wait(&h.notify, seen, Some(timeout));
            if h.notify.load(Ordering::Relaxed) != seen {
                break;
            }
            // Nothing published: a time-out, a signal, or a writer that can
            // no longer wake us. A sign of life, and a look for damage.
            e.heartbeat_ns.store(host::now_ns(), Ordering::Relaxed);
            region.probe();
        }
        e.parked.store(0, Ordering::Relaxed);
        // A count, Relaxed: we are awake; a writer that still sees us
        // counted only makes a spare wake-up.
        rd.waiters.fetch_sub(1, Ordering::Relaxed);
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
        self.core.release(&self.region);
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

    /// Whether this reader was demoted from gating (it stalled or was swept).
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

    /// The entry index in the reader table.
    pub fn index(&self) -> usize {
        self.core.idx
    }

    /// Whether a file of the ring shrank under this reader (see
    /// [`Ring::is_damaged`](super::Ring::is_damaged)); reads report
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

/// `published`, if the slots bear it out; otherwise `Err` with the value.
///
/// Only a writer stores `published`, but anyone who maps the data region
/// writable can, and a reader that followed a value no writer will reach
/// would wait for it for ever. A real value is always borne out: a commit
/// stores the stamps of its frames before `published` (Release), so once
/// the Acquire load below returns `p`, the slot of `p` holds `p` or a newer
/// frame (by coherence). A value above [`MAX_SEQ`] never is (stamps hold 63
/// bits).
fn trusted_published(region: &Region) -> Result<u64, u64> {
    // SYNC POINT: published count.
    let p = region.header().published.load(Ordering::Acquire);
    if p == 0 {
        return Ok(0);
    }
    if p > MAX_SEQ {
        return Err(p);
    }
    // Relaxed: the Acquire load above already orders the stamp's store
    // before this load.
    let in_slot = region.slot(p).header.stamp.load(Ordering::Relaxed) & !STAMP_WRITING;
    if in_slot >= p {
        Ok(p)
    } else {
        Err(p)
    }
}

/// The join's error for a `published` of `p` that [`trusted_published`]
/// refused.
fn untrusted_published(region: &Region, p: u64) -> AttachError {
    if let Err(e) = super::check_published(&region.path, p) {
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

fn deadline(timeout: Duration) -> u64 {
    host::now_ns().saturating_add(timeout.as_nanos().min(u64::MAX as u128) as u64)
}

#[cfg(not(loom))]
fn realtime() -> u64 {
    crate::process::realtime_ns()
}

#[cfg(loom)]
fn realtime() -> u64 {
    0
}
