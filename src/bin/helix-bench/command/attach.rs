//! `helix-bench attach`: attach to a live ring by name as a non-gating
//! reader and measure what arrives: frames/s, overruns, and for telemetry
//! samples the latency from helixd's ingest (`ingest_ns`) to this reader's
//! receipt (for the twin's alarm events, from the triggering sample's
//! ingest, as e2e measures the twin).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::{Deserialize, Serialize};

use helix::ledger::catchup::{CatchUpError, CatchUpReader, DEFAULT_LEDGER_DIR};
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
    /// Start at this sequence: if the ring no longer holds it, catch up
    /// from the ledger (--ledger), then read the ring live; measures the
    /// catch-up from the start (no warm-up).
    #[arg(long)]
    pub from: Option<u64>,
    /// The ledger folder a --from start catches up from.
    #[arg(long, default_value = DEFAULT_LEDGER_DIR, requires = "from")]
    pub ledger: PathBuf,
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
    /// from their triggering sample's ingest), if any arrived (not
    /// measured in a catch-up: the ledger's samples are old).
    pub latency: Option<Summary>,
    /// With `--from`: how the catch-up went.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catch_up: Option<CatchUp>,
}

/// A catch-up from the ledger (`helix-bench attach --from`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CatchUp {
    /// The first sequence asked for.
    pub from: u64,
    /// The ledger folder.
    pub ledger: PathBuf,
    /// Frames read from the ledger.
    pub from_ledger: u64,
    /// Frames read from the ring.
    pub from_ring: u64,
    /// Times the reader joined the ring (more than one: the ring lapped
    /// it and it went back to the ledger).
    pub joins: u64,
    /// Seconds from the start to the first join, if it joined.
    pub joined_after: Option<f64>,
    /// Frames per second read from the ledger before the first join.
    pub ledger_frames_per_sec: Option<f64>,
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
    let r = match a.from {
        Some(from) => catch_up(ns, &a.ring, from, &a.ledger, seconds, a.wait),
        None => measure(ns, &a.ring, seconds, warmup, a.wait),
    }
    .with_context(|| format!("attaching to ring {:?}", a.ring))?;
    println!("frames: {} ({:.0} frames/s), overruns: {}, lost: {}", r.frames, r.frames_per_sec, r.overruns, r.lost);
    if let Some(c) = &r.catch_up {
        let joined =
            c.joined_after.map_or("never joined the ring".into(), |t| format!("joined the ring after {t:.3} s"));
        let rate = c.ledger_frames_per_sec.map_or(String::new(), |f| format!(" ({f:.0} frames/s)"));
        println!(
            "catch-up from {}: {} frames from the ledger{rate}, {} from the ring; {joined}, {} join(s)",
            c.from, c.from_ledger, c.from_ring, c.joins
        );
    }
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
        catch_up: None,
    })
}

/// Reads `ring` from `from` for `duration`, caught up from the ledger in
/// `dir` (see `helix::ledger::catchup`).
fn catch_up(
    ns: &Namespace,
    ring: &str,
    from: u64,
    dir: &Path,
    duration: Duration,
    wait: WaitStrategy,
) -> Result<Report> {
    let opts = ReaderOptions { name: "helix-bench".into(), gating: false, start: Start::Newest, wait };
    let mut r = CatchUpReader::open(ns, ring, dir, from, &opts)?;
    let mut buf = vec![0u8; r.geometry().max_payload as usize];
    let start = Instant::now();
    let end = start + duration;
    let (mut frames, mut lost, mut overruns, mut joined) = (0u64, 0u64, 0u64, None);
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        match r.read_timeout(&mut buf, left.min(Duration::from_millis(100))) {
            Ok(_) => frames += 1,
            Err(CatchUpError::Empty) => {}
            Err(CatchUpError::Overrun(o)) => (lost, overruns) = (lost + o.lost, overruns + 1),
            Err(e) => return Err(e.into()),
        }
        if joined.is_none() && r.is_live() {
            joined = Some((start.elapsed().as_secs_f64(), r.stats().from_ledger));
        }
    }
    let seconds = duration.as_secs_f64();
    let s = r.stats();
    Ok(Report {
        ring: ring.into(),
        warmup: 0.0,
        wait: wait_name(wait).into(),
        frames_per_sec: frames as f64 / seconds,
        frames,
        lost,
        overruns,
        seconds,
        latency: None,
        catch_up: Some(CatchUp {
            from,
            ledger: dir.to_owned(),
            from_ledger: s.from_ledger,
            from_ring: s.from_ring,
            joins: s.joins,
            joined_after: joined.map(|j| j.0),
            ledger_frames_per_sec: joined.filter(|j| j.0 > 0.0).map(|(t, n)| n as f64 / t),
        }),
    })
}
