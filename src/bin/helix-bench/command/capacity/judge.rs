//! What `helix-bench capacity` decides, apart from any measurement: the
//! figures of one stream count taken from its e2e run, the targets they are
//! held against (issue 15), whether a count meets them and why not, and the
//! largest count that does. Pure arithmetic, so the tests need no timing.

use serde::{Deserialize, Serialize};

use crate::command::e2e;
use crate::command::render::group;
use crate::stats::fmt_ns;

/// The targets a stream count must meet, and the goals reported beside
/// them (a goal missed is shown, but does not fail the count).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Targets {
    /// helixd publishes at least this fraction of the samples due.
    pub min_published: f64,
    /// P99 of each reader (helix-bench, the ledger, the twin) under this, ns.
    pub p99_below_ns: u64,
    /// Goal: helix-bench's reader P99 at most this, ns.
    pub goal_reader_p99_ns: u64,
    /// Goal: helix-ledger's CPU per frame at most this, ns.
    pub goal_ledger_ns_per_frame: f64,
    /// Goal: helixd's CPU per sample at most this, ns.
    pub goal_helixd_ns_per_sample: f64,
    /// Goal: ledger bytes on disk per telemetry frame at most this.
    pub goal_bytes_per_frame: f64,
}

impl Default for Targets {
    /// Issue 15's.
    fn default() -> Targets {
        Targets {
            min_published: 0.999,
            p99_below_ns: 2_000_000,
            goal_reader_p99_ns: 250_000,
            goal_ledger_ns_per_frame: 100.0,
            goal_helixd_ns_per_sample: 80.0,
            goal_bytes_per_frame: 64.0,
        }
    }
}

/// CPU time per sample of each process over the window, ns (`None`: not
/// measured).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuPerSample {
    /// helixd, per sample it published.
    pub helixd: Option<f64>,
    /// helix-ledger, per frame it read.
    pub ledger: Option<f64>,
    /// helix-twin, per frame it read.
    pub twin: Option<f64>,
    /// helix-bench (its telemetry and alarm readers and the sampling), per
    /// frame its telemetry reader read.
    pub reader: Option<f64>,
}

/// One stream count's figures, taken from its e2e run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    /// Samples due in the window (streams x rate x seconds measured).
    pub due: u64,
    /// Samples helixd published in the window.
    pub published: u64,
    /// `published / due`, percent.
    pub published_percent: f64,
    /// Times helixd waited for the gating ledger in the window.
    pub writer_waits: u64,
    /// P99 of helix-bench's reader (ingest to receipt), ns.
    pub reader_p99_ns: Option<u64>,
    /// P99 of the ledger (ingest to record), ns.
    pub ledger_p99_ns: Option<u64>,
    /// P99 of the twin (ingest to alarm event), ns.
    pub twin_p99_ns: Option<u64>,
    /// Each process's CPU per sample.
    pub cpu_ns: CpuPerSample,
    /// Whether the ledger verified.
    pub verified: bool,
    /// GAP records in the ledger.
    pub gaps: u64,
    /// Frames helixd published in all, and the FRAME records in the ledger.
    pub published_total: u64,
    /// See `published_total`.
    pub recorded: u64,
    /// Ledger bytes on disk per FRAME record (`None`: no frame recorded).
    pub bytes_per_frame: Option<f64>,
    /// Telemetry ring slots, and the seconds of samples they hold.
    pub ring_slots: u64,
    /// See `ring_slots`.
    pub ring_seconds: f64,
}

impl Figures {
    /// The figures of an e2e run.
    pub fn of(r: &e2e::Results) -> Figures {
        let rate = f64::from(r.streams) * r.rate_hz;
        let due = (rate * r.seconds).round() as u64;
        let p99 = |name: &str| r.reader(name).and_then(|x| x.latency.as_ref()).map(|s| s.p99);
        // CPU seconds over the window per item, ns.
        let per = |process: &str, items: u64| {
            let cpu = r.cpu.iter().find(|c| c.process == process)?;
            (items > 0).then(|| cpu.percent / 100.0 * r.seconds * 1e9 / items as f64)
        };
        let frames = |name: &str| r.reader(name).map_or(0, |x| x.frames);
        let l = &r.ledger;
        Figures {
            due,
            published: r.published,
            published_percent: if due == 0 { 0.0 } else { r.published as f64 * 100.0 / due as f64 },
            writer_waits: r.writer_waits,
            reader_p99_ns: p99("helix-bench"),
            ledger_p99_ns: p99("helix-ledger"),
            twin_p99_ns: p99("helix-twin"),
            cpu_ns: CpuPerSample {
                helixd: per("helixd", r.published),
                ledger: per("helix-ledger", frames("helix-ledger")),
                twin: per("helix-twin", frames("helix-twin")),
                reader: per("helix-bench", frames("helix-bench")),
            },
            verified: l.verified,
            gaps: l.gaps,
            published_total: l.published,
            recorded: l.frames,
            bytes_per_frame: (l.frames > 0).then(|| l.bytes as f64 / l.frames as f64),
            ring_slots: r.capacity,
            ring_seconds: r.capacity as f64 / rate.max(1e-9),
        }
    }
}

/// Whether a count meets the targets, and why not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// Every target met.
    pub meets: bool,
    /// Each target missed, in words (empty if it meets them).
    pub reasons: Vec<String>,
    /// Each goal missed, in words (reported, not deciding).
    pub goals_missed: Vec<String>,
}

/// Holds `f` against `t`.
pub fn judge(f: &Figures, t: &Targets) -> Verdict {
    let mut reasons = Vec::new();
    if f.published_percent < t.min_published * 100.0 {
        reasons.push(format!(
            "helixd published {:.2}% of the samples due (at least {}% wanted; {} waits for the ledger)",
            f.published_percent,
            t.min_published * 100.0,
            group(f.writer_waits)
        ));
    }
    for (who, p99, timed) in [
        ("helix-bench's reader", f.reader_p99_ns, "no sample reached it in the window"),
        ("the ledger", f.ledger_p99_ns, "no sample of the window in its records"),
        ("the twin", f.twin_p99_ns, "no alarm event in the window; the simulator's spikes fall about every 10 s"),
    ] {
        match p99 {
            Some(ns) if ns < t.p99_below_ns => {}
            Some(ns) => reasons.push(format!("{who} P99 {} (under {} wanted)", fmt_ns(ns), fmt_ns(t.p99_below_ns))),
            None => reasons.push(format!("{who}: no P99 ({timed})")),
        }
    }
    if f.gaps > 0 {
        reasons.push(format!("{} ledger gaps", f.gaps));
    }
    if !f.verified {
        reasons.push("the ledger did not verify".into());
    }
    if f.recorded != f.published_total {
        reasons.push(format!(
            "the ledger recorded {} frames of {} published",
            group(f.recorded),
            group(f.published_total)
        ));
    }
    Verdict { meets: reasons.is_empty(), reasons, goals_missed: goals_missed(f, t) }
}

/// The goals `f` misses, in words.
fn goals_missed(f: &Figures, t: &Targets) -> Vec<String> {
    let mut missed = Vec::new();
    if let Some(p99) = f.reader_p99_ns.filter(|&p| p > t.goal_reader_p99_ns) {
        missed.push(format!("reader P99 {} (at most {})", fmt_ns(p99), fmt_ns(t.goal_reader_p99_ns)));
    }
    let over = |x: Option<f64>, goal: f64| x.filter(|&v| v > goal);
    if let Some(ns) = over(f.cpu_ns.ledger, t.goal_ledger_ns_per_frame) {
        missed.push(format!("helix-ledger {ns:.0} ns CPU per frame (at most {})", t.goal_ledger_ns_per_frame));
    }
    if let Some(ns) = over(f.cpu_ns.helixd, t.goal_helixd_ns_per_sample) {
        missed.push(format!("helixd {ns:.0} ns CPU per sample (at most {})", t.goal_helixd_ns_per_sample));
    }
    if let Some(b) = over(f.bytes_per_frame, t.goal_bytes_per_frame) {
        missed.push(format!("{b:.1} ledger bytes per frame (at most {})", t.goal_bytes_per_frame));
    }
    missed
}

/// One stream count: what was measured (or why nothing was) and the
/// verdict.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CountResult {
    /// Simulated streams.
    pub streams: u32,
    /// Why the run failed, if it did (then it has no figures and fails).
    pub error: Option<String>,
    /// Its figures.
    pub figures: Option<Figures>,
    /// Whether it meets the targets, and why not.
    pub verdict: Verdict,
    /// The e2e run in full.
    pub e2e: Option<e2e::Results>,
}

impl CountResult {
    /// The count measured by `run`, judged against `t`.
    pub fn measured(run: e2e::Results, t: &Targets) -> CountResult {
        let figures = Figures::of(&run);
        let verdict = judge(&figures, t);
        CountResult { streams: run.streams, error: None, figures: Some(figures), verdict, e2e: Some(run) }
    }

    /// A count whose run failed with `error`.
    pub fn failed(streams: u32, error: String) -> CountResult {
        let verdict = Verdict { meets: false, reasons: vec![format!("the run failed: {error}")], goals_missed: vec![] };
        CountResult { streams, error: Some(error), figures: None, verdict, e2e: None }
    }
}

/// The largest count that meets the targets, if any does.
pub fn largest(counts: &[CountResult]) -> Option<u32> {
    counts.iter().filter(|c| c.verdict.meets).map(|c| c.streams).max()
}

/// The conclusion in one paragraph: the largest count that meets the
/// targets, and why each larger one (or, if none meets, each one) fails;
/// a smaller count that fails while a larger one meets is named too (a
/// noisy run).
pub fn conclusion(counts: &[CountResult]) -> String {
    let best = largest(counts);
    let mut s = match best {
        Some(n) => format!("The largest stream count that meets the targets: **{}**.", group(u64::from(n))),
        None => "No stream count measured meets the targets.".to_owned(),
    };
    for c in counts.iter().filter(|c| !c.verdict.meets) {
        let larger = best.is_none_or(|b| c.streams > b);
        let (n, why) = (group(u64::from(c.streams)), c.verdict.reasons.join("; "));
        s.push_str(&if larger {
            format!(" {n} fails: {why}.")
        } else {
            format!(" ({n} fails although a larger count meets them, a noisy run: {why}.)")
        });
    }
    s
}

/// `--streams`: positive counts, each once, in increasing order.
pub fn stream_counts(list: &[u32]) -> Result<Vec<u32>, String> {
    if list.is_empty() {
        return Err("--streams needs at least one count".into());
    }
    if let Some(zero) = list.iter().find(|&&n| n == 0) {
        return Err(format!("--streams: {zero} is not a positive count"));
    }
    let mut v = list.to_vec();
    v.sort_unstable();
    if let Some(w) = v.windows(2).find(|w| w[0] == w[1]) {
        return Err(format!("--streams: {} is given twice", w[0]));
    }
    Ok(v)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::command::e2e::{ClockOffset, LedgerCheck, Placement, ProcessCpu, ReaderResult, Results};
    use crate::stats::Summary;

    fn latency(p99: u64) -> Option<Summary> {
        Some(Summary { count: 1000, p50: p99 / 4, p90: p99 / 2, p99, p999: p99 * 2, p9999: p99 * 3, max: p99 * 4 })
    }

    fn reader(name: &str, frames: u64, p99: u64) -> ReaderResult {
        ReaderResult {
            name: name.into(),
            gating: name == "helix-ledger",
            frames,
            frames_per_sec: frames as f64 / 10.0,
            overruns: 0,
            lost: 0,
            lag: None,
            latency_method: String::new(),
            latency: latency(p99),
        }
    }

    /// A 10 s run of `streams` x 100 Hz that meets every target: every
    /// sample due published and read, P99s of 100, 500 and 900 us, the
    /// ledger complete at 60 bytes a frame.
    pub fn run(streams: u32) -> Results {
        let n = u64::from(streams) * 1000;
        let cpu = |process: &str, percent: f64| ProcessCpu { process: process.into(), percent };
        Results {
            streams,
            rate_hz: 100.0,
            seconds: 10.0,
            warmup: 3.0,
            placement: Placement::all(&[0, 1]),
            capacity: 4_194_304,
            fsync_ms: 10,
            wait: "park".into(),
            twin_poll_ms: 0,
            published: n,
            frames_per_sec: n as f64 / 10.0,
            writer_waits: 0,
            readers: vec![
                reader("helix-bench", n, 100_000),
                reader("helix-ledger", n, 500_000),
                reader("helix-twin", n, 900_000),
            ],
            // 10 s at 50% of a CPU is 5 s: 500 ns per frame at 10,000 streams.
            cpu: vec![
                cpu("helixd", 50.0),
                cpu("helix-ledger", 80.0),
                cpu("helix-twin", 10.0),
                cpu("helix-bench", 20.0),
            ],
            clock: ClockOffset { offset_ns: 0, uncertainty_ns: 0, drift_ns: 0 },
            alarm_events: 10,
            ledger: LedgerCheck {
                verified: true,
                problem: None,
                segments: 1,
                records: n + 2,
                frames: n + 500,
                gaps: 0,
                lost: 0,
                published: n + 500,
                hash: "00".repeat(32),
                bytes: (n + 500) * 60,
                negative: 0,
                most_negative_ns: 0,
            },
        }
    }

    #[test]
    fn the_figures_come_from_the_run() {
        let f = Figures::of(&run(10_000));
        assert_eq!((f.due, f.published), (10_000_000, 10_000_000));
        assert!((f.published_percent - 100.0).abs() < 1e-9);
        assert_eq!((f.reader_p99_ns, f.ledger_p99_ns, f.twin_p99_ns), (Some(100_000), Some(500_000), Some(900_000)));
        let close = |x: Option<f64>, want: f64| assert!(x.is_some_and(|v| (v - want).abs() < 1e-6), "{x:?} {want}");
        close(f.cpu_ns.helixd, 500.0);
        close(f.cpu_ns.ledger, 800.0);
        close(f.cpu_ns.twin, 100.0);
        close(f.cpu_ns.reader, 200.0);
        close(f.bytes_per_frame, 60.0);
        assert!((f.ring_seconds - 4.194304).abs() < 1e-9);
        // A process not measured, or a reader that read nothing, has no figure.
        let mut r = run(10_000);
        r.cpu.retain(|c| c.process != "helix-twin");
        r.readers[0].frames = 0;
        let f = Figures::of(&r);
        assert_eq!((f.cpu_ns.twin, f.cpu_ns.reader), (None, None));
    }

    #[test]
    fn a_count_within_every_target_meets_them_and_its_missed_goals_are_only_reported() {
        let v = judge(&Figures::of(&run(10_000)), &Targets::default());
        assert!(v.meets && v.reasons.is_empty(), "{v:?}");
        // 500 ns of CPU per sample and per frame miss the goals, not the targets.
        assert_eq!(v.goals_missed.len(), 2, "{v:?}");
        assert!(v.goals_missed[0].starts_with("helix-ledger 800 ns CPU per frame"), "{v:?}");
        assert!(v.goals_missed[1].starts_with("helixd 500 ns CPU per sample"), "{v:?}");
        let mut r = run(10_000);
        r.readers[0].latency = latency(300_000);
        r.ledger.bytes = r.ledger.frames * 112;
        let v = judge(&Figures::of(&r), &Targets::default());
        assert!(v.meets, "{v:?}");
        assert!(v.goals_missed.iter().any(|g| g == "reader P99 300.00 us (at most 250.00 us)"), "{v:?}");
        assert!(v.goals_missed.iter().any(|g| g.starts_with("112.0 ledger bytes per frame")), "{v:?}");
    }

    /// `change` applied to a passing run: the one reason it fails.
    fn fails_for(change: impl FnOnce(&mut Results)) -> String {
        let mut r = run(30_000);
        change(&mut r);
        let v = judge(&Figures::of(&r), &Targets::default());
        assert!(!v.meets && v.reasons.len() == 1, "{v:?}");
        v.reasons[0].clone()
    }

    #[test]
    fn each_target_missed_is_named() {
        // 99.9% of the due samples is enough, a sample fewer is not.
        let mut r = run(30_000);
        r.published = 29_970_000;
        assert!(judge(&Figures::of(&r), &Targets::default()).meets);
        let why = fails_for(|r| {
            r.published = 29_969_999;
            r.writer_waits = 7;
        });
        assert!(why.starts_with("helixd published 99.90% of the samples due") && why.contains("7 waits"), "{why}");
        // P99 must be under 2 ms: 2 ms itself fails.
        let why = fails_for(|r| r.readers[1].latency = latency(2_000_000));
        assert_eq!(why, "the ledger P99 2.00 ms (under 2.00 ms wanted)");
        let why = fails_for(|r| r.readers[0].latency = latency(12_600_000));
        assert_eq!(why, "helix-bench's reader P99 12.60 ms (under 2.00 ms wanted)");
        let why = fails_for(|r| r.readers[2].latency = None);
        assert!(why.starts_with("the twin: no P99 (no alarm event in the window"), "{why}");
        assert_eq!(fails_for(|r| r.ledger.gaps = 3), "3 ledger gaps");
        assert_eq!(fails_for(|r| r.ledger.verified = false), "the ledger did not verify");
        let why = fails_for(|r| r.ledger.frames -= 1);
        assert_eq!(why, "the ledger recorded 30,000,499 frames of 30,000,500 published");
    }

    fn count(streams: u32, meets: bool) -> CountResult {
        let mut r = run(streams);
        if !meets {
            r.readers[1].latency = latency(343_000_000);
        }
        CountResult::measured(r, &Targets::default())
    }

    #[test]
    fn the_largest_count_that_meets_the_targets_is_named_with_why_each_larger_fails() {
        let counts = [
            count(10_000, true),
            count(20_000, true),
            count(30_000, false),
            CountResult::failed(50_000, "helixd exited".into()),
        ];
        assert_eq!(largest(&counts), Some(20_000));
        let c = conclusion(&counts);
        assert!(c.starts_with("The largest stream count that meets the targets: **20,000**."), "{c}");
        assert!(c.contains(" 30,000 fails: the ledger P99 343.00 ms (under 2.00 ms wanted)."), "{c}");
        assert!(c.contains(" 50,000 fails: the run failed: helixd exited."), "{c}");
        // A smaller count failing beside a larger one that meets: named as noise.
        let noisy = [count(10_000, false), count(20_000, true)];
        assert_eq!(largest(&noisy), Some(20_000));
        assert!(
            conclusion(&noisy).contains("(10,000 fails although a larger count meets them"),
            "{}",
            conclusion(&noisy)
        );
        let none = [count(10_000, false)];
        assert_eq!(largest(&none), None);
        assert!(conclusion(&none).starts_with("No stream count measured meets the targets. 10,000 fails: the ledger"));
    }

    #[test]
    fn stream_counts_are_positive_distinct_and_sorted() {
        assert_eq!(stream_counts(&[50_000, 10_000, 30_000]), Ok(vec![10_000, 30_000, 50_000]));
        assert_eq!(stream_counts(&[]), Err("--streams needs at least one count".into()));
        assert_eq!(stream_counts(&[10, 0]), Err("--streams: 0 is not a positive count".into()));
        assert_eq!(stream_counts(&[10, 20, 10]), Err("--streams: 10 is given twice".into()));
    }
}
