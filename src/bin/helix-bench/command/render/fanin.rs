//! "Fan-in": producer processes into one consumer (rates in total and per
//! lane, fairness) and the request/response round trip through a fan-in
//! ring; and the figures the targets take from them.

use std::fmt::Write as _;

use super::targets::{ratio_figure, Outcome};
use super::{command_of, mfps, ratio, ratios, Run, TARGET_SIZE};
use crate::command::fanin::{rate, Results, RATIOS};
use crate::command::stream::wait_name;
use crate::document::Document;
use crate::stats::fmt_ns;

pub(super) fn section(md: &mut String, run: &Run, json: &str, doc: &Document<Results>) {
    let r = &doc.results;
    let p = &r.params.args;
    let _ = write!(
        md,
        "## Fan-in: many producer processes into one consumer\n\n    {}\n\n\
         Each producer process takes a lane of one fan-in ring and sends its records (each starting with \
         its sequence number) in batches of {} records: room claimed for the whole batch at once, the \
         records written, then published together; this process consumes, at most {} records \
         per lane per round, waiting with `{}`, copies every record out of its lane (the consumer's \
         checked copy) and checks its length, sequence and first bytes. Records/s are from the first \
         record delivered to the last; per lane, to that lane's last. A lane's **share** is the records \
         it delivered before the first lane delivered its last (while every producer still had records) \
         over the mean of all lanes': 1 is fair. {}; medians of {} run(s). Each producer sends {} \
         records, at most {} MB.\n\n\
         | producers | record | records/s in total (MB/s) | per lane records/s (median) | smallest share | \
         shares, run 1 |\n|---|---|---|---|---|---|\n",
        command_of(run, json, doc),
        p.batch,
        p.per_lane,
        wait_name(p.wait),
        if p.cpus.is_empty() {
            "Not pinned".to_owned()
        } else {
            format!("The consumer on CPU {}, producers over the others of {:?}", p.cpus[0], p.cpus)
        },
        p.runs,
        super::group(p.records),
        p.megabytes
    );
    for f in &r.flows {
        let shares = f.runs.first().map_or(String::new(), |run| {
            run.lanes.iter().map(|l| format!("{:.2}", l.share)).collect::<Vec<_>>().join(" ")
        });
        let _ = writeln!(
            md,
            "| {} | {} B | {} ({:.0} MB/s) | {} | {:.2} | {shares} |",
            f.producers,
            f.size,
            rate(f.records_per_sec),
            f.mb_per_sec,
            rate(f.lane_records_per_sec),
            f.min_share
        );
    }
    round_trip_table(md, r);
}

/// The round-trip table and its ratios.
fn round_trip_table(md: &mut String, r: &Results) {
    let p = &r.params;
    let _ = write!(
        md,
        "\nRequest/response: a record into a fan-in ring (this process its producer, the peer process its \
         consumer), the answer back through a broadcast ring (the peer its writer, this process a gating \
         reader), as a command and its acknowledgement travel; beside the broadcast ring both ways \
         (`helix-*`, as in the round-trip section), a Unix datagram socket and a pipe, in the same run. \
         {} round trips after {} of warm-up, {}, {} run(s).\n\n| transport | median round trip |\n|---|---|\n",
        super::group(p.args.iters),
        super::group(p.args.warmup),
        p.rtt_cpus.map_or("not pinned".to_owned(), |(a, b)| format!("this process on CPU {a} and the peer on CPU {b}")),
        p.args.runs
    );
    for s in &r.round_trip {
        for t in &s.transports {
            let _ = writeln!(md, "| {} ({} B) | {} |", t.transport, s.size, fmt_ns(t.median_p50_ns as u64));
        }
        for (num, den) in RATIOS {
            if let Some(x) = s.ratio(num, den) {
                let _ = writeln!(
                    md,
                    "| ratio {num} / {den} ({} B) | {}x (per run {}) |",
                    s.size,
                    ratio(x.median),
                    ratios(&x.per_run)
                );
            }
        }
    }
    md.push('\n');
}

/// The fan-in results, if the report ran them.
fn results(run: &Run) -> Option<&Results> {
    run.fanin.as_ref().map(|(_, d)| &d.results)
}

/// A flow's rate (and its smallest share if `fair`) at 64 bytes.
fn flow_outcome(run: &Run, producers: usize, fair: bool) -> Outcome {
    let Some(r) = results(run) else { return Outcome::Absent };
    let Some(f) = r.flow(producers, 64) else { return Outcome::Missing };
    let rates: Vec<f64> = f.runs.iter().map(|x| x.records_per_sec).collect();
    let per_run = rates.iter().map(|&x| mfps(x)).collect::<Vec<_>>().join(", ");
    let mut shown =
        format!("**{} records/s** (median of {} runs; per run {per_run})", mfps(f.records_per_sec), f.runs.len());
    let mut figures = vec![f.records_per_sec];
    if fair {
        let _ = write!(shown, "; smallest share **{:.2}**", f.min_share);
        figures.push(f.min_share);
    }
    Outcome::Figure(shown, figures)
}

pub(super) fn one_producer(run: &Run) -> Outcome {
    flow_outcome(run, 1, false)
}

pub(super) fn four_producers(run: &Run) -> Outcome {
    flow_outcome(run, 4, true)
}

pub(super) fn spin_round_trip(run: &Run) -> Outcome {
    let Some(r) = results(run) else { return Outcome::Absent };
    match r.round_trip.iter().find(|s| s.size == TARGET_SIZE) {
        Some(s) => ratio_figure(s, "fanin-spin", "helix-spin", ""),
        None => Outcome::Missing,
    }
}
