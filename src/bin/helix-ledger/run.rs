//! The helix-ledger service: taps every configured ring as a gating
//! reader and appends every frame to the ledger.
//!
//! One thread records, in a loop: read a batch from each ring into the
//! ledger's buffer (frames the ring confirms intact are sealed into the
//! chain), and flush the buffer when it is large or the rings are idle: a
//! second thread makes the `write(2)` while the first reads on (see
//! `Ledger::write_behind`), and each batch's frames are released to the
//! writer only once that write is done. On the interval it hands the
//! segment file to a third thread for `fdatasync` (of what is written by
//! then), so recording waits for the disk only when it starts a new segment
//! (the full one is synced before the next is renamed into place), when 32
//! flushes wait to be written, and for the write of a command's record on
//! `control.log` (helixd holds the command until the ledger releases it). A
//! write or sync stuck longer than the watchdog interval stops the watchdog
//! pings, so systemd restarts the ledger.
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
use crate::tap::Tap;
use helix::ledger::sign::Reason;
use helix::ledger::store::Ledger;
use helix::ReadError;

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

/// Says what opening the ledger found and did (`rec`), and, `signing`,
/// what its first checkpoint vouches for that it did not write.
fn log_recovery(cfg: &LedgerConfig, rec: &helix::ledger::Recovery, signing: bool) {
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
    if signing && rec.unsigned > 0 {
        warn!(
            "the ledger's last segment ends in {} records that no checkpoint in it signs (the recorder before \
             this one stopped before it signed them, or did not sign): this recorder's first checkpoint signs the \
             chain as it found it",
            rec.unsigned
        );
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
    let signing = signer.is_some();
    ledger.set_signer(signer);
    log_recovery(cfg, &rec, signing);
    let mut taps: Vec<Tap> = cfg.rings.iter().map(|name| Tap::new(name)).collect();
    for t in &mut taps {
        t.attach(&cfg.namespace, &mut ledger)?;
    }
    // The chain resumed, signed before anything is added to it.
    ledger.checkpoint(helix::process::realtime_ns(), Reason::Open);
    ledger.flush()?;
    write_behind_if_it_pays(&mut ledger)?;
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

/// Writes behind (`Ledger::write_behind`) where another CPU can run the
/// writing thread beside the recording one. Confined to one CPU, the
/// threads would only take turns, and the hand-over costs about a tenth of
/// the flat-out rate (`docs/performance-notes.md`).
fn write_behind_if_it_pays(ledger: &mut Ledger) -> Result<()> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus > 1 {
        ledger.write_behind()?;
        info!("writing the ledger on a thread of its own ({cpus} CPUs)");
    } else {
        info!("writing the ledger on the recording thread (confined to one CPU)");
    }
    Ok(())
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
        let flush = ledger.flushed();
        for t in taps.iter_mut() {
            t.flushed(flush);
        }
    }
    release_written(taps, ledger);
    Ok(got)
}

/// Releases the frames the ledger has written to their rings' writers.
fn release_written(taps: &mut [Tap], ledger: &Ledger) {
    let written = ledger.written();
    for t in taps.iter_mut() {
        t.release_written(written);
    }
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

/// Idle: releases what was written (waiting for the write of a command's
/// record), then waits for frames, the next fsync or the housekeeping due at
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
    // helixd holds each command until the ledger has released its record
    // on control.log: one waiting is not left for the next poll.
    if taps.iter().any(|t| t.name == helix::control::LOG_RING && !t.unwritten.is_empty()) {
        ledger.wait_written()?;
    }
    release_written(taps, ledger);
    let mut timeout = next.saturating_duration_since(Instant::now());
    if syncer.busy()? {
        // Notice soon when it is done: the next one may be due.
        timeout = timeout.min(POLL);
    } else if let Some(d) = ledger.sync_due_in(fsync_interval) {
        timeout = timeout.min(d);
    }
    // A write still in flight keeps the ledger polling: parked, nothing
    // would wake it to release its frames.
    let quiet = idle_polls > QUIET_POLLS && taps.iter().all(|t| t.unwritten.is_empty());
    let mut readers: Vec<&mut Tap> = taps.iter_mut().filter(|t| t.reader.is_some()).collect();
    match readers.as_mut_slice() {
        [] if quiet => std::thread::sleep(timeout),
        [only] if quiet => park(only, timeout),
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
