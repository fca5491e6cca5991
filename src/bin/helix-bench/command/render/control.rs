//! "Commands": the control path's round trip and command to effect with
//! the telemetry flowing; and the figure the targets take from them.

use std::fmt::Write as _;

use super::targets::Outcome;
use super::{command_of, group, Run};
use crate::command::control::Results;
use crate::document::Document;
use crate::stats::{fmt_ns, Summary};

pub(super) fn section(md: &mut String, run: &Run, json: &str, doc: &Document<Results>) {
    let r = &doc.results;
    let p = &r.params;
    let _ = write!(
        md,
        "## Commands: the control path\n\n    {}\n\n\
         helixd, helix-ledger (recording `telemetry` and `control.log`, fsync every {} ms) and helix-twin as \
         e2e runs them, {} flowing, {}. Each command is a `set`: helixd audits it on `control.log`, waits \
         until the ledger has read that record, hands it to the simulator, which applies it between two \
         commits, and answers on `control.acks` (docs/abi.md §12.6). Commands are sent one at a time, {} \
         per measurement, after {} s of warm-up.\n\n\
         | measurement | count | p50 | p90 | p99 | p99.9 | max |\n|---|---|---|---|---|---|---|\n",
        command_of(run, json, doc),
        p.fsync_ms,
        scale(r),
        p.placement.describe(),
        group(p.commands),
        p.warmup
    );
    for rt in &r.round_trip {
        row(md, &format!("round trip: send to answer, waiting `{}`", rt.wait), &rt.latency);
    }
    let e = &r.effect;
    row(md, "command to effect: send to the first frame written under it", &e.applied);
    row(md, "command to effect: send to its answer (this reader)", &e.answered);
    row(md, "command to effect: send to this reader having the stream's first steered sample", &e.steered);
    let _ = write!(
        md,
        "\nThe round trips wait for each answer (`Control::send`); command to effect sends without waiting \
         and reads `telemetry` (waiting `{}`) and `control.acks` meanwhile. **Applied** is the \
         `ingest_ns` of the frame the answer names (`ring_seq`: the first frame helixd wrote after the \
         simulator took the command) minus the send time, one clock (CLOCK_MONOTONIC): the command is in \
         effect then, and that is the target's figure. The stream's first sample that reflects a setpoint \
         (`stream_seq`) comes with the stream's next sample, up to one sampling period ({}) later, so its \
         row is bounded below by the sampling, not by the control path. {} command(s) left out: this \
         reader was overrun meanwhile.\n\n",
        e.wait,
        fmt_ns((1e9 / p.rate_hz) as u64),
        e.skipped
    );
}

fn row(md: &mut String, name: &str, s: &Summary) {
    let [p50, p90, p99, p999, _, max] = s.percentiles().map(fmt_ns);
    let _ = writeln!(md, "| {name} | {} | {p50} | {p90} | {p99} | {p999} | {max} |", group(s.count));
}

/// "10,000 streams x 100 Hz".
pub(super) fn scale(r: &Results) -> String {
    format!("{} streams x {} Hz", group(u64::from(r.params.streams)), r.params.rate_hz)
}

pub(super) fn effect_p99(run: &Run) -> Outcome {
    let Some((_, doc)) = &run.control else { return Outcome::Absent };
    let e = &doc.results.effect;
    if e.applied.count == 0 {
        return Outcome::Missing;
    }
    let shown = format!(
        "**{}** (p50 {}, {} commands; the stream's first steered sample read: p99 {})",
        fmt_ns(e.applied.p99),
        fmt_ns(e.applied.p50),
        group(e.applied.count),
        fmt_ns(e.steered.p99)
    );
    Outcome::Figure(shown, vec![e.applied.p99 as f64])
}
