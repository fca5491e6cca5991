//! `helix-bench ledger`'s replay figures: how fast `helix-ledger replay
//! --pace max` publishes recorded 40-byte telemetry frames into a ring
//! (the library's replay, which the program runs), and how close the paced
//! replay keeps to its pace.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use helix::ledger::format::RingDecl;
use helix::ledger::replay::{self, Pace, Range, ReplayError};
use helix::ledger::Ledger;
use helix::shm::Namespace;
use helix::telemetry::{Sample, KIND_SAMPLE};
use helix::{Policy, Ring, RingOptions, Writer};

use crate::stats::middle_by;

/// The recorded ring's name, and the ring replayed into.
const RECORDED: &str = "telemetry";
const INTO: &str = "ledger-bench-replay";
/// Frames per block, as the recorder writes them for a 10,000-stream
/// plant read every half millisecond.
const BLOCK: u64 = 500;

/// One replay at `--pace max`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplayRun {
    /// Frames replayed.
    pub frames: u64,
    /// Seconds from the start of the walk to the last frame published.
    pub seconds: f64,
}

impl ReplayRun {
    /// Frames per second.
    pub fn frames_per_sec(&self) -> f64 {
        self.frames as f64 / self.seconds
    }
}

/// A paced replay: how long it took against how long it should have.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PacedRun {
    /// The speed-up (1: the recorded pace).
    pub factor: f64,
    /// Seconds the pace asks for: the recorded span over the factor.
    pub expected_seconds: f64,
    /// Seconds it took.
    pub seconds: f64,
}

/// What `helix-bench ledger` reports of replay.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplayResults {
    /// Payload bytes per frame (a telemetry sample).
    pub size: usize,
    /// Frames per recorded block.
    pub block: u64,
    /// Each run at `--pace max`.
    pub runs: Vec<ReplayRun>,
    /// The run with the median frames/s.
    pub frames_per_sec: f64,
    /// Paced replays of a recorded second.
    pub paced: Vec<PacedRun>,
}

/// Records `frames` telemetry samples in `dir` in blocks of [`BLOCK`],
/// spread evenly over `span_ns` of `recv_ns`.
fn record(dir: &Path, frames: u64, span_ns: u64) -> Result<()> {
    let (mut l, _) = Ledger::open(dir, 64 << 20)?;
    let decl = RingDecl { created_ns: 1, capacity: 1 << 16, max_payload: 48, policy: 0, name: RECORDED.into() };
    let (id, _) = l.declare(&decl)?;
    let blocks = frames.div_ceil(BLOCK);
    for b in 0..blocks {
        let n = BLOCK.min(frames - b * BLOCK);
        let recv_ns = 1 + span_ns * b / blocks.max(1);
        for i in 0..n {
            let seq = b * BLOCK + i + 1;
            let s = Sample { stream: (seq % 10_000) as u32, quality: 0, seq, sample_ns: 0, ingest_ns: 0, value: 1.0 };
            l.reserve_frame(id, seq, 1, recv_ns, KIND_SAMPLE, 40).copy_from_slice(bytemuck::bytes_of(&s));
        }
        l.seal(id, n as usize);
        if l.buffered() >= 1 << 20 {
            l.flush()?;
        }
    }
    l.flush()?;
    Ok(())
}

/// Replays the whole recorded ring in `dir` at `pace` into a fresh ring
/// (an overwrite ring with no reader: the replay's own cost); returns the
/// frames and the seconds.
fn replay_once(ns: &Namespace, dir: &Path, pace: Pace) -> Result<(u64, f64)> {
    let _ = Ring::unlink(ns, INTO);
    let range = Range { ring: RECORDED.into(), from: 0, to: u64::MAX };
    let open = |d: &RingDecl| -> Result<Writer, ReplayError> {
        let opts = RingOptions { capacity: d.capacity, max_payload: d.max_payload, ..Default::default() };
        debug_assert_eq!(opts.policy, Policy::Overwrite);
        Ok(Ring::create(ns, INTO, &opts)?.writer()?)
    };
    let t0 = Instant::now();
    let done = replay::replay(dir, &range, pace, open);
    let seconds = t0.elapsed().as_secs_f64();
    let _ = Ring::unlink(ns, INTO);
    Ok((done?.frames, seconds))
}

/// `frames` replayed at `--pace max`, `runs` times, and a recorded second
/// replayed at x1 and x10; the ledgers are written under `dir`.
pub fn measure(ns: &Namespace, dir: &Path, frames: u64, runs: usize) -> Result<ReplayResults> {
    let fast = dir.join("replay-max");
    record(&fast, frames, 1_000_000_000).context("recording the ledger to replay")?;
    let runs = (0..runs.max(1))
        .map(|_| replay_once(ns, &fast, Pace::Max).map(|(frames, seconds)| ReplayRun { frames, seconds }))
        .collect::<Result<Vec<_>>>()
        .context("replay at --pace max");
    let _ = std::fs::remove_dir_all(&fast);
    let runs = runs?;
    let (_, m) = middle_by(&runs, ReplayRun::frames_per_sec).expect("at least one run");
    let frames_per_sec = m.frames_per_sec();
    println!("replay --pace max: {:.2} M frames/s of 40-byte telemetry into a ring", frames_per_sec / 1e6);

    let paced_dir = dir.join("replay-paced");
    let span = Duration::from_secs(1);
    record(&paced_dir, 200 * BLOCK, span.as_nanos() as u64).context("recording the paced ledger")?;
    let paced = [1.0, 10.0]
        .into_iter()
        .map(|factor| {
            let (_, seconds) = replay_once(ns, &paced_dir, Pace::Faster(factor))?;
            // The last block is due at 199/200 of the span.
            let expected_seconds = span.as_secs_f64() * 199.0 / 200.0 / factor;
            println!("replay --pace x{factor}: {seconds:.3} s for {expected_seconds:.3} s of recorded time");
            Ok(PacedRun { factor, expected_seconds, seconds })
        })
        .collect::<Result<Vec<_>>>();
    let _ = std::fs::remove_dir_all(&paced_dir);
    Ok(ReplayResults { size: 40, block: BLOCK, runs, frames_per_sec, paced: paced? })
}
