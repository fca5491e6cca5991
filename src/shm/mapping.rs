//! A shared file mapping, guarded against a file that shrinks under it.

use std::fs::File;
use std::io;

use crate::guard::{self, DamageFlag, Guard};

/// A shared file mapping, read-write or read-only. The memory stays at the
/// same address until the mapping is dropped.
///
/// Every mapping is guarded (`crate::guard`): if the file shrinks under it
/// (a peer's `ftruncate`), the access that would raise SIGBUS instead finds
/// the whole mapping replaced by zeros, and [`Mapping::is_damaged`] says so.
pub struct Mapping {
    // Declared before `map`, so dropped first: unregistered before unmapped.
    guard: Option<Guard>,
    map: memmap2::MmapRaw,
    writable: bool,
}

impl Mapping {
    /// Maps all of `file` shared, guarded. Fails if the process already
    /// guards as many mappings as the guard holds.
    pub fn new(file: &File, writable: bool) -> io::Result<Mapping> {
        Mapping::map(file, writable, memmap2::MmapOptions::new())
    }

    /// Maps the first `len` bytes of `file` shared, guarded, whatever size
    /// it has: for a file of a size the layout fixes, that another process
    /// may write and so grow (tmpfs takes any sparse size, and a mapping of
    /// 2^62 bytes fails as if the system had no memory). Bytes past its end
    /// read as a shrink does (the guard).
    pub fn with_len(file: &File, writable: bool, len: usize) -> io::Result<Mapping> {
        let mut opts = memmap2::MmapOptions::new();
        opts.len(len);
        Mapping::map(file, writable, opts)
    }

    fn map(file: &File, writable: bool, opts: memmap2::MmapOptions) -> io::Result<Mapping> {
        let map = if writable { opts.map_raw(file)? } else { opts.map_raw_read_only(file)? };
        let prot = if writable { libc::PROT_READ | libc::PROT_WRITE } else { libc::PROT_READ };
        // An empty file is mapped as nothing anyone reads: nothing to guard.
        let guard = if map.len() == 0 {
            None
        } else {
            // SAFETY: `map` is our own mapping of exactly this range; it
            // stays mapped until `self.map` is dropped, which happens after
            // `self.guard` (field order). Every access to it goes through
            // this `Mapping` and tolerates the contents turning to zeros.
            Some(unsafe { guard::register(map.as_mut_ptr(), map.len(), prot)? })
        };
        Ok(Mapping { guard, map, writable })
    }

    /// Start of the mapping (page aligned).
    pub fn ptr(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the mapping has length zero.
    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }

    /// Whether the mapping may be written.
    pub fn writable(&self) -> bool {
        self.writable
    }

    /// The 64-bit word at byte `offset` as an atomic shared with every
    /// process that maps the file: for words processes share outside a
    /// ring (the benchmark's raw baselines). Every process must access the
    /// word atomically and with this width.
    ///
    /// # Panics
    ///
    /// If the mapping is read-only, or the word is not inside it or not
    /// aligned to 8 bytes.
    pub fn atomic_u64(&self, offset: usize) -> &std::sync::atomic::AtomicU64 {
        self.check_word(offset, 8);
        // SAFETY: the word is inside the writable mapping and aligned
        // (checked above; the mapping is page aligned), the mapping lives as
        // long as the returned reference, and the word is only ever
        // accessed atomically (the documented contract).
        unsafe { &*(self.ptr().add(offset) as *const std::sync::atomic::AtomicU64) }
    }

    /// The 32-bit word at byte `offset` as an atomic shared with every
    /// process that maps the file (a futex word, for instance); as
    /// [`Mapping::atomic_u64`].
    ///
    /// # Panics
    ///
    /// If the mapping is read-only, or the word is not inside it or not
    /// aligned to 4 bytes.
    pub fn atomic_u32(&self, offset: usize) -> &std::sync::atomic::AtomicU32 {
        self.check_word(offset, 4);
        // SAFETY: as in `atomic_u64`: in bounds, aligned, writable, alive as
        // long as the reference, only accessed atomically.
        unsafe { &*(self.ptr().add(offset) as *const std::sync::atomic::AtomicU32) }
    }

    fn check_word(&self, offset: usize, size: usize) {
        assert!(self.writable, "a shared word needs a writable mapping");
        assert!(offset.is_multiple_of(size), "a {size}-byte word at offset {offset} is not aligned");
        assert!(
            offset.checked_add(size).is_some_and(|end| end <= self.len()),
            "offset {offset} is outside the mapping"
        );
    }

    /// Whether the file shrank under the mapping and an access faulted: the
    /// mapping now reads as zeros (writes go nowhere) and its contents mean
    /// nothing. Reports only what accesses so far met; see [`Mapping::probe`].
    pub fn is_damaged(&self) -> bool {
        self.guard.as_ref().is_some_and(Guard::is_damaged)
    }

    /// Touches the first and the last page, so a shrink that took away the
    /// last page (any shrink by a page or more) is noticed now rather than
    /// at the next access there; then returns [`Mapping::is_damaged`]. No
    /// system call unless the file did shrink.
    pub fn probe(&self) -> bool {
        if let Some(len) = self.map.len().checked_sub(1) {
            for offset in [0, len] {
                // SAFETY: `offset < len()`, inside the live mapping; a one-byte
                // atomic load is sound on shared (and on read-only) memory.
                // A fault here is repaired by the guard.
                let byte = unsafe { &*(self.ptr().add(offset) as *const std::sync::atomic::AtomicU8) };
                std::hint::black_box(byte.load(std::sync::atomic::Ordering::Relaxed));
            }
        }
        self.is_damaged()
    }

    /// The damaged flag, for the ring's hot-path checks.
    pub(crate) fn damage_flag(&self) -> DamageFlag {
        self.guard.as_ref().map_or(DamageFlag::never(), Guard::flag)
    }
}
