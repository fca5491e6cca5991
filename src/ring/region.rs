//! A ring's two regions, created or attached and validated, with typed
//! access to the shared structures. All pointer arithmetic over the shared
//! memory is in this file; the header checks at attach are in
//! `validate.rs`, the loom models' heap-allocated regions in `heap.rs`.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::guard::DamageFlag;
use crate::layout::*;
use crate::shm::{self, Mapping, Namespace};
use crate::sync::{AtomicU64, Ordering};

use super::damage::Damaged;
use super::{AttachError, CreateError, Policy, RingOptions};
use crate::shm::RingFile;

#[cfg(all(loom, test))]
pub(crate) mod heap;
mod validate;

pub(crate) use validate::validate_data;
use validate::validate_readers;

/// The identity of a ring, read from its header at attach.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Geometry {
    /// Number of slots (a power of two).
    pub capacity: u64,
    /// Bytes per slot, header included.
    pub slot_size: u32,
    /// Largest payload a frame may carry.
    pub max_payload: u32,
    /// Overflow policy.
    pub policy: Policy,
    /// Entries in the reader table.
    pub max_readers: u32,
    /// How long a gating reader may make no progress before it is demoted.
    pub stall_timeout_ns: u64,
    /// CLOCK_REALTIME ns at creation.
    pub created_ns: u64,
}

enum Backing {
    Shm {
        data: Mapping,
        readers: Mapping,
    },
    /// Owns the boxed structures the pointers point into; never read.
    #[cfg(all(loom, test))]
    Heap(#[allow(dead_code)] heap::Heap),
}

/// Both regions of one ring, mapped, validated, and addressed.
pub(crate) struct Region {
    hdr: *const RingHeader,
    rd: *const ReadersHeader,
    entries: *const ReaderEntry,
    slots: *const u8,
    stride: usize,
    mask: u64,
    payload_words: usize,
    /// The guard's damaged flags of the data and the control mapping.
    damage: [DamageFlag; 2],
    pub(crate) geometry: Geometry,
    pub(crate) name: String,
    /// The data region's file, for errors that name a header field.
    pub(crate) path: PathBuf,
    pub(crate) writable: bool,
    /// The uid that owns the data file mapped here (read from the open
    /// file, so it is the owner of what is mapped, whatever the name
    /// means since): who can write frames, and so whose they are.
    pub(crate) owner: u32,
    /// The control file mapped here, as opened: what
    /// [`Region::control_refusal`] looks at again.
    control: Option<ControlFile>,
    backing: Backing,
}

/// A control file's name and identity (`st_dev`, `st_ino`) as opened.
struct ControlFile {
    path: PathBuf,
    id: (u64, u64),
}

// SAFETY: everything reachable through the raw pointers is shared memory
// accessed only through atomics (or immutable identity fields written before
// the version word was published); the mappings they point into are owned by
// `backing` and stay mapped as long as the `Region` lives (if a file shrinks,
// the fault guard replaces its mapping in place, at the same address).
unsafe impl Send for Region {}
// SAFETY: as for Send: shared access goes through atomics only.
unsafe impl Sync for Region {}

/// One slot: its header and its payload viewed as 64-bit words.
pub(crate) struct Slot<'a> {
    pub(crate) header: &'a SlotHeader,
    pub(crate) payload: &'a [AtomicU64],
}

impl Region {
    /// `Err` unless the data file mapped here is one of `owners`'
    /// (`RingView::check_owner_in`).
    pub(crate) fn check_owner_in(&self, owners: &super::Owners) -> Result<(), super::ForeignRing> {
        owners.check(&self.name, &self.path, self.owner)
    }

    #[inline]
    pub(crate) fn header(&self) -> &RingHeader {
        // SAFETY: `hdr` points to the start of the data mapping, which is at
        // least RING_HEADER_SIZE bytes (checked at attach) and page aligned.
        unsafe { &*self.hdr }
    }

    #[inline]
    pub(crate) fn readers(&self) -> &ReadersHeader {
        // SAFETY: `rd` points to the start of the control mapping, at least
        // READERS_HEADER_SIZE bytes (checked at attach) and page aligned.
        unsafe { &*self.rd }
    }

    /// Reader entry `i`; panics if `i >= max_readers`.
    #[inline]
    pub(crate) fn entry(&self, i: usize) -> &ReaderEntry {
        assert!(i < self.geometry.max_readers as usize);
        // SAFETY: the control region holds `max_readers` entries after its
        // header (file size checked at attach); `i` is in range.
        unsafe { &*self.entries.add(i) }
    }

    /// Iterates over every reader entry.
    pub(crate) fn entries(&self) -> impl Iterator<Item = (usize, &ReaderEntry)> {
        (0..self.geometry.max_readers as usize).map(move |i| (i, self.entry(i)))
    }

    /// The slot that holds sequence `seq`.
    #[inline]
    pub(crate) fn slot(&self, seq: u64) -> Slot<'_> {
        let index = (seq & self.mask) as usize;
        // SAFETY: `index < capacity`, and the data region holds `capacity`
        // slots of `stride` bytes from `slots` (file size checked at attach).
        // `stride` is a multiple of 64 and the mapping page aligned, so the
        // header and the payload words are 8-aligned. The payload occupies
        // `payload_words` whole words inside the slot.
        unsafe {
            let base = self.slots.add(index * self.stride);
            Slot {
                header: &*(base as *const SlotHeader),
                payload: std::slice::from_raw_parts(
                    base.add(std::mem::size_of::<SlotHeader>()) as *const AtomicU64,
                    self.payload_words,
                ),
            }
        }
    }

    /// The damage, if a fault on either mapping found its file shrunk (the
    /// mapping now reads as zeros). Two relaxed loads when there is none.
    #[inline]
    pub(crate) fn damaged(&self) -> Option<Damaged> {
        if self.damage[0].is_set() || self.damage[1].is_set() {
            Some(self.damage_report())
        } else {
            None
        }
    }

    #[cold]
    fn damage_report(&self) -> Damaged {
        let file = if self.damage[0].is_set() { RingFile::Data } else { RingFile::Readers };
        Damaged::new(&self.name, file)
    }

    /// What a process attaching now would refuse in the control region
    /// mapped here: a file a reader grew (any reader may write it, and
    /// tmpfs takes any sparse size), or a header it wrote over. `None` if
    /// it would take it, or if the name now holds another file (or none).
    /// The ring's owner repairs it ([`Ring::repair_readers`](super::Ring::repair_readers)).
    pub(crate) fn control_refusal(&self) -> Option<AttachError> {
        use std::os::unix::fs::MetadataExt;
        let (Backing::Shm { readers, .. }, Some(c)) = (&self.backing, &self.control) else { return None };
        let now = std::fs::symlink_metadata(&c.path).ok()?;
        if (now.dev(), now.ino()) != c.id {
            return None;
        }
        validate_readers(readers, now.len(), &c.path, &self.geometry).err()
    }

    /// Like [`Region::damaged`], after touching the first and last page of
    /// both mappings, so a shrink no access has met yet is found now.
    pub(crate) fn probe(&self) -> Option<Damaged> {
        match &self.backing {
            Backing::Shm { data, readers } => {
                data.probe();
                readers.probe();
            }
            #[cfg(all(loom, test))]
            Backing::Heap(_) => {}
        }
        self.damaged()
    }

    #[inline]
    pub(crate) fn capacity(&self) -> u64 {
        self.geometry.capacity
    }

    #[inline]
    pub(crate) fn max_payload(&self) -> usize {
        self.geometry.max_payload as usize
    }
}

fn io_err(path: &Path, op: &'static str, error: std::io::Error) -> CreateError {
    if error.raw_os_error() == Some(libc::ENOSPC) {
        CreateError::NoSpace { path: path.to_owned(), error }
    } else if error.kind() == std::io::ErrorKind::AlreadyExists {
        CreateError::Exists { path: path.to_owned() }
    } else {
        CreateError::Io { path: path.to_owned(), op, error }
    }
}

/// Refuses `name` while a fan-in ring of this user's (or root's) has it:
/// one name is one ring.
pub(super) fn refuse_fan_in_named(ns: &Namespace, name: &str) -> Result<(), CreateError> {
    let fanin = crate::fanin::files::dir_path(ns, name);
    match shm::holds_name(&fanin) {
        true => Err(CreateError::FanInNamed { ring: name.to_owned(), path: fanin }),
        false => Ok(()),
    }
}

/// Creates a new ring: both files unnamed, sized and initialised (version
/// words last), then published by name, control file first and data file
/// last (see `lifecycle::publish` for what an attacher sees at each step).
pub(crate) fn create(ns: &Namespace, name: &str, opts: &RingOptions) -> Result<Region, CreateError> {
    shm::validate_ring_name(name)?;
    let slot_size = opts.validate()?;
    refuse_fan_in_named(ns, name)?;
    let data_path = ns.data_path(name);
    let readers_path = ns.readers_path(name);
    let data_size = ring_file_size(opts.capacity, slot_size);
    let readers_size = readers_file_size(opts.max_readers);
    let created_ns = crate::process::realtime_ns();

    // Unnamed until published: a failure or a crash before then leaves
    // nothing behind, and nobody can see the files half made.
    let rfile =
        shm::create_unnamed(readers_size, opts.mode, opts.group).map_err(|(op, e)| io_err(&readers_path, op, e))?;
    // Group readers may write the control region; nobody but the owner may
    // write the data region.
    let data_mode = opts.mode & !0o022;
    let dfile = shm::create_unnamed(data_size, data_mode, opts.group).map_err(|(op, e)| io_err(&data_path, op, e))?;
    let rmap = Mapping::new(&rfile, true).map_err(|e| io_err(&readers_path, "map", e))?;
    let dmap = Mapping::new(&dfile, true).map_err(|e| io_err(&data_path, "map", e))?;

    // SAFETY: both mappings are fresh, zero-filled, exclusively ours (the
    // files have no name yet, so no other process can open them), writable,
    // page aligned and large enough for the headers (the control one for
    // `max_readers` entries).
    unsafe {
        init_control(&rmap, opts.max_readers, created_ns);

        let h = &mut *(dmap.ptr() as *mut RingHeader);
        h.magic = RING_MAGIC;
        h.header_size = RING_HEADER_SIZE as u32;
        h.capacity = opts.capacity;
        h.slot_size = slot_size;
        h.policy = opts.policy.to_raw();
        h.max_readers = opts.max_readers;
        h.stall_timeout_ns = opts.stall_timeout.as_nanos().min(u64::MAX.into()) as u64;
        h.data_offset = RING_HEADER_SIZE as u64;
        h.file_size = data_size;
        h.created_ns = created_ns;
        h.name_len = name.len() as u32;
        h.name[..name.len()].copy_from_slice(name.as_bytes());
        // SYNC POINT: region initialised (data). Written last, so an opener
        // sees either version 0 or a complete header.
        h.version.store(ABI_VERSION, Ordering::Release);
    }
    let owner = file_owner(&dfile, &data_path).map_err(CreateError::Attach)?;
    let region = from_maps(name, (dmap, &data_path), (rmap, &rfile, &readers_path), owner)?;
    super::lifecycle::publish(ns, name, &rfile, &dfile)?;
    Ok(region)
}

/// Fills in a new control region's header for `max_readers` entries, the
/// version word last.
///
/// # Safety
///
/// `map` must be a fresh, zero-filled, writable mapping of a control file of
/// `readers_file_size(max_readers)` bytes that no other process reads before
/// the version word is set (a file just created with `O_EXCL`).
pub(super) unsafe fn init_control(map: &Mapping, max_readers: u32, created_ns: u64) {
    debug_assert!(map.writable() && map.len() as u64 == readers_file_size(max_readers));
    // SAFETY: per the contract, the mapping is ours alone, writable, page
    // aligned and at least a header long.
    let rd = unsafe { &mut *(map.ptr() as *mut ReadersHeader) };
    rd.magic = READERS_MAGIC;
    rd.header_size = READERS_HEADER_SIZE as u32;
    rd.max_readers = max_readers;
    rd.entry_size = READER_ENTRY_SIZE as u32;
    rd.created_ns = created_ns;
    rd.file_size = readers_file_size(max_readers);
    // SYNC POINT: region initialised (control). Pairs with the Acquire
    // load of `version` in `attach`.
    rd.version.store(ABI_VERSION, Ordering::Release);
}

/// Validates a mapped data region; returns its header and geometry.
pub(super) fn data_header<'m>(
    map: &'m Mapping,
    path: &Path,
    name: &str,
) -> Result<(&'m RingHeader, Geometry), AttachError> {
    let g = validate_data(map, path, Some(name))?;
    // SAFETY: validated: the mapping is at least a header long, page aligned
    // and published (version set); the identity fields never change again
    // and every other field is an atomic. It lives as long as `map`.
    Ok((unsafe { &*(map.ptr() as *const RingHeader) }, g))
}

/// A control region for geometry `g`, filled in, not yet named (and still
/// locked): for a repair to link under a name of its own.
pub(super) fn new_control(g: &Geometry, mode: u32, gid: Option<u32>) -> Result<File, (&'static str, std::io::Error)> {
    let file = shm::create_unnamed(readers_file_size(g.max_readers), mode, gid)?;
    let map = Mapping::new(&file, true).map_err(|e| ("map", e))?;
    // SAFETY: the file is unnamed (no other process can open it), sized by
    // posix_fallocate (zero-filled), and the mapping is writable and exactly
    // its size.
    unsafe { init_control(&map, g.max_readers, g.created_ns) };
    Ok(file)
}

/// Attaches to an existing ring; `writable` maps the data region read-write
/// (writer, daemon), otherwise read-only (readers, tools).
pub(crate) fn attach(ns: &Namespace, name: &str, writable: bool) -> Result<Region, AttachError> {
    shm::validate_ring_name(name)?;
    let data_path = ns.data_path(name);
    let readers_path = ns.readers_path(name);
    let open = |path: &Path, w: bool| -> Result<File, AttachError> {
        shm::open_file(path, w).map_err(|e| AttachError::open(name, ns, path, e))
    };
    let dfile = match shm::open_file(&data_path, writable) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(
                super::lifecycle::missing_data(ns, name).unwrap_or_else(|| AttachError::open(name, ns, &data_path, e))
            )
        }
        Err(e) => return Err(AttachError::open(name, ns, &data_path, e)),
    };
    let dmap = Mapping::new(&dfile, writable).map_err(|e| AttachError::io(&data_path, e))?;
    // The data region first: a foreign or corrupt file is named as such,
    // rather than as a ring whose control region is missing.
    let data = validate_data(&dmap, &data_path, Some(name));
    if let Err(e) = &data {
        if !matches!(e, AttachError::Initializing { .. }) {
            return Err(data.unwrap_err());
        }
    }
    let rfile = open(&readers_path, true).map_err(|e| match e {
        AttachError::NotFound { .. } => AttachError::Incomplete {
            ring: name.to_owned(),
            present: data_path.clone(),
            missing: readers_path.clone(),
            missing_file: shm::RingFile::Readers,
        },
        e => e,
    })?;
    // Mapped at the size the data region gives it, not the size it has:
    // any reader may grow it, past what can be mapped too (the check of
    // its size, below, names that).
    let rmap = match &data {
        Ok(g) => Mapping::with_len(&rfile, true, readers_file_size(g.max_readers) as usize),
        Err(_) => Mapping::new(&rfile, true),
    };
    let rmap = rmap.map_err(|e| AttachError::io(&readers_path, e))?;
    let owner = file_owner(&dfile, &data_path)?;
    from_maps(name, (dmap, &data_path), (rmap, &rfile, &readers_path), owner).map_err(|e| match e {
        CreateError::Attach(AttachError::Initializing { path }) => {
            // A creator takes microseconds; one that left the file unfinished
            // for this long has died, and waiting will not help.
            let file = if path == data_path { &dfile } else { &rfile };
            match file.metadata().and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok()) {
                Some(age) if age >= ABANDONED_AFTER => AttachError::Abandoned { path, age_secs: age.as_secs() },
                _ => AttachError::Initializing { path },
            }
        }
        CreateError::Attach(a) => a,
        other => AttachError::Invalid { path: data_path.clone(), reason: other.to_string() },
    })
}

/// A region still uninitialised this long after its file was last changed
/// is abandoned rather than being initialised.
pub(crate) const ABANDONED_AFTER: std::time::Duration = std::time::Duration::from_secs(10);

/// The uid that owns the open `file` (`fstat`).
fn file_owner(file: &File, path: &Path) -> Result<u32, AttachError> {
    use std::os::unix::fs::MetadataExt;
    file.metadata().map(|m| m.uid()).map_err(|e| AttachError::io(path, e))
}

/// Validates both mapped regions and builds the `Region`.
fn from_maps(
    name: &str,
    data: (Mapping, &Path),
    readers: (Mapping, &File, &Path),
    owner: u32,
) -> Result<Region, CreateError> {
    use std::os::unix::fs::MetadataExt;
    let ((dmap, dpath), (rmap, rfile, rpath)) = (data, readers);
    let rmeta = rfile.metadata().map_err(|e| CreateError::Attach(AttachError::io(rpath, e)))?;
    let checked = validate_data(&dmap, dpath, Some(name))
        .and_then(|g| validate_readers(&rmap, rmeta.len(), rpath, &g).map(|()| g));
    // A control file shorter than its mapping (the mapping is of the size
    // the data region gives it) is named as such, not found by the probe
    // below as a shrink.
    if let Err(e @ AttachError::Truncated { .. }) = checked {
        return Err(CreateError::Attach(e));
    }
    // A file that shrank while being checked was read as zeros: say so,
    // rather than whatever the zeros looked like.
    for (map, file) in [(&dmap, RingFile::Data), (&rmap, RingFile::Readers)] {
        if map.probe() {
            return Err(CreateError::Attach(AttachError::Damaged(Damaged::new(name, file))));
        }
    }
    let g = checked.map_err(CreateError::Attach)?;
    let writable = dmap.writable();
    let base = dmap.ptr();
    Ok(Region {
        hdr: base as *const RingHeader,
        rd: rmap.ptr() as *const ReadersHeader,
        // SAFETY: the control region is at least READERS_HEADER_SIZE bytes.
        entries: unsafe { rmap.ptr().add(READERS_HEADER_SIZE) } as *const ReaderEntry,
        // SAFETY: the data region is at least RING_HEADER_SIZE bytes.
        slots: unsafe { base.add(RING_HEADER_SIZE) },
        stride: g.slot_size as usize,
        mask: g.capacity - 1,
        payload_words: (g.slot_size as usize - SLOT_HEADER_SIZE) / 8,
        damage: [dmap.damage_flag(), rmap.damage_flag()],
        name: name.to_owned(),
        path: dpath.to_owned(),
        writable,
        owner,
        geometry: g,
        control: Some(ControlFile { path: rpath.to_owned(), id: (rmeta.dev(), rmeta.ino()) }),
        backing: Backing::Shm { data: dmap, readers: rmap },
    })
}

/// The live holder of the writer lease in `name`'s data region, as (pid,
/// epoch), read from the data region alone (its control file may be
/// missing or broken). `None` if no live process holds it, or if the data
/// region does not validate (then its lease cannot be trusted either).
pub(crate) fn live_lease_holder(ns: &Namespace, name: &str) -> Option<(u32, u64)> {
    let path = ns.data_path(name);
    let file = shm::open_file(&path, false).ok()?;
    let map = Mapping::new(&file, false).ok()?;
    validate_data(&map, &path, Some(name)).ok()?;
    // SAFETY: the mapping validated: it holds a whole, published header.
    let h = unsafe { &*(map.ptr() as *const RingHeader) };
    // SYNC POINT: lease committed (the holder's start time is visible).
    let (pid, epoch, committed) = lease_parts(h.lease.load(Ordering::Acquire));
    (pid != 0 && super::writer::holder_alive(h, pid, committed)).then_some((pid, epoch))
}

/// Removes both files of a ring. Attached processes keep their mappings.
pub(crate) fn unlink(ns: &Namespace, name: &str) -> Result<(), AttachError> {
    shm::validate_ring_name(name)?;
    let mut first: Option<AttachError> = None;
    // The data file first: it is what makes the ring exist, so a crash in
    // between leaves a lone control file, which the next create replaces.
    for path in [ns.data_path(name), ns.readers_path(name)] {
        if let Err(e) = std::fs::remove_file(&path) {
            if e.kind() != std::io::ErrorKind::NotFound && first.is_none() {
                first = Some(AttachError::io(&path, e));
            }
        }
    }
    first.map_or(Ok(()), Err)
}
