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
    let (&(n0, f0), &(n1, f1)) = (measured.first()?, measured.last()?);
    Some(format!(
        "The telemetry ring had {} slots at {} streams ({:.2} s of samples) and {} at {} ({:.2} s): a gating ledger \
         further behind than that holds the writer back.",
        group(f0.ring_slots),
        group(u64::from(n0)),
        f0.ring_seconds,
        group(f1.ring_slots),
        group(u64::from(n1)),
        f1.ring_seconds
    ))
}
