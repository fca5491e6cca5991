//! helixd: the HELIX ring daemon. See `helixd --help`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};

#[path = "../shared/mod.rs"]
mod shared;

mod config;
mod daemon;
mod hal;
mod preflight;

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
    /// Check the configuration, print what it configures, and exit.
    #[arg(long)]
    check: bool,
    /// Print the embedded default configuration and exit.
    #[arg(long)]
    print_default_config: bool,
    /// Debugging aid for the systemd watchdog: on SIGUSR2, stop sending
    /// WATCHDOG=1 (all else keeps running), so systemd kills the
    /// "hung" daemon. Never for production.
    #[arg(long)]
    debug_hang_on_signal: bool,
    /// Print helixd's man page (roff) and exit, e.g. `helixd --man > helixd.1`.
    #[arg(long)]
    man: bool,
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    /// and exit.
    #[arg(long, value_name = "SHELL")]
    completions: Option<clap_complete::Shell>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(code) = crate::shared::service::print_docs(Cli::command(), cli.man, cli.completions) {
        return code;
    }
    if cli.print_default_config {
        print!("{}", crate::config::DEFAULT_CONFIG);
        return ExitCode::SUCCESS;
    }
    if cli.check {
        let checked = crate::config::load_config(cli.config.as_deref()).and_then(|c| {
            crate::preflight::memory(&c)?;
            crate::preflight::existing(&c)?;
            Ok(c)
        });
        return match checked {
            Ok(c) => {
                println!("{}: ok, namespace {}", c.path.display(), c.namespace);
                for r in &c.rings {
                    println!(
                        "  ring {}: {} slots, max payload {} B, {}",
                        r.name,
                        r.options.capacity,
                        r.options.max_payload,
                        r.options.policy.as_str()
                    );
                }
                for s in &c.sources {
                    println!("  source {:?} -> {}", s.kind, s.ring);
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("helixd: {e}");
                ExitCode::FAILURE
            }
        };
    }
    crate::shared::logging::init(crate::shared::logging::level_from_env());
    let opts = crate::daemon::RunOptions { debug_hang_on_signal: cli.debug_hang_on_signal };
    match crate::daemon::run(cli.config.as_deref(), &opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, on stderr (the journal under systemd).
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
