//! helixd's control path (`docs/abi.md` §12.6): a thread of its own
//! consumes the `control` fan-in ring, decides each record ([`judge`]),
//! publishes its audit record on `control.log`, waits until the audit
//! reader (the ledger) has read that record, hands accepted commands to
//! their source, and answers on `control.acks`.
//!
//! Nothing here can hold telemetry back: sources take directives between
//! two commits from an inbox they look at once per turn, and this thread
//! never waits on a ring (a full `control.log` leaves records queued, and
//! a full queue leaves them in the senders' lanes; a gating reader other
//! than the audit reader that holds the log full is demoted after the
//! ring's stall timeout, [`stall`]).

mod forward;
mod journal;
mod judge;
mod recover;
mod stall;
mod window;

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tracing::{error, info, warn};

use crate::config::{SourceConfig, SourceKind};
use crate::hal::plant::Directive;
use crate::hal::SourceState;
use crate::shared::said::Said;
use helix::control::{self, LogRecord, Op, Reason, Valid};
use helix::fanin::{Event, FanIn, FanInError};
use helix::{Namespace, PublishError, RingView, WaitStrategy, Writer};

use crate::config::control::{ControlConfig, PER_LANE};
use forward::Forwarder;
pub use journal::{Journal, Plant, Recovered};
use judge::{Judge, Target};
use window::{Seen, Window};

/// The running sources by the ring they write, for the control thread.
pub type Registry = Arc<Mutex<BTreeMap<String, (SourceKind, Arc<SourceState>)>>>;

/// Records decided and not yet applied, at most: beyond, the thread stops
/// draining and the senders' lanes fill (each sender waits alone).
const MAX_QUEUED: usize = 1024;
/// How long the thread sleeps on the doorbell while nothing is queued.
const IDLE: Duration = Duration::from_millis(100);
/// How often it looks again while commands wait (for the ledger, a source):
/// up to this (and the timer's slack) is added to a command's time to
/// effect, so it is short; the thread looks this often only while commands
/// wait (a few hundred microseconds a command: a handful of wake-ups). It
/// sleeps in between, never spins: see `Path::new`.
const BUSY: Duration = Duration::from_micros(50);

/// How long a stopping thread waits for the sources to apply the commands
/// handed to them, so that it answers them (see `Path::run`).
const FINISH: Duration = Duration::from_secs(1);

/// A token for a command handed to its source, unique in this process:
/// its effect is matched by it, and a source outlives a control thread
/// stopped for a repair of its rings (an effect the old thread did not
/// collect must not be taken for a new command's).
fn token() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Counters for helixd's STATUS line.
#[derive(Debug, Default)]
pub struct ControlStats {
    /// Records taken from the control ring.
    pub received: AtomicU64,
    /// Commands rejected.
    pub rejected: AtomicU64,
    /// Commands applied.
    pub applied: AtomicU64,
    /// Accepted commands waiting for the audit reader now.
    pub waiting: AtomicU64,
}

/// The control thread, as the daemon holds it.
pub struct ControlThread {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Left>>,
    /// What it has done.
    pub stats: Arc<ControlStats>,
    audit_reader: Option<String>,
}

impl ControlThread {
    /// Becomes the consumer of the `control` fan-in ring (created, or
    /// adopted after a restart: lanes resume) and the writer of
    /// `control.log` and `control.acks`, recovers what a helixd before it
    /// left unanswered (`recover.rs`), and starts the thread.
    pub fn start(
        ns: &Namespace,
        cfg: &ControlConfig,
        rings: &BTreeMap<String, helix::Ring>,
        sources: Registry,
        (journal, recovered): (Journal, Recovered),
    ) -> Result<Self> {
        let mut fan = match FanIn::create(ns, control::CONTROL_RING, &cfg.ring) {
            Err(FanInError::Exists { .. }) => FanIn::attach(ns, control::CONTROL_RING),
            r => r,
        }
        .context("the control fan-in ring")?;
        adopt(&fan, cfg)?;
        // The thread sleeps on the doorbell from the first poll: it wakes the
        // ledger (its audit record) and the source (the command), and the
        // scheduler puts a thread it wakes on its own CPU. Spinning there
        // while a command waits for them (the fan-in's default strategy),
        // it kept them off that CPU for up to a scheduler slice, 1.4 to
        // 4 ms, with the other CPU idle (`perf sched timehist`): most of
        // the command-to-effect P99 (docs/performance-notes.md).
        fan.set_wait(WaitStrategy::Park);
        if let Some(why) = fan.bell_replaced() {
            warn!("control: {why}; gave the control ring a new doorbell (producers attached before ring the old one)");
        }
        let writer = |name: &str| -> Result<Writer> {
            let ring = rings.get(name).with_context(|| format!("ring {name:?} is not open"))?;
            ring.writer().with_context(|| format!("ring {name:?}"))
        };
        let stats = Arc::new(ControlStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let mut flow = Flow {
            log: writer(control::LOG_RING)?,
            acks: writer(control::ACK_RING)?,
            log_view: RingView::attach(ns, control::LOG_RING).context("ring control.log")?,
            judge: Judge::new(cfg, sources),
            audit_reader: cfg.audit_reader.clone(),
            window: Window::default(),
            unlogged: VecDeque::new(),
            audit: VecDeque::new(),
            applying: Vec::new(),
            stats: stats.clone(),
            forwarder: Forwarder::default(),
            journal,
            journal_failing: false,
            recovering: false,
            log_refused: false,
            log_stalls: stall::LogStalls::default(),
            said: said_per_command(),
        };
        flow.recover(ns, recovered)?;
        let dropped = Said::warning("lanes of the control ring dropped");
        let mut path = Path { fan, flow, bell_failing: false, dropped };
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("control".into())
            .spawn(move || path.run(&flag))
            .context("cannot start the control thread")?;
        let journal = cfg.journal_path(ns);
        let (ring, lanes) = (control::CONTROL_RING, cfg.ring.lanes);
        info!("control: taking commands on fan-in ring {ring} ({lanes} lanes); journal {}", journal.display());
        Ok(ControlThread { stop, thread: Some(thread), stats, audit_reader: cfg.audit_reader.clone() })
    }

    /// The control path's part of the STATUS line.
    pub fn status(&self) -> String {
        let s = &self.stats;
        let mut line = format!(
            "control: {} commands, {} applied, {} rejected",
            s.received.load(Ordering::Relaxed),
            s.applied.load(Ordering::Relaxed),
            s.rejected.load(Ordering::Relaxed)
        );
        let waiting = s.waiting.load(Ordering::Relaxed);
        if let (Some(reader), 1..) = (&self.audit_reader, waiting) {
            line += &format!(", {waiting} waiting for {reader} to record them");
        }
        line
    }

    /// Stops the thread and waits for it: what it leaves unanswered.
    pub fn stop(&mut self) -> Left {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(left)) => left,
            Some(Err(_)) => {
                error!("the control thread panicked");
                Left::default()
            }
            None => Left::default(),
        }
    }
}

impl Drop for ControlThread {
    fn drop(&mut self) {
        _ = self.stop();
    }
}

/// What a stopped control thread leaves unanswered.
#[derive(Debug, Default, Clone, Copy)]
pub struct Left {
    /// Records taken from their lanes that could not be published on
    /// `control.log` (damaged under the thread, or full): not audited, and
    /// nothing can finish them.
    pub unlogged: usize,
    /// Commands audited on `control.log` and not answered yet: the next
    /// start finishes them from the log (`recover.rs`).
    pub unanswered: usize,
}

/// A record taken from a lane and decided.
struct Incoming {
    log: LogRecord,
    /// The command, if it was one.
    command: Option<Valid>,
    /// The verdict; for a repeat, the first one's (or pending).
    verdict: Result<(), Reason>,
    repeat: Option<Seen>,
    /// Where it goes (accepted first requests).
    target: Option<Target>,
}

/// An accepted command on its way to its source.
struct Pending {
    uid: u32,
    command: Valid,
    log_seq: u64,
    token: u64,
    state: Option<Arc<SourceState>>,
    /// Forwarded to this instrument instead of handed to `state`.
    instrument: Option<std::net::SocketAddr>,
}

/// The control thread's state: the ring it drains, and the rest.
struct Path {
    fan: FanIn,
    flow: Flow,
    /// Replacing a damaged doorbell failed last time (logged once).
    bell_failing: bool,
    /// The lanes dropped, said a few a while: anyone who may write the
    /// ring's folder (no allow-list needed) can plant junk under the lane
    /// names and ask for rescans. (Found by review: a line each filled
    /// journald's rate limit.) Each is counted in the ring's faults.
    dropped: Said,
}

/// Everything but the fan-in ring (so a drain's callback may use it).
struct Flow {
    log: Writer,
    acks: Writer,
    log_view: RingView,
    judge: Judge,
    audit_reader: Option<String>,
    window: Window,
    /// Decided, not yet on `control.log` (publishing failed).
    unlogged: VecDeque<Incoming>,
    /// Accepted and logged, waiting for the audit reader.
    audit: VecDeque<Pending>,
    /// Handed to a source, waiting for its effect.
    applying: Vec<Pending>,
    stats: Arc<ControlStats>,
    /// Sends commands to UDP sources' instruments.
    forwarder: Forwarder,
    /// First answers, made durable before they are published.
    journal: Journal,
    /// Writing the journal failed last time (logged once until it works).
    journal_failing: bool,
    /// The start's recovery is finishing records: no rewrite meanwhile.
    recovering: bool,
    /// `control.log` refused a claim other than for want of room.
    log_refused: bool,
    /// Gating readers of `control.log` seen holding it full.
    log_stalls: stall::LogStalls,
    /// The lines said per command, a few a while (an allowed sender's
    /// flood filled journald's rate limit): applied or forwarded, not
    /// applied for a stopped source, not sent to an instrument.
    said: [Said; 3],
}

impl Path {
    /// Runs until `stop`; what it leaves unanswered.
    fn run(&mut self, stop: &AtomicBool) -> Left {
        // The sleeps of `BUSY` while commands wait end within a
        // microsecond rather than the default 50 us of timer slack: a
        // command waits for two of them (the ledger, the source). Measured:
        // round trip p50 from about 350 to 250 us (docs/performance-notes.md).
        if let Err(e) = nix::sys::prctl::set_timerslack(1_000) {
            warn!("control: cannot shorten the thread's timer slack ({e}); commands wait up to 50 us longer");
        }
        let mut next_sweep = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let f = &mut self.flow;
            let busy = !(f.unlogged.is_empty() && f.audit.is_empty() && f.applying.is_empty());
            if f.unlogged.len() + f.audit.len() + f.applying.len() < MAX_QUEUED {
                self.take(if busy { BUSY } else { IDLE });
            } else {
                std::thread::sleep(BUSY);
            }
            let f = &mut self.flow;
            f.publish_log();
            f.release_audited();
            f.collect_effects();
            f.stats.waiting.store(f.audit.len() as u64, Ordering::Relaxed);
            if Instant::now() >= next_sweep {
                // Dead senders' lanes are freed once drained (issue 16's sweep).
                self.fan.sweep(|e| report_dropped(&e, &mut self.dropped));
                self.repair_bell();
                self.flow.said.iter_mut().chain([&mut self.dropped]).for_each(Said::tick);
                let (f, lanes) = (&mut self.flow, self.fan.geometry().lanes as u64);
                f.log_stalls.check(&mut f.log, &f.log_view, f.audit_reader.as_deref(), lanes, Instant::now());
                next_sweep = Instant::now() + Duration::from_secs(1);
            }
        }
        // What was handed to sources is answered before the thread ends, as
        // they apply it (within a turn): one left here would be handed to
        // its source again by the next start's recovery (a stop for a
        // repair leaves the sources running). Records decided and not yet
        // on the log go on it if it takes them now.
        let deadline = Instant::now() + FINISH;
        loop {
            let f = &mut self.flow;
            f.publish_log();
            f.collect_effects();
            if (f.applying.is_empty() && f.unlogged.is_empty()) || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(BUSY);
        }
        let f = &mut self.flow;
        f.journal.close();
        Left { unlogged: f.unlogged.len(), unanswered: f.audit.len() + f.applying.len() }
    }

    /// A sender may write the doorbell, and so shrink, grow or scribble on
    /// it: then no new sender can attach, and (shrunk) no ring reaches this
    /// thread, so each command waits for a timed wake-up. It gets a new
    /// one (senders attaching from now on ring it).
    fn repair_bell(&mut self) {
        match self.fan.repair_bell() {
            Ok(false) => self.bell_failing = false,
            Ok(true) => {
                self.bell_failing = false;
                let why = self.fan.bell_replaced().map_or(String::new(), |e| format!(" ({e})"));
                warn!("control: the control ring's doorbell was broken under helixd{why}; gave it a new one")
            }
            // Tried on every sweep; logged once until it works.
            Err(e) if !std::mem::replace(&mut self.bell_failing, true) => {
                error!("control: cannot check or replace the control ring's doorbell (trying again each second): {e}")
            }
            Err(_) => {}
        }
    }

    /// One fair round of the control ring (sleeping up to `timeout` if it
    /// is empty). Each record is decided and published on `control.log`
    /// in the drain's callback, so before its lane releases it: a record
    /// a sender's lane gave up is on the log (a helixd killed after the
    /// publish and before the release is given it again: a repeat). The
    /// round takes no more records than `control.log` has room for now.
    fn take(&mut self, timeout: Duration) {
        let lanes = self.fan.geometry().lanes as usize;
        let per_lane = self.flow.log_room(lanes * PER_LANE) / lanes.max(1);
        if per_lane == 0 {
            // The log is full (its gating reader behind, or the record of a
            // command waiting for its audit next to be overwritten): the
            // records stay in the senders' lanes.
            std::thread::sleep(BUSY);
            return;
        }
        let (flow, dropped) = (&mut self.flow, &mut self.dropped);
        self.fan.drain_timeout(per_lane.min(PER_LANE), timeout, |e| match e {
            Event::Record(r) => {
                // A record the lane shrank under is taken as empty (and
                // the lane is dropped after it).
                let payload = r.to_vec().unwrap_or_default();
                let mut log = LogRecord::new(r.kind, &payload, Ok(()));
                (log.uid, log.pid, log.lane, log.lane_seq) = (r.uid, r.pid, r.lane as u32, r.seq);
                log.len = r.len() as u32;
                flow.stats.received.fetch_add(1, Ordering::Relaxed);
                log.time_ns = helix::process::realtime_ns();
                let incoming = flow.decide(log, &payload);
                flow.unlogged.push_back(incoming);
                flow.publish_log();
            }
            e => report_dropped(&e, dropped),
        });
    }
}

impl Flow {
    /// Up to `want` slots of `control.log` that may be written now: never
    /// over the record of a command still waiting for the audit reader.
    /// With no gating reader on the log (the ledger stopped, or swept
    /// dead) the ring would let them be overwritten; the ledger, back at
    /// the record it had reached, would skip them as lost, and the
    /// commands would act unrecorded.
    fn log_room(&mut self, want: usize) -> usize {
        let capacity = self.log.geometry().capacity;
        // Records decided and not yet on the log take their room first.
        let audit_room = self.audit_room().saturating_sub(self.unlogged.len() as u64);
        let want = (want as u64).min(capacity).min(audit_room);
        if want == 0 {
            return 0;
        }
        match self.log.try_claim(want) {
            // Dropped unfilled: nothing is published.
            Ok(_) => {
                self.log_refused = false;
                want as usize
            }
            Err(PublishError::Full { free, .. }) => free as usize,
            Err(e) => {
                // Logged once: the records wait in their lanes meanwhile.
                if !std::mem::replace(&mut self.log_refused, true) {
                    warn!("control: cannot publish on control.log: {e}; commands wait in their lanes");
                }
                0
            }
        }
    }

    /// Records `control.log` may take before the next would overwrite the
    /// record of the oldest command waiting for the audit reader (all, if
    /// none waits): see [`Flow::log_room`].
    pub(super) fn audit_room(&self) -> u64 {
        match self.audit.front() {
            Some(oldest) => (oldest.log_seq + self.log.geometry().capacity).saturating_sub(self.log.next_seq()),
            None => u64::MAX,
        }
    }

    /// The verdict on one record: a repeat gets its first verdict.
    fn decide(&mut self, mut log: LogRecord, payload: &[u8]) -> Incoming {
        let (mut verdict, mut repeat, mut target) = (Err(Reason::BadKind), None, None);
        let command = control::decode(log.kind, payload).map_err(|r| verdict = Err(r)).ok();
        if let Some(v) = &command {
            match self.window.seen(log.uid, v.request) {
                Some(seen) => (verdict, repeat) = (seen.verdict(), Some(seen)),
                None => {
                    let judged = self.judge.judge(log.uid, v);
                    verdict = judged.as_ref().map(|_| ()).map_err(|r| *r);
                    target = judged.ok();
                    self.window.insert(log.uid, v.request, verdict);
                }
            }
        }
        (log.verdict, log.reason) = control::wire(verdict);
        if repeat.is_some() {
            log.flags |= control::LOG_REPEAT;
        }
        Incoming { log, command, verdict, repeat, target }
    }
}

/// Leaves in a starting source's inbox what the accepted commands made of
/// it (its rate, setpoints, pause): a simulator takes them before its
/// first sample (docs/abi.md §12.6). Their effects are nobody's answer.
/// A commanded rate other than the configured `rate_hz` is said: an
/// operator who changed `rate_hz` and reloaded sees why it did not take.
pub fn restore(state: &SourceState, cfg: &SourceConfig, plant: &Plant) {
    let SourceKind::Sim { streams, rate_hz, .. } = cfg.kind else { return };
    let plant = plant.lock().unwrap_or_else(|e| e.into_inner());
    let Some(s) = plant.get(&cfg.ring) else { return };
    let post = |op, stream, value| state.inbox.post(Directive { token: 0, op, stream, value });
    if let Some(rate) = s.rate_hz {
        if rate != rate_hz {
            warn!(
                "source for ring {ring}: runs at {rate} Hz per stream, the rate a command set, not the configured \
                 rate_hz = {rate_hz} (`helixctl rate {ring} {rate_hz}` to take that)",
                ring = cfg.ring
            );
        }
        post(Op::Rate, 0, rate);
    }
    // (A stream the configuration no longer has is left alone.)
    for (&stream, &value) in s.setpoints.range(..streams) {
        post(Op::Set, stream, value);
    }
    if s.paused {
        post(Op::Pause, 0, 0.0);
    }
}

/// Checks that the control ring `fan`, found after a restart, is of the
/// shape `cfg` gives, and gives it the configured mode and group. (Found by
/// an audit: an existing ring was taken as it was, so an operator who
/// tightened `mode` to take sending away from the group, and restarted
/// helixd as a reload tells them to, changed nothing; one of other lanes
/// than configured could take no record at all.)
fn adopt(fan: &FanIn, cfg: &ControlConfig) -> Result<()> {
    let (g, want) = (fan.geometry(), &cfg.ring);
    let remove = format!("remove it (`helixctl rm {}`; commands waiting in it are lost)", control::CONTROL_RING);
    if g.lanes != want.lanes {
        anyhow::bail!(
            "the control ring has {} lanes, [control] says {}: {remove}, or set lanes = {} again",
            g.lanes,
            want.lanes,
            g.lanes
        );
    }
    if (g.lane_capacity, g.max_payload) != (want.lane_capacity, want.max_payload) {
        anyhow::bail!(
            "the control ring has lanes of {} bytes and records up to {} bytes, this helixd makes {} and {} (another \
             version made it): {remove}",
            g.lane_capacity,
            g.max_payload,
            want.lane_capacity,
            want.max_payload
        );
    }
    for path in fan.set_access(want.mode, want.group).context("the control fan-in ring")? {
        warn!("control: {}: gave it the configured mode and group", path.display());
    }
    Ok(())
}

/// [`Flow::said`]'s lines: applied (or forwarded), source down, not sent.
fn said_per_command() -> [Said; 3] {
    [
        Said::info("control commands applied or forwarded"),
        Said::warning("control commands whose source stopped before applying them"),
        Said::warning("control commands that could not be sent to their instrument"),
    ]
}

/// Logs a lane the control ring dropped (through `dropped`), or could not
/// take for now (said once a lane by the ring).
fn report_dropped(e: &Event<'_>, dropped: &mut Said) {
    match e {
        Event::Dropped(report) => dropped.one(format!("control: {report}")),
        Event::Unbindable { lane, reason } => {
            error!("control: lane {lane} of the control ring cannot be taken for now ({reason}); its sender waits")
        }
        Event::Record(_) => {}
    }
}

mod flow;
