//! What helixd, helix-ledger and helix-twin share as systemd services: the
//! [`Service`] runner (signals, the health-gated watchdog, the STATUS line
//! and its log cadence), notifications, and the rate in their status lines.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tracing::info;

use super::signal::{Signal, Signals};

pub use sd_notify::NotifyState;

/// What a service does with a signal. Every signal a service can be sent
/// by mistake is taken by it: SIGTERM and SIGINT stop it; the others do
/// what the program says, and nothing (a debug line) by default.
const TAKEN: [Signal; 5] = [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP, Signal::SIGUSR1, Signal::SIGUSR2];

/// Set by a program that starts services as its children (helix-bench) to
/// its pid: the service stops (SIGTERM) when that process dies, however it
/// dies, instead of running on as an orphan.
pub const PARENT_PID_ENV: &str = "HELIX_PARENT_PID";

/// A signal as the service loop sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// SIGTERM or SIGINT: stop.
    Stop(Signal),
    /// SIGHUP, SIGUSR1 or SIGUSR2: the program's to act on or to ignore.
    Other(Signal),
}

/// With [`PARENT_PID_ENV`] set: asks the kernel for SIGTERM when the parent
/// dies (taken as a stop, like any SIGTERM), and sends it now if the parent
/// is already gone (it died before the request took effect).
fn tie_to_parent() -> Result<()> {
    let Some(value) = std::env::var_os(PARENT_PID_ENV) else { return Ok(()) };
    let parent: i32 = value
        .to_str()
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("{PARENT_PID_ENV}={value:?} is not a process id"))?;
    nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).context("cannot ask for the parent's death signal")?;
    if nix::unistd::getppid().as_raw() != parent {
        info!("started by process {parent}, which is gone: stopping");
        nix::sys::signal::raise(Signal::SIGTERM).context("cannot stop")?;
    }
    Ok(())
}

/// A deadline that comes round every `every`.
#[derive(Debug, Clone, Copy)]
pub struct Cadence {
    every: Duration,
    next: Instant,
}

impl Cadence {
    /// First due `first` from now, then every `every`.
    pub fn new(every: Duration, first: Duration) -> Cadence {
        Cadence { every, next: Instant::now() + first }
    }

    /// Whether it is due at `now`; if so, the next one is `every` later.
    pub fn due(&mut self, now: Instant) -> bool {
        if now < self.next {
            return false;
        }
        self.next = now + self.every;
        true
    }

    /// Makes it due again `after` from `now`, whatever its interval.
    pub fn again(&mut self, now: Instant, after: Duration) {
        self.next = now + after;
    }

    /// When it is next due.
    pub fn next(&self) -> Instant {
        self.next
    }
}

/// The systemd side of a service: its signals, the watchdog pinged only
/// while the program says it is healthy, and the STATUS line refreshed on
/// one cadence and logged on a slower one.
pub struct Service {
    signals: Signals,
    watchdog: Option<Duration>,
    ping: Cadence,
    status: Cadence,
    log: Cadence,
}

impl Service {
    /// Takes the service's signals (call before starting any thread) and
    /// reads the watchdog setting. STATUS is refreshed every
    /// `status_every` and logged every `log_every`.
    pub fn start(status_every: Duration, log_every: Duration) -> Result<Service> {
        let signals = Signals::block(&TAKEN).context("cannot block signals")?;
        tie_to_parent()?;
        let watchdog = watchdog_interval();
        if let Some(wd) = watchdog {
            info!("systemd watchdog: {wd:?}; pinging every {:?}", wd / 2);
        }
        Ok(Service {
            signals,
            watchdog,
            ping: Cadence::new(watchdog.map_or(Duration::from_secs(3600), |wd| wd / 2), Duration::ZERO),
            status: Cadence::new(status_every, status_every),
            log: Cadence::new(log_every, log_every),
        })
    }

    /// The systemd watchdog timeout, if it is on.
    pub fn watchdog(&self) -> Option<Duration> {
        self.watchdog
    }

    /// READY=1 with the first status.
    pub fn ready(&self, status: &str) {
        notify(&[NotifyState::Ready, NotifyState::Status(status)]);
        info!("ready: {status}");
    }

    /// Pings the watchdog if a ping is due and `healthy(timeout)` says the
    /// program made progress within the watchdog's timeout: a service that
    /// stops making progress stops pinging, and systemd restarts it.
    pub fn ping(&mut self, now: Instant, healthy: impl FnOnce(Duration) -> bool) {
        if let Some(wd) = self.watchdog {
            if beat(&mut self.ping, now, wd, healthy) {
                notify(&[NotifyState::Watchdog]);
            }
        }
    }

    /// Changes the STATUS cadence (a reloaded configuration).
    pub fn set_status_every(&mut self, every: Duration) {
        self.status = Cadence::new(every, every);
    }

    /// Whether the STATUS line is due at `now`.
    pub fn status_due(&mut self, now: Instant) -> bool {
        self.status.due(now)
    }

    /// Sends the STATUS line, and logs it when the log cadence is due.
    pub fn status(&mut self, now: Instant, status: &str) {
        notify(&[NotifyState::Status(status)]);
        if self.log.due(now) {
            info!("{status}");
        }
    }

    /// When the next ping or status is due.
    pub fn next_due(&self) -> Instant {
        let next = self.status.next();
        if self.watchdog.is_some() {
            next.min(self.ping.next())
        } else {
            next
        }
    }

    /// A signal that came within `timeout` (zero polls). Signals the
    /// program did not ask for are logged and otherwise ignored: see
    /// [`Event::Other`].
    pub fn signal(&self, timeout: Duration) -> Result<Option<Event>> {
        let sig = self.signals.wait(timeout).context("waiting for signals")?;
        Ok(sig.map(|s| match s {
            Signal::SIGTERM | Signal::SIGINT => {
                info!("signal {s}: stopping");
                Event::Stop(s)
            }
            s => Event::Other(s),
        }))
    }

    /// STOPPING=1.
    pub fn stopping(&self) {
        notify(&[NotifyState::Stopping]);
    }

    /// The final status, sent and logged.
    pub fn stopped(&self, status: &str) {
        let status = format!("stopped; {status}");
        notify(&[NotifyState::Status(&status)]);
        info!("{status}");
    }
}

/// Whether a watchdog ping (of timeout `wd`, due on `cadence`) goes out at
/// `now`: when it is due and `healthy` holds. A check that fails is made
/// again soon (a tenth of the timeout), not half a timeout later: a
/// program that recovers (helixd restarting a source, say) pings well
/// before the timeout, where the next regular ping would come just at it,
/// racing systemd's kill.
fn beat(cadence: &mut Cadence, now: Instant, wd: Duration, healthy: impl FnOnce(Duration) -> bool) -> bool {
    if !cadence.due(now) {
        return false;
    }
    if healthy(wd) {
        return true;
    }
    cadence.again(now, wd / 10);
    false
}

/// Sends `states` to systemd (nothing happens without `NOTIFY_SOCKET`); a
/// failure is logged, never fatal.
pub fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!("cannot notify systemd: {e}");
    }
}

/// The systemd watchdog timeout, if this process should ping it: as
/// `sd_watchdog_enabled(3)`, `WATCHDOG_USEC` set and `WATCHDOG_PID` either
/// unset or this process's pid.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok().filter(|&u| u > 0)?;
    match std::env::var("WATCHDOG_PID") {
        Ok(pid) if pid.parse::<u32>().ok() != Some(std::process::id()) => None,
        _ => Some(Duration::from_micros(usec)),
    }
}

/// A rate as a status line shows it: `1.00M frames/s`, `12.5k frames/s`.
pub fn fmt_rate(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.2}M frames/s", r / 1e6)
    } else if r >= 1e3 {
        format!("{:.1}k frames/s", r / 1e3)
    } else {
        format!("{r:.0} frames/s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_health_check_is_made_again_well_before_the_watchdog_times_out() {
        // Found by review: a check that failed once (helixd restarting a
        // source) put the next one half a timeout later, so the next ping
        // came just at the timeout, racing systemd's kill.
        let wd = Duration::from_secs(10);
        let mut cadence = Cadence::new(wd / 2, Duration::ZERO);
        let t0 = cadence.next();
        assert!(beat(&mut cadence, t0, wd, |_| true), "due at once, healthy: a ping");
        let t1 = t0 + wd / 2;
        assert!(!beat(&mut cadence, t1, wd, |_| false), "unhealthy: no ping");
        // Looked at again a tenth of the timeout later, not half of it.
        assert!(!beat(&mut cadence, t1 + wd / 10 - Duration::from_millis(1), wd, |_| unreachable!()));
        assert!(beat(&mut cadence, t1 + wd / 10, wd, |_| true), "recovered: a ping, well before t0 + wd");
        // Healthy again: back to pings every half timeout.
        assert!(!beat(&mut cadence, t1 + wd / 10 + wd / 2 - Duration::from_millis(1), wd, |_| unreachable!()));
        assert!(beat(&mut cadence, t1 + wd / 10 + wd / 2, wd, |_| true));
    }
}
