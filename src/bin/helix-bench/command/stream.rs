//! One-way streaming: one writer, several reader processes, fixed-size
//! frames published and consumed in batches. Reports frames/s and MB/s for
//! the writer and each reader, and what was lost or waited for.

use std::io::{self, BufRead, BufReader, Write};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use helix::shm::Namespace;
use helix::{Policy, ReadError, Reader, ReaderOptions, Ring, RingOptions, Start, TryReadError, WaitStrategy};

use super::PeerCommand;

const RING: &str = "stream";

/// What to measure.
#[derive(Debug, Clone)]
pub struct Config {
    /// Frames to publish.
    pub frames: u64,
    /// Frame size in bytes (at least 8: the first 8 carry the sequence).
    pub size: usize,
    /// Frames per claim and per batch read.
    pub batch: u64,
    /// Reader processes.
    pub readers: usize,
    /// Whether readers gate the writer (block ring) or not (overwrite ring).
    pub gating: bool,
    /// Ring capacity in slots.
    pub capacity: u64,
    /// How readers wait.
    pub wait: WaitStrategy,
    /// CPU for the writer and the CPUs readers are spread over.
    pub cpus: Option<Vec<usize>>,
    /// Namespace for the ring.
    pub namespace: Namespace,
}

/// What one side measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rate {
    /// Frames moved.
    pub frames: u64,
    /// Sequences lost to overruns (readers of an overwrite ring).
    pub lost: u64,
    /// Overrun events (readers of an overwrite ring).
    pub overruns: u64,
    /// Seconds from the first frame to the last.
    pub seconds: f64,
}

impl Rate {
    /// Frames per second.
    pub fn frames_per_sec(&self) -> f64 {
        self.frames as f64 / self.seconds.max(1e-9)
    }
}

/// One setup (frame size, batch, readers, gating) over every run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Case {
    /// Frame size, bytes.
    pub size: usize,
    /// Frames per claim and per batch read.
    pub batch: u64,
    /// Reader processes.
    pub readers: usize,
    /// Gating readers on a block ring, or not on an overwrite ring.
    pub gating: bool,
    /// The readers' wait strategy.
    pub wait: String,
    /// Frames published per run.
    pub frames: u64,
    /// Each run.
    pub runs: Vec<Report>,
    /// Median writer frames/s over the runs.
    pub writer_fps: f64,
    /// Median of every reader's frames/s over the runs.
    pub reader_fps: f64,
}

impl Case {
    /// Fills the medians from the runs.
    pub fn finish(&mut self) {
        self.writer_fps = super::median(self.runs.iter().map(|r| r.writer.frames_per_sec()).collect());
        self.reader_fps =
            super::median(self.runs.iter().flat_map(|r| r.readers.iter().map(Rate::frames_per_sec)).collect());
    }

    /// Total sequences lost by all readers over all runs.
    pub fn lost(&self) -> u64 {
        self.runs.iter().flat_map(|r| &r.readers).map(|r| r.lost).sum()
    }

    /// Frames published over all runs, times readers.
    pub fn deliveries(&self) -> u64 {
        self.frames * self.readers as u64 * self.runs.len() as u64
    }
}

/// What `helix-bench stream --json` writes under `results`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    /// Ring capacity in slots.
    pub capacity: u64,
    /// CPUs: the writer's first, readers spread over the rest.
    pub cpus: Vec<usize>,
    /// Repetitions of each case.
    pub runs: usize,
    /// Every setup measured.
    pub cases: Vec<Case>,
}

/// The whole run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// The writer's rate.
    pub writer: Rate,
    /// Each reader's rate.
    pub readers: Vec<Rate>,
    /// Times the writer waited for gating readers.
    pub writer_waits: u64,
}

/// The reader peer: consumes until it has seen sequence `frames`, checking
/// each frame's sequence, then prints `frames lost seconds`.
pub fn peer(ns: &Namespace, frames: u64, batch: u64, gating: bool, wait: WaitStrategy) -> io::Result<()> {
    let opts = ReaderOptions { gating, start: Start::At(1), wait, name: "stream-reader".into() };
    let mut r = Reader::attach(ns, RING, &opts).map_err(io::Error::other)?;
    println!("ready");
    io::stdout().flush()?;
    let (mut got, mut lost, mut overruns, mut last) = (0u64, 0u64, 0u64, 0u64);
    let mut bad = None;
    let mut t0 = None;
    while last < frames {
        match r.try_read_batch(batch as usize, |f| match f.read_at::<u64>(0) {
            Ok(seq) if seq == f.seq() => last = seq,
            Ok(seq) => bad = Some(format!("frame {} carried sequence {seq}", f.seq())),
            // Overwritten while being read: the batch ends before it and
            // the next call reports the overrun.
            Err(_) => {}
        }) {
            Ok(n) => {
                t0.get_or_insert_with(Instant::now);
                got += n as u64;
            }
            Err(TryReadError::Empty) => match r.wait_timeout(Duration::from_secs(30)) {
                Ok(()) => {}
                Err(ReadError::Timeout) => return Err(io::Error::other(format!("no frame for 30 s after {last}"))),
                Err(e) => return Err(io::Error::other(e)),
            },
            Err(TryReadError::Overrun(o)) => {
                lost += o.lost;
                overruns += 1;
                last = o.resume_at - 1;
            }
            Err(e) => return Err(io::Error::other(e)),
        }
        if let Some(b) = bad.take() {
            return Err(io::Error::new(io::ErrorKind::InvalidData, b));
        }
    }
    let seconds = t0.map_or(0.0, |t| t.elapsed().as_secs_f64());
    println!("{got} {lost} {overruns} {seconds}");
    Ok(())
}

/// Runs the scenario.
pub fn run(cfg: &Config, peer_cmd: PeerCommand<'_>) -> io::Result<Report> {
    if cfg.size < 8 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "frames must be at least 8 bytes"));
    }
    let ns = &cfg.namespace;
    let policy = if cfg.gating { Policy::Block } else { Policy::Overwrite };
    let opts = RingOptions {
        capacity: cfg.capacity,
        max_payload: cfg.size as u32,
        policy,
        max_readers: cfg.readers as u32 + 1,
        stall_timeout: Duration::from_secs(30),
        ..Default::default()
    };
    let ring = Ring::create(ns, RING, &opts).map_err(io::Error::other)?;
    let result = run_on(&ring, cfg, peer_cmd);
    let _ = Ring::unlink(ns, RING);
    result
}

fn run_on(ring: &Ring, cfg: &Config, peer_cmd: PeerCommand<'_>) -> io::Result<Report> {
    let cpus = cfg.cpus.clone().unwrap_or_default();
    let mut children: Vec<(Child, BufReader<std::process::ChildStdout>)> = Vec::new();
    let kill_all = |children: &mut Vec<(Child, BufReader<std::process::ChildStdout>)>| {
        for (c, _) in children.iter_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    };
    for i in 0..cfg.readers {
        let mut args = vec![
            "peer".into(),
            "stream".into(),
            "--namespace".into(),
            cfg.namespace.as_str().into(),
            "--frames".into(),
            cfg.frames.to_string(),
            "--batch".into(),
            cfg.batch.to_string(),
            "--wait".into(),
            wait_name(cfg.wait).into(),
        ];
        if cfg.gating {
            args.push("--gating".into());
        }
        if !cpus.is_empty() {
            // Readers share the CPUs after the writer's, round robin.
            let pool = if cpus.len() > 1 { &cpus[1..] } else { &cpus[..] };
            args.extend(["--cpu".into(), pool[i % pool.len()].to_string()]);
        }
        let mut child = peer_cmd(&args).stdout(Stdio::piped()).spawn()?;
        let mut out = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        out.read_line(&mut line)?;
        children.push((child, out));
        if line.trim() != "ready" {
            kill_all(&mut children);
            return Err(io::Error::other("a stream reader failed to start"));
        }
    }
    if let Some(&cpu) = cpus.first() {
        super::pin_to_cpu(cpu)?;
    }
    let mut w = ring.writer().map_err(io::Error::other)?;
    let mut frame = vec![0u8; cfg.size];
    let t0 = Instant::now();
    let mut seq = w.next_seq();
    while seq <= cfg.frames {
        let n = cfg.batch.min(cfg.frames - seq + 1);
        let mut claim = match w.claim(n) {
            Ok(c) => c,
            Err(e) => {
                kill_all(&mut children);
                return Err(io::Error::other(e));
            }
        };
        for _ in 0..n {
            frame[..8].copy_from_slice(&seq.to_le_bytes());
            claim.push(&frame).map_err(io::Error::other)?;
            seq += 1;
        }
    }
    let writer = Rate { frames: cfg.frames, lost: 0, overruns: 0, seconds: t0.elapsed().as_secs_f64() };
    let mut readers = Vec::new();
    for (mut child, mut out) in children {
        let mut line = String::new();
        out.read_line(&mut line)?;
        let status = child.wait()?;
        if !status.success() {
            return Err(io::Error::other(format!("a stream reader exited with {status}")));
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        let parse = |i: usize| f.get(i).ok_or_else(|| io::Error::other(format!("bad reader report {line:?}")));
        readers.push(Rate {
            frames: parse(0)?.parse().map_err(io::Error::other)?,
            lost: parse(1)?.parse().map_err(io::Error::other)?,
            overruns: parse(2)?.parse().map_err(io::Error::other)?,
            seconds: parse(3)?.parse().map_err(io::Error::other)?,
        });
    }
    Ok(Report { writer, readers, writer_waits: ring.stats().writer_waits })
}

/// The command-line name of a wait strategy.
pub fn wait_name(w: WaitStrategy) -> &'static str {
    match w {
        WaitStrategy::Spin => "spin",
        WaitStrategy::SpinThenPark { .. } => "spin-then-park",
        WaitStrategy::Park => "park",
    }
}
