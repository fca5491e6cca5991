//! `helix-bench control`: commands through helixd's control path, with the
//! programs an installation runs (helixd's simulator, helix-ledger
//! recording `telemetry` and `control.log`, helix-twin; e2e's harness):
//!
//! - the round trip: a `set` sent to its answer on `control.acks`, this
//!   process waiting for the answer spinning and parked. Every command is
//!   audited on `control.log`, waits for the ledger to read its record,
//!   and is applied by the simulator before it is answered;
//! - command to effect, with the telemetry flowing: from the send to the
//!   first frame written under the command (the answer's `ring_seq`, its
//!   `ingest_ns`: the command is in effect), and to this reader receiving
//!   the stream's first sample that reflects it (`stream_seq`: it waits
//!   for the stream's next sample, up to one sampling period).
//!
//! Everything runs in a private namespace and a scratch folder that are
//! removed afterwards, whatever happens.

mod effect;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::{Deserialize, Serialize};

use helix::control::{Command, Control};
use helix::shm::Namespace;
use helix::WaitStrategy;

use super::cpus_flag;
use super::e2e::{self, programs::Running, E2eArgs, Placement, ProcessCpus, ProgramArgs};
pub use super::stream::wait_name;
use crate::document::{utc_now, JsonArg};
use crate::machine::{load_average, Machine};
use crate::shared::signal::{Signal, Signals};
use crate::stats::{fmt_ns, histogram, Summary};

pub use effect::Effect;

#[derive(Args, Debug, Clone, PartialEq)]
pub struct ControlArgs {
    /// Simulated streams flowing meanwhile.
    #[arg(long, default_value_t = 10_000)]
    pub streams: u32,
    /// Samples per second per stream.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Commands measured per round-trip wait and for command to effect.
    #[arg(long, default_value_t = 1000)]
    pub commands: u64,
    /// Seconds between everything attached and measuring.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Where the scratch folder (configurations, logs, the ledger) goes.
    #[arg(long, default_value = "/var/tmp")]
    pub dir: PathBuf,
    /// Confine every process (helixd, ledger, twin, this one) to these CPUs.
    #[arg(long, value_delimiter = ',')]
    pub cpus: Vec<usize>,
    #[command(flatten)]
    pub programs: ProgramArgs,
    #[command(flatten)]
    pub out: JsonArg,
}

impl ControlArgs {
    /// The command-line flags that give these arguments.
    pub fn to_args(&self) -> Vec<String> {
        let mut v = vec!["--streams".to_owned(), self.streams.to_string(), "--rate".into(), self.rate.to_string()];
        v.extend(["--commands".into(), self.commands.to_string(), "--warmup".into(), self.warmup.to_string()]);
        v.extend(["--dir".into(), self.dir.display().to_string()]);
        v.extend(self.programs.to_args());
        v.extend(cpus_flag(&self.cpus));
        v.extend(self.out.to_args());
        v
    }

    /// e2e's arguments for the same programs.
    fn e2e(&self) -> E2eArgs {
        E2eArgs {
            streams: self.streams,
            rate: self.rate,
            seconds: 1.0,
            warmup: self.warmup,
            dir: self.dir.clone(),
            cpus: self.cpus.clone(),
            per_process: ProcessCpus::default(),
            programs: self.programs.clone(),
            out: JsonArg::default(),
        }
    }
}

/// The parameters of a control run, as recorded in its JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Params {
    /// Simulated streams.
    pub streams: u32,
    /// Samples per second per stream.
    pub rate_hz: f64,
    /// Commands per measurement.
    pub commands: u64,
    /// Seconds of warm-up.
    pub warmup: f64,
    /// The ledger's fsync interval, ms.
    pub fsync_ms: u64,
    /// The CPUs each process was confined to.
    pub placement: Placement,
}

/// Send to answer, one wait strategy.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoundTrip {
    /// How this process waited for the answer: spin or park.
    pub wait: String,
    /// Commands answered accepted (all of them, or the run fails).
    pub commands: u64,
    /// Send to answer, ns.
    pub latency: Summary,
}

/// What `helix-bench control --json` writes under `results`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    /// The parameters.
    pub params: Params,
    /// Send to answer, spinning then parked.
    pub round_trip: Vec<RoundTrip>,
    /// Command to effect with the telemetry flowing.
    pub effect: Effect,
}

/// The answer waits measured, in order.
const WAITS: [WaitStrategy; 2] = [WaitStrategy::Spin, WaitStrategy::Park];

/// Runs `helix-bench control`; `explicit_ns` is whether `--namespace` was
/// given.
pub fn run(a: ControlArgs, explicit_ns: bool, namespace: Namespace, exe: &Path) -> Result<()> {
    let (load, started) = (load_average(), utc_now());
    if a.commands == 0 {
        bail!("--commands must be at least 1");
    }
    let e = a.e2e();
    e.check(explicit_ns, &namespace)?;
    // Before any thread starts (as e2e): a signal stops the measurement,
    // and the run stops the programs and removes its namespace and folder.
    let signals = Signals::block(&[Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP])?;
    // e2e's programs, helixd taking commands.
    let cfg = e2e::Config { control: true, ..e2e::Config::new(&e, namespace, exe) };
    println!("machine: {}", Machine::detect());
    println!(
        "control: {} commands per measurement, {} streams x {} Hz flowing, namespace {}, scratch in {}, {}",
        a.commands,
        a.streams,
        a.rate,
        cfg.namespace,
        a.dir.display(),
        cfg.placement.describe()
    );
    let stop = || signals.pending().unwrap_or(true);
    let scratch = e2e::prepare(&cfg)?;
    let measured = measure(&cfg, &scratch.dir, a.commands, &stop);
    drop(scratch);
    if let Some(signal) = signals.wait(Duration::ZERO)? {
        bail!(
            "interrupted by {signal}: stopped the programs, removed namespace {} and the scratch folder",
            cfg.namespace
        );
    }
    let (round_trip, effect) = measured.context("control")?;
    let params = Params {
        streams: a.streams,
        rate_hz: a.rate,
        commands: a.commands,
        warmup: a.warmup,
        fsync_ms: a.programs.fsync_ms,
        placement: cfg.placement.clone(),
    };
    a.out.write("control", load, started, Results { params, round_trip, effect })
}

/// Starts the programs, measures, and stops them.
fn measure(cfg: &e2e::Config, dir: &Path, commands: u64, stop: &dyn Fn() -> bool) -> Result<(Vec<RoundTrip>, Effect)> {
    let mut running = Running::start(cfg, dir, &mut |what| println!("  {what}"))?;
    if !cfg.placement.reader.is_empty() {
        crate::affinity::confine(0, &cfg.placement.reader)?;
    }
    println!("  all attached; warming up {:.1} s", cfg.warmup.as_secs_f64());
    std::thread::sleep(cfg.warmup);
    let mut round_trip = Vec::new();
    for wait in WAITS {
        running.check()?;
        let r = round_trips(Sender::connect(&cfg.namespace, wait, cfg.streams, stop)?, wait, commands)?;
        let l = &r.latency;
        println!(
            "round trip, send to answer, waiting {}: p50 {} p99 {} p99.9 {} max {} ({} commands)",
            r.wait,
            fmt_ns(l.p50),
            fmt_ns(l.p99),
            fmt_ns(l.p999),
            fmt_ns(l.max),
            r.commands
        );
        round_trip.push(r);
    }
    running.check()?;
    let tx = Sender::connect(&cfg.namespace, WaitStrategy::default(), cfg.streams, stop)?;
    let effect = effect::measure(&cfg.namespace, tx, commands, cfg.wait)?;
    effect.print();
    println!("  stopping helixd, letting the ledger catch up, stopping the twin and the ledger");
    running.stop()?;
    Ok((round_trip, effect))
}

/// What the measurements send: setpoints through a connection to helixd.
pub struct Sender<'a> {
    ctl: Control,
    streams: u32,
    stop: &'a dyn Fn() -> bool,
}

impl<'a> Sender<'a> {
    /// A connection whose `send` waits for answers with `wait`; commands
    /// go to `streams` streams in turn; `stop` says a signal came.
    fn connect(ns: &Namespace, wait: WaitStrategy, streams: u32, stop: &'a dyn Fn() -> bool) -> Result<Sender<'a>> {
        let ctl = Control::connect_waiting(ns, wait).context("connecting to helixd's control ring")?;
        Ok(Sender { ctl, streams, stop })
    }

    /// The `i`th command: a setpoint for stream `i % streams`; an error
    /// once a signal came.
    fn command(&mut self, i: u64) -> Result<Command> {
        if (self.stop)() {
            bail!("interrupted");
        }
        let stream = (i % u64::from(self.streams)) as u32;
        Ok(Command::set(self.ctl.next_request(), "", stream, (i % 100) as f64 + 0.5))
    }
}

/// `commands` setpoints one after the other, each waited for with `wait`.
fn round_trips(mut tx: Sender<'_>, wait: WaitStrategy, commands: u64) -> Result<RoundTrip> {
    let mut hist = histogram();
    for i in 0..commands {
        let cmd = tx.command(i)?;
        let t = Instant::now();
        let ack = tx.ctl.send(&cmd, Duration::from_secs(10))?;
        let ns = t.elapsed().as_nanos() as u64;
        if ack.outcome() != Some(Ok(())) {
            bail!("command {i} was not accepted: {:?}", ack.outcome());
        }
        hist.record(ns.max(1))?;
    }
    Ok(RoundTrip { wait: wait_name(wait).into(), commands, latency: Summary::of(&hist) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::report::{assert_reparses, Scenario};

    #[test]
    fn the_arguments_parse_back_to_themselves() {
        let line = "control --streams 100 --rate 50 --commands 20 --warmup 0.5 --dir /tmp/c --wait spin \
                    --fsync-ms 5 --bin-dir /opt/helix --cpus 0,1 --json /tmp/c.json";
        let crate::Cmd::Control(all) = crate::tests::parse(line.split_whitespace().map(String::from)) else {
            panic!("not control")
        };
        assert_eq!((all.streams, all.commands, all.programs.fsync_ms, &all.cpus[..]), (100, 20, 5, &[0, 1][..]));
        let few =
            ControlArgs { cpus: vec![], programs: ProgramArgs::default(), out: JsonArg::default(), ..all.clone() };
        assert_reparses([all, few].map(Scenario::Control));
    }
}
