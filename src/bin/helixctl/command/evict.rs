//! `helixctl evict`: remove a reader's entry from a ring's reader table.

use anyhow::{bail, Result};

use crate::{format, json};
use helix::shm::Namespace;
use helix::RingView;

/// Arguments of `helixctl evict`.
#[derive(clap::Args)]
pub struct Args {
    ring: String,
    reader: String,
    #[arg(long)]
    force: bool,
}

/// Evicts the reader named (or numbered) in `args`; refuses a live one
/// unless `--force`.
pub fn run(ns: &Namespace, args: &Args, json: bool) -> Result<()> {
    let view = RingView::attach(ns, &args.ring)?;
    let freed = match entry(&view, &args.ring, &args.reader)? {
        // By name: that reader's process, not whoever takes its entry if
        // it leaves meanwhile (found by review: a reader restarting at
        // that moment was evicted in its place).
        (index, Some(pid)) => view.evict_reader(index, pid, args.force)?,
        (index, None) => view.evict(index, args.force)?,
    };
    if json {
        json::print(&serde_json::json!({
            "ring": args.ring, "index": freed.index, "pid": freed.pid, "name": freed.name,
            "was_gating": freed.was_gating
        }))
    } else {
        println!(
            "evicted reader \"{}\" (entry {}, pid {}) from ring {}",
            format::printable(&freed.name),
            freed.index,
            freed.pid,
            args.ring
        );
        Ok(())
    }
}

/// The entry index `reader` names: itself if a number, else the one reader
/// of that name, with its pid.
fn entry(view: &RingView, ring: &str, reader: &str) -> Result<(usize, Option<u32>)> {
    if let Ok(i) = reader.parse::<usize>() {
        return Ok((i, None));
    }
    let matches: Vec<(usize, u32)> =
        view.stats().readers.iter().filter(|r| r.name == reader).map(|r| (r.index, r.pid)).collect();
    match matches.as_slice() {
        [(i, pid)] => Ok((*i, Some(*pid))),
        [] => bail!("ring {ring:?} has no reader named {reader:?}"),
        _ => {
            let indexes: Vec<usize> = matches.iter().map(|m| m.0).collect();
            bail!("ring {ring:?} has {} readers named {reader:?}; give the entry index ({indexes:?})", matches.len())
        }
    }
}
