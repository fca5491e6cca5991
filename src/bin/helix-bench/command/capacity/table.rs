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
        let _ = match &c.figures {
            Some(f) => {
                writeln!(md, "| {} | {} | {} |", c.streams, row(f), if c.verdict.meets { "yes" } else { "**no**" })
            }
            None => writeln!(md, "| {} |{} **no**: the run failed |", c.streams, " - |".repeat(12)),
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
        let _ = writeln!(s, "- {} streams: {}", c.streams, c.verdict.goals_missed.join("; "));
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
