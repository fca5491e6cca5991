//! `helixctl rm`: remove a ring's files, the documented way. Refused while
//! a live process holds the ring's writer lease (unless `--force`, which
//! names it); removes both files of a ring, and whichever file there is of
//! a ring that is not whole (a lone control or data file).

use std::path::PathBuf;

use anyhow::{bail, Result};
use serde::Serialize;

use super::fanin;
use crate::json;
use helix::ring::{self, RingState};
use helix::shm::{self, Namespace};
use helix::Ring;

/// Arguments of `helixctl rm`.
#[derive(clap::Args)]
pub struct Args {
    ring: String,
    /// Remove it even while a live process holds its writer lease (that
    /// process writes into the removed ring until it exits) or while a
    /// creator is publishing it.
    #[arg(long)]
    force: bool,
    /// Which ring, when both a ring and a fan-in ring have the name.
    #[arg(long, value_enum)]
    kind: Option<fanin::Kind>,
}

/// What `helixctl rm --json` prints.
#[derive(Serialize)]
struct Removed<'a> {
    ring: &'a str,
    namespace: &'a str,
    /// The state of its files before, as `list` shows it.
    #[serde(flatten)]
    state: &'a RingState,
    /// The files removed.
    removed: Vec<PathBuf>,
    /// The live writer it was removed from under (`--force`).
    writer_pid: Option<u32>,
}

/// Removes the ring `args` names, unless it is in use and not `--force`d.
pub fn run(ns: &Namespace, args: &Args, json: bool) -> Result<()> {
    let name = args.ring.as_str();
    shm::validate_ring_name(name)?;
    let entry = ring::scan(ns)?.into_iter().find(|e| e.name == name);
    if fanin::kind_of(ns, name, args.kind, entry.is_some())? == fanin::Kind::Fanin {
        return fanin::remove(ns, name, args.force, json);
    }
    let Some(entry) = entry else {
        bail!(
            "no ring {name:?} in namespace {ns} (neither {} nor {} nor {} exists)",
            ns.data_path(name).display(),
            ns.readers_path(name).display(),
            helix::fanin::files::dir_path(ns, name).display()
        );
    };
    let writer_pid = in_use(ns, name, &entry.state, args.force)?;
    let files: Vec<PathBuf> =
        [ns.data_path(name), ns.readers_path(name)].into_iter().filter(|p| p.symlink_metadata().is_ok()).collect();
    Ring::unlink(ns, name)?;
    if json {
        return json::print(&Removed {
            ring: name,
            namespace: ns.as_str(),
            state: &entry.state,
            removed: files,
            writer_pid,
        });
    }
    let list: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    println!("removed ring {name} ({})", list.join(", "));
    if let Some(pid) = writer_pid {
        println!("its writer, pid {pid}, is still running: it writes into the removed ring until it exits");
    }
    Ok(())
}

/// Refuses (unless `force`) a ring a live process writes, or one a creator
/// is publishing; else the live writer's pid, if `force` passed one.
fn in_use(ns: &Namespace, name: &str, state: &RingState, force: bool) -> Result<Option<u32>> {
    let busy = match state {
        RingState::MissingData { being_created: true } => {
            Some(format!("ring {name:?} is being created by another process right now; retry in a moment"))
        }
        RingState::Unfinished { abandoned: false, age_secs } => Some(format!(
            "{} is being initialised by its creator ({age_secs} s old); retry in 10 s",
            ns.data_path(name).display()
        )),
        _ => None,
    };
    if let (Some(why), false) = (busy, force) {
        bail!("{why}, or use --force");
    }
    match ring::live_writer(ns, name) {
        Some((pid, epoch)) if !force => bail!(
            "ring {name:?} is in use: its writer lease is held by live pid {pid} (epoch {epoch}); stop that \
             process first, or use --force (it then writes into the removed ring until it exits)"
        ),
        writer => Ok(writer.map(|(pid, _)| pid)),
    }
}
