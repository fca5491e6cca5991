//! `helix-bench soak` (run by `tools/soak`): helixd's simulator with the
//! real helix-ledger and helix-twin and this program's reader, for minutes
//! on end. Every interval (a minute by default) one line per process: RSS,
//! CPU, and for the readers their lag and overruns; the ledger folder's
//! size and the room left. At the end it stops everything in order, runs
//! `helix-ledger verify`, prints a summary, and fails if a process's RSS
//! grew beyond the tolerance, a gating reader overran or was demoted, the
//! ledger has a gap or a missing frame, or it did not verify. The ledger
//! keeps at most `--keep-gib` (retention deletes the oldest segments an
//! anchor covers, and the soak anchors the head at every report, as an
//! operator exporting it would). Interrupted
//! (SIGINT, SIGTERM, SIGHUP), it stops the programs and removes its
//! namespace and folder all the same.

mod sample;
mod verdict;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::{Deserialize, Serialize};

use helix::shm::Namespace;
use helix::{ReadError, Reader, ReaderOptions, Start, WaitStrategy};

use super::capacity::BYTES_PER_FRAME;
use super::e2e::programs::Running;
use super::e2e::{self, Config, E2eArgs, Placement, ProcessCpus, ProgramArgs, TELEMETRY};
use crate::affinity::confine;
use crate::command::render::group;
use crate::document::{utc_now, JsonArg};
use crate::machine::{free_bytes, load_average, Machine};
use crate::shared::signal::{Signal, Signals};
use sample::{Interval, Snapshot, Watched};
use verdict::{failures, parse_recorded, parse_verify, ProcessEnd, Recorded, Verified};

/// helix-ledger's segment size (its default, 64 MiB): retention deletes
/// whole closed segments, so the folder exceeds its limit by up to one,
/// and the open one.
const SEGMENT_BYTES: f64 = (64u64 << 20) as f64;

#[derive(Args, Debug, Clone, PartialEq)]
pub struct SoakArgs {
    /// Minutes to run after the warm-up (fractions allowed).
    #[arg(long, default_value_t = 60.0)]
    pub minutes: f64,
    /// Simulated streams.
    #[arg(long, default_value_t = 10_000)]
    pub streams: u32,
    /// Samples per second per stream.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Where the scratch folder (configurations, logs, the ledger) goes.
    #[arg(long, default_value = "/var/tmp")]
    pub dir: PathBuf,
    /// Confine every process (helixd, ledger, twin, this one) to these CPUs.
    #[arg(long, value_delimiter = ',')]
    pub cpus: Vec<usize>,
    /// The ledger's fsync interval, ms.
    #[arg(long, default_value_t = 10)]
    pub fsync_ms: u64,
    /// The most the ledger folder keeps, GiB: the head is anchored at every
    /// report and retention deletes the oldest anchored segments past this
    /// (an hour at 10,000 x 100 Hz is about 170 GB). 0 keeps everything.
    #[arg(long, default_value_t = 16.0)]
    pub keep_gib: f64,
    /// Seconds between everything attached and the first reading (the RSS
    /// baseline).
    #[arg(long, default_value_t = 10.0)]
    pub warmup: f64,
    /// Seconds between reports.
    #[arg(long, default_value_t = 60.0)]
    pub every: f64,
    /// Growth allowed per process, from the first reading to the end, of
    /// its RSS outside shared memory (the rings' pages are bounded), MiB.
    #[arg(long, default_value_t = 8)]
    pub rss_growth_mib: u64,
    /// Folder holding helixd, helix-ledger and helix-twin (default: this
    /// program's).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    #[command(flatten)]
    pub out: JsonArg,
}

impl SoakArgs {
    /// The e2e configuration the soak starts its programs with.
    fn e2e(&self) -> E2eArgs {
        E2eArgs {
            streams: self.streams,
            rate: self.rate,
            seconds: self.minutes * 60.0,
            warmup: self.warmup,
            dir: self.dir.clone(),
            cpus: self.cpus.clone(),
            per_process: ProcessCpus::default(),
            programs: ProgramArgs { fsync_ms: self.fsync_ms, bin_dir: self.bin_dir.clone(), ..ProgramArgs::default() },
            out: JsonArg::default(),
        }
    }
}

/// What `helix-bench soak --json` writes under `results`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    pub streams: u32,
    pub rate_hz: f64,
    /// Minutes asked for, and seconds run after the warm-up.
    pub minutes: f64,
    pub seconds: f64,
    pub placement: Placement,
    /// The growth of RSS outside shared memory allowed per process, bytes.
    pub rss_tolerance: u64,
    /// Each report.
    pub intervals: Vec<Interval>,
    /// Each process at the end against its first reading.
    pub processes: Vec<ProcessEnd>,
    /// Frames helixd published in all.
    pub published: u64,
    /// `helix-ledger verify` of the ledger.
    pub verified: Verified,
    /// What helix-ledger says it recorded (None: its log did not say).
    pub recorded: Option<Recorded>,
    /// The most the ledger folder kept, GiB (None: everything).
    pub keep_gib: Option<f64>,
    /// Why the soak failed (empty: it passed).
    pub failures: Vec<String>,
}

/// Runs `helix-bench soak`; `explicit_ns` is whether `--namespace` was given.
pub fn run(a: SoakArgs, explicit_ns: bool, namespace: Namespace, exe: &Path) -> Result<()> {
    let (load, started) = (load_average(), utc_now());
    let e2e = a.e2e();
    e2e.check(explicit_ns, &namespace)?;
    if !(a.minutes > 0.0 && a.every > 0.0 && a.every.is_finite()) {
        bail!("--minutes and --every must be positive");
    }
    if !(a.keep_gib >= 0.0 && a.keep_gib.is_finite()) {
        bail!("--keep-gib must be 0 (keep everything) or more");
    }
    // Before any thread starts, so that every thread blocks them.
    let signals = Signals::block(&[Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP])?;
    let mut cfg = Config::new(&e2e, namespace, exe);
    cfg.ledger_keep_gib = (a.keep_gib > 0.0).then_some(a.keep_gib);
    println!("machine: {}", Machine::detect());
    println!(
        "soak: {} streams x {} Hz for {} min after {} s warm-up, a report every {} s, namespace {}, scratch in {}, {}",
        a.streams,
        a.rate,
        a.minutes,
        a.warmup,
        a.every,
        cfg.namespace,
        a.dir.display(),
        cfg.placement.describe()
    );
    let all = cfg.rate() * (a.warmup + a.minutes * 60.0) * BYTES_PER_FRAME;
    let need = cfg.ledger_keep_gib.map_or(all, |gib| all.min(gib * (1u64 << 30) as f64 + 2.0 * SEGMENT_BYTES));
    let free = free_bytes(&a.dir).with_context(|| a.dir.display().to_string())? as f64;
    if need > free {
        println!(
            "warning: the ledger may take about {:.0} GB ({BYTES_PER_FRAME} bytes a frame) and {} has {:.0} GB free; \
             the soak stops with an error once the growth it measures would not fit",
            need / 1e9,
            a.dir.display(),
            free / 1e9
        );
    }
    let scratch = e2e::prepare(&cfg)?;
    let outcome = soak(&a, &cfg, &scratch.dir, &signals);
    drop(scratch);
    let results = match outcome? {
        Ok(results) => results,
        Err(signal) => bail!("interrupted by {signal}: stopped every program, removed namespace {}", cfg.namespace),
    };
    summary(&results);
    let failed = !results.failures.is_empty();
    a.out.write("soak", load, started, results)?;
    if failed {
        bail!("the soak failed");
    }
    Ok(())
}

/// Runs the programs in `dir`: the results, or the signal that interrupted.
fn soak(a: &SoakArgs, cfg: &Config, dir: &Path, signals: &Signals) -> Result<Result<Results, Signal>> {
    let mut running = Running::start(cfg, dir, &mut |what| println!("  {what}"))?;
    // This program (its reader thread inherits it) where --cpus says.
    if !cfg.placement.reader.is_empty() {
        confine(0, &cfg.placement.reader)?;
    }
    let mut reader = ReaderThread::start(&cfg.namespace)?;
    let watched = [
        Watched { name: "helixd", pid: running.helixd.pid(), reader: false },
        Watched { name: "helix-ledger", pid: running.ledger.pid(), reader: true },
        Watched { name: "helix-twin", pid: running.twin.pid(), reader: true },
        Watched { name: "helix-bench", pid: std::process::id(), reader: true },
    ];
    println!("  all attached; warming up {} s", a.warmup);
    let warm = Instant::now() + Duration::from_secs_f64(a.warmup);
    if let Some(signal) = pause(signals, warm, || running.check().and_then(|()| reader.check()))? {
        return Ok(Err(signal));
    }
    let first = Snapshot::take(&watched, &running.view, &running.ledger_dir);
    let end = first.at + Duration::from_secs_f64(a.minutes * 60.0);
    let (mut last, mut intervals) = (Snapshot::take(&watched, &running.view, &running.ledger_dir), Vec::new());
    while last.at < end {
        // On a fixed schedule from the first snapshot: a late report (the
        // anchor, a slow machine) does not push the later ones back.
        let due = first.at + Duration::from_secs_f64(a.every * (intervals.len() + 1) as f64);
        let next = due.min(end);
        let mut max_lag = [0u64; 4];
        let interrupted = pause(signals, next, || {
            for (pid, lag) in running.view.lags() {
                if let Some(i) = watched.iter().position(|w| w.pid == pid) {
                    max_lag[i] = max_lag[i].max(lag);
                }
            }
            running.check()?;
            reader.check()
        })?;
        if let Some(signal) = interrupted {
            return Ok(Err(signal));
        }
        let now = Snapshot::take(&watched, &running.view, &running.ledger_dir);
        let mut interval = Interval::between(&watched, &last, &now, first.at, cfg.rate(), &max_lag);
        interval.free_bytes = free_bytes(&running.ledger_dir)?;
        if cfg.ledger_keep_gib.is_some() {
            anchor(&cfg.programs.ledger, &running.ledger_dir)?;
        }
        print!("{}", interval.lines(intervals.len() + 1));
        let growth =
            now.ledger_bytes.saturating_sub(last.ledger_bytes) as f64 / now.at.duration_since(last.at).as_secs_f64();
        // With a limit the folder grows at most to it (and two segments).
        let cap =
            cfg.ledger_keep_gib.map(|gib| gib * (1u64 << 30) as f64 + 2.0 * SEGMENT_BYTES - now.ledger_bytes as f64);
        room_left(growth, end.saturating_duration_since(now.at), cap, interval.free_bytes, &a.dir)?;
        intervals.push(interval);
        last = now;
    }
    let ends = ends(&watched, &first, &last);
    println!("  stopping helixd, letting the ledger catch up, stopping the twin and the ledger");
    drop(reader);
    let (published, recorded, verified) = match stop_and_verify(&mut running, cfg, signals)? {
        Ok(end) => end,
        Err(signal) => return Ok(Err(signal)),
    };
    let tolerance = a.rss_growth_mib << 20;
    Ok(Ok(Results {
        streams: a.streams,
        rate_hz: a.rate,
        minutes: a.minutes,
        seconds: last.at.duration_since(first.at).as_secs_f64(),
        placement: cfg.placement.clone(),
        rss_tolerance: tolerance,
        intervals,
        failures: failures(&ends, tolerance, &verified, recorded, published),
        processes: ends,
        published,
        verified,
        recorded,
        keep_gib: cfg.ledger_keep_gib,
    }))
}

/// The frames published, what the recorder says it recorded, verify's verdict.
type Ended = (u64, Option<Recorded>, Verified);

/// Stops the programs and verifies the ledger: the frames published, what
/// the recorder says it recorded, and verify's verdict; or the signal that
/// came meanwhile (a Ctrl-C reaches the programs too: then their failing
/// to stop, or verify's, is the interruption's doing).
fn stop_and_verify(running: &mut Running, cfg: &Config, signals: &Signals) -> Result<Result<Ended, Signal>> {
    let stopped = running.stop();
    if let Some(signal) = signals.wait(Duration::ZERO)? {
        return Ok(Err(signal));
    }
    let published = stopped?;
    let recorded = std::fs::read_to_string(running.ledger.log()).ok().as_deref().and_then(parse_recorded);
    println!("  helix-ledger verify");
    let verified = verify(&cfg.programs.ledger, &running.ledger_dir);
    if let Some(signal) = signals.wait(Duration::ZERO)? {
        return Ok(Err(signal));
    }
    Ok(Ok((published, recorded, verified?)))
}

/// Waits until `until`, calling `tick` every second (an error from it ends
/// the wait); the signal that came first, if one did.
fn pause(signals: &Signals, until: Instant, mut tick: impl FnMut() -> Result<()>) -> Result<Option<Signal>> {
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if let Some(signal) = signals.wait(left.min(Duration::from_secs(1)))? {
            return Ok(Some(signal));
        }
        tick()?;
        if left <= Duration::from_secs(1) {
            return Ok(None);
        }
    }
}

/// Each watched process from its first reading to its last.
fn ends(watched: &[Watched], first: &Snapshot, last: &Snapshot) -> Vec<ProcessEnd> {
    watched
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let entry = last.stats.readers.iter().find(|r| r.pid == w.pid).filter(|_| w.reader);
            ProcessEnd {
                name: w.name.into(),
                rss_start: first.memory[i].map_or(0, |m| m.private()),
                rss_end: last.memory[i].map_or(0, |m| m.private()),
                gating: entry.is_some_and(|r| r.gating || r.demoted),
                overruns: entry.map_or(0, |r| r.overruns),
                demoted: entry.is_some_and(|r| r.demoted),
            }
        })
        .collect()
}

/// An error if the ledger, growing `per_sec` bytes a second (but by no more
/// than `cap` bytes, if retention limits it), would fill the `free` bytes
/// left on the file system of `dir` in the time `left`.
fn room_left(per_sec: f64, left: Duration, cap: Option<f64>, free: u64, dir: &Path) -> Result<()> {
    // The time left, and a few seconds for the ledger to catch up at the end.
    let need = per_sec * (left.as_secs_f64() + 5.0);
    let need = cap.map_or(need, |cap| need.min(cap));
    if need > free as f64 {
        bail!(
            "the ledger grows {:.2} GB a minute: the rest of the soak needs about {:.1} GB and {} has {:.1} GB free \
             (give --dir on a larger disk, or fewer --minutes)",
            per_sec * 60.0 / 1e9,
            need / 1e9,
            dir.display(),
            free as f64 / 1e9
        );
    }
    Ok(())
}

/// `helix-ledger anchor DIR`: records the head as exported, so that
/// retention may delete what it covers.
fn anchor(ledger: &Path, dir: &Path) -> Result<()> {
    let out = Command::new(ledger).arg("anchor").arg("--note").arg("helix-bench soak").arg(dir).output()?;
    if !out.status.success() {
        bail!("helix-ledger anchor failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// `helix-ledger verify --json DIR`.
fn verify(ledger: &Path, dir: &Path) -> Result<Verified> {
    let out = Command::new(ledger).arg("verify").arg("--json").arg(dir).output().context("helix-ledger verify")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if stdout.trim().is_empty() {
        bail!("helix-ledger verify printed nothing ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    parse_verify(&stdout, TELEMETRY).map_err(anyhow::Error::msg)
}

/// The end: each process's RSS, the readers, the ledger, and why it fails.
fn summary(r: &Results) {
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    println!(
        "
summary: {:.1} min of {} streams x {} Hz",
        r.seconds / 60.0,
        r.streams,
        r.rate_hz
    );
    for p in &r.processes {
        let role = if p.gating { format!(", gating: {} overruns", p.overruns) } else { String::new() };
        let (start, end) = (mib(p.rss_start), mib(p.rss_end));
        println!(
            "  {:<13} private RSS {start:.1} MiB at the start, {end:.1} MiB at the end ({:+.1}){role}",
            p.name,
            end - start
        );
    }
    let v = &r.verified;
    let kept = if v.pruned { " kept (the oldest deleted once anchored)" } else { "" };
    println!(
        "  ledger: {}, {} frames{kept} of {} published, {} gaps ({} lost)",
        if v.ok { "verified".to_owned() } else { format!("VERIFY FAILED: {}", v.problem.as_deref().unwrap_or("")) },
        group(v.frames),
        group(r.published),
        v.gaps,
        group(v.lost)
    );
    if let Some(rec) = r.recorded {
        println!(
            "  helix-ledger recorded {} frames and {} gaps ({} lost) this run",
            group(rec.frames),
            rec.gaps,
            group(rec.lost)
        );
    }
    if r.failures.is_empty() {
        println!("PASS (private RSS growth allowed: {:.0} MiB per process)", mib(r.rss_tolerance));
    } else {
        println!("FAIL: {}", r.failures.join("; "));
    }
}

/// This program's non-gating reader of telemetry, on a thread of its own;
/// stopped and joined on drop.
struct ReaderThread {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<(), ReadError>>>,
}

impl ReaderThread {
    fn start(ns: &Namespace) -> Result<ReaderThread> {
        let options =
            ReaderOptions { name: "helix-bench".into(), gating: false, start: Start::Newest, wait: WaitStrategy::Park };
        let mut r = Reader::attach(ns, TELEMETRY, &options)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                match r.peek_timeout(Duration::from_millis(100)) {
                    Ok(frame) => drop(frame),
                    Err(ReadError::Timeout | ReadError::Overrun(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        });
        Ok(ReaderThread { stop, thread: Some(thread) })
    }

    /// An error if the reader has stopped reading.
    fn check(&mut self) -> Result<()> {
        if !self.thread.as_ref().is_some_and(JoinHandle::is_finished) {
            return Ok(());
        }
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(Err(e))) => Err(anyhow::Error::new(e).context("helix-bench's reader")),
            _ => bail!("helix-bench's reader stopped"),
        }
    }
}

impl Drop for ReaderThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soak_stops_when_the_ledger_would_not_fit_in_the_room_left() {
        // 6.7 GB a minute (10,000 x 100 Hz at 112 bytes a frame) for 59 minutes more.
        let per_sec = 1e6 * 112.0;
        let hour = Duration::from_secs(59 * 60);
        let e = room_left(per_sec, hour, None, 60_000_000_000, Path::new("/var/tmp")).unwrap_err().to_string();
        assert_eq!(
            e,
            "the ledger grows 6.72 GB a minute: the rest of the soak needs about 397.0 GB and /var/tmp has 60.0 GB \
             free (give --dir on a larger disk, or fewer --minutes)"
        );
        assert!(room_left(per_sec, hour, None, 400_000_000_000, Path::new("/var/tmp")).is_ok());
        assert!(room_left(per_sec, Duration::ZERO, None, 560_000_001, Path::new("/var/tmp")).is_ok());
        // Retention keeps the folder to 16 GiB: what it may still grow must fit.
        assert!(room_left(per_sec, hour, Some(17e9), 60_000_000_000, Path::new("/var/tmp")).is_ok());
        assert!(room_left(per_sec, hour, Some(17e9), 16_000_000_000, Path::new("/var/tmp")).is_err());
    }
}
