//! The twin as a service: the telemetry reader ([`Ingest`]), the publisher
//! of the state table and alarms ([`Publisher`]), and the main loop with
//! systemd notifications and signals ([`run`]).

use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use anyhow::Result;
use helix::{Damaged, ReadError};

use crate::shared::service::{fmt_rate, notify, Cadence, Event, NotifyState, Service};
use helix::process::now_ns;
use helix::shm::Namespace;
use helix::telemetry::{Sample, KIND_SAMPLE};
use helix::twin::Snapshot;
use helix::{
    AttachError, ForeignRing, FrameRef, LeaseError, Reader, ReaderOptions, Ring, RingView, Start, TryReadError, Writer,
};

use crate::config::TwinConfig;
use crate::model::{Input, Twin};
use crate::publish::Publisher;

/// Frames taken from the ring per batch.
const BATCH: usize = 4096;
/// Frames read before the loop looks at its timers again.
const ROUND: usize = 65_536;
/// Longest the loop parks, so signals and timers are seen promptly.
const MAX_PARK: Duration = Duration::from_millis(100);
/// The longest park while telemetry flows: a commit wakes the twin long
/// before, unless a peer of the reader table keeps `waiters` at 0 (which
/// turns the writer's wake-ups off, docs/security.md): then an alarm is
/// late by at most this, as when the twin read in batches of 1 ms.
const FLOWING_PARK: Duration = Duration::from_millis(1);
/// How often the status line is refreshed.
const STATUS_EVERY: Duration = Duration::from_secs(2);
/// How often the status is logged.
const LOG_EVERY: Duration = Duration::from_secs(10);
/// How often the twin looks whether helixd replaced one of its rings.
const RING_CHECK: Duration = Duration::from_secs(1);
/// The name the twin registers with on the telemetry ring.
pub const READER_NAME: &str = "helix-twin";

/// A frame as classified inside the batch callback; only the consumed
/// prefix of a batch is taken in.
#[derive(Clone, Copy)]
enum Seen {
    Input(Input),
    Torn,
}

fn classify(f: &FrameRef<'_>) -> Seen {
    if f.kind() != KIND_SAMPLE {
        return Seen::Input(Input::BadKind(f.kind()));
    }
    if f.len() != std::mem::size_of::<Sample>() {
        return Seen::Input(Input::BadSize(f.len()));
    }
    match f.read::<Sample>() {
        Ok(s) => Seen::Input(Input::Sample(s)),
        Err(_) => Seen::Torn,
    }
}

/// What one [`Ingest::poll`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Polled {
    /// Frames consumed.
    pub frames: u64,
    /// Overrun events met (their losses are in the twin's counters).
    pub overruns: u64,
    /// Whether it stopped because the ring had nothing more.
    pub caught_up: bool,
    /// Set if the ring's file shrank under the reader: attach again.
    pub damaged: Option<Damaged>,
}

/// The twin's non-gating reader of the telemetry ring.
pub struct Ingest {
    reader: Reader,
    buf: Vec<Seen>,
    /// Why the ring that replaced this one cannot be read, as last said.
    refused: Option<String>,
}

impl Ingest {
    /// Attaches to `ring` as a non-gating reader (it never holds the writer
    /// back; if it falls a ring behind it loses frames and counts them),
    /// starting with the next frame published, parking when idle.
    /// Only a ring of the twin's own user or root's is read (see
    /// [`StartError::Foreign`]).
    pub fn attach(ns: &Namespace, ring: &str) -> Result<Ingest, StartError> {
        Ingest::attach_from(ns, ring, Start::Newest)
    }

    /// [`Ingest::attach`] from `start`: a ring made again is read from its
    /// oldest frame, every one of which is new to the twin. (Found by
    /// review: read from the next frame published, what helixd wrote into
    /// the new ring before the twin's look, up to a second of samples, was
    /// skipped and counted nowhere.)
    fn attach_from(ns: &Namespace, ring: &str, start: Start) -> Result<Ingest, StartError> {
        let opts = ReaderOptions { name: READER_NAME.into(), gating: false, start, wait: helix::WaitStrategy::Park };
        let view = RingView::attach(ns, ring).map_err(|e| attach_err(ns, ring, e))?;
        // Judged before it joins: nothing of another user's ring is touched.
        view.check_owner()?;
        Ok(Ingest::new(view.reader(&opts).map_err(|e| attach_err(ns, ring, e))?))
    }

    /// Wraps a reader (tests attach their own).
    pub fn new(reader: Reader) -> Ingest {
        Ingest { reader, buf: Vec::with_capacity(BATCH), refused: None }
    }

    /// The reader (tests/twin.rs checks its gating).
    #[cfg(test)]
    #[allow(dead_code)]
    pub fn reader(&self) -> &Reader {
        &self.reader
    }

    /// Feeds `twin` what the ring has, at most about `max` frames; an
    /// overrun is counted in the twin (with its exact loss) and reading
    /// goes on at the oldest intact frame.
    pub fn poll(&mut self, twin: &mut Twin, max: usize) -> Polled {
        let mut done = Polled::default();
        while (done.frames as usize) < max {
            let buf = &mut self.buf;
            buf.clear();
            match self.reader.try_read_batch(BATCH, |f| buf.push(classify(f))) {
                Ok(n) => {
                    twin.reading(now_ns());
                    for seen in &self.buf[..n] {
                        match seen {
                            Seen::Input(i) => twin.input(i),
                            // A consumed frame was intact throughout, so
                            // its read cannot have failed.
                            Seen::Torn => {}
                        }
                    }
                    done.frames += n as u64;
                }
                Err(TryReadError::Empty) => {
                    done.caught_up = true;
                    break;
                }
                Err(TryReadError::Overrun(o)) => {
                    twin.overrun(o.lost);
                    done.overruns += 1;
                }
                // Not produced by a batch read; nothing was consumed.
                Err(TryReadError::Frame(_)) => break,
                Err(TryReadError::Damaged(d)) => {
                    done.caught_up = true;
                    done.damaged = Some(d);
                    break;
                }
            }
        }
        twin.behind(!done.caught_up);
        done
    }

    /// Reads into `twin` what this ring, replaced under its name, still
    /// holds past the cursor, before it is let go: a ring's worth at most
    /// (a writer that still holds it may write on), the rest counted as
    /// lost. Frames read, and lost (`None`: the ring was damaged, and what
    /// it held past the damage is unknown). (Found by review: they were
    /// dropped without a word.)
    pub fn read_out(&mut self, twin: &mut Twin) -> (u64, Option<u64>) {
        let capacity = self.reader.geometry().capacity;
        let polled = self.poll(twin, capacity as usize);
        if polled.damaged.is_some() {
            return (polled.frames, None);
        }
        // By a count the slots bear out, and a ring's worth at most: its
        // writer may have written anything in the header.
        let lost = if polled.caught_up { 0 } else { self.reader.trusted_lag().unwrap_or(0).min(capacity) };
        if lost > 0 {
            twin.overrun(lost);
        }
        (polled.frames, Some(lost))
    }

    /// When the ring it reads was created (what tells it from a ring
    /// created again under the same name).
    pub fn created_ns(&self) -> u64 {
        self.reader.geometry().created_ns
    }

    /// Parks until a frame arrives or `timeout` passes.
    pub fn wait(&mut self, timeout: Duration) {
        if let Err(ReadError::Damaged(_)) = self.reader.wait_timeout(timeout) {
            std::thread::sleep(timeout);
        }
    }
}

/// Why the twin's rings could not be taken into service.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A ring does not exist (yet): helixd creates it.
    #[error("ring {ring:?} does not exist in namespace {namespace} (is helixd running?)")]
    Missing { ring: String, namespace: String },
    /// Attaching failed otherwise.
    #[error("ring {ring:?}: {error}")]
    Attach { ring: String, error: AttachError },
    /// The writer lease is held (another helix-twin runs) or unavailable.
    #[error("ring {ring:?}: {error}")]
    Lease { ring: String, error: LeaseError },
    /// The ring's slots cannot hold the frames.
    #[error("ring {ring:?} holds payloads of at most {max} bytes; the twin's {what} frames are {needed} bytes")]
    TooSmall { ring: String, max: u32, needed: usize, what: &'static str },
    /// Another user made the ring (anyone may create files in /dev/shm):
    /// its frames would be that user's, and so would the state and alarms
    /// the twin wrote into it.
    #[error(transparent)]
    Foreign(#[from] ForeignRing),
}

impl StartError {
    /// Whether waiting may help: the ring does not exist or is being made,
    /// or another user's is in its place (helixd cannot make the real one
    /// until root removes it, and the twin waits for that).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StartError::Missing { .. }
                | StartError::Attach { error: AttachError::Initializing { .. }, .. }
                | StartError::Foreign(_)
        )
    }
}

fn attach_err(ns: &Namespace, ring: &str, e: AttachError) -> StartError {
    match e {
        AttachError::NotFound { .. } => StartError::Missing { ring: ring.into(), namespace: ns.to_string() },
        error => StartError::Attach { ring: ring.into(), error },
    }
}

pub fn writer(ns: &Namespace, ring: &str, needed: usize, what: &'static str) -> Result<Writer, StartError> {
    let ring_open = Ring::open(ns, ring).map_err(|e| attach_err(ns, ring, e))?;
    // Judged before its lease is taken: nothing of another user's ring is
    // touched.
    ring_open.check_owner()?;
    let w = ring_open.writer().map_err(|e| match e {
        LeaseError::Attach(a) => attach_err(ns, ring, a),
        error => StartError::Lease { ring: ring.into(), error },
    })?;
    let max = w.geometry().max_payload;
    if (max as usize) < needed {
        return Err(StartError::TooSmall { ring: ring.into(), max, needed, what });
    }
    Ok(w)
}

/// Whether ring `name` now in `ns` is another ring than the one created at
/// `created_ns`: helixd retired it and created it again (a SIGHUP can), and
/// the old one, still mapped, gets no more frames and has no more readers.
pub fn replaced(ns: &Namespace, name: &str, created_ns: u64) -> bool {
    RingView::attach(ns, name).is_ok_and(|v| v.geometry().created_ns != created_ns)
}

/// The one-line status: streams, rate (if measured), losses, alarms, bad
/// input.
pub fn status_line(twin: &Twin, rate: Option<f64>, publisher: Option<&Publisher>) -> String {
    let c = twin.counters();
    let rate = rate.map_or(format!("{} frames", c.frames), fmt_rate);
    let mut s = format!(
        "{}/{} streams; {rate}; {} overruns ({} frames lost); {} alarms active",
        twin.streams_seen(),
        twin.streams(),
        c.overruns,
        c.lost,
        c.alarms_active
    );
    let bad = c.rejected_streams + c.bad_kind + c.bad_size + c.nonfinite;
    if bad > 0 {
        s.push_str(&format!(
            "; rejected: {} out-of-range streams, {} unknown kinds, {} wrong sizes, {} non-finite",
            c.rejected_streams, c.bad_kind, c.bad_size, c.nonfinite
        ));
    }
    if c.late + c.repeated + c.seq_resets > 0 {
        s.push_str(&format!(
            "; out of order: {} late (their gaps filled), {} repeated, {} restarted sequences",
            c.late, c.repeated, c.seq_resets
        ));
    }
    let (alarms, state) = publisher.map_or((0, 0), |p| (p.alarm_failed, p.state_failed));
    if alarms > 0 {
        s.push_str(&format!("; {alarms} alarm events not published"));
    }
    if state > 0 {
        s.push_str(&format!("; {state} state frames not published"));
    }
    s
}

/// Runs the twin until SIGTERM or SIGINT: waits for its rings (logging
/// it), attaches, tells systemd READY=1, then reads, models, publishes,
/// reports STATUS= and pings the watchdog from the loop.
pub fn run(config: TwinConfig) -> Result<()> {
    let mut service = Service::start(STATUS_EVERY, LOG_EVERY)?;
    let ns = config.namespace.clone();
    info!(
        "configuration {}; namespace {}; {} streams, {} rules",
        config.path.display(),
        ns,
        config.streams,
        config.rules.len()
    );
    let Some((mut ingest, mut publisher)) = attach(&config, &mut service)? else {
        service.stopping();
        return Ok(());
    };
    if let Some(capacity) = publisher.state_capacity() {
        warn_if_state_ring_small(&config, capacity);
    }
    let instance = helix::process::realtime_ns();
    let mut twin = Twin::new(&config, instance);
    take_over(&config, &mut twin);
    info!(
        "attached: reading {} (non-gating), writing {} and {}",
        config.telemetry_ring, config.state_ring, config.alarm_ring
    );
    service.ready(&status_line(&twin, None, None));
    serve(&config, &mut service, &mut ingest, &mut publisher, &mut twin)?;
    service.stopping();
    service.stopped(&status_line(&twin, None, Some(&publisher)));
    Ok(())
}

/// Takes over, from the previous instance's state on the state ring, when
/// each stream last reported ([`Twin::take_over`]), so that a stream that
/// went silent before this twin started is judged stale again; logs how
/// many. Called before the twin publishes, so the ring's newest instance
/// is the previous one. Reading is bounded by the ring (whose writer lease
/// the twin holds: nothing is published meanwhile); a frame that is not a
/// twin's is skipped; a ring that cannot be read is said, and the twin
/// starts from nothing.
fn take_over(config: &TwinConfig, twin: &mut Twin) {
    // Its frames are this user's or root's: `Publisher::attach` checked
    // the owner of the file under the name, and `read` checks the file it
    // reads; only the owner writes a data region (docs/security.md). A
    // reader of the ring can damage its reader table: then it is not read.
    match Snapshot::read(&config.namespace, &config.state_ring, READER_NAME, &helix::Owners::MINE) {
        Ok(previous) if previous.streams.is_empty() => info!("no previous state in {}", config.state_ring),
        Ok(previous) => {
            let taken = twin.take_over(previous.streams.values(), now_ns());
            info!(
                "took over {taken} of the {} streams in the previous state in {} (instance {}): their staleness \
                 is judged again",
                previous.streams.len(),
                config.state_ring,
                previous.instance
            );
            // A stream the previous twin last published before the ring
            // wrapped (a silent one, published only in snapshots, behind a
            // flood of others' updates) is not there to take over.
            let seen = previous.marker.map_or(0, |m| m.streams_seen);
            if seen > previous.streams.len() as u64 {
                warn!(
                    "{} held the last state of {} of the {seen} streams the previous twin had seen: the others are \
                     not judged stale until they report (a larger ring keeps them)",
                    config.state_ring,
                    previous.streams.len()
                );
            }
        }
        Err(e) => warn!("the previous state cannot be read ({e}); starting from nothing"),
    }
}

/// The most frames the twin publishes on its state ring from one snapshot
/// to the next: the snapshot (every stream and its two markers) and an
/// update of every stream at each update interval between.
fn snapshot_cycle_frames(config: &TwinConfig) -> u64 {
    let publications = config.snapshot_interval.as_nanos().div_ceil(config.update_interval.as_nanos().max(1));
    u64::from(config.streams) * publications.min(u64::MAX as u128) as u64 + 2
}

/// Says so when the state ring holds fewer frames than a snapshot cycle
/// may publish: its readers (`helixctl twin`, the metrics, the next twin's
/// take-over) may then find no snapshot begin marker, so no counters, and
/// miss the streams that publish only in snapshots. (Found by review: at
/// 50,000 streams, helixd's default of 65,536 slots lost the marker most
/// of the time, and nothing said why.)
fn warn_if_state_ring_small(config: &TwinConfig, capacity: u64) {
    let cycle = snapshot_cycle_frames(config);
    if capacity < cycle {
        warn!(
            "{} holds {capacity} frames, fewer than a snapshot cycle may publish ({cycle}: {} streams, a snapshot \
             every {} ms and updates every {} ms): its readers may find no snapshot; give it capacity = {} in \
             helixd's configuration",
            config.state_ring,
            config.streams,
            config.snapshot_interval.as_millis(),
            config.update_interval.as_millis(),
            cycle.checked_next_power_of_two().unwrap_or(cycle)
        );
    }
}

/// Attaches to the rings, waiting while they do not exist yet (helixd may
/// start after the twin) or another user's ring is in one's place; `None`
/// if a signal stopped the wait. Each new reason to wait is said once.
fn attach(config: &TwinConfig, service: &mut Service) -> Result<Option<(Ingest, Publisher)>> {
    let ns = &config.namespace;
    let mut said = String::new();
    loop {
        let attempt = Publisher::attach(ns, &config.state_ring, &config.alarm_ring)
            .and_then(|p| Ok((Ingest::attach(ns, &config.telemetry_ring)?, p)));
        match attempt {
            Ok(x) => return Ok(Some(x)),
            Err(e) if e.is_transient() => {
                let why = e.to_string();
                if why != said {
                    warn!("waiting: {why}");
                    notify(&[NotifyState::Status(&format!("waiting: {why}"))]);
                    said = why;
                }
                service.ping(Instant::now(), |_| true);
                if let Some(Event::Stop(_)) = service.signal(Duration::from_millis(250))? {
                    info!("stopping before the rings appeared");
                    return Ok(None);
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Reads, models and publishes until SIGTERM or SIGINT.
fn serve(
    config: &TwinConfig,
    service: &mut Service,
    ingest: &mut Ingest,
    publisher: &mut Publisher,
    twin: &mut Twin,
) -> Result<()> {
    let tick_every = config.update_interval.min(Duration::from_millis(100));
    let mut tick = Cadence::new(tick_every, tick_every);
    let mut update = Cadence::new(config.update_interval, config.update_interval);
    let mut snapshot = Cadence::new(config.snapshot_interval, Duration::ZERO);
    let mut ring_check = Cadence::new(RING_CHECK, RING_CHECK);
    let mut last_status = (Instant::now(), 0u64);
    let mut logged = (0u64, 0u64);
    let mut damage_logged = false;
    loop {
        let polled = ingest.poll(twin, ROUND);
        if let Some(d) = polled.damaged {
            reattach_damaged(config, ingest, d, &mut damage_logged);
        }
        if !twin.pending_events().is_empty() {
            publisher.alarms(twin);
        }
        let now = Instant::now();
        if tick.due(now) {
            twin.tick(now_ns());
            publisher.alarms(twin);
        }
        // The state table goes out a claim a turn, telemetry read between.
        if !publisher.publishing() {
            if snapshot.due(now) {
                publisher.start_snapshot(twin, now_ns());
                update = Cadence::new(config.update_interval, config.update_interval);
            } else if update.due(now) {
                publisher.start_update(twin, now_ns());
            }
        }
        publisher.step(twin, now_ns());
        if ring_check.due(now) {
            follow_rings(config, ingest, publisher, twin);
        }
        // From the loop itself: a loop that stops turning stops pinging,
        // and systemd restarts the twin.
        service.ping(now, |_| true);
        if service.status_due(now) {
            let c = twin.counters();
            let secs = now.duration_since(last_status.0).as_secs_f64().max(1e-9);
            let rate = (c.frames - last_status.1) as f64 / secs;
            last_status = (now, c.frames);
            log_losses(twin, &mut logged);
            service.status(now, &status_line(twin, Some(rate), Some(publisher)));
        }
        match service.signal(Duration::ZERO)? {
            Some(Event::Stop(_)) => {
                publisher.finish(twin, now_ns());
                return Ok(());
            }
            Some(Event::Other(sig)) => info!("signal {sig} ignored (SIGTERM or SIGINT stop the twin)"),
            None => {}
        }
        if !polled.caught_up || publisher.publishing() {
            continue;
        }
        let next = tick.next().min(update.next()).min(snapshot.next()).min(service.next_due());
        let until = next.saturating_duration_since(Instant::now()).min(MAX_PARK);
        match (polled.frames > 0, config.poll_interval) {
            // Telemetry flows, and batches were asked for: let one gather
            // rather than be woken per commit.
            (true, batch) if !batch.is_zero() => std::thread::sleep(batch.min(until)),
            (true, _) => ingest.wait(until.min(FLOWING_PARK)),
            (false, _) => ingest.wait(until),
        }
    }
}

/// The telemetry ring shrank under the twin's reader: attaches again once
/// helixd has repaired the ring (meanwhile streams go stale, and their
/// alarms say so). `logged`: the wait was logged.
fn reattach_damaged(config: &TwinConfig, ingest: &mut Ingest, d: Damaged, logged: &mut bool) {
    let (ns, ring) = (&config.namespace, &config.telemetry_ring);
    // A repaired control region keeps the frames and the sequence: read on
    // where this reader was. A ring made again is new from its oldest.
    let start = if replaced(ns, ring, ingest.created_ns()) { Start::Oldest } else { Start::At(ingest.reader.cursor()) };
    match Ingest::attach_from(ns, ring, start) {
        Ok(i) => {
            info!("attached to {} again after: {d}", config.telemetry_ring);
            (*ingest, *logged) = (i, false);
        }
        Err(e) if !*logged => {
            error!("{d}; attaching again when it is repaired ({e})");
            *logged = true;
        }
        Err(_) => {}
    }
}

/// Moves to whichever of the twin's rings helixd replaced: otherwise the
/// twin would read a ring nobody writes any more, and publish into rings
/// nobody reads, and say nothing. Lets a damaged output ring be repaired
/// ([`Publisher::follow_rings`]).
pub(crate) fn follow_rings(config: &TwinConfig, ingest: &mut Ingest, publisher: &mut Publisher, twin: &mut Twin) {
    let (ns, ring) = (&config.namespace, &config.telemetry_ring);
    if replaced(ns, ring, ingest.created_ns()) {
        match Ingest::attach_from(ns, ring, Start::Oldest) {
            Ok(i) => {
                let (read, lost) = ingest.read_out(twin);
                *ingest = i;
                let lost = match lost {
                    Some(0) => String::new(),
                    Some(n) => format!(", {n} more lost"),
                    None => ", and found it damaged: what it held past that is lost".into(),
                };
                info!(
                    "ring {ring} was replaced (created again); read the {read} frames the old one still held{lost}; \
                     reading the new one"
                );
            }
            // Said when the reason is new: it is tried again every second.
            Err(e) => {
                let why = e.to_string();
                if ingest.refused.as_ref() != Some(&why) {
                    warn!("ring {ring} was replaced (created again), and cannot be read: {why}; retrying every second");
                    ingest.refused = Some(why);
                }
            }
        }
    }
    publisher.follow_rings(ns, &config.state_ring, &config.alarm_ring);
}

/// Logs frames lost and bad input, when they grew since `logged`
/// (losses, bad input).
fn log_losses(twin: &Twin, logged: &mut (u64, u64)) {
    let c = twin.counters();
    if c.lost > logged.0 {
        warn!(
            "fell behind: {} frames lost in {} overruns so far (the twin never slows the writer)",
            c.lost, c.overruns
        );
        logged.0 = c.lost;
    }
    let bad = c.rejected_streams + c.bad_kind + c.bad_size + c.nonfinite;
    if bad > logged.1 {
        warn!(
            "bad input so far: {} samples of streams beyond {}, {} frames of unknown kind, {} of the wrong size, {} non-finite values",
            c.rejected_streams,
            twin.streams(),
            c.bad_kind,
            c.bad_size,
            c.nonfinite
        );
        logged.1 = bad;
    }
}
