//! "One-way streaming": the stream scenario's commands and table.

use std::fmt::Write as _;

use super::{mfps, shell, Run};

pub(super) fn section(md: &mut String, run: &Run) {
    md.push_str("## One-way streaming\n\n");
    for d in &run.streams {
        let _ = writeln!(md, "    {}", shell(&d.command));
    }
    md.push_str(
        "\nThe writer process claims a batch of slots, fills them, commits them at once; each reader process \
         consumes in batches of up to the same size and checks every frame's sequence, looking at the frame \
         in place (zero-copy: MB/s is the rate of the writer's copy into the slots). Frames/s per reader \
         are measured from its first frame to its last; medians over the runs. `lost` counts sequences a \
         non-gating reader of an overwrite ring was overrun by, every one reported to it as an overrun.\n\n\
         | readers | wait | frame | batch | writer frames/s (MB/s) | each reader frames/s | lost (overrun events) | writer waited |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for d in &run.streams {
        for c in &d.results.cases {
            let overruns: u64 = c.runs.iter().flat_map(|r| &r.readers).map(|r| r.overruns).sum();
            let waits: Vec<u64> = c.runs.iter().map(|r| r.writer_waits).collect();
            let lost = c.lost();
            let lost_s = if lost == 0 {
                "0".to_owned()
            } else {
                format!("{:.2}% ({overruns})", lost as f64 * 100.0 / c.deliveries().max(1) as f64)
            };
            let _ = writeln!(
                md,
                "| {} {} | {} | {} B | {} | {} ({} MB/s) | {} | {} | {} |",
                c.readers,
                if c.gating { "gating (block ring)" } else { "non-gating (overwrite ring)" },
                c.wait,
                c.size,
                c.batch,
                mfps(c.writer_fps),
                (c.writer_fps * c.size as f64 / 1e6).round(),
                mfps(c.reader_fps),
                lost_s,
                waits.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
            );
        }
    }
    md.push_str(
        "\nReaders that spin need a CPU each: three spinning readers and a writer on two CPUs share them by \
         time slice and collapse, so the several-reader case parks. Use `park` or `spin-then-park` when \
         readers outnumber spare cores. Batch 1 is a claim, a commit and a read per frame: the cost of the \
         protocol without batching.\n\n",
    );
}
