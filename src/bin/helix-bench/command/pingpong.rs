//! `helix-bench pingpong`: cross-process round trips. A frame goes to a
//! peer process through one channel and comes back through another; the
//! round-trip time is recorded. The ring runs beside the baselines a user
//! would otherwise pick, in the same run, with the same frame size and the
//! same core pinning.

mod channel;
mod fanin;

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use serde::{Deserialize, Serialize};

use helix::shm::Namespace;
use helix::WaitStrategy;

use super::peer::{PeerCmd, PeerPingpongArgs, Peers};
use super::{cpus_flag, list};
use crate::document::{utc_now, JsonArg};
use crate::machine::{load_average, Machine};
use crate::plot::{percentile_plot, Series};
use crate::stats::{fmt_ns, median, CurvePoint, Summary};

pub use channel::peer;

// The arguments; those its JSON records as they are given are its
// parameters, the rest (`--transports` and `--cpus`, recorded as resolved,
// and the outputs) are skipped. (A `//` comment: clap would make a doc
// comment help text.)
#[derive(Args, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PingpongArgs {
    /// Frame sizes in bytes (at least 8), comma separated; every transport
    /// runs at each.
    #[arg(long, alias = "size", value_delimiter = ',', default_values_t = DEFAULT_SIZES)]
    pub sizes: Vec<usize>,
    /// Measured round trips per transport.
    #[arg(long, default_value_t = 20_000)]
    pub iters: u64,
    /// Round trips before measuring.
    #[arg(long, default_value_t = 2_000)]
    pub warmup: u64,
    /// Transports, comma separated (default: all).
    #[arg(long, value_delimiter = ',')]
    #[serde(skip)]
    pub transports: Vec<Transport>,
    /// Pin this process and the peer to these two CPUs, e.g. 0,1.
    #[arg(long, value_delimiter = ',')]
    #[serde(skip)]
    pub cpus: Vec<usize>,
    /// Repeat the whole set this many times and report the median of each.
    #[arg(long, default_value_t = 1)]
    pub runs: usize,
    /// Draw the percentile plot (SVG) of every transport at one frame size
    /// (--plot-size), first run.
    #[arg(long, value_name = "FILE.svg")]
    #[serde(skip)]
    pub plot: Option<PathBuf>,
    /// The frame size plotted (default: 64 if measured, else the first).
    #[arg(long)]
    #[serde(skip)]
    pub plot_size: Option<usize>,
    #[command(flatten)]
    #[serde(skip)]
    pub out: JsonArg,
}

impl PingpongArgs {
    /// The command-line flags that give these arguments.
    pub fn to_args(&self) -> Vec<String> {
        let mut v = vec!["--sizes".to_owned(), list(&self.sizes), "--iters".into(), self.iters.to_string()];
        v.extend(["--warmup".into(), self.warmup.to_string(), "--runs".into(), self.runs.to_string()]);
        if !self.transports.is_empty() {
            let names: Vec<&str> = self.transports.iter().map(|t| t.name()).collect();
            v.extend(["--transports".into(), names.join(",")]);
        }
        v.extend(self.plot.iter().flat_map(|p| ["--plot".into(), p.display().to_string()]));
        v.extend(self.plot_size.iter().flat_map(|s| ["--plot-size".into(), s.to_string()]));
        v.extend(cpus_flag(&self.cpus));
        v.extend(self.out.to_args());
        v
    }
}

/// The frame sizes swept by default: 8 B to 16 KiB.
pub const DEFAULT_SIZES: [usize; 5] = [8, 64, 512, 4096, 16384];

/// The ratios reported, numerator / denominator, of the median round trip.
pub const RATIOS: [(&str, &str); 6] = [
    ("helix-spin", "atomic"),
    ("helix-park", "futex"),
    ("helix-park", "pipe"),
    ("helix-park", "unix-stream"),
    ("helix-park", "unix-dgram"),
    ("helix-spin-then-park", "futex"),
];

/// One transport's round trips in one run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Measured {
    /// Percentiles, ns.
    pub summary: Summary,
    /// The percentile curve, for plots.
    pub curve: Vec<CurvePoint>,
}

/// One transport at one frame size, over every run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TransportResult {
    /// Transport name.
    pub transport: String,
    /// Whether its waiting side sleeps in the kernel.
    pub blocking: bool,
    /// Each run's measurement, in run order.
    pub runs: Vec<Measured>,
    /// Median over the runs of the p50 round trip, ns.
    pub median_p50_ns: f64,
}

/// A ratio of median round trips, taken within each run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ratio {
    /// The transport on top.
    pub numerator: String,
    /// The baseline.
    pub denominator: String,
    /// p50 numerator / p50 denominator in each run.
    pub per_run: Vec<f64>,
    /// The median of `per_run`.
    pub median: f64,
}

/// Every transport at one frame size.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SizeResult {
    /// Frame size, bytes.
    pub size: usize,
    /// Each transport, in report order.
    pub transports: Vec<TransportResult>,
    /// The ratios of [`RATIOS`] whose transports were measured.
    pub ratios: Vec<Ratio>,
}

impl SizeResult {
    /// No runs yet of `transports` at `size`.
    pub fn new(size: usize, transports: &[Transport]) -> SizeResult {
        let transports = transports
            .iter()
            .map(|t| TransportResult {
                transport: t.name().into(),
                blocking: t.blocking(),
                runs: vec![],
                median_p50_ns: 0.0,
            })
            .collect();
        SizeResult { size, transports, ratios: vec![] }
    }

    /// Fills `median_p50_ns` and the ratios of `wanted` whose transports
    /// were measured from the runs.
    pub fn finish(&mut self, wanted: &[(&str, &str)]) {
        for t in &mut self.transports {
            t.median_p50_ns = median(t.runs.iter().map(|m| m.summary.p50 as f64).collect());
        }
        let p50 = |name: &str| -> Option<Vec<f64>> {
            self.transport(name).map(|t| t.runs.iter().map(|m| m.summary.p50 as f64).collect())
        };
        self.ratios = wanted
            .iter()
            .filter_map(|&(num, den)| {
                let (n, d) = (p50(num)?, p50(den)?);
                let per_run: Vec<f64> = n.iter().zip(&d).map(|(n, d)| n / d.max(1.0)).collect();
                Some(Ratio { numerator: num.into(), denominator: den.into(), median: median(per_run.clone()), per_run })
            })
            .collect();
    }

    /// The ratio `num / den`, if measured.
    pub fn ratio(&self, num: &str, den: &str) -> Option<&Ratio> {
        self.ratios.iter().find(|r| r.numerator == num && r.denominator == den)
    }

    /// The transport named `name`, if measured.
    pub fn transport(&self, name: &str) -> Option<&TransportResult> {
        self.transports.iter().find(|t| t.transport == name)
    }
}

/// The parameters of a pingpong run, as recorded in its JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Params {
    /// The arguments recorded as given: sizes, iters, warmup, runs.
    #[serde(flatten)]
    pub args: PingpongArgs,
    /// (this process's CPU, the peer's), if pinned.
    pub cpus: Option<(usize, usize)>,
    /// Transports, in report order.
    pub transports: Vec<String>,
}

/// What `helix-bench pingpong --json` writes under `results`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    /// The parameters.
    pub params: Params,
    /// Each frame size.
    pub sizes: Vec<SizeResult>,
}

impl Results {
    /// Draws the percentile plot (SVG) of every transport at frame size
    /// `size`, from the first run.
    pub fn plot(&self, size: usize, machine: &Machine, path: &Path) -> Result<()> {
        let sr = self
            .sizes
            .iter()
            .find(|s| s.size == size)
            .ok_or_else(|| anyhow!("no measurement at {size} bytes to plot"))?;
        let series: Vec<Series<'_>> = sr
            .transports
            .iter()
            .filter_map(|t| Some(Series { name: &t.transport, curve: &t.runs.first()?.curve }))
            .collect();
        let title = format!("HELIX cross-process round trip, {size}-byte frames ({}, run 1)", machine.cpu);
        percentile_plot(path, &title, &series)
    }
}

/// A channel to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Two HELIX rings, readers waiting with this strategy.
    Helix(WaitStrategy),
    /// A request into a fan-in ring (this process its producer, the peer its
    /// consumer), the answer back through a HELIX ring; both waiting sides
    /// with this strategy.
    FanIn(WaitStrategy),
    /// Two 64-bit atomics in shared memory, both sides spinning: the floor
    /// for a spinning ping-pong (one cache-line round trip each way).
    Atomic,
    /// Two 32-bit futex words, both sides sleeping in `FUTEX_WAIT` and
    /// woken by `FUTEX_WAKE`: the floor for a blocking ping-pong.
    Futex,
    /// Two named pipes (FIFOs).
    Pipe,
    /// A Unix stream socket.
    UnixStream,
    /// A pair of Unix datagram sockets.
    UnixDgram,
}

impl Transport {
    /// Every transport, in the order the report shows them.
    pub const ALL: [Transport; 8] = [
        Transport::Helix(WaitStrategy::Spin),
        Transport::Atomic,
        Transport::Helix(WaitStrategy::SpinThenPark { spins: 4096 }),
        Transport::Helix(WaitStrategy::Park),
        Transport::Futex,
        Transport::Pipe,
        Transport::UnixStream,
        Transport::UnixDgram,
    ];

    /// The fan-in round trips (`helix-bench fanin` runs them; pingpong on
    /// request).
    pub const FANIN: [Transport; 3] = [
        Transport::FanIn(WaitStrategy::Spin),
        Transport::FanIn(WaitStrategy::SpinThenPark { spins: 4096 }),
        Transport::FanIn(WaitStrategy::Park),
    ];

    /// Short name, as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Transport::FanIn(WaitStrategy::Spin) => "fanin-spin",
            Transport::FanIn(WaitStrategy::SpinThenPark { .. }) => "fanin-spin-then-park",
            Transport::FanIn(WaitStrategy::Park) => "fanin-park",
            Transport::Helix(WaitStrategy::Spin) => "helix-spin",
            Transport::Helix(WaitStrategy::SpinThenPark { .. }) => "helix-spin-then-park",
            Transport::Helix(WaitStrategy::Park) => "helix-park",
            Transport::Atomic => "atomic",
            Transport::Futex => "futex",
            Transport::Pipe => "pipe",
            Transport::UnixStream => "unix-stream",
            Transport::UnixDgram => "unix-dgram",
        }
    }

    /// Whether the peer sleeps in the kernel while waiting.
    pub fn blocking(self) -> bool {
        !matches!(self, Transport::Atomic | Transport::Helix(WaitStrategy::Spin) | Transport::FanIn(WaitStrategy::Spin))
    }
}

impl std::str::FromStr for Transport {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let all = || Transport::ALL.into_iter().chain(Transport::FANIN);
        all().find(|t| t.name() == s).ok_or_else(|| {
            let names: Vec<_> = all().map(|t| t.name()).collect();
            anyhow!("unknown transport {s:?}: expected one of {}", names.join(", "))
        })
    }
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct Config {
    /// Frame size in bytes (at least 8: the first 8 carry the round number).
    pub size: usize,
    /// Measured round trips.
    pub iters: u64,
    /// Round trips before measuring (not recorded).
    pub warmup: u64,
    /// (this process's CPU, the peer's CPU), if pinning.
    pub cpus: Option<(usize, usize)>,
    /// Namespace for the rings and shared words.
    pub namespace: Namespace,
    /// Folder for FIFOs and socket paths.
    pub dir: PathBuf,
}

impl Config {
    fn total(&self) -> u64 {
        self.warmup + self.iters
    }

    /// The peer that echoes transport `t`'s frames.
    fn peer(&self, t: Transport) -> PeerCmd {
        PeerCmd::Pingpong(PeerPingpongArgs {
            transport: t,
            size: self.size,
            rounds: self.total(),
            dir: self.dir.clone(),
            cpu: self.cpus.map(|(_, peer)| peer),
        })
    }
}

/// Runs `helix-bench pingpong`.
pub fn run(a: PingpongArgs, namespace: Namespace, peers: &Peers) -> Result<()> {
    let (load, started) = (load_average(), utc_now());
    let transports = if a.transports.is_empty() { Transport::ALL.to_vec() } else { a.transports.clone() };
    let cpus = cpu_pair(&a.cpus)?;
    let sweep =
        Sweep { sizes: &a.sizes, iters: a.iters, warmup: a.warmup, cpus, runs: a.runs, transports: &transports };
    sweep.check()?;
    let plot_size = a.plot_size.unwrap_or(if a.sizes.contains(&64) { 64 } else { a.sizes[0] });
    if a.plot.is_some() && !a.sizes.contains(&plot_size) {
        bail!("--plot-size {plot_size} is not among --sizes");
    }
    println!("machine: {}", Machine::detect());
    println!(
        "pingpong: frames of {} bytes, {} round trips after {} warm-up per transport and size, {}, {} run(s)",
        a.sizes.iter().map(usize::to_string).collect::<Vec<_>>().join(", "),
        a.iters,
        a.warmup,
        cpus.map_or("not pinned".to_owned(), |(x, y)| format!("pinned to CPUs {x} and {y}")),
        a.runs
    );
    let sizes = sweep.run(&RATIOS, &namespace, peers)?;
    let (plot, out) = (a.plot.clone(), a.out.clone());
    let transports = transports.iter().map(|t| t.name().to_owned()).collect();
    let results = Results { params: Params { args: a, cpus, transports }, sizes };
    if let Some(path) = &plot {
        results.plot(plot_size, &Machine::detect(), path)?;
        println!("wrote {}", path.display());
    }
    out.write("pingpong", load, started, results)
}

/// A set of round-trip measurements: every transport at every size, the
/// whole set `runs` times (the runs interleave, so a noisy moment hits one
/// run, not one transport).
pub struct Sweep<'a> {
    /// Frame sizes, bytes.
    pub sizes: &'a [usize],
    /// Measured round trips per transport, size and run.
    pub iters: u64,
    /// Round trips before measuring.
    pub warmup: u64,
    /// (this process's CPU, the peer's), if pinned.
    pub cpus: Option<(usize, usize)>,
    /// Repetitions of the whole set.
    pub runs: usize,
    /// Transports, in report order.
    pub transports: &'a [Transport],
}

/// `--cpus` of a round trip: none, or this process's CPU and the peer's.
pub fn cpu_pair(cpus: &[usize]) -> Result<Option<(usize, usize)>> {
    match cpus {
        [] => Ok(None),
        [x, y] => Ok(Some((*x, *y))),
        _ => bail!("--cpus takes two CPUs, e.g. 0,1"),
    }
}

impl Sweep<'_> {
    /// Refuses sizes out of range, and no sizes, iterations or runs.
    pub fn check(&self) -> Result<()> {
        if let Some(&bad) = self.sizes.iter().find(|&&s| !(8..=16384).contains(&s)) {
            bail!("frame size {bad}: sizes must be from 8 to 16384 bytes");
        }
        if self.sizes.is_empty() || self.iters == 0 || self.runs == 0 {
            bail!("--sizes, --iters and --runs must not be empty or 0");
        }
        Ok(())
    }

    /// Measures the set, printing each run's percentiles, then each size's
    /// medians and the ratios of `ratios` (numerator, denominator) whose
    /// transports were measured.
    pub fn run(&self, ratios: &[(&str, &str)], namespace: &Namespace, peers: &Peers) -> Result<Vec<SizeResult>> {
        let dir = std::env::temp_dir().join(format!("helix-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut sizes: Vec<SizeResult> =
            self.sizes.iter().map(|&size| SizeResult::new(size, self.transports)).collect();
        let cfg = |size| Config {
            size,
            iters: self.iters,
            warmup: self.warmup,
            cpus: self.cpus,
            namespace: namespace.clone(),
            dir: dir.clone(),
        };
        let measured = measure_runs(self.runs, self.transports, &mut sizes, cfg, peers);
        let _ = std::fs::remove_dir_all(&dir);
        measured?;
        for sr in sizes.iter_mut() {
            sr.finish(ratios);
            print_medians(sr, self.runs);
        }
        Ok(sizes)
    }
}

/// Every run of every transport at every size (`cfg` gives a size's
/// configuration), printing each run's percentiles.
fn measure_runs(
    runs: usize,
    transports: &[Transport],
    sizes: &mut [SizeResult],
    cfg: impl Fn(usize) -> Config,
    peers: &Peers,
) -> Result<()> {
    for run in 1..=runs {
        for sr in sizes.iter_mut() {
            let cfg = cfg(sr.size);
            println!("\nrun {run}, {}-byte frames: round-trip time", sr.size);
            let head = Summary::NAMES.map(|n| format!("{n:>11}")).concat();
            println!("{:<22}{head}", "transport");
            for (t, tr) in transports.iter().zip(sr.transports.iter_mut()) {
                let m = channel::measure(*t, &cfg, peers)
                    .with_context(|| format!("measuring {} at {} bytes", t.name(), sr.size))?;
                let row = m.summary.percentiles().map(|ns| format!("{:>11}", fmt_ns(ns))).concat();
                println!("{:<22}{row}", t.name());
                tr.runs.push(m);
            }
        }
    }
    Ok(())
}

/// Prints a size's medians over the runs and its ratios.
fn print_medians(sr: &SizeResult, runs: usize) {
    println!(
        "\n{} bytes: median round trip over {} run(s), and ratios taken within each run (median of the per-run ratios):",
        sr.size, runs
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::report::{assert_reparses, Scenario};

    #[test]
    fn the_arguments_parse_back_to_themselves() {
        let all = PingpongArgs {
            sizes: vec![8, 100],
            iters: 5,
            warmup: 1,
            transports: vec![Transport::Pipe, Transport::Helix(WaitStrategy::default())],
            cpus: vec![0, 1],
            runs: 2,
            plot: Some("/tmp/p.svg".into()),
            plot_size: Some(8),
            out: JsonArg { json: Some("/tmp/p.json".into()) },
        };
        let few = PingpongArgs {
            transports: vec![],
            cpus: vec![],
            plot: None,
            plot_size: None,
            out: JsonArg::default(),
            ..all.clone()
        };
        assert_reparses([all, few].map(Scenario::Pingpong));
    }
}
