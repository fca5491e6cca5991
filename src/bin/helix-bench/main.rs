//! helix-bench: latency and throughput of HELIX rings across processes,
//! side by side with the usual alternatives, measured in the same run.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{CommandFactory, Parser, Subcommand};

use helix::Namespace;

#[path = "../shared/mod.rs"]
mod shared;

/// helix-twin's configuration, for e2e to write and read one.
#[path = "../helix-twin/config.rs"]
#[allow(dead_code)]
mod twin_config;

mod affinity;
mod command;
mod document;
mod machine;
mod plot;
mod stats;

use command::{
    attach, bridge, capacity, control, e2e, fanin, ledger, peer, pingpong, render, report, soak, stream, udp,
};

#[derive(Parser)]
#[command(
    name = "helix-bench",
    version,
    about = "Benchmarks HELIX rings across processes beside pipes, sockets and raw shared memory"
)]
struct Cli {
    /// Namespace for the benchmark's own rings (default: a private one, so
    /// production rings are never touched).
    #[arg(long, global = true)]
    namespace: Option<String>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Cross-process round trips through HELIX and the baselines.
    Pingpong(pingpong::PingpongArgs),
    /// One writer streaming to reader processes: frames/s and MB/s.
    Stream(stream::StreamArgs),
    /// Producer processes into one fan-in ring: records/s and MB/s in total
    /// and per lane, fairness, and a request/response round trip beside the
    /// broadcast ring, a Unix datagram socket and a pipe.
    Fanin(fanin::FaninArgs),
    /// Attach to a live ring by name (non-gating) and report frames/s,
    /// overruns and, for telemetry, ingest-to-reader latency.
    Attach(attach::AttachArgs),
    /// Send telemetry datagrams to helixd's UDP source.
    UdpSend(udp::UdpSendArgs),
    /// The real helix-ledger recording a ring: frames/s and MB/s per frame
    /// size and fsync interval, and the publish latency a gating ledger
    /// adds to a paced writer.
    Ledger(ledger::LedgerArgs),
    /// End to end: helixd's simulator, helix-ledger and helix-twin in a
    /// private namespace, plus this reader: ingest-to-reader latency per
    /// reader, frames/s, CPU per process, overruns; then the ledger verified.
    E2e(e2e::E2eArgs),
    /// e2e once per stream count: each count's figures against the targets
    /// (publish rate, P99 per reader, gaps, verify) and the largest count
    /// that meets them.
    Capacity(capacity::CapacityArgs),
    /// helix-bridge between two namespaces through NATS JetStream (one
    /// server, or a three-node cluster): frames/s, bytes on disk per frame,
    /// and publish-to-receipt latency at a paced rate.
    Bridge(bridge::BridgeArgs),
    /// Commands through helixd's control path with e2e's programs running:
    /// the round trip (send to answer, spinning and parked) and, with the
    /// telemetry flowing, command to effect.
    Control(control::ControlArgs),
    /// helixd, helix-ledger, helix-twin and a reader for minutes on end: each
    /// process's RSS and CPU, the readers' lag and overruns and the ledger's
    /// size every minute; then the ledger verified.
    Soak(soak::SoakArgs),
    /// Run every scenario for docs/PERFORMANCE.md, each writing its JSON
    /// (and the plot) into one folder, with report.json listing them.
    Report(report::ReportArgs),
    /// Render a report folder into Markdown (docs/PERFORMANCE.md).
    Render(render::RenderArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print helix-bench's man page (roff), e.g. `helix-bench man > helix-bench.1`.
    Man,
    /// (internal) The other end of a measurement, started by helix-bench.
    #[command(hide = true)]
    Peer {
        #[command(subcommand)]
        what: peer::PeerCmd,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of our output went away (`helix-bench ... | head`).
        Err(e) if e.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) => {
            ExitCode::SUCCESS
        }
        Err(e) => {
            // One line: the context chain, outermost first.
            eprintln!("helix-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let namespace = match (&cli.namespace, &cli.command) {
        (Some(ns), _) => Namespace::new(ns)?,
        // Attaching to a live ring: the installation's namespace.
        (None, Cmd::Attach(_)) => Namespace::from_env()?,
        (None, _) => Namespace::new(&format!("bench{}", std::process::id()))?,
    };
    let exe = std::env::current_exe().context("cannot find this program's path to start peers")?;
    // Peers get the namespace among their arguments.
    let peers = peer::Peers { exe: exe.clone(), namespace: namespace.clone() };
    match cli.command {
        Cmd::Pingpong(a) => pingpong::run(a, namespace, &peers),
        Cmd::Stream(a) => stream::run(a, namespace, &peers),
        Cmd::Fanin(a) => fanin::run(a, namespace, &peers),
        Cmd::Peer { what } => peer::run(what, &namespace),
        Cmd::Attach(a) => attach::run(a, &namespace),
        Cmd::UdpSend(a) => udp::run(a),
        Cmd::Ledger(a) => ledger::run(a, namespace, &exe),
        Cmd::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "helix-bench", &mut std::io::stdout());
            Ok(())
        }
        Cmd::Man => Ok(clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?),
        Cmd::E2e(a) => e2e::run(a, cli.namespace.is_some(), namespace, &exe),
        Cmd::Capacity(a) => capacity::run(a, cli.namespace.is_some(), namespace, &exe),
        Cmd::Control(a) => control::run(a, cli.namespace.is_some(), namespace, &exe),
        Cmd::Soak(a) => soak::run(a, cli.namespace.is_some(), namespace, &exe),
        Cmd::Bridge(a) => bridge::run(a, namespace, &exe),
        Cmd::Report(a) => report::run(a, cli.namespace.as_deref(), &exe),
        Cmd::Render(a) => render::run(a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `args` (after the program name) as clap would, panicking
    /// with clap's message if they do not parse.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Cmd {
        let argv = std::iter::once("helix-bench".to_owned()).chain(args);
        Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{e}")).command
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
