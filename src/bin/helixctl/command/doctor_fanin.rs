//! `helixctl doctor`'s fan-in checks: each fan-in ring opens and is not
//! damaged, has a live consumer, its folder and files have the owner and
//! modes the ring was made with, every file in its folder is a lane it
//! reads (or one a producer is attaching), no lane is held by a dead
//! producer; and no creation folder was left behind. Severities as for
//! broadcast rings: a ring nobody can use is FAIL, the rest WARN.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use super::{bad, ok, Check, Status};
use crate::command::fanin;
use helix::fanin::files::{self, BELL_FILE, RING_FILE};
use helix::fanin::inspect::{self, LaneFileStatus, Leftover};
use helix::fanin::{FanInError, FanInStats, FanInView, LaneStats};
use helix::shm::Namespace;

const RING: &str = "fan-in ring";
const CONSUMER: &str = "fan-in consumer";
const FILES: &str = "fan-in files";
const LANES: &str = "fan-in lanes";

/// Every fan-in check for namespace `ns`.
pub fn checks(ns: &Namespace) -> Vec<Check> {
    let (names, leftovers) = match (inspect::list(ns), inspect::leftovers(ns)) {
        (Ok(n), Ok(l)) => (n, l),
        (Err(e), _) | (_, Err(e)) => {
            return vec![bad(RING, Status::Fail, format!("cannot read /dev/shm: {e}"), "mount a tmpfs on /dev/shm")]
        }
    };
    let mut out: Vec<Check> = leftovers.iter().map(leftover).collect();
    for name in names {
        out.extend(ring(ns, &name));
    }
    out
}

/// `path` as one word of a shell command, quoted: a fix is pasted into a
/// shell (as root, often), and a file name in a ring's folder or beside it
/// in /dev/shm is anyone's choice (`$(...)`, spaces, quotes).
fn shell_word(path: &Path) -> String {
    let path = path.to_string_lossy();
    // Only a NUL byte cannot be quoted, and no path holds one.
    shlex::try_quote(&path).map_or_else(|_| path.to_string(), String::from)
}

/// A creation folder that was never named.
fn leftover(l: &Leftover) -> Check {
    let path = l.path.display();
    if !l.abandoned {
        return ok(RING, format!("{}: being created ({path}, creator pid {})", l.ring, l.pid));
    }
    bad(
        RING,
        Status::Warn,
        format!(
            "{}: {path} is a creation folder its creator (pid {}) left {} s ago: no ring, but it holds memory",
            l.ring, l.pid, l.age_secs
        ),
        format!("rm -r {}", shell_word(&l.path)),
    )
}

/// The checks of fan-in ring `name`.
fn ring(ns: &Namespace, name: &str) -> Vec<Check> {
    let (v, s) = match fanin::read(ns, name) {
        Ok(r) => r,
        Err(e) => return vec![unusable(name, &e)],
    };
    let mut out = vec![consumer(name, &s)];
    out.extend(folder(name, v.dir()));
    out.extend(lanes(name, &v, &s));
    out
}

/// A fan-in ring that does not open, or is damaged.
fn unusable(name: &str, e: &FanInError) -> Check {
    match e {
        FanInError::Permission { .. } => bad(
            RING,
            Status::Warn,
            format!("{name}: not checked: {e}"),
            "run doctor as the ring's owner or root to check it",
        ),
        e => bad(
            RING,
            Status::Fail,
            format!("{name}: {e}"),
            format!("`helixctl rm {name}` (refused while its consumer lives) and let its consumer create it again"),
        ),
    }
}

/// The consumer: a live process holds the ring.
fn consumer(name: &str, s: &FanInStats) -> Check {
    let bound = fanin::bound(s);
    match (s.consumer_pid, s.consumer_alive) {
        (pid, true) => ok(CONSUMER, format!("{name}: consumer pid {pid}, {bound} of {} lanes bound", s.geometry.lanes)),
        (0, false) => bad(
            CONSUMER,
            Status::Warn,
            format!("{name}: no consumer attached; what producers send waits in their lanes"),
            "start its consumer (helixd, for the control ring), or remove the ring if it is no longer used",
        ),
        (pid, false) => bad(
            CONSUMER,
            Status::Warn,
            format!("{name}: consumer pid {pid} is dead; what producers send waits in their lanes ({bound} bound)"),
            "restart its consumer (systemctl restart helix, for the control ring); the next one resumes every lane where it stopped",
        ),
    }
}

/// The folder, `ring` and `bell`: a real folder, sticky,
/// one owner and group, and the modes of one `mode` (learnt from `bell`).
fn folder(name: &str, dir: &Path) -> Option<Check> {
    let meta = |p: &Path| std::fs::symlink_metadata(p).ok();
    let (d, r, b) = (meta(dir)?, meta(&dir.join(RING_FILE))?, meta(&dir.join(BELL_FILE))?);
    let mode = |m: &std::fs::Metadata| m.permissions().mode() & 0o7777;
    let detail = format!(
        "{name}: folder {:o} {}:{}, ring {:o} {}:{}, bell {:o} {}:{}",
        mode(&d),
        d.uid(),
        d.gid(),
        mode(&r),
        r.uid(),
        r.gid(),
        mode(&b),
        b.uid(),
        b.gid()
    );
    let fix = format!("`helixctl rm {name}` and let its consumer create it again (its files are made together)");
    if d.file_type().is_symlink() {
        let to = std::fs::read_link(dir).map(|t| t.display().to_string()).unwrap_or_default();
        let why = format!("{name}: {} is a symbolic link (to {to}), not the folder its consumer made", dir.display());
        return Some(bad(FILES, Status::Fail, why, format!("rm {}", shell_word(dir))));
    }
    let owners = [(d.uid(), d.gid()), (r.uid(), r.gid()), (b.uid(), b.gid())];
    if owners.iter().any(|o| *o != owners[0]) {
        return Some(bad(FILES, Status::Warn, format!("{detail}: not one owner and group"), fix));
    }
    let (want_dir, want_ring, want_bell) = inspect::modes(mode(&b) & 0o666);
    if (mode(&d), mode(&r), mode(&b)) != (want_dir, want_ring, want_bell) {
        let why = format!(
            "{detail}: the modes are not those of one ring (for bell {:o}: folder {want_dir:o}, ring {want_ring:o})",
            mode(&b)
        );
        return Some(bad(FILES, Status::Warn, why, fix));
    }
    Some(ok(FILES, detail))
}

/// Every lane and every other name in the folder.
fn lanes(name: &str, v: &FanInView, s: &FanInStats) -> Vec<Check> {
    let dir = v.dir();
    let gid = std::fs::metadata(dir).map(|m| m.gid()).ok();
    let mut out: Vec<Check> =
        s.lanes.iter().filter_map(|l| lane(name, dir, gid, l, v.lane_file(l.lane), s.consumer_alive)).collect();
    match v.strays() {
        Ok(strays) => out.extend(strays.iter().map(|st| {
            let path = dir.join(&st.name);
            bad(
                FILES,
                Status::Warn,
                format!("{name}: {} (uid {}) is not a file of this ring", path.display(), st.uid),
                format!("rm {}", shell_word(&path)),
            )
        })),
        Err(e) => {
            out.push(bad(FILES, Status::Warn, format!("{name}: cannot list {}: {e}", dir.display()), "run as root"))
        }
    }
    if out.is_empty() {
        let bound = fanin::bound(s);
        out.push(ok(LANES, format!("{name}: {bound} of {} lanes bound, every producer alive", s.geometry.lanes)));
    }
    out
}

/// What is wrong with lane `l` and its file (`file`), if anything.
fn lane(name: &str, dir: &Path, gid: Option<u32>, l: &LaneStats, file: LaneFileStatus, live: bool) -> Option<Check> {
    let k = l.lane;
    let path = dir.join(files::lane_name(k));
    let warn = |detail: String, fix: String| Some(bad(LANES, Status::Warn, format!("{name}: lane {k}: {detail}"), fix));
    match file {
        LaneFileStatus::Refused { uid, reason } => warn(
            format!(
                "{} (uid {}) is not a lane of this ring: {reason}",
                path.display(),
                uid.map_or("?".into(), |u| u.to_string())
            ),
            format!("its consumer drops it at its next scan; if it stays, rm {}", shell_word(&path)),
        ),
        LaneFileStatus::Unreadable { reason } => {
            warn(format!("{} not checked: {reason}", path.display()), "run doctor as the ring's owner or root".into())
        }
        LaneFileStatus::Unbound { .. } if live => None,
        LaneFileStatus::Unbound { uid, pid, epoch } => warn(
            format!("producer pid {pid} (uid {uid}, epoch {epoch}) waits for a consumer"),
            "start the ring's consumer".into(),
        ),
        LaneFileStatus::Absent if l.bound => warn(
            format!("bound (epoch {}), but {} was removed", l.epoch, path.display()),
            "nothing to do: its consumer reads it until its producer leaves; remove lane files only with `helixctl rm`"
                .into(),
        ),
        LaneFileStatus::Bound if !l.producer_alive && !l.closed => warn(
            format!(
                "producer pid {} (uid {}) is dead; {} of it not yet consumed",
                l.pid,
                l.uid,
                crate::format::bytes(l.backlog)
            ),
            if live {
                "nothing to do: its consumer frees the lane once it has read it (at its next sweep)".into()
            } else {
                "start the ring's consumer: it reads what is left and frees the lane".into()
            },
        ),
        LaneFileStatus::Bound => lane_file_mode(name, k, &path, gid),
        LaneFileStatus::Absent => None,
    }
}

/// A bound lane file: mode 0640 and the folder's group, as its producer
/// made it (a producer that opens it wider lets others write its lane).
fn lane_file_mode(name: &str, k: usize, path: &Path, gid: Option<u32>) -> Option<Check> {
    let m = std::fs::symlink_metadata(path).ok()?;
    let mode = m.permissions().mode() & 0o7777;
    if mode == 0o640 && Some(m.gid()) == gid {
        return None;
    }
    Some(bad(
        LANES,
        Status::Warn,
        format!(
            "{name}: lane {k}: {} is mode {mode:o} group {} (a lane file is 640, the folder's group {}): its producer (uid {}) changed it",
            path.display(),
            m.gid(),
            gid.map_or("?".into(), |g| g.to_string()),
            m.uid()
        ),
        format!("restart that producer, or chmod 640 {}", path.display()),
    ))
}
