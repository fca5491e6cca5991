//! helixctl: inspect and manage HELIX rings. Reads shared memory directly;
//! works whether or not helixd runs.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
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

mod command;
mod rings;

use helix::{Namespace, RingView};
use rings::fmt_bytes;

#[derive(Parser)]
#[command(name = "helixctl", version, about = "Inspect and manage HELIX shared-memory rings (works without helixd)")]
struct Cli {
    /// Namespace of the rings (default: HELIX_NAMESPACE, else "helix").
    #[arg(long, global = true)]
    namespace: Option<String>,
    /// Print JSON (schema: docs/helixctl.md) instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Every ring in the namespace, corrupt ones included.
    List {
        /// Seconds to sample frame rates over (0: do not sample).
        #[arg(long, default_value_t = 0.5)]
        sample: f64,
    },
    /// A ring's header and every counter.
    Stat { ring: String },
    /// A ring's readers: cursor, lag, backpressure, overruns, liveness.
    Readers { ring: String },
    /// Print frames (telemetry decoded, others as hex), like tail.
    Tail {
        ring: String,
        /// Frames to print (default 10; with --follow, unlimited).
        #[arg(long, short = 'n')]
        count: Option<u64>,
        /// Start at this sequence instead of the last --count frames.
        #[arg(long)]
        from: Option<u64>,
        /// Keep printing new frames until interrupted.
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// A live view of every ring and reader (q or Ctrl-C quits).
    Top {
        /// Seconds between refreshes.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
        /// Print this many snapshots and exit (the default without a
        /// terminal is one).
        #[arg(long)]
        iterations: Option<u64>,
    },
    /// Every ring and reader counter in the Prometheus text format.
    Metrics {
        /// Serve them on HTTP at /metrics on this address (e.g.
        /// 127.0.0.1:9465) instead of printing them once.
        #[arg(long)]
        listen: Option<String>,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print helixctl's man page (roff), e.g. `helixctl man > helixctl.1`.
    Man,
    /// What is wrong with this host for HELIX, and how to fix it.
    Doctor {
        /// helixd's configuration, to check room for its rings (default:
        /// /etc/helix/helix.toml if it exists, else the embedded default).
        #[arg(long)]
        config: Option<std::path::PathBuf>,
    },
    /// Verify a helix-ledger folder: recompute every chain hash and check
    /// every record; print the first bad record (segment, offset, sequence)
    /// or the record count and the final hash. Exits 1 on any mismatch.
    Verify {
        /// The ledger folder.
        #[arg(default_value = "/var/lib/helix/ledger")]
        dir: std::path::PathBuf,
    },
    /// The digital twin's latest state and active alarms, read from the
    /// rings it publishes (twin.state and alarms).
    Twin {
        /// A stream id or a range such as 0-99 (default: the summary, the
        /// active alarms and the streams in alarm).
        stream: Option<String>,
        /// Show every stream's state.
        #[arg(long)]
        all: bool,
        /// The ring the twin publishes its state table on.
        #[arg(long, default_value = "twin.state")]
        state_ring: String,
        /// The ring the twin publishes alarm events on.
        #[arg(long, default_value = "alarms")]
        alarm_ring: String,
    },
    /// Remove a reader's entry (by index or name). Refuses a live process
    /// unless --force; a forcibly evicted live reader keeps writing its
    /// cursor into the entry until it exits, so use --force only on stuck
    /// processes.
    Evict {
        ring: String,
        reader: String,
        #[arg(long)]
        force: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        // The reader of our output went away (`helixctl ... | head`).
        Err(e) if e.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) => {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("helixctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn json<T: serde::Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn run(cli: Cli) -> Result<ExitCode> {
    match &cli.command {
        Cmd::Completions { shell } => {
            clap_complete::generate(*shell, &mut Cli::command(), "helixctl", &mut std::io::stdout());
            return Ok(ExitCode::SUCCESS);
        }
        Cmd::Man => {
            clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
            return Ok(ExitCode::SUCCESS);
        }
        Cmd::Verify { dir } => {
            let ok = ledger_command::verify(dir, cli.json)?;
            return Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE });
        }
        _ => {}
    }
    let ns = match &cli.namespace {
        Some(n) => Namespace::new(n)?,
        None => Namespace::from_env()?,
    };
    match cli.command {
        Cmd::List { sample } => {
            let rows = rings::list(&ns, Duration::from_secs_f64(sample.max(0.0))).context("reading /dev/shm")?;
            if cli.json {
                json(&serde_json::json!({ "namespace": ns.as_str(), "rings": rows }))?;
            } else if rows.is_empty() {
                println!("no rings in namespace {ns}");
            } else {
                println!(
                    "{:<20} {:<9} {:>10} {:>6} {:>14} {:>12} {:>7} {:>12} {:>10}",
                    "RING", "POLICY", "SLOTS", "SLOT", "PUBLISHED", "FRAMES/S", "READERS", "WRITER", "MEMORY"
                );
                for r in &rows {
                    match &r.ring {
                        Some(s) => println!(
                            "{:<20} {:<9} {:>10} {:>6} {:>14} {:>12} {:>7} {:>12} {:>10}",
                            r.name,
                            s.policy,
                            s.capacity,
                            s.slot_size,
                            s.published,
                            s.frames_per_sec.map_or("-".into(), |f| format!("{f:.0}")),
                            s.readers,
                            match (s.writer_pid, s.writer_alive) {
                                (Some(p), true) => p.to_string(),
                                (Some(p), false) => format!("{p} (dead)"),
                                (None, _) => "-".into(),
                            },
                            fmt_bytes(s.memory_bytes)
                        ),
                        None => println!("{:<20} CORRUPT: {}", r.name, r.error.as_deref().unwrap_or("?")),
                    }
                }
            }
        }
        Cmd::Stat { ring } => {
            let s = rings::stat(&ns, &ring)?;
            if cli.json {
                json(&s)?;
            } else {
                let (g, st) = (&s.geometry, &s.stats);
                println!(
                    "ring {} (namespace {}): {} slots of {} bytes (payload up to {}), {}, stall timeout {} ms",
                    s.name,
                    s.namespace,
                    g.capacity,
                    g.slot_size,
                    g.max_payload,
                    g.policy.as_str(),
                    g.stall_timeout_ns / 1_000_000
                );
                println!("  published      {} frames, {}", st.published, fmt_bytes(st.bytes));
                let w = &st.lease;
                println!(
                    "  writer         {} (lease epoch {}, {} takeovers)",
                    w.pid.map_or("none".into(), |p| format!("pid {p}{}", if w.alive { "" } else { " (dead)" })),
                    w.epoch,
                    w.takeovers
                );
                println!("  writer waits   {} ({:.3} s in all)", st.writer_waits, st.writer_wait_ns as f64 / 1e9);
                println!("  readers        {} of {} entries, {} parked", st.readers.len(), g.max_readers, st.parked);
                println!(
                    "  overruns       {}; demotions {}; dead readers swept {}",
                    s.overruns, st.demotions, st.swept
                );
                println!("  backpressure   {:.3} (largest lag / capacity)", s.max_backpressure);
            }
        }
        Cmd::Readers { ring } => {
            let s = rings::stat(&ns, &ring)?;
            if cli.json {
                json(&serde_json::json!({ "ring": s.name, "namespace": s.namespace, "readers": s.stats.readers }))?;
            } else if s.stats.readers.is_empty() {
                println!("no readers on ring {ring}");
            } else {
                println!(
                    "{:>3} {:<20} {:>8} {:<5} {:<8} {:>14} {:>10} {:>6} {:>9} {:>10} {:>9}",
                    "#", "NAME", "PID", "ALIVE", "GATING", "CURSOR", "LAG", "BP", "OVERRUNS", "LOST", "HEARTBEAT"
                );
                for r in &s.stats.readers {
                    println!(
                        "{:>3} {:<20} {:>8} {:<5} {:<8} {:>14} {:>10} {:>6.3} {:>9} {:>10} {:>8.1}s",
                        r.index,
                        r.name,
                        r.pid,
                        if r.alive { "yes" } else { "DEAD" },
                        if r.gating {
                            "yes"
                        } else if r.demoted {
                            "demoted"
                        } else {
                            "no"
                        },
                        r.cursor,
                        r.lag,
                        r.backpressure,
                        r.overruns,
                        r.lost,
                        r.heartbeat_age_ns as f64 / 1e9
                    );
                }
            }
        }
        Cmd::Tail { ring, count, from, follow } => {
            let count = count.or(if follow { None } else { Some(10) });
            let start = match from {
                Some(s) => command::tail::From::Seq(s),
                None => command::tail::From::Last(count.unwrap_or(10)),
            };
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            match command::tail::run(&ns, &ring, start, count, follow, cli.json, &mut out) {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                other => other?,
            }
            out.flush().ok();
        }
        Cmd::Top { interval, iterations } => {
            command::top::run(&ns, Duration::from_secs_f64(interval.max(0.1)), iterations)?
        }
        Cmd::Metrics { listen: None } => print!("{}", command::metrics::render(&ns).context("reading /dev/shm")?),
        Cmd::Metrics { listen: Some(addr) } => command::metrics::serve(&ns, &addr)?,
        Cmd::Completions { .. } | Cmd::Man | Cmd::Verify { .. } => unreachable!("handled above"),
        Cmd::Doctor { config } => {
            // Room needed by configured rings that do not exist yet.
            let configured =
                helixd_config::load_config(config.as_deref()).ok().filter(|c| c.namespace == ns).map(|c| {
                    let missing: Vec<&helixd_config::RingConfig> =
                        c.rings.iter().filter(|r| !ns.data_path(&r.name).exists()).collect();
                    let bytes = missing.iter().map(|r| r.options.memory()).sum();
                    (bytes, missing.iter().map(|r| r.name.as_str()).collect::<Vec<_>>().join(", "))
                });
            let checks = command::doctor::run(&ns, configured);
            let failed = checks.iter().any(|c| c.status == command::doctor::Status::Fail);
            if cli.json {
                json(&serde_json::json!({ "namespace": ns.as_str(), "checks": checks }))?;
            } else {
                for c in &checks {
                    let tag = match c.status {
                        command::doctor::Status::Ok => "ok  ",
                        command::doctor::Status::Warn => "WARN",
                        command::doctor::Status::Fail => "FAIL",
                    };
                    println!("{tag} {}: {}", c.check, c.detail);
                    if let Some(fix) = &c.fix {
                        println!("     fix: {fix}");
                    }
                }
            }
            if failed {
                return Ok(ExitCode::FAILURE);
            }
        }
        Cmd::Twin { stream, all, state_ring, alarm_ring } => {
            let filter = match &stream {
                Some(s) => Some(helix::twin::StreamRange::parse(s, u32::MAX).map_err(anyhow::Error::msg)?),
                None => None,
            };
            let view = command::twin::read(&ns, &state_ring, &alarm_ring, filter)?;
            if cli.json {
                json(&view)?;
            } else {
                print!("{}", command::twin::render(&view, filter, all));
            }
        }
        Cmd::Evict { ring, reader, force } => {
            let view = RingView::attach(&ns, &ring)?;
            let index = match reader.parse::<usize>() {
                Ok(i) => i,
                Err(_) => {
                    let matches: Vec<usize> =
                        view.stats().readers.iter().filter(|r| r.name == reader).map(|r| r.index).collect();
                    match matches.as_slice() {
                        [i] => *i,
                        [] => bail!("ring {ring:?} has no reader named {reader:?}"),
                        _ => bail!(
                            "ring {ring:?} has {} readers named {reader:?}; give the entry index ({matches:?})",
                            matches.len()
                        ),
                    }
                }
            };
            let freed = view.evict(index, force)?;
            if cli.json {
                json(
                    &serde_json::json!({ "ring": ring, "index": freed.index, "pid": freed.pid, "name": freed.name, "was_gating": freed.was_gating }),
                )?;
            } else {
                println!("evicted reader {:?} (entry {}, pid {}) from ring {ring}", freed.name, freed.index, freed.pid);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
