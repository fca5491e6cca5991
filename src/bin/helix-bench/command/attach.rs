//! `helix-bench attach`: attach to a live ring by name as a non-gating
//! reader and measure what arrives: frames/s, overruns, and for telemetry
//! samples the latency from helixd's ingest (`ingest_ns`) to this reader's
//! receipt (for the twin's alarm events, from the triggering sample's
//! ingest, as e2e measures the twin).

use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::{Deserialize, Serialize};

use helix::process::now_ns;
use helix::shm::Namespace;
use helix::telemetry::KIND_SAMPLE;
use helix::twin::KIND_ALARM;
use helix::{Reader, ReaderOptions, Start, WaitStrategy};

use super::e2e::{alarm_ingest, read_until, sample_ingest};
use super::stream::wait_name;
use crate::affinity::pin_to_cpu;
use crate::document::{utc_now, JsonArg};
use crate::machine::{load_average, Machine};
use crate::stats::{fmt_ns, Summary};

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
    /// Ingest-to-reader latency of telemetry samples (or of alarm events:
    /// from their triggering sample's ingest), if any arrived.
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
        None => println!("no telemetry samples or alarm events arrived (no latency to report)"),
    }
    a.out.write("attach", load, started, r)
}

/// Reads `ring` for `duration` after a `warmup` that is not recorded (in
/// batches, as e2e's reader does: [`read_until`]).
pub fn measure(ns: &Namespace, ring: &str, duration: Duration, warmup: Duration, wait: WaitStrategy) -> Result<Report> {
    let opts = ReaderOptions { name: "helix-bench".into(), gating: false, start: Start::Newest, wait };
    let r = Reader::attach(ns, ring, &opts)?;
    let t0 = now_ns() + warmup.as_nanos() as u64;
    let t1 = t0 + duration.as_nanos() as u64;
    // Telemetry samples from their ingest; the twin's alarm events from
    // their triggering sample's ingest; other frames only counted.
    let seen = read_until(r, t0, t1, |frame| match frame.kind() {
        KIND_SAMPLE => sample_ingest(frame),
        KIND_ALARM => alarm_ingest(frame).or(Some(None)),
        _ => Some(None),
    })?;
    let seconds = duration.as_secs_f64();
    Ok(Report {
        ring: ring.into(),
        warmup: warmup.as_secs_f64(),
        wait: wait_name(wait).into(),
        frames_per_sec: seen.frames as f64 / seconds,
        frames: seen.frames,
        lost: seen.lost,
        overruns: seen.overruns,
        seconds,
        latency: (!seen.hist.is_empty()).then(|| Summary::of(&seen.hist)),
    })
}
