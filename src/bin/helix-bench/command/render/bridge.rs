//! "Across hosts": helix-bridge through NATS JetStream, one server (R1)
//! or a three-node cluster (R3); and the figures the targets take from it.

use std::fmt::Write as _;

use super::targets::Outcome;
use super::{command_of, group, mfps, Run};
use crate::command::bridge::{Case, Results};
use crate::document::Document;
use crate::stats::fmt_ns;

pub(super) fn section(md: &mut String, run: &Run, json: &str, doc: &Document<Results>) {
    let _ = write!(
        md,
        "## Across hosts: helix-bridge through NATS JetStream\n\n    {}\n\n\
         Two HELIX \"hosts\" on this machine (two ring namespaces): a writer on host A, `helix-bridge export` \
         (gating) publishing to a JetStream stream on loopback, one nats-server (replicas 1) or a three-node \
         cluster (replicas 3), `helix-bridge import` writing host B's ring, and this program reading it. \
         **Flat out**: the writer as fast as the exporter lets it, first publish on A to last receipt on B. \
         **Paced**: then frames at a fixed rate; the latency is each frame's publish on A (its first 8 bytes) \
         to its receipt on B, one clock. **On disk**: the stream's files after the flat-out run, per frame \
         and replica (docs/scale-out.md).\n\n\
         | replicas | frame | frames | flat out: frames/s | MB/s | on disk, B/frame | paced: frames/s | p50 | p99 | max |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
        command_of(run, json, doc),
    );
    for c in &doc.results.cases {
        let _ = writeln!(
            md,
            "| R{} | {} B | {} | {} | {:.1} | {:.1} | {} | {} | {} | {} |",
            c.replicas,
            c.size,
            group(c.frames),
            mfps(c.frames_per_sec),
            c.mb_per_sec,
            c.store_bytes_per_frame,
            group(c.rate),
            fmt_ns(c.latency.p50),
            fmt_ns(c.latency.p99),
            fmt_ns(c.latency.max)
        );
    }
    md.push('\n');
}

/// The case of `replicas` and 64-byte frames, if the bridge ran.
fn case(run: &Run, replicas: usize) -> Result<&Case, Outcome> {
    let Some((_, doc)) = &run.bridge else { return Err(Outcome::Absent) };
    doc.results.cases.iter().find(|c| c.replicas == replicas && c.size == 64).ok_or(Outcome::Missing)
}

/// Flat-out frames/s, R1, 64-byte frames.
pub(super) fn r1_rate(run: &Run) -> Outcome {
    match case(run, 1) {
        Ok(c) => Outcome::Figure(
            format!("**{}** frames/s ({} frames, {:.1} MB/s)", mfps(c.frames_per_sec), group(c.frames), c.mb_per_sec),
            vec![c.frames_per_sec],
        ),
        Err(o) => o,
    }
}

/// Paced publish-to-receipt P99, R3, 64-byte frames, at 100 k frames/s or more.
pub(super) fn r3_p99(run: &Run) -> Outcome {
    match case(run, 3) {
        Ok(c) if c.rate >= 100_000 && c.latency.count > 0 => Outcome::Figure(
            format!(
                "**{}** (p50 {}, max {}; {} frames at {} frames/s)",
                fmt_ns(c.latency.p99),
                fmt_ns(c.latency.p50),
                fmt_ns(c.latency.max),
                group(c.latency.count),
                group(c.rate)
            ),
            vec![c.latency.p99 as f64],
        ),
        Ok(_) => Outcome::Missing,
        Err(o) => o,
    }
}
