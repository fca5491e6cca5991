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

/// The `--man` and `--completions SHELL` flags the daemons share: prints
/// the man page (roff) or the completion script for `cmd` and returns the
/// exit code, or `None` if neither was asked for.
pub fn print_docs(
    mut cmd: clap::Command,
    man: bool,
    completions: Option<clap_complete::Shell>,
) -> Option<std::process::ExitCode> {
    use std::process::ExitCode;
    let name = cmd.get_name().to_owned();
    if man {
        return Some(match clap_mangen::Man::new(cmd).render(&mut std::io::stdout()) {
            Ok(()) => ExitCode::SUCCESS,
            // The reader of the page went away (`| head`).
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{name}: {e}");
                ExitCode::FAILURE
            }
        });
    }
    let shell = completions?;
    clap_complete::generate(shell, &mut cmd, name, &mut std::io::stdout());
    Some(ExitCode::SUCCESS)
}
