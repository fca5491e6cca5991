//! `helix-bench capacity`: the e2e scenario (helixd's simulator, the real
//! helix-ledger and helix-twin, helix-bench's reader, in a private
//! namespace) once per stream count, each count's figures held against
//! issue 15's targets, and the largest count that meets them named, with
//! the reason each larger one fails.

mod judge;
mod table;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::{Deserialize, Serialize};

use helix::shm::Namespace;

use super::e2e::{self, Config, E2eArgs, Placement, ProcessCpus, ProgramArgs};
use super::stream::wait_name;
use super::{cpus_flag, list};
use crate::document::{utc_now, JsonArg};
use crate::machine::{free_bytes, load_average, Machine};
use crate::shared::signal::{Signal, Signals};
pub use judge::{conclusion, largest, CountResult, Figures, Targets};
pub use table::{goals_missed, ring, table};

/// The counts measured when `--streams` is not given.
pub const DEFAULT_STREAMS: [u32; 4] = [10_000, 20_000, 30_000, 50_000];

/// Ledger bytes a telemetry frame takes, for the free-space checks before
/// a run: ledger format 1's 112 bytes per 40-byte sample, the most any
/// format takes (format 2 takes about 48, its blocks' share included).
pub const BYTES_PER_FRAME: f64 = 112.0;

#[derive(Args, Debug, Clone, PartialEq)]
pub struct CapacityArgs {
    /// Stream counts to measure, e.g. 10000,20000,30000,50000 (measured in
    /// increasing order).
    #[arg(long, value_delimiter = ',', default_values_t = DEFAULT_STREAMS)]
    pub streams: Vec<u32>,
    /// Samples per second per stream.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Seconds to measure each count.
    #[arg(long, default_value_t = 60.0)]
    pub seconds: f64,
    /// Seconds between everything attached and measuring, each count.
    #[arg(long, default_value_t = 3.0)]
    pub warmup: f64,
    /// Where each count's scratch folder (its configurations, logs and
    /// ledger) goes; use the disk a production ledger would be on.
    #[arg(long, default_value = "/var/tmp")]
    pub ledger_dir: PathBuf,
    /// Confine every process (helixd, ledger, twin, this one) to these CPUs.
    #[arg(long, value_delimiter = ',')]
    pub cpus: Vec<usize>,
    #[command(flatten)]
    pub programs: ProgramArgs,
    #[command(flatten)]
    pub out: JsonArg,
}

impl CapacityArgs {
    /// The command-line flags that give these arguments.
    pub fn to_args(&self) -> Vec<String> {
        let mut v = vec!["--streams".to_owned(), list(&self.streams), "--rate".into(), self.rate.to_string()];
        v.extend(["--seconds".into(), self.seconds.to_string(), "--warmup".into(), self.warmup.to_string()]);
        v.extend(["--ledger-dir".into(), self.ledger_dir.display().to_string()]);
        v.extend(self.programs.to_args());
        v.extend(cpus_flag(&self.cpus));
        v.extend(self.out.to_args());
        v
    }

    /// The e2e run of `streams`.
    fn e2e(&self, streams: u32) -> E2eArgs {
        E2eArgs {
            streams,
            rate: self.rate,
            seconds: self.seconds,
            warmup: self.warmup,
            dir: self.ledger_dir.clone(),
            cpus: self.cpus.clone(),
            per_process: ProcessCpus::default(),
            programs: self.programs.clone(),
            out: JsonArg::default(),
        }
    }
}

/// What `helix-bench capacity --json` writes under `results`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    /// Samples per second per stream.
    pub rate_hz: f64,
    /// Seconds measured per count, and the warm-up before.
    pub seconds: f64,
    /// See `seconds`.
    pub warmup: f64,
    /// The CPUs every process was confined to.
    pub placement: Placement,
    /// The ledger's fsync interval, ms.
    pub fsync_ms: u64,
    /// helix-bench's reader's wait strategy.
    pub wait: String,
    /// What each count was held against.
    pub targets: Targets,
    /// Each count, in increasing order.
    pub counts: Vec<CountResult>,
    /// The largest count that meets the targets.
    pub largest: Option<u32>,
    /// That, and why each larger count fails, in words.
    pub conclusion: String,
}

/// Runs `helix-bench capacity`; `explicit_ns` is whether `--namespace` was
/// given. Each count runs in `namespace`, emptied after it.
pub fn run(a: CapacityArgs, explicit_ns: bool, namespace: Namespace, exe: &Path) -> Result<()> {
    let (load, started) = (load_average(), utc_now());
    let counts = judge::stream_counts(&a.streams).map_err(anyhow::Error::msg)?;
    a.e2e(counts[0]).check(explicit_ns, &namespace)?;
    if !(a.rate > 0.0 && a.rate.is_finite()) {
        bail!("--rate must be positive");
    }
    let first = Config::new(&a.e2e(counts[0]), namespace.clone(), exe);
    println!("machine: {}", Machine::detect());
    println!(
        "capacity: {} streams x {} Hz, {} s each after {} s warm-up, namespace {}, ledgers in {}, {}",
        list(&counts),
        a.rate,
        a.seconds,
        a.warmup,
        namespace,
        a.ledger_dir.display(),
        first.placement.describe()
    );
    // A signal ends the count's window (its programs stopped, its namespace
    // and folder removed); then nothing more runs.
    let signals = Signals::block(&[Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP])?;
    let targets = Targets::default();
    let mut done = Vec::new();
    for &n in &counts {
        println!("\n## {n} streams x {} Hz", a.rate);
        let cfg = Config::new(&a.e2e(n), namespace.clone(), exe);
        let stop = || signals.pending().unwrap_or(true);
        let measured = room_for(&cfg).and_then(|()| e2e::measure(&cfg, &mut |what| println!("  {what}"), &stop));
        let count = match measured {
            Ok(r) => CountResult::measured(r, &targets),
            Err(e) => CountResult::failed(n, format!("{e:#}")),
        };
        println!(
            "  {}",
            if count.verdict.meets { "meets the targets".into() } else { count.verdict.reasons.join("; ") }
        );
        done.push(count);
        if let Some(signal) = signals.wait(Duration::ZERO)? {
            bail!(
                "interrupted by {signal}: stopped the programs, removed namespace {namespace} and the scratch folder"
            );
        }
    }
    let results = Results {
        rate_hz: a.rate,
        seconds: a.seconds,
        warmup: a.warmup,
        placement: first.placement,
        fsync_ms: a.programs.fsync_ms,
        wait: wait_name(a.programs.wait).into(),
        largest: largest(&done),
        conclusion: conclusion(&done),
        targets,
        counts: done,
    };
    let ring = ring(&results).unwrap_or_default();
    println!("\n{}\n{ring}\n\n{}\n\n{}", table(&results), results.conclusion, goals_missed(&results));
    let ran = results.counts.iter().any(|c| c.error.is_none());
    a.out.write("capacity", load, started, results)?;
    if !ran {
        bail!("no stream count could be measured");
    }
    Ok(())
}

/// An error if `cfg.dir`'s file system has too little room for the ledger
/// of its run (at [`BYTES_PER_FRAME`], with 10 s to spare).
fn room_for(cfg: &Config) -> Result<()> {
    let secs = cfg.warmup.as_secs_f64() + cfg.duration.as_secs_f64() + 10.0;
    let need = cfg.rate() * secs * BYTES_PER_FRAME;
    let free = free_bytes(&cfg.dir).with_context(|| cfg.dir.display().to_string())? as f64;
    if free < need {
        bail!(
            "{}: {:.1} GB free, and the ledger of {} streams x {} Hz for {secs:.0} s may take {:.1} GB \
             ({BYTES_PER_FRAME} bytes a frame); free some room or give --ledger-dir on a larger disk",
            cfg.dir.display(),
            free / 1e9,
            cfg.streams,
            cfg.rate_hz,
            need / 1e9
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::report::{assert_reparses, Scenario};
    use helix::WaitStrategy;

    #[test]
    fn the_arguments_parse_back_to_themselves() {
        let all = CapacityArgs {
            streams: vec![100, 200],
            rate: 12.5,
            seconds: 1.0,
            warmup: 0.3,
            ledger_dir: "/tmp/c".into(),
            cpus: vec![0, 1],
            programs: ProgramArgs { wait: WaitStrategy::Spin, fsync_ms: 100, bin_dir: Some("/opt/helix".into()) },
            out: JsonArg { json: Some("/tmp/c.json".into()) },
        };
        let programs = ProgramArgs { bin_dir: None, ..all.programs.clone() };
        let few = CapacityArgs { cpus: vec![], programs, out: JsonArg::default(), ..all.clone() };
        assert_reparses([all, few].map(Scenario::Capacity));
    }

    #[test]
    fn the_stream_counts_default_to_issue_15s_and_parse_as_a_list() {
        let parsed = |args: &[&str]| match crate::tests::parse(args.iter().map(|s| s.to_string())) {
            crate::Cmd::Capacity(a) => a,
            _ => panic!("not capacity"),
        };
        let a = parsed(&["capacity"]);
        assert_eq!(a.streams, DEFAULT_STREAMS);
        assert_eq!((a.seconds, a.warmup, a.programs.fsync_ms), (60.0, 3.0, 10));
        assert_eq!(parsed(&["capacity", "--streams", "30000,10000"]).streams, [30_000, 10_000]);
        // Each count is one e2e run with the same settings.
        let e = parsed(&["capacity", "--cpus", "0,1", "--ledger-dir", "/srv"]).e2e(20_000);
        assert_eq!((e.streams, e.cpus, e.dir), (20_000, vec![0, 1], PathBuf::from("/srv")));
    }
}
