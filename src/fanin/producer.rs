//! A producer: takes a free lane by linking its own lane file, then
//! claims, writes and publishes records into it (`docs/abi.md` §11.4–11.7).

use std::time::Duration;

use bytemuck::Pod;

use crate::ring::Owners;
use crate::shm::{Mapping, Namespace};
use crate::sync::{futex, host, AtomicU64, Ordering};
use crate::wait::WaitStrategy;

use super::error::{FanInError, SendError};
use super::files::{self, RingFiles, RING_FILE};
use super::lane::{self, put, put_with, Ends, Writing};
use super::lane_file::{self, Link, NewLane};
use super::layout::*;

/// Races for a lane lost (another producer's file took the epoch first)
/// that an attach looks again after, however short its deadline.
const STALE_RETRIES: u32 = 16;

/// How often a producer waiting for space looks whether its lane was
/// dropped (the consumer does not ring a lane it no longer reads).
const RECHECK_NS: u64 = 100_000_000;

/// One producer's hold on one lane of a fan-in ring. Dropping it publishes
/// what is pending and lets the lane go (the consumer frees it once it has
/// read everything).
pub struct Producer {
    files: RingFiles,
    lane: NewLane,
    k: usize,
    epoch: u64,
    writing: Writing,
    wait: WaitStrategy,
    /// The process that took the lane (a process forked from it drops its
    /// copy without closing the lane).
    pid: u32,
}

impl Producer {
    /// Takes a free lane of fan-in ring `name`, without waiting.
    pub fn attach(ns: &Namespace, name: &str) -> Result<Producer, FanInError> {
        Producer::attach_timeout(ns, name, Duration::ZERO)
    }

    /// Takes a free lane, waiting up to `timeout` for one to be freed when
    /// all are taken (the consumer frees a dead producer's lane once it
    /// has read what was published there; it is asked to look).
    pub fn attach_timeout(ns: &Namespace, name: &str, timeout: Duration) -> Result<Producer, FanInError> {
        Producer::attach_trusting(ns, name, timeout, None)
    }

    /// [`Producer::attach_timeout`], if `owners` is given only to a ring
    /// whose consumer (the owner of its consumer's file, as opened; its
    /// folder is the same user's or root's) is one of them: judged before
    /// a lane is taken, so another user's ring under the name learns
    /// nothing of this process and holds none of its files
    /// ([`FanInError::Foreign`]).
    pub fn attach_trusting(
        ns: &Namespace,
        name: &str,
        timeout: Duration,
        owners: Option<&Owners>,
    ) -> Result<Producer, FanInError> {
        let files = files::open_ring(ns, name, false)?;
        if let Some(owners) = owners {
            owners.check(name, &files.dir.join(RING_FILE), files.consumer_uid)?;
        }
        let g = &files.geometry;
        let uid = host::my_uid();
        if !g.allow_uids.is_empty() && !g.allow_uids.contains(&uid) {
            return Err(FanInError::NotAllowed { ring: name.to_owned(), uid });
        }
        let mut new = lane_file::create_lane(&files.dir, g)?;
        let deadline = crate::ring::deadline(timeout);
        let mut races_lost = 0u32;
        'attach: loop {
            // SYNC POINT: lane freed (attachers).
            let freed = files.header().lanes_freed.load(Ordering::Acquire);
            for k in 0..g.lanes as usize {
                // SYNC POINT: lane freed. The epoch after the last one the
                // consumer bound here.
                let Some(epoch) = files.state(k).epoch.load(Ordering::Acquire).checked_add(1) else { continue };
                match new.link(&files.dir, k, epoch, files.state(k))? {
                    Link::Held => {}
                    // Another producer's file had this epoch: look again,
                    // with a new file (a file once named cannot be named
                    // again). A few times whatever the deadline (a lane
                    // is likely free: `attach` waits for none), then while
                    // there is time: others that keep winning the race
                    // keep this one from a lane.
                    Link::Stale => {
                        races_lost += 1;
                        if races_lost > STALE_RETRIES && host::now_ns() >= deadline {
                            return Err(FanInError::NoFreeLane { ring: name.to_owned(), lanes: g.lanes });
                        }
                        new = lane_file::create_lane(&files.dir, g)?;
                        continue 'attach;
                    }
                    Link::Taken => {
                        let bell = files.bell();
                        bell.attach_seq.fetch_add(1, Ordering::Relaxed);
                        lane::ring_bell(&bell.bell);
                        let writing = Writing::new(epoch);
                        let pid = crate::process::identity().0;
                        let wait = WaitStrategy::default();
                        return Ok(Producer { files, lane: new, k, epoch, writing, wait, pid });
                    }
                }
            }
            // Every lane is taken: ask the consumer to free those of dead
            // producers, and wait for it.
            let bell = files.bell();
            bell.attach_seq.fetch_add(1, Ordering::Relaxed);
            lane::ring_bell(&bell.bell);
            let now = host::now_ns();
            if now >= deadline {
                return Err(FanInError::NoFreeLane { ring: name.to_owned(), lanes: g.lanes });
            }
            let wait = Duration::from_nanos(deadline - now).min(lane::PARK_RECHECK);
            let _ = futex::wait(&files.header().lanes_freed, freed, Some(wait));
        }
    }

    /// The lane this producer holds.
    pub fn lane(&self) -> usize {
        self.k
    }

    /// The lease epoch of this producer's lane file.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Largest payload a record may carry.
    pub fn max_payload(&self) -> usize {
        self.files.geometry.max_payload as usize
    }

    /// How the blocking calls wait for space (default: spin, then park).
    pub fn set_wait(&mut self, wait: WaitStrategy) {
        self.wait = wait;
    }

    fn ends(&self) -> Ends<'_> {
        ends(&self.files, &self.lane.map, self.k)
    }

    /// Whether the consumer dropped this lane (bound a later epoch, freed
    /// ours, or bound our epoch for another file).
    fn revoked(&self) -> bool {
        super::lease::revoked(self.files.state(self.k), self.epoch, self.lane.judged.ino)
    }

    fn check(&self, len: usize) -> Result<(), SendError> {
        let max = self.max_payload();
        if len > max {
            return Err(SendError::TooLarge { len, max });
        }
        if self.lane.map.is_damaged() {
            return Err(SendError::Damaged { lane: self.k });
        }
        Ok(())
    }

    /// Room for a record of `len` bytes now, or why not.
    fn room(&mut self, len: usize) -> Result<bool, SendError> {
        self.check(len)?;
        let fits = self.writing.fits(&ends(&self.files, &self.lane.map, self.k), len);
        if !fits && self.revoked() {
            return Err(SendError::Revoked { lane: self.k, epoch: self.epoch });
        }
        Ok(fits)
    }

    /// Reserves room for a record of `len` payload bytes after the pending
    /// ones, without waiting; then [`Claim::fill`] it (or write it in place with [`Claim::commit_with`]).
    pub fn try_claim(&mut self, len: usize) -> Result<Claim<'_>, SendError> {
        if !self.room(len)? {
            return Err(SendError::Full { lane: self.k });
        }
        Ok(Claim::new(self, len))
    }

    /// [`Producer::try_claim`], waiting up to `timeout` for room; only
    /// this lane's producer ever waits for it.
    pub fn claim_timeout(&mut self, len: usize, timeout: Duration) -> Result<Claim<'_>, SendError> {
        if !self.room(len)? {
            self.wait_room(len, timeout)?;
        }
        Ok(Claim::new(self, len))
    }

    /// Waits up to `timeout` until a record of `len` bytes fits.
    fn wait_room(&mut self, len: usize, timeout: Duration) -> Result<(), SendError> {
        // Pending records must be visible, or the consumer frees nothing.
        self.publish();
        let deadline = crate::ring::deadline(timeout);
        loop {
            let e = ends(&self.files, &self.lane.map, self.k);
            if self.writing.wait_space(&e, len, self.wait.spins(), Some(deadline.min(host::now_ns() + RECHECK_NS)))
                || self.room(len)?
            {
                return Ok(());
            }
            if host::now_ns() >= deadline {
                return Err(SendError::Timeout { lane: self.k });
            }
        }
    }

    /// Reserves room for `n` records of up to `len` payload bytes each, or
    /// for as many of them as fit now, at least one, without waiting. The
    /// room is checked once for the whole batch; [`Batch::push`] writes the
    /// records and [`Batch::commit`] publishes them together (one store; a
    /// system call only if the consumer sleeps).
    pub fn try_claim_batch(&mut self, n: usize, len: usize) -> Result<Batch<'_>, SendError> {
        let k = self.batch_room(n, len)?;
        if k == 0 && n > 0 {
            return Err(SendError::Full { lane: self.k });
        }
        Ok(self.batch(k))
    }

    /// [`Producer::try_claim_batch`], waiting up to `timeout` until at
    /// least one record of `len` bytes fits.
    pub fn claim_batch_timeout(&mut self, n: usize, len: usize, timeout: Duration) -> Result<Batch<'_>, SendError> {
        let mut k = self.batch_room(n, len)?;
        if k == 0 && n > 0 {
            self.wait_room(len, timeout)?;
            k = self.batch_room(n, len)?;
        }
        Ok(self.batch(k))
    }

    /// Reserves room for records of exactly `lens` bytes, in that order,
    /// without waiting: room for all of them (checked once) or
    /// [`SendError::Full`].
    pub fn try_claim_lens(&mut self, lens: &[usize]) -> Result<Batch<'_>, SendError> {
        for &len in lens {
            self.check(len)?;
        }
        let e = ends(&self.files, &self.lane.map, self.k);
        if !self.writing.fit_lens(&e, lens) {
            if self.revoked() {
                return Err(SendError::Revoked { lane: self.k, epoch: self.epoch });
            }
            return Err(SendError::Full { lane: self.k });
        }
        Ok(self.batch(lens.len()))
    }

    /// How many records of `len` bytes, at most `n`, fit now, or why none
    /// may be written.
    fn batch_room(&mut self, n: usize, len: usize) -> Result<usize, SendError> {
        self.check(len)?;
        let k = self.writing.fit_n(&ends(&self.files, &self.lane.map, self.k), n, len);
        if k == 0 && n > 0 && self.revoked() {
            return Err(SendError::Revoked { lane: self.k, epoch: self.epoch });
        }
        Ok(k)
    }

    /// A batch of `claimed` records whose room was checked.
    fn batch(&mut self, claimed: usize) -> Batch<'_> {
        let Producer { files, lane, k, writing, .. } = self;
        let e = ends(files, &lane.map, *k);
        Batch {
            at: writing.head,
            limit: writing.limit(&e),
            seq: writing.next_seq,
            max: files.geometry.max_payload as usize,
            writing,
            e,
            files,
            lane: *k,
            claimed,
            pushed: 0,
            bytes: 0,
        }
    }

    /// Writes a record (pending until [`Producer::publish`]), without
    /// waiting.
    pub fn try_push(&mut self, kind: u32, payload: &[u8]) -> Result<(), SendError> {
        self.try_claim(payload.len())?.fill(kind, payload);
        Ok(())
    }

    /// Writes a record, waiting up to `timeout` for room.
    pub fn push_timeout(&mut self, kind: u32, payload: &[u8], timeout: Duration) -> Result<(), SendError> {
        self.claim_timeout(payload.len(), timeout)?.fill(kind, payload);
        Ok(())
    }

    /// Writes and publishes one record, without waiting.
    pub fn try_send(&mut self, kind: u32, payload: &[u8]) -> Result<(), SendError> {
        self.try_push(kind, payload)?;
        self.publish();
        Ok(())
    }

    /// Writes and publishes one record, waiting up to `timeout` for room.
    pub fn send_timeout(&mut self, kind: u32, payload: &[u8], timeout: Duration) -> Result<(), SendError> {
        self.push_timeout(kind, payload, timeout)?;
        self.publish();
        Ok(())
    }

    /// Writes and publishes one plain-old-data record.
    pub fn send_pod<T: Pod>(&mut self, kind: u32, value: &T, timeout: Duration) -> Result<(), SendError> {
        self.send_timeout(kind, bytemuck::bytes_of(value), timeout)
    }

    /// Makes every pending record visible to the consumer at once (one
    /// store; a system call only if the consumer sleeps); returns how many.
    pub fn publish(&mut self) -> u64 {
        let n = self.writing.pending();
        let e = ends(&self.files, &self.lane.map, self.k);
        if self.writing.publish(&e, &self.files.header().sleeping) {
            lane::ring_bell(&self.files.bell().bell);
        }
        n
    }

    /// Records written and not yet published.
    pub fn pending(&self) -> u64 {
        self.writing.pending()
    }
}

/// Lane `k`'s three places, for the producer holding its file `map`.
fn ends<'a>(files: &'a RingFiles, map: &'a Mapping, k: usize) -> Ends<'a> {
    // SAFETY: our own lane file, made by `create_lane` for this ring's
    // capacity. Only a process of our own uid could shrink it; the guard
    // then turns it to zeros (we report Damaged).
    let (hdr, data) = unsafe { lane_file::lane_view(map, files.geometry.lane_capacity) };
    Ends { hdr, state: files.state(k), data }
}

impl Drop for Producer {
    fn drop(&mut self) {
        if self.pid != crate::process::identity().0 {
            return;
        }
        self.publish();
        // SYNC POINT: lane closed. Pairs with the consumer's Acquire load
        // of `closed` in `drain_lane`: our last publish is visible to it.
        self.ends().hdr.closed.store(LANE_CLOSED, Ordering::Release);
        let bell = self.files.bell();
        lane::ring_bell(&bell.bell);
    }
}

/// Room reserved for one record by [`Producer::try_claim`]: write the
/// payload with [`Claim::fill`] or [`Claim::commit_with`] (pending until the producer
/// publishes). Dropped uncommitted, it leaves no trace.
pub struct Claim<'p> {
    producer: &'p mut Producer,
    len: usize,
    kind: u32,
}

impl<'p> Claim<'p> {
    fn new(producer: &'p mut Producer, len: usize) -> Claim<'p> {
        Claim { producer, len, kind: 0 }
    }

    /// Sets the record's kind.
    pub fn set_kind(&mut self, kind: u32) {
        self.kind = kind;
    }

    /// Writes `payload` (exactly the claimed length) and commits.
    pub fn fill(mut self, kind: u32, payload: &[u8]) {
        assert_eq!(payload.len(), self.len, "a claim is filled with exactly the claimed length");
        self.kind = kind;
        let p = &mut *self.producer;
        p.writing.write(&ends(&p.files, &p.lane.map, p.k), self.kind, payload);
    }

    /// Writes the payload by words: `f` gets the record's payload as
    /// 64-bit words to store (zero-padded at the end), then the claim is
    /// committed. For building a record in place without a copy.
    pub fn commit_with(self, f: impl FnOnce(&[AtomicU64])) {
        let p = &mut *self.producer;
        let e = ends(&p.files, &p.lane.map, p.k);
        let (w, advance) = p.writing.begin(&e, self.len, self.kind);
        f(&e.data[w..w + self.len.div_ceil(8)]);
        p.writing.end(self.len, advance);
    }
}

/// Room reserved for a batch of records by [`Producer::try_claim_batch`]
/// (or [`Producer::claim_batch_timeout`], [`Producer::try_claim_lens`]):
/// [`Batch::push`] writes them one after the other, and
/// [`Batch::commit`] (or dropping the batch) publishes every record pushed,
/// with those pending before, at once. Room left unused is not published
/// and stays free. The bookkeeping (the head, the sequence, the lane's
/// counters) is done once for the batch.
pub struct Batch<'p> {
    writing: &'p mut Writing,
    e: Ends<'p>,
    files: &'p RingFiles,
    lane: usize,
    max: usize,
    claimed: usize,
    /// Running offset of the next record.
    at: u64,
    /// No record may end past this running offset.
    limit: u64,
    /// Sequence of the next record.
    seq: u64,
    pushed: usize,
    bytes: u64,
}

impl Batch<'_> {
    /// Records the batch has room for (claimed).
    pub fn claimed(&self) -> usize {
        self.claimed
    }

    /// Records pushed so far.
    pub fn pushed(&self) -> usize {
        self.pushed
    }

    /// Records that may still be pushed.
    pub fn remaining(&self) -> usize {
        self.claimed - self.pushed
    }

    /// Checks that a record of `len` bytes may be pushed next; returns
    /// where it ends.
    #[inline]
    fn next_end(&self, len: usize) -> Result<u64, SendError> {
        if len > self.max {
            return Err(SendError::TooLarge { len, max: self.max });
        }
        let end = lane::place(self.at, self.e.data.len() as u64 * 8, len).1;
        if self.pushed == self.claimed || end > self.limit {
            return Err(SendError::BatchFull { claimed: self.claimed });
        }
        Ok(end)
    }

    #[inline]
    fn pushed_one(&mut self, end: u64, len: usize) -> u64 {
        self.at = end;
        self.pushed += 1;
        self.bytes += len as u64;
        self.seq += 1;
        self.seq - 1
    }

    /// Writes the next record: `payload` of `kind`. Returns its sequence
    /// number in the lane. [`SendError::BatchFull`] past the room claimed
    /// (more records, or longer ones than the room left holds).
    #[inline]
    pub fn push(&mut self, kind: u32, payload: &[u8]) -> Result<u64, SendError> {
        let end = self.next_end(payload.len())?;
        put(&self.e, self.at, self.seq, kind, payload);
        Ok(self.pushed_one(end, payload.len()))
    }

    /// Writes the next record, a plain-old-data value.
    #[inline]
    pub fn push_pod<T: Pod>(&mut self, kind: u32, value: &T) -> Result<u64, SendError> {
        self.push(kind, bytemuck::bytes_of(value))
    }

    /// Writes the next record, of `len` bytes, in place: `f` gets its
    /// payload as 64-bit words to store (the last zero-padded).
    #[inline]
    pub fn push_with(&mut self, kind: u32, len: usize, f: impl FnOnce(&[AtomicU64])) -> Result<u64, SendError> {
        let end = self.next_end(len)?;
        put_with(&self.e, self.at, self.seq, kind, len, f);
        Ok(self.pushed_one(end, len))
    }

    /// Publishes the records pushed (and any pending before them); returns
    /// how many this batch pushed.
    pub fn commit(self) -> usize {
        self.pushed
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        self.writing.ended(self.at - self.writing.head, self.pushed as u64, self.bytes);
        if self.writing.publish(&self.e, &self.files.header().sleeping) {
            lane::ring_bell(&self.files.bell().bell);
        }
    }
}

impl std::fmt::Debug for Batch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("lane", &self.lane)
            .field("claimed", &self.claimed)
            .field("pushed", &self.pushed)
            .finish()
    }
}
