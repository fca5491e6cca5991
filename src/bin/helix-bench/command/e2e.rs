//! End to end: the real programs as an installation runs them. helixd's
//! simulated HAL writes `telemetry`; helix-ledger records it (gating);
//! helix-twin models it and publishes alarms; helix-bench attaches as one
//! more reader. After a warm-up it measures, for the given duration:
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

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use helix::process::{now_ns, realtime_ns};
use helix::shm::{Namespace, SHM_DIR};
use helix::telemetry::{Sample, KIND_SAMPLE};
use helix::twin::{AlarmEvent, AlarmKind, ACTION_RAISE, KIND_ALARM};
use helix::{Frame, ReadError, Reader, ReaderOptions, RingView, Start, WaitStrategy};

use super::{histogram, Summary};

const TELEMETRY: &str = "telemetry";
const ALARMS: &str = "alarms";
/// How long each program gets to start, attach or stop.
const PATIENCE: Duration = Duration::from_secs(30);

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
}

/// The CPUs each process is confined to (an empty list: not confined).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// helixd (its simulated HAL writes the telemetry).
    pub helixd: Vec<usize>,
    /// helix-ledger.
    pub ledger: Vec<usize>,
    /// helix-twin.
    pub twin: Vec<usize>,
    /// helix-bench, whose reader the targets speak of.
    pub reader: Vec<usize>,
}

impl Placement {
    /// Every process confined to `cpus`.
    #[cfg(test)]
    pub fn all(cpus: &[usize]) -> Placement {
        Placement { helixd: cpus.to_vec(), ledger: cpus.to_vec(), twin: cpus.to_vec(), reader: cpus.to_vec() }
    }

    /// Whether every process has the same CPUs.
    pub fn shared(&self) -> bool {
        [&self.ledger, &self.twin, &self.reader].iter().all(|c| **c == self.helixd)
    }

    /// In words: "every process on CPUs 0,1", "not confined", or each
    /// process's CPUs.
    pub fn describe(&self) -> String {
        let cpus = |c: &[usize]| match c {
            [] => "any CPU".to_owned(),
            [one] => format!("CPU {one}"),
            many => format!("CPUs {}", many.iter().map(usize::to_string).collect::<Vec<_>>().join(",")),
        };
        if self.shared() {
            return if self.helixd.is_empty() {
                "not confined to CPUs".into()
            } else {
                format!("every process on {}", cpus(&self.helixd))
            };
        }
        // Group the processes sharing a CPU set, in a fixed order.
        let mut groups: Vec<(&[usize], Vec<&str>)> = Vec::new();
        for (name, set) in [
            ("helixd", &self.helixd),
            ("helix-ledger", &self.ledger),
            ("helix-twin", &self.twin),
            ("helix-bench", &self.reader),
        ] {
            match groups.iter_mut().find(|(c, _)| *c == set.as_slice()) {
                Some((_, names)) => names.push(name),
                None => groups.push((set, vec![name])),
            }
        }
        groups.iter().map(|(c, names)| format!("{} on {}", names.join(", "), cpus(c))).collect::<Vec<_>>().join("; ")
    }
}

impl Config {
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

/// How far a reader was behind the writer, sampled every 10 ms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lag {
    /// Samples taken.
    pub samples: u64,
    /// Median frames behind.
    pub p50_frames: u64,
    /// 99th percentile frames behind.
    pub p99_frames: u64,
    /// Most frames behind.
    pub max_frames: u64,
    /// `p50_frames` as time at the configured rate, ns.
    pub p50_ns: u64,
    /// `p99_frames` as time, ns.
    pub p99_ns: u64,
    /// `max_frames` as time, ns.
    pub max_ns: u64,
}

/// One reader of `telemetry` over the measured window.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReaderResult {
    /// Process: helix-bench, helix-ledger or helix-twin.
    pub name: String,
    /// Whether it gates helixd's writer.
    pub gating: bool,
    /// Frames it consumed in the window.
    pub frames: u64,
    /// `frames` per second.
    pub frames_per_sec: f64,
    /// Overrun events in the window.
    pub overruns: u64,
    /// Frames lost to overruns in the window.
    pub lost: u64,
    /// How far behind helixd it was.
    pub lag: Option<Lag>,
    /// What `latency` measures, and how.
    pub latency_method: String,
    /// The latency, ns (none if nothing was measured).
    pub latency: Option<Summary>,
}

/// A process's CPU use over the window.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessCpu {
    /// The program.
    pub process: String,
    /// Percent of one CPU (user + system, all threads).
    pub percent: f64,
}

/// The offset used to put CLOCK_MONOTONIC times on CLOCK_REALTIME.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClockOffset {
    /// realtime - monotonic at the start of the window, ns.
    pub offset_ns: i64,
    /// Half the time the paired clock readings took: the offset's error
    /// bound, ns.
    pub uncertainty_ns: u64,
    /// How much the offset changed by the end of the window (NTP slewing or
    /// a clock step), ns.
    pub drift_ns: i64,
}

/// The ledger after the run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LedgerCheck {
    /// Whether every record and hash verified.
    pub verified: bool,
    /// The first problem, if not.
    pub problem: Option<String>,
    /// Segment files.
    pub segments: u64,
    /// Records of all types.
    pub records: u64,
    /// FRAME records of the telemetry ring.
    pub frames: u64,
    /// GAP records.
    pub gaps: u64,
    /// Sequences inside GAP records.
    pub lost: u64,
    /// Frames helixd published in all.
    pub published: u64,
    /// The final chain hash, hex.
    pub hash: String,
    /// Bytes of segment files.
    pub bytes: u64,
    /// Frames of the window whose `recv_ns` came out before their
    /// converted `ingest_ns` (counted as 1 ns): `recv_ns` is read just
    /// before the batch, so a frame published between that clock read and
    /// the read itself lands here, as does the offset's error.
    pub negative: u64,
    /// The most negative of those, ns (0 if none).
    pub most_negative_ns: u64,
}

/// What `helix-bench e2e --json` writes under `results`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    /// Simulated streams.
    pub streams: u32,
    /// Samples per second per stream.
    pub rate_hz: f64,
    /// Seconds measured.
    pub seconds: f64,
    /// Seconds of warm-up before.
    pub warmup: f64,
    /// The CPUs each process was confined to.
    pub placement: Placement,
    /// Telemetry ring slots.
    pub capacity: u64,
    /// The ledger's fsync interval, ms.
    pub fsync_ms: u64,
    /// helix-bench's reader's wait strategy.
    pub wait: String,
    /// How often the twin reads telemetry while it flows, ms (its
    /// `poll_interval_ms`).
    pub twin_poll_ms: u64,
    /// Frames helixd published in the window.
    pub published: u64,
    /// `published` per second.
    pub frames_per_sec: f64,
    /// Times helixd waited for a gating reader in the window.
    pub writer_waits: u64,
    /// Each reader.
    pub readers: Vec<ReaderResult>,
    /// Each process's CPU use.
    pub cpu: Vec<ProcessCpu>,
    /// The clock offset used for the ledger's latency.
    pub clock: ClockOffset,
    /// Alarm events helix-bench received in the window.
    pub alarm_events: u64,
    /// The ledger, verified after the run.
    pub ledger: LedgerCheck,
}

impl Results {
    /// The reader named `name`.
    pub fn reader(&self, name: &str) -> Option<&ReaderResult> {
        self.readers.iter().find(|r| r.name == name)
    }
}

/// The scratch folder and the namespace's shared-memory files, removed on
/// drop.
struct Scratch {
    dir: PathBuf,
    ns: Namespace,
}

impl Scratch {
    fn remove_rings(&self) {
        let prefix = format!("{}.", self.ns.as_str());
        if let Ok(d) = std::fs::read_dir(SHM_DIR) {
            for e in d.flatten() {
                if e.file_name().to_string_lossy().starts_with(&prefix) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        self.remove_rings();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A started program; killed and reaped on drop unless stopped.
struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn start(name: &'static str, mut cmd: Command, scratch: &Path, cpus: &[usize]) -> io::Result<Proc> {
        let log = scratch.join(format!("{name}.log"));
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(File::create(&log)?).env_remove("NOTIFY_SOCKET");
        super::confine_command(&mut cmd, cpus);
        let program = cmd.get_program().to_string_lossy().into_owned();
        let child = cmd.spawn().map_err(|e| io::Error::new(e.kind(), format!("starting {program}: {e}")))?;
        Ok(Proc { name, child, log })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last lines of its log.
    fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = File::open(&self.log) {
            let len = f.metadata().map_or(0, |m| m.len());
            let _ = f.seek(SeekFrom::Start(len.saturating_sub(2000)));
            let _ = f.read_to_string(&mut text);
        }
        let lines: Vec<&str> = text.lines().rev().take(5).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join(" / ")
    }

    /// An error if it has exited.
    fn check(&mut self) -> io::Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => Err(io::Error::other(format!("{} exited ({status}): {}", self.name, self.log_tail()))),
        }
    }

    /// SIGTERM, then waits (SIGKILL after `PATIENCE`).
    fn stop(mut self) -> io::Result<ExitStatus> {
        // SAFETY: signalling our own child, which has not been reaped (we
        // hold it), so the pid is still ours.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    return Err(io::Error::other(format!("{} exited ({status}): {}", self.name, self.log_tail())));
                }
                return Ok(status);
            }
            if Instant::now() > deadline {
                return Err(io::Error::other(format!("{} did not stop within {PATIENCE:?} of SIGTERM", self.name)));
            }
            thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Waits until `ready` holds, failing if one of `procs` exits or
/// `PATIENCE` passes.
fn wait_for(what: &str, procs: &mut [&mut Proc], mut ready: impl FnMut() -> bool) -> io::Result<()> {
    let deadline = Instant::now() + PATIENCE;
    while !ready() {
        for p in procs.iter_mut() {
            p.check()?;
        }
        if Instant::now() > deadline {
            return Err(io::Error::other(format!("{what} within {PATIENCE:?}")));
        }
        thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// (realtime - monotonic, half the reading's duration): the best of a few
/// paired readings.
fn clock_offset() -> (i64, u64) {
    (0..16)
        .map(|_| {
            let m1 = now_ns();
            let r = realtime_ns();
            let m2 = now_ns();
            (r as i64 - (m1 / 2 + m2 / 2) as i64, (m2 - m1).div_ceil(2))
        })
        .min_by_key(|&(_, err)| err)
        .expect("sixteen readings")
}

fn helixd_config(cfg: &Config) -> String {
    format!(
        r#"# helix-bench e2e: a private namespace, helixd's default rings and simulator.
namespace = "{ns}"
status_interval_ms = 2000
sweep_interval_ms = 1000

[[ring]]
name = "telemetry"
max_payload = 48
capacity = {cap}
policy = "block"
stall_timeout_ms = 2000
max_readers = 32
mode = 0o600

[[ring]]
name = "twin.state"
preset = "s"
capacity = 65536
policy = "overwrite"
mode = 0o600

[[ring]]
name = "alarms"
preset = "s"
capacity = 16384
policy = "block"
stall_timeout_ms = 2000
mode = 0o600

[[source]]
kind = "sim"
ring = "telemetry"
streams = {streams}
rate_hz = {rate:?}
seed = 1
"#,
        ns = cfg.namespace.as_str(),
        cap = cfg.capacity(),
        streams = cfg.streams,
        rate = cfg.rate_hz,
    )
}

/// The twin's embedded default with this run's namespace and stream count.
fn twin_config(cfg: &Config) -> io::Result<String> {
    let default = crate::twin_config::DEFAULT_CONFIG;
    if !default.contains("\nstreams = 10000\n") {
        return Err(io::Error::other("the twin's default configuration no longer says `streams = 10000`"));
    }
    Ok(format!(
        "namespace = \"{}\"\n{}",
        cfg.namespace.as_str(),
        default.replace("\nstreams = 10000\n", &format!("\nstreams = {}\n", cfg.streams))
    ))
}

/// What helix-bench's reader threads saw in the window.
struct Seen {
    frames: u64,
    overruns: u64,
    lost: u64,
    hist: Histogram<u64>,
}

/// Reads `r` until `t1`. Of the frames received in `[t0, t1)`, `classify`
/// picks those that count (`Some`) and gives the ingest time each one's
/// latency is measured from (`Some(Some(ns))`); overruns count from `t0`.
fn read_until(
    mut r: Reader,
    t0: u64,
    t1: u64,
    mut classify: impl FnMut(&Frame<'_>) -> Option<Option<u64>>,
) -> io::Result<Seen> {
    let mut seen = Seen { frames: 0, overruns: 0, lost: 0, hist: histogram() };
    loop {
        let now = now_ns();
        if now >= t1 {
            return Ok(seen);
        }
        let frame = match r.peek_timeout(Duration::from_nanos((t1 - now).min(100_000_000))) {
            Ok(f) => f,
            Err(ReadError::Timeout) => continue,
            Err(ReadError::Overrun(o)) => {
                if now_ns() >= t0 {
                    seen.overruns += 1;
                    seen.lost += o.lost;
                }
                continue;
            }
            Err(e) => return Err(io::Error::other(e)),
        };
        let counted = classify(&frame);
        let at = now_ns();
        drop(frame);
        let Some(since) = counted else { continue };
        if (t0..t1).contains(&at) {
            seen.frames += 1;
            if let Some(since) = since {
                seen.hist.record(at.saturating_sub(since).max(1)).map_err(io::Error::other)?;
            }
        }
    }
}

/// Reads `telemetry` until `t1`, recording ingest-to-receipt latency of
/// frames received in `[t0, t1)`.
fn read_telemetry(r: Reader, t0: u64, t1: u64) -> io::Result<Seen> {
    read_until(r, t0, t1, |frame| {
        let sample = (frame.kind() == KIND_SAMPLE).then(|| frame.read::<Sample>().ok()).flatten();
        Some(sample.map(|s| s.ingest_ns))
    })
}

/// Reads `alarms` until `t1`, recording ingest-to-receipt latency of the
/// events received in `[t0, t1)` whose time is a sample's `ingest_ns`
/// (every event but a stale raise, timed by the twin's own clock).
fn read_alarms(r: Reader, t0: u64, t1: u64) -> io::Result<Seen> {
    read_until(r, t0, t1, |frame| {
        let ev = (frame.kind() == KIND_ALARM).then(|| frame.read::<AlarmEvent>().ok()).flatten()?;
        let stale_raise = ev.rule == AlarmKind::Stale.number() && ev.action == ACTION_RAISE;
        Some((!stale_raise).then_some(ev.time_ns))
    })
}

/// Records the lag of the readers of `pids` now, from the reader table
/// alone ([`RingView::lags`]: a full snapshot reads every reader's
/// `/proc/PID/stat`, and scheduler traces showed those snapshots holding
/// the measured reader's CPU while it waited).
fn record_lags(view: &RingView, pids: [u32; 3], lag: &mut [Histogram<u64>; 3]) -> io::Result<()> {
    let lags = view.lags();
    for (h, pid) in lag.iter_mut().zip(pids) {
        if let Some(&(_, l)) = lags.iter().find(|&&(p, _)| p == pid) {
            h.record(l).map_err(io::Error::other)?;
        }
    }
    Ok(())
}

/// One reader entry's counters.
#[derive(Clone, Copy, Default)]
struct Counters {
    frames: u64,
    overruns: u64,
    lost: u64,
}

/// The counters of `pid`'s reader entry in one snapshot (the same one the
/// writer's count comes from, so the deltas are consistent).
fn counters(stats: &helix::RingStats, pid: u32) -> Counters {
    stats.readers.iter().find(|r| r.pid == pid).map_or_else(Counters::default, |r| Counters {
        frames: r.frames,
        overruns: r.overruns,
        lost: r.lost,
    })
}

fn lag_of(h: &Histogram<u64>, rate: f64) -> Option<Lag> {
    if h.is_empty() {
        return None;
    }
    let ns = |frames: u64| (frames as f64 * 1e9 / rate.max(1.0)) as u64;
    let (p50, p99, max) = (h.value_at_quantile(0.5), h.value_at_quantile(0.99), h.max());
    Some(Lag {
        samples: h.len(),
        p50_frames: p50,
        p99_frames: p99,
        max_frames: max,
        p50_ns: ns(p50),
        p99_ns: ns(p99),
        max_ns: ns(max),
    })
}

/// Runs the scenario; `progress` is told what is happening.
pub fn run(cfg: &Config, progress: &mut dyn FnMut(&str)) -> io::Result<Results> {
    if cfg.streams == 0 || !(cfg.rate_hz > 0.0 && cfg.rate_hz.is_finite()) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "streams and rate must be positive"));
    }
    for p in [&cfg.programs.helixd, &cfg.programs.ledger, &cfg.programs.twin] {
        if !p.is_file() {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("{}: no such program", p.display())));
        }
    }
    let prefix = format!("{}.", cfg.namespace.as_str());
    let taken = std::fs::read_dir(SHM_DIR)?.flatten().any(|e| e.file_name().to_string_lossy().starts_with(&prefix));
    if taken {
        return Err(io::Error::other(format!(
            "namespace {} already has files in {SHM_DIR}: e2e needs a namespace of its own",
            cfg.namespace
        )));
    }
    let dir = cfg.dir.join(format!("helix-bench-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
    let scratch = Scratch { dir, ns: cfg.namespace.clone() };
    let result = run_in(cfg, &scratch.dir, progress);
    scratch.remove_rings();
    result
}

fn run_in(cfg: &Config, dir: &Path, progress: &mut dyn FnMut(&str)) -> io::Result<Results> {
    let ns = &cfg.namespace;
    let helixd_toml = dir.join("helix.toml");
    std::fs::write(&helixd_toml, helixd_config(cfg))?;
    let twin_toml = dir.join("twin.toml");
    let twin_text = twin_config(cfg)?;
    let twin_poll = crate::twin_config::TwinConfig::parse(&twin_text, &twin_toml)
        .map_err(|e| io::Error::other(e.to_string()))?
        .poll_interval;
    std::fs::write(&twin_toml, twin_text)?;
    let ledger_dir = dir.join("ledger");

    progress(&format!("starting helixd ({} streams x {} Hz)", cfg.streams, cfg.rate_hz));
    let mut helixd = {
        let mut c = Command::new(&cfg.programs.helixd);
        c.arg("--config").arg(&helixd_toml);
        Proc::start("helixd", c, dir, &cfg.placement.helixd)?
    };
    let mut view = None;
    wait_for("helixd did not start writing telemetry", &mut [&mut helixd], || {
        if view.is_none() {
            view = RingView::attach(ns, TELEMETRY).ok();
        }
        view.as_ref().is_some_and(|v| v.stats().published > 0)
            && RingView::attach(ns, ALARMS).is_ok()
            && RingView::attach(ns, "twin.state").is_ok()
    })?;
    let view = view.expect("attached above");
    let attached = |pid: u32| view.stats().readers.iter().any(|r| r.pid == pid && r.alive);

    progress("starting helix-ledger");
    let mut ledger = {
        let mut c = Command::new(&cfg.programs.ledger);
        c.args(["--ring", TELEMETRY, "--fsync-interval-ms", &cfg.fsync_ms.to_string(), "--dir"])
            .arg(&ledger_dir)
            .env("HELIX_NAMESPACE", ns.as_str());
        Proc::start("helix-ledger", c, dir, &cfg.placement.ledger)?
    };
    let ledger_pid = ledger.pid();
    wait_for("helix-ledger did not attach", &mut [&mut helixd, &mut ledger], || attached(ledger_pid))?;

    progress("starting helix-twin");
    let mut twin = {
        let mut c = Command::new(&cfg.programs.twin);
        c.arg("--config").arg(&twin_toml);
        Proc::start("helix-twin", c, dir, &cfg.placement.twin)?
    };
    let twin_pid = twin.pid();
    wait_for("helix-twin did not attach", &mut [&mut helixd, &mut ledger, &mut twin], || attached(twin_pid))?;

    // helix-bench's own readers, on threads of this process.
    if !cfg.placement.reader.is_empty() {
        super::pin_pid_set(0, &cfg.placement.reader)?;
    }
    let me = std::process::id();
    let tel_reader = Reader::attach(
        ns,
        TELEMETRY,
        &ReaderOptions { name: "helix-bench".into(), gating: false, start: Start::Newest, wait: cfg.wait },
    )
    .map_err(io::Error::other)?;
    let alarm_reader = Reader::attach(
        ns,
        ALARMS,
        &ReaderOptions { name: "helix-bench".into(), gating: false, start: Start::Newest, wait: WaitStrategy::Park },
    )
    .map_err(io::Error::other)?;
    let t0 = now_ns() + cfg.warmup.as_nanos() as u64;
    let t1 = t0 + cfg.duration.as_nanos() as u64;
    let tel = thread::spawn(move || read_telemetry(tel_reader, t0, t1));
    let alarms = thread::spawn(move || read_alarms(alarm_reader, t0, t1));
    progress(&format!(
        "all attached; warming up {:.1} s, then measuring {:.1} s",
        cfg.warmup.as_secs_f64(),
        cfg.duration.as_secs_f64()
    ));

    // The window: counters, CPU and clock offset at both ends, lag between.
    let pids = [("helixd", helixd.pid()), ("helix-ledger", ledger_pid), ("helix-twin", twin_pid), ("helix-bench", me)];
    thread::sleep(Duration::from_nanos(t0.saturating_sub(now_ns())));
    let stats0 = view.stats();
    let (offset, uncertainty) = clock_offset();
    let cpu0: Vec<Option<f64>> = pids.iter().map(|&(_, p)| super::cpu_seconds(p)).collect();
    let c0: Vec<Counters> = [ledger_pid, twin_pid].iter().map(|&p| counters(&stats0, p)).collect();
    let wall0 = Instant::now();
    let mut lag = [histogram(), histogram(), histogram()];
    let lag_pids = [me, ledger_pid, twin_pid];
    while now_ns() < t1 {
        record_lags(&view, lag_pids, &mut lag)?;
        for p in [&mut helixd, &mut ledger, &mut twin] {
            p.check()?;
        }
        thread::sleep(Duration::from_nanos(t1.saturating_sub(now_ns()).min(10_000_000)));
    }
    let stats1 = view.stats();
    let seconds = wall0.elapsed().as_secs_f64();
    let cpu1: Vec<Option<f64>> = pids.iter().map(|&(_, p)| super::cpu_seconds(p)).collect();
    let c1: Vec<Counters> = [ledger_pid, twin_pid].iter().map(|&p| counters(&stats1, p)).collect();
    let (offset1, _) = clock_offset();
    let tel = tel.join().map_err(|_| io::Error::other("the telemetry reader thread panicked"))??;
    let alarm_seen = alarms.join().map_err(|_| io::Error::other("the alarm reader thread panicked"))??;

    progress("stopping helixd, letting the ledger catch up, stopping the twin and the ledger");
    helixd.stop()?;
    let published = view.stats().published;
    wait_for("helix-ledger did not catch up with helixd's last frame", &mut [&mut ledger, &mut twin], || {
        view.stats().readers.iter().any(|r| r.pid == ledger_pid && r.cursor > published)
    })?;
    twin.stop()?;
    ledger.stop()?;

    progress("verifying the ledger");
    let mut lat = histogram();
    let mut negative = 0u64;
    let mut most_negative = 0u64;
    let mut frames = 0u64;
    let walked = helix::ledger::walk(&ledger_dir, |at| {
        let rec = at.record;
        if rec.header.rtype != helix::ledger::format::RecordType::Frame as u16 {
            return;
        }
        frames += 1;
        if rec.header.kind != KIND_SAMPLE || rec.payload.len() != std::mem::size_of::<Sample>() {
            return;
        }
        let s: Sample = bytemuck::pod_read_unaligned(rec.payload);
        if !(t0..t1).contains(&s.ingest_ns) {
            return;
        }
        let d = rec.header.recv_ns as i64 - (s.ingest_ns as i64 + offset);
        if d < 0 {
            negative += 1;
            most_negative = most_negative.max(d.unsigned_abs());
        }
        let _ = lat.record(d.max(1) as u64);
    })
    .map_err(|e| io::Error::other(e.to_string()))?;
    let bytes = std::fs::read_dir(&ledger_dir)?.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum();
    let ledger_check = match walked {
        Ok(sum) => {
            let ring = sum.rings.iter().find(|r| r.decl.name == TELEMETRY);
            LedgerCheck {
                verified: true,
                problem: None,
                segments: sum.segments,
                records: sum.records,
                frames,
                gaps: ring.map_or(0, |r| r.gaps),
                lost: ring.map_or(0, |r| r.lost),
                published,
                hash: helix::ledger::format::hex(&sum.hash),
                bytes,
                negative,
                most_negative_ns: most_negative,
            }
        }
        Err(failure) => LedgerCheck {
            verified: false,
            problem: Some(failure.to_string()),
            segments: 0,
            records: 0,
            frames,
            gaps: 0,
            lost: 0,
            published,
            hash: String::new(),
            bytes,
            negative,
            most_negative_ns: most_negative,
        },
    };

    let rate = cfg.rate();
    let window_published = stats1.published - stats0.published;
    let delta = |i: usize| Counters {
        frames: c1[i].frames - c0[i].frames,
        overruns: c1[i].overruns - c0[i].overruns,
        lost: c1[i].lost - c0[i].lost,
    };
    let (dl, dt) = (delta(0), delta(1));
    let per_sec = |n: u64| n as f64 / seconds.max(1e-9);
    let readers = vec![
        ReaderResult {
            name: "helix-bench".into(),
            gating: false,
            frames: tel.frames,
            frames_per_sec: per_sec(tel.frames),
            overruns: tel.overruns,
            lost: tel.lost,
            lag: lag_of(&lag[0], rate),
            latency_method: format!(
                "ingest_ns (helixd, CLOCK_MONOTONIC) to receipt by this reader ({}), same clock",
                super::stream::wait_name(cfg.wait)
            ),
            latency: (!tel.hist.is_empty()).then(|| Summary::of(&tel.hist)),
        },
        ReaderResult {
            name: "helix-ledger".into(),
            gating: true,
            frames: dl.frames,
            frames_per_sec: per_sec(dl.frames),
            overruns: dl.overruns,
            lost: dl.lost,
            lag: lag_of(&lag[1], rate),
            latency_method: "ingest_ns + (realtime - monotonic offset) to the record's recv_ns (CLOCK_REALTIME, \
                             just after the ledger read the batch), for samples ingested in the window"
                .into(),
            latency: (!lat.is_empty()).then(|| Summary::of(&lat)),
        },
        ReaderResult {
            name: "helix-twin".into(),
            gating: false,
            frames: dt.frames,
            frames_per_sec: per_sec(dt.frames),
            overruns: dt.overruns,
            lost: dt.lost,
            lag: lag_of(&lag[2], rate),
            latency_method: "the triggering sample's ingest_ns to an alarm event reaching helix-bench through the \
                             `alarms` ring (same clock; only the samples that raised or cleared an alarm)"
                .into(),
            latency: (!alarm_seen.hist.is_empty()).then(|| Summary::of(&alarm_seen.hist)),
        },
    ];
    let cpu = pids
        .iter()
        .zip(cpu0.iter().zip(&cpu1))
        .filter_map(|(&(name, _), (a, b))| {
            Some(ProcessCpu { process: name.into(), percent: (b.as_ref()? - a.as_ref()?) / seconds * 100.0 })
        })
        .collect();
    Ok(Results {
        streams: cfg.streams,
        rate_hz: cfg.rate_hz,
        seconds,
        warmup: cfg.warmup.as_secs_f64(),
        placement: cfg.placement.clone(),
        capacity: cfg.capacity(),
        fsync_ms: cfg.fsync_ms,
        wait: super::stream::wait_name(cfg.wait).into(),
        twin_poll_ms: twin_poll.as_millis() as u64,
        published: window_published,
        frames_per_sec: per_sec(window_published),
        writer_waits: stats1.writer_waits - stats0.writer_waits,
        readers,
        cpu,
        clock: ClockOffset { offset_ns: offset, uncertainty_ns: uncertainty, drift_ns: offset1 - offset },
        alarm_events: alarm_seen.frames,
        ledger: ledger_check,
    })
}

#[cfg(test)]
mod tests {
    use super::Placement;

    #[test]
    fn a_placement_reads_as_processes_grouped_by_cpus() {
        assert_eq!(Placement::all(&[]).describe(), "not confined to CPUs");
        assert_eq!(Placement::all(&[0, 1]).describe(), "every process on CPUs 0,1");
        let apart = Placement { ledger: vec![1], ..Placement::all(&[0]) };
        assert!(!apart.shared());
        assert_eq!(apart.describe(), "helixd, helix-twin, helix-bench on CPU 0; helix-ledger on CPU 1");
        let mixed = Placement { helixd: vec![2, 3], ledger: vec![], twin: vec![2, 3], reader: vec![1] };
        assert_eq!(mixed.describe(), "helixd, helix-twin on CPUs 2,3; helix-ledger on any CPU; helix-bench on CPU 1");
    }
}
