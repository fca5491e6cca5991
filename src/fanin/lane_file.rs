//! A fan-in ring's lane files (`docs/abi.md` §11.3): a producer makes its
//! own and names it; the consumer opens each one and checks it before it
//! reads a record from it.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::layout::ABI_VERSION;
use crate::shm::{self, Mapping};
use crate::sync::{AtomicU64, Ordering};

use super::files::{lane_name, FanInGeometry};
use super::folder::{self, Judged};
use super::layout::*;
use super::FanInError;

/// A lane file a producer made, not yet named.
pub(crate) struct NewLane {
    pub(crate) file: File,
    pub(crate) map: Mapping,
    /// Its device and inode (the consumer's `LaneState::ino` names it
    /// once bound).
    pub(crate) judged: Judged,
}

/// Makes an unnamed lane file in the folder: sized, locked (liveness and
/// pid locks), its header filled in but for the lane and epoch. Mode 0640:
/// the folder's default ACL (set by its consumer) makes that readable by
/// this producer and the consumer only.
pub(crate) fn create_lane(dir: &Path, g: &FanInGeometry) -> Result<NewLane, FanInError> {
    let io = |op| move |e| FanInError::io(dir, op, e);
    let size = lane_file_size(g.lane_capacity);
    let file = shm::create_unnamed_in(dir, size, 0o640, None).map_err(|(op, e)| io(op)(e))?;
    // The whole-file lock of creation would conflict with the pid lock.
    shm::unlock(&file).map_err(io("unlock"))?;
    if !shm::try_live_lock(&file).map_err(io("lock"))? {
        return Err(io("lock")(std::io::ErrorKind::WouldBlock.into()));
    }
    shm::pid_lock(&file).map_err(io("lock"))?;
    let judged = Judged::of(&file.metadata().map_err(io("stat"))?);
    let map = Mapping::new(&file, true).map_err(io("map"))?;
    let (pid, start_time) = crate::process::identity();
    // SAFETY: the file is unnamed (only we can reach it), zero-filled and
    // mapped whole and writable.
    let h = unsafe { &mut *(map.ptr() as *mut LaneHeader) };
    h.magic = LANE_MAGIC;
    h.header_size = LANE_HEADER_SIZE as u32;
    h.max_payload = g.max_payload;
    h.capacity = g.lane_capacity;
    h.ring_created_ns = g.created_ns;
    h.file_size = size;
    h.pid = pid;
    h.start_time = start_time;
    h.attached_ns = crate::process::realtime_ns();
    Ok(NewLane { file, map, judged })
}

/// What [`NewLane::link`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Link {
    /// The file is lane `k`'s now.
    Taken,
    /// Another file holds the lane.
    Held,
    /// The link came too late: before it, the consumer had bound (or
    /// refused) the epoch for another producer's file, which came and went
    /// between this producer's read of the epoch and its link. The name is
    /// given up again; the file cannot be linked again (make another).
    Stale,
}

impl NewLane {
    /// Names the file lane `k` of epoch `epoch` (`state` being lane `k`'s
    /// `LaneState`), and checks at once that the epoch was still to come.
    pub(crate) fn link(&self, dir: &Path, k: usize, epoch: u64, state: &LaneState) -> Result<Link, FanInError> {
        // SAFETY: still unnamed (a failed link leaves it so): only we can
        // reach it, so plain writes to its identity fields race nothing.
        let h = unsafe { &mut *(self.map.ptr() as *mut LaneHeader) };
        h.lane = k as u32;
        h.epoch = epoch;
        // SYNC POINT: lane file initialised. Pairs with the consumer's
        // Acquire load of `version` in `open_lane`.
        h.version.store(ABI_VERSION, Ordering::Release);
        let path = dir.join(lane_name(k));
        match shm::link_unnamed(&self.file, &path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(Link::Held),
            Err(e) => return Err(FanInError::io(&path, "link", e)),
        }
        // SYNC POINT: lane bound. Pairs with the consumer's Release store of
        // `epoch` in `lease::bind_fresh` (or `lease::spend`, refusing): the
        // name was free for our link only after the consumer moved the
        // previous file aside, which it does after storing that file's
        // epoch (the two directory
        // operations are ordered by the folder's lock). An epoch of ours
        // already there, with another inode, was another file's.
        let (now, ino) = (state.epoch.load(Ordering::Acquire), state.ino.load(Ordering::Relaxed));
        if now > epoch || (now == epoch && ino != self.judged.ino) {
            let _ = folder::move_aside(dir, k, "stale", self.judged);
            return Ok(Link::Stale);
        }
        Ok(Link::Taken)
    }
}

/// A lane file's header and record words.
///
/// # Safety
///
/// `map` must be a whole lane file of `capacity` record bytes, made by
/// [`create_lane`] or checked by [`open_lane`]: the header and `capacity`
/// bytes, page aligned. Everything in it is then accessed as atomics
/// only; a shrink turns it to zeros in place (the fault guard).
pub(crate) unsafe fn lane_view(map: &Mapping, capacity: u64) -> (&LaneHeader, &[AtomicU64]) {
    assert_eq!(map.len() as u64, lane_file_size(capacity), "a lane view of a mapping of another size");
    // SAFETY: per the contract: in bounds, 8-aligned (the data starts at
    // 512 of a page-aligned mapping), alive as long as `map`.
    unsafe {
        (
            &*(map.ptr() as *const LaneHeader),
            std::slice::from_raw_parts(map.ptr().add(LANE_HEADER_SIZE) as *const AtomicU64, (capacity / 8) as usize),
        )
    }
}

/// A lane file the consumer opened and checked.
pub(crate) struct LaneFile {
    pub(crate) file: File,
    pub(crate) map: Mapping,
    /// Record bytes (the ring's `lane_capacity`).
    pub(crate) capacity: u64,
    /// What the consumer judged (device and inode): only this is ever
    /// moved out of the lane's name.
    pub(crate) judged: Judged,
    pub(crate) uid: u32,
    pub(crate) pid: u32,
    pub(crate) epoch: u64,
}

/// [`BadLane::why`] of a lane file this process could not map.
const UNMAPPABLE: &str = "unmappable";

/// What is wrong with the entry under a lane's name, and whose it is (if
/// known).
pub(crate) struct BadLane {
    /// The entry judged, to move exactly it aside.
    pub(crate) judged: Judged,
    pub(crate) uid: u32,
    /// Its epoch, if its header was read (else 0).
    pub(crate) epoch: u64,
    /// A word for the name it is moved aside under.
    pub(crate) why: &'static str,
    pub(crate) reason: String,
}

impl BadLane {
    /// Whether the trouble is the reader's own (it could not map the file:
    /// out of memory, or of the fault guard's slots), not the file's:
    /// nothing was judged, and the file is to be left as it is.
    pub(crate) fn is_ours(&self) -> bool {
        self.why == UNMAPPABLE
    }
}

/// Opens lane `k`'s file (at `path`, `lane.<k>` in the ring's folder)
/// read-only and checks it; `Ok(None)` if there is none. The header is
/// copied out with atomic loads and checked in the copy, so a producer
/// rewriting it meanwhile changes nothing checked. `consumer` is the uid
/// of the ring's consumer, the one besides the producer who may read it
/// (a tool's own uid is not: found by review, `sudo helixctl doctor` took
/// every bound lane for a stranger's, readable by the consumer, and
/// advised removing it).
pub(crate) fn open_lane(path: &Path, k: usize, g: &FanInGeometry, consumer: u32) -> Result<Option<LaneFile>, BadLane> {
    let Some((file, meta)) = open_entry(path)? else { return Ok(None) };
    let (uid, size, judged) = (meta.uid(), meta.len(), Judged::of(&meta));
    let bad = |epoch, why, reason: String| BadLane { judged, uid, epoch, why, reason };
    let want = lane_file_size(g.lane_capacity);
    if !meta.file_type().is_file() {
        return Err(bad(0, "not-a-file", format!("it is a {}, not a regular file", shm::file_kind(&meta))));
    }
    if size != want {
        return Err(bad(0, "bad-size", format!("it is {size} bytes, not a regular file of {want}")));
    }
    let bad = |epoch, reason: String| bad(epoch, "bad-header", reason);
    // A mapping that fails is this process's own trouble (out of memory,
    // or of the fault guard's slots), not the producer's: see
    // [`BadLane::is_ours`]. (Found by an audit: the file was refused as
    // the producer's fault and removed, its records lost, and the
    // producer, its epoch not spent, was never told.)
    // Mapped at the size checked, not the size the file has by now
    // (docs/abi.md §11.9): a producer flipping its file to 2^62 bytes
    // would make the mapping fail, and be taken for this process's
    // trouble, not refused as its own.
    let map = Mapping::with_len(&file, false, want as usize).map_err(|e| BadLane {
        judged,
        uid,
        epoch: 0,
        why: UNMAPPABLE,
        reason: format!("cannot map it: {e}"),
    })?;
    // The producer may have resized its file since the `fstat` (a shrink
    // after this is a fault the guard turns into zeros).
    match file.metadata().map(|m| m.len()) {
        Ok(now) if now == want => {}
        Ok(now) => return Err(bad(0, format!("it changed size to {now} bytes while being opened"))),
        Err(e) => return Err(bad(0, format!("it cannot be looked at again: {e}"))),
    }
    let (epoch, claimed) = check_header(&map, k, g).map_err(|(epoch, reason)| bad(epoch, reason))?;
    if map.probe() {
        return Err(bad(epoch, "it shrank while being checked".into()));
    }
    // Only its producer and the consumer may read a lane's records.
    if let Err(reason) = folder::readable_by_others(&file, meta.mode(), uid, consumer) {
        return Err(BadLane { judged, uid, epoch, why: "readable-by-others", reason });
    }
    // The pid from the kernel: the holder of the file's pid lock. This
    // process's own locks never show; then the header's pid, if it is ours.
    let pid = match shm::pid_lock_holder(&file) {
        Ok(Some(pid)) => pid,
        _ if claimed == std::process::id() && uid == crate::process::my_uid() => claimed,
        _ => 0,
    };
    Ok(Some(LaneFile { file, map, capacity: g.lane_capacity, judged, uid, pid, epoch }))
}

/// Opens the entry under a lane's name read-only, with its metadata;
/// `Ok(None)` if there is none (or it went meanwhile). The entry is first
/// opened with `O_PATH` (whatever it is: a link, a socket, a FIFO), so it
/// is judged by what was opened: found by review, a failed open was judged
/// by whatever the name held a moment later (a producer's lane file
/// swapped in for a socket was moved aside as "unopenable"). Anything but
/// a regular file is returned as that `O_PATH` handle, never read: the
/// caller refuses it by its type. A regular file is opened for reading
/// through it, so it is the same file.
fn open_entry(path: &Path) -> Result<Option<(File, std::fs::Metadata)>, BadLane> {
    use std::os::unix::fs::OpenOptionsExt;
    let entry = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        // Not even a handle, which `O_PATH` refuses only for want of
        // descriptors or memory: nothing was judged; the next scan looks
        // again.
        Err(_) => return Ok(None),
    };
    // `fstat` of an open handle does not fail; were it to, the entry is
    // looked at again at the next scan.
    let Ok(meta) = entry.metadata() else { return Ok(None) };
    let judged = Judged::of(&meta);
    if !meta.file_type().is_file() {
        return Ok(Some((entry, meta)));
    }
    use std::os::fd::AsRawFd;
    let again = Path::new("/proc/self/fd").join(entry.as_raw_fd().to_string());
    // Not O_NOFOLLOW: the /proc link is what leads to the very file.
    let reopened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(&again);
    let denied = |e: &std::io::Error| matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM));
    let file = match reopened {
        Ok(f) => f,
        Err(e) if denied(&e) => {
            let reason = format!("cannot open it ({}): {e}", shm::file_kind(&meta));
            return Err(BadLane { judged, uid: meta.uid(), epoch: 0, why: "unopenable", reason });
        }
        // A write lease its owner holds (`F_SETLEASE`) makes the open fail
        // (it is `O_NONBLOCK`) until the owner lets go, which it need never
        // do. (Found by review: taken for no entry at all, the squat was
        // never judged, reported or shown.)
        Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => {
            let reason = format!("cannot open it: its owner holds a lease on it that keeps others out ({e})");
            return Err(BadLane { judged, uid: meta.uid(), epoch: 0, why: "unopenable", reason });
        }
        // No /proc, or no descriptor left: by its name, if the name still
        // holds the entry judged; else the next scan looks again.
        Err(_) => match shm::open_file(path, false) {
            Ok(f) if f.metadata().is_ok_and(|m| Judged::of(&m) == judged) => f,
            _ => return Ok(None),
        },
    };
    Ok(Some((file, meta)))
}

/// Checks the header of lane `k`'s file, mapped whole (`map`), against the
/// ring's geometry: its epoch and the pid it claims, or the epoch read and
/// what is wrong. The header is copied out with atomic loads and checked
/// in the copy.
fn check_header(map: &Mapping, k: usize, g: &FanInGeometry) -> Result<(u64, u32), (u64, String)> {
    assert!(map.len() >= LANE_HEADER_SIZE, "a lane header check of a mapping smaller than a header");
    // SAFETY: 16 words are in bounds (above; LANE_HEADER_SIZE is 512), the
    // mapping is page aligned; loaded as atomics only.
    let words = unsafe { std::slice::from_raw_parts(map.ptr() as *const AtomicU64, 16) };
    // SYNC POINT: lane file initialised (the version word is in word 1).
    let w1 = words[1].load(Ordering::Acquire);
    // Fields are read as halves of native 64-bit words: little-endian, as
    // every supported target is (docs/abi.md §1.2).
    let w: [u64; 16] = std::array::from_fn(|i| words[i].load(Ordering::Relaxed));
    let lo = |x: u64| x as u32;
    let hi = |x: u64| (x >> 32) as u32;
    let epoch = w[5];
    let checks: [(&str, u64, u64); 9] = [
        ("magic", w[0], LANE_MAGIC),
        ("version", lo(w1) as u64, ABI_VERSION as u64),
        ("header_size", hi(w1) as u64, LANE_HEADER_SIZE as u64),
        ("lane", lo(w[2]) as u64, k as u64),
        ("max_payload", hi(w[2]) as u64, g.max_payload as u64),
        ("capacity", w[3], g.lane_capacity),
        ("ring_created_ns", w[4], g.created_ns),
        ("file_size", w[6], lane_file_size(g.lane_capacity)),
        ("epoch (nonzero)", (epoch != 0) as u64, 1),
    ];
    for (field, found, expected) in checks {
        if found != expected {
            return Err((epoch, format!("header field `{field}` is {found}, expected {expected}")));
        }
    }
    Ok((epoch, lo(w[7])))
}
