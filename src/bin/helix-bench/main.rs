//! helix-bench: latency and throughput of HELIX rings across processes,
//! side by side with the usual alternatives, measured in the same run.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

#[path = "../shared/mod.rs"]
mod shared;

/// helix-twin's configuration, for e2e to write and read one.
#[path = "../helix-twin/config.rs"]
#[allow(dead_code)]
mod twin_config;

mod command;

use command as bench;
use command::{fmt_ns, pingpong, stream, Document, Machine};
use helix::{Namespace, WaitStrategy};

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
    Pingpong(PingpongArgs),
    /// One writer streaming to reader processes: frames/s and MB/s.
    Stream(StreamArgs),
    /// Attach to a live ring by name (non-gating) and report frames/s,
    /// overruns and, for telemetry, ingest-to-reader latency.
    Attach(AttachArgs),
    /// Send telemetry datagrams to helixd's UDP source.
    UdpSend(UdpSendArgs),
    /// The real helix-ledger recording a ring: frames/s and MB/s per frame
    /// size and fsync interval, and the publish latency a gating ledger
    /// adds to a paced writer.
    Ledger(LedgerArgs),
    /// End to end: helixd's simulator, helix-ledger and helix-twin in a
    /// private namespace, plus this reader: ingest-to-reader latency per
    /// reader, frames/s, CPU per process, overruns; then the ledger verified.
    E2e(E2eArgs),
    /// Run every scenario for docs/PERFORMANCE.md, each writing its JSON
    /// (and the plot) into one folder, with report.json listing them.
    Report(ReportArgs),
    /// Render a report folder into Markdown (docs/PERFORMANCE.md).
    Render(RenderArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print helix-bench's man page (roff), e.g. `helix-bench man > helix-bench.1`.
    Man,
    /// (internal) The other end of a measurement, started by helix-bench.
    #[command(hide = true)]
    Peer {
        #[command(subcommand)]
        what: PeerCmd,
    },
}

#[derive(Args)]
struct JsonArg {
    /// Also write the parameters and results as one JSON document here
    /// (shape: docs/helix-bench.md).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

#[derive(Args)]
struct PingpongArgs {
    /// Frame sizes in bytes (at least 8), comma separated; every transport
    /// runs at each.
    #[arg(long, alias = "size", value_delimiter = ',', default_values_t = pingpong::DEFAULT_SIZES)]
    sizes: Vec<usize>,
    /// Measured round trips per transport.
    #[arg(long, default_value_t = 20_000)]
    iters: u64,
    /// Round trips before measuring.
    #[arg(long, default_value_t = 2_000)]
    warmup: u64,
    /// Transports, comma separated (default: all).
    #[arg(long, value_delimiter = ',')]
    transports: Vec<pingpong::Transport>,
    /// Pin this process and the peer to these two CPUs, e.g. 0,1.
    #[arg(long, value_delimiter = ',')]
    cpus: Vec<usize>,
    /// Repeat the whole set this many times and report the median of each.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Draw the percentile plot (SVG) of every transport at one frame size
    /// (--plot-size), first run.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// The frame size plotted (default: 64 if measured, else the first).
    #[arg(long)]
    plot_size: Option<usize>,
    #[command(flatten)]
    out: JsonArg,
}

#[derive(Args)]
struct LedgerArgs {
    /// Frames per throughput measurement.
    #[arg(long, default_value_t = 2_000_000)]
    frames: u64,
    /// Frame sizes in bytes, comma separated.
    #[arg(long, value_delimiter = ',', default_values_t = [32usize, 1024])]
    sizes: Vec<usize>,
    /// fsync intervals in milliseconds, comma separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1u64, 10, 100])]
    fsync_ms: Vec<u64>,
    /// Repeat each measurement this many times and report the median.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Paced writer rate (frames/s) for the latency comparison; 0 skips it.
    #[arg(long, default_value_t = 1_000_000)]
    latency_rate: u64,
    /// Seconds of paced writing per latency measurement.
    #[arg(long, default_value_t = 3.0)]
    latency_secs: f64,
    /// Folder for the ledgers written (each removed after its run).
    #[arg(long, default_value = "/var/tmp")]
    dir: PathBuf,
    /// The helix-ledger program (default: beside this one).
    #[arg(long)]
    ledger_bin: Option<PathBuf>,
    /// Pin the writer to the first CPU and the ledger to the second, e.g. 0,1.
    #[arg(long, value_delimiter = ',')]
    cpus: Vec<usize>,
    #[command(flatten)]
    out: JsonArg,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Gating readers on a block ring: lossless, the writer waits.
    Gating,
    /// Non-gating readers on an overwrite ring: the writer never waits.
    NonGating,
}

#[derive(Args)]
struct StreamArgs {
    /// Frames to publish.
    #[arg(long, default_value_t = 10_000_000)]
    frames: u64,
    /// Frame sizes in bytes (at least 8), comma separated.
    #[arg(long, alias = "size", value_delimiter = ',', default_values_t = [64usize])]
    sizes: Vec<usize>,
    /// Frames per claim and per batch read, comma separated.
    #[arg(long, alias = "batch", value_delimiter = ',', default_values_t = [64u64])]
    batches: Vec<u64>,
    /// Reader processes, comma separated (e.g. 1,2,3).
    #[arg(long, value_delimiter = ',', default_values_t = [1usize])]
    readers: Vec<usize>,
    /// gating, non-gating or both (comma separated).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Mode::NonGating], conflicts_with = "gating")]
    mode: Vec<Mode>,
    /// Same as --mode gating.
    #[arg(long)]
    gating: bool,
    /// Ring capacity in slots.
    #[arg(long, default_value_t = 4096)]
    capacity: u64,
    /// Readers' wait strategy: spin, spin-then-park or park.
    #[arg(long, default_value = "spin")]
    wait: WaitStrategy,
    /// CPUs: the writer's first, readers spread over the rest, e.g. 0,1.
    #[arg(long, value_delimiter = ',')]
    cpus: Vec<usize>,
    /// Repeat this many times and report the median.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    #[command(flatten)]
    out: JsonArg,
}

#[derive(Args)]
struct AttachArgs {
    /// The ring, e.g. telemetry.
    ring: String,
    /// Seconds to measure.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Seconds to read before measuring.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Wait strategy: spin, spin-then-park or park.
    #[arg(long, default_value = "park")]
    wait: WaitStrategy,
    /// Pin to this CPU.
    #[arg(long)]
    cpu: Option<usize>,
    #[command(flatten)]
    out: JsonArg,
}

#[derive(Args)]
struct E2eArgs {
    /// Simulated streams.
    #[arg(long, default_value_t = 10_000)]
    streams: u32,
    /// Samples per second per stream.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Seconds to measure.
    #[arg(long, default_value_t = 20.0)]
    seconds: f64,
    /// Seconds between everything attached and measuring.
    #[arg(long, default_value_t = 3.0)]
    warmup: f64,
    /// Where the scratch folder (configurations, logs, the ledger) goes;
    /// use the disk a production ledger would be on.
    #[arg(long, default_value = "/var/tmp")]
    dir: PathBuf,
    /// Confine every process (helixd, ledger, twin, this one) to these CPUs;
    /// the options below override it for one process.
    #[arg(long, value_delimiter = ',')]
    cpus: Vec<usize>,
    /// Confine helixd to these CPUs.
    #[arg(long, value_delimiter = ',', value_name = "CPUS")]
    helixd_cpus: Option<Vec<usize>>,
    /// Confine helix-ledger to these CPUs (e.g. a CPU of its own, away from
    /// the latency-sensitive readers).
    #[arg(long, value_delimiter = ',', value_name = "CPUS")]
    ledger_cpus: Option<Vec<usize>>,
    /// Confine helix-twin to these CPUs.
    #[arg(long, value_delimiter = ',', value_name = "CPUS")]
    twin_cpus: Option<Vec<usize>>,
    /// Confine this program (its readers) to these CPUs.
    #[arg(long, value_delimiter = ',', value_name = "CPUS")]
    reader_cpus: Option<Vec<usize>>,
    /// This reader's wait strategy: spin, spin-then-park or park.
    #[arg(long, default_value = "park")]
    wait: WaitStrategy,
    /// The ledger's fsync interval, ms.
    #[arg(long, default_value_t = 10)]
    fsync_ms: u64,
    /// Folder holding helixd, helix-ledger and helix-twin (default: this
    /// program's).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    #[command(flatten)]
    out: JsonArg,
}

#[derive(Args)]
struct ReportArgs {
    /// Folder for the JSON documents, report.json and latency.svg.
    #[arg(long)]
    dir: PathBuf,
    /// Pin (pingpong, stream, ledger) or confine (e2e) to these CPUs, e.g.
    /// 0,1 (default: not pinned). Pinned, the blocking pingpong transports
    /// run once more with both processes on the first CPU; with two or more
    /// CPUs, e2e runs twice: every process on all of them, then the ledger
    /// on the last CPU and every other process on the rest.
    #[arg(long, value_delimiter = ',')]
    cpus: Vec<usize>,
    /// Repetitions of the pingpong, stream and ledger measurements.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Seconds the e2e scenario measures.
    #[arg(long, default_value_t = 20.0)]
    e2e_seconds: f64,
    /// Where the ledger scenarios write their ledgers.
    #[arg(long, default_value = "/var/tmp")]
    ledger_dir: PathBuf,
    /// Tiny counts everywhere: checks the pipeline in seconds; the figures
    /// mean nothing.
    #[arg(long)]
    quick: bool,
}

#[derive(Args)]
struct RenderArgs {
    /// The folder `helix-bench report` wrote.
    #[arg(long)]
    dir: PathBuf,
    /// The Markdown file to write.
    #[arg(long)]
    out: PathBuf,
    /// Draw the report's latency plot (from its pingpong results) here and
    /// link it from the document (relative to the document's folder).
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// Hand-written notes included verbatim at the end.
    #[arg(long)]
    notes: Option<PathBuf>,
}

#[derive(Args)]
struct UdpSendArgs {
    /// Where helixd's UDP source listens.
    #[arg(long)]
    to: std::net::SocketAddr,
    /// Samples per datagram (1 to 2046).
    #[arg(long, default_value_t = 40)]
    per_datagram: usize,
    /// Number of streams the samples cycle through.
    #[arg(long, default_value_t = 10_000)]
    streams: u32,
    /// Samples per second (0: as fast as possible).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Seconds to send.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
}

#[derive(Subcommand)]
enum PeerCmd {
    Pingpong {
        transport: pingpong::Transport,
        #[arg(long)]
        size: usize,
        #[arg(long)]
        rounds: u64,
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        cpu: Option<usize>,
    },
    Stream {
        #[arg(long)]
        frames: u64,
        #[arg(long)]
        batch: u64,
        #[arg(long)]
        wait: WaitStrategy,
        #[arg(long)]
        gating: bool,
        #[arg(long)]
        cpu: Option<usize>,
    },
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // The reader of our output went away (`helix-bench ... | head`).
        Err(e) if e.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) => {
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            // One line: the context chain, outermost first.
            eprintln!("helix-bench: {e:#}");
            std::process::ExitCode::FAILURE
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
    let peer = |args: &[String]| {
        let mut c = Command::new(&exe);
        c.args(args);
        c
    };
    match cli.command {
        Cmd::Pingpong(a) => run_pingpong(a, namespace, &peer),
        Cmd::Stream(a) => run_stream(a, namespace, &peer),
        Cmd::Peer { what } => run_peer(what, &namespace),
        Cmd::Attach(a) => run_attach(a, &namespace),
        Cmd::UdpSend(a) => run_udp_send(a),
        Cmd::Ledger(a) => run_ledger(a, namespace, &exe),
        Cmd::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "helix-bench", &mut std::io::stdout());
            Ok(())
        }
        Cmd::Man => Ok(clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?),
        Cmd::E2e(a) => run_e2e(a, cli.namespace.is_some(), namespace, &exe),
        Cmd::Report(a) => run_report(a, cli.namespace.as_deref(), &exe),
        Cmd::Render(a) => run_render(a),
    }
}

/// Writes `results` as the JSON document of `scenario`, if asked to.
fn write_json<R: serde::Serialize>(
    out: &JsonArg,
    scenario: &str,
    load: Option<[f64; 3]>,
    started: String,
    results: R,
) -> Result<()> {
    if let Some(path) = &out.json {
        Document::new(scenario, load, started, results).write(path)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn cpus_text(cpus: &[usize]) -> String {
    if cpus.is_empty() {
        "not pinned".to_owned()
    } else {
        format!("CPUs {}", cpus.iter().map(usize::to_string).collect::<Vec<_>>().join(","))
    }
}

fn run_ledger(a: LedgerArgs, namespace: Namespace, exe: &std::path::Path) -> Result<()> {
    use crate::command::ledger;
    let (load, started) = (bench::load_average(), bench::utc_now());
    if a.sizes.contains(&0) || a.fsync_ms.contains(&0) || a.frames == 0 {
        bail!("--frames, --sizes and --fsync-ms must be positive");
    }
    if a.latency_rate > 0 && !(a.latency_secs > 0.0 && a.latency_secs.is_finite()) {
        bail!("--latency-secs must be positive");
    }
    let ledger_bin = a.ledger_bin.clone().unwrap_or_else(|| exe.with_file_name("helix-ledger"));
    let dir = a.dir.join(format!("helix-bench-ledger-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let setup = ledger::Setup { ledger_bin, dir: dir.clone(), namespace, cpus: a.cpus.clone() };
    println!("machine: {}", Machine::detect());
    println!(
        "ledger: {} frames per run, median of {} run(s), ledger in {}, {}",
        a.frames,
        a.runs,
        a.dir.display(),
        if a.cpus.is_empty() {
            "not pinned".to_owned()
        } else {
            format!("writer on CPU {}, ledger on the next", a.cpus[0])
        }
    );
    let latency_size = a.sizes.first().copied().unwrap_or(32);
    let result = (|| -> Result<ledger::Results> {
        println!(
            "{:>7} {:>8} {:>14} {:>10} {:>8} {:>13}",
            "size", "fsync", "frames/s", "MB/s", "fsyncs", "writer waits"
        );
        let mut throughput = Vec::new();
        for &size in &a.sizes {
            for &fsync_ms in &a.fsync_ms {
                let mut runs = Vec::new();
                for _ in 0..a.runs.max(1) {
                    runs.push(ledger::throughput(&setup, a.frames, size, fsync_ms).context("ledger throughput")?);
                }
                let mut sorted = runs.clone();
                sorted.sort_by(|x, y| x.frames_per_sec().total_cmp(&y.frames_per_sec()));
                let m = sorted[sorted.len() / 2].clone();
                println!(
                    "{:>5} B {:>5} ms {:>12.2} M {:>10.1} {:>8} {:>13}",
                    size,
                    fsync_ms,
                    m.frames_per_sec() / 1e6,
                    m.mb_per_sec(),
                    m.syncs.map_or("?".into(), |s| s.to_string()),
                    m.writer_waits
                );
                throughput.push(ledger::ThroughputCase {
                    size,
                    fsync_ms,
                    frames_per_sec: m.frames_per_sec(),
                    mb_per_sec: m.mb_per_sec(),
                    median: m,
                    runs,
                });
            }
        }
        let mut rows = Vec::new();
        if a.latency_rate > 0 {
            let secs = std::time::Duration::from_secs_f64(a.latency_secs);
            println!("writer publish latency at {} frames/s of {latency_size} B (batches of 100):", a.latency_rate);
            println!("{:>14} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7}", "", "p50", "p99", "p99.9", "p99.99", "max", "waits");
            for with_ledger in [false, true] {
                let r = ledger::writer_latency(&setup, latency_size, a.latency_rate, secs, with_ledger)
                    .context("writer latency")?;
                let s = &r.publish;
                println!(
                    "{:>14} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7}",
                    if with_ledger { "gating ledger" } else { "no reader" },
                    fmt_ns(s.p50),
                    fmt_ns(s.p99),
                    fmt_ns(s.p999),
                    fmt_ns(s.p9999),
                    fmt_ns(s.max),
                    r.writer_waits
                );
                rows.push(r);
            }
            let (a0, b0) = (&rows[0].publish, &rows[1].publish);
            println!(
                "added by the ledger: p50 {:+} ns, p99 {:+} ns, p99.9 {:+} ns",
                b0.p50 as i64 - a0.p50 as i64,
                b0.p99 as i64 - a0.p99 as i64,
                b0.p999 as i64 - a0.p999 as i64
            );
        }
        Ok(ledger::Results {
            frames: a.frames,
            runs: a.runs.max(1),
            dir: a.dir.display().to_string(),
            cpus: a.cpus.clone(),
            throughput,
            latency_rate: a.latency_rate,
            latency_secs: a.latency_secs,
            latency_size,
            writer_latency: rows,
        })
    })();
    let _ = std::fs::remove_dir_all(&dir);
    write_json(&a.out, "ledger", load, started, result?)
}

fn run_attach(a: AttachArgs, ns: &Namespace) -> Result<()> {
    let (load, started) = (bench::load_average(), bench::utc_now());
    if !(a.seconds > 0.0 && a.seconds.is_finite() && a.warmup >= 0.0 && a.warmup.is_finite()) {
        bail!("--seconds must be positive and --warmup not negative");
    }
    if let Some(cpu) = a.cpu {
        bench::pin_to_cpu(cpu)?;
    }
    println!("machine: {}", Machine::detect());
    println!(
        "attach: ring {} in namespace {ns}, {} s after {} s warm-up, reader {}",
        a.ring,
        a.seconds,
        a.warmup,
        stream::wait_name(a.wait)
    );
    let r = bench::attach::run(
        ns,
        &a.ring,
        std::time::Duration::from_secs_f64(a.seconds),
        std::time::Duration::from_secs_f64(a.warmup),
        a.wait,
    )
    .with_context(|| format!("attaching to ring {:?}", a.ring))?;
    println!("frames: {} ({:.0} frames/s), overruns: {}, lost: {}", r.frames, r.frames_per_sec, r.overruns, r.lost);
    match &r.latency {
        Some(s) => println!(
            "ingest-to-reader latency: p50 {}  p90 {}  p99 {}  p99.9 {}  p99.99 {}  max {}  ({} samples)",
            fmt_ns(s.p50),
            fmt_ns(s.p90),
            fmt_ns(s.p99),
            fmt_ns(s.p999),
            fmt_ns(s.p9999),
            fmt_ns(s.max),
            s.count
        ),
        None => println!("no telemetry samples arrived (no latency to report)"),
    }
    write_json(&a.out, "attach", load, started, r)
}

fn run_e2e(a: E2eArgs, explicit_ns: bool, namespace: Namespace, exe: &std::path::Path) -> Result<()> {
    use crate::command::e2e;
    let (load, started) = (bench::load_average(), bench::utc_now());
    if !(a.seconds > 0.0 && a.seconds.is_finite() && a.warmup >= 0.0 && a.warmup.is_finite()) {
        bail!("--seconds must be positive and --warmup not negative");
    }
    if a.fsync_ms == 0 || a.fsync_ms > 60_000 {
        bail!("--fsync-ms must be from 1 to 60000");
    }
    if explicit_ns && namespace.as_str() == "helix" {
        bail!("e2e runs its own helixd: give it a namespace of its own, not the installation's \"helix\"");
    }
    let bin_dir = a.bin_dir.clone().unwrap_or_else(|| exe.parent().map(PathBuf::from).unwrap_or_default());
    let cfg = e2e::Config {
        streams: a.streams,
        rate_hz: a.rate,
        duration: std::time::Duration::from_secs_f64(a.seconds),
        warmup: std::time::Duration::from_secs_f64(a.warmup),
        dir: a.dir.clone(),
        programs: e2e::Programs {
            helixd: bin_dir.join("helixd"),
            ledger: bin_dir.join("helix-ledger"),
            twin: bin_dir.join("helix-twin"),
        },
        placement: e2e::Placement {
            helixd: a.helixd_cpus.clone().unwrap_or_else(|| a.cpus.clone()),
            ledger: a.ledger_cpus.clone().unwrap_or_else(|| a.cpus.clone()),
            twin: a.twin_cpus.clone().unwrap_or_else(|| a.cpus.clone()),
            reader: a.reader_cpus.clone().unwrap_or_else(|| a.cpus.clone()),
        },
        namespace,
        wait: a.wait,
        fsync_ms: a.fsync_ms,
    };
    println!("machine: {}", Machine::detect());
    println!(
        "e2e: {} streams x {} Hz, {} s after {} s warm-up, namespace {}, scratch in {}, {}",
        a.streams,
        a.rate,
        a.seconds,
        a.warmup,
        cfg.namespace,
        a.dir.display(),
        cfg.placement.describe()
    );
    let r = e2e::run(&cfg, &mut |what| println!("  {what}")).context("e2e")?;
    println!(
        "helixd published {:.0} frames/s, waited {} times; ring of {} slots",
        r.frames_per_sec, r.writer_waits, r.capacity
    );
    println!(
        "{:<14}{:>12}{:>10}{:>9}{:>12}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}",
        "reader", "frames/s", "overruns", "lost", "lag p99", "p50", "p90", "p99", "p99.9", "p99.99", "max"
    );
    for x in &r.readers {
        let lat = x.latency.as_ref().map_or_else(
            || format!("{:>10}", "-").repeat(6),
            |s| [s.p50, s.p90, s.p99, s.p999, s.p9999, s.max].iter().map(|&v| format!("{:>10}", fmt_ns(v))).collect(),
        );
        println!(
            "{:<14}{:>12.0}{:>10}{:>9}{:>12}{lat}",
            x.name,
            x.frames_per_sec,
            x.overruns,
            x.lost,
            x.lag.as_ref().map_or("-".into(), |l| fmt_ns(l.p99_ns))
        );
    }
    for x in &r.readers {
        println!("  {}: {}", x.name, x.latency_method);
    }
    println!(
        "CPU: {}",
        r.cpu.iter().map(|c| format!("{} {:.1}%", c.process, c.percent)).collect::<Vec<_>>().join(", ")
    );
    println!(
        "clock offset (realtime - monotonic) {} ns, uncertainty {} ns, drift {} ns; alarm events {}",
        r.clock.offset_ns, r.clock.uncertainty_ns, r.clock.drift_ns, r.alarm_events
    );
    let l = &r.ledger;
    println!(
        "ledger: {}; {} records in {} segments, {} frames of {} published, {} gaps ({} lost), hash {}",
        if l.verified {
            "verified".to_owned()
        } else {
            format!("VERIFY FAILED: {}", l.problem.as_deref().unwrap_or(""))
        },
        l.records,
        l.segments,
        l.frames,
        l.published,
        l.gaps,
        l.lost,
        l.hash
    );
    let verified = l.verified;
    write_json(&a.out, "e2e", load, started, r)?;
    if !verified {
        bail!("the ledger did not verify");
    }
    Ok(())
}

fn run_report(a: ReportArgs, namespace: Option<&str>, exe: &std::path::Path) -> Result<()> {
    use crate::command::render::{Index, Step};
    let started = bench::utc_now();
    let load_before = bench::load_average();
    let steal0 = bench::cpu_steal_ticks();
    let t0 = std::time::Instant::now();
    if a.runs == 0 {
        bail!("--runs must be at least 1");
    }
    std::fs::create_dir_all(&a.dir).with_context(|| format!("creating {}", a.dir.display()))?;
    let dir = a.dir.canonicalize().with_context(|| format!("{}", a.dir.display()))?;
    let cpus = a.cpus.iter().map(usize::to_string).collect::<Vec<_>>().join(",");
    let runs = a.runs.to_string();
    let q = a.quick;
    let pick = |full: &str, quick: &str| if q { quick.to_owned() } else { full.to_owned() };
    let json = |name: &str| dir.join(name).display().to_string();
    let mut steps: Vec<(&str, &str, Vec<String>)> = vec![
        (
            "pingpong",
            "pingpong.json",
            vec![
                "pingpong".into(),
                "--sizes".into(),
                pick("8,64,512,4096,16384", "8,64"),
                "--iters".into(),
                pick("20000", "200"),
                "--warmup".into(),
                pick("2000", "20"),
                "--runs".into(),
                runs.clone(),
                "--plot".into(),
                json("latency.svg"),
            ],
        ),
        (
            "stream",
            "stream.json",
            vec![
                "stream".into(),
                "--frames".into(),
                pick("20000000", "20000"),
                "--sizes".into(),
                pick("64,1024", "64"),
                "--batches".into(),
                "1,64".into(),
                "--readers".into(),
                "1".into(),
                "--mode".into(),
                "gating,non-gating".into(),
                "--wait".into(),
                "spin".into(),
                "--runs".into(),
                runs.clone(),
            ],
        ),
        (
            "stream",
            "stream-park.json",
            vec![
                "stream".into(),
                "--frames".into(),
                pick("10000000", "20000"),
                "--sizes".into(),
                "64".into(),
                "--batches".into(),
                "64".into(),
                "--readers".into(),
                "3".into(),
                "--mode".into(),
                "gating".into(),
                "--wait".into(),
                "park".into(),
                "--runs".into(),
                runs.clone(),
            ],
        ),
        (
            "ledger",
            "ledger.json",
            vec![
                "ledger".into(),
                "--frames".into(),
                pick("2000000", "20000"),
                "--runs".into(),
                runs.clone(),
                "--latency-secs".into(),
                pick("3", "0.2"),
                "--dir".into(),
                a.ledger_dir.display().to_string(),
            ],
        ),
        (
            "e2e",
            "e2e.json",
            vec![
                "e2e".into(),
                "--streams".into(),
                pick("10000", "100"),
                "--rate".into(),
                "100".into(),
                "--seconds".into(),
                if q { "1".into() } else { a.e2e_seconds.to_string() },
                "--warmup".into(),
                pick("3", "0.5"),
                "--dir".into(),
                a.ledger_dir.display().to_string(),
            ],
        ),
    ];
    // Pinned: the blocking transports again with both processes on the
    // first CPU, where a wake-up is a local switch, not an interrupt to
    // another CPU.
    if let Some(&first) = a.cpus.first() {
        let one_cpu = vec![
            "pingpong".into(),
            "--sizes".into(),
            "64".into(),
            "--iters".into(),
            pick("20000", "200"),
            "--warmup".into(),
            pick("2000", "20"),
            "--runs".into(),
            runs.clone(),
            "--transports".into(),
            "helix-park,futex,pipe,unix-stream,unix-dgram".into(),
            "--cpus".into(),
            format!("{first},{first}"),
        ];
        steps.insert(1, ("pingpong", bench::render::ONE_CPU_JSON, one_cpu));
    }
    // With two or more CPUs, e2e again with the ledger on a CPU of its own
    // (the last) and everything else on the others.
    if let [rest @ .., last] = a.cpus.as_slice() {
        if !rest.is_empty() && !rest.contains(last) {
            let e2e = steps.iter().find(|s| s.1 == "e2e.json").expect("the e2e step is in the list");
            let mut args = e2e.2.clone();
            let rest = rest.iter().map(usize::to_string).collect::<Vec<_>>().join(",");
            args.extend(["--cpus".into(), rest, "--ledger-cpus".into(), last.to_string()]);
            steps.push(("e2e", "e2e-ledger-apart.json", args));
        }
    }
    for (_, file, args) in &mut steps {
        if let Some(ns) = namespace {
            // One after the other, each scenario cleans up its namespace.
            args.splice(0..0, ["--namespace".to_owned(), ns.to_owned()]);
        }
        if !cpus.is_empty() && !args.iter().any(|x| x == "--cpus") {
            args.extend(["--cpus".into(), cpus.clone()]);
        }
        args.extend(["--json".into(), json(file)]);
    }
    let mut done = Vec::new();
    let mut failures = 0;
    for (scenario, file, args) in steps {
        let mut command = vec![exe.display().to_string()];
        command.extend(args.iter().cloned());
        println!("\n## {}\n", command[1..].join(" "));
        let t = std::time::Instant::now();
        let status = Command::new(exe).args(&args).status().with_context(|| format!("starting {scenario}"))?;
        let error = (!status.success()).then(|| format!("exited with {status}"));
        if error.is_some() {
            failures += 1;
            eprintln!("helix-bench report: {scenario} {}", error.as_deref().unwrap_or(""));
        }
        done.push(Step {
            scenario: scenario.into(),
            command,
            json: file.into(),
            seconds: t.elapsed().as_secs_f64(),
            error,
        });
    }
    let index = Index {
        command: std::env::args().collect(),
        machine: Machine::detect(),
        started,
        finished: bench::utc_now(),
        seconds: t0.elapsed().as_secs_f64(),
        load_before,
        steal_percent: steal0
            .zip(bench::cpu_steal_ticks())
            .and_then(|((s0, t0), (s1, t1))| (t1 > t0).then(|| (s1 - s0) as f64 * 100.0 / (t1 - t0) as f64)),
        steps: done,
    };
    let path = dir.join("report.json");
    std::fs::write(&path, serde_json::to_string_pretty(&index)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    println!("\nwrote {} ({:.0} s)", path.display(), index.seconds);
    if failures > 0 {
        bail!("{failures} scenario(s) failed (recorded in {})", path.display());
    }
    Ok(())
}

fn run_render(a: RenderArgs) -> Result<()> {
    let notes = match &a.notes {
        Some(p) => Some(std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?),
        None => None,
    };
    let link = match &a.plot {
        Some(plot) => {
            let pp: Document<pingpong::Results> = bench::read_document(&a.dir.join("pingpong.json"))?;
            let size = if pp.results.params.sizes.contains(&bench::render::TARGET_SIZE) {
                bench::render::TARGET_SIZE
            } else {
                pp.results.params.sizes.first().copied().unwrap_or_default()
            };
            pp.results.plot(size, &pp.machine, plot)?;
            // Linked relative to the document's folder when it is inside it.
            let base = a.out.parent().unwrap_or(std::path::Path::new(""));
            Some(plot.strip_prefix(base).unwrap_or(plot).display().to_string())
        }
        None => None,
    };
    let md = bench::render::render(&a.dir, link.as_deref(), notes.as_deref())?;
    std::fs::write(&a.out, md).with_context(|| format!("writing {}", a.out.display()))?;
    println!("wrote {}", a.out.display());
    Ok(())
}

fn run_pingpong(a: PingpongArgs, namespace: Namespace, peer: bench::PeerCommand<'_>) -> Result<()> {
    let (load, started) = (bench::load_average(), bench::utc_now());
    let transports = if a.transports.is_empty() { pingpong::Transport::ALL.to_vec() } else { a.transports.clone() };
    let cpus = match a.cpus.as_slice() {
        [] => None,
        [x, y] => Some((*x, *y)),
        _ => bail!("--cpus takes two CPUs, e.g. 0,1"),
    };
    if let Some(&bad) = a.sizes.iter().find(|&&s| !(8..=16384).contains(&s)) {
        bail!("frame size {bad}: sizes must be from 8 to 16384 bytes");
    }
    if a.sizes.is_empty() || a.iters == 0 || a.runs == 0 {
        bail!("--sizes, --iters and --runs must not be empty or 0");
    }
    let plot_size = a.plot_size.unwrap_or(if a.sizes.contains(&64) { 64 } else { a.sizes[0] });
    if a.plot.is_some() && !a.sizes.contains(&plot_size) {
        bail!("--plot-size {plot_size} is not among --sizes");
    }
    let dir = std::env::temp_dir().join(format!("helix-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    println!("machine: {}", Machine::detect());
    println!(
        "pingpong: frames of {} bytes, {} round trips after {} warm-up per transport and size, {}, {} run(s)",
        a.sizes.iter().map(usize::to_string).collect::<Vec<_>>().join(", "),
        a.iters,
        a.warmup,
        cpus.map_or("not pinned".to_owned(), |(x, y)| format!("pinned to CPUs {x} and {y}")),
        a.runs
    );
    let mut sizes: Vec<pingpong::SizeResult> = a
        .sizes
        .iter()
        .map(|&size| pingpong::SizeResult {
            size,
            transports: transports
                .iter()
                .map(|t| pingpong::TransportResult {
                    transport: t.name().into(),
                    blocking: t.blocking(),
                    runs: vec![],
                    median_p50_ns: 0.0,
                })
                .collect(),
            ratios: vec![],
        })
        .collect();
    let measured = (|| -> Result<()> {
        for run in 1..=a.runs {
            for sr in sizes.iter_mut() {
                let cfg = pingpong::Config {
                    size: sr.size,
                    iters: a.iters,
                    warmup: a.warmup,
                    cpus,
                    namespace: namespace.clone(),
                    dir: dir.clone(),
                };
                println!("\nrun {run}, {}-byte frames: round-trip time", sr.size);
                println!(
                    "{:<22}{:>11}{:>11}{:>11}{:>11}{:>11}{:>11}",
                    "transport", "p50", "p90", "p99", "p99.9", "p99.99", "max"
                );
                for (t, tr) in transports.iter().zip(sr.transports.iter_mut()) {
                    let m = pingpong::run(*t, &cfg, peer)
                        .with_context(|| format!("measuring {} at {} bytes", t.name(), sr.size))?;
                    let s = &m.summary;
                    println!(
                        "{:<22}{:>11}{:>11}{:>11}{:>11}{:>11}{:>11}",
                        t.name(),
                        fmt_ns(s.p50),
                        fmt_ns(s.p90),
                        fmt_ns(s.p99),
                        fmt_ns(s.p999),
                        fmt_ns(s.p9999),
                        fmt_ns(s.max)
                    );
                    tr.runs.push(m);
                }
            }
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    measured?;
    for sr in sizes.iter_mut() {
        sr.finish();
        println!(
            "\n{} bytes: median round trip over {} run(s), and ratios taken within each run (median of the per-run ratios):",
            sr.size, a.runs
        );
        for t in &sr.transports {
            println!("  {:<22}{:>10}", t.transport, fmt_ns(t.median_p50_ns as u64));
        }
        for r in &sr.ratios {
            println!(
                "  p50 {} / {}: {:.2}x  (per run: {})",
                r.numerator,
                r.denominator,
                r.median,
                r.per_run.iter().map(|x| format!("{x:.2}")).collect::<Vec<_>>().join(" ")
            );
        }
    }
    let results = pingpong::Results {
        params: pingpong::Params {
            sizes: a.sizes.clone(),
            iters: a.iters,
            warmup: a.warmup,
            cpus,
            runs: a.runs,
            transports: transports.iter().map(|t| t.name().to_owned()).collect(),
        },
        sizes,
    };
    if let Some(path) = &a.plot {
        results.plot(plot_size, &Machine::detect(), path)?;
        println!("wrote {}", path.display());
    }
    write_json(&a.out, "pingpong", load, started, results)
}

fn run_stream(a: StreamArgs, namespace: Namespace, peer: bench::PeerCommand<'_>) -> Result<()> {
    let (load, started) = (bench::load_average(), bench::utc_now());
    let modes = if a.gating { vec![Mode::Gating] } else { a.mode.clone() };
    if let Some(&bad) = a.sizes.iter().find(|&&s| s < 8) {
        bail!("frame size {bad}: frames must be at least 8 bytes");
    }
    if a.batches.contains(&0) || a.readers.contains(&0) || a.frames == 0 || a.runs == 0 {
        bail!("--frames, --batches, --readers and --runs must be at least 1");
    }
    if let Some(&b) = a.batches.iter().find(|&&b| b > a.capacity) {
        bail!("batch {b} is larger than the ring ({} slots)", a.capacity);
    }
    println!("machine: {}", Machine::detect());
    println!(
        "stream: {} frames per run, ring of {} slots, readers {}, {}, {} run(s) per case",
        a.frames,
        a.capacity,
        stream::wait_name(a.wait),
        cpus_text(&a.cpus),
        a.runs
    );
    let mut cases = Vec::new();
    for &size in &a.sizes {
        for &batch in &a.batches {
            for &readers in &a.readers {
                for &mode in &modes {
                    let gating = mode == Mode::Gating;
                    let cfg = stream::Config {
                        frames: a.frames,
                        size,
                        batch,
                        readers,
                        gating,
                        capacity: a.capacity,
                        wait: a.wait,
                        cpus: (!a.cpus.is_empty()).then_some(a.cpus.clone()),
                        namespace: namespace.clone(),
                    };
                    println!(
                        "\n{size}-byte frames, batches of {batch}, {readers} {} reader(s):",
                        if gating { "gating" } else { "non-gating" }
                    );
                    let mut case = stream::Case {
                        size,
                        batch,
                        readers,
                        gating,
                        wait: stream::wait_name(a.wait).into(),
                        frames: a.frames,
                        runs: vec![],
                        writer_fps: 0.0,
                        reader_fps: 0.0,
                    };
                    for run in 1..=a.runs {
                        let r = stream::run(&cfg, peer).context("stream run")?;
                        let mbs = |f: f64| f * size as f64 / 1e6;
                        println!(
                            "run {run}: writer {:.2} M frames/s ({:.0} MB/s), waited {} times",
                            r.writer.frames_per_sec() / 1e6,
                            mbs(r.writer.frames_per_sec()),
                            r.writer_waits
                        );
                        for (i, rr) in r.readers.iter().enumerate() {
                            println!(
                                "        reader {i}: {} frames, {} lost in {} overruns, {:.2} M frames/s ({:.0} MB/s)",
                                rr.frames,
                                rr.lost,
                                rr.overruns,
                                rr.frames_per_sec() / 1e6,
                                mbs(rr.frames_per_sec())
                            );
                        }
                        case.runs.push(r);
                    }
                    case.finish();
                    println!(
                        "median over {} run(s): writer {:.2} M frames/s, readers {:.2} M frames/s each",
                        a.runs,
                        case.writer_fps / 1e6,
                        case.reader_fps / 1e6
                    );
                    cases.push(case);
                }
            }
        }
    }
    let results = stream::Results { capacity: a.capacity, cpus: a.cpus.clone(), runs: a.runs, cases };
    write_json(&a.out, "stream", load, started, results)
}

fn run_udp_send(a: UdpSendArgs) -> Result<()> {
    if a.per_datagram == 0 || a.per_datagram > helix::telemetry::datagram::MAX_SAMPLES {
        bail!("--per-datagram must be from 1 to {}", helix::telemetry::datagram::MAX_SAMPLES);
    }
    let s = bench::udp::send(
        a.to,
        a.per_datagram,
        a.streams.max(1),
        a.rate,
        std::time::Duration::from_secs_f64(a.seconds),
    )?;
    println!(
        "sent {} samples in {} datagrams to {} in {:.2} s: {:.0} samples/s",
        s.samples,
        s.datagrams,
        a.to,
        s.seconds,
        s.samples as f64 / s.seconds
    );
    Ok(())
}

fn run_peer(what: PeerCmd, ns: &Namespace) -> Result<()> {
    match what {
        PeerCmd::Pingpong { transport, size, rounds, dir, cpu } => {
            if let Some(cpu) = cpu {
                bench::pin_to_cpu(cpu)?;
            }
            pingpong::peer(transport, ns, size, rounds, &dir)?;
        }
        PeerCmd::Stream { frames, batch, wait, gating, cpu } => {
            if let Some(cpu) = cpu {
                bench::pin_to_cpu(cpu)?;
            }
            stream::peer(ns, frames, batch, gating, wait)?;
        }
    }
    Ok(())
}
