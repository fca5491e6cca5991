//! `helixctl readers`: a ring's readers: cursor, lag, backpressure,
//! overruns, liveness.

use anyhow::Result;
use serde::Serialize;

use super::stat::stat;
use crate::{format, json};
use helix::shm::Namespace;
use helix::ReaderStats;

/// Arguments of `helixctl readers`.
#[derive(clap::Args)]
pub struct Args {
    ring: String,
}

/// What `helixctl readers --json` prints.
#[derive(Serialize)]
struct Readers<'a> {
    ring: &'a str,
    namespace: &'a str,
    readers: &'a [ReaderStats],
}

/// Prints the ring's reader table, as a table or (`json`) as JSON.
pub fn run(ns: &Namespace, args: &Args, json: bool) -> Result<()> {
    let s = stat(ns, &args.ring)?;
    if json {
        return json::print(&Readers { ring: &s.name, namespace: &s.namespace, readers: &s.stats.readers });
    }
    if s.stats.readers.is_empty() {
        println!("no readers on ring {}", args.ring);
        return Ok(());
    }
    println!("{}", header());
    for r in &s.stats.readers {
        println!("{}", row(r));
    }
    Ok(())
}

/// The header of the readers table (`top` shows it under each ring).
pub fn header() -> String {
    format!(
        "{:>3} {:<20} {:>8} {:<5} {:<8} {:>14} {:>10} {:>6} {:>9} {:>10} {:>9}",
        "#", "NAME", "PID", "ALIVE", "GATING", "CURSOR", "LAG", "BP", "OVERRUNS", "LOST", "HEARTBEAT"
    )
}

/// A reader's row of the table, its name escaped (a peer chose it).
pub fn row(r: &ReaderStats) -> String {
    format!(
        "{:>3} {:<20} {:>8} {:<5} {:<8} {:>14} {:>10} {:>6.3} {:>9} {:>10} {:>8.1}s",
        r.index,
        format::printable(&r.name),
        r.pid,
        if r.alive { "yes" } else { "DEAD" },
        match (r.gating, r.demoted) {
            (true, _) => "yes",
            (false, true) => "demoted",
            (false, false) => "no",
        },
        r.cursor,
        r.lag,
        r.backpressure,
        r.overruns,
        r.lost,
        r.heartbeat_age_ns as f64 / 1e9
    )
}
