//! The writing side: taking the lease, claiming slots, gating, waiting
//! for space, publishing, waking readers. The lease is in `lease.rs`, the
//! claim a writer fills in `claim.rs`.

mod claim;
mod demoted;
mod lease;

use std::sync::Arc;
use std::time::Duration;

use bytemuck::Pod;

use crate::layout::*;
use crate::shm::Namespace;
use crate::sync::{fence, futex, host, spin_hint, Ordering};

use super::{region, Damaged, Geometry, LeaseError, Policy, PublishError, Region};
use demoted::Demoted;

pub use claim::Claim;
pub(crate) use lease::holder_alive;
pub(super) use lease::{release_lease, take_lease};

/// How long a publish may wait for space on a `block` ring.
#[derive(Clone, Copy)]
enum Patience {
    Never,
    /// At most this long from when the writer starts to wait: the clock
    /// is read only if it must wait, not on every publish.
    Within(Duration),
    /// Until gating readers make room or are demoted for stalling; bounded
    /// by the ring's stall timeout.
    Stall,
}

/// Polls of the gate before a waiting writer parks.
const SPINS: u32 = if cfg!(loom) { 1 } else { 256 };
/// A waiting writer wakes at least this often to check readers' liveness.
const RECHECK: Duration = Duration::from_millis(50);
/// The shortest park of a waiting writer that found nothing to demote.
const MIN_WAIT: Duration = Duration::from_millis(1);

/// What a waiting writer of a `block` ring needs released, and since when.
///
/// `need` is the first sequence every gating cursor must reach; `since` is
/// when the writer started waiting for it. The record is kept, across
/// waits and calls, until the writer sees every gating reader at `need` or
/// past it; only then does a new wait start a new clock. So a gating reader
/// is demoted when it has not released `need` within the stall timeout,
/// whatever its cursor does meanwhile (toggling, moving backwards, or a
/// caller retrying with short timeouts); each new clock means the writer
/// got at least one more sequence released.
#[derive(Clone, Copy, Debug)]
struct Stall {
    need: u64,
    since: u64,
    /// When the blockers' liveness was last checked.
    checked: u64,
}

/// The one writer of a ring, holding its lease. Dropping it releases the
/// lease; a killed writer's lease is taken over by the next writer, which
/// continues the sequence.
pub struct Writer {
    region: Arc<Region>,
    /// The next sequence to publish.
    next: u64,
    /// The first sequence gating readers do not allow yet (block rings).
    gate_limit: u64,
    table_epoch: u32,
    bytes: u64,
    epoch: u64,
    block: bool,
    /// The wait for space in progress (block rings), see [`Stall`].
    stall: Option<Stall>,
    /// The readers this writer demoted, see [`Demoted`].
    demoted: Demoted,
    /// The reader table's epoch before this writer first demoted a reader
    /// past the stall timeout in the stall under way (`None`: it demoted
    /// none): a stall that ends under another epoch may have had a reader
    /// join an entry it demoted ([`Writer::gate`]).
    demoted_epoch: Option<u32>,
}

impl Writer {
    /// Attaches read-write to ring `name` and takes its lease.
    pub fn attach(ns: &Namespace, name: &str) -> Result<Writer, LeaseError> {
        Writer::new(Arc::new(region::attach(ns, name, true)?))
    }

    pub(crate) fn new(region: Arc<Region>) -> Result<Writer, LeaseError> {
        if !region.writable {
            return Err(LeaseError::ReadOnly { ring: region.name.clone() });
        }
        if let Some(d) = region.probe() {
            return Err(LeaseError::Damaged(d));
        }
        let epoch = take_lease(region.header(), &region.name)?;
        let h = region.header();
        // Continue the sequence. A writer killed in the middle of a batch may
        // have committed slots past `published`; readers may have read them,
        // so they count as published and are never rewritten.
        // SYNC POINT: published count.
        let published = h.published.load(Ordering::Acquire);
        if let Err(e) = super::check_published(&region.path, published) {
            release_lease(region.header(), epoch);
            return Err(e.into());
        }
        let mut next = published + 1;
        for _ in 0..region.capacity() {
            // SYNC POINT: slot payload visible to readers (here to the next
            // writer, which adopts the frames a dead one committed).
            if next > MAX_SEQ || region.slot(next).header.stamp.load(Ordering::Acquire) != next {
                break;
            }
            next += 1;
        }
        if next - 1 > published {
            // SYNC POINT: published count.
            h.published.store(next - 1, Ordering::Release);
        }
        // A predecessor killed while waiting for space leaves the flag up,
        // or parked readers unwoken for frames it committed: reset the one,
        // wake the others.
        region.readers().writer_waiting.store(0, Ordering::Relaxed);
        // SYNC POINT: readers woken (pairs with the Acquire load of `notify`
        // in `Reader::park`).
        h.notify.fetch_add(1, Ordering::Release);
        let _ = futex::wake_all(&h.notify);
        let block = region.geometry.policy == Policy::Block;
        Ok(Writer {
            bytes: h.bytes_published.load(Ordering::Relaxed),
            // Relaxed: any value that differs from the next load makes the
            // first claim rescan.
            table_epoch: region.readers().table_epoch.load(Ordering::Relaxed).wrapping_sub(1),
            gate_limit: 0,
            demoted_epoch: None,
            next,
            epoch,
            block,
            stall: None,
            demoted: Demoted::new(region.geometry.max_readers as usize),
            region,
        })
    }

    /// Publishes one frame without waiting.
    #[inline]
    pub fn try_publish(&mut self, payload: &[u8]) -> Result<u64, PublishError> {
        self.publish_with(payload, 0, Patience::Never)
    }

    /// Publishes one frame. On an `overwrite` ring this never waits; on a
    /// `block` ring it waits for gating readers, at most about the ring's
    /// stall timeout (after which the stalled reader is demoted).
    #[inline]
    pub fn publish(&mut self, payload: &[u8]) -> Result<u64, PublishError> {
        self.publish_with(payload, 0, Patience::Stall)
    }

    /// Publishes one frame, waiting at most `timeout` for space.
    #[inline]
    pub fn publish_timeout(&mut self, payload: &[u8], timeout: Duration) -> Result<u64, PublishError> {
        self.publish_with(payload, 0, Patience::Within(timeout))
    }

    /// Publishes a plain-old-data value as one frame (waiting like
    /// [`Writer::publish`]).
    #[inline]
    pub fn publish_pod<T: Pod>(&mut self, value: &T) -> Result<u64, PublishError> {
        self.publish(bytemuck::bytes_of(value))
    }

    /// Publishes one frame with an application-defined `kind`.
    #[inline]
    pub fn publish_kind(&mut self, kind: u32, payload: &[u8]) -> Result<u64, PublishError> {
        self.publish_with(payload, kind, Patience::Stall)
    }

    #[inline]
    fn publish_with(&mut self, payload: &[u8], kind: u32, patience: Patience) -> Result<u64, PublishError> {
        let max = self.region.max_payload();
        if payload.len() > max {
            return Err(PublishError::TooLarge { len: payload.len(), max });
        }
        let mut claim = self.claim_with(1, patience)?;
        let seq = claim.push_kind(kind, payload)?;
        claim.commit();
        Ok(seq)
    }

    /// Reserves `n` consecutive slots without waiting; fill them with
    /// [`Claim::push`], publish them all at once with [`Claim::commit`].
    #[inline]
    pub fn try_claim(&mut self, n: u64) -> Result<Claim<'_>, PublishError> {
        self.claim_with(n, Patience::Never)
    }

    /// Reserves `n` consecutive slots, waiting like [`Writer::publish`].
    #[inline]
    pub fn claim(&mut self, n: u64) -> Result<Claim<'_>, PublishError> {
        self.claim_with(n, Patience::Stall)
    }

    /// Reserves `n` consecutive slots, waiting at most `timeout`.
    pub fn claim_timeout(&mut self, n: u64, timeout: Duration) -> Result<Claim<'_>, PublishError> {
        self.claim_with(n, Patience::Within(timeout))
    }

    #[inline]
    fn claim_with(&mut self, n: u64, patience: Patience) -> Result<Claim<'_>, PublishError> {
        let capacity = self.region.capacity();
        if n == 0 || n > capacity {
            return Err(PublishError::BatchTooLarge { n, capacity });
        }
        // (n <= capacity <= 2^32: no underflow.)
        if self.next > MAX_SEQ + 1 - n {
            return Err(PublishError::SequenceExhausted { next: self.next, n });
        }
        if self.block {
            self.reserve(n, patience)?;
        }
        // After the gate: a reader table that turned to zeros while it was
        // read lets everything through.
        if let Some(d) = self.region.damaged() {
            return Err(PublishError::Damaged(d));
        }
        Ok(Claim::new(self, n))
    }

    /// Makes sure sequences `next .. next + n` may be written (block rings).
    #[inline]
    fn reserve(&mut self, n: u64, patience: Patience) -> Result<(), PublishError> {
        let last = self.next + n - 1;
        // SYNC POINT: reader table changed. Pairs with the Release bumps on
        // join, leave and sweep: after a new epoch the rescan sees the entry
        // that changed.
        let epoch = self.region.readers().table_epoch.load(Ordering::Acquire);
        if last < self.gate_limit && epoch == self.table_epoch {
            return Ok(());
        }
        self.table_epoch = epoch;
        if last < self.gate() {
            return Ok(());
        }
        match patience {
            Patience::Never => Err(self.full(n)),
            _ => self.wait_for_space(last, n, patience),
        }
    }

    fn full(&self, needed: u64) -> PublishError {
        PublishError::Full { needed, free: self.gate_limit.saturating_sub(self.next) }
    }

    /// Rescans gating readers; returns the first sequence not yet allowed.
    fn gate(&mut self) -> u64 {
        self.scan_gating();
        // The stall is over once every gating reader is seen at its `need`,
        // by whichever scan sees it (a call that demoted and then ran out
        // of time leaves the record open; the next call's scan, finding
        // room, ends it here).
        if self.stall.is_some() && self.open_stall().is_none() {
            let demoted_epoch = self.demoted_epoch;
            self.end_stall();
            // That scan skipped the entries the stall demoted, whatever
            // they said. If readers joined or left since the demotion, one
            // may have joined such an entry: judged by owner and join again
            // now, it gates from here. (Found by review: the limit of the
            // scan that skipped it stayed until the table changed again,
            // and the new reader's frames were overwritten without its ever
            // being demoted.) An entry rewritten in place, the table's
            // epoch left as it was, is not looked at again: a peer that
            // rejoins so each time it is demoted holds one wait only. The
            // epoch is the one before the stall's first such demotion, not
            // its last (found by review of the fix: a later demotion in the
            // same stall hid a join before it).
            // SYNC POINT: reader table changed (as in `reserve`).
            let now = self.region.readers().table_epoch.load(Ordering::Acquire);
            if demoted_epoch.is_some_and(|then| then != now) {
                self.scan_gating();
            }
        }
        self.gate_limit
    }

    /// Sets `gate_limit` from the gating readers' cursors.
    fn scan_gating(&mut self) {
        let mut min = u64::MAX;
        for (i, e) in self.region.entries() {
            // SYNC POINT: reader entry published (its cursor and gating flag).
            let state = e.state.load(Ordering::Acquire);
            if is_active(state) && e.gating.load(Ordering::Relaxed) == GATING_YES && !self.demoted.holds(i, state, e) {
                // SYNC POINT: slot released to the writer. Pairs with the
                // Release store of the cursor in `ReaderCore::consumed`.
                min = min.min(e.cursor.load(Ordering::Acquire));
            }
        }
        // Sequence s reuses the slot of s - capacity, which every gating
        // reader must have consumed: s - capacity < min cursor.
        self.gate_limit = min.saturating_add(self.region.capacity());
    }

    /// Drops the stall record, and with it the marks of the entries it
    /// demoted ([`Demoted`]): they are judged by owner and join again.
    fn end_stall(&mut self) {
        self.stall = None;
        self.demoted_epoch = None;
        self.demoted.stall_ended();
    }

    /// Waits until `last` may be written: parks on `writer_wake`, demotes
    /// the gating readers that are dead or have not released what the
    /// writer needs within the stall timeout ([`Stall`]), and counts the
    /// wait.
    #[cold]
    fn wait_for_space(&mut self, last: u64, n: u64, patience: Patience) -> Result<(), PublishError> {
        let region = self.region.clone();
        let h = region.header();
        let stall_ns = region.geometry.stall_timeout_ns;
        let recheck_ns = RECHECK.as_nanos() as u64;
        // Sequence `last` reuses the slot of `last - capacity`: every gating
        // cursor must be past it. (We wait only if `last >= gate_limit`,
        // which is at least `capacity`.)
        let need = (last + 1).saturating_sub(region.capacity());
        let t0 = host::now_ns();
        let until = match patience {
            Patience::Within(t) => Some(t0.saturating_add(t.as_nanos().min(u64::MAX as u128) as u64)),
            _ => None,
        };
        // One wait, however many calls it takes: a call taking up an open
        // stall record (a caller retrying after its deadline, as the Python
        // writer does every 100 ms to look for Ctrl-C) continues the wait
        // counted before.
        if self.open_stall().is_none() {
            h.writer_waits.fetch_add(1, Ordering::Relaxed);
        }
        let result = 'wait: loop {
            for _ in 0..SPINS {
                if last < self.gate() {
                    break 'wait Ok(());
                }
                spin_hint();
            }
            let now = host::now_ns();
            // The stall clock runs (and demotes) for a call of any
            // deadline, however short: a caller that polls with zero
            // timeouts demotes a stalled reader too.
            let stall = self.stall_for(need, now);
            let waited = now.saturating_sub(stall.since);
            let demoted = if waited >= stall_ns {
                self.demote_blockers(stall.need, Blockers::All)
            } else if now.saturating_sub(stall.checked) >= recheck_ns {
                // Still waiting after a recheck period: are the blockers
                // alive? (Not on the first look, so a reader that keeps
                // releasing never costs a /proc read.)
                self.stall = Some(Stall { checked: now, ..stall });
                self.demote_blockers(stall.need, Blockers::Dead)
            } else {
                false
            };
            // Before going round again: a peer making new blockers as fast
            // as they are demoted keeps no caller past its deadline.
            if until.is_some_and(|d| now >= d) {
                break Err(self.full(n));
            }
            if demoted {
                continue;
            }
            // At least MIN_WAIT: past the stall timeout with nothing left
            // to demote (a blocker gone between the gate and here), the
            // difference is 0, and the wait must not spin.
            let mut timeout = Duration::from_nanos(stall_ns.saturating_sub(waited)).min(RECHECK).max(MIN_WAIT);
            if let Some(d) = until {
                timeout = timeout.min(Duration::from_nanos(d - now));
            }
            self.park(last, timeout);
            // Readers of a ring whose file shrank stop moving: do not wait
            // out their stall timeout.
            if let Some(d) = region.probe() {
                break Err(PublishError::Damaged(d));
            }
        };
        // (The scan that saw every gating reader at the record's `need`
        // ended the stall: `gate`.)
        h.writer_wait_ns.fetch_add(host::now_ns().saturating_sub(t0), Ordering::Relaxed);
        result
    }

    /// The stall record for a wait that needs every gating cursor at `need`
    /// (`gate_limit` fresh from a scan): the current one while some gating
    /// reader is still short of its `need` (a smaller `need` lowers the
    /// target, never resets the clock); a new one from `now` otherwise.
    fn stall_for(&mut self, need: u64, now: u64) -> Stall {
        let stall = match self.open_stall() {
            Some(s) => Stall { need: s.need.min(need), ..s },
            // (A record there was is ended already, by the scan that saw
            // it closed: `gate`.)
            None => Stall { need, since: now, checked: now },
        };
        self.stall = Some(stall);
        stall
    }

    /// The stall record, while it is open: while the last scan
    /// (`gate_limit`) found some gating reader short of its `need`.
    fn open_stall(&self) -> Option<Stall> {
        self.stall.filter(|s| self.gate_limit < s.need.saturating_add(self.region.capacity()))
    }

    /// Sleeps on `writer_wake` for at most `timeout`, unless a scan of the
    /// gating cursors made after saying so finds `last` may be written.
    fn park(&mut self, last: u64, timeout: Duration) {
        let region = self.region.clone();
        let rd = region.readers();
        rd.writer_waiting.store(1, Ordering::Relaxed);
        // SYNC POINT: writer-wait Dekker. Pairs with the SeqCst fence in
        // `wake_writer`: either our re-check of the cursors below sees a
        // reader's progress, or that reader sees `writer_waiting` and
        // wakes us. A store followed by a load needs SeqCst fences on
        // both sides; Acquire/Release cannot order them.
        fence(Ordering::SeqCst);
        // SYNC POINT: writer woken. Pairs with the Release bump in
        // `wake_writer`.
        let seen = rd.writer_wake.load(Ordering::Acquire);
        if last >= self.gate() {
            let _ = futex::wait(&rd.writer_wake, seen, Some(timeout));
        }
        rd.writer_waiting.store(0, Ordering::Relaxed);
    }

    /// Demotes the gating readers whose cursor is short of `need` (with
    /// [`Blockers::Dead`], only those whose process is gone); returns
    /// whether it demoted any.
    fn demote_blockers(&mut self, need: u64, which: Blockers) -> bool {
        let mut any = false;
        for (i, e) in self.region.entries() {
            // SYNC POINT: reader entry published (its start time and gating
            // flag belong to the owner named in `state`).
            let state = e.state.load(Ordering::Acquire);
            // Relaxed cursor: only compared; no slot is reused on its word.
            if !is_active(state)
                || e.gating.load(Ordering::Relaxed) != GATING_YES
                || e.cursor.load(Ordering::Relaxed) >= need
                || self.demoted.holds(i, state, e)
            {
                continue;
            }
            if which == Blockers::Dead && host::alive(entry_parts(state).0, e.start_time.load(Ordering::Relaxed)) {
                continue;
            }
            // Read before the demotion: an entry its reader leaves and joins
            // again right after it must not be recorded as the new join.
            let joined = e.joined_ns.load(Ordering::Relaxed);
            if which == Blockers::All && self.demoted_epoch.is_none() {
                // Before the demotion: a join after it moves the epoch on.
                // SYNC POINT: reader table changed (as in `reserve`).
                self.demoted_epoch = Some(self.region.readers().table_epoch.load(Ordering::Acquire));
            }
            if super::demote(&self.region, e, state) {
                self.demoted.record(i, state, joined, which == Blockers::All);
                any = true;
            }
        }
        any
    }

    /// Publishes sequences up to `last`: header, counters, then wakes parked
    /// readers if there are any (no syscall otherwise).
    #[inline]
    fn finish(&mut self, last: u64, bytes: u64) {
        let h = self.region.header();
        // SYNC POINT: published count. Pairs with the Acquire loads of
        // `published` in readers (join, overrun resume) and a new writer:
        // every stamp up to `last` is visible to them.
        h.published.store(last, Ordering::Release);
        // A statistic, and its start comes from shared memory: it wraps
        // rather than panics.
        self.bytes = self.bytes.wrapping_add(bytes);
        h.bytes_published.store(self.bytes, Ordering::Relaxed);
        self.next = last + 1;
        // SYNC POINT: reader park Dekker. Pairs with the SeqCst fence in
        // `Reader::park`: either that reader's re-check sees our stamps, or
        // this load sees its `waiters` increment.
        // SYNC POINT: join Dekker. The same fence is the writer's side of a
        // reader's join (`Reader::new`): the next claim's load of
        // `table_epoch` comes after it. Ordering a store before a
        // later load needs SeqCst; Acquire/Release cannot.
        fence(Ordering::SeqCst);
        if self.region.readers().waiters.load(Ordering::Relaxed) != 0 {
            // SYNC POINT: readers woken. Pairs with the Acquire load of
            // `notify` in `Reader::park`.
            h.notify.fetch_add(1, Ordering::Release);
            let _ = futex::wake_all(&h.notify);
        }
    }

    /// The sequence the next frame will get.
    pub fn next_seq(&self) -> u64 {
        self.next
    }

    /// The lease epoch this writer holds.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The ring's geometry.
    pub fn geometry(&self) -> &Geometry {
        &self.region.geometry
    }

    /// Demotes the gating reader in entry `index` (as
    /// [`ReaderStats::index`](super::ReaderStats::index) numbers them) if
    /// the entry is still pid `pid`'s and it still gates; returns whether
    /// this call did it. What a waiting writer does to a reader that stalls
    /// for the stall timeout, for a writer that never waits (it claims with
    /// [`Writer::try_claim`]) and so judges stalls by its own rule.
    pub fn demote(&mut self, index: usize, pid: u32) -> bool {
        if index >= self.region.geometry.max_readers as usize {
            return false;
        }
        let e = self.region.entry(index);
        // SYNC POINT: reader entry published (its owner, checked again by
        // the compare-and-swap in `demote`).
        let state = e.state.load(Ordering::Acquire);
        let joined = e.joined_ns.load(Ordering::Relaxed);
        let done = is_active(state) && entry_parts(state).0 == pid && super::demote(&self.region, e, state);
        if done {
            self.demoted.record(index, state, joined, false);
        }
        done
    }

    /// As [`RingView::check_owner`](super::RingView::check_owner), of the
    /// mapping this writer writes: a program that writes a ring its readers
    /// act on (the twin's state and alarms) writes only such a ring.
    pub fn check_owner(&self) -> Result<(), super::ForeignRing> {
        self.region.check_owner_in(&super::Owners::MINE)
    }

    /// The ring's name.
    pub fn ring_name(&self) -> &str {
        &self.region.name
    }

    /// Whether a file of the ring shrank under this writer (see
    /// [`RingView::is_damaged`](super::RingView::is_damaged)); publishing reports
    /// [`PublishError::Damaged`] from then on.
    pub fn is_damaged(&self) -> bool {
        self.region.probe().is_some()
    }

    /// Like [`Writer::is_damaged`], naming the file that shrank.
    pub fn damage(&self) -> Option<Damaged> {
        self.region.probe()
    }
}

/// Which gating readers short of the writer's need [`Writer::demote_blockers`] demotes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Blockers {
    /// Every one: the stall timeout has passed.
    All,
    /// Those whose process is gone.
    Dead,
}

fn is_active(state: u32) -> bool {
    state & ENTRY_TAG_MASK == ENTRY_ACTIVE
}

impl Drop for Writer {
    fn drop(&mut self) {
        release_lease(self.region.header(), self.epoch);
    }
}
