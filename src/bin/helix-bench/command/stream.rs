//! `helix-bench stream`: one-way streaming. One writer, several reader
//! processes, fixed-size frames published and consumed in batches. Reports
//! frames/s and MB/s for the writer and each reader, and what was lost or
//! waited for.

use std::io::{self, BufRead, Write};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};

use helix::shm::Namespace;
use helix::{Policy, ReadError, Reader, ReaderOptions, Ring, RingOptions, Start, TryReadError, WaitStrategy};

use super::peer::{PeerCmd, PeerProcess, PeerStreamArgs, Peers};
use super::{cpus_flag, list};
use crate::affinity::pin_to_cpu;
use crate::document::{utc_now, JsonArg};
use crate::machine::{load_average, Machine};
use crate::stats::median;

const RING: &str = "stream";

#[derive(Args, Debug, Clone, PartialEq)]
pub struct StreamArgs {
    /// Frames to publish.
    #[arg(long, default_value_t = 10_000_000)]
    pub frames: u64,
    /// Frame sizes in bytes (at least 8), comma separated.
    #[arg(long, alias = "size", value_delimiter = ',', default_values_t = [64usize])]
    pub sizes: Vec<usize>,
    /// Frames per claim and per batch read, comma separated.
    #[arg(long, alias = "batch", value_delimiter = ',', default_values_t = [64u64])]
    pub batches: Vec<u64>,
    /// Reader processes, comma separated (e.g. 1,2,3).
    #[arg(long, value_delimiter = ',', default_values_t = [1usize])]
    pub readers: Vec<usize>,
    /// gating, non-gating or both (comma separated).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Mode::NonGating], conflicts_with = "gating")]
    pub mode: Vec<Mode>,
    /// Same as --mode gating.
    #[arg(long)]
    pub gating: bool,
    /// Ring capacity in slots.
    #[arg(long, default_value_t = 4096)]
    pub capacity: u64,
    /// Readers' wait strategy: spin, spin-then-park or park.
    #[arg(long, default_value = "spin")]
    pub wait: WaitStrategy,
    /// CPUs: the writer's first, readers spread over the rest, e.g. 0,1.
    #[arg(long, value_delimiter = ',')]
    pub cpus: Vec<usize>,
    /// Repeat this many times and report the median.
    #[arg(long, default_value_t = 1)]
    pub runs: usize,
    #[command(flatten)]
    pub out: JsonArg,
}

impl StreamArgs {
    /// The command-line flags that give these arguments.
    pub fn to_args(&self) -> Vec<String> {
        let mut v = vec!["--frames".to_owned(), self.frames.to_string(), "--sizes".into(), list(&self.sizes)];
        v.extend(["--batches".into(), list(&self.batches), "--readers".into(), list(&self.readers)]);
        // --gating conflicts with --mode: one or the other.
        if self.gating {
            v.push("--gating".into());
        } else {
            let modes: Vec<String> =
                self.mode.iter().filter_map(|m| Some(m.to_possible_value()?.get_name().to_owned())).collect();
            v.extend(["--mode".into(), modes.join(",")]);
        }
        v.extend(["--capacity".into(), self.capacity.to_string(), "--wait".into(), wait_name(self.wait).into()]);
        v.extend(["--runs".into(), self.runs.to_string()]);
        v.extend(cpus_flag(&self.cpus));
        v.extend(self.out.to_args());
        v
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Gating readers on a block ring: lossless, the writer waits.
    Gating,
    /// Non-gating readers on an overwrite ring: the writer never waits.
    NonGating,
}

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
        self.writer_fps = median(self.runs.iter().map(|r| r.writer.frames_per_sec()).collect());
        self.reader_fps = median(self.runs.iter().flat_map(|r| r.readers.iter().map(Rate::frames_per_sec)).collect());
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

/// Runs `helix-bench stream`.
pub fn run(a: StreamArgs, namespace: Namespace, peers: &Peers) -> Result<()> {
    let (load, started) = (load_average(), utc_now());
    let modes = if a.gating { vec![Mode::Gating] } else { a.mode.clone() };
    if let Some(&bad) = a.sizes.iter().find(|&&s| s < 8) {
        bail!("frame size {bad}: frames must be at least 8 bytes");
    }
    if a.batches.contains(&0) || a.readers.contains(&0) || a.frames == 0 || a.runs == 0 {
        bail!("--frames, --batches, --readers and --runs must be at least 1");
    }
    if let Some(&b) = a.batches.iter().find(|&&b| b > a.capacity) {
        bail!("batch {b} is larger than the ring ({} slots)", a.capacity);
    }
    println!("machine: {}", Machine::detect());
    println!(
        "stream: {} frames per run, ring of {} slots, readers {}, {}, {} run(s) per case",
        a.frames,
        a.capacity,
        wait_name(a.wait),
        cpus_text(&a.cpus),
        a.runs
    );
    let mut cases = Vec::new();
    for &size in &a.sizes {
        for &batch in &a.batches {
            for &readers in &a.readers {
                for &mode in &modes {
                    let cfg = Config {
                        frames: a.frames,
                        size,
                        batch,
                        readers,
                        gating: mode == Mode::Gating,
                        capacity: a.capacity,
                        wait: a.wait,
                        cpus: (!a.cpus.is_empty()).then_some(a.cpus.clone()),
                        namespace: namespace.clone(),
                    };
                    cases.push(measure_case(&cfg, a.runs, peers)?);
                }
            }
        }
    }
    let results = Results { capacity: a.capacity, cpus: a.cpus.clone(), runs: a.runs, cases };
    a.out.write("stream", load, started, results)
}

fn cpus_text(cpus: &[usize]) -> String {
    if cpus.is_empty() {
        "not pinned".to_owned()
    } else {
        format!("CPUs {}", list(cpus))
    }
}

/// Measures one case `runs` times, printing each run and the medians.
fn measure_case(cfg: &Config, runs: usize, peers: &Peers) -> Result<Case> {
    let (size, batch, readers, gating) = (cfg.size, cfg.batch, cfg.readers, cfg.gating);
    println!(
        "\n{size}-byte frames, batches of {batch}, {readers} {} reader(s):",
        if gating { "gating" } else { "non-gating" }
    );
    let mut case = Case {
        size,
        batch,
        readers,
        gating,
        wait: wait_name(cfg.wait).into(),
        frames: cfg.frames,
        runs: vec![],
        writer_fps: 0.0,
        reader_fps: 0.0,
    };
    for run in 1..=runs {
        let r = measure(cfg, peers).context("stream run")?;
        let mbs = |f: f64| f * size as f64 / 1e6;
        println!(
            "run {run}: writer {:.2} M frames/s ({:.0} MB/s), waited {} times",
            r.writer.frames_per_sec() / 1e6,
            mbs(r.writer.frames_per_sec()),
            r.writer_waits
        );
        for (i, rr) in r.readers.iter().enumerate() {
            println!(
                "        reader {i}: {} frames, {} lost in {} overruns, {:.2} M frames/s ({:.0} MB/s)",
                rr.frames,
                rr.lost,
                rr.overruns,
                rr.frames_per_sec() / 1e6,
                mbs(rr.frames_per_sec())
            );
        }
        case.runs.push(r);
    }
    case.finish();
    println!(
        "median over {} run(s): writer {:.2} M frames/s, readers {:.2} M frames/s each",
        runs,
        case.writer_fps / 1e6,
        case.reader_fps / 1e6
    );
    Ok(case)
}

/// The reader peer: consumes until it has seen sequence `frames`, checking
/// each frame's sequence, then prints `frames lost seconds`.
pub fn peer(ns: &Namespace, frames: u64, batch: u64, gating: bool, wait: WaitStrategy) -> Result<()> {
    let opts = ReaderOptions { gating, start: Start::At(1), wait, name: "stream-reader".into() };
    let mut r = Reader::attach(ns, RING, &opts)?;
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
                Err(ReadError::Timeout) => bail!("no frame for 30 s after {last}"),
                Err(e) => return Err(e.into()),
            },
            Err(TryReadError::Overrun(o)) => {
                lost += o.lost;
                overruns += 1;
                last = o.resume_at - 1;
            }
            Err(e) => return Err(e.into()),
        }
        if let Some(b) = bad.take() {
            bail!(b);
        }
    }
    let seconds = t0.map_or(0.0, |t| t.elapsed().as_secs_f64());
    println!("{got} {lost} {overruns} {seconds}");
    Ok(())
}

/// Runs one case once: creates the ring, starts the readers, publishes.
pub fn measure(cfg: &Config, peers: &Peers) -> Result<Report> {
    if cfg.size < 8 {
        bail!("frames must be at least 8 bytes");
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
    let ring = Ring::create(ns, RING, &opts)?;
    let result = measure_on(&ring, cfg, peers);
    let _ = Ring::unlink(ns, RING);
    result
}

/// A reader process and its output.
type ReaderProcess = PeerProcess;

fn measure_on(ring: &Ring, cfg: &Config, peers: &Peers) -> Result<Report> {
    let cpus = cfg.cpus.clone().unwrap_or_default();
    let readers = (0..cfg.readers).map(|i| start_reader(cfg, &cpus, i, peers)).collect::<Result<Vec<_>>>()?;
    if let Some(&cpu) = cpus.first() {
        pin_to_cpu(cpu)?;
    }
    let writer = publish(ring, cfg)?;
    let readers = readers.into_iter().map(reader_rate).collect::<Result<Vec<_>>>()?;
    Ok(Report { writer, readers, writer_waits: ring.stats().writer_waits })
}

/// Starts reader process `i` and waits until it is attached.
fn start_reader(cfg: &Config, cpus: &[usize], i: usize, peers: &Peers) -> Result<ReaderProcess> {
    // Readers share the CPUs after the writer's, round robin.
    let pool = if cpus.len() > 1 { &cpus[1..] } else { cpus };
    let what = PeerCmd::Stream(PeerStreamArgs {
        frames: cfg.frames,
        batch: cfg.batch,
        wait: cfg.wait,
        gating: cfg.gating,
        cpu: (!pool.is_empty()).then(|| pool[i % pool.len()]),
    });
    peers.start("a stream reader", &what, false)
}

/// Publishes every frame, each carrying its sequence, in claims of a batch.
fn publish(ring: &Ring, cfg: &Config) -> Result<Rate> {
    let mut w = ring.writer()?;
    let mut frame = vec![0u8; cfg.size];
    let t0 = Instant::now();
    let mut seq = w.next_seq();
    while seq <= cfg.frames {
        let n = cfg.batch.min(cfg.frames - seq + 1);
        let mut claim = w.claim(n)?;
        for _ in 0..n {
            frame[..8].copy_from_slice(&seq.to_le_bytes());
            claim.push(&frame)?;
            seq += 1;
        }
    }
    Ok(Rate { frames: cfg.frames, lost: 0, overruns: 0, seconds: t0.elapsed().as_secs_f64() })
}

/// A reader's report once it is done: `frames lost overruns seconds`.
fn reader_rate((mut child, mut out): ReaderProcess) -> Result<Rate> {
    let mut line = String::new();
    out.read_line(&mut line)?;
    let status = child.wait()?;
    if !status.success() {
        bail!("a stream reader exited with {status}");
    }
    let f: Vec<&str> = line.split_whitespace().collect();
    let field = |i: usize| f.get(i).copied().ok_or_else(|| anyhow!("bad reader report {line:?}"));
    Ok(Rate {
        frames: field(0)?.parse()?,
        lost: field(1)?.parse()?,
        overruns: field(2)?.parse()?,
        seconds: field(3)?.parse()?,
    })
}

/// The command-line name of a wait strategy.
pub fn wait_name(w: WaitStrategy) -> &'static str {
    match w {
        WaitStrategy::Spin => "spin",
        WaitStrategy::SpinThenPark { .. } => "spin-then-park",
        WaitStrategy::Park => "park",
    }
}

/// A wait strategy in JSON as its command-line name (`#[serde(with)]`).
pub mod wait_by_name {
    use helix::WaitStrategy;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(w: &WaitStrategy, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(super::wait_name(*w))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<WaitStrategy, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::report::{assert_reparses, Scenario};

    #[test]
    fn the_arguments_parse_back_to_themselves() {
        let all = StreamArgs {
            frames: 5000,
            sizes: vec![8, 100],
            batches: vec![1, 16],
            readers: vec![1, 3],
            mode: vec![Mode::Gating, Mode::NonGating],
            gating: false,
            capacity: 256,
            wait: WaitStrategy::Park,
            cpus: vec![0, 1],
            runs: 2,
            out: JsonArg { json: Some("/tmp/s.json".into()) },
        };
        let gating = StreamArgs {
            mode: vec![Mode::NonGating],
            gating: true,
            wait: WaitStrategy::default(),
            cpus: vec![],
            out: JsonArg::default(),
            ..all.clone()
        };
        assert_reparses([all, gating].map(Scenario::Stream));
    }
}
