//! `helix-bench ledger`: the ledger's cost. How fast the real
//! `helix-ledger` records a ring (frames/s and MB/s written) at a given
//! frame size and fsync interval, and how much a gating ledger adds to the
//! writer's publish latency at a paced rate, against the same writer with
//! no reader; and how fast `helix-ledger replay` publishes recorded
//! frames into a ring (replay.rs).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use helix::shm::Namespace;
use helix::{Policy, Ring, RingOptions, RingView};

pub mod replay;
pub mod signing;

use super::{cpus_flag, list};
use crate::affinity::{pin_pid, pin_to_cpu};
use crate::document::{utc_now, JsonArg};
use crate::machine::{load_average, Machine};
use crate::shared::child::{ChildProcess, Signal};
use crate::stats::{fmt_ns, histogram, middle_by, Summary};

const RING: &str = "ledger-bench";

#[derive(Args, Debug, Clone, PartialEq)]
pub struct LedgerArgs {
    /// Frames per throughput measurement.
    #[arg(long, default_value_t = 2_000_000)]
    pub frames: u64,
    /// Frame sizes in bytes, comma separated.
    #[arg(long, value_delimiter = ',', default_values_t = [32usize, 1024])]
    pub sizes: Vec<usize>,
    /// fsync intervals in milliseconds, comma separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1u64, 10, 100])]
    pub fsync_ms: Vec<u64>,
    /// Repeat each measurement this many times and report the median.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Paced writer rate (frames/s) for the latency comparison; 0 skips it.
    #[arg(long, default_value_t = 1_000_000)]
    pub latency_rate: u64,
    /// Seconds of paced writing per latency measurement.
    #[arg(long, default_value_t = 3.0)]
    pub latency_secs: f64,
    /// Frames recorded and replayed at --pace max for the replay figure
    /// (40-byte telemetry); 0 skips replay.
    #[arg(long, default_value_t = 2_000_000)]
    pub replay_frames: u64,
    /// Checkpoints timed for the cost of signing (set against the
    /// throughput run at fsync 10 ms); 0 skips it.
    #[arg(long, default_value_t = 2000)]
    pub checkpoints: u64,
    /// Folder for the ledgers written (each removed after its run).
    #[arg(long, default_value = "/var/tmp")]
    pub dir: PathBuf,
    /// The helix-ledger program (default: beside this one).
    #[arg(long)]
    pub ledger_bin: Option<PathBuf>,
    /// Pin the writer to the first CPU and the ledger to the second, e.g. 0,1.
    #[arg(long, value_delimiter = ',')]
    pub cpus: Vec<usize>,
    #[command(flatten)]
    pub out: JsonArg,
}

impl LedgerArgs {
    /// The command-line flags that give these arguments.
    pub fn to_args(&self) -> Vec<String> {
        let mut v = vec!["--frames".to_owned(), self.frames.to_string()];
        v.extend(["--sizes".into(), list(&self.sizes), "--fsync-ms".into(), list(&self.fsync_ms)]);
        v.extend(["--runs".into(), self.runs.to_string(), "--latency-rate".into(), self.latency_rate.to_string()]);
        v.extend([
            "--latency-secs".into(),
            self.latency_secs.to_string(),
            "--replay-frames".into(),
            self.replay_frames.to_string(),
            "--checkpoints".into(),
            self.checkpoints.to_string(),
            "--dir".into(),
            self.dir.display().to_string(),
        ]);
        v.extend(self.ledger_bin.iter().flat_map(|p| ["--ledger-bin".into(), p.display().to_string()]));
        v.extend(cpus_flag(&self.cpus));
        v.extend(self.out.to_args());
        v
    }
}

/// One throughput measurement.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Throughput {
    /// Frames recorded.
    pub frames: u64,
    /// Payload bytes per frame.
    pub size: usize,
    /// The ledger's fsync interval.
    pub fsync_ms: u64,
    /// Seconds from the first frame published to the last one released by
    /// the ledger (written).
    pub seconds: f64,
    /// Bytes the ledger wrote (segment files).
    pub ledger_bytes: u64,
    /// fdatasync calls the ledger reported.
    pub syncs: Option<u64>,
    /// Times the writer waited for the ledger.
    pub writer_waits: u64,
    /// The ledger's CPU time (user + system) over the run, in seconds.
    #[serde(default)]
    pub ledger_cpu_s: Option<f64>,
}

impl Throughput {
    /// Frames per second.
    pub fn frames_per_sec(&self) -> f64 {
        self.frames as f64 / self.seconds
    }

    /// Ledger bytes written per second, in MB/s.
    pub fn mb_per_sec(&self) -> f64 {
        self.ledger_bytes as f64 / self.seconds / 1e6
    }
}

/// Publish latency of a paced writer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WriterLatency {
    /// Whether a gating ledger was attached.
    pub with_ledger: bool,
    /// Per-frame publish call latency.
    pub publish: Summary,
    /// Times the writer waited for the ledger.
    pub writer_waits: u64,
    /// Frames published.
    pub frames: u64,
}

/// One frame size and fsync interval over every run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ThroughputCase {
    /// Payload bytes per frame.
    pub size: usize,
    /// The ledger's fsync interval, ms.
    pub fsync_ms: u64,
    /// Each run.
    pub runs: Vec<Throughput>,
    /// The run with the median frames/s.
    pub median: Throughput,
    /// Its frames/s.
    pub frames_per_sec: f64,
    /// Its ledger MB/s.
    pub mb_per_sec: f64,
}

/// What `helix-bench ledger --json` writes under `results`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    /// Frames per throughput run.
    pub frames: u64,
    /// Repetitions of each throughput case.
    pub runs: usize,
    /// Where the ledgers were written.
    pub dir: String,
    /// The writer's CPU and the ledger's.
    pub cpus: Vec<usize>,
    /// Throughput per frame size and fsync interval.
    pub throughput: Vec<ThroughputCase>,
    /// The paced writer's rate for the latency comparison, frames/s.
    pub latency_rate: u64,
    /// Seconds measured per latency run.
    pub latency_secs: f64,
    /// Frame size of the latency comparison.
    pub latency_size: usize,
    /// Without, then with, the ledger (empty if skipped).
    pub writer_latency: Vec<WriterLatency>,
    /// Replay throughput and pace (absent if skipped, and in results
    /// written before replay existed).
    #[serde(default)]
    pub replay: Option<replay::ReplayResults>,
    /// The cost of signed checkpoints (absent in results written before
    /// they existed).
    #[serde(default)]
    pub signing: Option<signing::Signing>,
}

/// Runs `helix-bench ledger`.
pub fn run(a: LedgerArgs, namespace: Namespace, exe: &Path) -> Result<()> {
    let (load, started) = (load_average(), utc_now());
    if a.sizes.contains(&0) || a.fsync_ms.contains(&0) || a.frames == 0 {
        bail!("--frames, --sizes and --fsync-ms must be positive");
    }
    if a.latency_rate > 0 && !(a.latency_secs > 0.0 && a.latency_secs.is_finite()) {
        bail!("--latency-secs must be positive");
    }
    let ledger_bin = a.ledger_bin.clone().unwrap_or_else(|| exe.with_file_name("helix-ledger"));
    let dir = a.dir.join(format!("helix-bench-ledger-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let key = super::e2e::programs::signing_key(&ledger_bin, &dir)?;
    let setup = Setup { ledger_bin, dir: dir.clone(), namespace, cpus: a.cpus.clone(), key };
    println!("machine: {}", Machine::detect());
    println!(
        "ledger: {} frames per run, median of {} run(s), ledger in {}, {}",
        a.frames,
        a.runs,
        a.dir.display(),
        match a.cpus.first() {
            None => "not pinned".to_owned(),
            Some(cpu) => format!("writer on CPU {cpu}, ledger on the next"),
        }
    );
    let latency_size = a.sizes.first().copied().unwrap_or(32);
    let result = (|| -> Result<Results> {
        let throughput = measure_throughput(&a, &setup)?;
        let writer_latency = if a.latency_rate > 0 { measure_latency(&a, &setup, latency_size)? } else { vec![] };
        let replay = match a.replay_frames {
            0 => None,
            n => Some(replay::measure(&setup.namespace, &dir, n, a.runs)?),
        };
        // Against the run at the recorder's default fsync interval, if any.
        let base = throughput.iter().find(|c| c.fsync_ms == 10).or(throughput.first());
        let signing = match (a.checkpoints, base) {
            (0, _) | (_, None) => None,
            (n, Some(c)) => Some(signing::measure(&dir, &c.median, n, a.runs)?),
        };
        Ok(Results {
            frames: a.frames,
            runs: a.runs.max(1),
            dir: a.dir.display().to_string(),
            cpus: a.cpus.clone(),
            throughput,
            latency_rate: a.latency_rate,
            latency_secs: a.latency_secs,
            latency_size,
            writer_latency,
            replay,
            signing,
        })
    })();
    let _ = std::fs::remove_dir_all(&dir);
    a.out.write("ledger", load, started, result?)
}

/// Every size and fsync interval, each the median of its runs, printed.
fn measure_throughput(a: &LedgerArgs, setup: &Setup) -> Result<Vec<ThroughputCase>> {
    println!("{:>7} {:>8} {:>14} {:>10} {:>8} {:>13}", "size", "fsync", "frames/s", "MB/s", "fsyncs", "writer waits");
    let mut cases = Vec::new();
    for &size in &a.sizes {
        for &fsync_ms in &a.fsync_ms {
            let runs = (0..a.runs.max(1))
                .map(|_| throughput(setup, a.frames, size, fsync_ms).context("ledger throughput"))
                .collect::<Result<Vec<_>>>()?;
            let (_, m) = middle_by(&runs, Throughput::frames_per_sec).expect("at least one run");
            let m = m.clone();
            println!(
                "{:>5} B {:>5} ms {:>12.2} M {:>10.1} {:>8} {:>13}",
                size,
                fsync_ms,
                m.frames_per_sec() / 1e6,
                m.mb_per_sec(),
                m.syncs.map_or("?".into(), |s| s.to_string()),
                m.writer_waits
            );
            cases.push(ThroughputCase {
                size,
                fsync_ms,
                frames_per_sec: m.frames_per_sec(),
                mb_per_sec: m.mb_per_sec(),
                median: m,
                runs,
            });
        }
    }
    Ok(cases)
}

/// The paced writer's publish latency without, then with, a gating
/// ledger, printed with the difference.
fn measure_latency(a: &LedgerArgs, setup: &Setup, size: usize) -> Result<Vec<WriterLatency>> {
    let secs = Duration::from_secs_f64(a.latency_secs);
    println!("writer publish latency at {} frames/s of {size} B (batches of 100):", a.latency_rate);
    println!("{:>14} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7}", "", "p50", "p99", "p99.9", "p99.99", "max", "waits");
    let mut rows = Vec::new();
    for with_ledger in [false, true] {
        let r = writer_latency(setup, size, a.latency_rate, secs, with_ledger).context("writer latency")?;
        let s = &r.publish;
        let cells = [s.p50, s.p99, s.p999, s.p9999, s.max].map(|ns| format!(" {:>9}", fmt_ns(ns))).concat();
        let who = if with_ledger { "gating ledger" } else { "no reader" };
        println!("{who:>14}{cells} {:>7}", r.writer_waits);
        rows.push(r);
    }
    let (a0, b0) = (&rows[0].publish, &rows[1].publish);
    println!(
        "added by the ledger: p50 {:+} ns, p99 {:+} ns, p99.9 {:+} ns",
        b0.p50 as i64 - a0.p50 as i64,
        b0.p99 as i64 - a0.p99 as i64,
        b0.p999 as i64 - a0.p999 as i64
    );
    Ok(rows)
}

/// Where the ledger binary is and where it writes.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The `helix-ledger` program.
    pub ledger_bin: PathBuf,
    /// A folder for the ledgers (each run gets its own sub-folder, removed
    /// after it).
    pub dir: PathBuf,
    /// The namespace for the benchmark ring.
    pub namespace: Namespace,
    /// CPUs: the writer on the first, the ledger on the second.
    pub cpus: Vec<usize>,
    /// The key the ledger signs checkpoints with (`helix-ledger keygen`).
    pub key: PathBuf,
}

/// A started `helix-ledger` on the benchmark ring; killed and its folder
/// removed if dropped.
struct LedgerProcess {
    child: ChildProcess,
    dir: PathBuf,
}

impl LedgerProcess {
    fn start(setup: &Setup, ring: &RingView, run: &str, fsync_ms: u64) -> Result<LedgerProcess> {
        let dir = setup.dir.join(run);
        let _ = std::fs::remove_dir_all(&dir);
        let mut cmd = Command::new(&setup.ledger_bin);
        cmd.args(["--ring", RING, "--fsync-interval-ms", &fsync_ms.to_string(), "--key"])
            .arg(&setup.key)
            .arg("--dir")
            .arg(&dir)
            .env("HELIX_NAMESPACE", setup.namespace.as_str())
            .env("HELIX_LOG", "info")
            .env_remove("NOTIFY_SOCKET")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let child = ChildProcess::spawn("helix-ledger", &mut cmd)?;
        let mut p = LedgerProcess { child, dir };
        if let Some(&cpu) = setup.cpus.get(1) {
            pin_pid(p.child.pid(), cpu)?;
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ring.stats().readers.iter().any(|r| r.pid == p.child.pid() && r.alive) {
            if let Some(status) = p.child.try_wait()? {
                bail!("helix-ledger exited ({status}): {}", p.stderr());
            }
            if Instant::now() > deadline {
                bail!("helix-ledger did not attach within 30 s");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(p)
    }

    /// What it wrote to stderr, to its end (when it has exited).
    fn stderr(&mut self) -> String {
        let mut err = String::new();
        let _ = self.child.stderr.take().map(|mut e| e.read_to_string(&mut err));
        err
    }

    /// The ledger's released cursor on the ring.
    fn released(&self, ring: &RingView) -> u64 {
        ring.stats().readers.iter().find(|r| r.pid == self.child.pid()).map_or(0, |r| r.cursor)
    }

    /// Stops it (SIGTERM: it writes and syncs what it holds); returns the
    /// bytes it wrote and the fsync count from its last log line, and
    /// removes its folder.
    fn stop(mut self) -> Result<(u64, Option<u64>)> {
        self.child.signal(Signal::SIGTERM)?;
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            e.read_to_string(&mut err)?;
        }
        let status = self.child.wait()?;
        if !status.success() {
            bail!("helix-ledger exited with {status}: {err}");
        }
        let syncs = err
            .lines()
            .rev()
            .find_map(|l| l.split(" fsyncs").next().filter(|_| l.contains(" fsyncs")))
            .and_then(|s| s.rsplit(' ').next()?.parse().ok());
        Ok((dir_bytes(&self.dir), syncs))
    }
}

impl Drop for LedgerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// CPU time of process `pid`'s live threads so far, in seconds, to the
/// nanosecond (`/proc/PID/task/*/schedstat`: time on a CPU), where the
/// process's `stat` counts in ticks of 10 ms, longer than a short run.
fn task_cpu_seconds(pid: u32) -> Option<f64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let ns: u64 = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_ascii_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Some(ns as f64 / 1e9)
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |d| d.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
}

/// A block ring for frames of `size`, at most about 256 MiB.
fn bench_ring(ns: &Namespace, size: usize) -> Result<Ring> {
    let slot = (size + 16).next_power_of_two() as u64;
    let capacity = ((256u64 << 20) / slot).next_power_of_two().min(1 << 22) / 2;
    let opts = RingOptions {
        capacity,
        max_payload: size as u32,
        policy: Policy::Block,
        stall_timeout: Duration::from_secs(30),
        ..Default::default()
    };
    let _ = Ring::unlink(ns, RING);
    Ok(Ring::create(ns, RING, &opts)?)
}

/// Runs `measure` with a fresh benchmark ring for frames of `size`, and
/// removes the ring after.
fn with_ring<T>(setup: &Setup, size: usize, measure: impl FnOnce(&Ring, &RingView) -> Result<T>) -> Result<T> {
    let ns = &setup.namespace;
    let ring = bench_ring(ns, size)?;
    let result = RingView::attach(ns, RING).map_err(anyhow::Error::from).and_then(|view| measure(&ring, &view));
    drop(ring);
    let _ = Ring::unlink(ns, RING);
    result
}

/// Records `frames` frames of `size` bytes, published as fast as the
/// ledger takes them, with the ledger's fsync interval `fsync_ms`.
pub fn throughput(setup: &Setup, frames: u64, size: usize, fsync_ms: u64) -> Result<Throughput> {
    with_ring(setup, size, |ring, view| {
        let ledger = LedgerProcess::start(setup, view, &format!("tp-{size}-{fsync_ms}"), fsync_ms)?;
        if let Some(&cpu) = setup.cpus.first() {
            pin_to_cpu(cpu)?;
        }
        let mut w = ring.writer()?;
        let frame = vec![0x5au8; size];
        // Its CPU from here: what attaching cost is not the run's.
        let cpu0 = task_cpu_seconds(ledger.child.pid()).unwrap_or(0.0);
        let t0 = Instant::now();
        let mut seq = 1;
        while seq <= frames {
            let n = 64.min(frames - seq + 1);
            let mut claim = w.claim(n)?;
            for _ in 0..n {
                claim.push(&frame)?;
            }
            drop(claim);
            seq += n;
        }
        while ledger.released(view) <= frames {
            std::thread::sleep(Duration::from_micros(200));
        }
        let seconds = t0.elapsed().as_secs_f64();
        let writer_waits = view.stats().writer_waits;
        let ledger_cpu_s = task_cpu_seconds(ledger.child.pid()).map(|s| s - cpu0);
        let (ledger_bytes, syncs) = ledger.stop()?;
        Ok(Throughput { frames, size, fsync_ms, seconds, ledger_bytes, syncs, writer_waits, ledger_cpu_s })
    })
}

/// Publishes `rate` frames/s of `size` bytes for `duration` (in batches of
/// 100, paced by the clock) and records each frame's publish latency, with
/// or without a gating ledger (fsync every 10 ms) attached.
pub fn writer_latency(
    setup: &Setup,
    size: usize,
    rate: u64,
    duration: Duration,
    with_ledger: bool,
) -> Result<WriterLatency> {
    with_ring(setup, size, |ring, view| {
        let ledger =
            if with_ledger { Some(LedgerProcess::start(setup, view, &format!("lat-{size}"), 10)?) } else { None };
        if let Some(&cpu) = setup.cpus.first() {
            pin_to_cpu(cpu)?;
        }
        let mut w = ring.writer()?;
        let frame = vec![0x5au8; size];
        let mut hist: Histogram<u64> = histogram();
        let batch = 100u64;
        let period = Duration::from_nanos(batch * 1_000_000_000 / rate.max(1));
        let start = Instant::now();
        let warmup = start + duration / 10;
        let end = start + duration + duration / 10;
        let mut next = start;
        let mut frames = 0;
        while Instant::now() < end {
            for _ in 0..batch {
                let t = Instant::now();
                w.publish(&frame)?;
                if t >= warmup {
                    hist.record(t.elapsed().as_nanos() as u64)?;
                }
                frames += 1;
            }
            next += period;
            while Instant::now() < next {
                std::hint::spin_loop();
            }
        }
        let writer_waits = view.stats().writer_waits;
        if let Some(l) = ledger {
            while l.released(view) <= frames {
                std::thread::sleep(Duration::from_millis(1));
            }
            l.stop()?;
        }
        Ok(WriterLatency { with_ledger, publish: Summary::of(&hist), writer_waits, frames })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::report::{assert_reparses, Scenario};

    #[test]
    fn the_arguments_parse_back_to_themselves() {
        let all = LedgerArgs {
            frames: 20_000,
            sizes: vec![32, 1024],
            fsync_ms: vec![1, 100],
            runs: 1,
            latency_rate: 100_000,
            latency_secs: 0.2,
            replay_frames: 1000,
            checkpoints: 100,
            dir: "/tmp/l".into(),
            ledger_bin: Some("/opt/helix-ledger".into()),
            cpus: vec![0, 1],
            out: JsonArg { json: Some("/tmp/l.json".into()) },
        };
        let few = LedgerArgs { ledger_bin: None, cpus: vec![], out: JsonArg::default(), ..all.clone() };
        assert_reparses([all, few].map(Scenario::Ledger));
    }
}
