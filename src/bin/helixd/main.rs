//! helixd: the HELIX ring daemon. See `helixd --help`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};

#[path = "../shared/mod.rs"]
mod shared;

mod config;
mod control;
mod daemon;
mod hal;
mod instance;
mod metrics;
mod preflight;
mod rings;
mod source;

use crate::config::Config;
use crate::shared::cli::ServiceFlags;

#[derive(Parser)]
#[command(
    name = "helixd",
    version,
    about = "Creates HELIX's shared-memory rings, runs the HAL ingest, and sweeps dead readers"
)]
struct Cli {
    /// Configuration file (default: /etc/helix/helix.toml if it exists,
    /// else the embedded default: a telemetry ring fed by the simulator).
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(flatten)]
    service: ServiceFlags,
    /// Debugging aid for the systemd watchdog: on SIGUSR2, stop sending
    /// WATCHDOG=1 (all else keeps running), so systemd kills the
    /// "hung" daemon. Never for production.
    #[arg(long)]
    debug_hang_on_signal: bool,
    #[command(flatten)]
    metrics: crate::shared::textfile::MetricsFlag,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `--check` validates what a start does, without creating anything.
    let checked = || {
        crate::config::load_config(cli.config.as_deref()).and_then(|c| {
            crate::preflight::memory(&c)?;
            crate::preflight::existing(&c)?;
            Ok(c)
        })
    };
    if let Some(code) = cli.service.act(Cli::command(), crate::config::DEFAULT_CONFIG, checked, report) {
        return code;
    }
    let opts = crate::daemon::RunOptions {
        debug_hang_on_signal: cli.debug_hang_on_signal,
        metrics_file: cli.metrics.metrics_file.clone(),
    };
    crate::shared::cli::run(|| crate::daemon::run(cli.config.as_deref(), &opts))
}

/// What `--check` prints of a valid configuration.
fn report(c: &Config) -> String {
    let mut out = format!("{}: ok, namespace {}\n", c.path.display(), c.namespace);
    for r in &c.rings {
        out += &format!(
            "  ring {}: {} slots, max payload {} B, {}\n",
            r.name,
            r.options.capacity,
            r.options.max_payload,
            r.options.policy.as_str()
        );
    }
    for s in &c.sources {
        out += &format!("  source {:?} -> {}\n", s.kind, s.ring);
    }
    if let Some(ctl) = &c.control {
        let audit = ctl.audit_reader.as_deref().map_or("none".to_owned(), |r| format!("{r} records each first"));
        out += &format!("  control: fan-in ring control, {} lanes; audit: {audit}\n", ctl.ring.lanes);
    }
    out
}
