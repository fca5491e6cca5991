//! The service: every link of the configuration in one process, each on a
//! thread of its own with a single-threaded tokio runtime (the ring reads
//! wait on a futex for up to 100 ms, so links must not share a runtime
//! thread), supervised from the main thread: READY=1 once every link is
//! connected, WATCHDOG=1 while every link's loop turns, STATUS with each
//! link's frames/s. A link that fails is logged and started again on its
//! own after a wait (`start`), resuming from its ring (docs/bridge.md,
//! "Guarantees"); the others go on.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use tracing::{error, info, warn};

use crate::config::Config;
use crate::counters::Counters;
use crate::links::{self, Ctx};
use crate::metrics::{self, Link};
use crate::service::{fmt_rate, Event, Service};

/// A running link.
struct Running {
    link: Link,
    ready: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<()>>>,
    /// Beats and frames at the last look, and when the beats last moved.
    beats: u64,
    moved: Instant,
    frames: u64,
}

impl Running {
    fn name(&self) -> String {
        format!("{} {}", self.link.direction, self.link.ring)
    }
}

/// How long a link that failed waits before it starts again: the first
/// time, and at most (each failure in a row doubles it; a link that ran
/// this long before it failed starts at the first again).
const RESTART_FIRST: Duration = Duration::from_secs(2);
const RESTART_MAX: Duration = Duration::from_secs(60);

/// Starts link `name` on a thread of its own, and starts it again when it
/// fails, after a wait, until the process stops: one link's failure (its
/// ring missing or damaged, a stream JetStream refuses) is said, counted
/// and waited out on its own, and the other links go on. (Found by
/// review: a failing link ended the process, and with it every link;
/// systemd's restarts every 2 s kept them all down while one ring was
/// misnamed in the file, or a reader kept damaging a ring's control file.)
fn start<F>(c: Ctx, link: Link, body: F) -> Result<Running>
where
    F: AsyncFn(&Ctx) -> Result<()> + Send + 'static,
{
    let ready = c.ready.clone();
    let name = format!("{} {}", link.direction, link.ring);
    let thread = std::thread::Builder::new()
        .name(format!("{}-{}", link.direction, link.ring).chars().take(15).collect())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let mut wait = RESTART_FIRST;
            loop {
                let began = Instant::now();
                let r = rt.block_on(body(&c)).with_context(|| name.clone());
                if c.stop.load(Ordering::Relaxed) {
                    return r;
                }
                let e = r.err().unwrap_or_else(|| anyhow!("{name}: it ended without being stopped"));
                if began.elapsed() >= RESTART_MAX {
                    wait = RESTART_FIRST;
                }
                error!("{e:#}; starting it again in {} s (the other links go on)", wait.as_secs());
                Counters::add(&c.counters.restarts, 1);
                Counters::set(&c.counters.failing, 1);
                // Settled, for READY=1: the others are not held back by it.
                c.ready.store(true, Ordering::Relaxed);
                let until = Instant::now() + wait;
                while Instant::now() < until && !c.stop.load(Ordering::Relaxed) {
                    // Its supervision turns: the watchdog sees it alive.
                    Counters::add(&c.counters.beats, 1);
                    std::thread::sleep(Duration::from_millis(100));
                }
                if c.stop.load(Ordering::Relaxed) {
                    return Ok(());
                }
                Counters::set(&c.counters.failing, 0);
                wait = (wait * 2).min(RESTART_MAX);
            }
        })
        .context("starting a link's thread")?;
    Ok(Running { link, ready, thread: Some(thread), beats: 0, moved: Instant::now(), frames: 0 })
}

/// Starts every configured link.
fn start_all(cfg: &Config, stop: &Arc<AtomicBool>) -> Result<Vec<Running>> {
    let ctx = || Ctx {
        server: cfg.server.clone(),
        ns: cfg.namespace.clone(),
        counters: Arc::new(Counters::default()),
        stop: stop.clone(),
        ready: Arc::new(AtomicBool::new(false)),
    };
    let link = |direction, ring: &str, c: &Ctx| Link { direction, ring: ring.to_owned(), counters: c.counters.clone() };
    let mut out = vec![];
    for x in &cfg.exports {
        let (c, x) = (ctx(), x.clone());
        let l = link("export", &x.ring, &c);
        out.push(start(c, l, async move |c: &Ctx| links::export(c, &x).await)?);
    }
    for a in &cfg.imports {
        let (c, a, site) = (ctx(), a.clone(), cfg.site.clone());
        let l = link("import", &a.ring, &c);
        out.push(start(c, l, async move |c: &Ctx| links::import(c, &site, &a).await)?);
    }
    if let Some(m) = &cfg.ledger {
        let (c, m, host) = (ctx(), m.clone(), cfg.host.clone());
        let l = link("ledger", &m.dir.display().to_string(), &c);
        out.push(start(c, l, async move |c: &Ctx| links::ledger(c, &host, &m).await)?);
    }
    Ok(out)
}

/// The packaged unit's `WatchdogSec=`, which `--check` holds a file to.
pub const UNIT_WATCHDOG: Duration = Duration::from_secs(30);

/// Shorter than this, an acknowledgement timeout is likely a unit mistaken
/// (seconds for milliseconds).
const SHORTEST_ACK_TIMEOUT: Duration = Duration::from_millis(100);

/// What to say of `ack_timeout_ms`, if anything: shorter than an
/// acknowledgement takes, every publish may time out and be sent again
/// for ever, with no line naming the key (found by review: `10`, meant as
/// seconds, was taken); more than half the watchdog timeout `wd`, see
/// [`slow_acks`].
pub fn ack_timeout_warning(cfg: &Config, wd: Duration) -> Option<String> {
    short_acks(cfg.server.ack_timeout, "ack_timeout_ms").or_else(|| slow_acks(cfg, wd))
}

/// An acknowledgement timeout `t` (given as `key`) shorter than an
/// acknowledgement usually takes: what to say of it, if so.
pub fn short_acks(t: Duration, key: &str) -> Option<String> {
    (t < SHORTEST_ACK_TIMEOUT).then(|| {
        format!(
            "{key} = {} is shorter than a JetStream acknowledgement usually takes (a round trip and a write to \
             the server's store): publishes may time out and be sent again for ever; it is in milliseconds (at \
             least {} is advised)",
            t.as_millis(),
            SHORTEST_ACK_TIMEOUT.as_millis()
        )
    })
}

/// A link's loop waits for each publish's acknowledgement: with more than
/// half the watchdog timeout `wd` to wait, a server that is slow, not
/// stuck, stands the loop still long enough for the pings to stop, and the
/// bridge is killed before the acknowledgement's time runs out. What to
/// say of that, if so.
fn slow_acks(cfg: &Config, wd: Duration) -> Option<String> {
    (cfg.server.ack_timeout * 2 > wd).then(|| {
        format!(
            "ack_timeout_ms = {} is more than half the systemd watchdog timeout ({wd:?}): a server that slow to \
             acknowledge gets the bridge killed by the watchdog before the publish times out; lower \
             ack_timeout_ms to {} or less, or raise the unit's WatchdogSec=",
            cfg.server.ack_timeout.as_millis(),
            (wd / 2).as_millis()
        )
    })
}

/// Runs the configuration until SIGTERM or SIGINT.
pub fn run(cfg: Config) -> Result<()> {
    if cfg.links() == 0 {
        bail!("no link configured ([[export]], [[import]] or [ledger]): nothing to run");
    }
    // Before any thread starts: the signals are blocked in all of them.
    let mut svc = Service::start(Duration::from_secs(2), Duration::from_secs(60))?;
    if let Some(why) = ack_timeout_warning(&cfg, svc.watchdog().unwrap_or(Duration::MAX)) {
        warn!("{why}");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut running = start_all(&cfg, &stop)?;
    if let Some(addr) = cfg.metrics {
        metrics::spawn(&addr.to_string(), running.iter().map(|r| r.link.clone()).collect())?;
    }
    let (mut ready, mut status_at) = (false, Instant::now());
    // Until a signal, or a link ended (it set `stop`).
    while !stop.load(Ordering::Relaxed) {
        if let Some(Event::Stop(_)) = svc.signal(Duration::from_millis(100))? {
            break;
        }
        let now = Instant::now();
        if !ready && running.iter().all(|r| r.ready.load(Ordering::Relaxed)) {
            ready = true;
            status_at = now;
            svc.ready(&status(&mut running, Duration::ZERO));
        }
        if ready {
            // Every link looked at (each logs its own stall), then all healthy.
            svc.ping(now, |wd| running.iter_mut().map(|r| beat(r, now, wd)).filter(|h| !h).count() == 0);
            if svc.status_due(now) {
                let s = status(&mut running, now - status_at);
                status_at = now;
                svc.status(now, &s);
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    svc.stopping();
    let result = finish(&mut running);
    svc.stopped(&status(&mut running, Duration::ZERO));
    result
}

/// Whether link `r`'s loop turned within the watchdog's timeout `wd`.
fn beat(r: &mut Running, now: Instant, wd: Duration) -> bool {
    let beats = Counters::get(&r.link.counters.beats);
    if beats != r.beats || !r.ready.load(Ordering::Relaxed) {
        r.beats = beats;
        r.moved = now;
    }
    let healthy = now - r.moved < wd;
    if !healthy {
        warn!("{}: its loop has not turned for {:?}: not pinging the watchdog", r.name(), now - r.moved);
    }
    healthy
}

/// `N links; export telemetry 12.5k frames/s; ...` over the last `dt`.
fn status(running: &mut [Running], dt: Duration) -> String {
    let n = running.len();
    let mut s = format!("{n} link{}", if n == 1 { "" } else { "s" });
    for r in running.iter_mut() {
        let c = &r.link.counters;
        let failed = if Counters::get(&c.failing) != 0 { " (failed: starting again)" } else { "" };
        if r.link.direction == "ledger" {
            s += &format!("; ledger head {} records{failed}", Counters::get(&c.head_records));
            continue;
        }
        let frames = Counters::get(&c.frames);
        let rate = if dt.is_zero() { 0.0 } else { (frames - r.frames) as f64 / dt.as_secs_f64() };
        r.frames = frames;
        s += &format!("; {} {} {}{failed}", r.link.direction, r.link.ring, fmt_rate(rate));
    }
    s
}

/// Joins every link; the first error (in link order) is the process's.
fn finish(running: &mut [Running]) -> Result<()> {
    let mut first = None;
    for r in running {
        let name = r.name();
        let result = r.thread.take().map(|t| t.join().map_err(|_| anyhow!("{name}: its thread panicked")));
        let result = match result {
            Some(Ok(r)) => r,
            Some(Err(e)) => Err(e),
            None => Ok(()),
        };
        info!("{name} stopped: {}", r.link.counters.summary());
        if let Err(e) = result {
            tracing::error!("{e:#}");
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}
