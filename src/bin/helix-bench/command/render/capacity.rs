//! "Capacity": the e2e scenario over stream counts, each count against the
//! targets, the largest count that meets them, and the plot.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;

use super::{command_of, group, Run};
use crate::command::capacity::{goals_missed, ring, table, Figures, Results};
use crate::document::Document;
use crate::plot::{capacity_plot, Line};
use crate::stats::fmt_ns;

pub(super) fn section(md: &mut String, run: &Run, json: &str, doc: &Document<Results>, plot: Option<&str>) {
    let r = &doc.results;
    let counts: Vec<String> = r.counts.iter().map(|c| group(u64::from(c.streams))).collect();
    let _ = write!(
        md,
        "## Capacity: how many streams one host carries\n\n\
         `helix-bench capacity` runs the end-to-end scenario above (helixd's simulator, helix-ledger, helix-twin \
         and helix-bench's reader) once per stream count ({}) at {} Hz, {} s each after {} s of warm-up, \
         {}, the ledger's fsync every {} ms. A count meets the targets when helixd publishes at least {}% of the \
         samples due, the P99 of helix-bench's reader (ingest to receipt), of the ledger (ingest to record) and \
         of the twin (ingest to alarm event) are each under {}, the ledger has no gap, verifies, and holds every \
         frame published.\n\n    {}\n\n{}\n{}\n\n{}\n\n{}\n",
        counts.join(", "),
        r.rate_hz,
        r.seconds,
        r.warmup,
        r.placement.describe(),
        r.fsync_ms,
        r.targets.min_published * 100.0,
        fmt_ns(r.targets.p99_below_ns),
        command_of(run, json, doc),
        table(r),
        ring(r).unwrap_or_default(),
        r.conclusion,
        goals_missed(r),
    );
    md.push_str(
        "CPU ns per sample is each process's CPU time over the window (user + system, all threads, from \
         `/proc/PID/stat`, whose clock ticks are 10 ms) divided by the samples helixd published (helixd) or by the \
         frames the process read (the readers); helix-bench's includes its alarm reader and its sampling of the \
         reader table every 10 ms. Ledger bytes per frame: the ledger folder's bytes over its FRAME records, \
         headers and segment overhead included. The twin's P99 is timed on alarm events only, which the \
         simulator's spikes raise about every 10 s: a count measured for less than that may have none.\n\n",
    );
    if let Some(plot) = plot {
        let _ = write!(md, "![P99 per reader and CPU per sample against the stream count]({plot})\n\n");
    }
}

/// Draws the capacity plot of `doc` to `path`.
pub fn plot(doc: &Document<Results>, path: &Path) -> Result<()> {
    let r = &doc.results;
    let measured: Vec<_> = r.counts.iter().filter_map(|c| Some((f64::from(c.streams), c.figures.as_ref()?))).collect();
    let line = |name, value: &dyn Fn(&Figures) -> Option<f64>| Line {
        name,
        points: measured.iter().filter_map(|(x, f)| Some((*x, value(f)?))).collect(),
    };
    let p99 = [
        line("helix-bench's reader", &|f| f.reader_p99_ns.map(|v| v as f64)),
        line("helix-ledger", &|f| f.ledger_p99_ns.map(|v| v as f64)),
        line("helix-twin (alarm events)", &|f| f.twin_p99_ns.map(|v| v as f64)),
    ];
    let cpu = [
        line("helixd", &|f| f.cpu_ns.helixd),
        line("helix-ledger", &|f| f.cpu_ns.ledger),
        line("helix-twin", &|f| f.cpu_ns.twin),
        line("helix-bench", &|f| f.cpu_ns.reader),
    ];
    let title =
        format!("helix-bench capacity, {} Hz per stream ({}, {} CPUs)", r.rate_hz, doc.machine.cpu, doc.machine.cores);
    capacity_plot(path, &title, &p99, r.targets.p99_below_ns as f64, &cpu)
}
