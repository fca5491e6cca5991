//! The consumer: binds lane files, drains the lanes fairly, sleeps on the
//! doorbell, drops broken lanes and frees the lanes of dead producers
//! (`docs/abi.md` §11.4–11.9).

use std::time::Duration;

use crate::shm::{self, Namespace};
use crate::sync::{host, spin_hint, Ordering};
use crate::wait::WaitStrategy;

use super::error::{FanInError, LaneProblem, LaneReport};
use super::files::{self, FanInGeometry, RingFiles};
use super::folder::{self, Aside, Judged};
use super::lane::{self, Ends, LaneFault, Reading};
use super::lane_file::{self, LaneFile};
use super::layout::*;
use super::lease;
use super::record::{record, Record};
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
    /// A lane file this consumer cannot take for now: its own process
    /// could not map it (out of memory, or of the fault guard's slots).
    /// The file is left as it is and looked at again at every scan; said
    /// once until it is taken. Its producer waits meanwhile.
    Unbindable {
        /// Lane index.
        lane: usize,
        /// Why, naming the file.
        reason: String,
    },
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
        unsafe { lane_file::lane_view(&self.lf.map, self.lf.capacity) }.0
    }

    fn ends_of<'a>(lf: &'a LaneFile, state: &'a LaneState) -> Ends<'a> {
        // SAFETY: as in `Bound::hdr`.
        let (hdr, data) = unsafe { lane_file::lane_view(&lf.map, lf.capacity) };
        Ends { hdr, state, data }
    }
}

/// The consumer of a fan-in ring: one per ring (its file lock says so).
pub struct FanIn {
    files: RingFiles,
    name: String,
    lanes: Vec<Option<Bound>>,
    /// `attach_seq` as of the last rescan.
    attach_seen: u32,
    /// `attach_seq` as last looked at (requests up to it are counted).
    attach_counted: u32,
    /// The rescan limit's clock (monotonic ns; a GCRA's theoretical
    /// arrival time): a requested rescan may be made once it is within
    /// `RESCAN_BURST` intervals of now.
    rescan_tat_ns: u64,
    /// When the last scan was made (monotonic ns).
    scanned_ns: u64,
    next: usize,
    wait: WaitStrategy,
    /// Lanes dropped when this consumer attached, reported by the first
    /// drain or sweep (attaching has nobody to tell).
    pending: Vec<LaneReport>,
    /// The lanes whose file could not be mapped, said ([`Event::Unbindable`]).
    unbindable: Vec<bool>,
}

/// Rescans producers ask for (by bumping `attach_seq`) are limited to
/// [`RESCAN_BURST`] at once, then one every `RESCAN_INTERVAL`: a producer
/// that bumps it in a loop gets at most 100 rescans a second, each a
/// system call or two per lane, while producers attaching now and then
/// are bound at once. A request that comes too soon is served when the
/// limit allows (at most an interval later); those are counted
/// (`FanInHeader::rescans_refused`).
pub(crate) const RESCAN_INTERVAL: Duration = Duration::from_millis(10);
/// Requested rescans allowed back to back (see [`RESCAN_INTERVAL`]).
pub(crate) const RESCAN_BURST: u64 = 16;
/// The consumer scans at least this often, asked or not: any producer may
/// write `attach_seq`, and one that put it back after another's bump
/// would keep that producer's lane from being bound (by a consumer that
/// never calls [`FanIn::sweep`]) for as long as it liked.
pub(crate) const SCAN_AT_LEAST: Duration = Duration::from_secs(1);

impl FanIn {
    /// Creates fan-in ring `name` and becomes its consumer. Refused with
    /// [`FanInError::BroadcastNamed`] while a broadcast ring (either of its
    /// files) has that name: one name is one ring.
    pub fn create(ns: &Namespace, name: &str, opts: &FanInOptions) -> Result<FanIn, FanInError> {
        FanIn::from_files(name, files::create(ns, name, opts)?)
    }

    /// Becomes the consumer of an existing fan-in ring (after a restart):
    /// lanes resume where the last consumer released them. Lane files it
    /// drops on attaching (made or spoiled while no consumer ran) are
    /// reported by the first drain or sweep.
    pub fn attach(ns: &Namespace, name: &str) -> Result<FanIn, FanInError> {
        FanIn::from_files(name, files::open_ring(ns, name, true)?)
    }

    /// Gives the ring's folder, its own file and its doorbell the access
    /// `mode` and `group` would give a new ring ([`FanInOptions`]; `group`
    /// `None`: this process's), where it differs; returns the files
    /// changed. For a consumer that attached to a ring made before its
    /// configuration changed: mode and group are set only at creation, so
    /// a tightened mode would otherwise change nothing. Only who may open
    /// the files from now on changes: a producer bound to a lane keeps it.
    pub fn set_access(&self, mode: u32, group: Option<u32>) -> Result<Vec<std::path::PathBuf>, FanInError> {
        files::set_access(&self.files.dir, mode, group)
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
        let unbindable = vec![false; files.geometry.lanes as usize];
        let seq = files.bell().attach_seq.load(Ordering::Relaxed);
        let mut fan = FanIn {
            files,
            name: name.to_owned(),
            lanes,
            attach_seen: seq,
            attach_counted: seq,
            rescan_tat_ns: 0,
            scanned_ns: 0,
            next: 0,
            wait: Default::default(),
            pending: Vec::new(),
            unbindable,
        };
        let mut dropped = Vec::new();
        fan.scan(&mut |e| {
            if let Event::Dropped(report) = e {
                dropped.push(report);
            }
        });
        // Nobody was told of a lane it could not map yet: the next scan says it.
        fan.unbindable.fill(false);
        fan.pending = dropped;
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

    /// Why this consumer last gave the ring a new doorbell, when it
    /// attached or in [`FanIn::repair_bell`]: the old one, the one file
    /// producers may write, was not this ring's whole doorbell.
    pub fn bell_replaced(&self) -> Option<&FanInError> {
        self.files.bell_replaced.as_ref()
    }

    /// Gives the ring a new doorbell if a producer broke the one in the
    /// folder: whether it did ([`FanIn::bell_replaced`] says why). Broken
    /// is shrunk under this consumer's mapping ([`FanIn::damage`] names
    /// it), or not opening as this ring's doorbell of one page (scribbled
    /// on, grown, shrunk and grown back): producers refuse such a doorbell,
    /// so until it is replaced none can attach, and what the consumer maps
    /// may reach nobody. Producers still mapping the old one ring it in
    /// vain until they attach again; the consumer's timed waits find their
    /// records meanwhile. Opens the doorbell to look at it: for a sweep,
    /// not for every round.
    pub fn repair_bell(&mut self) -> Result<bool, FanInError> {
        let f = &self.files;
        let why = match self.files.bell.is_damaged() {
            true => FanInError::Damaged { path: f.dir.join(files::BELL_FILE) },
            false => match files::open_bell(&f.ns, &self.name, &f.dir, f.geometry.created_ns, false) {
                Ok(_) => return Ok(false),
                Err(e) if files::replaceable(&e) => e,
                Err(e) => return Err(e),
            },
        };
        files::replace_bell(&f.dir, &f.ring_file, f.geometry.created_ns)?;
        let bell = files::open_bell(&f.ns, &self.name, &f.dir, f.geometry.created_ns, false)?;
        self.files.bell = bell;
        self.files.bell_replaced = Some(why);
        Ok(true)
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
        self.report_pending(&mut f);
        self.rescan_if_asked(&mut f);
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
        if !self.pending.is_empty() || self.ready() {
            return true;
        }
        let deadline = crate::ring::deadline(timeout);
        // The clock costs more than a look at the lanes: read it only every
        // so often, so a spinning consumer reacts sooner and its spin lasts
        // about as long as the strategy means (a read on every poll made
        // the default 4,096 polls last most of a millisecond here).
        let mut now = host::now_ns();
        for i in 0..self.wait.spins() {
            let due = now >= self.rescan_due_ns();
            if any_ready(&self.files, &mut self.lanes, self.attach_seen, due) {
                return true;
            }
            spin_hint();
            if i % CLOCK_EVERY == CLOCK_EVERY - 1 {
                now = host::now_ns();
                if now >= deadline {
                    return false;
                }
            }
        }
        let h = self.files.header();
        h.sleeps.store(h.sleeps.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        // A rescan asked for too soon after the last is due at the end of
        // the interval: sleep no longer than that, and do not count the
        // request as something to wake for before.
        let (due, scan_due) = (self.rescan_due_ns(), self.scan_due_ns());
        let (files, lanes, seen) = (&self.files, &mut self.lanes, self.attach_seen);
        // A scan due wakes it too (looked at every `PARK_RECHECK`).
        let ready = || {
            let now = host::now_ns();
            now >= scan_due || any_ready(files, lanes, seen, now >= due)
        };
        let asked = files.bell().attach_seq.load(Ordering::Relaxed) != seen;
        let until = if asked { deadline.min(due) } else { deadline };
        lane::park_consumer(&h.sleeping, &files.bell().bell, Some(until), ready) || (asked && host::now_ns() >= due)
    }

    fn ready(&mut self) -> bool {
        let due = host::now_ns() >= self.rescan_due_ns();
        any_ready(&self.files, &mut self.lanes, self.attach_seen, due)
    }

    /// When a scan is due, asked for or not ([`SCAN_AT_LEAST`]).
    fn scan_due_ns(&self) -> u64 {
        self.scanned_ns.saturating_add(SCAN_AT_LEAST.as_nanos() as u64)
    }

    /// When a rescan a producer asks for may be made.
    fn rescan_due_ns(&self) -> u64 {
        self.rescan_tat_ns.saturating_sub(RESCAN_BURST * RESCAN_INTERVAL.as_nanos() as u64)
    }

    /// Rescans if a producer asked (bumped `attach_seq`) and the limit
    /// allows (see [`RESCAN_INTERVAL`]); else counts the requests as
    /// refused (they are served once it does).
    fn rescan_if_asked(&mut self, f: &mut dyn FnMut(Event<'_>)) {
        let seq = self.files.bell().attach_seq.load(Ordering::Relaxed);
        if seq == self.attach_seen {
            if host::now_ns() >= self.scan_due_ns() {
                self.scan(f);
            }
            return;
        }
        let now = host::now_ns();
        if now >= self.rescan_due_ns() {
            self.rescan_tat_ns = self.rescan_tat_ns.max(now) + RESCAN_INTERVAL.as_nanos() as u64;
            self.attach_seen = seq;
            self.attach_counted = seq;
            self.scan(f);
        } else if seq != self.attach_counted {
            super::stats::count_refused(self.files.header(), seq.wrapping_sub(self.attach_counted));
            self.attach_counted = seq;
        }
    }

    /// Looks at every lane file: binds new ones, drops bad ones, marks the
    /// lanes of dead producers to be freed once drained, and finds mappings
    /// whose files shrank. What a producer that finds no free lane asks
    /// for (it bumps `attach_seq`); helixd runs it periodically too.
    pub fn sweep(&mut self, mut f: impl FnMut(Event<'_>)) {
        self.report_pending(&mut f);
        self.scan(&mut f);
    }

    /// Hands on the reports of lanes dropped at attach.
    fn report_pending(&mut self, f: &mut dyn FnMut(Event<'_>)) {
        for report in std::mem::take(&mut self.pending) {
            f(Event::Dropped(report));
        }
    }

    fn scan(&mut self, f: &mut dyn FnMut(Event<'_>)) {
        self.scanned_ns = host::now_ns();
        self.files.keep_ring_locked();
        let h = self.files.header();
        h.rescans.store(h.rescans.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        for k in 0..self.lanes.len() {
            if self.lanes[k].is_none() {
                self.try_bind(k, f);
            }
            let Some(b) = &mut self.lanes[k] else { continue };
            if b.lf.map.probe() {
                self.drop_lane(k, LaneProblem::Protocol(LaneFault::Shrunk), f);
            } else if !shm::names_file(&self.files.lane_paths[k], &b.lf.file).unwrap_or(true) {
                // Its producer (or an operator) removed or renamed the file
                // bound: the lane's name is free, and the next producer's
                // file there would never be bound while this one lives.
                // Dropped (what is unread in it with it, reported), as a
                // shrunk one is.
                let reason = "its file was removed or renamed while bound".to_owned();
                self.drop_lane(k, LaneProblem::BadFile { reason }, f);
                self.try_bind(k, f);
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

    /// Binds lane `k`'s file, if there is one; reports it once and moves
    /// it out of the lane's name if it is not a lane of this ring. An
    /// entry a refusal put back under the name (`refuse`) is judged at
    /// once, once: its producer may be publishing.
    fn try_bind(&mut self, k: usize, f: &mut dyn FnMut(Event<'_>)) {
        if self.try_bind_once(k, f) {
            self.try_bind_once(k, f);
        }
    }

    /// [`FanIn::try_bind`] without the second look: whether a refusal put
    /// another entry back under the name.
    fn try_bind_once(&mut self, k: usize, f: &mut dyn FnMut(Event<'_>)) -> bool {
        match lane_file::open_lane(&self.files.lane_paths[k], k, &self.files.geometry, crate::process::my_uid()) {
            Ok(Some(lf)) => {
                self.unbindable[k] = false;
                self.bind(k, lf, f)
            }
            Ok(None) => false,
            Err(bad) if bad.is_ours() => {
                if !std::mem::replace(&mut self.unbindable[k], true) {
                    let path = self.files.lane_paths[k].display();
                    f(Event::Unbindable { lane: k, reason: format!("{path}: {}", bad.reason) });
                }
                false
            }
            Err(bad) => {
                self.report(k, bad.uid, 0, bad.epoch, LaneProblem::BadFile { reason: bad.reason }, f);
                self.refuse(k, bad.judged, bad.why, bad.epoch)
            }
        }
    }

    /// Binds `lf` to lane `k`, or refuses it (then: whether the refusal
    /// put another entry back under the name).
    fn bind(&mut self, k: usize, lf: LaneFile, f: &mut dyn FnMut(Event<'_>)) -> bool {
        let st = self.files.state(k);
        let g = &self.files.geometry;
        // SYNC POINT: lane bound (our own earlier stores; Relaxed suffices).
        // The file bound last (its epoch and inode), whatever the status
        // says: a consumer killed between storing the epoch and the
        // status (below) left a lane whose producer saw its epoch and
        // published; binding it afresh would refuse it (its epoch is not
        // the next) and lose those records.
        let epoch = st.epoch.load(Ordering::Relaxed);
        let resume = epoch == lf.epoch && st.ino.load(Ordering::Relaxed) == lf.judged.ino;
        let problem = if !g.allow_uids.is_empty() && !g.allow_uids.contains(&lf.uid) {
            Some((LaneProblem::NotAllowed { uid: lf.uid }, "not-allowed"))
        } else if !resume && Some(lf.epoch) != epoch.checked_add(1) {
            // Exactly the next epoch: a producer that could push the lane's
            // epoch ahead (to u64::MAX) would break it for every producer
            // after it.
            let reason = format!("its epoch {} is not the lane's next, {epoch} + 1", lf.epoch);
            Some((LaneProblem::BadFile { reason }, "bad-epoch"))
        } else {
            None
        };
        if let Some((problem, why)) = problem {
            self.report(k, lf.uid, lf.pid, lf.epoch, problem, f);
            return self.refuse(k, lf.judged, why, lf.epoch);
        }
        let reading = if resume {
            st.uid.store(lf.uid, Ordering::Relaxed);
            st.pid.store(lf.pid, Ordering::Relaxed);
            // SYNC POINT: lane bound (its epoch was stored before).
            st.status.store(LANE_BOUND, Ordering::Release);
            Reading::resume(&Bound::ends_of(&lf, st), g.max_payload)
        } else {
            lease::bind_fresh(st, lf.epoch, lf.judged.ino, lf.uid, lf.pid, host::realtime_ns());
            Reading::new(0, 1, g.max_payload)
        };
        self.lanes[k] = Some(Bound { lf, reading, dead: false });
        false
    }

    /// Moves the refused entry `judged` out of lane `k`'s name (only it:
    /// `folder::move_aside`) and marks the lane free (a restarted consumer
    /// may find it marked bound). A refused file of the lane's next epoch
    /// spends that epoch first (docs/abi.md §11.9): a producer that links
    /// there once the name is free finds the epoch it read spent, and
    /// tries again (`LaneFile::link`), rather than publish into a file
    /// refused later. Returns whether another entry is back under the
    /// name, with the spent epoch passed to it: the caller binds it.
    fn refuse(&self, k: usize, judged: Judged, why: &str, epoch: u64) -> bool {
        let st = self.files.state(k);
        let next = st.epoch.load(Ordering::Relaxed).checked_add(1) == Some(epoch);
        if next {
            lease::spend(st, epoch, judged.ino);
        }
        let aside = folder::move_aside(&self.files.dir, k, why, judged);
        let passed = match (next, aside) {
            // The refused file's owner replaced it after it was judged,
            // and the entry under the name now may be another producer's
            // that read the epoch before it was spent: the spent epoch
            // passes to it, as if it had been bound and the consumer
            // killed before its status (`bind` resumes it; a producer
            // that saw the epoch spent first moves it aside itself).
            (true, Ok(Aside::Swapped(Some(other)))) => {
                st.ino.store(other.ino, Ordering::Relaxed);
                // A lease of its own (`bind` resumes it, and counts none).
                st.bound_ns.store(host::realtime_ns(), Ordering::Relaxed);
                st.leases.store(st.leases.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
                true
            }
            _ => false,
        };
        // SYNC POINT: lane freed.
        st.status.store(LANE_FREE, Ordering::Release);
        passed
    }

    /// Up to `budget` records of lane `k`; then frees the lane if its
    /// producer is gone and nothing is left, or drops it if it is broken.
    /// Generic over the callback, so a drain's own is called directly (and
    /// inlined) for each record, not through a `dyn`.
    fn drain_lane<F: FnMut(Event<'_>) + ?Sized>(&mut self, k: usize, budget: usize, f: &mut F) -> usize {
        let Some(b) = self.lanes[k].as_mut() else { return 0 };
        let state = self.files.state(k);
        let (n, result) = {
            let Bound { lf, reading, .. } = &mut *b;
            let e = Bound::ends_of(lf, state);
            let damage = lf.map.damage_flag();
            let taken = reading.take(&e, budget, |found| {
                f(Event::Record(record(k, lf, &e, found, damage)));
                !damage.is_set()
            });
            if taken.records > 0 {
                reading.release(&e);
                state.records.store(state.records.load(Ordering::Relaxed) + taken.records as u64, Ordering::Relaxed);
                state.bytes.store(state.bytes.load(Ordering::Relaxed) + taken.bytes, Ordering::Relaxed);
            }
            (taken.records, taken.end)
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
        let _ = folder::move_aside(&self.files.dir, k, "retired", b.lf.judged);
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
}

/// Whether any lane may have a record, a lane file may have come or gone
/// (if a rescan may be made now), or a lane is broken (the next drain
/// reports it).
fn any_ready(files: &RingFiles, lanes: &mut [Option<Bound>], attach_seen: u32, rescan_due: bool) -> bool {
    if rescan_due && files.bell().attach_seq.load(Ordering::Relaxed) != attach_seen {
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
        // Only this process's: a process forked from the consumer drops its
        // copy without taking the role from its parent.
        let me = host::identity().0;
        let _ = self.files.header().consumer_pid.compare_exchange(me, 0, Ordering::Relaxed, Ordering::Relaxed);
    }
}
