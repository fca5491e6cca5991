//! helix-bench: latency and throughput of HELIX rings across processes,
//! side by side with the usual alternatives, measured in the same run.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::{Args, CommandFactory, Parser, Subcommand};
use helix::bench::{self, fmt_ns, pingpong, stream, Machine, Summary};
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
struct PingpongArgs {
    /// Frame size in bytes (at least 8).
    #[arg(long, default_value_t = 64)]
    size: usize,
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
}

#[derive(Args)]
struct StreamArgs {
    /// Frames to publish.
    #[arg(long, default_value_t = 10_000_000)]
    frames: u64,
    /// Frame size in bytes (at least 8).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Frames per claim and per batch read.
    #[arg(long, default_value_t = 64)]
    batch: u64,
    /// Reader processes.
    #[arg(long, default_value_t = 1)]
    readers: usize,
    /// Readers gate the writer (block ring); otherwise an overwrite ring.
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

fn main() -> Result<()> {
    let cli = Cli::parse();
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
    }
}

fn run_ledger(a: LedgerArgs, namespace: Namespace, exe: &std::path::Path) -> Result<()> {
    use helix::bench::ledger;
    let ledger_bin = a.ledger_bin.unwrap_or_else(|| exe.with_file_name("helix-ledger"));
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
    let result = (|| -> Result<()> {
        println!(
            "{:>7} {:>8} {:>14} {:>10} {:>8} {:>13}",
            "size", "fsync", "frames/s", "MB/s", "fsyncs", "writer waits"
        );
        for &size in &a.sizes {
            for &fsync_ms in &a.fsync_ms {
                let mut runs = Vec::new();
                for _ in 0..a.runs.max(1) {
                    runs.push(ledger::throughput(&setup, a.frames, size, fsync_ms).context("ledger throughput")?);
                }
                runs.sort_by(|x, y| x.frames_per_sec().total_cmp(&y.frames_per_sec()));
                let m = &runs[runs.len() / 2];
                println!(
                    "{:>5} B {:>5} ms {:>12.2} M {:>10.1} {:>8} {:>13}",
                    size,
                    fsync_ms,
                    m.frames_per_sec() / 1e6,
                    m.mb_per_sec(),
                    m.syncs.map_or("?".into(), |s| s.to_string()),
                    m.writer_waits
                );
            }
        }
        if a.latency_rate > 0 {
            let secs = std::time::Duration::from_secs_f64(a.latency_secs);
            let size = a.sizes.first().copied().unwrap_or(32);
            println!("writer publish latency at {} frames/s of {size} B (batches of 100):", a.latency_rate);
            println!("{:>14} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7}", "", "p50", "p99", "p99.9", "p99.99", "max", "waits");
            let mut rows = Vec::new();
            for with_ledger in [false, true] {
                let r = ledger::writer_latency(&setup, size, a.latency_rate, secs, with_ledger)
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
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run_attach(a: AttachArgs, ns: &Namespace) -> Result<()> {
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
    println!(
        "frames: {} ({:.0} frames/s), overruns: {}, lost: {}",
        r.frames,
        r.frames as f64 / r.seconds,
        r.overruns,
        r.lost
    );
    match r.latency {
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
    Ok(())
}

fn run_udp_send(a: UdpSendArgs) -> Result<()> {
    if a.per_datagram == 0 || a.per_datagram > helix::hal::udp::MAX_SAMPLES {
        bail!("--per-datagram must be from 1 to {}", helix::hal::udp::MAX_SAMPLES);
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

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn run_pingpong(a: PingpongArgs, namespace: Namespace, peer: bench::PeerCommand<'_>) -> Result<()> {
    let transports = if a.transports.is_empty() { pingpong::Transport::ALL.to_vec() } else { a.transports };
    let cpus = match a.cpus.as_slice() {
        [] => None,
        [x, y] => Some((*x, *y)),
        _ => bail!("--cpus takes two CPUs, e.g. 0,1"),
    };
    let dir = std::env::temp_dir().join(format!("helix-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let cfg = pingpong::Config { size: a.size, iters: a.iters, warmup: a.warmup, cpus, namespace, dir: dir.clone() };
    println!("machine: {}", Machine::detect());
    println!(
        "pingpong: {}-byte frames, {} round trips after {} warm-up per transport, {}, {} run(s)",
        a.size,
        a.iters,
        a.warmup,
        cpus.map_or("not pinned".to_owned(), |(x, y)| format!("pinned to CPUs {x} and {y}")),
        a.runs
    );
    let mut results: Vec<(pingpong::Transport, Vec<Summary>)> = transports.iter().map(|&t| (t, vec![])).collect();
    for run in 1..=a.runs {
        println!("\nrun {run}: round-trip time");
        println!(
            "{:<22}{:>11}{:>11}{:>11}{:>11}{:>11}{:>11}",
            "transport", "p50", "p90", "p99", "p99.9", "p99.99", "max"
        );
        for (t, sums) in results.iter_mut() {
            let s = pingpong::run(*t, &cfg, peer).with_context(|| format!("measuring {}", t.name()));
            let s = match s {
                Ok(s) => s,
                Err(e) => {
                    let _ = std::fs::remove_dir_all(&dir);
                    return Err(e);
                }
            };
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
            sums.push(s);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let p50 = |name: &str| -> Option<Vec<f64>> {
        results.iter().find(|(t, _)| t.name() == name).map(|(_, s)| s.iter().map(|s| s.p50 as f64).collect())
    };
    println!(
        "\nmedian round trip over {} run(s), and ratios taken within each run (median of the per-run ratios):",
        a.runs
    );
    for (t, sums) in &results {
        println!("  {:<22}{:>10}", t.name(), fmt_ns(median(sums.iter().map(|s| s.p50 as f64).collect()) as u64));
    }
    for (num, den) in [
        ("helix-spin", "atomic"),
        ("helix-park", "futex"),
        ("helix-park", "pipe"),
        ("helix-park", "unix-stream"),
        ("helix-park", "unix-dgram"),
        ("helix-spin-then-park", "futex"),
    ] {
        if let (Some(n), Some(d)) = (p50(num), p50(den)) {
            let ratios: Vec<f64> = n.iter().zip(&d).map(|(n, d)| n / d).collect();
            println!("  p50 {num} / {den}: {:.2}x  (per run: {})", median(ratios.clone()), fmt_ratios(&ratios));
        }
    }
    Ok(())
}

fn fmt_ratios(r: &[f64]) -> String {
    r.iter().map(|x| format!("{x:.2}")).collect::<Vec<_>>().join(" ")
}

fn run_stream(a: StreamArgs, namespace: Namespace, peer: bench::PeerCommand<'_>) -> Result<()> {
    let cfg = stream::Config {
        frames: a.frames,
        size: a.size,
        batch: a.batch,
        readers: a.readers,
        gating: a.gating,
        capacity: a.capacity,
        wait: a.wait,
        cpus: (!a.cpus.is_empty()).then_some(a.cpus.clone()),
        namespace,
    };
    println!("machine: {}", Machine::detect());
    println!(
        "stream: {} frames of {} bytes, batches of {}, {} reader process(es), {} ring of {} slots, readers {}, {}",
        a.frames,
        a.size,
        a.batch,
        a.readers,
        if a.gating { "gating (block)" } else { "non-gating (overwrite)" },
        a.capacity,
        stream::wait_name(a.wait),
        if a.cpus.is_empty() { "not pinned".to_owned() } else { format!("CPUs {:?}", a.cpus) }
    );
    let mut writer_rates = vec![];
    let mut reader_rates = vec![];
    for run in 1..=a.runs {
        let r = stream::run(&cfg, peer).context("stream run")?;
        let mbs = |f: f64| f * a.size as f64 / 1e6;
        println!(
            "run {run}: writer {:.2} M frames/s ({:.0} MB/s), waited {} times",
            r.writer.frames_per_sec() / 1e6,
            mbs(r.writer.frames_per_sec()),
            r.writer_waits
        );
        for (i, rr) in r.readers.iter().enumerate() {
            println!(
                "        reader {i}: {} frames, {} lost, {:.2} M frames/s ({:.0} MB/s)",
                rr.frames,
                rr.lost,
                rr.frames_per_sec() / 1e6,
                mbs(rr.frames_per_sec())
            );
            reader_rates.push(rr.frames_per_sec());
        }
        writer_rates.push(r.writer.frames_per_sec());
    }
    println!(
        "median over {} run(s): writer {:.2} M frames/s, readers {:.2} M frames/s each",
        a.runs,
        median(writer_rates) / 1e6,
        median(reader_rates) / 1e6
    );
    Ok(())
}
