//! `helixctl list`: every ring in the namespace, with frame rates sampled
//! over a moment; rings that are not whole (by the state of their files,
//! from [`helix::ring::scan`]), corrupt or damaged included.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

use super::fanin;
use crate::{args, format, json};
use helix::ring::{RingEntry, RingState};
use helix::shm::Namespace;
use helix::{AttachError, RingView};

/// The `kind` of a broadcast ring in JSON.
const KIND: &str = "broadcast";

/// Arguments of `helixctl list`.
#[derive(clap::Args)]
pub struct Args {
    /// Seconds to sample frame rates over (0: do not sample; at most a
    /// day).
    #[arg(long, value_name = "SECONDS", default_value = "0.5", value_parser = args::seconds, allow_hyphen_values = true)]
    sample: Duration,
}

/// What `helixctl list --json` prints.
#[derive(Serialize)]
struct Listing<'a> {
    namespace: &'a str,
    rings: &'a [ListRow],
    /// Fan-in rings (`kind` "fanin").
    fanin: &'a [fanin::Row],
}

/// One row of `helixctl list`: a ring, or a file that is not a usable ring.
#[derive(Debug, Clone, Serialize)]
pub struct ListRow {
    /// Ring name.
    pub name: String,
    /// Always "broadcast" (fan-in rings are in `fanin`, kind "fanin").
    pub kind: &'static str,
    /// The state of its files (`state`: `complete`, `missing_data`,
    /// `missing_readers`, `unfinished`, with their fields).
    #[serde(flatten)]
    pub state: RingState,
    /// Whether it attached and is not damaged; if not, `error` says why.
    pub ok: bool,
    /// What the table shows instead of figures (see [`problem`]).
    #[serde(skip)]
    pub problem: Option<&'static str>,
    /// Why it did not attach.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The rest, when it attached.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub ring: Option<RingSummary>,
}

/// The figures `list` shows for a ring.
#[derive(Debug, Clone, Serialize)]
pub struct RingSummary {
    /// `overwrite` or `block`.
    pub policy: &'static str,
    /// Slots.
    pub capacity: u64,
    /// Bytes per slot.
    pub slot_size: u32,
    /// Largest payload.
    pub max_payload: u32,
    /// Highest published sequence.
    pub published: u64,
    /// Frames per second over the sampling interval (null if not sampled).
    pub frames_per_sec: Option<f64>,
    /// Registered readers.
    pub readers: usize,
    /// The writer's pid, if a writer holds the lease.
    pub writer_pid: Option<u32>,
    /// Whether that writer is alive.
    pub writer_alive: bool,
    /// Bytes of shared memory (both files).
    pub memory_bytes: u64,
}

/// Lists the rings of `ns`, as a table or (`json`) as JSON.
pub fn run(ns: &Namespace, args: &Args, json: bool) -> Result<()> {
    // Both kinds are counted before the one sampling interval and after.
    let fan = fanin::Sampler::start(ns).context("reading /dev/shm")?;
    let rows = rows(ns, args.sample).context("reading /dev/shm")?;
    let fan = fan.rows(!args.sample.is_zero());
    if json {
        return json::print(&Listing { namespace: ns.as_str(), rings: &rows, fanin: &fan });
    }
    if rows.is_empty() && fan.is_empty() {
        println!("no rings in namespace {ns}");
    }
    if !rows.is_empty() {
        print_table(&rows);
    }
    if !fan.is_empty() {
        if !rows.is_empty() {
            println!();
        }
        fanin::print_rows(&fan);
    }
    Ok(())
}

fn print_table(rows: &[ListRow]) {
    println!(
        "{:<20} {:<9} {:>10} {:>6} {:>14} {:>12} {:>7} {:>12} {:>10}",
        "RING", "POLICY", "SLOTS", "SLOT", "PUBLISHED", "FRAMES/S", "READERS", "WRITER", "MEMORY"
    );
    for r in rows {
        let Some(s) = &r.ring else {
            println!("{}", problem_line(&r.name, r.problem.unwrap_or("CORRUPT"), r.error.as_deref().unwrap_or("?")));
            continue;
        };
        println!(
            "{:<20} {:<9} {:>10} {:>6} {:>14} {:>12} {:>7} {:>12} {:>10}",
            r.name,
            s.policy,
            s.capacity,
            s.slot_size,
            s.published,
            format::rate(s.frames_per_sec),
            s.readers,
            format::process(s.writer_pid, s.writer_alive),
            format::bytes(s.memory_bytes)
        );
    }
}

/// What a table shows of a ring that did not attach: why in a word, by
/// the state of its files when that is the reason (a half-made ring), else
/// `CORRUPT`, `DAMAGED` (a file shrank under the mapping) or `NO ACCESS`
/// (this user may not attach it); and why in a
/// sentence.
pub fn problem(state: &RingState, e: &AttachError) -> (&'static str, String) {
    let word = match state {
        _ if matches!(e, AttachError::Damaged(_)) => "DAMAGED",
        // Whole, but this user may not attach it (attaching opens the
        // control file read-write): not a corrupt ring.
        _ if matches!(e, AttachError::Permission { .. }) => "NO ACCESS",
        RingState::Complete => "CORRUPT",
        // The data file itself does not validate.
        RingState::MissingReaders if !matches!(e, AttachError::Incomplete { .. }) => "CORRUPT",
        RingState::MissingReaders => "MISSING @readers",
        RingState::MissingData { being_created: true } => "BEING CREATED",
        RingState::MissingData { being_created: false } => "MISSING DATA",
        RingState::Unreadable { error } => return ("UNREADABLE", error.clone()),
        // Attaching meets the missing control file first, and says so.
        RingState::Unfinished { age_secs, abandoned: true } => {
            return ("NEVER INITIALISED", format!("{age_secs} s old, its creator died; the next create replaces it"))
        }
        RingState::Unfinished { age_secs, abandoned: false } => {
            return ("INITIALISING", format!("its creator is initialising it ({age_secs} s old)"))
        }
    };
    (word, e.to_string())
}

/// A table's line for ring `name` that has no figures: `problem` and the
/// error, escaped (an error may quote what a peer wrote).
pub fn problem_line(name: &str, problem: &str, error: &str) -> String {
    format!("{name:<20} {problem}: {}", format::printable(error))
}

/// Attaches read-only to every ring in `ns`, samples rates over `sample`
/// (none if zero), and returns a row per ring name: half-made, corrupt
/// and damaged rings included.
fn rows(ns: &Namespace, sample: Duration) -> std::io::Result<Vec<ListRow>> {
    let entries = helix::ring::scan(ns)?;
    // One ring attached at a time, twice: a process holds at most
    // `guard::SLOTS` guarded mappings (two a ring), and holding every ring
    // over the sample made those past about 500 fail to attach.
    // Each ring's creation time, frames published, and when they were read.
    let reading = |v: &RingView| (v.geometry().created_ns, v.published(), Instant::now());
    let first: Vec<Option<(u64, u64, Instant)>> =
        entries.iter().map(|e| RingView::attach(ns, &e.name).ok().map(|v| reading(&v))).collect();
    if !sample.is_zero() {
        std::thread::sleep(sample);
    }
    Ok(entries
        .into_iter()
        .zip(first)
        .map(|(entry, first)| {
            let view = RingView::attach(ns, &entry.name);
            // A rate only over the same ring (not one created again since),
            // over the time between its own two readings.
            let created = view.as_ref().ok().map(|v| v.geometry().created_ns);
            let first = first.filter(|&(c, _, _)| Some(c) == created && !sample.is_zero());
            let (before, secs) = first.map(|(_, n, at)| (n, at.elapsed().as_secs_f64())).unzip();
            row(entry, view, before, secs)
        })
        .collect())
}

/// The row of `entry`, attached as `view`; its rate since `before`
/// published frames, `secs` seconds ago (if sampled).
fn row(entry: RingEntry, view: Result<RingView, AttachError>, before: Option<u64>, secs: Option<f64>) -> ListRow {
    let RingEntry { name, state } = entry;
    let (problem, error) = match view {
        Ok(v) => {
            let ring = summary(&v, before, secs);
            // Figures read after a file shrank are zeros, not the ring's.
            match v.damage() {
                None => {
                    return ListRow { name, kind: KIND, state, ok: true, problem: None, error: None, ring: Some(ring) }
                }
                Some(d) => ("DAMAGED", d.to_string()),
            }
        }
        Err(e) => problem(&state, &e),
    };
    ListRow { name, kind: KIND, state, ok: false, problem: Some(problem), error: Some(error), ring: None }
}

/// A ring's figures now; its rate since `before` published frames, `secs`
/// seconds ago (if sampled).
fn summary(v: &RingView, before: Option<u64>, secs: Option<f64>) -> RingSummary {
    let s = v.stats();
    let g = v.geometry();
    RingSummary {
        policy: g.policy.as_str(),
        capacity: g.capacity,
        slot_size: g.slot_size,
        max_payload: g.max_payload,
        published: s.published,
        frames_per_sec: secs.map(|secs| s.published.saturating_sub(before.unwrap_or(s.published)) as f64 / secs),
        readers: s.readers.len(),
        writer_pid: s.lease.pid,
        writer_alive: s.lease.alive,
        memory_bytes: g.memory(),
    }
}
