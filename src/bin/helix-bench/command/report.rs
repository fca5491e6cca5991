//! `helix-bench report`: every scenario for docs/PERFORMANCE.md, one after
//! the other, each writing its JSON (and the plot) into one folder, with
//! `report.json` listing them. The steps are the scenarios' own argument
//! structs, turned into command lines by their `to_args`, so a renamed flag
//! cannot silently break them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;

use helix::WaitStrategy;

use super::bridge::BridgeArgs;
use super::capacity::{CapacityArgs, DEFAULT_STREAMS};
use super::control::ControlArgs;
use super::e2e::{E2eArgs, ProcessCpus, ProgramArgs};
use super::fanin::{FaninArgs, DEFAULT_SIZES as DEFAULT_FANIN_SIZES};
use super::ledger::LedgerArgs;
use super::pingpong::{PingpongArgs, Transport, DEFAULT_SIZES};
use super::render::{BRIDGE_JSON, CAPACITY_JSON, CONTROL_JSON, FANIN_JSON, ONE_CPU_JSON};
use super::stream::{Mode, StreamArgs};
use crate::document::{utc_now, write_pretty, Index, JsonArg, Step};
use crate::machine::{cpu_steal_ticks, load_average, Machine};

#[derive(Args, Debug, Clone, PartialEq)]
pub struct ReportArgs {
    /// Folder for the JSON documents, report.json and latency.svg.
    #[arg(long)]
    pub dir: PathBuf,
    /// Pin (pingpong, stream, ledger) or confine (e2e) to these CPUs, e.g.
    /// 0,1 (default: not pinned). Pinned, the blocking pingpong transports
    /// run once more with both processes on the first CPU; with two or more
    /// CPUs, e2e runs twice: every process on all of them, then the ledger
    /// on the last CPU and every other process on the rest.
    #[arg(long, value_delimiter = ',')]
    pub cpus: Vec<usize>,
    /// Repetitions of the pingpong, stream and ledger measurements.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Seconds the e2e scenario measures.
    #[arg(long, default_value_t = 20.0)]
    pub e2e_seconds: f64,
    /// Stream counts the capacity scenario measures.
    #[arg(long, value_delimiter = ',', default_values_t = DEFAULT_STREAMS)]
    pub capacity_streams: Vec<u32>,
    /// Seconds the capacity scenario measures each count.
    #[arg(long, default_value_t = 60.0)]
    pub capacity_seconds: f64,
    /// Where the ledger scenarios write their ledgers.
    #[arg(long, default_value = "/var/tmp")]
    pub ledger_dir: PathBuf,
    /// Tiny counts everywhere: checks the pipeline in seconds; the figures
    /// mean nothing.
    #[arg(long)]
    pub quick: bool,
    /// Leave out `helix-bench bridge` (it needs helix-bridge built next to
    /// helix-bench, `cargo build --release -p helix-bridge`, and a
    /// nats-server).
    #[arg(long)]
    pub without_bridge: bool,
}

/// One scenario run by the report: its arguments.
#[derive(Debug, Clone, PartialEq)]
pub enum Scenario {
    Pingpong(PingpongArgs),
    Stream(StreamArgs),
    Fanin(FaninArgs),
    Ledger(LedgerArgs),
    E2e(E2eArgs),
    Capacity(CapacityArgs),
    Control(ControlArgs),
    Bridge(BridgeArgs),
}

impl Scenario {
    /// Its name, as the subcommand and in `report.json`.
    pub fn name(&self) -> &'static str {
        match self {
            Scenario::Pingpong(_) => "pingpong",
            Scenario::Stream(_) => "stream",
            Scenario::Fanin(_) => "fanin",
            Scenario::Ledger(_) => "ledger",
            Scenario::E2e(_) => "e2e",
            Scenario::Capacity(_) => "capacity",
            Scenario::Control(_) => "control",
            Scenario::Bridge(_) => "bridge",
        }
    }

    /// The command line that runs it: the subcommand and its flags.
    pub fn to_args(&self) -> Vec<String> {
        let flags = match self {
            Scenario::Pingpong(a) => a.to_args(),
            Scenario::Stream(a) => a.to_args(),
            Scenario::Fanin(a) => a.to_args(),
            Scenario::Ledger(a) => a.to_args(),
            Scenario::E2e(a) => a.to_args(),
            Scenario::Capacity(a) => a.to_args(),
            Scenario::Control(a) => a.to_args(),
            Scenario::Bridge(a) => a.to_args(),
        };
        std::iter::once(self.name().to_owned()).chain(flags).collect()
    }

    /// Its command line parsed back, as helix-bench would: the test that a
    /// renamed flag fails.
    #[cfg(test)]
    pub fn reparse(&self) -> Scenario {
        match crate::tests::parse(self.to_args()) {
            crate::Cmd::Pingpong(a) => Scenario::Pingpong(a),
            crate::Cmd::Stream(a) => Scenario::Stream(a),
            crate::Cmd::Fanin(a) => Scenario::Fanin(a),
            crate::Cmd::Ledger(a) => Scenario::Ledger(a),
            crate::Cmd::E2e(a) => Scenario::E2e(a),
            crate::Cmd::Capacity(a) => Scenario::Capacity(a),
            crate::Cmd::Control(a) => Scenario::Control(a),
            crate::Cmd::Bridge(a) => Scenario::Bridge(a),
            _ => panic!("{} parsed as another verb", self.name()),
        }
    }
}

/// Asserts that each scenario's command line parses back to it.
#[cfg(test)]
pub fn assert_reparses(scenarios: impl IntoIterator<Item = Scenario>) {
    for scenario in scenarios {
        assert_eq!(scenario.reparse(), scenario);
    }
}

/// The report's steps: each scenario with the name of its JSON document in
/// `dir`, in the order they run.
pub fn steps(a: &ReportArgs, dir: &Path) -> Vec<(Scenario, &'static str)> {
    let mut steps = pingpong_steps(a, dir);
    steps.extend(stream_steps(a, dir));
    steps.push((Scenario::Fanin(fanin_step(a, dir)), FANIN_JSON));
    steps.push((Scenario::Ledger(ledger_step(a, dir)), "ledger.json"));
    steps.extend(e2e_steps(a, dir));
    steps.push((Scenario::Control(control_step(a, dir)), CONTROL_JSON));
    if !a.without_bridge {
        steps.push((Scenario::Bridge(bridge_step(a, dir)), BRIDGE_JSON));
    }
    // Last: its ledgers write tens of GB, and the disk is still busy with
    // them for a while after (a control run right after it had its ledger
    // stall for half a second, 2026-12-03).
    steps.push((Scenario::Capacity(capacity_step(a, dir)), CAPACITY_JSON));
    steps
}

/// `full`, or `quick` with `--quick`.
fn pick<T>(a: &ReportArgs, full: T, quick: T) -> T {
    if a.quick {
        quick
    } else {
        full
    }
}

/// `--json dir/name`.
fn json(dir: &Path, name: &str) -> JsonArg {
    JsonArg { json: Some(dir.join(name)) }
}

/// Every transport at every size, with the plot; pinned, the blocking
/// transports again with both processes on the first CPU, where a wake-up
/// is a local switch, not an interrupt to another CPU.
fn pingpong_steps(a: &ReportArgs, dir: &Path) -> Vec<(Scenario, &'static str)> {
    let all = PingpongArgs {
        sizes: pick(a, DEFAULT_SIZES.to_vec(), vec![8, 64]),
        iters: pick(a, 20_000, 200),
        warmup: pick(a, 2_000, 20),
        transports: vec![],
        cpus: a.cpus.clone(),
        runs: a.runs,
        plot: Some(dir.join("latency.svg")),
        plot_size: None,
        out: json(dir, "pingpong.json"),
    };
    let one_cpu = a.cpus.first().map(|&first| PingpongArgs {
        sizes: vec![64],
        transports: vec![
            Transport::Helix(WaitStrategy::Park),
            Transport::Futex,
            Transport::Pipe,
            Transport::UnixStream,
            Transport::UnixDgram,
        ],
        cpus: vec![first, first],
        plot: None,
        out: json(dir, ONE_CPU_JSON),
        ..all.clone()
    });
    let mut steps = vec![(Scenario::Pingpong(all), "pingpong.json")];
    steps.extend(one_cpu.map(|p| (Scenario::Pingpong(p), ONE_CPU_JSON)));
    steps
}

/// One reader, spinning, gating and not, batched and not; then three
/// gating readers, which need more CPUs than two and park.
fn stream_steps(a: &ReportArgs, dir: &Path) -> [(Scenario, &'static str); 2] {
    let one = StreamArgs {
        frames: pick(a, 20_000_000, 20_000),
        sizes: pick(a, vec![64, 1024], vec![64]),
        batches: vec![1, 64],
        readers: vec![1],
        mode: vec![Mode::Gating, Mode::NonGating],
        gating: false,
        capacity: 4096,
        wait: WaitStrategy::Spin,
        cpus: a.cpus.clone(),
        runs: a.runs,
        out: json(dir, "stream.json"),
    };
    let three = StreamArgs {
        frames: pick(a, 10_000_000, 20_000),
        sizes: vec![64],
        batches: vec![64],
        readers: vec![3],
        mode: vec![Mode::Gating],
        wait: WaitStrategy::Park,
        out: json(dir, "stream-park.json"),
        ..one.clone()
    };
    [(Scenario::Stream(one), "stream.json"), (Scenario::Stream(three), "stream-park.json")]
}

/// Producers into a fan-in ring at every count and record size, and the
/// round trip through it beside its baselines.
fn fanin_step(a: &ReportArgs, dir: &Path) -> FaninArgs {
    FaninArgs {
        producers: vec![1, 2, 4, 8],
        sizes: pick(a, DEFAULT_FANIN_SIZES.to_vec(), vec![64, 65536]),
        records: pick(a, 2_000_000, 20_000),
        megabytes: pick(a, 256, 2),
        batch: 64,
        per_lane: 64,
        wait: WaitStrategy::Spin,
        rtt_sizes: vec![64],
        iters: pick(a, 20_000, 200),
        warmup: pick(a, 2_000, 20),
        cpus: a.cpus.clone(),
        runs: a.runs,
        out: json(dir, FANIN_JSON),
    }
}

/// The ledger's throughput at every size and fsync interval, its cost
/// to a paced writer, replay's throughput and the cost of signing.
fn ledger_step(a: &ReportArgs, dir: &Path) -> LedgerArgs {
    LedgerArgs {
        frames: pick(a, 2_000_000, 20_000),
        sizes: vec![32, 1024],
        fsync_ms: vec![1, 10, 100],
        runs: a.runs,
        latency_rate: 1_000_000,
        latency_secs: pick(a, 3.0, 0.2),
        replay_frames: pick(a, 5_000_000, 20_000),
        checkpoints: pick(a, 2000, 50),
        dir: a.ledger_dir.clone(),
        ledger_bin: None,
        cpus: a.cpus.clone(),
        out: json(dir, "ledger.json"),
    }
}

/// End to end with every process on all the CPUs; with two or more, again
/// with the ledger on a CPU of its own (the last) and everything else on
/// the others.
fn e2e_steps(a: &ReportArgs, dir: &Path) -> Vec<(Scenario, &'static str)> {
    let shared = E2eArgs {
        streams: pick(a, 10_000, 100),
        rate: 100.0,
        seconds: pick(a, a.e2e_seconds, 1.0),
        warmup: pick(a, 3.0, 0.5),
        dir: a.ledger_dir.clone(),
        cpus: a.cpus.clone(),
        per_process: ProcessCpus::default(),
        programs: ProgramArgs::default(),
        out: json(dir, "e2e.json"),
    };
    let apart = match a.cpus.as_slice() {
        [rest @ .., last] if !rest.is_empty() && !rest.contains(last) => Some(E2eArgs {
            cpus: rest.to_vec(),
            per_process: ProcessCpus { ledger_cpus: Some(vec![*last]), ..ProcessCpus::default() },
            out: json(dir, "e2e-ledger-apart.json"),
            ..shared.clone()
        }),
        _ => None,
    };
    let mut steps = vec![(Scenario::E2e(shared), "e2e.json")];
    steps.extend(apart.map(|e| (Scenario::E2e(e), "e2e-ledger-apart.json")));
    steps
}

/// e2e over the capacity's stream counts, every process on all the CPUs.
fn capacity_step(a: &ReportArgs, dir: &Path) -> CapacityArgs {
    CapacityArgs {
        streams: pick(a, a.capacity_streams.clone(), vec![100, 200]),
        rate: 100.0,
        seconds: pick(a, a.capacity_seconds, 1.0),
        warmup: pick(a, 3.0, 0.5),
        ledger_dir: a.ledger_dir.clone(),
        cpus: a.cpus.clone(),
        programs: ProgramArgs::default(),
        out: json(dir, CAPACITY_JSON),
    }
}

/// Commands through helixd with 10,000 streams flowing, every process on
/// all the CPUs.
fn control_step(a: &ReportArgs, dir: &Path) -> ControlArgs {
    ControlArgs {
        streams: pick(a, 10_000, 100),
        rate: 100.0,
        commands: pick(a, 2_000, 20),
        warmup: pick(a, 2.0, 0.3),
        dir: a.ledger_dir.clone(),
        cpus: a.cpus.clone(),
        programs: ProgramArgs::default(),
        out: json(dir, CONTROL_JSON),
    }
}

/// helix-bridge through JetStream, R1 and R3, 64 B and 1 KiB frames: a
/// minute or so in all (the programs found next to helix-bench, the
/// server as `helix-bench bridge` finds it).
fn bridge_step(a: &ReportArgs, dir: &Path) -> BridgeArgs {
    BridgeArgs {
        sizes: vec![64, 1024],
        replicas: vec![1, 3],
        frames: pick(a, 1_000_000, 20_000),
        rate: 100_000,
        seconds: pick(a, 5.0, 0.5),
        bridge_bin: None,
        nats_server: None,
        out: json(dir, BRIDGE_JSON),
    }
}

/// Runs `helix-bench report`; `namespace` is the `--namespace` given, if
/// any, passed on to every scenario.
pub fn run(a: ReportArgs, namespace: Option<&str>, exe: &Path) -> Result<()> {
    let started = utc_now();
    let load_before = load_average();
    let steal0 = cpu_steal_ticks();
    let t0 = Instant::now();
    if a.runs == 0 {
        bail!("--runs must be at least 1");
    }
    std::fs::create_dir_all(&a.dir).with_context(|| format!("creating {}", a.dir.display()))?;
    let dir = a.dir.canonicalize().with_context(|| format!("{}", a.dir.display()))?;
    let mut done = Vec::new();
    let mut failures = 0;
    for (scenario, json) in steps(&a, &dir) {
        // One after the other, each scenario cleans up its namespace.
        let ns = namespace.into_iter().flat_map(|ns| ["--namespace".to_owned(), ns.to_owned()]);
        let args: Vec<String> = ns.chain(scenario.to_args()).collect();
        let step = run_step(exe, scenario.name(), json, &args)?;
        failures += usize::from(step.error.is_some());
        done.push(step);
    }
    let index = Index {
        command: std::env::args().collect(),
        machine: Machine::detect(),
        started,
        finished: utc_now(),
        seconds: t0.elapsed().as_secs_f64(),
        load_before,
        steal_percent: steal0
            .zip(cpu_steal_ticks())
            .and_then(|((s0, t0), (s1, t1))| (t1 > t0).then(|| (s1 - s0) as f64 * 100.0 / (t1 - t0) as f64)),
        steps: done,
    };
    let path = dir.join("report.json");
    write_pretty(&path, &index)?;
    println!("\nwrote {} ({:.0} s)", path.display(), index.seconds);
    if failures > 0 {
        bail!("{failures} scenario(s) failed (recorded in {})", path.display());
    }
    Ok(())
}

/// Runs one scenario, `exe args`, as a process of its own.
fn run_step(exe: &Path, scenario: &str, json: &str, args: &[String]) -> Result<Step> {
    let mut command = vec![exe.display().to_string()];
    command.extend(args.iter().cloned());
    println!("\n## {}\n", command[1..].join(" "));
    let t = Instant::now();
    let status = Command::new(exe).args(args).status().with_context(|| format!("starting {scenario}"))?;
    let error = (!status.success()).then(|| format!("exited with {status}"));
    if let Some(error) = &error {
        eprintln!("helix-bench report: {scenario} {error}");
    }
    Ok(Step { scenario: scenario.into(), command, json: json.into(), seconds: t.elapsed().as_secs_f64(), error })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every step of a report, quick or not, pinned or not, is a command
    /// line that parses back to the arguments it was made from.
    #[test]
    fn every_step_parses_back_to_its_arguments() {
        for (quick, cpus) in [(false, vec![0, 1]), (true, vec![2, 3, 5]), (false, vec![]), (true, vec![4])] {
            let a = ReportArgs {
                dir: "/tmp/r".into(),
                cpus,
                runs: 2,
                e2e_seconds: 7.5,
                capacity_streams: vec![10, 20],
                capacity_seconds: 2.0,
                ledger_dir: "/var/tmp".into(),
                quick,
                without_bridge: false,
            };
            for (scenario, json) in steps(&a, Path::new("/tmp/r")) {
                assert_eq!(scenario.reparse(), scenario, "{json}");
            }
        }
    }

    #[test]
    fn pinned_to_two_cpus_the_report_adds_the_one_cpu_and_ledger_apart_runs() {
        let a = ReportArgs {
            dir: "/tmp/r".into(),
            cpus: vec![0, 1],
            runs: 3,
            e2e_seconds: 20.0,
            capacity_streams: DEFAULT_STREAMS.to_vec(),
            capacity_seconds: 60.0,
            ledger_dir: "/var/tmp".into(),
            quick: false,
            without_bridge: false,
        };
        let steps = steps(&a, Path::new("/tmp/r"));
        let files: Vec<&str> = steps.iter().map(|s| s.1).collect();
        assert_eq!(
            files,
            [
                "pingpong.json",
                ONE_CPU_JSON,
                "stream.json",
                "stream-park.json",
                FANIN_JSON,
                "ledger.json",
                "e2e.json",
                "e2e-ledger-apart.json",
                CONTROL_JSON,
                BRIDGE_JSON,
                CAPACITY_JSON
            ]
        );
        let line = |i: usize| steps[i].0.to_args().join(" ");
        assert!(line(1).contains("--cpus 0,0 --json /tmp/r/pingpong-one-cpu.json"), "{}", line(1));
        assert!(line(4).starts_with("fanin --producers 1,2,4,8 --sizes 8,64,1024,16384,65536"), "{}", line(4));
        assert!(line(7).contains("--cpus 0 --ledger-cpus 1"), "{}", line(7));
        assert!(line(7).ends_with("--json /tmp/r/e2e-ledger-apart.json"), "{}", line(7));
        let unpinned = super::steps(&ReportArgs { cpus: vec![], ..a.clone() }, Path::new("/tmp/r"));
        assert!(
            line(10).starts_with("capacity --streams 10000,20000,30000,50000 --rate 100 --seconds 60"),
            "{}",
            line(10)
        );
        assert!(line(9).starts_with("bridge --sizes 64,1024 --replicas 1,3 --frames 1000000"), "{}", line(9));
        assert_eq!(unpinned.len(), 9);
        let without = super::steps(&ReportArgs { without_bridge: true, ..a.clone() }, Path::new("/tmp/r"));
        assert_eq!(without.last().map(|s| s.1), Some(CAPACITY_JSON));
    }
}
