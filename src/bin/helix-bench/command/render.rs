//! `docs/PERFORMANCE.md` from one `helix-bench report` run: the JSON
//! documents of its scenarios become the tables, the targets (met or not,
//! computed from the figures), the plot and the prose around them. The
//! prose is here, as templates with the run's figures filled in, so the
//! document never says something the data does not.

use std::fmt::Write as _;
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{e2e, fmt_ns, ledger, pingpong, read_document, stream, Document, Machine};

/// What `helix-bench report` writes to `report.json` in its folder: the run
/// and each scenario it ran.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Index {
    /// The report command, program name first.
    pub command: Vec<String>,
    /// The machine.
    pub machine: Machine,
    /// Start, UTC.
    pub started: String,
    /// End, UTC.
    pub finished: String,
    /// Seconds the whole run took.
    pub seconds: f64,
    /// The load averages before the first scenario (other work on the
    /// machine shows here).
    pub load_before: Option<[f64; 3]>,
    /// Percent of all CPU time over the run that the hypervisor gave to
    /// others while a virtual CPU wanted it (`/proc/stat` steal), if known.
    pub steal_percent: Option<f64>,
    /// Each scenario, in the order run.
    pub steps: Vec<Step>,
}

/// One scenario of a report run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Step {
    /// The scenario.
    pub scenario: String,
    /// Its command, program name first.
    pub command: Vec<String>,
    /// Its JSON document, relative to the report folder.
    pub json: String,
    /// Seconds it took.
    pub seconds: f64,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// The frame size the pingpong targets are judged at (the telemetry
/// sample's slot size class; every size is in the tables).
pub const TARGET_SIZE: usize = 64;

/// The report's file for the blocking transports on one CPU.
pub const ONE_CPU_JSON: &str = "pingpong-one-cpu.json";

/// Everything read from a report folder.
struct Run {
    index: Index,
    pingpong: Option<Document<pingpong::Results>>,
    /// The blocking transports with both processes on one CPU, if run.
    pingpong_one_cpu: Option<(String, Document<pingpong::Results>)>,
    streams: Vec<Document<stream::Results>>,
    ledger: Option<Document<ledger::Results>>,
    /// Each e2e run with its JSON file's name, one per CPU placement.
    e2e: Vec<(String, Document<e2e::Results>)>,
}

fn load(dir: &Path) -> io::Result<Run> {
    let index: Index = {
        let path = dir.join("report.json");
        let text = std::fs::read_to_string(&path).map_err(|e| {
            io::Error::new(e.kind(), format!("{}: {e} (run `helix-bench report` first)", path.display()))
        })?;
        serde_json::from_str(&text)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display())))?
    };
    let mut run = Run { index, pingpong: None, pingpong_one_cpu: None, streams: vec![], ledger: None, e2e: vec![] };
    for step in run.index.steps.clone() {
        if step.error.is_some() {
            continue;
        }
        let path = dir.join(&step.json);
        match step.scenario.as_str() {
            "pingpong" => {
                let doc: Document<pingpong::Results> = read_document(&path)?;
                if step.json == ONE_CPU_JSON {
                    run.pingpong_one_cpu = Some((step.json.clone(), doc));
                } else {
                    run.pingpong = Some(doc);
                }
            }
            "stream" => run.streams.push(read_document(&path)?),
            "ledger" => run.ledger = Some(read_document(&path)?),
            "e2e" => run.e2e.push((step.json.clone(), read_document(&path)?)),
            other => return Err(io::Error::new(io::ErrorKind::InvalidData, format!("unknown scenario {other:?}"))),
        }
    }
    Ok(run)
}

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "**not met**"
    }
}

fn shell(cmd: &[String]) -> String {
    let mut v: Vec<String> = cmd
        .iter()
        .map(|a| {
            if a.chars().all(|c| c.is_ascii_alphanumeric() || "-_./,=:".contains(c)) {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect();
    if let Some(first) = v.first_mut() {
        // The program by name, not by the path it ran from.
        *first = Path::new(first.as_str()).file_name().map_or(first.clone(), |f| f.to_string_lossy().into_owned());
    }
    v.join(" ")
}

fn mfps(x: f64) -> String {
    format!("{:.2} M", x / 1e6)
}

fn ratios(v: &[f64]) -> String {
    v.iter().map(|&x| ratio(x)).collect::<Vec<_>>().join(" ")
}

/// A ratio with two decimals, or three significant digits below 0.1.
fn ratio(x: f64) -> String {
    if x < 0.1 {
        format!("{x:.3}")
    } else {
        format!("{x:.2}")
    }
}

fn step_command(run: &Run, json: &str) -> Option<String> {
    run.index.steps.iter().find(|s| s.json == json).map(|s| shell(&s.command))
}

/// Renders the report in `dir` to Markdown; `plot` is the SVG's path as
/// the document links it (if one was drawn); `notes` is included verbatim
/// at the end.
pub fn render(dir: &Path, plot: Option<&str>, notes: Option<&str>) -> io::Result<String> {
    let run = load(dir)?;
    let mut md = String::new();
    head(&mut md, &run);
    targets(&mut md, &run);
    if let Some(pp) = &run.pingpong {
        pingpong_section(&mut md, &run, pp, plot);
    }
    if !run.streams.is_empty() {
        stream_section(&mut md, &run);
    }
    if let Some(l) = &run.ledger {
        ledger_section(&mut md, &run, l);
    }
    if !run.e2e.is_empty() {
        e2e_section(&mut md, &run);
    }
    let failed: Vec<&Step> = run.index.steps.iter().filter(|s| s.error.is_some()).collect();
    if !failed.is_empty() {
        md.push_str("## Scenarios that failed in this run\n\n");
        for s in failed {
            let _ = writeln!(md, "- `{}`: {}", shell(&s.command), s.error.as_deref().unwrap_or(""));
        }
        md.push('\n');
    }
    if let Some(notes) = notes {
        md.push_str(notes.trim_end());
        md.push('\n');
    }
    Ok(md)
}

fn head(md: &mut String, run: &Run) {
    let i = &run.index;
    let m = &i.machine;
    let _ = write!(
        md,
        "# HELIX performance\n\n\
         <!-- Generated by tools/perf-report (`helix-bench render`) from one `helix-bench report` run. \
         Do not edit: the prose is in src/bench/render.rs, the hand-written notes in docs/performance-notes.md. -->\n\n\
         Every figure in the tables below comes from **one run** of\n\n    {}\n\n\
         started {} and finished {} ({:.0} s), on **{}, {} CPUs, Linux {}**{}, release build. \
         Each scenario's exact command is shown with its table; the raw results are the JSON documents \
         `helix-bench --json` writes (shape: docs/helix-bench.md). To reproduce: `tools/perf-report`.\n\n",
        shell(&i.command),
        i.started,
        i.finished,
        i.seconds,
        m.cpu,
        m.cores,
        m.kernel,
        m.idle.as_ref().map_or(String::new(), |idle| format!(" (idle CPUs: {idle})"))
    );
    match i.load_before {
        Some(l) if l[0] >= 0.5 => {
            let _ = write!(
                md,
                "The load average was {:.2} when the run began: other work was sharing the machine, \
                 so absolute times are noisier than on an idle host. Ratios taken within one run are \
                 the figures to compare.\n\n",
                l[0]
            );
        }
        Some(l) => {
            let _ = write!(
                md,
                "The load average was {:.2} when the run began (an otherwise idle machine). These are \
                 shared virtual machines: absolute times still swing between runs, so ratios taken \
                 within one run are the figures to compare.\n\n",
                l[0]
            );
        }
        None => {}
    }
    if let Some(steal) = i.steal_percent {
        let _ = write!(
            md,
            "CPU steal time over the run: {steal:.2}% of all CPU time (time the hypervisor ran something else \
             while a virtual CPU of this machine wanted to run; {}).\n\n",
            if steal >= 1.0 { "enough to show in the tails" } else { "little" }
        );
    }
}

/// One row of a targets table.
fn row(md: &mut String, t: &str, m: String, ok: Option<bool>) {
    let _ = writeln!(md, "| {t} | {m} | {} |", ok.map_or("not measured", met));
}

fn targets(md: &mut String, run: &Run) {
    md.push_str("## Targets\n\n| target | measured in this run | met |\n|---|---|---|\n");
    let size = run.pingpong.as_ref().and_then(|p| p.results.sizes.iter().find(|s| s.size == TARGET_SIZE));
    let n = run.pingpong.as_ref().map_or(0, |p| p.results.params.runs);
    match size.map(|s| (s, s.ratio("helix-spin", "atomic"), s.transport("helix-spin"), s.transport("atomic"))) {
        Some((_, Some(r), Some(h), Some(a))) => row(
            md,
            &format!("spin ping-pong RTT median within 2x the raw atomic ping-pong ({TARGET_SIZE}-byte frames)"),
            format!(
                "**{:.2}x** ({} vs {}; median of {n} runs, per run {})",
                r.median,
                fmt_ns(h.median_p50_ns as u64),
                fmt_ns(a.median_p50_ns as u64),
                ratios(&r.per_run)
            ),
            Some(r.median <= 2.0),
        ),
        _ => row(md, "spin ping-pong RTT median within 2x the raw atomic ping-pong", String::new(), None),
    }
    match size.and_then(|s| s.transport("helix-spin")) {
        Some(h) => {
            let p99: Vec<f64> = h.runs.iter().map(|m| m.summary.p99 as f64).collect();
            let med = super::median(p99.clone());
            row(
                md,
                &format!("spin ping-pong RTT p99 under 1 us ({TARGET_SIZE}-byte frames)"),
                format!(
                    "**{}** (median of {n} runs; per run {})",
                    fmt_ns(med as u64),
                    p99.iter().map(|&x| fmt_ns(x as u64)).collect::<Vec<_>>().join(", ")
                ),
                Some(med < 1000.0),
            )
        }
        None => row(md, "spin ping-pong RTT p99 under 1 us", String::new(), None),
    }
    match size.map(|s| (s.ratio("helix-park", "futex"), s.transport("helix-park"), s.transport("futex"))) {
        Some((Some(r), Some(h), Some(f))) => row(
            md,
            &format!("park/wake RTT median within 1.1x the raw futex ping-pong ({TARGET_SIZE}-byte frames)"),
            format!(
                "**{:.2}x** ({} vs {}; per run {})",
                r.median,
                fmt_ns(h.median_p50_ns as u64),
                fmt_ns(f.median_p50_ns as u64),
                ratios(&r.per_run)
            ),
            Some(r.median <= 1.1),
        ),
        _ => row(md, "park/wake RTT median within 1.1x the raw futex ping-pong", String::new(), None),
    }
    if let Some(s) = size {
        let rs: Vec<&pingpong::Ratio> =
            ["pipe", "unix-stream", "unix-dgram"].iter().filter_map(|d| s.ratio("helix-park", d)).collect();
        if rs.len() == 3 {
            row(
                md,
                "park/wake RTT median below pipe and Unix sockets",
                rs.iter().map(|r| format!("{:.2}x {}", r.median, r.denominator)).collect::<Vec<_>>().join(", "),
                Some(rs.iter().all(|r| r.median < 1.0)),
            );
        } else {
            row(md, "park/wake RTT median below pipe and Unix sockets", String::new(), None);
        }
    }
    if let Some(s) =
        run.pingpong_one_cpu.as_ref().and_then(|(_, d)| d.results.sizes.iter().find(|s| s.size == TARGET_SIZE))
    {
        let rs: Vec<&pingpong::Ratio> =
            ["futex", "pipe", "unix-stream", "unix-dgram"].iter().filter_map(|d| s.ratio("helix-park", d)).collect();
        if rs.len() == 4 {
            row(
                md,
                &format!(
                    "the same, both processes on one CPU (a local wake-up: no interrupt to another CPU), \
                     {TARGET_SIZE}-byte frames"
                ),
                rs.iter().map(|r| format!("{:.2}x {}", r.median, r.denominator)).collect::<Vec<_>>().join(", "),
                Some(rs[0].median <= 1.1 && rs[1..].iter().all(|r| r.median < 1.0)),
            );
        }
    }
    e2e_targets(md, run);
    md.push_str(
        "\nEarlier issues' targets, measured again in this run:\n\n| target | measured | met |\n|---|---|---|\n",
    );
    let best = run
        .streams
        .iter()
        .flat_map(|d| &d.results.cases)
        .find(|c| c.size == 64 && c.batch == 64 && c.readers == 1 && c.gating);
    match best {
        Some(c) => row(
            md,
            "ring core: streaming 64-byte frames with batching, at least 20 M frames/s median",
            format!("{} frames/s to one gating reader process, {} lost", mfps(c.reader_fps), c.lost()),
            Some(c.reader_fps >= 20e6),
        ),
        None => row(md, "ring core: streaming at least 20 M frames/s", String::new(), None),
    }
    match run.ledger.as_ref().and_then(|l| l.results.throughput.iter().find(|c| c.size == 32 && c.fsync_ms == 10)) {
        Some(c) => row(
            md,
            "helix-ledger: at least 1 M 32-byte frames/s sustained, fsync every 10 ms",
            format!("{} frames/s ({:.0} MB/s of records), lossless", mfps(c.frames_per_sec), c.mb_per_sec),
            Some(c.frames_per_sec >= 1e6),
        ),
        None => row(md, "helix-ledger: at least 1 M 32-byte frames/s", String::new(), None),
    }
    if let Some((_, e)) = run.e2e.first() {
        let cpu = |p: &str| e.results.cpu.iter().find(|c| c.process == p).map(|c| c.percent);
        if let Some(t) = cpu("helix-twin") {
            row(
                md,
                &format!(
                    "helix-twin CPU at {} streams x {} Hz: under 25% of one core",
                    group(e.results.streams as u64),
                    e.results.rate_hz
                ),
                format!("{t:.1}% (with the ledger and helix-bench attached)"),
                Some(t < 25.0),
            );
        }
    }
    md.push('\n');
}

/// 1234567 as `1,234,567`.
fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn pingpong_section(md: &mut String, run: &Run, doc: &Document<pingpong::Results>, plot: Option<&str>) {
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
        step_command(run, "pingpong.json").unwrap_or_else(|| shell(&doc.command)),
        group(p.iters),
        group(p.warmup),
        p.cpus.map_or("not pinned".to_owned(), |(a, b)| format!("this process on CPU {a} and the peer on CPU {b}")),
        p.runs
    );
    md.push_str("Median round trip (p50, median over the runs) by frame size:\n\n| transport |");
    for s in &r.sizes {
        let _ = write!(md, " {} B |", s.size);
    }
    md.push_str("\n|---|");
    md.push_str(&"---|".repeat(r.sizes.len()));
    md.push('\n');
    for t in &p.transports {
        let _ = write!(md, "| {t} |");
        for s in &r.sizes {
            let _ = write!(md, " {} |", s.transport(t).map_or("-".into(), |x| fmt_ns(x.median_p50_ns as u64)));
        }
        md.push('\n');
    }
    md.push_str("\nRatios of the medians, taken within each run (the median of the per-run ratios):\n\n| ratio |");
    for s in &r.sizes {
        let _ = write!(md, " {} B |", s.size);
    }
    md.push_str("\n|---|");
    md.push_str(&"---|".repeat(r.sizes.len()));
    md.push('\n');
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
            s.size, p.runs
        );
        for t in &s.transports {
            if let Some(m) = t.runs.first() {
                let x = &m.summary;
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {} | {} | {} |",
                    t.transport,
                    fmt_ns(x.p50),
                    fmt_ns(x.p90),
                    fmt_ns(x.p99),
                    fmt_ns(x.p999),
                    fmt_ns(x.p9999),
                    fmt_ns(x.max)
                );
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
        step_command(run, json).unwrap_or_else(|| shell(&doc.command)),
        r.params.runs
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

fn stream_section(md: &mut String, run: &Run) {
    md.push_str("## One-way streaming\n\n");
    for d in &run.streams {
        let json = run.index.steps.iter().find(|s| s.command == d.command).map(|s| s.json.clone());
        let cmd = json.and_then(|j| step_command(run, &j)).unwrap_or_else(|| shell(&d.command));
        let _ = writeln!(md, "    {cmd}");
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

fn ledger_section(md: &mut String, run: &Run, doc: &Document<ledger::Results>) {
    let r = &doc.results;
    let _ = write!(
        md,
        "## helix-ledger\n\n    {}\n\n\
         The real `helix-ledger` records a block ring of its own (writer {}, ledgers in `{}`) while \
         {} frames are published as fast as it takes them; frames/s is from the first frame published to \
         the last one the ledger released (written), MB/s counts the segment bytes written (a 32-byte frame \
         is a 104-byte record: 40 bytes of header, the payload, a 32-byte hash). Each row is the run with \
         the median frames/s of {}:\n\n\
         | frame | fsync interval | frames/s | MB/s written | fsyncs | writer waits |\n|---|---|---|---|---|---|\n",
        step_command(run, "ledger.json").unwrap_or_else(|| shell(&doc.command)),
        match r.cpus.as_slice() {
            [w, l, ..] => format!("on CPU {w}, ledger on CPU {l}"),
            _ => "and ledger not pinned".into(),
        },
        r.dir,
        group(r.frames),
        if r.runs == 1 { "the one run".to_owned() } else { format!("{} runs", r.runs) }
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

/// The e2e targets: the reader's P99 and P99.9 for each CPU placement
/// run, then the requirement and the ledger's completeness over all of them.
fn e2e_targets(md: &mut String, run: &Run) {
    let Some((_, first)) = run.e2e.first() else { return };
    let scale = format!("{} streams x {} Hz", group(first.results.streams as u64), first.results.rate_hz);
    for (_, e) in &run.e2e {
        let r = &e.results;
        let layout = r.placement.describe();
        match r.reader("helix-bench").and_then(|b| b.latency.as_ref()) {
            Some(l) => {
                row(
                    md,
                    &format!("e2e at {scale}, ledger and twin attached: ingest-to-reader P99 under 250 us ({layout})"),
                    format!("**{}** (helix-bench's attached reader, {} samples)", fmt_ns(l.p99), group(l.count)),
                    Some(l.p99 < 250_000),
                );
                row(
                    md,
                    &format!("e2e: ingest-to-reader P99.9 under 2 ms ({layout})"),
                    format!("**{}**", fmt_ns(l.p999)),
                    Some(l.p999 < 2_000_000),
                );
            }
            None => row(md, &format!("e2e: ingest-to-reader P99 and P99.9 ({layout})"), String::new(), None),
        }
    }
    // The requirement, per reader, over every placement.
    for (name, what) in [
        ("helix-bench", "helix-bench's reader"),
        ("helix-ledger", "ledger: ingest to the ledger reading the frame"),
        ("helix-twin", "twin: ingest to its alarm event reaching a reader"),
    ] {
        let p99s: Vec<(String, u64)> = run
            .e2e
            .iter()
            .filter_map(|(_, e)| {
                let l = e.results.reader(name)?.latency.as_ref()?;
                Some((e.results.placement.describe(), l.p99))
            })
            .collect();
        if p99s.is_empty() {
            continue;
        }
        row(
            md,
            &format!("requirement: P99 under 2 ms ({what})"),
            p99s.iter().map(|(layout, p)| format!("{} ({layout})", fmt_ns(*p))).collect::<Vec<_>>().join("; "),
            Some(p99s.iter().all(|(_, p)| *p < 2_000_000)),
        );
    }
    let checks: Vec<&e2e::LedgerCheck> = run.e2e.iter().map(|(_, e)| &e.results.ledger).collect();
    row(
        md,
        "e2e: no ledger gaps",
        checks
            .iter()
            .map(|lg| {
                format!(
                    "{} gaps, {} frames recorded of {} published, verify {}",
                    lg.gaps,
                    group(lg.frames),
                    group(lg.published),
                    if lg.verified { "ok" } else { "FAILED" }
                )
            })
            .collect::<Vec<_>>()
            .join("; "),
        Some(checks.iter().all(|lg| lg.gaps == 0 && lg.verified && lg.frames == lg.published)),
    );
}

fn e2e_section(md: &mut String, run: &Run) {
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
         The twin reads telemetry in batches every `poll_interval_ms` ({} ms) while it flows, so this latency \
         is mostly that period. Its lag, sampled every 10 ms from its reader entry (frames published and not \
         yet consumed, as time at the configured rate), is in the table for every reader.\n\n",
        r.twin_poll_ms,
    );
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
        step_command(run, json).unwrap_or_else(|| shell(&doc.command)),
    );
    for x in &r.readers {
        let lag = x.lag.as_ref().map_or("-".into(), |l| {
            format!("{} frames = {} ({})", group(l.p99_frames), fmt_ns(l.p99_ns), fmt_ns(l.max_ns))
        });
        let lat = x.latency.as_ref().map_or_else(
            || "| - ".repeat(6) + "| 0 |",
            |s| {
                format!(
                    "| {} | {} | {} | {} | {} | {} | {} |",
                    fmt_ns(s.p50),
                    fmt_ns(s.p90),
                    fmt_ns(s.p99),
                    fmt_ns(s.p999),
                    fmt_ns(s.p9999),
                    fmt_ns(s.max),
                    group(s.count)
                )
            },
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
