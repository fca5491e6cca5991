//! The capacity table, one row per stream count, in Markdown: what
//! `helix-bench capacity` prints and docs/PERFORMANCE.md shows.

use std::fmt::Write as _;

use super::judge::Figures;
use super::Results;
use crate::command::render::group;
use crate::stats::fmt_ns;

/// The table of `r`: per count, samples due and published, each reader's
/// P99, the ledger's gaps and verification, each process's CPU per sample,
/// the ledger's bytes per frame, and whether the count meets the targets.
pub fn table(r: &Results) -> String {
    let mut md = String::from(
        "| streams | published of due | reader P99 | ledger P99 | twin P99 | gaps | verify | \
         CPU ns/sample: helixd | helix-ledger | helix-twin | helix-bench | ledger bytes/frame | writer waits | \
         meets the targets |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for c in &r.counts {
        let n = group(u64::from(c.streams));
        let _ = match &c.figures {
            Some(f) => writeln!(md, "| {n} | {} | {} |", row(f), if c.verdict.meets { "yes" } else { "**no**" }),
            None => writeln!(md, "| {n} |{} **no**: the run failed |", " - |".repeat(12)),
        };
    }
    md
}

/// The cells of a measured count, from "published of due" to "writer
/// waits".
fn row(f: &Figures) -> String {
    let p99 = |x: Option<u64>| x.map_or("-".into(), fmt_ns);
    let ns = |x: Option<f64>| x.map_or("-".into(), |v| format!("{v:.0}"));
    [
        format!("{} of {} ({:.2}%)", group(f.published), group(f.due), f.published_percent),
        p99(f.reader_p99_ns),
        p99(f.ledger_p99_ns),
        p99(f.twin_p99_ns),
        f.gaps.to_string(),
        (if f.verified { "ok" } else { "**failed**" }).into(),
        ns(f.cpu_ns.helixd),
        ns(f.cpu_ns.ledger),
        ns(f.cpu_ns.twin),
        ns(f.cpu_ns.reader),
        f.bytes_per_frame.map_or("-".into(), |b| format!("{b:.1}")),
        group(f.writer_waits),
    ]
    .join(" | ")
}

/// The goals each count misses (reported beside the targets, not
/// deciding), one line each; empty if none is missed.
pub fn goals_missed(r: &Results) -> String {
    let t = &r.targets;
    let mut s = String::new();
    for c in r.counts.iter().filter(|c| !c.verdict.goals_missed.is_empty()) {
        let _ = writeln!(s, "- {} streams: {}", group(u64::from(c.streams)), c.verdict.goals_missed.join("; "));
    }
    if s.is_empty() {
        return s;
    }
    format!(
        "Goals missed (reported, not deciding: reader P99 at most {}, helix-ledger at most {} ns of CPU per frame, \
         helixd at most {} ns per sample, at most {} ledger bytes per frame):\n\n{s}",
        fmt_ns(t.goal_reader_p99_ns),
        t.goal_ledger_ns_per_frame,
        t.goal_helixd_ns_per_sample,
        t.goal_bytes_per_frame
    )
}

/// The telemetry ring's size, and the seconds of samples it held at the
/// smallest and the largest count measured.
pub fn ring(r: &Results) -> Option<String> {
    let measured: Vec<(u32, &Figures)> =
        r.counts.iter().filter_map(|c| Some((c.streams, c.figures.as_ref()?))).collect();
    let held = |&(n, f): &(u32, &Figures)| {
        format!("{} slots at {} streams ({:.2} s of samples)", group(f.ring_slots), group(u64::from(n)), f.ring_seconds)
    };
    let (first, last) = (measured.first()?, measured.last()?);
    let sizes = if measured.len() == 1 { held(first) } else { format!("{} and {}", held(first), held(last)) };
    Some(format!("The telemetry ring had {sizes}: a gating ledger further behind than that holds the writer back."))
}

#[cfg(test)]
mod tests {
    use super::super::judge::{tests::run, CountResult, Targets};
    use super::super::{conclusion, largest, Placement};
    use super::*;

    #[test]
    fn each_count_is_a_row_and_the_ring_is_described() {
        let t = Targets::default();
        let counts = vec![CountResult::measured(run(10_000), &t), CountResult::failed(50_000, "helixd exited".into())];
        let r = Results {
            rate_hz: 100.0,
            seconds: 10.0,
            warmup: 3.0,
            placement: Placement::all(&[0, 1]),
            fsync_ms: 10,
            wait: "park".into(),
            largest: largest(&counts),
            conclusion: conclusion(&counts),
            targets: t,
            counts,
        };
        let md = table(&r);
        let rows: Vec<&str> = md.lines().collect();
        assert_eq!(rows.len(), 4, "{md}");
        assert_eq!(rows[0].matches('|').count(), rows[1].matches('|').count());
        assert_eq!(
            rows[2],
            "| 10,000 | 10,000,000 of 10,000,000 (100.00%) | 100.00 us | 500.00 us | 900.00 us | 0 | ok | 500 | 800 \
             | 100 | 200 | 60.0 | 0 | yes |"
        );
        assert_eq!(rows[3].matches('|').count(), rows[0].matches('|').count(), "{md}");
        assert!(rows[3].starts_with("| 50,000 | - |") && rows[3].ends_with("**no**: the run failed |"), "{md}");
        // Only the measured count has a ring to describe.
        assert_eq!(
            ring(&r).unwrap(),
            "The telemetry ring had 4,194,304 slots at 10,000 streams (4.19 s of samples): a gating ledger further \
             behind than that holds the writer back."
        );
        assert!(
            goals_missed(&r).contains("- 10,000 streams: helix-ledger 800 ns CPU per frame"),
            "{}",
            goals_missed(&r)
        );
    }
}
