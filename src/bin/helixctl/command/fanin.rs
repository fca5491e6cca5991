//! Fan-in rings (`docs/abi.md` §11) as the verbs show them: `list`'s rows,
//! `stat`'s ring and lane table, `top`'s lines, `rm`'s removal. Read
//! through [`FanInView`], read-only; every figure a producer reports of
//! itself (its waits) is a number and nothing more, and names are printed
//! escaped.

use std::fmt::Write as _;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::{format, json};
use helix::fanin::layout::{fanin_file_size, lane_file_size, BELL_FILE_SIZE};
use helix::fanin::{files, inspect, FanIn, FanInError, FanInGeometry, FanInStats, FanInView, LaneStats};
use helix::shm::Namespace;

/// The `kind` of a fan-in ring in JSON.
pub const KIND: &str = "fanin";

/// The kind of ring a verb that takes either (`stat`, `rm`) acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// A broadcast ring (its two files in /dev/shm).
    Broadcast,
    /// A fan-in ring (its folder in /dev/shm).
    Fanin,
}

/// The kind of ring `name` is taken for: `asked`, else the one kind there
/// is a ring of that name of (`broadcast`: whether the caller found one);
/// with neither, broadcast, whose errors name the files looked for.
/// Refused when there are both and none was asked: anyone may make a
/// ring's files, so a broadcast ring of another user's could stand beside
/// helixd's `control`, and the operator would act on it unawares.
pub fn kind_of(ns: &Namespace, name: &str, asked: Option<Kind>, broadcast: bool) -> Result<Kind> {
    let fanin = exists(ns, name);
    match (asked, broadcast, fanin) {
        (Some(Kind::Fanin), _, false) => {
            bail!("no fan-in ring {name:?} in namespace {ns} ({} does not exist)", files::dir_path(ns, name).display())
        }
        (Some(kind), _, _) => Ok(kind),
        (None, true, true) => bail!(
            "namespace {ns} has both a ring {name:?} ({}) and a fan-in ring {name:?} ({}); say which with \
             --kind broadcast or --kind fanin",
            owned(&ns.data_path(name)),
            owned(&files::dir_path(ns, name))
        ),
        (None, false, true) => Ok(Kind::Fanin),
        (None, _, false) => Ok(Kind::Broadcast),
    }
}

/// `path`, and whose it is if it can be told.
fn owned(path: &std::path::Path) -> String {
    use std::os::unix::fs::MetadataExt;
    match std::fs::symlink_metadata(path) {
        Ok(m) => format!("{}, owner uid {}", path.display(), m.uid()),
        Err(_) => path.display().to_string(),
    }
}

/// Opens fan-in ring `name` and reads its counters; an error, not zeros, if
/// one of its files shrank under the mapping meanwhile.
pub fn read(ns: &Namespace, name: &str) -> Result<(FanInView, FanInStats), FanInError> {
    let v = FanInView::open(ns, name)?;
    let s = v.stats();
    match v.damage() {
        Some(path) => Err(FanInError::Damaged { path }),
        None => Ok((v, s)),
    }
}

/// Records consumed from every lane.
pub fn records(s: &FanInStats) -> u64 {
    s.lanes.iter().fold(0u64, |n, l| n.saturating_add(l.records))
}

/// Lanes the consumer reads a file of now.
pub fn bound(s: &FanInStats) -> usize {
    s.lanes.iter().filter(|l| l.bound).count()
}

/// Bytes of shared memory: the ring's file, the doorbell, the bound lanes.
fn memory(s: &FanInStats) -> u64 {
    let g = &s.geometry;
    fanin_file_size(g.lanes) + BELL_FILE_SIZE as u64 + bound(s) as u64 * lane_file_size(g.lane_capacity)
}

/// The consumer as a table shows it: its pid, `!dead` if killed, `-` if
/// none.
fn consumer(s: &FanInStats, dead: &str) -> String {
    match (s.consumer_pid, s.consumer_alive) {
        (_, true) => s.consumer_pid.to_string(),
        (0, false) => "-".into(),
        (p, false) => format!("{p}{dead}"),
    }
}

// ---- list

/// One fan-in row of `helixctl list`.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Ring name.
    pub name: String,
    /// Always [`KIND`].
    pub kind: &'static str,
    /// Whether it opened and is not damaged; if not, `error` says why.
    pub ok: bool,
    /// Why it did not open.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The rest, when it opened.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub ring: Option<Summary>,
}

/// The figures `list` shows for a fan-in ring.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Lanes (producers at once).
    pub lanes: u32,
    /// Lanes a producer holds now.
    pub bound_lanes: usize,
    /// Record bytes per lane.
    pub lane_capacity: u64,
    /// Largest record payload.
    pub max_payload: u32,
    /// Records consumed, every lane.
    pub records: u64,
    /// Records per second over the sampling interval (null if not sampled).
    pub records_per_sec: Option<f64>,
    /// The consumer's pid, if one attached (and did not leave).
    pub consumer_pid: Option<u32>,
    /// Whether that consumer is alive.
    pub consumer_alive: bool,
    /// Bytes of shared memory (its file, the doorbell, bound lanes).
    pub memory_bytes: u64,
}

/// The fan-in rings of a namespace, opened and counted once, to be
/// counted again after `list`'s sampling interval.
///
/// Each ring is opened once to count and once to show, never all at once:
/// a process holds at most `guard::SLOTS` guarded mappings.
pub struct Sampler {
    /// Each ring's name and its first reading.
    rings: Vec<(String, Option<Reading>)>,
    ns: Namespace,
}

/// A fan-in ring's creation time and records consumed, and when they were
/// read.
type Reading = (u64, u64, Instant);

impl Sampler {
    /// Counts the records of every fan-in ring of `ns`.
    pub fn start(ns: &Namespace) -> std::io::Result<Sampler> {
        let rings = inspect::list(ns)?
            .into_iter()
            .map(|name| {
                let n = FanInView::open(ns, &name)
                    .ok()
                    .map(|v| (v.geometry().created_ns, records(&v.stats()), Instant::now()));
                (name, n)
            })
            .collect();
        Ok(Sampler { rings, ns: ns.clone() })
    }

    /// The rows, with rates since `start` if `sampled` (over the same
    /// ring: not one created again meanwhile).
    pub fn rows(self, sampled: bool) -> Vec<Row> {
        let ns = self.ns;
        self.rings
            .into_iter()
            .map(|(name, first)| {
                let v = FanInView::open(&ns, &name);
                let created = v.as_ref().ok().map(|v| v.geometry().created_ns);
                let first = first.filter(|&(c, _, _)| Some(c) == created && sampled);
                let rate_over = first.map(|(_, n, at)| (n, at.elapsed().as_secs_f64().max(1e-9)));
                row(name, v, rate_over)
            })
            .collect()
    }
}

/// Fan-in ring `name`'s row; its rate since it had `rate_over.0` records,
/// `rate_over.1` seconds ago (if sampled).
fn row(name: String, v: Result<FanInView, FanInError>, rate_over: Option<(u64, f64)>) -> Row {
    let fail = |e: String| Row { name: name.clone(), kind: KIND, ok: false, error: Some(e), ring: None };
    let v = match v {
        Ok(v) => v,
        Err(e) => return fail(e.to_string()),
    };
    let s = v.stats();
    if let Some(path) = v.damage() {
        return fail(FanInError::Damaged { path }.to_string());
    }
    let n = records(&s);
    let summary = Summary {
        lanes: s.geometry.lanes,
        bound_lanes: bound(&s),
        lane_capacity: s.geometry.lane_capacity,
        max_payload: s.geometry.max_payload,
        records: n,
        records_per_sec: rate_over.map(|(before, secs)| n.saturating_sub(before) as f64 / secs),
        consumer_pid: (s.consumer_pid != 0).then_some(s.consumer_pid),
        consumer_alive: s.consumer_alive,
        memory_bytes: memory(&s),
    };
    Row { name, kind: KIND, ok: true, error: None, ring: Some(summary) }
}

/// Prints `list`'s fan-in table.
pub fn print_rows(rows: &[Row]) {
    println!(
        "{:<20} {:>5} {:>5} {:>10} {:>10} {:>14} {:>12} {:>12} {:>10}",
        "FAN-IN RING", "LANES", "BOUND", "LANE", "RECORD", "RECORDS", "RECORDS/S", "CONSUMER", "MEMORY"
    );
    for r in rows {
        let Some(s) = &r.ring else {
            println!("{}", super::list::problem_line(&r.name, "CORRUPT", r.error.as_deref().unwrap_or("?")));
            continue;
        };
        println!(
            "{:<20} {:>5} {:>5} {:>10} {:>10} {:>14} {:>12} {:>12} {:>10}",
            r.name,
            s.lanes,
            s.bound_lanes,
            format::bytes(s.lane_capacity),
            format::bytes(s.max_payload as u64),
            s.records,
            format::rate(s.records_per_sec),
            format::process(s.consumer_pid, s.consumer_alive),
            format::bytes(s.memory_bytes)
        );
    }
}

// ---- stat

/// `helixctl stat` of a fan-in ring: the geometry flattened, the ring's
/// counters, and a row per lane.
#[derive(Debug, Clone, Serialize)]
pub struct Stat {
    /// Ring name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// Always [`KIND`].
    pub kind: &'static str,
    /// Lanes, lane capacity, largest payload, creation time, allow-list.
    #[serde(flatten)]
    pub geometry: FanInGeometry,
    /// The consumer's pid (null: none attached).
    pub consumer_pid: Option<u32>,
    /// Whether a live process is the consumer (the kernel's lock).
    pub consumer_alive: bool,
    /// CLOCK_REALTIME ns when it attached (0: never).
    pub consumer_since_ns: u64,
    /// Drain rounds that delivered records.
    pub rounds: u64,
    /// Times the consumer slept on the doorbell.
    pub sleeps: u64,
    /// Lane-file rescans.
    pub rescans: u64,
    /// Lanes dropped for breaking the protocol.
    pub faults: u64,
    /// Lanes freed after their producer left or died.
    pub reclaimed: u64,
    /// Records consumed, every lane.
    pub records: u64,
    /// Payload bytes consumed, every lane.
    pub bytes: u64,
    /// Every lane.
    pub lanes: Vec<Lane>,
}

/// A lane as `stat` shows it: its counters and two figures derived.
#[derive(Debug, Clone, Serialize)]
pub struct Lane {
    /// The counters (`docs/abi.md` §11.3; waits as the producer reports).
    #[serde(flatten)]
    pub stats: LaneStats,
    /// `free`, `bound`, `closed` (its producer let it go) or `dead` (its
    /// producer died): what the table's STATE column says.
    pub state: &'static str,
    /// Backlog over the lane's capacity (0 to 1).
    pub fill: f64,
}

fn lane(l: LaneStats, capacity: u64) -> Lane {
    let state = match (l.bound, l.closed, l.producer_alive) {
        (false, _, _) => "free",
        (true, true, _) => "closed",
        (true, false, true) => "bound",
        (true, false, false) => "dead",
    };
    let fill = l.backlog as f64 / capacity.max(1) as f64;
    Lane { stats: l, state, fill }
}

/// Everything `stat` shows of fan-in ring `name`.
pub fn stat(ns: &Namespace, name: &str) -> Result<Stat, FanInError> {
    let (_, s) = read(ns, name)?;
    let cap = s.geometry.lane_capacity;
    Ok(Stat {
        name: name.to_owned(),
        namespace: ns.to_string(),
        kind: KIND,
        consumer_pid: (s.consumer_pid != 0).then_some(s.consumer_pid),
        consumer_alive: s.consumer_alive,
        consumer_since_ns: s.consumer_since_ns,
        rounds: s.rounds,
        sleeps: s.sleeps,
        rescans: s.rescans,
        faults: s.faults,
        reclaimed: s.reclaimed,
        records: records(&s),
        bytes: s.lanes.iter().fold(0u64, |n, l| n.saturating_add(l.bytes)),
        lanes: s.lanes.into_iter().map(|l| lane(l, cap)).collect(),
        geometry: s.geometry,
    })
}

/// Prints `stat` of a fan-in ring, as text or (`json`) as JSON.
pub fn print_stat(ns: &Namespace, name: &str, json: bool) -> Result<()> {
    let s = stat(ns, name)?;
    if json {
        return json::print(&s);
    }
    let g = &s.geometry;
    let allow = match g.allow_uids.as_slice() {
        [] => "any user the mode lets in".to_owned(),
        uids => format!("uids {uids:?}"),
    };
    println!(
        "fan-in ring {} (namespace {}): {} lanes of {}, records up to {}; may produce: {allow}",
        s.name,
        s.namespace,
        g.lanes,
        format::bytes(g.lane_capacity),
        format::bytes(g.max_payload as u64)
    );
    let consumer = match (s.consumer_pid, s.consumer_alive) {
        (Some(p), true) => format!("pid {p}"),
        (Some(p), false) => format!("pid {p} (dead)"),
        (None, _) => "none".into(),
    };
    println!("  consumer       {consumer}");
    println!("  consumed       {} records, {}", s.records, format::bytes(s.bytes));
    println!("  drain          {} rounds, {} sleeps, {} rescans", s.rounds, s.sleeps, s.rescans);
    println!("  lanes          {} bound, {} dropped (faults), {} freed", bound_of(&s), s.faults, s.reclaimed);
    println!("{}", lane_header());
    for l in &s.lanes {
        println!("{}", lane_row(l));
    }
    Ok(())
}

fn bound_of(s: &Stat) -> usize {
    s.lanes.iter().filter(|l| l.stats.bound).count()
}

/// The header of the lane table (`top` shows it under each ring).
pub fn lane_header() -> String {
    format!(
        "{:>4} {:<6} {:>8} {:>6} {:>6} {:>12} {:>10} {:>10} {:>9} {:>6}",
        "LANE", "STATE", "PID", "UID", "EPOCH", "RECORDS", "BYTES", "FULL WAITS", "WAITED", "FILL"
    )
}

/// A lane's row of the table; pid and uid of a free lane are its last
/// producer's, so they are shown as `-`.
pub fn lane_row(l: &Lane) -> String {
    let s = &l.stats;
    let (pid, uid) = if s.bound { (s.pid.to_string(), s.uid.to_string()) } else { ("-".into(), "-".into()) };
    format!(
        "{:>4} {:<6} {:>8} {:>6} {:>6} {:>12} {:>10} {:>10} {:>8.3}s {:>5.1}%",
        s.lane,
        l.state,
        pid,
        uid,
        s.epoch,
        s.records,
        format::bytes(s.bytes),
        s.full_waits,
        s.wait_ns as f64 / 1e9,
        l.fill * 100.0
    )
}

// ---- top

/// `top`'s fan-in section: a line per ring, its bound lanes under it;
/// rates against `seen` (keyed `<name>@fanin`, which no broadcast ring
/// name can be).
pub fn top(ns: &Namespace, seen: &mut super::top::Seen) -> String {
    let mut out = String::new();
    let names = inspect::list(ns).unwrap_or_default();
    if names.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "\n{:<20} {:>5} {:>5} {:>14} {:>12} {:>10} {:>8} {:>8}",
        "FAN-IN RING", "LANES", "BOUND", "RECORDS", "RECORDS/S", "CONSUMER", "SLEEPS", "FAULTS"
    );
    for name in names {
        let s = match read(ns, &name) {
            Ok((_, s)) => s,
            Err(e) => {
                seen.remove(&format!("{name}@fanin"));
                let _ = writeln!(out, "{}", super::list::problem_line(&name, "CORRUPT", &e.to_string()));
                continue;
            }
        };
        let n = records(&s);
        let now = Instant::now();
        let key = format!("{name}@fanin");
        let rate =
            seen.get(&key).map(|(t, p)| n.saturating_sub(*p) as f64 / now.duration_since(*t).as_secs_f64().max(1e-9));
        seen.insert(key, (now, n));
        let _ = writeln!(
            out,
            "{:<20} {:>5} {:>5} {:>14} {:>12} {:>10} {:>8} {:>8}",
            name,
            s.geometry.lanes,
            bound(&s),
            n,
            format::rate(rate),
            consumer(&s, "!dead"),
            s.sleeps,
            s.faults
        );
        let cap = s.geometry.lane_capacity;
        let lanes: Vec<Lane> = s.lanes.into_iter().filter(|l| l.bound).map(|l| lane(l, cap)).collect();
        if !lanes.is_empty() {
            let _ = writeln!(out, "  {}", lane_header());
        }
        for l in &lanes {
            let _ = writeln!(out, "  {}", lane_row(l));
        }
    }
    out
}

// ---- rm

/// What `helixctl rm --json` prints for a fan-in ring.
#[derive(Serialize)]
struct Removed<'a> {
    ring: &'a str,
    namespace: &'a str,
    kind: &'static str,
    /// The folder removed, with every file in it.
    removed: Vec<std::path::PathBuf>,
    /// The live consumer it was removed from under (`--force`).
    consumer_pid: Option<u32>,
}

/// Whether `ns` has a fan-in ring folder `name` (whatever is in it).
pub fn exists(ns: &Namespace, name: &str) -> bool {
    helix::shm::validate_ring_name(name).is_ok() && std::fs::symlink_metadata(files::dir_path(ns, name)).is_ok()
}

/// Removes fan-in ring `name`: refused while a live process is its
/// consumer, unless `force`.
pub fn remove(ns: &Namespace, name: &str, force: bool, json: bool) -> Result<()> {
    let dir = files::dir_path(ns, name);
    let consumer = match inspect::live_consumer(ns, name) {
        Ok(consumer) => consumer,
        // What `doctor` tells to run on a broken ring: before, --force
        // failed the same way, and nothing could remove it.
        Err(e) if force => {
            eprintln!(
                "warning: cannot tell whether fan-in ring {name:?} has a live consumer ({e}); removing it (--force)"
            );
            None
        }
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot tell whether fan-in ring {name:?} has a live consumer; use --force"))
        }
    };
    if let (Some(pid), false) = (consumer, force) {
        bail!(
            "fan-in ring {name:?} is in use: its consumer is live pid {pid}; stop that process first, or use \
             --force (its producers then write into the removed ring until they exit)"
        );
    }
    FanIn::unlink(ns, name)?;
    if json {
        let removed = vec![dir];
        return json::print(&Removed {
            ring: name,
            namespace: ns.as_str(),
            kind: KIND,
            removed,
            consumer_pid: consumer,
        });
    }
    println!("removed fan-in ring {name} ({} and every file in it)", dir.display());
    if let Some(pid) = consumer {
        println!("its consumer, pid {pid}, is still running: it reads the removed ring until it exits");
    }
    Ok(())
}
