//! "End to end": helixd, helix-ledger, helix-twin and a reader, one
//! table per CPU placement, and how each latency is measured.

use std::fmt::Write as _;

use super::{command_of, group, Run};
use crate::command::e2e;
use crate::document::Document;
use crate::stats::fmt_ns;

pub(super) fn section(md: &mut String, run: &Run) {
    let Some((_, first)) = run.e2e.first() else { return };
    let r = &first.results;
    let _ = write!(
        md,
        "## End to end: helixd, helix-ledger, helix-twin and a reader\n\n\
         helixd's simulated HAL writes {} streams x {} Hz ({} samples/s of 40 bytes) into a `telemetry` \
         block ring of {} slots; the real helix-ledger records it (gating, fsync every {} ms), the real \
         helix-twin models it (non-gating, its default rules) and publishes state and alarms, and helix-bench \
         attaches as one more non-gating reader ({}). All in a private namespace. After {:.1} s of warm-up, \
         {:.1} s were measured, {}.\n\n",
        group(r.streams as u64),
        r.rate_hz,
        group((f64::from(r.streams) * r.rate_hz) as u64),
        group(r.capacity),
        r.fsync_ms,
        r.wait,
        r.warmup,
        r.seconds,
        if run.e2e.len() > 1 { "once for each placement of the processes on the CPUs" } else { "once" }
    );
    for (json, doc) in &run.e2e {
        e2e_run(md, run, json, doc);
    }
    let placements: Vec<&e2e::Placement> = run.e2e.iter().map(|(_, e)| &e.results.placement).collect();
    if placements.iter().any(|p| p.shared()) && placements.iter().any(|p| !p.shared()) {
        md.push_str(
            "**Why the placement matters.** helixd's simulator thread publishes a batch every hundred \
             microseconds or so and wakes the parked reader. Sharing both CPUs, the reader is usually woken on \
             the other CPU, which makes its wake-up a cross-CPU one: if that CPU is idle it has halted, and on a \
             virtual machine that does not poll before halting (see the machine above) it runs again only when \
             the hypervisor delivers the interrupt and schedules it, now and then hundreds of microseconds to \
             milliseconds later; if it is busy, the reader may be queued behind the ledger, which hashes and \
             writes in batches of up to a millisecond of CPU. With the ledger on a CPU of its own and the reader \
             beside helixd, the wake-up is local: the reader runs as soon as helixd's thread goes back to \
             sleep, and it shares its CPU only with short bursts (helixd's, the twin's, helix-bench's own). \
             `tools/trace-wakeups` takes a scheduler trace of an e2e run and splits each wait of the reader into \
             delivery and queueing (the notes at the end give one). An installation gets the same placement \
             with systemd's `CPUAffinity=` (docs/systemd.md).\n\n",
        );
    }
    let _ = write!(
        md,
        "**How each latency is measured.**\n\n\
         - helix-bench: each sample's `ingest_ns` (helixd's CLOCK_MONOTONIC, read when it claimed the batch \
         holding the sample) to the moment the reader had the frame, on the same clock: exact up to the cost \
         of a clock read. This is the reader the targets speak of.\n\
         - helix-ledger: the ledger stamps each record with `recv_ns`, CLOCK_REALTIME read just after it \
         has read the batch holding the frame. helix-bench converts each sample's `ingest_ns` to CLOCK_REALTIME \
         with an offset (realtime - monotonic) taken at the start of the window from the closest of 16 paired \
         clock readings (its uncertainty and its drift over the window are given with each run). Only samples \
         ingested inside the window count. The figure is ingest to the ledger holding the frame in memory; the \
         record reaches the page cache microseconds later and the disk at the next fsync. A negative difference \
         could only come from the clock offset's error; any is counted as 1 ns and reported with the run. The \
         ledger polls every half millisecond while frames flow (it never parks between batches, see above), so its \
         latency is mostly that period plus its own work (hashing, copying, `write(2)`, and a sync at each new \
         segment; the interval's fsync runs on a thread of its own), \
         by design: it trades latency nobody waits for against the writer's wake-up cost.\n\
         - helix-twin: it publishes no receipt time for telemetry, but every alarm event carries the \
         triggering sample's `ingest_ns` (docs/abi.md §10.3), so helix-bench measures ingest to the alarm \
         event reaching it through the `alarms` ring: the latency a consumer of the twin sees, on the same \
         clock, for the alarm events of the window (the simulator's spikes, raised and cleared by the \
         default rule; stale raises, timed by the twin's own clock, are left out; no events, no figure). The \
         simulator's spikes fall due together (every 50th stream at every 997th sample, about every 10 s at \
         100 Hz), so the events come in bursts of a few hundred and their latency includes the twin working \
         through the burst and publishing it; few bursts make for a coarse tail. \
         {} Its lag, sampled every 10 ms from its reader entry (frames published and not \
         yet consumed, as time at the configured rate), is in the table for every reader.\n\n",
        twin_reads(r.twin_poll_ms),
    );
}

/// How the twin read telemetry, with its `poll_interval_ms` of `ms`.
fn twin_reads(ms: u64) -> String {
    match ms {
        0 => "The twin reads telemetry as it comes (`poll_interval_ms = 0`): once it has read all there is, it \
              parks on the ring's futex until the next commit, so this latency is the wake-up and the twin's \
              work."
            .into(),
        ms => format!(
            "The twin reads telemetry in batches every `poll_interval_ms` ({ms} ms) while it flows, so this \
             latency is mostly that period."
        ),
    }
}

/// One e2e run: its command, the readers' table, CPU and the ledger check.
fn e2e_run(md: &mut String, run: &Run, json: &str, doc: &Document<e2e::Results>) {
    let r = &doc.results;
    let _ = write!(
        md,
        "### Placement: {}\n\n    {}\n\n\
         | reader | frames/s | overruns (lost) | lag p99 (max) | p50 | p90 | p99 | p99.9 | p99.99 | max | samples |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
        r.placement.describe(),
        command_of(run, json, doc),
    );
    for x in &r.readers {
        let lag = x.lag.as_ref().map_or("-".into(), |l| {
            format!("{} frames = {} ({})", group(l.p99_frames), fmt_ns(l.p99_ns), fmt_ns(l.max_ns))
        });
        let lat = x.latency.as_ref().map_or_else(
            || "| - ".repeat(6) + "| 0 |",
            |s| format!("| {} | {} |", s.percentiles().map(fmt_ns).join(" | "), group(s.count)),
        );
        let _ = writeln!(
            md,
            "| {} | {} | {} ({}) | {} {}",
            x.name,
            group(x.frames_per_sec.round() as u64),
            x.overruns,
            group(x.lost),
            lag,
            lat
        );
    }
    let l = &r.ledger;
    let _ = write!(
        md,
        "\nhelixd published {} frames/s in the window and waited for a gating reader {} times. CPU use over \
         the window (user + system, all threads, percent of one CPU, from `/proc/PID/stat`): {}. \
         {} alarm events reached helix-bench. Clock offset for the ledger's latency: uncertainty ±{} ns, drift \
         over the window {} ns; {} negative differences (by at most {}).\n\n\
         After the window helix-bench stopped helixd (SIGTERM), waited for the ledger to record helixd's last \
         frame, stopped the twin and then the ledger, and verified the ledger: {}, {} records in {} segment(s) \
         ({:.1} GB), {} frames of {} published, {} gaps ({} sequences lost), final hash `{}`.\n\n",
        group(r.frames_per_sec.round() as u64),
        r.writer_waits,
        r.cpu.iter().map(|c| format!("{} {:.1}%", c.process, c.percent)).collect::<Vec<_>>().join(", "),
        group(r.alarm_events),
        r.clock.uncertainty_ns,
        r.clock.drift_ns,
        group(l.negative),
        fmt_ns(l.most_negative_ns),
        if l.verified {
            "every hash verified".to_owned()
        } else {
            format!("**verify failed**: {}", l.problem.as_deref().unwrap_or(""))
        },
        group(l.records),
        l.segments,
        l.bytes as f64 / 1e9,
        group(l.frames),
        group(l.published),
        l.gaps,
        group(l.lost),
        if l.hash.len() > 16 { &l.hash[..16] } else { &l.hash }
    );
}
