//! `helixctl stat`: a ring's header and every counter.

use anyhow::Result;
use serde::Serialize;

use super::fanin::{kind_of, Kind};
use crate::{format, json};
use helix::shm::Namespace;
use helix::{AttachError, Geometry, RingStats, RingView};

/// Arguments of `helixctl stat`.
#[derive(clap::Args)]
pub struct Args {
    ring: String,
    /// Which ring, when both a ring and a fan-in ring have the name.
    #[arg(long, value_enum)]
    kind: Option<Kind>,
}

/// `helixctl stat`: a ring's header and every counter: the geometry and
/// the counters flattened into one object, plus two figures derived from
/// the readers.
#[derive(Debug, Clone, Serialize)]
pub struct Stat {
    /// Ring name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// Geometry and policy.
    #[serde(flatten)]
    pub geometry: Geometry,
    /// Every counter, the writer lease and the readers.
    #[serde(flatten)]
    pub stats: RingStats,
    /// Overrun events over current readers.
    pub overruns: u64,
    /// Largest backpressure ratio over current readers.
    pub max_backpressure: f64,
}

/// Reads everything `stat` (and `readers`) shows; fails with
/// [`AttachError::Damaged`] if a file of the ring shrank meanwhile (the
/// figures would be zeros, not the ring's).
pub fn stat(ns: &Namespace, ring: &str) -> Result<Stat, AttachError> {
    let v = RingView::attach(ns, ring)?;
    let stats = v.stats();
    if let Some(d) = v.damage() {
        return Err(AttachError::Damaged(d));
    }
    Ok(Stat {
        name: v.name().to_owned(),
        namespace: ns.to_string(),
        geometry: v.geometry().clone(),
        overruns: stats.overruns(),
        max_backpressure: stats.readers.iter().map(|r| r.backpressure).fold(0.0, f64::max),
        stats,
    })
}

/// Prints the ring's header and counters, as text or (`json`) as JSON.
pub fn run(ns: &Namespace, args: &Args, json: bool) -> Result<()> {
    let broadcast = ns.data_path(&args.ring).symlink_metadata().is_ok();
    if kind_of(ns, &args.ring, args.kind, broadcast)? == Kind::Fanin {
        return super::fanin::print_stat(ns, &args.ring, json);
    }
    let s = stat(ns, &args.ring)?;
    if json {
        return json::print(&s);
    }
    let (g, st) = (&s.geometry, &s.stats);
    println!(
        "ring {} (namespace {}): {} slots of {} bytes (payload up to {}), {}, stall timeout {} ms",
        s.name,
        s.namespace,
        g.capacity,
        g.slot_size,
        g.max_payload,
        g.policy.as_str(),
        g.stall_timeout_ns / 1_000_000
    );
    println!("  published      {} frames, {}", st.published, format::bytes(st.bytes));
    let w = &st.lease;
    println!(
        "  writer         {} (lease epoch {}, {} takeovers)",
        w.pid.map_or("none".into(), |p| format!("pid {p}{}", if w.alive { "" } else { " (dead)" })),
        w.epoch,
        w.takeovers
    );
    println!("  writer waits   {} ({:.3} s in all)", st.writer_waits, st.writer_wait_ns as f64 / 1e9);
    println!("  readers        {} of {} entries, {} parked", st.readers.len(), g.max_readers, st.parked);
    println!("  overruns       {}; demotions {}; dead readers swept {}", s.overruns, st.demotions, st.swept);
    println!("  backpressure   {:.3} (largest lag / capacity)", s.max_backpressure);
    Ok(())
}
