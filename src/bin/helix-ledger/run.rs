//! The helix-ledger service: taps every configured ring as a gating
//! reader and appends every frame to the ledger.
//!
//! One thread records, in a loop: read a batch from each ring into the
//! ledger's buffer (frames the ring confirms intact are sealed into the
//! chain), write the buffer out when it is large or the rings are idle, and
//! only then release the frames to the writer. On the interval it hands the
//! segment file to a second thread for `fdatasync`, so recording waits for
//! the disk only when it starts a new segment (the full one is synced before
//! the next is renamed into place). A sync stuck longer than the watchdog
//! interval stops the watchdog pings, so systemd restarts the ledger.
//! Between batches, every 50 ms, it takes signals, pings the watchdog,
//! refreshes the status line, attaches rings that appeared, notices rings
//! that were replaced, and re-registers as a gating reader if the writer
//! demoted it.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use crate::config::LedgerConfig;
use anyhow::Result;

use crate::shared::service::{Cadence, Event, Service};
use crate::shared::textfile::Publisher;
use crate::syncer::Syncer;
use helix::ledger::block::{BLOCK_TARGET, ENTRY_HEADER_LEN};
use helix::ledger::format::RingDecl;
use helix::ledger::sign::Reason;
use helix::ledger::store::{Ledger, LedgerError};
use helix::{
    AttachError, Namespace, Policy, ReadError, Reader, ReaderOptions, RingView, Start, TryReadError, UnderName,
    WaitStrategy,
};

/// Frames read from one ring per batch, at most (a batch is one block: see
/// `Tap::batch`).
const BATCH: usize = 4096;
/// Buffered bytes at which the buffer is written out (and frames released).
const FLUSH_BYTES: usize = 256 << 10;
/// How often the loop does its housekeeping.
const HOUSEKEEPING: Duration = Duration::from_millis(50);
/// How often attached rings are checked for replacement and demotion.
const RING_CHECK: Duration = Duration::from_secs(1);
/// How often an idle ledger looks for frames while they flow (see `serve`).
const POLL: Duration = Duration::from_micros(500);
/// Empty polls in a row (50 ms) after which the ledger parks until a frame comes.
const QUIET_POLLS: u32 = 100;
/// How often the status line is refreshed.
const STATUS_EVERY: Duration = Duration::from_secs(2);
/// How often the status is logged.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// One ring the ledger records.
struct Tap {
    name: String,
    reader: Option<Reader>,
    id: u16,
    created_ns: u64,
    /// Frames read per batch: [`BATCH`], or fewer, so that a batch of the
    /// ring's largest frames stays within a block's target size.
    batch: usize,
    /// Whether its last batch found the ring empty: what the switch from a
    /// replaced ring waits for (each ring its own: another ring always
    /// busy does not hold it back).
    drained: bool,
    /// Why it is not recorded, as last logged: each reason is logged
    /// once (it is looked at every 50 ms) until the ring is recorded.
    said: Option<String>,
}

fn reader_options(next_seq: u64) -> ReaderOptions {
    ReaderOptions { name: "helix-ledger".into(), gating: true, start: Start::At(next_seq), wait: WaitStrategy::Park }
}

impl Tap {
    /// Attaches to the ring if it exists, declaring it in the ledger.
    fn attach(&mut self, ns: &Namespace, ledger: &mut Ledger) -> Result<(), LedgerError> {
        let view = match RingView::attach(ns, &self.name) {
            Ok(v) => v,
            Err(e) => {
                if let Some(why) = self.anew(format!("ring {}: {e}; attaching when it appears", self.name)) {
                    // Not there yet is how every boot begins (the ledger
                    // starts before helixd creates its rings).
                    if matches!(e, AttachError::NotFound { .. }) {
                        info!("{why}");
                    } else {
                        warn!("{why}");
                    }
                }
                return Ok(());
            }
        };
        let g = view.geometry();
        let decl = RingDecl {
            created_ns: g.created_ns,
            capacity: g.capacity,
            max_payload: g.max_payload,
            policy: u8::from(g.policy == Policy::Block),
            name: self.name.clone(),
        };
        // Before it is declared: another user's ring under the name
        // (anyone may create files in /dev/shm) is not recorded, lest its
        // frames stand in the audit trail as the ring's.
        if let Err(e) = view.check_owner() {
            self.refuse(&e);
            return Ok(());
        }
        let (id, next) = ledger.declare(&decl)?;
        // On the mapping judged and declared above, whatever the name
        // means by now.
        match view.reader(&reader_options(next)) {
            Ok(mut r) => {
                r.set_deferred_release(true);
                // A configured trade-off (control.acks, by default), said
                // once; a frame actually lost is a warning of its own.
                if g.policy == Policy::Overwrite {
                    info!(
                        "ring {} overwrites: frames the ledger is too slow for are lost (and recorded as GAPs)",
                        self.name
                    );
                }
                info!("recording ring {} from sequence {next} (ledger ring id {id})", self.name);
                self.reader = Some(r);
                self.id = id;
                self.created_ns = g.created_ns;
                self.batch = (BLOCK_TARGET / (ENTRY_HEADER_LEN + g.max_payload as usize)).clamp(1, BATCH);
                self.said = None;
            }
            Err(e) => {
                if let Some(why) = self.anew(format!("ring {}: cannot attach: {e}; retrying", self.name)) {
                    warn!("{why}");
                }
            }
        }
        Ok(())
    }

    /// Says that another user's ring is not recorded.
    fn refuse(&mut self, e: &helix::ForeignRing) {
        let why = format!(
            "ring {}: not recorded: {e}; recording it once a ring of this user's or root's is there",
            self.name
        );
        if let Some(why) = self.anew(why) {
            error!("{why}");
        }
    }

    /// `why`, if it is not what was logged last.
    fn anew(&mut self, why: String) -> Option<String> {
        (self.said.as_ref() != Some(&why)).then(|| {
            self.said = Some(why.clone());
            why
        })
    }

    /// Reads one batch into the ledger, as one block; returns how many
    /// records it added.
    #[inline]
    fn pump(&mut self, ledger: &mut Ledger) -> usize {
        let Some(reader) = self.reader.as_mut() else { return 0 };
        let id = self.id;
        let epoch = reader.writer_epoch();
        self.drained = false;
        let got = reader.try_read_batch(self.batch, |f| {
            let payload = ledger.reserve_frame(id, f.seq(), epoch, 0, f.kind(), f.len());
            // A frame overwritten while copied is not counted by the batch,
            // and `seal` drops it.
            let _ = f.copy_to(payload);
        });
        match got {
            Ok(n) => {
                // Stamped now that the whole batch has been read.
                ledger.stamp_unsealed(helix::process::realtime_ns());
                ledger.seal(id, n);
                n
            }
            Err(TryReadError::Empty) => {
                ledger.seal(id, 0);
                self.drained = true;
                0
            }
            Err(TryReadError::Overrun(o)) => {
                ledger.seal(id, 0);
                let first = o.resume_at - o.lost;
                warn!(
                    "ring {}: sequences {first} to {} were overwritten before the ledger read them; recording a GAP",
                    self.name,
                    o.resume_at - 1
                );
                ledger.append_gap(id, first, o.resume_at - 1, epoch);
                1
            }
            Err(TryReadError::Frame(e)) => {
                // A batch reports no frame errors; should one appear, the
                // frame stays unread and is retried.
                ledger.seal(id, 0);
                error!("ring {}: {e}", self.name);
                0
            }
            Err(TryReadError::Damaged(d)) => {
                // A ring file shrank under the reader: drop it; `check`
                // attaches again, at the ledger's next sequence, once the
                // ring is repaired.
                ledger.seal(id, 0);
                warn!("{d}");
                self.reader = None;
                0
            }
        }
    }

    /// Housekeeping for one ring: switch to a replacement ring once the
    /// old one is drained, or re-register after a demotion. The
    /// replacement first: a reader demoted on a ring since replaced would
    /// otherwise join the new ring at the old one's sequence, under its
    /// declaration.
    fn check(&mut self, ns: &Namespace, ledger: &mut Ledger) -> Result<(), LedgerError> {
        let Some(reader) = self.reader.as_ref() else { return self.attach(ns, ledger) };
        let now = match RingView::under_name(ns, &self.name, self.created_ns) {
            UnderName::Replaced(_) if self.drained => {
                info!("ring {} was replaced; the old one is drained, recording the new one", self.name);
                self.reader = None;
                return self.attach(ns, ledger);
            }
            UnderName::Replaced(_) => return Ok(()),
            UnderName::Same(view) => Ok(view),
            UnderName::Gone => Err("its files were removed".to_owned()),
            UnderName::Unknown(e) => Err(e.to_string()),
        };
        if !reader.was_demoted() {
            return Ok(());
        }
        let next = ledger.chain().rings[self.id as usize].next_seq;
        warn!("ring {}: the writer demoted the ledger (too slow); re-registering as a gating reader", self.name);
        self.reader = None;
        // Only on the ring it was recording (of this user's, created then):
        // anything else is for `attach` at the next look.
        match now {
            Ok(view) if view.check_owner().is_ok() => match view.reader(&reader_options(next)) {
                Ok(mut r) => {
                    r.set_deferred_release(true);
                    self.reader = Some(r);
                }
                Err(e) => warn!("ring {}: cannot attach: {e}; retrying", self.name),
            },
            Ok(_) => {}
            Err(e) => warn!("ring {}: cannot attach: {e}; retrying", self.name),
        }
        Ok(())
    }
}

/// Says what opening the ledger found and did (`rec`).
fn log_recovery(cfg: &LedgerConfig, rec: &helix::ledger::Recovery) {
    if rec.created {
        info!("started a new ledger in {}", cfg.dir.display());
    }
    for p in &rec.removed {
        // Escaped: anyone who may write the folder names these files, and a
        // newline in one would start a log line of their making.
        warn!("removed {:?} (a temporary file an interrupted write left)", p.display().to_string());
    }
    for p in &rec.pruned {
        warn!("removed {} (pruned by retention, which was interrupted before it removed it)", p.display());
    }
    if let Some((path, offset, bytes, why)) = &rec.truncated {
        warn!("truncated a torn tail of {bytes} bytes at {} offset {offset} ({why})", path.display());
    }
    if let Some(n) = rec.upgraded {
        info!(
            "the last segment is of an older ledger format version: left as it is; recording continues in \
             segment {n}, format version {}",
            helix::ledger::format::VERSION
        );
    }
    if !rec.created {
        info!("ledger {}: {} records, segment {}, chain tail verified", cfg.dir.display(), rec.records, rec.segment);
    }
}

/// Runs the ledger until SIGTERM or SIGINT, writing its counters to
/// `metrics_file` (`--metrics-file`) at every status refresh.
pub fn run(cfg: &LedgerConfig, metrics_file: Option<PathBuf>) -> Result<()> {
    let mut service = Service::start(STATUS_EVERY, LOG_EVERY)?;
    // Before the folder is touched: a key that cannot be read stops here.
    let signer = crate::keys::signer(cfg)?;
    let key_id = signer.as_ref().map(|s| helix::ledger::sign::key_id(&s.public()));
    let (mut ledger, rec) = Ledger::open(&cfg.dir, cfg.segment_size)?;
    if let Some(id) = key_id.filter(|_| !rec.created) {
        crate::keys::warn_if_signed_by_another_key(&cfg.dir, &cfg.key, id);
    }
    // Retention signs the `pruned` manifest with the same key.
    let retention_signer = signer.clone();
    ledger.set_signer(signer);
    log_recovery(cfg, &rec);
    let mut taps: Vec<Tap> = cfg
        .rings
        .iter()
        .map(|name| Tap {
            name: name.clone(),
            reader: None,
            id: 0,
            created_ns: 0,
            batch: 1,
            drained: false,
            said: None,
        })
        .collect();
    for t in &mut taps {
        t.attach(&cfg.namespace, &mut ledger)?;
    }
    // The chain resumed, signed before anything is added to it.
    ledger.checkpoint(helix::process::realtime_ns(), Reason::Open);
    ledger.flush()?;
    // Stopped and joined when `run` returns.
    let _retention = crate::retention::Retainer::spawn(&cfg.dir, cfg.retention, retention_signer)?;
    service.ready(&status(&taps, &ledger, 0.0));
    let result = serve(cfg, &mut service, &mut taps, &mut ledger, Publisher::new(metrics_file));
    service.stopping();
    if result.is_ok() {
        ledger.checkpoint(helix::process::realtime_ns(), Reason::Shutdown);
    }
    // Whatever happened, make durable what was written.
    let flushed = ledger.flush().and_then(|()| ledger.sync());
    for t in &mut taps {
        if let (Some(r), true) = (t.reader.as_mut(), flushed.is_ok()) {
            r.release();
        }
    }
    let s = ledger.stats();
    info!(
        "stopped: {} frames and {} gaps ({} sequences lost) recorded this run, {} fsyncs, head {}",
        s.frames,
        s.gaps,
        s.lost,
        s.syncs,
        helix::ledger::format::hex(&ledger.chain().hash)
    );
    result?;
    Ok(flushed?)
}

/// Records until SIGTERM or SIGINT: pumps the rings into the ledger, starts
/// the background syncs, does the housekeeping on its cadence, and waits
/// when the rings are idle.
fn serve(
    cfg: &LedgerConfig,
    service: &mut Service,
    taps: &mut [Tap],
    ledger: &mut Ledger,
    metrics: Publisher,
) -> Result<()> {
    let mut housekeeping = Cadence::new(HOUSEKEEPING, HOUSEKEEPING);
    let mut keeper = Keeper {
        ring_check: Cadence::new(RING_CHECK, RING_CHECK),
        rate: (Instant::now(), 0, 0.0),
        stuck_logged: false,
        metrics,
        anchor: Default::default(),
    };
    let mut idle_polls = 0u32;
    let mut syncer = Syncer::spawn()?;
    loop {
        let got = pump(taps, ledger)?;
        if !syncer.busy()? && ledger.sync_due_in(cfg.fsync_interval) == Some(Duration::ZERO) {
            syncer.start(ledger)?;
        }
        if housekeeping.due(Instant::now()) && keeper.run(cfg, service, taps, ledger, &syncer)? {
            let finished = syncer.finish();
            drain_at_stop(taps, ledger)?;
            return finished;
        }
        if got > 0 {
            idle_polls = 0;
            continue;
        }
        idle_polls += 1;
        idle(taps, ledger, &mut syncer, housekeeping.next(), cfg.fsync_interval, idle_polls)?;
    }
}

/// Reads a batch from every ring into the ledger; writes the buffer out
/// (and releases the frames to the writers) when the rings had nothing or
/// the buffer is full. Returns the records added.
fn pump(taps: &mut [Tap], ledger: &mut Ledger) -> Result<usize> {
    // Before the batch: a recorder that was stalled signs what it had
    // before it adds blocks read after the stall.
    ledger.checkpoint_if_due(helix::process::realtime_ns());
    let mut got = 0;
    for t in taps.iter_mut() {
        got += t.pump(ledger);
    }
    if got == 0 || ledger.buffered() >= FLUSH_BYTES {
        ledger.flush()?;
        // Written: the frames may go.
        for t in taps.iter_mut() {
            if let Some(r) = t.reader.as_mut() {
                r.release();
            }
        }
    }
    Ok(got)
}

/// At a stop, reads what the rings still hold: under systemd helixd stops
/// first (`helix-ledger.service` is ordered `Before=` it), and a frame left
/// in a ring is lost with `/dev/shm` at a reboot, with no GAP to say so.
/// Bounded by what the rings can hold unread, for a writer that goes on.
fn drain_at_stop(taps: &mut [Tap], ledger: &mut Ledger) -> Result<()> {
    let most: u64 = taps.iter().filter_map(|t| t.reader.as_ref()).map(|r| r.geometry().capacity).sum();
    let mut read = 0u64;
    while read < most {
        let got = pump(taps, ledger)? as u64;
        if got == 0 {
            break;
        }
        read += got;
    }
    if read > 0 {
        info!("stopping: recorded the {read} frames the rings still held");
    }
    Ok(())
}

/// What the housekeeping keeps between its turns.
struct Keeper {
    ring_check: Cadence,
    /// When the rate was last measured, the frames then, and the rate.
    rate: (Instant, u64, f64),
    /// Logged that the sync is stuck.
    stuck_logged: bool,
    /// Where the counters go at every status refresh.
    metrics: Publisher,
    /// The newest anchor, for the counters.
    anchor: helix::ledger::anchor::NewestAnchor,
}

impl Keeper {
    /// One turn of housekeeping: signals (true: stop), the watchdog, the
    /// rings (attached, replaced, demoted) and the status line.
    fn run(
        &mut self,
        cfg: &LedgerConfig,
        service: &mut Service,
        taps: &mut [Tap],
        ledger: &mut Ledger,
        syncer: &Syncer,
    ) -> Result<bool> {
        let now = Instant::now();
        match service.signal(Duration::ZERO)? {
            Some(Event::Stop(_)) => return Ok(true),
            // Nothing to reload and no use for the user signals.
            Some(Event::Other(sig)) => info!("signal {sig} ignored (SIGTERM or SIGINT stop the ledger)"),
            None => {}
        }
        // A sync stuck as long as the watchdog's timeout means the disk is
        // stuck: stop the pings and let systemd restart the ledger
        // (durability stopped).
        service.ping(now, |wd| {
            let stuck = syncer.stuck_for() >= wd;
            if stuck && !self.stuck_logged {
                error!("fdatasync stuck for {:.1} s: no more watchdog pings", syncer.stuck_for().as_secs_f64());
            }
            self.stuck_logged = stuck;
            !stuck
        });
        let check_all = self.ring_check.due(now);
        for t in taps.iter_mut() {
            // A missing ring is looked for on every tick: frames published
            // before the ledger attaches stay only as long as the ring
            // holds them.
            if check_all || t.reader.is_none() {
                t.check(&cfg.namespace, ledger)?;
            }
        }
        if service.status_due(now) {
            let frames = ledger.stats().frames;
            let dt = now.duration_since(self.rate.0).as_secs_f64();
            self.rate = (now, frames, (frames - self.rate.1) as f64 / dt.max(1e-9));
            service.status(now, &status(taps, ledger, self.rate.2));
            if self.metrics.enabled() {
                let extra = crate::metrics::Extra {
                    synced_at: syncer.synced_at,
                    sync_in_flight: syncer.stuck_for().as_secs_f64(),
                    rings: taps.iter().map(|t| (t.name.as_str(), t.reader.is_some())).collect(),
                    anchor: self.anchor.refresh(ledger.dir()),
                };
                self.metrics.publish(&crate::metrics::render(ledger, &extra));
            }
        }
        Ok(false)
    }
}

/// Idle: waits for frames, the next fsync or the housekeeping due at
/// `next`. While frames flow, polls every half millisecond rather than
/// park: a parked reader costs the writer a futex wake per publish, and
/// the ledger a wake-up per small batch, where a poll takes half a
/// millisecond's frames at once. After `QUIET_POLLS` empty polls in a row,
/// parks until a frame comes.
fn idle(
    taps: &mut [Tap],
    ledger: &Ledger,
    syncer: &mut Syncer,
    next: Instant,
    fsync_interval: Duration,
    idle_polls: u32,
) -> Result<()> {
    let mut timeout = next.saturating_duration_since(Instant::now());
    if syncer.busy()? {
        // Notice soon when it is done: the next one may be due.
        timeout = timeout.min(POLL);
    } else if let Some(d) = ledger.sync_due_in(fsync_interval) {
        timeout = timeout.min(d);
    }
    let mut readers: Vec<&mut Tap> = taps.iter_mut().filter(|t| t.reader.is_some()).collect();
    match readers.as_mut_slice() {
        [] if idle_polls > QUIET_POLLS => std::thread::sleep(timeout),
        [only] if idle_polls > QUIET_POLLS => park(only, timeout),
        // Polling: frames flow, or several rings (a reader parks on its own
        // ring's futex only). Between polls the ledger waits on
        // control.log's futex, if it records it: helixd holds each command
        // until the ledger has read its record, so that ring wakes it at
        // once (a command is a wake-up, and rare), while the other rings'
        // frames wait for the poll.
        rings => match rings.iter_mut().find(|t| t.name == helix::control::LOG_RING) {
            Some(log) => park(log, timeout.min(POLL)),
            None => std::thread::sleep(timeout.min(POLL)),
        },
    }
    Ok(())
}

/// Waits up to `timeout` for a frame on `tap`'s ring. A wait that ends at
/// once without one (the ring damaged: the housekeeping deals with it)
/// sleeps instead, so the loop never spins.
fn park(tap: &mut Tap, timeout: Duration) {
    let reader = tap.reader.as_mut().expect("an attached tap");
    match reader.wait_timeout(timeout) {
        Ok(()) | Err(ReadError::Timeout) => {}
        Err(_) => std::thread::sleep(timeout),
    }
}

/// The one-line status: rings, rate, gaps, segment.
fn status(taps: &[Tap], ledger: &Ledger, rate: f64) -> String {
    let s = ledger.stats();
    let rings: Vec<&str> = taps.iter().filter(|t| t.reader.is_some()).map(|t| t.name.as_str()).collect();
    let mut line = format!(
        "recording {}: {}, {} frames, {} gaps this run; {} records, segment {}",
        if rings.is_empty() { "nothing yet".into() } else { rings.join(", ") },
        crate::shared::service::fmt_rate(rate),
        s.frames,
        s.gaps,
        ledger.chain().records,
        ledger.segment()
    );
    for t in taps.iter().filter(|t| t.reader.is_none()) {
        line.push_str(&format!("; waiting for ring {}", t.name));
    }
    line
}
