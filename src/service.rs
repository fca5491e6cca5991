//! What helixd, helix-ledger and helix-twin share as systemd services:
//! notifications, the watchdog interval, and the rate in their status
//! lines.

use std::time::Duration;

pub use sd_notify::NotifyState;

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
