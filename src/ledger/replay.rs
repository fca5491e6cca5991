//! Replaying a recorded range of one ring into another ring: the frames
//! with their original kind and payload, byte for byte, in order, at the
//! recorded pace, as fast as possible, or N times faster; a GAP record
//! arrives as a [`GapMarker`] frame. `helix-ledger replay` and
//! `docs/ledger.md` ("Replay").
//!
//! The ledger is walked from its start and verified on the way (every
//! block is checked before any of its frames is published); the walk stops
//! at the end of the segment that holds the first recorded sequence past
//! the range.

use std::ops::ControlFlow;
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytemuck::{Pod, Zeroable};

use super::block::BlockView;
use super::format::{GapInfo, RecordType, RingDecl};
use super::store::LedgerError;
use super::verify::{walk_blocks, VerifyFailure};
use crate::layout::assert_layout;
use crate::ring::{Claim, CreateError, LeaseError, PublishError};
use crate::Writer;

/// Frame kind of a [`GapMarker`]: "HL" (helix ledger), 1.
pub const KIND_LEDGER_GAP: u32 = 0x484C_0001;

/// What a replay publishes where the ledger holds a GAP record: the
/// recorded sequences lost, `first..=last` (docs/abi.md §9.3).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct GapMarker {
    /// The first lost sequence, as recorded.
    pub first: u64,
    /// The last lost sequence (inclusive).
    pub last: u64,
    /// Why, as the GAP record says (1: overwritten before the ledger read
    /// them; 2: larger than a ledger record may carry; 3: published into a
    /// replaced ring as the ledger let it go).
    pub reason: u32,
    /// Zero.
    pub zero: u32,
}

assert_layout!(GapMarker, 24; first @ 0, last @ 8, reason @ 16, zero @ 20);

/// How fast a replay publishes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// As recorded: each block when as much time has passed since the
    /// first one as passed between their `recv_ns` in the ledger.
    Recorded,
    /// As fast as the ring takes the frames.
    Max,
    /// The recorded pace, this many times faster (above 0).
    Faster(f64),
}

impl FromStr for Pace {
    type Err = String;
    fn from_str(s: &str) -> Result<Pace, String> {
        match s {
            "recorded" => Ok(Pace::Recorded),
            "max" => Ok(Pace::Max),
            _ => match s.strip_prefix('x').map(str::parse::<f64>) {
                Some(Ok(n)) if n > 0.0 && n.is_finite() => Ok(Pace::Faster(n)),
                _ => Err(format!(
                    "pace {s:?}: expected recorded, max or xN with N a number above 0 (x10: ten times faster)"
                )),
            },
        }
    }
}

impl Pace {
    /// The speed-up over the recorded pace; `None` at [`Pace::Max`].
    fn factor(self) -> Option<f64> {
        match self {
            Pace::Recorded => Some(1.0),
            Pace::Max => None,
            Pace::Faster(n) => Some(n),
        }
    }
}

/// How a replay is paced: `pace`, and the longest a paced replay waits
/// between two blocks. A pause in the recording (the plant stopped, the
/// recorder was down) longer than `max_pause` at the pace is cut to it;
/// `None` keeps every pause whole. A [`Pace`] alone keeps them whole.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pacing {
    /// How fast.
    pub pace: Pace,
    /// The longest wait between two blocks (ignored at [`Pace::Max`]).
    pub max_pause: Option<Duration>,
}

impl From<Pace> for Pacing {
    fn from(pace: Pace) -> Pacing {
        Pacing { pace, max_pause: None }
    }
}

/// What to replay: ring `ring`'s recorded sequences `from..=to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// The recorded ring's name.
    pub ring: String,
    /// The first sequence.
    pub from: u64,
    /// The last sequence (inclusive).
    pub to: u64,
}

/// What a replay published.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replayed {
    /// Frames published.
    pub frames: u64,
    /// [`GapMarker`]s published.
    pub gaps: u64,
    /// Recorded sequences the GAPs cover (within the range).
    pub lost: u64,
    /// The first and last recorded sequence published (frame or gap).
    pub span: Option<(u64, u64)>,
    /// The same for each incarnation of the ring (deleted and created
    /// again, its sequence counted from 1 again), in order: one, unless
    /// the range holds several.
    pub spans: Vec<(u64, u64)>,
    /// Bytes of a torn tail at the end of the last segment, not replayed
    /// (0 if the replay stopped before it: [`Summary::partial_tail`](super::verify::Summary::partial_tail)).
    pub partial_tail: u64,
    /// Pauses longer than [`Pacing::max_pause`] cut to it.
    pub pauses_cut: u64,
    /// What those cuts took off the schedule, at the pace.
    pub cut: Duration,
}

/// A replay that stopped short: why, and what it had published by then.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct Stopped {
    /// Why it stopped.
    pub error: ReplayError,
    /// What it published before (nothing if it stopped before its ring
    /// was made).
    pub done: Replayed,
}

impl Stopped {
    fn before_publishing(error: impl Into<ReplayError>) -> Box<Stopped> {
        Box::new(Stopped { error: error.into(), done: Replayed::default() })
    }
}

/// Why a replay stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The folder could not be read.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The ledger does not verify; what preceded the bad block was replayed.
    #[error("the ledger does not verify (what precedes the bad block was replayed): {0}")]
    Verify(VerifyFailure),
    /// The ring is not in the ledger.
    #[error("ring {ring:?} is not in the ledger (it records {known})")]
    NoRing {
        /// The ring asked for.
        ring: String,
        /// The rings it records.
        known: String,
    },
    // Each message holds its cause, which is not also given as the
    // error's source: a chain printed whole (`{:#}`) said it twice (found
    // by review: "… already exists (…): … already exists (…)").
    /// The ring to replay into could not be created.
    #[error("creating the ring to replay into: {0}")]
    Create(CreateError),
    /// Its lease could not be taken.
    #[error("taking the lease of the ring to replay into: {0}")]
    Lease(LeaseError),
    /// Stopped when asked ([`replay_until`]).
    #[error("interrupted")]
    Interrupted,
    /// A frame could not be published.
    #[error("publishing recorded sequence {seq}: {error}")]
    Publish {
        /// The recorded sequence.
        seq: u64,
        /// What the ring said.
        error: PublishError,
    },
}

impl From<CreateError> for ReplayError {
    fn from(e: CreateError) -> Self {
        ReplayError::Create(e)
    }
}

impl From<LeaseError> for ReplayError {
    fn from(e: LeaseError) -> Self {
        ReplayError::Lease(e)
    }
}

/// Replays `range` from the ledger in `dir` at `pacing` (a [`Pace`], or a
/// [`Pacing`] that cuts long pauses short). `open` is called
/// once, before the first frame or gap of the range, with the ring's
/// declaration in the ledger (its geometry as recorded) and returns the
/// writer to publish with: typically of a new ring made with that
/// geometry. A range with nothing recorded in it publishes nothing and
/// does not call `open`.
///
/// Where the range holds more than one incarnation of the ring (it was
/// deleted and created again), `open` is given the first one's
/// declaration with the largest `max_payload` of them all, so that every
/// frame fits. For that the folder is walked (and verified) twice, first
/// to learn them; the second walk stops where the first ended, so what a
/// live recorder writes meanwhile is not replayed.
pub fn replay(
    dir: &Path,
    range: &Range,
    pacing: impl Into<Pacing>,
    open: impl FnOnce(&RingDecl) -> Result<Writer, ReplayError>,
) -> Result<Replayed, Box<Stopped>> {
    replay_until(dir, range, pacing, open, |_, _| {}, &AtomicBool::new(false))
}

/// [`replay`], telling `waiting` of each wait of a paced replay before it
/// begins: how long it is, and the first recorded sequence it holds back
/// (so that a program can say why nothing moves during a long pause in
/// the recording); and stopping once `stop` is set (by a signal handler,
/// say): before the next block, and within 100 ms during a paced wait. It
/// then fails with [`ReplayError::Interrupted`], saying what it had
/// published.
pub fn replay_until(
    dir: &Path,
    range: &Range,
    pacing: impl Into<Pacing>,
    open: impl FnOnce(&RingDecl) -> Result<Writer, ReplayError>,
    waiting: impl FnMut(Duration, u64),
    stop: &AtomicBool,
) -> Result<Replayed, Box<Stopped>> {
    let first = first_walk(dir, range, stop).map_err(Stopped::before_publishing)?;
    second_walk(dir, range, first, pacing.into(), open, waiting, stop)
}

/// The replay proper, after [`first_walk`] found `first`.
fn second_walk(
    dir: &Path,
    range: &Range,
    first: FirstWalk,
    pacing: Pacing,
    open: impl FnOnce(&RingDecl) -> Result<Writer, ReplayError>,
    waiting: impl FnMut(Duration, u64),
    stop: &AtomicBool,
) -> Result<Replayed, Box<Stopped>> {
    let FirstWalk { largest, begin, end } = first;
    let open = move |decl: &RingDecl| open(&RingDecl { max_payload: largest.max(decl.max_payload), ..decl.clone() });
    let mut run = Run {
        range,
        pacing,
        open: Some(open),
        waiting,
        stop,
        writer: None,
        clock: None,
        done: Replayed::default(),
        incarnation: None,
    };
    let mut seen = false;
    let mut failed = None;
    let mut started = false;
    let walked = walk_blocks(dir, |chain, block, segment, offset| {
        // Before every block, in the range or not: the walk past the range
        // (to the first walk's end) can be long. (Found by review: a
        // signal there went unheeded, and the replay then said it had
        // finished.)
        if stop.load(Ordering::Relaxed) {
            failed = Some(ReplayError::Interrupted);
            return ControlFlow::Break(());
        }
        // From no later than the range's first block: retention may have
        // pruned the oldest segments since, and what the first walk saw of
        // the range there would be left out without a word.
        let first_block = !std::mem::replace(&mut started, true);
        if let Some((pruned, _)) = begin.filter(|&b| first_block && b < (segment, offset)) {
            failed = Some(ReplayError::Verify(VerifyFailure::PrunedMeanwhile { segment: pruned }));
            return ControlFlow::Break(());
        }
        // Not past where the first walk ended: a live recorder may have
        // written more since (a new incarnation, larger than `open` was
        // told of, among it).
        if end.is_none_or(|end| (segment, offset) > end) {
            return ControlFlow::Break(());
        }
        let ring = &chain.rings[block.header.ring as usize].decl;
        if ring.name != range.ring {
            return ControlFlow::Continue(());
        }
        seen = true;
        // On past the range's end: a later incarnation of the ring (deleted
        // and created again, its sequence restarted) may hold it again.
        match run.block(ring, block) {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                failed = Some(e);
                ControlFlow::Break(())
            }
        }
    });
    let error = match (walked, failed) {
        (_, Some(e)) => e,
        (Err(e), None) => e.into(),
        (Ok(Err(f)), None) => ReplayError::Verify(f),
        (Ok(Ok(summary)), None) if !seen => {
            let known: Vec<_> = summary.rings.iter().map(|r| r.decl.name.as_str()).collect();
            ReplayError::NoRing { ring: range.ring.clone(), known: known.join(", ") }
        }
        (Ok(Ok(summary)), None) => {
            run.done.partial_tail = summary.partial_tail;
            return Ok(run.done);
        }
    };
    Err(Box::new(Stopped { error, done: run.done }))
}

/// The largest `max_payload` of the incarnations of the ring that have
/// frames or gaps in `range` (0 if none): what the ring replayed into must
/// hold; and where the range's first block is, which the replay must not
/// begin after, and where the walk ended, which it does not pass
/// ([`FirstWalk`]). It walks as the replay does, the whole folder: a
/// ledger that stops verifying is walked up to the bad block (the replay
/// then stops there and says so).
fn first_walk(dir: &Path, range: &Range, stop: &AtomicBool) -> Result<FirstWalk, ReplayError> {
    let (mut largest, mut begin, mut end) = (0, None, None);
    // A failure is the replay's to report, when it reaches the bad block.
    let _verified = walk_blocks(dir, |chain, block, segment, offset| {
        if stop.load(Ordering::Relaxed) {
            return ControlFlow::Break(());
        }
        end = Some((segment, offset));
        let ring = &chain.rings[block.header.ring as usize].decl;
        if ring.name != range.ring {
            return ControlFlow::Continue(());
        }
        if let Some((lo, hi)) = in_range(range, block) {
            begin.get_or_insert((segment, offset));
            // The ring's declaration, and what its frames hold: a FRAME
            // longer than its ring declared (written so by whoever may
            // write the folder) is still the ledger's, and replayed.
            largest = largest.max(ring.max_payload);
            if block.rtype() == Some(RecordType::Frame) {
                let frames = block.records().skip((lo - block.header.seq) as usize).take((hi - lo + 1) as usize);
                let longest = frames.filter_map(|r| r.ok().map(|r| r.payload.len())).max().unwrap_or(0);
                largest = largest.max(u32::try_from(longest).unwrap_or(u32::MAX));
            }
        }
        ControlFlow::Continue(())
    })?;
    if stop.load(Ordering::Relaxed) {
        return Err(ReplayError::Interrupted);
    }
    Ok(FirstWalk { largest, begin, end })
}

/// What the replay's first walk found: the largest payload the ring must
/// hold, where the first block of the range is, and where the walk ended
/// (the segment and offset of the last block it visited); `None`: none.
struct FirstWalk {
    largest: u32,
    begin: Option<(u64, u64)>,
    end: Option<(u64, u64)>,
}

/// The part `lo..=hi` of a block of the ring replayed that is in the range,
/// if any (a RING declaration has none).
fn in_range(range: &Range, block: &BlockView<'_>) -> Option<(u64, u64)> {
    let (first, last) = (block.header.seq, block.last_seq());
    if block.rtype() == Some(RecordType::Ring) || last < range.from || first > range.to {
        None
    } else {
        Some((first.max(range.from), last.min(range.to)))
    }
}

/// A replay in progress.
struct Run<'a, F, W> {
    range: &'a Range,
    pacing: Pacing,
    open: Option<F>,
    waiting: W,
    /// Set: stop before the next block.
    stop: &'a AtomicBool,
    writer: Option<Writer>,
    clock: Option<Clock>,
    done: Replayed,
    /// The incarnation (`created_ns`) of the last block published.
    incarnation: Option<u64>,
}

/// A paced replay's schedule: when its first block was published, the
/// last block's recorded time, and how long after the first block, at the
/// pace, the last one was due.
#[derive(Clone, Copy)]
struct Clock {
    start: Instant,
    last: u64,
    due: Duration,
}

impl Clock {
    /// Schedules the block recorded at `recv_ns`, the pause since the last
    /// one at `factor` times the recorded pace and cut to `max_pause`: a
    /// recorder's clock stepped back is no pause, and nothing is counted
    /// twice. Returns the cut, if any.
    fn advance(&mut self, recv_ns: u64, factor: f64, max_pause: Option<Duration>) -> Option<Duration> {
        let pause = paced(recv_ns.saturating_sub(self.last), factor);
        let (pause, cut) = match max_pause {
            Some(max) if pause > max => (max, Some(pause - max)),
            _ => (pause, None),
        };
        self.last = recv_ns;
        self.due = self.due.saturating_add(pause);
        cut
    }
}

impl<F: FnOnce(&RingDecl) -> Result<Writer, ReplayError>, W: FnMut(Duration, u64)> Run<'_, F, W> {
    /// Publishes what `block` (of the ring replayed, declared by `decl`)
    /// holds of the range.
    fn block(&mut self, decl: &RingDecl, block: &BlockView<'_>) -> Result<(), ReplayError> {
        let Some((lo, hi)) = in_range(self.range, block) else { return Ok(()) };
        if self.stop.load(Ordering::Relaxed) {
            return Err(ReplayError::Interrupted);
        }
        if self.writer.is_none() {
            let open = self.open.take().expect("opened once");
            self.writer = Some(open(decl)?);
        }
        self.wait_for(block.header.recv_ns, lo);
        if self.stop.load(Ordering::Relaxed) {
            return Err(ReplayError::Interrupted);
        }
        let w = self.writer.as_mut().expect("opened above");
        match block.rtype() {
            Some(RecordType::Frame) => {
                let mut published = 0;
                let result = publish_frames(w, block, lo, hi, self.stop, &mut published);
                self.done.frames += published;
                // What went out of a block cut short is in the span too.
                if published > 0 {
                    self.spanned(decl, lo, lo + published - 1);
                }
                return result;
            }
            Some(RecordType::Gap) => {
                let reason = GapInfo::decode(block.body).map_or(0, |g| g.reason);
                let marker = GapMarker { first: lo, last: hi, reason, zero: 0 };
                claim_until_stopped(w, lo, 1, self.stop, |claim| {
                    claim.push_kind(KIND_LEDGER_GAP, bytemuck::bytes_of(&marker)).map(drop).map_err(|e| (lo, e))
                })?;
                self.done.gaps += 1;
                // Saturating: the ranges are a folder's, which may claim
                // the whole sequence space more than once.
                self.done.lost = self.done.lost.saturating_add((hi - lo).saturating_add(1));
            }
            _ => {}
        }
        self.spanned(decl, lo, hi);
        Ok(())
    }

    /// Counts sequences `lo..=hi` of the ring `decl` declares as replayed.
    fn spanned(&mut self, decl: &RingDecl, lo: u64, hi: u64) {
        self.done.span = Some((self.done.span.map_or(lo, |s| s.0), hi));
        match self.done.spans.last_mut() {
            Some(last) if self.incarnation == Some(decl.created_ns) => last.1 = hi,
            _ => self.done.spans.push((lo, hi)),
        }
        self.incarnation = Some(decl.created_ns);
    }

    /// Sleeps until a block read at `recv_ns`, from sequence `first` on,
    /// is due at the pace (a pause longer than the longest allowed cut to
    /// it), telling `waiting` first.
    fn wait_for(&mut self, recv_ns: u64, first: u64) {
        let Some(factor) = self.pacing.pace.factor() else { return };
        let clock = self.clock.get_or_insert(Clock { start: Instant::now(), last: recv_ns, due: Duration::ZERO });
        if let Some(cut) = clock.advance(recv_ns, factor, self.pacing.max_pause) {
            self.done.pauses_cut += 1;
            self.done.cut = self.done.cut.saturating_add(cut);
        }
        // A due time past what the clock can count is never.
        let wait =
            clock.start.checked_add(clock.due).map_or(Duration::MAX, |d| d.saturating_duration_since(Instant::now()));
        if !wait.is_zero() {
            (self.waiting)(wait, first);
            // In steps, to stop within 100 ms when asked (a wait past what
            // the clock counts, for ever).
            let until = Instant::now().checked_add(wait);
            while !self.stop.load(Ordering::Relaxed) {
                let left = until.map_or(Duration::MAX, |u| u.saturating_duration_since(Instant::now()));
                if left.is_zero() {
                    break;
                }
                std::thread::sleep(left.min(Duration::from_millis(100)));
            }
        }
    }
}

/// `recorded_ns` of recorded time at `factor` times the recorded pace;
/// past what a `Duration` holds (a tiny factor over a long recording),
/// `Duration::MAX`.
fn paced(recorded_ns: u64, factor: f64) -> Duration {
    Duration::try_from_secs_f64(recorded_ns as f64 / 1e9 / factor).unwrap_or(Duration::MAX)
}

/// Publishes the frames of FRAME block `block` with sequences `lo..=hi`,
/// in claims of at most the ring's capacity ([`claim_until_stopped`]),
/// counting in `published` each frame that went out. A frame the ring
/// cannot take is named by its own sequence, and nothing of its claim is
/// published; a claim that fails otherwise partway publishes (and counts)
/// what was pushed into it.
fn publish_frames(
    w: &mut Writer,
    block: &BlockView<'_>,
    lo: u64,
    hi: u64,
    stop: &AtomicBool,
    published: &mut u64,
) -> Result<(), ReplayError> {
    let (capacity, max) = (w.geometry().capacity, w.geometry().max_payload as usize);
    let mut records = block.records().skip((lo - block.header.seq) as usize);
    let mut seq = lo;
    let mut batch = Vec::new();
    while seq <= hi {
        let n = (hi - seq + 1).min(capacity);
        batch.clear();
        // The chain verified the block: every record is whole.
        batch.extend(records.by_ref().take(n as usize).map(|r| r.expect("a verified block holds its records")));
        if let Some(i) = batch.iter().position(|r| r.payload.len() > max) {
            let error = PublishError::TooLarge { len: batch[i].payload.len(), max };
            return Err(ReplayError::Publish { seq: seq + i as u64, error });
        }
        claim_until_stopped(w, seq, n, stop, |claim| {
            for r in &batch {
                claim.push_kind(r.header.kind, r.payload).map_err(|error| (seq, error))?;
                *published += 1;
                seq += 1;
            }
            Ok(())
        })?;
    }
    Ok(())
}

/// How long a claim waits for room before the replay looks at its stop
/// flag again.
const STOP_CHECK: Duration = Duration::from_millis(100);

/// Claims `n` slots for recorded sequences from `seq`, has `fill` push
/// into them, and commits; a claim `fill` fails (naming the sequence it
/// failed at) is dropped, which publishes what it pushed. It waits for room in waits of [`STOP_CHECK`],
/// and stops when `stop` is set: a gating reader that does not read held
/// a `block` ring's claim for the ring's whole stall timeout, deaf to
/// Ctrl-C. The ring's stall clock runs on across the waits, so such a
/// reader is still demoted at the stall timeout.
fn claim_until_stopped(
    w: &mut Writer,
    seq: u64,
    n: u64,
    stop: &AtomicBool,
    fill: impl FnOnce(&mut Claim<'_>) -> Result<(), (u64, PublishError)>,
) -> Result<(), ReplayError> {
    loop {
        if stop.load(Ordering::Relaxed) {
            return Err(ReplayError::Interrupted);
        }
        match w.claim_timeout(n, STOP_CHECK) {
            Err(PublishError::Full { .. }) => {}
            Err(error) => return Err(ReplayError::Publish { seq, error }),
            Ok(mut claim) => {
                // `seq`: the frame whose push failed.
                fill(&mut claim).map_err(|(seq, error)| ReplayError::Publish { seq, error })?;
                claim.commit();
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests;
