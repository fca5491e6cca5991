//! "Cross-process round trip": the pingpong tables, the percentile plot,
//! what the figures mean, and the blocking transports on one CPU.

use std::fmt::Write as _;

use super::{command_of, group, ratio, ratios, Run, TARGET_SIZE};
use crate::command::pingpong;
use crate::document::Document;
use crate::machine::Machine;
use crate::stats::fmt_ns;

pub(super) fn section(md: &mut String, run: &Run, doc: &Document<pingpong::Results>, plot: Option<&str>) {
    let r = &doc.results;
    let p = &r.params;
    let _ = write!(
        md,
        "## Cross-process round trip\n\n    {}\n\n\
         A frame goes from this process to a peer process and back; the round-trip time of each of {} \
         exchanges (after {} of warm-up, not recorded) goes into an HDR histogram. Every transport runs at \
         every frame size in the same invocation, {}, {} times over (the runs interleave, so a noisy moment \
         hits one run, not one transport):\n\n\
         - `helix-*`: two HELIX rings (block policy, gating readers), readers waiting with spin, \
         spin-then-park (4096 polls) or park;\n\
         - `atomic`: two 64-bit atomics on separate cache lines in shared memory, both sides spinning: the \
         floor for a spinning exchange (it carries no payload, only the round number);\n\
         - `futex`: two 32-bit futex words, both sides sleeping in `FUTEX_WAIT` and woken by `FUTEX_WAKE`: \
         the floor for a blocking exchange (no payload either);\n\
         - `pipe` (two FIFOs), `unix-stream`, `unix-dgram`: what a user would otherwise pick; they copy the \
         frame through the kernel.\n\n",
        command_of(run, "pingpong.json", doc),
        group(p.args.iters),
        group(p.args.warmup),
        p.cpus.map_or("not pinned".to_owned(), |(a, b)| format!("this process on CPU {a} and the peer on CPU {b}")),
        p.args.runs
    );
    md.push_str("Median round trip (p50, median over the runs) by frame size:\n\n| transport |");
    size_columns(md, r);
    for t in &p.transports {
        let _ = write!(md, "| {t} |");
        for s in &r.sizes {
            let _ = write!(md, " {} |", s.transport(t).map_or("-".into(), |x| fmt_ns(x.median_p50_ns as u64)));
        }
        md.push('\n');
    }
    md.push_str("\nRatios of the medians, taken within each run (the median of the per-run ratios):\n\n| ratio |");
    size_columns(md, r);
    for (num, den) in pingpong::RATIOS {
        let _ = write!(md, "| {num} / {den} |");
        for s in &r.sizes {
            let _ = write!(md, " {} |", s.ratio(num, den).map_or("-".into(), |x| format!("{}x", ratio(x.median))));
        }
        md.push('\n');
    }
    if let Some(s) = r.sizes.iter().find(|s| s.size == TARGET_SIZE).or(r.sizes.first()) {
        let _ = write!(
            md,
            "\nEvery percentile at {} bytes, run 1 of {} (the medians over the runs are above):\n\n\
             | transport | p50 | p90 | p99 | p99.9 | p99.99 | max |\n|---|---|---|---|---|---|---|\n",
            s.size, p.args.runs
        );
        for t in &s.transports {
            if let Some(m) = t.runs.first() {
                let _ = writeln!(md, "| {} | {} |", t.transport, m.summary.percentiles().map(fmt_ns).join(" | "));
            }
        }
        if let Some(plot) = plot {
            let _ = write!(
                md,
                "\n![Round-trip latency by percentile, {} B frames, every transport]({plot})\n\n\
                 The same run as a percentile plot (HDR style: the x axis is `1 / (1 - p)` on a log scale, so \
                 90%, 99%, 99.9% ... are equally spaced and the tail shows; the y axis is the round-trip time, \
                 log scale).\n",
                s.size
            );
        }
        meaning(md, s, &doc.machine);
    }
    md.push('\n');
    if let Some((json, one)) = &run.pingpong_one_cpu {
        one_cpu_section(md, run, json, one);
    }
}

/// The rest of a table's head: a column per frame size.
fn size_columns(md: &mut String, r: &pingpong::Results) {
    for s in &r.sizes {
        let _ = write!(md, " {} B |", s.size);
    }
    md.push_str("\n|---|");
    md.push_str(&"---|".repeat(r.sizes.len()));
    md.push('\n');
}

/// The blocking transports with both processes on one CPU.
fn one_cpu_section(md: &mut String, run: &Run, json: &str, doc: &Document<pingpong::Results>) {
    let r = &doc.results;
    let _ = write!(
        md,
        "### The blocking transports with both processes on one CPU\n\n    {}\n\n\
         The same exchange with this process and the peer pinned to one CPU, {} times over: each wake-up \
         is then a switch between two threads of that CPU, with no interrupt to another CPU, so what is left \
         is each transport's own work in the kernel and the switch. Median round trip, and the ratios taken \
         within each run:\n\n",
        command_of(run, json, doc),
        r.params.args.runs
    );
    for s in &r.sizes {
        let _ = writeln!(md, "| {} B | median p50 | helix-park / this (per run) |\n|---|---|---|", s.size);
        for t in &s.transports {
            let ratio = if t.transport == "helix-park" {
                "-".to_owned()
            } else {
                s.ratio("helix-park", &t.transport)
                    .map_or("-".into(), |x| format!("**{}x** ({})", ratio(x.median), ratios(&x.per_run)))
            };
            let _ = writeln!(md, "| {} | {} | {ratio} |", t.transport, fmt_ns(t.median_p50_ns as u64));
        }
        md.push('\n');
    }
    let below = r.sizes.iter().find(|s| s.size == TARGET_SIZE).map(|s| {
        ["pipe", "unix-stream", "unix-dgram"].iter().all(|d| s.ratio("helix-park", d).is_some_and(|x| x.median < 1.0))
    });
    match below {
        Some(true) => md.push_str(
            "Without the cross-CPU wake-up, HELIX's park costs a raw futex exchange plus the ring's \
             bookkeeping, and less than a pipe or a socket, which copy the frame through the kernel under \
             their own locks. Across CPUs, above, the same differences are there, but smaller than the swing \
             of the wake-ups.\n\n",
        ),
        Some(false) => md.push_str(
            "In this run HELIX's park was not below every pipe and socket even without the cross-CPU wake-up \
             (see the ratios).\n\n",
        ),
        None => {}
    }
}

/// "What these figures mean", with this run's numbers.
fn meaning(md: &mut String, s: &pingpong::SizeResult, machine: &Machine) {
    let p50 = |t: &str| s.transport(t).map_or(0, |x| x.median_p50_ns as u64);
    let (spin, atomic, stp, park, futex) =
        (p50("helix-spin"), p50("atomic"), p50("helix-spin-then-park"), p50("helix-park"), p50("futex"));
    if spin == 0 || atomic == 0 || futex == 0 || park == 0 {
        return;
    }
    let others: Vec<u64> = ["pipe", "unix-stream", "unix-dgram"].iter().map(|t| p50(t)).filter(|&x| x > 0).collect();
    let others = match (others.iter().min(), others.iter().max()) {
        (Some(&lo), Some(&hi)) => format!(", pipes and Unix sockets {} to {}", fmt_ns(lo), fmt_ns(hi)),
        _ => String::new(),
    };
    let _ = write!(
        md,
        "\n**What these figures mean.** A spinning HELIX exchange of {size} bytes costs {r:.1} raw cache-line \
         round trips ({spin} against {atomic}): the frame's slot spans the 16-byte slot header and the \
         payload, and the reader validates its copy (the seqlock re-check) before handing it over; the raw \
         atomic moves one word and no payload. A raw futex round trip costs {futex} here{others}, and nearly \
         all of it is the kernel waking a sleeping thread on the other CPU, twice: **on a 2-vCPU virtual \
         machine a cross-CPU wake-up costs tens of microseconds** (the hypervisor must deliver an interrupt \
         to a halted virtual CPU and schedule it), against a few microseconds on bare metal{halt}. That is \
         why a parked HELIX reader costs {pr:.2}x a raw futex ({park} against {futex}) rather than far less: \
         both pay the same wake-ups, and HELIX adds only the ring's bookkeeping. Pipes and Unix sockets pay \
         the same two wake-ups too (their sleeping reader is woken the same way), so all that can separate \
         HELIX from them is what they do besides: the copy through the kernel and their locking, a fraction \
         of a microsecond at these sizes, well inside the run-to-run swing of wake-ups that cost tens of \
         microseconds. Spin-then-park catches the reply while still polling ({stp}), so it costs about what \
         spinning costs whenever the peer answers within the spin budget, and sleeps when it does not. A \
         writer with no parked reader makes no system call at all. Larger frames add the copy: a ring slot \
         is copied in and out once each way, as a pipe or socket copies it through the kernel, while the \
         atomic and futex floors copy nothing, so the helix / atomic ratio grows with the frame size by \
         construction.\n",
        size = s.size,
        r = spin as f64 / atomic as f64,
        spin = fmt_ns(spin),
        atomic = fmt_ns(atomic),
        futex = fmt_ns(futex),
        park = fmt_ns(park),
        stp = fmt_ns(stp),
        pr = park as f64 / futex as f64,
        halt = match machine.idle.as_deref() {
            Some(idle) if idle.ends_with("guest_halt_poll_ns 0") => {
                "; here idle virtual CPUs halt at once instead of polling first (`guest_halt_poll_ns` is 0), \
                 so every wake-up of a sleeping thread goes through the hypervisor"
            }
            _ => "",
        },
    );
}
