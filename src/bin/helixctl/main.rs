//! helixctl: inspect and manage HELIX rings. Reads shared memory directly;
//! works whether or not helixd runs.
//!
//! This file parses the command line and dispatches; each verb is a file of
//! [`command`] holding its arguments and its `run`.

use std::process::ExitCode;

use anyhow::Result;
use clap::{CommandFactory, Parser, Subcommand};

#[path = "../shared/mod.rs"]
mod shared;

/// helixd's configuration, for `doctor` to compare with what exists.
#[path = "../helixd/config.rs"]
#[allow(dead_code)]
mod helixd_config;
/// The ledger's `verify`, shared with helix-ledger.
#[path = "../helix-ledger/command.rs"]
#[allow(dead_code)]
mod ledger_command;

mod args;
mod command;
mod format;
mod json;

use command::*;
use helix::Namespace;

#[derive(Parser)]
#[command(name = "helixctl", version, about = "Inspect and manage HELIX shared-memory rings (works without helixd)")]
struct Cli {
    /// Namespace of the rings (default: HELIX_NAMESPACE, else "helix").
    #[arg(long, global = true)]
    namespace: Option<String>,
    /// Print JSON (schema: docs/helixctl.md) instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// The user helixd and the other services run as, by name or uid
    /// (default: helix, if this host has that user). The rings helixctl
    /// acts on or reports as theirs (the control path, control.log, the
    /// twin's) are believed only if this user, root or you own them.
    #[arg(long, global = true, value_name = "USER")]
    service_user: Option<String>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Every ring in the namespace, corrupt ones included.
    List(list::Args),
    /// A ring's header and every counter.
    Stat(stat::Args),
    /// A ring's readers: cursor, lag, backpressure, overruns, liveness.
    Readers(readers::Args),
    /// Print frames (telemetry decoded, others as hex), like tail.
    Tail(tail::Args),
    /// A live view of every ring and reader (q or Ctrl-C quits).
    Top(top::Args),
    /// Every ring and reader counter in the Prometheus text format.
    Metrics(metrics::Args),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print helixctl's man page (roff), e.g. `helixctl man > helixctl.1`.
    Man,
    /// What is wrong with this host for HELIX, and how to fix it.
    Doctor(doctor::Args),
    /// Verify a helix-ledger folder: recompute every chain hash and check
    /// every record; print the first bad block (segment, offset, block, the
    /// records and sequences it covers) or the record count and the final
    /// hash. Exits 1 on any mismatch.
    Verify(verify::Args),
    /// The digital twin's latest state and active alarms, read from the
    /// rings it publishes (twin.state and alarms).
    Twin(twin::Args),
    /// Remove a reader's entry (by index or name). Refuses a live process
    /// unless --force; a forcibly evicted live reader keeps writing its
    /// cursor into the entry until it exits, so use --force only on stuck
    /// processes.
    Evict(evict::Args),
    /// Remove a ring's files (both, or the one left of a half-made ring).
    /// Refuses a ring whose writer lease a live process holds unless
    /// --force; that process then writes into the removed ring until it
    /// exits. A fan-in ring's folder is refused while its consumer lives.
    Rm(rm::Args),
    /// Drive a stream toward a setpoint (through helixd; audited first).
    Set(send::StreamArgs),
    /// Give a stream back to its source's own values.
    Release(send::StreamArgs),
    /// Stop a source's samples.
    Pause(send::SourceArgs),
    /// Start a paused source again.
    Resume(send::SourceArgs),
    /// Change a simulated source's rate (Hz per stream).
    Rate(send::RateArgs),
    /// helixd's audit trail of commands: who sent what, and the verdict.
    ControlLog(control_log::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        // The reader of our output went away (`helixctl ... | head`).
        Err(e) if broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            // An error may quote what a peer wrote (a reader's name).
            eprintln!("helixctl: {}", format::printable(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

/// Whether `e` is, at bottom, a write to a closed pipe.
fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|cause| cause.downcast_ref::<std::io::Error>())
        .any(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}

fn run(cli: Cli) -> Result<ExitCode> {
    let Cli { namespace, json, service_user, command } = cli;
    let ns = || match &namespace {
        Some(n) => Namespace::new(n),
        None => Namespace::from_env(),
    };
    // Resolved for every verb: a user this host lacks is an error, not
    // passed over by the verbs that read no service's ring.
    let owners = args::service_owners(service_user.as_deref())?;
    let done = |()| ExitCode::SUCCESS;
    match command {
        Cmd::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "helixctl", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Man => {
            clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Verify(args) => verify::run(&args, json),
        Cmd::List(args) => list::run(&ns()?, &args, json).map(done),
        Cmd::Stat(args) => stat::run(&ns()?, &args, json).map(done),
        Cmd::Readers(args) => readers::run(&ns()?, &args, json).map(done),
        Cmd::Tail(args) => tail::run(&ns()?, &args, json).map(done),
        Cmd::Top(args) => top::run(&ns()?, &args).map(done),
        Cmd::Metrics(args) => metrics::run(&ns()?, &args, &owners).map(done),
        Cmd::Doctor(args) => doctor::run(&ns()?, &args, json),
        Cmd::Twin(args) => twin::run(&ns()?, &args, &owners, json).map(done),
        Cmd::Evict(args) => evict::run(&ns()?, &args, json).map(done),
        Cmd::Rm(args) => rm::run(&ns()?, &args, json).map(done),
        Cmd::Set(args) => send::stream(&ns()?, &owners, helix::control::Op::Set, &args, json),
        Cmd::Release(args) => send::stream(&ns()?, &owners, helix::control::Op::Release, &args, json),
        Cmd::Pause(args) => send::source(&ns()?, &owners, helix::control::Op::Pause, &args, json),
        Cmd::Resume(args) => send::source(&ns()?, &owners, helix::control::Op::Resume, &args, json),
        Cmd::Rate(args) => send::rate(&ns()?, &owners, &args, json),
        Cmd::ControlLog(args) => control_log::run(&ns()?, &args, &owners, json).map(done),
    }
}
