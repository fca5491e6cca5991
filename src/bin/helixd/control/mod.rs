//! helixd's control path (`docs/abi.md` §12.6): a thread of its own
//! consumes the `control` fan-in ring, decides each record ([`judge`]),
//! publishes its audit record on `control.log`, waits until the audit
//! reader (the ledger) has read that record, hands accepted commands to
//! their source, and answers on `control.acks`.
//!
//! Nothing here can hold telemetry back: sources take directives between
//! two commits from an inbox they look at once per turn, and this thread
//! never waits on a ring (a full `control.log` leaves records queued, and
//! a full queue leaves them in the senders' lanes).

mod forward;
mod judge;
mod window;

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tracing::{error, info, warn};

use crate::config::SourceKind;
use crate::hal::SourceState;
use helix::control::{self, LogRecord, Reason, Valid};
use helix::fanin::{Event, FanIn, FanInError};
use helix::{Namespace, RingView, Writer};

use crate::config::control::ControlConfig;
use forward::Forwarder;
use judge::{Judge, Target};
use window::{Seen, Window};

/// The running sources by the ring they write, for the control thread.
pub type Registry = Arc<Mutex<BTreeMap<String, (SourceKind, Arc<SourceState>)>>>;

/// Records taken from a lane per round.
const PER_LANE: usize = 16;
/// Records decided and not yet applied, at most: beyond, the thread stops
/// draining and the senders' lanes fill (each sender waits alone).
const MAX_QUEUED: usize = 1024;
/// How long the thread sleeps on the doorbell while nothing is queued.
const IDLE: Duration = Duration::from_millis(100);
/// How often it looks again while commands wait (for the ledger, a source).
const BUSY: Duration = Duration::from_millis(1);

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
    thread: Option<JoinHandle<()>>,
    /// What it has done.
    pub stats: Arc<ControlStats>,
    audit_reader: Option<String>,
}

impl ControlThread {
    /// Becomes the consumer of the `control` fan-in ring (created, or
    /// adopted after a restart: lanes resume) and the writer of
    /// `control.log` and `control.acks`, and starts the thread.
    pub fn start(
        ns: &Namespace,
        cfg: &ControlConfig,
        rings: &BTreeMap<String, helix::Ring>,
        sources: Registry,
    ) -> Result<Self> {
        let fan = match FanIn::create(ns, control::CONTROL_RING, &cfg.ring) {
            Err(FanInError::Exists { .. }) => FanIn::attach(ns, control::CONTROL_RING),
            r => r,
        }
        .context("the control fan-in ring")?;
        let writer = |name: &str| -> Result<Writer> {
            let ring = rings.get(name).with_context(|| format!("ring {name:?} is not open"))?;
            ring.writer().with_context(|| format!("ring {name:?}"))
        };
        let stats = Arc::new(ControlStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let mut path = Path {
            fan,
            log: writer(control::LOG_RING)?,
            acks: writer(control::ACK_RING)?,
            log_view: RingView::attach(ns, control::LOG_RING).context("ring control.log")?,
            judge: Judge::new(cfg, sources),
            audit_reader: cfg.audit_reader.clone(),
            window: Window::default(),
            unlogged: VecDeque::new(),
            audit: VecDeque::new(),
            applying: Vec::new(),
            next_token: 1,
            stats: stats.clone(),
            forwarder: Forwarder::default(),
        };
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("control".into())
            .spawn(move || path.run(&flag))
            .context("cannot start the control thread")?;
        info!("control: taking commands on fan-in ring {} ({} lanes)", control::CONTROL_RING, cfg.ring.lanes);
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

    /// Stops the thread and waits for it.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                error!("the control thread panicked");
            }
        }
    }
}

impl Drop for ControlThread {
    fn drop(&mut self) {
        self.stop();
    }
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

/// The control thread's state.
struct Path {
    fan: FanIn,
    log: Writer,
    acks: Writer,
    log_view: RingView,
    judge: Judge,
    audit_reader: Option<String>,
    window: Window,
    /// Decided, not yet on `control.log` (it was full).
    unlogged: VecDeque<Incoming>,
    /// Accepted and logged, waiting for the audit reader.
    audit: VecDeque<Pending>,
    /// Handed to a source, waiting for its effect.
    applying: Vec<Pending>,
    next_token: u64,
    stats: Arc<ControlStats>,
    /// Sends commands to UDP sources' instruments.
    forwarder: Forwarder,
}

impl Path {
    fn run(&mut self, stop: &AtomicBool) {
        let mut next_sweep = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let busy = !(self.unlogged.is_empty() && self.audit.is_empty() && self.applying.is_empty());
            if self.unlogged.len() + self.audit.len() + self.applying.len() < MAX_QUEUED {
                self.take(if busy { BUSY } else { IDLE });
            } else {
                std::thread::sleep(BUSY);
            }
            self.publish_log();
            self.release_audited();
            self.collect_effects();
            self.stats.waiting.store(self.audit.len() as u64, Ordering::Relaxed);
            if Instant::now() >= next_sweep {
                // Dead senders' lanes are freed once drained (issue 16's sweep).
                self.fan.sweep(|e| report_dropped(&e));
                next_sweep = Instant::now() + Duration::from_secs(1);
            }
        }
    }

    /// One fair round of the control ring (sleeping up to `timeout` if it
    /// is empty); each record is decided and queued for the log.
    fn take(&mut self, timeout: Duration) {
        let mut got = Vec::new();
        self.fan.drain_timeout(PER_LANE, timeout, |e| match e {
            Event::Record(r) => {
                // A record the lane shrank under is taken as empty (and
                // the lane is dropped after it).
                let payload = r.to_vec().unwrap_or_default();
                let mut log = LogRecord::new(r.kind, &payload, Ok(()));
                (log.uid, log.pid, log.lane, log.lane_seq) = (r.uid, r.pid, r.lane as u32, r.seq);
                log.len = r.len() as u32;
                got.push((log, payload));
            }
            e @ Event::Dropped(_) => report_dropped(&e),
        });
        for (mut log, payload) in got {
            self.stats.received.fetch_add(1, Ordering::Relaxed);
            log.time_ns = helix::process::realtime_ns();
            let incoming = self.decide(log, &payload);
            self.unlogged.push_back(incoming);
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

fn report_dropped(e: &Event<'_>) {
    if let Event::Dropped(report) = e {
        warn!("control: {report}");
    }
}

mod flow;
