//! `helixctl list`: every ring in the namespace, corrupt ones included,
//! with frame rates sampled over a moment.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::{args, format, json};
use helix::shm::Namespace;
use helix::{AttachError, RingView};

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
}

/// One row of `helixctl list`: a ring, or a file that is not a usable ring.
#[derive(Debug, Clone, Serialize)]
pub struct ListRow {
    /// Ring name.
    pub name: String,
    /// Whether it attached; if not, `error` says why.
    pub ok: bool,
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
    let rows = rows(ns, args.sample).context("reading /dev/shm")?;
    if json {
        json::print(&Listing { namespace: ns.as_str(), rings: &rows })
    } else if rows.is_empty() {
        println!("no rings in namespace {ns}");
        Ok(())
    } else {
        print_table(&rows);
        Ok(())
    }
}

fn print_table(rows: &[ListRow]) {
    println!(
        "{:<20} {:<9} {:>10} {:>6} {:>14} {:>12} {:>7} {:>12} {:>10}",
        "RING", "POLICY", "SLOTS", "SLOT", "PUBLISHED", "FRAMES/S", "READERS", "WRITER", "MEMORY"
    );
    for r in rows {
        let Some(s) = &r.ring else {
            println!("{:<20} CORRUPT: {}", r.name, format::printable(r.error.as_deref().unwrap_or("?")));
            continue;
        };
        let writer = match (s.writer_pid, s.writer_alive) {
            (Some(p), true) => p.to_string(),
            (Some(p), false) => format!("{p} (dead)"),
            (None, _) => "-".into(),
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
            writer,
            format::bytes(s.memory_bytes)
        );
    }
}

/// Attaches read-only to every ring in `ns`, samples rates over `sample`
/// (none if zero), and returns a row per ring, corrupt and incomplete ones
/// (one of their two files missing) included.
fn rows(ns: &Namespace, sample: Duration) -> std::io::Result<Vec<ListRow>> {
    let names: Vec<String> = helix::ring::scan(ns)?.into_iter().map(|r| r.name).collect();
    let views: Vec<(String, Result<RingView, AttachError>)> =
        names.into_iter().map(|n| (n.clone(), RingView::attach(ns, &n))).collect();
    let first: Vec<Option<u64>> = views.iter().map(|(_, v)| v.as_ref().ok().map(|v| v.stats().published)).collect();
    let t0 = Instant::now();
    if !sample.is_zero() {
        std::thread::sleep(sample);
    }
    let secs = (!sample.is_zero()).then(|| t0.elapsed().as_secs_f64());
    Ok(views
        .into_iter()
        .zip(first)
        .map(|((name, view), before)| match view {
            Err(e) => ListRow { name, ok: false, error: Some(e.to_string()), ring: None },
            Ok(v) => ListRow { name, ok: true, error: None, ring: Some(summary(&v, before, secs)) },
        })
        .collect())
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
