//! The consumer: binds lane files, drains the lanes fairly, sleeps on the
//! doorbell, drops broken lanes and frees the lanes of dead producers
//! (`docs/abi.md` §11.4–11.9).

use std::time::Duration;

use bytemuck::Pod;

use crate::guard::DamageFlag;
use crate::shm::{self, Namespace};
use crate::sync::{host, spin_hint, AtomicU64, Ordering};
use crate::wait::WaitStrategy;

use super::error::{FanInError, LaneProblem, LaneReport};
use super::files::{self, FanInGeometry, LaneFile, RingFiles};
use super::lane::{self, Ends, Found, LaneFault, Reading};
use super::layout::*;
use super::FanInOptions;

/// Polls of a spinning wait per look at the clock for its deadline.
const CLOCK_EVERY: u32 = 64;

/// What a drain hands the caller: a record, or a lane it dropped.
pub enum Event<'a> {
    /// The next record of a lane, in that lane's order.
    Record(Record<'a>),
    /// A lane whose producer broke the protocol (or may not produce) was
    /// dropped: its file is removed, the lane is free, nothing more of it
    /// is delivered. Other lanes are untouched.
    Dropped(LaneReport),
}

/// Why a record's payload could not be copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The destination is smaller than the record.
    #[error("the record is {len} bytes; the buffer holds {capacity}")]
    TooSmall { len: usize, capacity: usize },
    /// A typed read asked for another size.
    #[error("the record is {len} bytes; {wanted} were asked for")]
    WrongSize { len: usize, wanted: usize },
    /// The lane file shrank under the copy: nothing valid was copied (the
    /// lane is dropped after this record's callback).
    #[error("the lane file shrank under the copy")]
    Shrunk,
}

/// A record in place in its lane, valid during the callback. Copies are
/// whole atomic word loads from bounds-checked offsets.
pub struct Record<'a> {
    /// Lane index.
    pub lane: usize,
    /// The lane file's owner, from the kernel.
    pub uid: u32,
    /// The producer's pid, from the kernel (0 if unknown).
    pub pid: u32,
    /// The producer's sequence number in its lane file (from 1).
    pub seq: u64,
    /// Application-defined kind.
    pub kind: u32,
    words: &'a [AtomicU64],
    len: usize,
    damage: DamageFlag,
}

impl Record<'_> {
    /// Payload length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies the payload into the front of `dst`; returns its length.
    pub fn copy_to(&self, dst: &mut [u8]) -> Result<usize, RecordError> {
        if dst.len() < self.len {
            return Err(RecordError::TooSmall { len: self.len, capacity: dst.len() });
        }
        crate::ring::load_bytes(self.words, 0, &mut dst[..self.len]);
        // A fault repaired mid-copy left zeros in part of it.
        if self.damage.is_set() {
            return Err(RecordError::Shrunk);
        }
        Ok(self.len)
    }

    /// The payload as a new vector.
    pub fn to_vec(&self) -> Result<Vec<u8>, RecordError> {
        let mut v = vec![0; self.len];
        self.copy_to(&mut v)?;
        Ok(v)
    }

    /// The payload as a plain-old-data value of exactly its size.
    pub fn read<T: Pod>(&self) -> Result<T, RecordError> {
        let mut v = T::zeroed();
        let bytes = bytemuck::bytes_of_mut(&mut v);
        if bytes.len() != self.len {
            return Err(RecordError::WrongSize { len: self.len, wanted: bytes.len() });
        }
        self.copy_to(bytes)?;
        Ok(v)
    }
}

struct Bound {
    lf: LaneFile,
    reading: Reading,
    /// Its producer was found dead: free the lane once drained.
    dead: bool,
}

impl Bound {
    fn hdr(&self) -> &LaneHeader {
        // SAFETY: `open_lane` checked the file: a whole lane of the ring's
        // capacity (the header alone is used here).
        unsafe { files::lane_view(&self.lf.map, self.lf.capacity) }.0
    }

    fn ends_of<'a>(lf: &'a LaneFile, state: &'a LaneState) -> Ends<'a> {
        // SAFETY: as in `Bound::hdr`.
        let (hdr, data) = unsafe { files::lane_view(&lf.map, lf.capacity) };
        Ends { hdr, state, data }
    }
}

/// The consumer of a fan-in ring: one per ring (its file lock says so).
pub struct FanIn {
    files: RingFiles,
    name: String,
    lanes: Vec<Option<Bound>>,
    attach_seen: u32,
    next: usize,
    wait: WaitStrategy,
}

impl FanIn {
    /// Creates fan-in ring `name` and becomes its consumer.
    pub fn create(ns: &Namespace, name: &str, opts: &FanInOptions) -> Result<FanIn, FanInError> {
        FanIn::from_files(name, files::create(ns, name, opts)?)
    }

    /// Becomes the consumer of an existing fan-in ring (after a restart):
    /// lanes resume where the last consumer released them.
    pub fn attach(ns: &Namespace, name: &str) -> Result<FanIn, FanInError> {
        FanIn::from_files(name, files::open_ring(ns, name, true)?)
    }

    /// Removes fan-in ring `name` (its folder and every file in it).
    pub fn unlink(ns: &Namespace, name: &str) -> Result<(), FanInError> {
        files::unlink(ns, name)
    }

    fn from_files(name: &str, files: RingFiles) -> Result<FanIn, FanInError> {
        let h = files.header();
        let (pid, start) = host::identity();
        h.consumer_pid.store(pid, Ordering::Relaxed);
        h.consumer_start_time.store(start, Ordering::Relaxed);
        h.consumer_since_ns.store(host::realtime_ns(), Ordering::Relaxed);
        // A consumer that died asleep left this set: producers would ring
        // for nothing until we first sleep.
        h.sleeping.store(0, Ordering::Relaxed);
        let lanes = (0..files.geometry.lanes).map(|_| None).collect();
        let mut fan = FanIn { files, name: name.to_owned(), lanes, attach_seen: 0, next: 0, wait: Default::default() };
        fan.attach_seen = fan.files.bell().attach_seq.load(Ordering::Relaxed);
        // Reports of lanes dropped at attach are in the counters.
        fan.scan(&mut |_| {});
        Ok(fan)
    }

    pub(super) fn files(&self) -> &RingFiles {
        &self.files
    }

    /// The ring name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The ring's geometry.
    pub fn geometry(&self) -> &FanInGeometry {
        &self.files.geometry
    }

    /// The ring's own file or doorbell, if one was shrunk under this
    /// consumer's mapping (then it reads as zeros: recreate the ring).
    pub fn damage(&self) -> Option<std::path::PathBuf> {
        self.files.damaged()
    }

    /// How [`FanIn::drain_timeout`] waits (default: spin briefly, then park).
    pub fn set_wait(&mut self, wait: WaitStrategy) {
        self.wait = wait;
    }

    /// One fair round without waiting: up to `per_lane` records from each
    /// lane, lanes in turn (the first lane moves on by one every round), so
    /// a busy lane cannot starve the others. Each lane's records come in
    /// order; each lane's space is released once per round.
    pub fn try_drain(&mut self, per_lane: usize, mut f: impl FnMut(Event<'_>)) -> usize {
        let seq = self.files.bell().attach_seq.load(Ordering::Relaxed);
        if seq != self.attach_seen {
            self.attach_seen = seq;
            self.scan(&mut f);
        }
        let n = self.lanes.len();
        let mut total = 0;
        for i in 0..n {
            total += self.drain_lane((self.next + i) % n, per_lane, &mut f);
        }
        self.next = (self.next + 1) % n.max(1);
        if total > 0 {
            let rounds = &self.files.header().rounds;
            rounds.store(rounds.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        }
        total
    }

    /// Waits (per the wait strategy) up to `timeout` for a record, then
    /// drains one round; returns the records delivered (0 at the timeout).
    pub fn drain_timeout(&mut self, per_lane: usize, timeout: Duration, f: impl FnMut(Event<'_>)) -> usize {
        self.wait_timeout(timeout);
        self.try_drain(per_lane, f)
    }

    /// Waits until some lane may have a record (or a producer attached or
    /// left), at most `timeout`: spins, then sleeps on the doorbell. No
    /// lost wake-up: a producer that publishes while we fall asleep sees
    /// `sleeping` and rings.
    pub fn wait_timeout(&mut self, timeout: Duration) -> bool {
        // A busy consumer finds records at once: no clock read then.
        if self.ready() {
            return true;
        }
        let deadline = crate::ring::deadline(timeout);
        for i in 0..self.wait.spins() {
            if self.ready() {
                return true;
            }
            spin_hint();
            // The clock costs more than a look at the lanes: read it only
            // every so often, so a spinning consumer reacts sooner.
            if i % CLOCK_EVERY == CLOCK_EVERY - 1 && host::now_ns() >= deadline {
                return false;
            }
        }
        let h = self.files.header();
        h.sleeps.store(h.sleeps.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        let (files, lanes, seen) = (&self.files, &mut self.lanes, self.attach_seen);
        lane::park_consumer(&h.sleeping, &files.bell().bell, Some(deadline), || any_ready(files, lanes, seen))
    }

    fn ready(&mut self) -> bool {
        any_ready(&self.files, &mut self.lanes, self.attach_seen)
    }

    /// Looks at every lane file: binds new ones, drops bad ones, marks the
    /// lanes of dead producers to be freed once drained, and finds mappings
    /// whose files shrank. What a producer that finds no free lane asks
    /// for (it bumps `attach_seq`); helixd runs it periodically too.
    pub fn sweep(&mut self, mut f: impl FnMut(Event<'_>)) {
        self.scan(&mut f);
    }

    fn scan(&mut self, f: &mut dyn FnMut(Event<'_>)) {
        let h = self.files.header();
        h.rescans.store(h.rescans.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        for k in 0..self.lanes.len() {
            if self.lanes[k].is_none() {
                self.try_bind(k, f);
            }
            let Some(b) = &mut self.lanes[k] else { continue };
            if b.lf.map.probe() {
                self.drop_lane(k, LaneProblem::Protocol(LaneFault::Shrunk), f);
            } else if !b.dead {
                // A lease lock nobody holds: its producer is gone. Free the
                // lane now if nothing is left in it, else once drained.
                b.dead = !shm::live_lock_held(&b.lf.file).unwrap_or(true);
                if b.dead {
                    self.drain_lane(k, 0, f);
                }
            }
        }
    }

    /// Binds lane `k`'s file, if there is one; reports and removes it if
    /// it is not a lane of this ring.
    fn try_bind(&mut self, k: usize, f: &mut dyn FnMut(Event<'_>)) {
        match files::open_lane(&self.files.dir, k, &self.files.geometry) {
            Ok(Some(lf)) => self.bind(k, lf, f),
            Ok(None) => {}
            Err(bad) => {
                let problem = LaneProblem::BadFile { reason: bad.reason };
                self.report(k, bad.uid, 0, bad.epoch, problem, f);
                if let Some(file) = bad.file {
                    self.remove(k, &file);
                }
            }
        }
    }

    fn bind(&mut self, k: usize, lf: LaneFile, f: &mut dyn FnMut(Event<'_>)) {
        let st = self.files.state(k);
        let g = &self.files.geometry;
        // SYNC POINT: lane bound (our own earlier stores; Relaxed suffices).
        let (epoch, status) = (st.epoch.load(Ordering::Relaxed), st.status.load(Ordering::Relaxed));
        let resume = status == LANE_BOUND && epoch == lf.epoch && st.ino.load(Ordering::Relaxed) == lf.ino;
        let problem = if !g.allow_uids.is_empty() && !g.allow_uids.contains(&lf.uid) {
            Some(LaneProblem::NotAllowed { uid: lf.uid })
        } else if !resume && Some(lf.epoch) != epoch.checked_add(1) {
            // Exactly the next epoch: a producer that could push the lane's
            // epoch ahead (to u64::MAX) would break it for every producer
            // after it.
            Some(LaneProblem::BadFile { reason: format!("its epoch {} is not the lane's next, {epoch} + 1", lf.epoch) })
        } else {
            None
        };
        if let Some(problem) = problem {
            self.report(k, lf.uid, lf.pid, lf.epoch, problem, f);
            self.remove(k, &lf.file);
            return;
        }
        let (tail, next_seq) = if resume {
            (st.tail.load(Ordering::Relaxed), st.next_seq.load(Ordering::Relaxed))
        } else {
            st.tail.store(0, Ordering::Relaxed);
            st.next_seq.store(1, Ordering::Relaxed);
            st.ino.store(lf.ino, Ordering::Relaxed);
            st.bound_ns.store(host::realtime_ns(), Ordering::Relaxed);
            st.leases.store(st.leases.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
            // SYNC POINT: lane bound. Pairs with the producer's Acquire load
            // of `epoch` in `Writing::fits`: once it sees its epoch,
            // the tail it reads is this lane file's (0 or later).
            st.epoch.store(lf.epoch, Ordering::Release);
            (0, 1)
        };
        st.uid.store(lf.uid, Ordering::Relaxed);
        st.pid.store(lf.pid, Ordering::Relaxed);
        st.status.store(LANE_BOUND, Ordering::Release);
        let reading = Reading::new(tail, next_seq, g.max_payload);
        self.lanes[k] = Some(Bound { lf, reading, dead: false });
    }

    /// Up to `budget` records of lane `k`; then frees the lane if its
    /// producer is gone and nothing is left, or drops it if it is broken.
    /// Generic over the callback, so a drain's own is called directly (and
    /// inlined) for each record, not through a `dyn`.
    fn drain_lane<F: FnMut(Event<'_>) + ?Sized>(&mut self, k: usize, budget: usize, f: &mut F) -> usize {
        let Some(b) = self.lanes[k].as_mut() else { return 0 };
        let state = self.files.state(k);
        let (mut n, mut bytes) = (0, 0);
        let result = {
            let Bound { lf, reading, .. } = &mut *b;
            let e = Bound::ends_of(lf, state);
            let damage = lf.map.damage_flag();
            let result = drain_records(reading, &e, budget, &mut n, &mut bytes, |found| {
                f(Event::Record(record(k, lf, &e, found, damage)));
                !damage.is_set()
            });
            if n > 0 {
                reading.release(&e);
                state.records.store(state.records.load(Ordering::Relaxed) + n as u64, Ordering::Relaxed);
                state.bytes.store(state.bytes.load(Ordering::Relaxed) + bytes, Ordering::Relaxed);
            }
            result
        };
        match result {
            Err(fault) => {
                let fault = if b.lf.map.is_damaged() { LaneFault::Shrunk } else { fault };
                self.drop_lane(k, LaneProblem::Protocol(fault), &mut |event| f(event));
            }
            Ok(empty) if empty && (b.dead || b.hdr().closed.load(Ordering::Acquire) == LANE_CLOSED) => {
                // SYNC POINT: lane closed. The Acquire pairs with the
                // producer's Release store of `closed` after its last
                // publish, so the empty check above saw everything.
                if b.reading.ready(&Bound::ends_of(&b.lf, state)) == Ok(false) {
                    self.retire(k);
                }
            }
            Ok(_) => {}
        }
        n
    }

    fn report(&self, k: usize, uid: u32, pid: u32, epoch: u64, problem: LaneProblem, f: &mut dyn FnMut(Event<'_>)) {
        let st = self.files.state(k);
        st.faults.store(st.faults.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        let h = self.files.header();
        h.faults.store(h.faults.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        f(Event::Dropped(LaneReport { ring: self.name.clone(), lane: k, uid, pid, epoch, problem }));
    }

    fn drop_lane(&mut self, k: usize, problem: LaneProblem, f: &mut dyn FnMut(Event<'_>)) {
        if let Some(b) = &self.lanes[k] {
            self.report(k, b.lf.uid, b.lf.pid, b.lf.epoch, problem, f);
        }
        self.retire(k);
    }

    /// Frees lane `k`: unbinds and removes its file, and tells producers
    /// waiting for a lane.
    fn retire(&mut self, k: usize) {
        let Some(b) = self.lanes[k].take() else { return };
        self.remove(k, &b.lf.file);
        drop(b);
        let h = self.files.header();
        // SYNC POINT: lane freed. Pairs with the producer's Acquire load
        // of `status` in `Producer::revoked`.
        self.files.state(k).status.store(LANE_FREE, Ordering::Release);
        h.reclaimed.store(h.reclaimed.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        // SYNC POINT: lane freed (attachers). Pairs with the Acquire load of
        // `lanes_freed` in `Producer::attach_timeout`.
        h.lanes_freed.fetch_add(1, Ordering::Release);
        // Not a futex on our own file: producers map it read-only, and the
        // kernel keys a shared futex by file and offset, so this reaches them.
        let _ = crate::sync::futex::wake_all(&h.lanes_freed);
    }

    /// Removes lane `k`'s name if it still names `file`.
    fn remove(&self, k: usize, file: &std::fs::File) {
        let path = self.files.dir.join(files::lane_name(k));
        if shm::names_file(&path, file).unwrap_or(false) {
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// Delivers up to `budget` records through `deliver` (which returns false
/// if the lane turned out damaged meanwhile); `Ok(true)` if the lane is
/// now empty.
fn drain_records(
    reading: &mut Reading,
    e: &Ends,
    budget: usize,
    n: &mut usize,
    bytes: &mut u64,
    mut deliver: impl FnMut(&Found) -> bool,
) -> Result<bool, LaneFault> {
    loop {
        let Some(found) = reading.next(e)? else { return Ok(true) };
        if *n >= budget {
            return Ok(false);
        }
        if !deliver(&found) {
            return Err(LaneFault::Shrunk);
        }
        reading.consume(&found);
        *n += 1;
        *bytes += found.len as u64;
    }
}

fn record<'a>(k: usize, lf: &LaneFile, e: &Ends<'a>, found: &Found, damage: DamageFlag) -> Record<'a> {
    let len = found.len as usize;
    Record {
        lane: k,
        uid: lf.uid,
        pid: lf.pid,
        seq: found.seq,
        kind: found.kind,
        words: &e.data[found.word..found.word + len.div_ceil(8)],
        len,
        damage,
    }
}

/// Whether any lane may have a record, a lane file may have come or gone,
/// or a lane is broken (the next drain reports it).
fn any_ready(files: &RingFiles, lanes: &mut [Option<Bound>], attach_seen: u32) -> bool {
    if files.bell().attach_seq.load(Ordering::Relaxed) != attach_seen {
        return true;
    }
    lanes.iter_mut().enumerate().any(|(k, b)| {
        b.as_mut().is_some_and(|b| {
            let e = Bound::ends_of(&b.lf, files.state(k));
            b.reading.ready(&e).unwrap_or(true) || b.hdr().closed.load(Ordering::Relaxed) == LANE_CLOSED
        })
    })
}

impl Drop for FanIn {
    fn drop(&mut self) {
        self.files.header().consumer_pid.store(0, Ordering::Relaxed);
    }
}
