//! helix-twin: HELIX's digital twin. See `helix-twin --help`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, Parser};

#[path = "../shared/mod.rs"]
mod shared;

mod config;
mod model;
mod publish;
mod run;

use config::{TwinConfig, DEFAULT_CONFIG};
use shared::cli::ServiceFlags;

#[derive(Parser)]
#[command(
    name = "helix-twin",
    version,
    about = "Models every telemetry stream, raises alarms, and publishes state and alarms through rings"
)]
struct Cli {
    /// Configuration file (default: /etc/helix/twin.toml if it exists,
    /// else the embedded default: 10,000 streams, one rule for all).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Namespace of the rings (default: the configuration's, else
    /// HELIX_NAMESPACE, else "helix").
    #[arg(long)]
    namespace: Option<String>,
    #[command(flatten)]
    service: ServiceFlags,
}

fn load(cli: &Cli) -> anyhow::Result<TwinConfig> {
    let mut config = TwinConfig::find(cli.config.as_deref())?;
    if let Some(ns) = &cli.namespace {
        config.namespace = helix::Namespace::new(ns).context("--namespace")?;
    }
    Ok(config)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(code) = cli.service.act(Cli::command(), DEFAULT_CONFIG, || load(&cli), report) {
        return code;
    }
    crate::shared::cli::run(|| load(&cli).and_then(crate::run::run))
}

/// What `--check` prints of a valid configuration.
fn report(c: &TwinConfig) -> String {
    let mut out = format!(
        "{}: ok, namespace {}, {} streams; reads {}, writes {} and {}\n",
        c.path.display(),
        c.namespace,
        c.streams,
        c.telemetry_ring,
        c.state_ring,
        c.alarm_ring
    );
    for r in &c.rules {
        out += &format!("  rule streams {}: {r:?}\n", r.streams);
    }
    out
}
