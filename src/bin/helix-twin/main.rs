//! helix-twin: HELIX's digital twin. See `helix-twin --help`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, Parser};

#[path = "../shared/mod.rs"]
mod shared;

mod config;
mod model;
mod run;

use config::{TwinConfig, DEFAULT_CONFIG};

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
    /// Check the configuration, print what it configures, and exit.
    #[arg(long)]
    check: bool,
    /// Print the embedded default configuration and exit.
    #[arg(long)]
    print_default_config: bool,
    /// Print the man page (roff) and exit.
    #[arg(long)]
    man: bool,
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    /// and exit.
    #[arg(long, value_name = "SHELL")]
    completions: Option<clap_complete::Shell>,
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
    if let Some(code) = crate::shared::service::print_docs(Cli::command(), cli.man, cli.completions) {
        return code;
    }
    if cli.print_default_config {
        print!("{DEFAULT_CONFIG}");
        return ExitCode::SUCCESS;
    }
    if cli.check {
        return match load(&cli) {
            Ok(c) => {
                println!(
                    "{}: ok, namespace {}, {} streams; reads {}, writes {} and {}",
                    c.path.display(),
                    c.namespace,
                    c.streams,
                    c.telemetry_ring,
                    c.state_ring,
                    c.alarm_ring
                );
                for r in &c.rules {
                    println!("  rule streams {}: {r:?}", r.streams);
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("helix-twin: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    crate::shared::logging::init(crate::shared::logging::level_from_env());
    match load(&cli).and_then(crate::run::run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, on stderr (the journal under systemd).
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
