//! `helix-bench e2e`, end to end: the real programs as an installation
//! runs them. helixd's simulated HAL writes `telemetry`; helix-ledger
//! records it (gating); helix-twin models it and publishes alarms;
//! helix-bench attaches as one more reader. After a warm-up it measures, for the given duration:
//!
//! - its own reader: each sample's `ingest_ns` (helixd's CLOCK_MONOTONIC
//!   when it wrote the sample) to the moment this reader had it, on the same
//!   clock: exact up to the cost of reading the clock;
//! - the ledger: from its records after the run, each FRAME's `recv_ns`
//!   (CLOCK_REALTIME, taken just after the ledger read the batch holding
//!   the frame) minus the sample's `ingest_ns` moved to CLOCK_REALTIME by
//!   an offset (realtime - monotonic) sampled when the measurement starts;
//!   the offset's uncertainty and its drift over the window are reported;
//! - the twin: it publishes no receipt time for telemetry, but each alarm
//!   event carries the triggering sample's `ingest_ns`, so the latency from
//!   ingest to the alarm event reaching helix-bench (through the twin and the
//!   `alarms` ring) is measured exactly, on the events the run produces; its
//!   reading lag (frames behind helixd, sampled every 10 ms) is reported too;
//!
//! with each process's CPU use, each reader's overruns, and frames/s. Then
//! it stops helixd, lets the ledger catch up, stops the twin and the
//! ledger, and verifies the ledger (records, gaps, final hash).
//!
//! Everything runs in a private namespace and a scratch folder that are
//! removed afterwards, whatever happens.

pub mod programs;
mod results;
mod verify;
mod window;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;

use helix::shm::{Namespace, SHM_DIR};
use helix::WaitStrategy;

use super::stream::wait_name;
use super::{cpus_flag, list};
use crate::document::{utc_now, JsonArg};
use crate::machine::{load_average, Machine};
use crate::shared::signal::{Signal, Signals};
use crate::stats::{fmt_ns, Summary};
use programs::{Running, Scratch};
pub use results::*;
pub use window::{alarm_ingest, read_until, sample_ingest};
use window::{lag_of, Window};

pub const TELEMETRY: &str = "telemetry";
const ALARMS: &str = "alarms";

#[derive(Args, Debug, Clone, PartialEq)]
pub struct E2eArgs {
    /// Simulated streams.
    #[arg(long, default_value_t = 10_000)]
    pub streams: u32,
    /// Samples per second per stream.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Seconds to measure.
    #[arg(long, default_value_t = 20.0)]
    pub seconds: f64,
    /// Seconds between everything attached and measuring.
    #[arg(long, default_value_t = 3.0)]
    pub warmup: f64,
    /// Where the scratch folder (configurations, logs, the ledger) goes;
    /// use the disk a production ledger would be on.
    #[arg(long, default_value = "/var/tmp")]
    pub dir: PathBuf,
    /// Confine every process (helixd, ledger, twin, this one) to these CPUs;
    /// the options below override it for one process.
    #[arg(long, value_delimiter = ',')]
    pub cpus: Vec<usize>,
    #[command(flatten)]
    pub per_process: ProcessCpus,
    #[command(flatten)]
    pub programs: ProgramArgs,
    #[command(flatten)]
    pub out: JsonArg,
}

/// CPUs for one process each, overriding `--cpus` for it.
#[derive(Args, Debug, Clone, Default, PartialEq)]
pub struct ProcessCpus {
    /// Confine helixd to these CPUs.
    #[arg(long, value_delimiter = ',', value_name = "CPUS")]
    pub helixd_cpus: Option<Vec<usize>>,
    /// Confine helix-ledger to these CPUs (e.g. a CPU of its own, away from
    /// the latency-sensitive readers).
    #[arg(long, value_delimiter = ',', value_name = "CPUS")]
    pub ledger_cpus: Option<Vec<usize>>,
    /// Confine helix-twin to these CPUs.
    #[arg(long, value_delimiter = ',', value_name = "CPUS")]
    pub twin_cpus: Option<Vec<usize>>,
    /// Confine this program (its readers) to these CPUs.
    #[arg(long, value_delimiter = ',', value_name = "CPUS")]
    pub reader_cpus: Option<Vec<usize>>,
}

impl ProcessCpus {
    /// The command-line flags that give these arguments.
    fn to_args(&self) -> Vec<String> {
        let flags = [
            ("--helixd-cpus", &self.helixd_cpus),
            ("--ledger-cpus", &self.ledger_cpus),
            ("--twin-cpus", &self.twin_cpus),
            ("--reader-cpus", &self.reader_cpus),
        ];
        flags.into_iter().flat_map(|(flag, cpus)| cpus.iter().flat_map(move |c| [flag.to_owned(), list(c)])).collect()
    }
}

/// How the programs of an e2e run are found and set up: the flags e2e and
/// capacity share.
#[derive(Args, Debug, Clone, PartialEq)]
pub struct ProgramArgs {
    /// This reader's wait strategy: spin, spin-then-park or park.
    #[arg(long, default_value = "park")]
    pub wait: WaitStrategy,
    /// The ledger's fsync interval, ms.
    #[arg(long, default_value_t = 10)]
    pub fsync_ms: u64,
    /// Folder holding helixd, helix-ledger and helix-twin (default: this
    /// program's).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
}

impl Default for ProgramArgs {
    /// The flags' defaults.
    fn default() -> Self {
        ProgramArgs { wait: WaitStrategy::Park, fsync_ms: 10, bin_dir: None }
    }
}

impl ProgramArgs {
    /// The command-line flags that give these arguments.
    pub fn to_args(&self) -> Vec<String> {
        let mut v = vec!["--wait".into(), wait_name(self.wait).into(), "--fsync-ms".into(), self.fsync_ms.to_string()];
        v.extend(self.bin_dir.iter().flat_map(|p| ["--bin-dir".into(), p.display().to_string()]));
        v
    }
}

impl E2eArgs {
    /// An error naming the first argument out of range; `explicit_ns` is
    /// whether `namespace` was given with `--namespace`.
    pub fn check(&self, explicit_ns: bool, namespace: &Namespace) -> Result<()> {
        if !(self.seconds > 0.0 && self.seconds.is_finite() && self.warmup >= 0.0 && self.warmup.is_finite()) {
            bail!("--seconds must be positive and --warmup not negative");
        }
        if self.programs.fsync_ms == 0 || self.programs.fsync_ms > 60_000 {
            bail!("--fsync-ms must be from 1 to 60000");
        }
        if explicit_ns && namespace.as_str() == "helix" {
            bail!("helix-bench runs its own helixd: give it a namespace of its own, not the installation's \"helix\"");
        }
        Ok(())
    }

    /// The command-line flags that give these arguments.
    pub fn to_args(&self) -> Vec<String> {
        let mut v = vec!["--streams".to_owned(), self.streams.to_string(), "--rate".into(), self.rate.to_string()];
        v.extend(["--seconds".into(), self.seconds.to_string(), "--warmup".into(), self.warmup.to_string()]);
        v.extend(["--dir".into(), self.dir.display().to_string()]);
        v.extend(self.programs.to_args());
        v.extend(cpus_flag(&self.cpus));
        v.extend(self.per_process.to_args());
        v.extend(self.out.to_args());
        v
    }
}

/// The programs started.
#[derive(Debug, Clone)]
pub struct Programs {
    /// helixd.
    pub helixd: PathBuf,
    /// helix-ledger.
    pub ledger: PathBuf,
    /// helix-twin.
    pub twin: PathBuf,
}

/// What to run and measure.
#[derive(Debug, Clone)]
pub struct Config {
    /// Simulated streams.
    pub streams: u32,
    /// Samples per second per stream.
    pub rate_hz: f64,
    /// Measured window.
    pub duration: Duration,
    /// Time after every program attached and before measuring.
    pub warmup: Duration,
    /// Where the scratch folder (configurations, logs, the ledger) goes.
    pub dir: PathBuf,
    /// The programs.
    pub programs: Programs,
    /// The CPUs each process is confined to.
    pub placement: Placement,
    /// A namespace with no files yet; everything in it is removed after.
    pub namespace: Namespace,
    /// How helix-bench's own reader waits.
    pub wait: WaitStrategy,
    /// The ledger's fsync interval, ms.
    pub fsync_ms: u64,
    /// The most the ledger folder keeps, GiB (its `[retention]
    /// max_total_gib`); None keeps every segment.
    pub ledger_keep_gib: Option<f64>,
    /// helixd takes commands (`[control]` and its rings, as its embedded
    /// default does) and the ledger records `control.log` too.
    pub control: bool,
}

impl Config {
    /// The configuration `a` asks for; the programs are in its `bin_dir`,
    /// or beside `exe`.
    pub fn new(a: &E2eArgs, namespace: Namespace, exe: &Path) -> Config {
        let bin_dir = a.programs.bin_dir.clone().unwrap_or_else(|| exe.parent().map(PathBuf::from).unwrap_or_default());
        let cpus = |own: &Option<Vec<usize>>| own.clone().unwrap_or_else(|| a.cpus.clone());
        Config {
            streams: a.streams,
            rate_hz: a.rate,
            duration: Duration::from_secs_f64(a.seconds),
            warmup: Duration::from_secs_f64(a.warmup),
            dir: a.dir.clone(),
            programs: Programs {
                helixd: bin_dir.join("helixd"),
                ledger: bin_dir.join("helix-ledger"),
                twin: bin_dir.join("helix-twin"),
            },
            placement: Placement {
                helixd: cpus(&a.per_process.helixd_cpus),
                ledger: cpus(&a.per_process.ledger_cpus),
                twin: cpus(&a.per_process.twin_cpus),
                reader: cpus(&a.per_process.reader_cpus),
            },
            namespace,
            wait: a.programs.wait,
            fsync_ms: a.programs.fsync_ms,
            ledger_keep_gib: None,
            control: false,
        }
    }

    /// Telemetry ring slots: about 4 s of samples, a power of two from
    /// 4,096 to 4,194,304 (helixd's default, 256 MiB).
    pub fn capacity(&self) -> u64 {
        let want = (f64::from(self.streams) * self.rate_hz * 4.0) as u64;
        want.clamp(4096, 1 << 22).next_power_of_two()
    }

    /// Samples per second written.
    pub fn rate(&self) -> f64 {
        f64::from(self.streams) * self.rate_hz
    }
}

/// Runs `helix-bench e2e`; `explicit_ns` is whether `--namespace` was given.
pub fn run(a: E2eArgs, explicit_ns: bool, namespace: Namespace, exe: &Path) -> Result<()> {
    let (load, started) = (load_average(), utc_now());
    a.check(explicit_ns, &namespace)?;
    // Before any thread starts, so that every thread blocks them: a signal
    // ends the window, and the run stops the programs and removes its
    // namespace and folder.
    let signals = Signals::block(&[Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP])?;
    let cfg = Config::new(&a, namespace, exe);
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
    let measured = measure(&cfg, &mut |what| println!("  {what}"), &|| signals.pending().unwrap_or(true));
    if let Some(signal) = signals.wait(Duration::ZERO)? {
        bail!(
            "interrupted by {signal}: stopped the programs, removed namespace {} and the scratch folder",
            cfg.namespace
        );
    }
    let r = measured.context("e2e")?;
    print_results(&r);
    let verified = r.ledger.verified;
    a.out.write("e2e", load, started, r)?;
    if !verified {
        bail!("the ledger did not verify");
    }
    Ok(())
}

fn print_results(r: &Results) {
    println!(
        "helixd published {:.0} frames/s, waited {} times; ring of {} slots",
        r.frames_per_sec, r.writer_waits, r.capacity
    );
    let head = Summary::NAMES.map(|n| format!("{n:>10}")).concat();
    println!("{:<14}{:>12}{:>10}{:>9}{:>12}{head}", "reader", "frames/s", "overruns", "lost", "lag p99");
    for x in &r.readers {
        let lat = x.latency.as_ref().map_or_else(
            || format!("{:>10}", "-").repeat(6),
            |s| s.percentiles().map(|v| format!("{:>10}", fmt_ns(v))).concat(),
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
}

/// Runs the scenario; `progress` is told what is happening.
pub fn measure(cfg: &Config, progress: &mut dyn FnMut(&str), stop: &dyn Fn() -> bool) -> Result<Results> {
    let scratch = prepare(cfg)?;
    let result = measure_in(cfg, &scratch.dir, progress, stop);
    scratch.remove_rings();
    result
}

/// Checks `cfg` and that its namespace is free, and makes the scratch
/// folder, removed (with the namespace's files) when the value is dropped.
pub fn prepare(cfg: &Config) -> Result<Scratch> {
    if cfg.streams == 0 || !(cfg.rate_hz > 0.0 && cfg.rate_hz.is_finite()) {
        bail!("streams and rate must be positive");
    }
    for p in [&cfg.programs.helixd, &cfg.programs.ledger, &cfg.programs.twin] {
        if !p.is_file() {
            bail!("{}: no such program", p.display());
        }
    }
    let prefix = format!("{}.", cfg.namespace.as_str());
    let taken = std::fs::read_dir(SHM_DIR)?.flatten().any(|e| e.file_name().to_string_lossy().starts_with(&prefix));
    if taken {
        bail!("namespace {} already has files in {SHM_DIR}: e2e needs a namespace of its own", cfg.namespace);
    }
    let dir = cfg.dir.join(format!("helix-bench-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
    Ok(Scratch { dir, ns: cfg.namespace.clone() })
}

/// Starts the programs, measures the window, stops them and verifies the
/// ledger, with everything written in the scratch folder `dir`.
fn measure_in(cfg: &Config, dir: &Path, progress: &mut dyn FnMut(&str), stop: &dyn Fn() -> bool) -> Result<Results> {
    let mut running = Running::start(cfg, dir, progress)?;
    let window = window::measure(cfg, &mut running, progress, stop)?;
    progress("stopping helixd, letting the ledger catch up, stopping the twin and the ledger");
    let published = running.stop()?;
    progress("verifying the ledger");
    let (ledger, latency) = verify::check(&running.ledger_dir, window.t0, window.t1, window.offset.0, published)?;
    let readers = readers(cfg, &window, &latency);
    let [stats0, stats1] = &window.stats;
    let window_published = stats1.published - stats0.published;
    let (offset, uncertainty) = window.offset;
    Ok(Results {
        streams: cfg.streams,
        rate_hz: cfg.rate_hz,
        seconds: window.seconds,
        warmup: cfg.warmup.as_secs_f64(),
        placement: cfg.placement.clone(),
        capacity: cfg.capacity(),
        fsync_ms: cfg.fsync_ms,
        wait: wait_name(cfg.wait).into(),
        twin_poll_ms: running.twin_poll.as_millis() as u64,
        published: window_published,
        frames_per_sec: window_published as f64 / window.seconds.max(1e-9),
        writer_waits: stats1.writer_waits - stats0.writer_waits,
        readers,
        cpu: window.cpu,
        clock: ClockOffset { offset_ns: offset, uncertainty_ns: uncertainty, drift_ns: window.offset_end - offset },
        alarm_events: window.alarms.frames,
        ledger,
    })
}

/// Each reader of `telemetry` over the window: helix-bench's own, the
/// ledger (its latency from its records, `ledger_latency`) and the twin.
fn readers(cfg: &Config, w: &Window, ledger_latency: &hdrhistogram::Histogram<u64>) -> Vec<ReaderResult> {
    let rate = cfg.rate();
    let per_sec = |n: u64| n as f64 / w.seconds.max(1e-9);
    let summary = |h: &hdrhistogram::Histogram<u64>| (!h.is_empty()).then(|| Summary::of(h));
    vec![
        ReaderResult {
            name: "helix-bench".into(),
            gating: false,
            frames: w.telemetry.frames,
            frames_per_sec: per_sec(w.telemetry.frames),
            overruns: w.telemetry.overruns,
            lost: w.telemetry.lost,
            lag: lag_of(&w.lag[0], rate),
            latency_method: format!(
                "ingest_ns (helixd, CLOCK_MONOTONIC) to receipt by this reader ({}), same clock",
                wait_name(cfg.wait)
            ),
            latency: summary(&w.telemetry.hist),
        },
        ReaderResult {
            name: "helix-ledger".into(),
            gating: true,
            frames: w.ledger.frames,
            frames_per_sec: per_sec(w.ledger.frames),
            overruns: w.ledger.overruns,
            lost: w.ledger.lost,
            lag: lag_of(&w.lag[1], rate),
            latency_method: "ingest_ns + (realtime - monotonic offset) to the record's recv_ns (CLOCK_REALTIME, \
                             just after the ledger read the batch), for samples ingested in the window"
                .into(),
            latency: summary(ledger_latency),
        },
        ReaderResult {
            name: "helix-twin".into(),
            gating: false,
            frames: w.twin.frames,
            frames_per_sec: per_sec(w.twin.frames),
            overruns: w.twin.overruns,
            lost: w.twin.lost,
            lag: lag_of(&w.lag[2], rate),
            latency_method: "the triggering sample's ingest_ns to an alarm event reaching helix-bench through the \
                             `alarms` ring (same clock; only the samples that raised or cleared an alarm)"
                .into(),
            latency: summary(&w.alarms.hist),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::report::{assert_reparses, Scenario};

    #[test]
    fn the_arguments_parse_back_to_themselves() {
        let all = E2eArgs {
            streams: 100,
            rate: 12.5,
            seconds: 1.0,
            warmup: 0.3,
            dir: "/tmp/e".into(),
            cpus: vec![0, 1],
            per_process: ProcessCpus {
                helixd_cpus: Some(vec![0]),
                ledger_cpus: Some(vec![1]),
                twin_cpus: Some(vec![0, 1]),
                reader_cpus: Some(vec![2]),
            },
            programs: ProgramArgs { wait: WaitStrategy::Spin, fsync_ms: 100, bin_dir: Some("/opt/helix".into()) },
            out: JsonArg { json: Some("/tmp/e.json".into()) },
        };
        let few = E2eArgs {
            cpus: vec![],
            per_process: ProcessCpus::default(),
            programs: ProgramArgs { bin_dir: None, ..all.programs.clone() },
            out: JsonArg::default(),
            ..all.clone()
        };
        assert_reparses([all, few].map(Scenario::E2e));
    }

    #[test]
    fn the_program_arguments_default_as_their_flags_do() {
        let parsed = match crate::tests::parse(["e2e".to_owned()]) {
            crate::Cmd::E2e(a) => a,
            _ => panic!("not e2e"),
        };
        assert_eq!((parsed.per_process, parsed.programs), (ProcessCpus::default(), ProgramArgs::default()));
    }
}
