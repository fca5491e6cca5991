//! "Targets": what HELIX promises, as data. Each target is a label, how
//! its figures are taken from the run, and the limits they are held
//! against; the rows of the two tables, and met or not met, are computed
//! from [`TARGETS`].

use std::fmt::Write as _;

use super::{bridge, control, fanin, group, mfps, ratios, Run, TARGET_SIZE};
use crate::command::{e2e, pingpong};
use crate::stats::{fmt_ns, median};

/// The targets, in the order of their rows.
const TARGETS: &[Target] = &[
    Target {
        table: Table::Current,
        label: "spin ping-pong RTT median within 2x the raw atomic ping-pong ({size}-byte frames)",
        missing: Some("spin ping-pong RTT median within 2x the raw atomic ping-pong"),
        measure: Measure::Run(spin_ratio),
        limits: &[Limit::AtMost(2.0)],
    },
    Target {
        table: Table::Current,
        label: "spin ping-pong RTT p99 under 1 us ({size}-byte frames)",
        missing: Some("spin ping-pong RTT p99 under 1 us"),
        measure: Measure::Run(spin_p99),
        limits: &[Limit::Below(1000.0)],
    },
    Target {
        table: Table::Current,
        label: "park/wake RTT median within 1.1x the raw futex ping-pong ({size}-byte frames)",
        missing: Some("park/wake RTT median within 1.1x the raw futex ping-pong"),
        measure: Measure::Run(park_ratio),
        limits: &[Limit::AtMost(1.1)],
    },
    Target {
        table: Table::Current,
        label: "park/wake RTT median below pipe and Unix sockets",
        missing: Some("park/wake RTT median below pipe and Unix sockets"),
        measure: Measure::Run(park_below_kernel),
        limits: &[Limit::Below(1.0)],
    },
    // Against the futex first, then below the pipe and the sockets.
    Target::current(
        "the same, both processes on one CPU (a local wake-up: no interrupt to another CPU), \
                {size}-byte frames",
        Measure::Run(one_cpu),
        &[Limit::AtMost(1.1), Limit::Below(1.0)],
    ),
    Target {
        table: Table::Current,
        label: "e2e at {scale}, ledger and twin attached: ingest-to-reader P99 under 250 us ({layout})",
        // One row for both this target and the next.
        missing: Some("e2e: ingest-to-reader P99 and P99.9 ({layout})"),
        measure: Measure::EachE2e(e2e_p99),
        limits: &[Limit::Below(250_000.0)],
    },
    Target::current(
        "e2e: ingest-to-reader P99.9 under 2 ms ({layout})",
        Measure::EachE2e(e2e_p999),
        &[Limit::Below(2_000_000.0)],
    ),
    Target::current(
        "requirement: P99 under 2 ms (helix-bench's reader)",
        Measure::Run(|run| p99_everywhere(run, "helix-bench")),
        &[Limit::Below(2_000_000.0)],
    ),
    Target::current(
        "requirement: P99 under 2 ms (ledger: ingest to the ledger reading the frame)",
        Measure::Run(|run| p99_everywhere(run, "helix-ledger")),
        &[Limit::Below(2_000_000.0)],
    ),
    Target::current(
        "requirement: P99 under 2 ms (twin: ingest to its alarm event reaching a reader)",
        Measure::Run(|run| p99_everywhere(run, "helix-twin")),
        &[Limit::Below(2_000_000.0)],
    ),
    // Gaps, failed verifications and frames missing, per placement.
    Target::current("e2e: no ledger gaps", Measure::Run(ledger_complete), &[Limit::AtMost(0.0)]),
    Target::current(
        "capacity: the largest stream count meeting the targets above (publish rate, P99 per reader, gaps, \
                verify), at least 50,000 x 100 Hz",
        Measure::Run(capacity_largest),
        &[Limit::AtLeast(50_000.0)],
    ),
    Target {
        table: Table::Current,
        label: "fan-in: one producer process, 64-byte records, at least 20 M records/s",
        missing: Some("fan-in: one producer process, 64-byte records, at least 20 M records/s"),
        measure: Measure::Run(fanin::one_producer),
        limits: &[Limit::AtLeast(20e6)],
    },
    Target {
        table: Table::Current,
        label: "fan-in: 4 producer processes, 64-byte records, at least 10 M records/s in total, \
                no lane below 0.8 of the mean share",
        missing: Some("fan-in: 4 producer processes, at least 10 M records/s in total, no lane below 0.8"),
        measure: Measure::Run(fanin::four_producers),
        // The rate first, then the smallest share.
        limits: &[Limit::AtLeast(10e6), Limit::AtLeast(0.8)],
    },
    Target {
        table: Table::Current,
        label: "fan-in round trip (a record in, the answer back through a broadcast ring), spinning: median \
                within 2x the broadcast ring's spinning round trip ({size}-byte frames)",
        missing: Some("fan-in spinning round trip within 2x the broadcast ring's"),
        measure: Measure::Run(fanin::spin_round_trip),
        limits: &[Limit::AtMost(2.0)],
    },
    Target {
        table: Table::Current,
        label: "control: command to effect with {control_scale} flowing (send to the first frame written under \
                the command), P99 under 2 ms",
        missing: Some("control: command to effect, P99 under 2 ms"),
        measure: Measure::Run(control::effect_p99),
        limits: &[Limit::Below(2_000_000.0)],
    },
    Target {
        table: Table::Current,
        label: "helix-bridge: at least 1 M 64-byte frames/s through one export, JetStream (R1), import",
        missing: Some("helix-bridge: at least 1 M frames/s through JetStream (R1)"),
        measure: Measure::Run(bridge::r1_rate),
        limits: &[Limit::AtLeast(1e6)],
    },
    Target {
        table: Table::Current,
        label: "helix-bridge: host-to-host P99 under 10 ms at 100 k 64-byte frames/s, three-node cluster (R3)",
        missing: Some("helix-bridge: host-to-host P99 under 10 ms at 100 k frames/s (R3)"),
        measure: Measure::Run(bridge::r3_p99),
        limits: &[Limit::Below(10_000_000.0)],
    },
    Target {
        table: Table::Current,
        label: "helix-ledger replay: at least 5 M 40-byte telemetry frames/s into a ring at --pace max",
        missing: Some("helix-ledger replay: at least 5 M frames/s"),
        measure: Measure::Run(replay_rate),
        limits: &[Limit::AtLeast(5e6)],
    },
    Target {
        table: Table::Earlier,
        label: "ring core: streaming 64-byte frames with batching, at least 20 M frames/s median",
        missing: Some("ring core: streaming at least 20 M frames/s"),
        measure: Measure::Run(ring_core),
        limits: &[Limit::AtLeast(20e6)],
    },
    Target {
        table: Table::Earlier,
        label: "helix-ledger: at least 1 M 32-byte frames/s sustained, fsync every 10 ms",
        missing: Some("helix-ledger: at least 1 M 32-byte frames/s"),
        measure: Measure::Run(ledger_rate),
        limits: &[Limit::AtLeast(1e6)],
    },
    Target {
        table: Table::Earlier,
        label: "helix-twin CPU at {scale}: under 25% of one core",
        missing: None,
        measure: Measure::Run(twin_cpu),
        limits: &[Limit::Below(25.0)],
    },
];

/// One target.
struct Target {
    /// The table its row is in.
    table: Table,
    /// The row's label. `{size}` stands for [`TARGET_SIZE`], `{scale}` for
    /// the e2e scale (streams x rate), `{layout}` for an e2e run's CPU
    /// placement.
    label: &'static str,
    /// The label of a "not measured" row, when the scenario ran but gave no
    /// figure; `None`: no row then.
    missing: Option<&'static str>,
    /// How its figures are taken from the run.
    measure: Measure,
    /// What the figures must satisfy: the first figure the first limit and
    /// so on, the last limit every figure after.
    limits: &'static [Limit],
}

impl Target {
    /// A row of this table with no "not measured" row.
    const fn current(label: &'static str, measure: Measure, limits: &'static [Limit]) -> Target {
        Target { table: Table::Current, label, missing: None, measure, limits }
    }
}

/// The two tables: this targets, and earlier issues' measured
/// again.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Table {
    Current,
    Earlier,
}

/// Where a target's figures come from.
enum Measure {
    /// The run as a whole: one row.
    Run(fn(&Run) -> Outcome),
    /// Each e2e run: one row per CPU placement. Consecutive targets of this
    /// kind are taken together, placement by placement.
    EachE2e(fn(&e2e::Results) -> Outcome),
}

/// A target's figures in one run.
pub(super) enum Outcome {
    /// Measured: what the row shows, and the figures held against the
    /// limits.
    Figure(String, Vec<f64>),
    /// The scenario ran but gave no figure: a "not measured" row, if the
    /// target has a label for one.
    Missing,
    /// The scenario did not run: no row.
    Absent,
}

/// A threshold and how a figure must compare with it.
#[derive(Clone, Copy)]
enum Limit {
    Below(f64),
    AtMost(f64),
    AtLeast(f64),
}

impl Limit {
    fn met(self, x: f64) -> bool {
        match self {
            Limit::Below(t) => x < t,
            Limit::AtMost(t) => x <= t,
            Limit::AtLeast(t) => x >= t,
        }
    }
}

impl Target {
    /// Whether every figure is within its limit.
    fn met(&self, figures: &[f64]) -> bool {
        let limit = |i: usize| self.limits[i.min(self.limits.len() - 1)];
        figures.iter().enumerate().all(|(i, &x)| limit(i).met(x))
    }

    /// Its row for `outcome`, if it has one; `layout` fills `{layout}`.
    fn row(&self, md: &mut String, run: &Run, outcome: Outcome, layout: &str) {
        let fill = |label: &str| {
            let scale = run.e2e.first().map_or(String::new(), |(_, e)| scale(&e.results));
            let control_scale = run.control.as_ref().map_or(String::new(), |(_, c)| control::scale(&c.results));
            label
                .replace("{size}", &TARGET_SIZE.to_string())
                .replace("{scale}", &scale)
                .replace("{layout}", layout)
                .replace("{control_scale}", &control_scale)
        };
        let (label, shown, met) = match outcome {
            Outcome::Figure(shown, figures) => (fill(self.label), shown, Some(self.met(&figures))),
            Outcome::Missing => match self.missing {
                Some(label) => (fill(label), String::new(), None),
                None => return,
            },
            Outcome::Absent => return,
        };
        let met = match met {
            Some(true) => "met",
            Some(false) => "**not met**",
            None => "not measured",
        };
        let _ = writeln!(md, "| {label} | {shown} | {met} |");
    }
}

/// "10,000 streams x 100 Hz".
fn scale(r: &e2e::Results) -> String {
    format!("{} streams x {} Hz", group(r.streams as u64), r.rate_hz)
}

pub(super) fn section(md: &mut String, run: &Run) {
    md.push_str("## Targets\n\n| target | measured in this run | met |\n|---|---|---|\n");
    rows(md, run, Table::Current);
    md.push_str(
        "\nEarlier issues' targets, measured again in this run:\n\n| target | measured | met |\n|---|---|---|\n",
    );
    rows(md, run, Table::Earlier);
    md.push('\n');
}

/// The rows of `table`, in the order of [`TARGETS`].
fn rows(md: &mut String, run: &Run, table: Table) {
    let targets: Vec<&Target> = TARGETS.iter().filter(|t| t.table == table).collect();
    let mut i = 0;
    while i < targets.len() {
        // A run of per-placement targets goes placement by placement.
        let n = targets[i..].iter().take_while(|t| matches!(t.measure, Measure::EachE2e(_))).count();
        if n == 0 {
            if let Measure::Run(measure) = targets[i].measure {
                targets[i].row(md, run, measure(run), "");
            }
            i += 1;
            continue;
        }
        for (_, e) in &run.e2e {
            let layout = e.results.placement.describe();
            for t in &targets[i..i + n] {
                if let Measure::EachE2e(measure) = t.measure {
                    t.row(md, run, measure(&e.results), &layout);
                }
            }
        }
        i += n;
    }
}

/// The pingpong results at [`TARGET_SIZE`], if measured.
fn at_target_size(run: &Run) -> Option<&pingpong::SizeResult> {
    run.pingpong.as_ref()?.results.sizes.iter().find(|s| s.size == TARGET_SIZE)
}

/// Runs of the pingpong measurement.
fn pingpong_runs(run: &Run) -> usize {
    run.pingpong.as_ref().map_or(0, |p| p.results.params.args.runs)
}

fn spin_ratio(run: &Run) -> Outcome {
    ratio_to(run, "helix-spin", "atomic", &format!("median of {} runs, ", pingpong_runs(run)))
}

/// `helix`'s median RTT ratio to `baseline`'s at [`TARGET_SIZE`]: shown
/// with both medians, `note`, and the ratio of each run.
fn ratio_to(run: &Run, helix: &str, baseline: &str, note: &str) -> Outcome {
    let Some(s) = at_target_size(run) else { return Outcome::Missing };
    ratio_figure(s, helix, baseline, note)
}

/// The median ratio `num / den` in `s` with both medians, `note`, and the
/// per-run ratios, if both were measured.
pub(super) fn ratio_figure(s: &pingpong::SizeResult, num: &str, den: &str, note: &str) -> Outcome {
    let (Some(r), Some(n), Some(d)) = (s.ratio(num, den), s.transport(num), s.transport(den)) else {
        return Outcome::Missing;
    };
    let shown = format!(
        "**{:.2}x** ({} vs {}; {note}per run {})",
        r.median,
        fmt_ns(n.median_p50_ns as u64),
        fmt_ns(d.median_p50_ns as u64),
        ratios(&r.per_run)
    );
    Outcome::Figure(shown, vec![r.median])
}

fn spin_p99(run: &Run) -> Outcome {
    let Some(h) = at_target_size(run).and_then(|s| s.transport("helix-spin")) else { return Outcome::Missing };
    let p99: Vec<f64> = h.runs.iter().map(|m| m.summary.p99 as f64).collect();
    let med = median(p99.clone());
    let shown = format!(
        "**{}** (median of {} runs; per run {})",
        fmt_ns(med as u64),
        pingpong_runs(run),
        p99.iter().map(|&x| fmt_ns(x as u64)).collect::<Vec<_>>().join(", ")
    );
    Outcome::Figure(shown, vec![med])
}

fn park_ratio(run: &Run) -> Outcome {
    ratio_to(run, "helix-park", "futex", "")
}

/// helix-park's ratios to each of `baselines` at [`TARGET_SIZE`] in `s`,
/// if all were measured: what the row shows, and the ratios.
fn park_against(s: &pingpong::SizeResult, baselines: &[&str]) -> Option<Outcome> {
    let rs: Vec<&pingpong::Ratio> = baselines.iter().filter_map(|d| s.ratio("helix-park", d)).collect();
    (rs.len() == baselines.len()).then(|| {
        let shown = rs.iter().map(|r| format!("{:.2}x {}", r.median, r.denominator)).collect::<Vec<_>>().join(", ");
        Outcome::Figure(shown, rs.iter().map(|r| r.median).collect())
    })
}

fn park_below_kernel(run: &Run) -> Outcome {
    match at_target_size(run) {
        Some(s) => park_against(s, &["pipe", "unix-stream", "unix-dgram"]).unwrap_or(Outcome::Missing),
        None => Outcome::Absent,
    }
}

fn one_cpu(run: &Run) -> Outcome {
    let one = run.pingpong_one_cpu.as_ref().and_then(|(_, d)| d.results.sizes.iter().find(|s| s.size == TARGET_SIZE));
    one.and_then(|s| park_against(s, &["futex", "pipe", "unix-stream", "unix-dgram"])).unwrap_or(Outcome::Absent)
}

/// The latency of helix-bench's own reader in an e2e run.
fn bench_latency(r: &e2e::Results) -> Option<&crate::stats::Summary> {
    r.reader("helix-bench")?.latency.as_ref()
}

fn e2e_p99(r: &e2e::Results) -> Outcome {
    match bench_latency(r) {
        Some(l) => Outcome::Figure(
            format!("**{}** (helix-bench's attached reader, {} samples)", fmt_ns(l.p99), group(l.count)),
            vec![l.p99 as f64],
        ),
        None => Outcome::Missing,
    }
}

fn e2e_p999(r: &e2e::Results) -> Outcome {
    match bench_latency(r) {
        Some(l) => Outcome::Figure(format!("**{}**", fmt_ns(l.p999)), vec![l.p999 as f64]),
        None => Outcome::Absent,
    }
}

/// Reader `name`'s P99 in every e2e run.
fn p99_everywhere(run: &Run, name: &str) -> Outcome {
    let p99s: Vec<(String, u64)> = run
        .e2e
        .iter()
        .filter_map(|(_, e)| {
            let l = e.results.reader(name)?.latency.as_ref()?;
            Some((e.results.placement.describe(), l.p99))
        })
        .collect();
    if p99s.is_empty() {
        return Outcome::Absent;
    }
    let shown = p99s.iter().map(|(layout, p)| format!("{} ({layout})", fmt_ns(*p))).collect::<Vec<_>>().join("; ");
    Outcome::Figure(shown, p99s.iter().map(|&(_, p)| p as f64).collect())
}

fn ledger_complete(run: &Run) -> Outcome {
    if run.e2e.is_empty() {
        return Outcome::Absent;
    }
    let checks: Vec<&e2e::LedgerCheck> = run.e2e.iter().map(|(_, e)| &e.results.ledger).collect();
    let shown = checks
        .iter()
        .map(|lg| {
            format!(
                "{} gaps, {} frames recorded of {} published, verify {}",
                lg.gaps,
                group(lg.frames),
                group(lg.published),
                if lg.verified { "ok" } else { "FAILED" }
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    let problems =
        |lg: &e2e::LedgerCheck| (lg.gaps + u64::from(!lg.verified) + lg.published.abs_diff(lg.frames)) as f64;
    Outcome::Figure(shown, checks.iter().map(|lg| problems(lg)).collect())
}

fn capacity_largest(run: &Run) -> Outcome {
    let Some((_, doc)) = &run.capacity else { return Outcome::Absent };
    let r = &doc.results;
    let counts = r.counts.iter().map(|c| group(u64::from(c.streams))).collect::<Vec<_>>().join(", ");
    let shown = match r.largest {
        Some(n) => {
            format!("**{}** streams x {} Hz (of {counts} measured; see Capacity)", group(u64::from(n)), r.rate_hz)
        }
        None => format!("**none** of {counts} x {} Hz (see Capacity)", r.rate_hz),
    };
    Outcome::Figure(shown, vec![f64::from(r.largest.unwrap_or(0))])
}

fn ring_core(run: &Run) -> Outcome {
    let best = run
        .streams
        .iter()
        .flat_map(|d| &d.results.cases)
        .find(|c| c.size == 64 && c.batch == 64 && c.readers == 1 && c.gating);
    match best {
        Some(c) => Outcome::Figure(
            format!("{} frames/s to one gating reader process, {} lost", mfps(c.reader_fps), c.lost()),
            vec![c.reader_fps],
        ),
        None => Outcome::Missing,
    }
}

fn ledger_rate(run: &Run) -> Outcome {
    let case = run.ledger.as_ref().and_then(|l| l.results.throughput.iter().find(|c| c.size == 32 && c.fsync_ms == 10));
    match case {
        Some(c) => Outcome::Figure(
            format!("{} frames/s ({:.0} MB/s of records), lossless", mfps(c.frames_per_sec), c.mb_per_sec),
            vec![c.frames_per_sec],
        ),
        None => Outcome::Missing,
    }
}

fn replay_rate(run: &Run) -> Outcome {
    match run.ledger.as_ref().and_then(|l| l.results.replay.as_ref()) {
        Some(r) => Outcome::Figure(
            format!(
                "{} frames/s (blocks of {} frames, the chain verified on the way)",
                mfps(r.frames_per_sec),
                r.block
            ),
            vec![r.frames_per_sec],
        ),
        None => Outcome::Missing,
    }
}

fn twin_cpu(run: &Run) -> Outcome {
    let Some((_, e)) = run.e2e.first() else { return Outcome::Absent };
    match e.results.cpu.iter().find(|c| c.process == "helix-twin") {
        Some(c) => {
            Outcome::Figure(format!("{:.1}% (with the ledger and helix-bench attached)", c.percent), vec![c.percent])
        }
        None => Outcome::Absent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_targets_hold_each_figure_against_its_threshold() {
        assert!(Limit::Below(1.0).met(0.99) && !Limit::Below(1.0).met(1.0));
        assert!(Limit::AtMost(1.1).met(1.1) && !Limit::AtMost(1.1).met(1.11));
        assert!(Limit::AtLeast(20e6).met(20e6) && !Limit::AtLeast(20e6).met(19.9e6));
        let one_cpu = TARGETS.iter().find(|t| t.label.starts_with("the same, both")).unwrap();
        // The futex within 1.1x, every other baseline below 1.
        assert!(one_cpu.met(&[1.1, 0.9, 0.99, 0.5]));
        assert!(!one_cpu.met(&[1.1, 0.9, 1.0, 0.5]));
        assert!(!one_cpu.met(&[1.2, 0.9, 0.9, 0.5]));
        assert!(TARGETS.iter().all(|t| !t.limits.is_empty()));
    }
}
