//! What a tool (`helixctl`) finds of fan-in rings in `/dev/shm`: the rings
//! of a namespace, the leftovers of creations that died, the consumer's
//! liveness, and each file in a ring's folder judged as the consumer would
//! judge it. Read-only: nothing here opens a file for writing, takes a
//! lock or changes a counter; every name and field it reports may come
//! from a producer (print names escaped).

use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;
use std::time::Duration;

use crate::shm::{self, Namespace, SHM_DIR};
use crate::sync::Ordering;

use super::files::{self, BELL_FILE, FANIN_SUFFIX, LOCK_FILE, RING_FILE};
use super::lane_file;
use super::layout::LANE_BOUND;
use super::FanInView;

/// A creation folder older than this is abandoned (as a broadcast ring's
/// never-initialised data file is): making one takes milliseconds.
pub const ABANDONED_AFTER: Duration = Duration::from_secs(10);

/// The fan-in rings of `ns`: every valid ring name with a folder entry
/// `<ns>.<name>@fanin` (whatever it is; opening it says if it is a ring),
/// sorted.
pub fn list(ns: &Namespace) -> io::Result<Vec<String>> {
    let prefix = format!("{}.", ns.as_str());
    let mut names = Vec::new();
    for entry in std::fs::read_dir(SHM_DIR)? {
        let file_name = entry?.file_name();
        let Some(rest) = file_name.to_str().and_then(|n| n.strip_prefix(&prefix)) else { continue };
        if let Some(name) = rest.strip_suffix(FANIN_SUFFIX) {
            if shm::validate_ring_name(name).is_ok() {
                names.push(name.to_owned());
            }
        }
    }
    names.sort();
    Ok(names)
}

/// A folder a fan-in ring's creator made and did not name (it died, or is
/// making it now): `<ns>.<name>@fanin.<pid>.<ns>.tmp`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Leftover {
    /// The ring it was to be.
    pub ring: String,
    /// Its path.
    pub path: PathBuf,
    /// The creator's pid, from the name.
    pub pid: u32,
    /// Seconds since it was last changed.
    pub age_secs: u64,
    /// Whether it is abandoned: its creator is gone, or it is older than
    /// [`ABANDONED_AFTER`].
    pub abandoned: bool,
}

/// The creation folders of `ns` that were never named (see [`Leftover`]).
pub fn leftovers(ns: &Namespace) -> io::Result<Vec<Leftover>> {
    let prefix = format!("{}.", ns.as_str());
    let mut out = Vec::new();
    for entry in std::fs::read_dir(SHM_DIR)? {
        let entry = entry?;
        let file_name = entry.file_name();
        let Some(rest) = file_name.to_str().and_then(|n| n.strip_prefix(&prefix)) else { continue };
        let Some((ring, tail)) = rest.split_once(&format!("{FANIN_SUFFIX}.")) else { continue };
        let Some(pid) = tail.strip_suffix(".tmp").and_then(|t| t.split('.').next()?.parse::<u32>().ok()) else {
            continue;
        };
        if shm::validate_ring_name(ring).is_err() {
            continue;
        }
        let Ok(meta) = std::fs::symlink_metadata(entry.path()) else { continue };
        let age = meta.modified().ok().and_then(|m| m.elapsed().ok()).unwrap_or_default();
        out.push(Leftover {
            ring: ring.to_owned(),
            path: entry.path(),
            pid,
            age_secs: age.as_secs(),
            abandoned: age >= ABANDONED_AFTER || !crate::process::exists(pid),
        });
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// The pid of the live consumer of fan-in ring `name`, if one holds it
/// (the kernel's lock on its file says it lives; the pid is what it wrote
/// in the header). Reads the file without validating it, so a ring whose
/// header is corrupt is judged too; `Ok(None)` if there is no such file.
pub fn live_consumer(ns: &Namespace, name: &str) -> io::Result<Option<u32>> {
    shm::validate_ring_name(name).map_err(io::Error::other)?;
    let dir = files::dir_path(ns, name);
    let file = match shm::open_file(&dir.join(RING_FILE), false) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if !files::consumer_alive(&dir, &file)? {
        return Ok(None);
    }
    // `consumer_pid` is at offset 256 (docs/abi.md §11.2); 0 if the file
    // is too short to hold it.
    let mut pid = [0u8; 4];
    let _ = file.read_exact_at(&mut pid, 256);
    Ok(Some(u32::from_ne_bytes(pid)))
}

/// What holds lane `k`'s place (`lane.<k>`) in a ring's folder.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(tag = "file", rename_all = "snake_case"))]
pub enum LaneFileStatus {
    /// No file of that name.
    Absent,
    /// The file the consumer reads.
    Bound,
    /// A lane file of the lane's next epoch the consumer has not bound
    /// yet: a producer attaching, or one waiting for a consumer.
    Unbound {
        /// Its owner.
        uid: u32,
        /// Its producer (0: unknown).
        pid: u32,
        /// Its epoch.
        epoch: u64,
    },
    /// A file the consumer refuses, or refused and could not remove: why.
    Refused {
        /// Its owner, if it could be looked at.
        uid: Option<u32>,
        /// Why (may quote what the producer wrote).
        reason: String,
    },
    /// It could not be opened to be checked (this user may not read it).
    Unreadable {
        /// Why.
        reason: String,
    },
}

/// One name in a ring's folder that is none of its files (`ring`, `bell`,
/// `lane.<k>` for a lane it has): nothing HELIX makes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Stray {
    /// The name (not UTF-8 bytes replaced), as a producer chose it.
    pub name: String,
    /// Its owner.
    pub uid: u32,
}

impl FanInView {
    /// Lane `k`'s file (`k` below the ring's lanes), judged as the
    /// consumer's next scan would judge it.
    pub fn lane_file(&self, k: usize) -> LaneFileStatus {
        let path = self.dir().join(files::lane_name(k));
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return LaneFileStatus::Absent,
            Err(e) => return LaneFileStatus::Unreadable { reason: e.to_string() },
        };
        if meta.file_type().is_file() {
            if let Err(e) = shm::open_file(&path, false) {
                if e.kind() == io::ErrorKind::PermissionDenied {
                    return LaneFileStatus::Unreadable { reason: e.to_string() };
                }
            }
        }
        let refused = |uid, reason| LaneFileStatus::Refused { uid, reason };
        let g = self.geometry();
        let lf = match lane_file::open_lane(&self.dir().join(files::lane_name(k)), k, g, self.files.consumer_uid) {
            Ok(Some(lf)) => lf,
            Ok(None) => return LaneFileStatus::Absent,
            Err(bad) if bad.is_ours() => return LaneFileStatus::Unreadable { reason: bad.reason },
            Err(bad) => return refused((bad.uid != u32::MAX).then_some(bad.uid), bad.reason),
        };
        let st = self.files.state(k);
        let (epoch, status) = (st.epoch.load(Ordering::Relaxed), st.status.load(Ordering::Relaxed));
        if status == LANE_BOUND && epoch == lf.epoch && st.ino.load(Ordering::Relaxed) == lf.judged.ino {
            return LaneFileStatus::Bound;
        }
        if !g.allow_uids.is_empty() && !g.allow_uids.contains(&lf.uid) {
            return refused(Some(lf.uid), format!("its owner, uid {}, is not on the ring's allow-list", lf.uid));
        }
        // The next epoch, also while the lane is still bound: the consumer
        // removes a freed lane's file a moment before it marks it free.
        if Some(lf.epoch) != epoch.checked_add(1) {
            let why = format!("its epoch {} is not the lane's next, {epoch} + 1", lf.epoch);
            return refused(Some(lf.uid), why);
        }
        LaneFileStatus::Unbound { uid: lf.uid, pid: lf.pid, epoch: lf.epoch }
    }

    /// The names in the ring's folder that are none of its files.
    pub fn strays(&self) -> io::Result<Vec<Stray>> {
        let lanes = self.geometry().lanes as usize;
        let mut out = Vec::new();
        for entry in std::fs::read_dir(self.dir())? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let lane = name.strip_prefix("lane.").and_then(|k| k.parse::<usize>().ok());
            let ours = name == RING_FILE
                || name == BELL_FILE
                || name == LOCK_FILE
                || lane.is_some_and(|k| k < lanes && files::lane_name(k) == name);
            if !ours {
                let uid = entry.metadata().map(|m| m.uid()).unwrap_or(u32::MAX);
                out.push(Stray { name, uid });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}

/// The modes (permission bits with the sticky bit) of the folder,
/// `ring` and `bell` of a fan-in ring made with permission bits `mode`
/// (`FanInOptions::mode`; `docs/abi.md` §11.1). `bell` keeps `mode &
/// 0o666`, so a tool learns `mode` from it.
pub fn modes(mode: u32) -> (u32, u32, u32) {
    (files::folder_mode(mode), 0o600 | (mode & 0o044), mode & 0o666)
}
