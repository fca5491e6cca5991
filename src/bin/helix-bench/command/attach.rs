//! Attach to a live ring by name as a non-gating reader and measure what
//! arrives: frames/s, overruns, and for telemetry samples the latency from
//! helixd's ingest (`ingest_ns`) to this reader's receipt.

use std::io;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use helix::shm::Namespace;
use helix::telemetry::{Sample, KIND_SAMPLE};
use helix::{ReadError, Reader, ReaderOptions, Start, WaitStrategy};

use super::{histogram, Summary};

/// What was seen (`helix-bench attach --json` writes it under `results`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// The ring read.
    pub ring: String,
    /// Seconds read before measuring.
    pub warmup: f64,
    /// The reader's wait strategy.
    pub wait: String,
    /// Frames per second over the measured window.
    pub frames_per_sec: f64,
    /// Frames read.
    pub frames: u64,
    /// Sequences lost to overruns.
    pub lost: u64,
    /// Overrun events.
    pub overruns: u64,
    /// Seconds measured.
    pub seconds: f64,
    /// Ingest-to-reader latency of telemetry samples, if any arrived.
    pub latency: Option<Summary>,
}

/// Reads `ring` for `duration` after a `warmup` that is not recorded.
pub fn run(ns: &Namespace, ring: &str, duration: Duration, warmup: Duration, wait: WaitStrategy) -> io::Result<Report> {
    let opts = ReaderOptions { name: "helix-bench".into(), gating: false, start: Start::Newest, wait };
    let mut r = Reader::attach(ns, ring, &opts).map_err(io::Error::other)?;
    let mut h = histogram();
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + duration;
    let (mut frames, mut lost, mut overruns) = (0u64, 0u64, 0u64);
    let mut measuring = false;
    let mut t0 = measure_from;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        if !measuring && now >= measure_from {
            measuring = true;
            t0 = now;
        }
        let frame = match r.peek_timeout(end - now) {
            Ok(f) => f,
            Err(ReadError::Timeout) => continue,
            Err(ReadError::Overrun(o)) => {
                if measuring {
                    lost += o.lost;
                    overruns += 1;
                }
                continue;
            }
            Err(e) => return Err(io::Error::other(e)),
        };
        if !measuring {
            continue;
        }
        if frame.kind() == KIND_SAMPLE {
            if let Ok(s) = frame.read::<Sample>() {
                let now_ns = helix::process::now_ns();
                h.record(now_ns.saturating_sub(s.ingest_ns).max(1)).map_err(io::Error::other)?;
            }
        }
        frames += 1;
    }
    let seconds = t0.elapsed().as_secs_f64().min(duration.as_secs_f64()).max(1e-9);
    Ok(Report {
        ring: ring.into(),
        warmup: warmup.as_secs_f64(),
        wait: super::stream::wait_name(wait).into(),
        frames_per_sec: frames as f64 / seconds,
        frames,
        lost,
        overruns,
        seconds,
        latency: (!h.is_empty()).then(|| Summary::of(&h)),
    })
}
