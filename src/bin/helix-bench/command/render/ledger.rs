//! "helix-ledger": the ledger's throughput and the latency it adds to
//! the writer.

use std::fmt::Write as _;

use super::{command_of, group, mfps, Run};
use crate::command::ledger::{self, replay, signing};
use crate::document::Document;
use crate::stats::fmt_ns;

pub(super) fn section(md: &mut String, run: &Run, doc: &Document<ledger::Results>) {
    let r = &doc.results;
    let _ = write!(
        md,
        "## helix-ledger\n\n    {}\n\n\
         The real `helix-ledger` records a block ring of its own (writer {}, ledgers in `{}`) while \
         {} frames are published as fast as it takes them; frames/s is from the first frame published to \
         the last one the ledger released (written), MB/s counts the segment bytes written (a 32-byte frame \
         takes 40 bytes in a block, ledger format 2: its length and kind, the payload, and a share of the \
         block's 72 bytes of header and hash). Each row is the run with \
         the median frames/s of {}:\n\n\
         | frame | fsync interval | frames/s | MB/s written | fsyncs | writer waits |\n|---|---|---|---|---|---|\n",
        command_of(run, "ledger.json", doc),
        match r.cpus.as_slice() {
            [w, l, ..] => format!("on CPU {w}, ledger on CPU {l}"),
            _ => "and ledger not pinned".into(),
        },
        r.dir,
        group(r.frames),
        runs_phrase(r.runs)
    );
    for c in &r.throughput {
        let _ = writeln!(
            md,
            "| {} B | {} ms | {} | {:.0} | {} | {} |",
            c.size,
            c.fsync_ms,
            mfps(c.frames_per_sec),
            c.mb_per_sec,
            c.median.syncs.map_or("?".into(), |s| s.to_string()),
            c.median.writer_waits
        );
    }
    if r.writer_latency.len() == 2 {
        let _ = write!(
            md,
            "\nThe latency a gating ledger adds to the writer: a writer paced at {} frames/s of {} bytes \
             (batches of 100), {:.1} s measured after a tenth of that as warm-up, each `publish` call timed:\n\n\
             | writer | p50 | p99 | p99.9 | p99.99 | max | writer waits |\n|---|---|---|---|---|---|---|\n",
            group(r.latency_rate),
            r.latency_size,
            r.latency_secs
        );
        for w in &r.writer_latency {
            let s = &w.publish;
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} |",
                if w.with_ledger { "gating ledger (fsync 10 ms)" } else { "no reader" },
                fmt_ns(s.p50),
                fmt_ns(s.p99),
                fmt_ns(s.p999),
                fmt_ns(s.p9999),
                fmt_ns(s.max),
                w.writer_waits
            );
        }
    }
    if let Some(rp) = &r.replay {
        replay_section(md, rp);
    }
    if let Some(s) = &r.signing {
        signing_line(md, s);
    }
    md.push_str(
        "\nWith small frames the ledger is bound by its own CPU (hashing, copying, `write(2)` into the page \
         cache); with 1 KiB frames by the disk: the ring fills and the writer waits for the ledger (the \
         lossless `block` policy doing its job), whatever the fsync interval. fsync counts below the \
         interval's budget mean the syncs took longer than the interval (a thread of the ledger's own runs \
         them, one at a time, so recording does not wait for them, except for the sync of a full segment \
         when the next one starts). The ledger polls every half millisecond \
         while frames flow instead of parking, so the writer never pays a `FUTEX_WAKE` for it.\n\n",
    );
}

/// Replay: frames/s at `--pace max` and the paced runs.
fn replay_section(md: &mut String, rp: &replay::ReplayResults) {
    let _ = write!(
        md,
        "\n`helix-ledger replay --pace max` (the library's replay, which the program runs): {} recorded \
         {}-byte telemetry frames, in blocks of {} as the recorder writes them, walked from the ledger's \
         first segment with the chain verified on the way and published into a ring with no reader, \
         median of {}: **{} frames/s** (target: at least 5 M). Paced, a recorded second:",
        group(rp.runs.first().map_or(0, |r| r.frames)),
        rp.size,
        rp.block,
        runs_phrase(rp.runs.len()),
        mfps(rp.frames_per_sec)
    );
    let paced: Vec<String> = rp
        .paced
        .iter()
        .map(|p| {
            let late = (p.seconds / p.expected_seconds - 1.0) * 100.0;
            format!(" x{} took {:.3} s for {:.3} s due ({late:+.1}%)", p.factor, p.seconds, p.expected_seconds)
        })
        .collect();
    md.push_str(&paced.join(";"));
    md.push_str(
        ". A paced replay sleeps until each block is due, so it runs late by the sleep's wake-up \
         (tens of microseconds a block) and by what publishing a block takes, never early.\n",
    );
}

/// "the one run" or "N runs".
fn runs_phrase(n: usize) -> String {
    if n == 1 {
        "the one run".to_owned()
    } else {
        format!("{n} runs")
    }
}

/// Signed checkpoints: the time of one and its share of the ledger's CPU.
fn signing_line(md: &mut String, s: &signing::Signing) {
    let _ = write!(
        md,
        "\nSigned checkpoints (Ed25519, docs/ledger.md): {:.1} µs per checkpoint (signature, chain hash and \
         its own `write(2)`, the mean of {} checkpoints, median of the runs); at the default interval ({} s) and {:.2} segment closes/s \
         while recording {} B frames flat out (fsync {} ms), signing takes **{}** (target: below 1% of the \
         ledger's CPU).\n",
        s.ns_per_checkpoint / 1e3,
        s.checkpoints,
        s.interval_s,
        s.segment_closes_per_sec,
        s.size,
        s.fsync_ms,
        s.share()
    );
}
