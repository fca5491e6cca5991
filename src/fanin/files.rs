//! A fan-in ring's folder, its consumer's file and its doorbell
//! (`docs/abi.md` §11.1–11.2): making them, opening and validating them.
//! The lane files are [`lane_file`](super::lane_file)'s.

use std::fs::File;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::layout::ABI_VERSION;
use crate::shm::{self, Mapping, Namespace, SHM_DIR};
use crate::sync::Ordering;

use super::folder;
use super::layout::*;
use super::{FanInError, FanInOptions};

mod lease;
use lease::take_lease;
pub(crate) use lease::{consumer_alive, Lease};

/// Suffix of a fan-in ring's folder name in `/dev/shm`.
pub const FANIN_SUFFIX: &str = "@fanin";
/// The consumer's file in the folder.
pub const RING_FILE: &str = "ring";
/// The doorbell file in the folder.
pub const BELL_FILE: &str = "bell";
/// The consumer's lock file in the folder (mode 0600): its lease, which
/// only the consumer's user (and root) may open, so no producer can hold a
/// lock on it.
pub const LOCK_FILE: &str = "lock";

/// `/dev/shm/<ns>.<ring>@fanin`.
pub fn dir_path(ns: &Namespace, name: &str) -> PathBuf {
    Path::new(SHM_DIR).join(format!("{}.{name}{FANIN_SUFFIX}", ns.as_str()))
}

/// The file name of lane `k` in the folder.
pub fn lane_name(k: usize) -> String {
    format!("lane.{k}")
}

/// The identity of a fan-in ring, read from the consumer's header.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct FanInGeometry {
    /// Number of lanes.
    pub lanes: u32,
    /// Record bytes per lane (a power of two).
    pub lane_capacity: u64,
    /// Largest record payload.
    pub max_payload: u32,
    /// CLOCK_REALTIME ns at creation.
    pub created_ns: u64,
    /// Uids allowed to hold a lane (empty: whoever may open the files).
    pub allow_uids: Vec<u32>,
}

/// The consumer's file and the doorbell, mapped.
pub(crate) struct RingFiles {
    /// The consumer's file (the consumer keeps a lock on it while it
    /// lives, for whoever may not open `lock` to see).
    pub(crate) ring_file: File,
    /// The consumer's lease ([`take_lease`]); `None` for others.
    pub(crate) lease: Option<Lease>,
    pub(crate) ring: Mapping,
    pub(crate) bell: Mapping,
    pub(crate) geometry: FanInGeometry,
    pub(crate) dir: PathBuf,
    /// `lane.<k>` in `dir`, for each lane: made once, so that the scan
    /// (every second at least) allocates nothing while nothing changes.
    pub(crate) lane_paths: Vec<PathBuf>,
    pub(crate) ns: Namespace,
    /// Why the consumer gave the ring a new doorbell when it attached.
    pub(crate) bell_replaced: Option<FanInError>,
    /// The owner of the consumer's file (as opened): the consumer's uid.
    pub(crate) consumer_uid: u32,
}

impl RingFiles {
    /// The ring in `dir`: the consumer's file (opened, mapped, its geometry
    /// and its owner's uid), the doorbell (and why it was replaced, if it
    /// was), and the consumer's lease if this is the consumer.
    fn new(
        ns: &Namespace,
        dir: PathBuf,
        ring: (File, Mapping, FanInGeometry, u32),
        bell: (Mapping, Option<FanInError>),
        lease: Option<Lease>,
    ) -> RingFiles {
        let ((ring_file, ring, geometry, consumer_uid), (bell, bell_replaced)) = (ring, bell);
        let lane_paths = (0..geometry.lanes as usize).map(|k| dir.join(lane_name(k))).collect();
        RingFiles {
            ring_file,
            lease,
            ring,
            bell,
            geometry,
            dir,
            lane_paths,
            ns: ns.clone(),
            bell_replaced,
            consumer_uid,
        }
    }

    pub(crate) fn header(&self) -> &FanInHeader {
        // SAFETY: validated at open: the mapping holds a whole, published
        // header, page aligned; identity fields never change again and the
        // rest are atomics. It lives as long as `self`.
        unsafe { &*(self.ring.ptr() as *const FanInHeader) }
    }

    pub(crate) fn state(&self, k: usize) -> &LaneState {
        assert!(k < self.geometry.lanes as usize);
        // SAFETY: the file holds `lanes` states after the header (its size
        // was checked at open); `k` is in range; 256-byte strides keep them
        // 8-aligned.
        unsafe { &*(self.ring.ptr().add(FANIN_HEADER_SIZE + k * LANE_STATE_SIZE) as *const LaneState) }
    }

    pub(crate) fn bell(&self) -> &BellHeader {
        // SAFETY: the doorbell mapping is BELL_FILE_SIZE bytes (checked at
        // open), page aligned; every field a peer may change is an atomic.
        unsafe { &*(self.bell.ptr() as *const BellHeader) }
    }

    /// The consumer's: takes the lock on `ring` that tells the tools it
    /// lives, if a reader's read lock kept it off until now.
    pub(crate) fn keep_ring_locked(&mut self) {
        if let Some(lease) = self.lease.as_mut().filter(|l| !l.ring_locked) {
            lease.ring_locked = shm::try_lock(&self.ring_file).unwrap_or(false);
        }
    }

    /// Whether either mapping met a shrunk file.
    pub(crate) fn damaged(&self) -> Option<PathBuf> {
        [(&self.ring, RING_FILE), (&self.bell, BELL_FILE)]
            .into_iter()
            .find(|(m, _)| m.is_damaged())
            .map(|(_, f)| self.dir.join(f))
    }
}

/// Creates the folder with both files under a temporary name, then gives
/// it its name (`RENAME_NOREPLACE`): nobody sees a half-made ring.
pub(crate) fn create(ns: &Namespace, name: &str, opts: &FanInOptions) -> Result<RingFiles, FanInError> {
    shm::validate_ring_name(name)?;
    opts.validate()?;
    let dir = dir_path(ns, name);
    if dir.exists() {
        return Err(FanInError::Exists { path: dir });
    }
    let broadcast = [ns.data_path(name), ns.readers_path(name)];
    if let Some(path) = broadcast.into_iter().find(|p| shm::holds_name(p)) {
        return Err(FanInError::BroadcastNamed { ring: name.to_owned(), path });
    }
    let created_ns = crate::process::realtime_ns();
    let tmp =
        dir.with_file_name(format!("{}.{name}{FANIN_SUFFIX}.{}.{created_ns}.tmp", ns.as_str(), std::process::id()));
    let made = make_folder(&tmp, name, opts, created_ns);
    let renamed = made.and_then(|ring| {
        shm::rename_noreplace(&tmp, &dir).map_err(|e| FanInError::io(&dir, "name", e))?;
        Ok(ring)
    });
    let (ring_file, lock_file) = match renamed {
        Ok(f) => f,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(match e {
                FanInError::Io { error, .. } if error.kind() == std::io::ErrorKind::AlreadyExists => {
                    FanInError::Exists { path: dir }
                }
                e => e,
            });
        }
    };
    let path = dir.join(RING_FILE);
    let ring = Mapping::new(&ring_file, true).map_err(|e| FanInError::io(&path, "map", e))?;
    let geometry = validate_ring(&ring, &path, name)?;
    let bell = open_bell(ns, name, &dir, geometry.created_ns, false)?;
    let consumer_uid = ring_file.metadata().map_err(|e| FanInError::io(&path, "stat", e))?.uid();
    let lease = Some(Lease { _lock: lock_file, ring_locked: true });
    Ok(RingFiles::new(ns, dir, (ring_file, ring, geometry, consumer_uid), (bell, None), lease))
}

/// The folder's mode: sticky (a producer may remove only its own files;
/// the consumer's owner, owning the folder, any), and search/write for whom
/// `mode` lets produce. Not set-group-id: the folder's ACL decides who
/// reads a lane file, not its group, and a service hardened with systemd's
/// `RestrictSUIDSGID=` (helixd's unit) may not make a set-group-id folder.
pub(crate) fn folder_mode(mode: u32) -> u32 {
    let group = if mode & 0o020 != 0 { 0o070 } else { 0 };
    let other = if mode & 0o002 != 0 { 0o007 } else { 0 };
    0o1700 | group | other
}

/// Gives the ring in `dir` (its folder, its own file and its doorbell) the
/// access `mode` and `group` give a new ring (`group` `None`: this
/// process's), where it differs; returns the paths changed. Each is
/// opened without following a link and changed through that descriptor:
/// first narrowed to what both the old and the new access allow, then
/// given the group, then the mode, so that nobody the new access leaves
/// out may get in meanwhile (a member of the new group while the old mode
/// still let the group write the folder, say). Lane files keep theirs:
/// each is its producer's, readable by it and the consumer alone.
pub(crate) fn set_access(dir: &Path, mode: u32, group: Option<u32>) -> Result<Vec<PathBuf>, FanInError> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let gid = group.unwrap_or_else(crate::process::my_gid);
    let wanted = [
        (dir.to_owned(), folder_mode(mode)),
        (dir.join(RING_FILE), 0o600 | (mode & 0o044)),
        (dir.join(BELL_FILE), mode & 0o666),
    ];
    let mut changed = Vec::new();
    for (path, want) in wanted {
        let p = path.as_path();
        let io = |op| move |e| FanInError::io(p, op, e);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path)
            .map_err(io("open"))?;
        let m = file.metadata().map_err(io("stat"))?;
        let had = m.mode() & 0o7777;
        if m.gid() == gid && had == want {
            continue;
        }
        let set = |bits| file.set_permissions(std::fs::Permissions::from_mode(bits)).map_err(io("chmod"));
        set(had & want)?;
        std::os::unix::fs::fchown(&file, None, Some(gid)).map_err(io("chown"))?;
        set(want)?;
        changed.push(path);
    }
    Ok(changed)
}

/// Makes the folder's files; returns the consumer's file and its lock
/// file, each still holding the lock it was made with (the consumer's
/// lease: taken before anyone can see the file, so no other process, nor
/// a child forked meanwhile, can hold it first).
fn make_folder(tmp: &Path, name: &str, opts: &FanInOptions, created_ns: u64) -> Result<(File, File), FanInError> {
    let io = |op| move |e| FanInError::io(tmp, op, e);
    std::fs::DirBuilder::new().mode(0o700).create(tmp).map_err(io("create"))?;
    if let Some(gid) = opts.group {
        std::os::unix::fs::chown(tmp, None, Some(gid)).map_err(io("chown"))?;
    }
    let unnamed = |size, mode| shm::create_unnamed_in(tmp, size, mode, opts.group).map_err(|(op, e)| io(op)(e));
    // Producers read the consumer's file and write only the doorbell.
    let ring_mode = 0o600 | (opts.mode & 0o044);
    let ring = unnamed(fanin_file_size(opts.lanes), ring_mode)?;
    let bell = unnamed(BELL_FILE_SIZE as u64, opts.mode & 0o666)?;
    {
        let rmap = Mapping::new(&ring, true).map_err(io("map"))?;
        let bmap = Mapping::new(&bell, true).map_err(io("map"))?;
        // SAFETY: both files are unnamed (nobody else can open them),
        // zero-filled by posix_fallocate, and mapped writable and whole.
        unsafe {
            init_ring(&rmap, name, opts, created_ns);
            init_bell(&bmap, created_ns);
        }
    }
    shm::link_unnamed(&bell, &tmp.join(BELL_FILE)).map_err(io("link"))?;
    // Nobody locks the doorbell: let go of the lock it was made with.
    shm::unlock(&bell).map_err(io("unlock"))?;
    shm::link_unnamed(&ring, &tmp.join(RING_FILE)).map_err(io("link"))?;
    let lock = shm::create_unnamed_in(tmp, 1, 0o600, None).map_err(|(op, e)| io(op)(e))?;
    shm::link_unnamed(&lock, &tmp.join(LOCK_FILE)).map_err(io("link"))?;
    // After the ring's own files, which keep their modes: lane files made
    // from now on may be read by their producer and the consumer only.
    folder::set_lane_acl(tmp, crate::process::my_uid()).map_err(io("set the lane files' ACL on"))?;
    // Last: until the folder holds its files, only its owner may make
    // entries in it. (Found by review: opened to the group first, a
    // producer watching /dev/shm could make `bell` in it before the
    // doorbell was linked, and the creation failed as "exists" for a ring
    // that did not: helixd could not start.)
    std::fs::set_permissions(tmp, std::fs::Permissions::from_mode(folder_mode(opts.mode))).map_err(io("chmod"))?;
    Ok((ring, lock))
}

/// # Safety
///
/// `map` is a fresh, zero-filled, writable mapping of a consumer file of
/// `fanin_file_size(opts.lanes)` bytes nobody else can see yet.
unsafe fn init_ring(map: &Mapping, name: &str, opts: &FanInOptions, created_ns: u64) {
    // SAFETY: per the contract.
    let h = unsafe { &mut *(map.ptr() as *mut FanInHeader) };
    h.magic = FANIN_MAGIC;
    h.header_size = FANIN_HEADER_SIZE as u32;
    h.lanes = opts.lanes;
    h.lane_state_size = LANE_STATE_SIZE as u32;
    h.lane_capacity = opts.lane_capacity;
    h.max_payload = opts.max_payload;
    h.lane_header_size = LANE_HEADER_SIZE as u32;
    h.created_ns = created_ns;
    h.file_size = fanin_file_size(opts.lanes);
    h.allow_count = opts.allow_uids.len() as u32;
    h.allow_uids[..opts.allow_uids.len()].copy_from_slice(&opts.allow_uids);
    h.name_len = name.len() as u32;
    h.name[..name.len()].copy_from_slice(name.as_bytes());
    // SYNC POINT: fan-in region initialised. Written last; pairs with the
    // Acquire load of `version` in `validate_ring`.
    h.version.store(ABI_VERSION, Ordering::Release);
}

/// # Safety
///
/// As for [`init_ring`], for a doorbell file of `BELL_FILE_SIZE` bytes.
unsafe fn init_bell(map: &Mapping, created_ns: u64) {
    // SAFETY: per the contract.
    let b = unsafe { &mut *(map.ptr() as *mut BellHeader) };
    b.magic = BELL_MAGIC;
    b.created_ns = created_ns;
    // SYNC POINT: fan-in region initialised.
    b.version.store(ABI_VERSION, Ordering::Release);
}

/// Opens a fan-in ring: as its consumer (the consumer's file read-write
/// and locked, the doorbell read-only) or as a producer or a tool (the
/// consumer's file read-only; a producer maps the doorbell read-write).
pub(crate) fn open_ring(ns: &Namespace, name: &str, consumer: bool) -> Result<RingFiles, FanInError> {
    open_ring_as(ns, name, consumer, !consumer)
}

pub(crate) fn open_ring_as(
    ns: &Namespace,
    name: &str,
    consumer: bool,
    bell_writable: bool,
) -> Result<RingFiles, FanInError> {
    shm::validate_ring_name(name)?;
    let dir = dir_path(ns, name);
    let folder_owner = match folder::check(&dir, consumer.then(crate::process::my_uid)) {
        Err(FanInError::Io { error, .. }) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(FanInError::NotFound { name: name.to_owned(), namespace: ns.as_str().to_owned(), path: dir })
        }
        r => r?,
    };
    let (ring_file, ring) = open_in(ns, name, &dir.join(RING_FILE), consumer, None)?;
    let consumer_uid = folder::check_ring_owner(&dir, folder_owner, &ring_file)?;
    let geometry = validate_ring(&ring, &dir.join(RING_FILE), name)?;
    let lease = match consumer {
        true => {
            let held = || {
                // SAFETY: validated above: a whole, published header.
                let h = unsafe { &*(ring.ptr() as *const FanInHeader) };
                FanInError::ConsumerHeld { ring: name.to_owned(), pid: h.consumer_pid.load(Ordering::Relaxed) }
            };
            Some(take_lease(&dir, &ring_file)?.ok_or_else(held)?)
        }
        false => None,
    };
    let (bell, bell_replaced) = match open_bell(ns, name, &dir, geometry.created_ns, bell_writable) {
        Err(e) if consumer && replaceable(&e) => {
            // The doorbell is the one file producers may write: one may
            // have shrunk, grown, scribbled on or (had it the folder's
            // permission) removed it. It must not keep the consumer out.
            replace_bell(&dir, &ring_file, geometry.created_ns)?;
            (open_bell(ns, name, &dir, geometry.created_ns, bell_writable)?, Some(e))
        }
        r => (r?, None),
    };
    Ok(RingFiles::new(ns, dir, (ring_file, ring, geometry, consumer_uid), (bell, bell_replaced), lease))
}

/// Whether a doorbell that failed to open this way is one its consumer
/// replaces (not a failing system call, which it reports).
pub(crate) fn replaceable(e: &FanInError) -> bool {
    matches!(e, FanInError::BadField { .. } | FanInError::Damaged { .. } | FanInError::NotFound { .. })
}

/// Gives the ring in `dir` a new doorbell, initialised for the ring made
/// at `created_ns`, in one rename over the old one. Only the consumer
/// calls this, holding the ring's lock (so one at a time); `ring_file` is
/// the consumer's file. The new file's mode and group are the ones the
/// ring was made with, read back from the folder (its group, and whether
/// group or others may write: produce) and the consumer's file (whether
/// they may read). Producers still mapping the old doorbell ring it in
/// vain until they attach again; the consumer's timed waits find their
/// records meanwhile.
pub(crate) fn replace_bell(dir: &Path, ring_file: &File, created_ns: u64) -> Result<(), FanInError> {
    fn io<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(std::io::Error) -> FanInError + 'a {
        move |e| FanInError::io(path, op, e)
    }
    let folder = std::fs::metadata(dir).map_err(io(dir, "look at"))?;
    let ring_mode = ring_file.metadata().map_err(io(dir, "stat the consumer's file in"))?.mode();
    let write = |bit: u32| if folder.mode() & bit != 0 { bit } else { 0 };
    let mode = 0o600 | (ring_mode & 0o044) | write(0o020) | write(0o002);
    // Made in /dev/shm, not in the folder, whose default ACL is the lane
    // files' (readable by their producer and the consumer only).
    let bell = shm::create_unnamed_in(Path::new(SHM_DIR), BELL_FILE_SIZE as u64, mode, Some(folder.gid()))
        .map_err(|(op, e)| FanInError::io(Path::new(SHM_DIR), op, e))?;
    {
        let map = Mapping::new(&bell, true).map_err(io(dir, "map a new doorbell for"))?;
        // SAFETY: the file is unnamed (nobody else can open it),
        // zero-filled by posix_fallocate, and mapped writable and whole.
        unsafe { init_bell(&map, created_ns) };
    }
    let tmp = link_fresh(&bell, dir)?;
    shm::unlock(&bell).map_err(io(&tmp, "unlock"))?;
    std::fs::rename(&tmp, dir.join(BELL_FILE)).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        FanInError::io(&dir.join(BELL_FILE), "replace", e)
    })
}

/// Links the unnamed file `file` into `dir` under a name nobody took
/// ([`shm::link_fresh`]), to be renamed over the doorbell. Any member of
/// the folder's group may make files there, and the sticky folder keeps
/// the consumer from removing theirs: a name it could guess (its pid's)
/// would let a producer keep the doorbell from ever being replaced, and so
/// producers from attaching and helixd from starting.
fn link_fresh(file: &File, dir: &Path) -> Result<PathBuf, FanInError> {
    let stem = dir.join(BELL_FILE);
    shm::link_fresh(file, &stem).map_err(|e| FanInError::io(&stem, "link a new doorbell beside", e))
}

/// Opens and maps one of the folder's files: all of it, or (`len`) its
/// first `len` bytes.
fn open_in(
    ns: &Namespace,
    name: &str,
    path: &Path,
    writable: bool,
    len: Option<usize>,
) -> Result<(File, Mapping), FanInError> {
    let f = shm::open_file(path, writable).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            FanInError::NotFound { name: name.to_owned(), namespace: ns.as_str().to_owned(), path: path.to_owned() }
        }
        _ => FanInError::io(path, "open", e),
    })?;
    let m = match len {
        Some(len) => Mapping::with_len(&f, writable, len),
        None => Mapping::new(&f, writable),
    };
    Ok((f, m.map_err(|e| FanInError::io(path, "map", e))?))
}

/// Opens and checks the doorbell of the ring in `dir` made at `created_ns`.
pub(crate) fn open_bell(
    ns: &Namespace,
    name: &str,
    dir: &Path,
    created_ns: u64,
    writable: bool,
) -> Result<Mapping, FanInError> {
    let path = dir.join(BELL_FILE);
    // Mapped at the size the layout gives, then its size checked: a
    // producer may make the file any size. (Found by review: mapped whole,
    // one of 2^62 bytes failed to map, an error taken for the system's, so
    // the consumer never replaced it, and no producer attached again and
    // helixd could not start.)
    let (file, bell) = open_in(ns, name, &path, writable, Some(BELL_FILE_SIZE))?;
    let len = file.metadata().map_err(|e| FanInError::io(&path, "stat", e))?.len();
    if len != BELL_FILE_SIZE as u64 {
        return Err(FanInError::field(&path, "file size", len, BELL_FILE_SIZE));
    }
    // SAFETY: a page, page aligned; every field read here is read once
    // (a shrink meanwhile reads as zeros: the guard).
    let b = unsafe { &*(bell.ptr() as *const BellHeader) };
    // SYNC POINT: fan-in region initialised.
    let version = b.version.load(Ordering::Acquire);
    if b.magic != BELL_MAGIC || version != ABI_VERSION || b.created_ns != created_ns {
        return Err(FanInError::field(&path, "magic/version/created_ns", version as u64, "this ring's doorbell"));
    }
    if bell.probe() {
        return Err(FanInError::Damaged { path });
    }
    Ok(bell)
}

/// Checks the consumer's header (written by the ring's owner, so trusted
/// once it validates) and reads the geometry.
fn validate_ring(map: &Mapping, path: &Path, name: &str) -> Result<FanInGeometry, FanInError> {
    if map.len() < FANIN_HEADER_SIZE {
        return Err(FanInError::field(path, "file size", map.len() as u64, format!("at least {FANIN_HEADER_SIZE}")));
    }
    // SAFETY: at least a header long and page aligned.
    let shared = unsafe { &*(map.ptr() as *const FanInHeader) };
    let f = |field, found: u64, expected: u64| {
        if found == expected {
            Ok(())
        } else {
            Err(FanInError::field(path, field, found, expected))
        }
    };
    f("magic", shared.magic, FANIN_MAGIC)?;
    // SYNC POINT: fan-in region initialised.
    f("version", shared.version.load(Ordering::Acquire) as u64, ABI_VERSION as u64)?;
    // Every check below, and the geometry kept, of one copy: checked in
    // shared memory and read again, a field the owner rewrote in between
    // (lanes, allow_count) would be used unchecked (found by review).
    // SAFETY: page aligned; FanInHeader is integers and atomic integers.
    let h = &*unsafe { crate::shm::snapshot(shared) };
    f("header_size", h.header_size as u64, FANIN_HEADER_SIZE as u64)?;
    f("lane_state_size", h.lane_state_size as u64, LANE_STATE_SIZE as u64)?;
    f("lane_header_size", h.lane_header_size as u64, LANE_HEADER_SIZE as u64)?;
    f("file_size", h.file_size, fanin_file_size(h.lanes))?;
    f("file size", map.len() as u64, h.file_size)?;
    let cap = h.lane_capacity;
    if !cap.is_power_of_two() || cap < record_size(h.max_payload as usize) as u64 || cap > super::MAX_LANE_CAPACITY {
        return Err(FanInError::field(path, "lane_capacity", cap, "a power of two that holds a largest record"));
    }
    if h.allow_count as usize > MAX_ALLOW {
        return Err(FanInError::field(path, "allow_count", h.allow_count as u64, format!("at most {MAX_ALLOW}")));
    }
    let n = (h.name_len as usize).min(64);
    if &h.name[..n] != name.as_bytes() {
        return Err(FanInError::field(path, "name", h.name_len as u64, format!("{name:?}")));
    }
    let g = FanInGeometry {
        lanes: h.lanes,
        lane_capacity: cap,
        max_payload: h.max_payload,
        created_ns: h.created_ns,
        allow_uids: h.allow_uids[..h.allow_count as usize].to_vec(),
    };
    if map.probe() {
        return Err(FanInError::Damaged { path: path.to_owned() });
    }
    Ok(g)
}

/// Removes a fan-in ring's folder and every file in it. Attached processes
/// keep their mappings.
pub(crate) fn unlink(ns: &Namespace, name: &str) -> Result<(), FanInError> {
    shm::validate_ring_name(name)?;
    let dir = dir_path(ns, name);
    // Anything else under the folder's name (a file, a link: anyone may
    // make one in /dev/shm) goes as itself; a link is never followed.
    let folder = std::fs::symlink_metadata(&dir).map(|m| m.is_dir());
    let removed =
        if folder.as_ref().is_ok_and(|&d| !d) { std::fs::remove_file(&dir) } else { std::fs::remove_dir_all(&dir) };
    removed.map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            FanInError::NotFound { name: name.to_owned(), namespace: ns.as_str().to_owned(), path: dir.clone() }
        }
        _ => FanInError::io(&dir, "remove", e),
    })
}
