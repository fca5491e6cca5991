//! The ledger's cost: how fast the real `helix-ledger` records a ring
//! (frames/s and MB/s written) at a given frame size and fsync interval,
//! and how much a gating ledger adds to the writer's publish latency at a
//! paced rate, against the same writer with no reader.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use helix::shm::Namespace;
use helix::{Policy, Ring, RingOptions, RingView};

use super::Summary;

const RING: &str = "ledger-bench";

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
}

/// A started `helix-ledger` on the benchmark ring; killed if dropped.
struct LedgerProcess {
    child: Child,
    dir: PathBuf,
}

impl LedgerProcess {
    fn start(setup: &Setup, ring: &RingView, run: &str, fsync_ms: u64) -> io::Result<LedgerProcess> {
        let dir = setup.dir.join(run);
        let _ = std::fs::remove_dir_all(&dir);
        let child = Command::new(&setup.ledger_bin)
            .args(["--ring", RING, "--fsync-interval-ms", &fsync_ms.to_string(), "--dir"])
            .arg(&dir)
            .env("HELIX_NAMESPACE", setup.namespace.as_str())
            .env("HELIX_LOG", "info")
            .env_remove("NOTIFY_SOCKET")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| io::Error::other(format!("{}: {e}", setup.ledger_bin.display())))?;
        let mut p = LedgerProcess { child, dir };
        if let Some(&cpu) = setup.cpus.get(1) {
            super::pin_pid(p.child.id(), cpu)?;
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ring.stats().readers.iter().any(|r| r.pid == p.child.id() && r.alive) {
            if let Some(status) = p.child.try_wait()? {
                let mut err = String::new();
                let _ = p.child.stderr.take().map(|mut e| e.read_to_string(&mut err));
                return Err(io::Error::other(format!("helix-ledger exited ({status}): {err}")));
            }
            if Instant::now() > deadline {
                return Err(io::Error::other("helix-ledger did not attach within 30 s"));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(p)
    }

    /// The ledger's released cursor on the ring.
    fn released(&self, ring: &RingView) -> u64 {
        ring.stats().readers.iter().find(|r| r.pid == self.child.id()).map_or(0, |r| r.cursor)
    }

    /// Stops it (SIGTERM: it writes and syncs what it holds); returns the
    /// fsync count from its last log line, and removes its folder.
    fn stop(mut self) -> io::Result<(u64, Option<u64>)> {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            e.read_to_string(&mut err)?;
        }
        let status = self.child.wait()?;
        if !status.success() {
            return Err(io::Error::other(format!("helix-ledger exited with {status}: {err}")));
        }
        let syncs = err
            .lines()
            .rev()
            .find_map(|l| l.split(" fsyncs").next().filter(|_| l.contains(" fsyncs")))
            .and_then(|s| s.rsplit(' ').next()?.parse().ok());
        let bytes = dir_bytes(&self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
        Ok((bytes, syncs))
    }
}

impl Drop for LedgerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |d| d.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
}

/// A block ring for frames of `size`, at most about 256 MiB.
fn bench_ring(ns: &Namespace, size: usize) -> io::Result<Ring> {
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
    Ring::create(ns, RING, &opts).map_err(io::Error::other)
}

/// Records `frames` frames of `size` bytes, published as fast as the
/// ledger takes them, with the ledger's fsync interval `fsync_ms`.
pub fn throughput(setup: &Setup, frames: u64, size: usize, fsync_ms: u64) -> io::Result<Throughput> {
    let ns = &setup.namespace;
    let ring = bench_ring(ns, size)?;
    let view = RingView::attach(ns, RING).map_err(io::Error::other)?;
    let result = (|| {
        let ledger = LedgerProcess::start(setup, &view, &format!("tp-{size}-{fsync_ms}"), fsync_ms)?;
        if let Some(&cpu) = setup.cpus.first() {
            super::pin_to_cpu(cpu)?;
        }
        let mut w = ring.writer().map_err(io::Error::other)?;
        let frame = vec![0x5au8; size];
        let t0 = Instant::now();
        let mut seq = 1;
        while seq <= frames {
            let n = 64.min(frames - seq + 1);
            let mut claim = w.claim(n).map_err(io::Error::other)?;
            for _ in 0..n {
                claim.push(&frame).map_err(io::Error::other)?;
            }
            drop(claim);
            seq += n;
        }
        while ledger.released(&view) <= frames {
            std::thread::sleep(Duration::from_micros(200));
        }
        let seconds = t0.elapsed().as_secs_f64();
        let writer_waits = view.stats().writer_waits;
        let (ledger_bytes, syncs) = ledger.stop()?;
        Ok(Throughput { frames, size, fsync_ms, seconds, ledger_bytes, syncs, writer_waits })
    })();
    drop(ring);
    let _ = Ring::unlink(ns, RING);
    result
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
) -> io::Result<WriterLatency> {
    let ns = &setup.namespace;
    let ring = bench_ring(ns, size)?;
    let view = RingView::attach(ns, RING).map_err(io::Error::other)?;
    let result = (|| {
        let ledger =
            if with_ledger { Some(LedgerProcess::start(setup, &view, &format!("lat-{size}"), 10)?) } else { None };
        if let Some(&cpu) = setup.cpus.first() {
            super::pin_to_cpu(cpu)?;
        }
        let mut w = ring.writer().map_err(io::Error::other)?;
        let frame = vec![0x5au8; size];
        let mut hist: Histogram<u64> = super::histogram();
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
                w.publish(&frame).map_err(io::Error::other)?;
                if t >= warmup {
                    hist.record(t.elapsed().as_nanos() as u64).map_err(io::Error::other)?;
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
            while l.released(&view) <= frames {
                std::thread::sleep(Duration::from_millis(1));
            }
            l.stop()?;
        }
        Ok(WriterLatency { with_ledger, publish: Summary::of(&hist), writer_waits, frames })
    })();
    drop(ring);
    let _ = Ring::unlink(ns, RING);
    result
}
