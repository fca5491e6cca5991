//! The measured window: helix-bench's own readers on threads of this
//! process, and the other readers, helixd and every process's CPU seen from
//! outside (the ring's reader table, /proc), at both ends of the window and
//! every 10 ms between.

use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use hdrhistogram::Histogram;

use helix::process::{now_ns, realtime_ns};
use helix::telemetry::{Sample, KIND_SAMPLE};
use helix::twin::{AlarmEvent, AlarmKind, ACTION_RAISE, KIND_ALARM};
use helix::{FrameRef, ReadError, Reader, ReaderOptions, RingStats, RingView, Start, TryReadError, WaitStrategy};

use super::programs::Running;
use super::results::{Lag, ProcessCpu};
use super::{Config, ALARMS, TELEMETRY};
use crate::affinity::confine;
use crate::machine::cpu_seconds;
use crate::stats::histogram;

/// What the window measured.
pub struct Window {
    /// Its bounds on CLOCK_MONOTONIC, ns.
    pub t0: u64,
    /// See `t0`.
    pub t1: u64,
    /// Its length as measured, seconds.
    pub seconds: f64,
    /// The telemetry ring at its start and at its end.
    pub stats: [RingStats; 2],
    /// The ledger's and the twin's reader counters over it.
    pub ledger: Counters,
    /// See `ledger`.
    pub twin: Counters,
    /// How far behind helix-bench, the ledger and the twin were.
    pub lag: [Histogram<u64>; 3],
    /// Each process's CPU use.
    pub cpu: Vec<ProcessCpu>,
    /// What helix-bench's telemetry reader saw.
    pub telemetry: Seen,
    /// What helix-bench's alarm reader saw.
    pub alarms: Seen,
    /// realtime - monotonic at its start, ns, and that reading's error.
    pub offset: (i64, u64),
    /// realtime - monotonic at its end, ns.
    pub offset_end: i64,
}

/// Attaches helix-bench's readers, waits out the warm-up, and measures.
pub fn measure(
    cfg: &Config,
    running: &mut Running,
    progress: &mut dyn FnMut(&str),
    stop: &dyn Fn() -> bool,
) -> Result<Window> {
    // helix-bench's own readers, on threads of this process.
    if !cfg.placement.reader.is_empty() {
        confine(0, &cfg.placement.reader)?;
    }
    let ns = &cfg.namespace;
    let options = |wait| ReaderOptions { name: "helix-bench".into(), gating: false, start: Start::Newest, wait };
    let tel_reader = Reader::attach(ns, TELEMETRY, &options(cfg.wait))?;
    let alarm_reader = Reader::attach(ns, ALARMS, &options(WaitStrategy::Park))?;
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
    let me = std::process::id();
    let (ledger, twin) = (running.ledger.pid(), running.twin.pid());
    let pids = [("helixd", running.helixd.pid()), ("helix-ledger", ledger), ("helix-twin", twin), ("helix-bench", me)];
    thread::sleep(Duration::from_nanos(t0.saturating_sub(now_ns())));
    let stats0 = running.view.stats();
    let offset = clock_offset();
    let cpu0: Vec<Option<f64>> = pids.iter().map(|&(_, p)| cpu_seconds(p)).collect();
    let wall0 = Instant::now();
    let mut lag = [histogram(), histogram(), histogram()];
    while now_ns() < t1 {
        record_lags(&running.view, [me, ledger, twin], &mut lag)?;
        running.check()?;
        if stop() {
            bail!("stopped before the end of the window");
        }
        thread::sleep(Duration::from_nanos(t1.saturating_sub(now_ns()).min(10_000_000)));
    }
    let stats1 = running.view.stats();
    let seconds = wall0.elapsed().as_secs_f64();
    let cpu1: Vec<Option<f64>> = pids.iter().map(|&(_, p)| cpu_seconds(p)).collect();
    let (offset_end, _) = clock_offset();
    let telemetry = tel.join().map_err(|_| anyhow!("the telemetry reader thread panicked"))??;
    let alarms = alarms.join().map_err(|_| anyhow!("the alarm reader thread panicked"))??;
    let cpu = pids
        .iter()
        .zip(cpu0.iter().zip(&cpu1))
        .filter_map(|(&(name, _), (a, b))| {
            Some(ProcessCpu { process: name.into(), percent: (b.as_ref()? - a.as_ref()?) / seconds * 100.0 })
        })
        .collect();
    let (ledger, twin) = (Counters::delta(&stats0, &stats1, ledger), Counters::delta(&stats0, &stats1, twin));
    Ok(Window {
        t0,
        t1,
        seconds,
        stats: [stats0, stats1],
        ledger,
        twin,
        lag,
        cpu,
        telemetry,
        alarms,
        offset,
        offset_end,
    })
}

/// What helix-bench's reader threads saw in the window.
pub struct Seen {
    pub frames: u64,
    pub overruns: u64,
    pub lost: u64,
    pub hist: Histogram<u64>,
}

/// Frames read per batch at most: the receipt time is read once per batch,
/// after it (a batch of 64 samples takes about a microsecond to read).
const BATCH: usize = 64;

/// Reads `r` until `t1`. Of the frames received in `[t0, t1)`, `classify`
/// picks those that count (`Some`) and gives the ingest time each one's
/// latency is measured from (`Some(Some(ns))`); overruns count from `t0`.
/// Frames are read in batches of what is there, and a batch's receipt time
/// is the clock read just after it: at or after each frame's receipt, one
/// clock read per batch rather than three per frame.
pub fn read_until(
    mut r: Reader,
    t0: u64,
    t1: u64,
    mut classify: impl FnMut(&FrameRef<'_>) -> Option<Option<u64>>,
) -> Result<Seen> {
    let mut seen = Seen { frames: 0, overruns: 0, lost: 0, hist: histogram() };
    let mut batch = [None; BATCH];
    loop {
        let mut k = 0;
        let read = r.try_read_batch(BATCH, |f| {
            batch[k] = classify(f);
            k += 1;
        });
        let at = now_ns();
        if at >= t1 {
            return Ok(seen);
        }
        match read {
            // The consumed frames are the first n classified.
            Ok(n) if at >= t0 => {
                for since in batch[..n].iter().flatten() {
                    seen.frames += 1;
                    if let Some(since) = since {
                        seen.hist.record(at.saturating_sub(*since).max(1))?;
                    }
                }
            }
            Ok(_) => {}
            Err(TryReadError::Empty) => match r.wait_timeout(Duration::from_nanos((t1 - at).min(100_000_000))) {
                Ok(()) | Err(ReadError::Timeout) => {}
                Err(e) => return Err(e.into()),
            },
            Err(TryReadError::Overrun(o)) => {
                if at >= t0 {
                    seen.overruns += 1;
                    seen.lost += o.lost;
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Reads `telemetry` until `t1`, recording ingest-to-receipt latency of
/// frames received in `[t0, t1)`.
fn read_telemetry(r: Reader, t0: u64, t1: u64) -> Result<Seen> {
    read_until(r, t0, t1, sample_ingest)
}

/// A telemetry frame counts; a sample's latency is measured from its
/// `ingest_ns`.
pub fn sample_ingest(frame: &FrameRef<'_>) -> Option<Option<u64>> {
    let sample = (frame.kind() == KIND_SAMPLE).then(|| frame.read::<Sample>().ok()).flatten();
    Some(sample.map(|s| s.ingest_ns))
}

/// Reads `alarms` until `t1`, recording ingest-to-receipt latency of the
/// events received in `[t0, t1)` whose time is a sample's `ingest_ns`
/// (every event but a stale raise, timed by the twin's own clock).
fn read_alarms(r: Reader, t0: u64, t1: u64) -> Result<Seen> {
    read_until(r, t0, t1, |frame| (frame.kind() == KIND_ALARM).then(|| alarm_ingest(frame)).flatten())
}

/// An alarm event's triggering sample's `ingest_ns`, if it has one (every
/// event but a stale raise) and the frame is whole.
pub fn alarm_ingest(frame: &FrameRef<'_>) -> Option<Option<u64>> {
    let ev = frame.read::<AlarmEvent>().ok()?;
    let stale_raise = ev.rule == AlarmKind::Stale.number() && ev.action == ACTION_RAISE;
    Some((!stale_raise).then_some(ev.time_ns))
}

/// Records the lag of the readers of `pids` now, from the reader table
/// alone ([`RingView::lags`]: a full snapshot reads every reader's
/// `/proc/PID/stat`, and scheduler traces showed those snapshots holding
/// the measured reader's CPU while it waited).
fn record_lags(view: &RingView, pids: [u32; 3], lag: &mut [Histogram<u64>; 3]) -> Result<()> {
    let lags = view.lags();
    for (h, pid) in lag.iter_mut().zip(pids) {
        if let Some(&(_, l)) = lags.iter().find(|&&(p, _)| p == pid) {
            h.record(l)?;
        }
    }
    Ok(())
}

/// One reader entry's counters.
#[derive(Clone, Copy, Default)]
pub struct Counters {
    pub frames: u64,
    pub overruns: u64,
    pub lost: u64,
}

impl Counters {
    /// The counters of `pid`'s reader entry in one snapshot (the same one
    /// the writer's count comes from, so the deltas are consistent).
    fn of(stats: &RingStats, pid: u32) -> Counters {
        stats.readers.iter().find(|r| r.pid == pid).map_or_else(Counters::default, |r| Counters {
            frames: r.frames,
            overruns: r.overruns,
            lost: r.lost,
        })
    }

    /// How much `pid`'s counters grew from snapshot `a` to snapshot `b`.
    fn delta(a: &RingStats, b: &RingStats, pid: u32) -> Counters {
        let (a, b) = (Counters::of(a, pid), Counters::of(b, pid));
        Counters { frames: b.frames - a.frames, overruns: b.overruns - a.overruns, lost: b.lost - a.lost }
    }
}

/// The lag histogram `h` in frames and, at `rate` frames/s, as time.
pub fn lag_of(h: &Histogram<u64>, rate: f64) -> Option<Lag> {
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
