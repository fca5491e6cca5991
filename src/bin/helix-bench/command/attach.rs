//! `helix-bench attach`: attach to a live ring by name as a non-gating
//! reader and measure what arrives: frames/s, overruns, and for telemetry
//! samples the latency from helixd's ingest (`ingest_ns`) to this reader's
//! receipt.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::{Deserialize, Serialize};

use helix::shm::Namespace;
use helix::telemetry::{Sample, KIND_SAMPLE};
use helix::{ReadError, Reader, ReaderOptions, Start, WaitStrategy};

use super::stream::wait_name;
use crate::affinity::pin_to_cpu;
use crate::document::{utc_now, JsonArg};
use crate::machine::{load_average, Machine};
use crate::stats::{fmt_ns, histogram, Summary};

#[derive(Args, Debug, Clone, PartialEq)]
pub struct AttachArgs {
    /// The ring, e.g. telemetry.
    pub ring: String,
    /// Seconds to measure.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Seconds to read before measuring.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Wait strategy: spin, spin-then-park or park.
    #[arg(long, default_value = "park")]
    pub wait: WaitStrategy,
    /// Pin to this CPU.
    #[arg(long)]
    pub cpu: Option<usize>,
    #[command(flatten)]
    pub out: JsonArg,
}

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

/// Runs `helix-bench attach`.
pub fn run(a: AttachArgs, ns: &Namespace) -> Result<()> {
    let (load, started) = (load_average(), utc_now());
    if !(a.seconds > 0.0 && a.seconds.is_finite() && a.warmup >= 0.0 && a.warmup.is_finite()) {
        bail!("--seconds must be positive and --warmup not negative");
    }
    if let Some(cpu) = a.cpu {
        pin_to_cpu(cpu)?;
    }
    println!("machine: {}", Machine::detect());
    println!(
        "attach: ring {} in namespace {ns}, {} s after {} s warm-up, reader {}",
        a.ring,
        a.seconds,
        a.warmup,
        wait_name(a.wait)
    );
    let (seconds, warmup) = (Duration::from_secs_f64(a.seconds), Duration::from_secs_f64(a.warmup));
    let r = measure(ns, &a.ring, seconds, warmup, a.wait).with_context(|| format!("attaching to ring {:?}", a.ring))?;
    println!("frames: {} ({:.0} frames/s), overruns: {}, lost: {}", r.frames, r.frames_per_sec, r.overruns, r.lost);
    match &r.latency {
        Some(s) => {
            let named = Summary::NAMES.iter().zip(s.percentiles()).map(|(n, ns)| format!("{n} {}", fmt_ns(ns)));
            println!("ingest-to-reader latency: {}  ({} samples)", named.collect::<Vec<_>>().join("  "), s.count);
        }
        None => println!("no telemetry samples arrived (no latency to report)"),
    }
    a.out.write("attach", load, started, r)
}

/// Reads `ring` for `duration` after a `warmup` that is not recorded.
pub fn measure(ns: &Namespace, ring: &str, duration: Duration, warmup: Duration, wait: WaitStrategy) -> Result<Report> {
    let opts = ReaderOptions { name: "helix-bench".into(), gating: false, start: Start::Newest, wait };
    let mut r = Reader::attach(ns, ring, &opts)?;
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
            Err(e) => return Err(e.into()),
        };
        if !measuring {
            continue;
        }
        if frame.kind() == KIND_SAMPLE {
            if let Ok(s) = frame.read::<Sample>() {
                let now_ns = helix::process::now_ns();
                h.record(now_ns.saturating_sub(s.ingest_ns).max(1))?;
            }
        }
        frames += 1;
    }
    let seconds = t0.elapsed().as_secs_f64().min(duration.as_secs_f64()).max(1e-9);
    Ok(Report {
        ring: ring.into(),
        warmup: warmup.as_secs_f64(),
        wait: wait_name(wait).into(),
        frames_per_sec: frames as f64 / seconds,
        frames,
        lost,
        overruns,
        seconds,
        latency: (!h.is_empty()).then(|| Summary::of(&h)),
    })
}
