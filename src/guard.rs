//! The fault guard: a peer that shrinks a ring file under this process's
//! mapping must not kill it with SIGBUS.
//!
//! Every reader may write a ring's control region (it holds their cursors),
//! so any of them can `ftruncate` it; the owner of a data region can
//! truncate that. Every process that has the file mapped then takes SIGBUS
//! at its next access past the new end of the file. Compositors face the
//! same threat from their clients' shared buffers, and this module answers
//! it the way libwayland does (`wl_shm_buffer_begin_access` and its SIGBUS
//! handler): on a fault inside a guarded mapping the handler maps anonymous
//! zero pages over the **whole** mapping with `MAP_FIXED` (same address,
//! same protection), marks it damaged, and returns; the faulting
//! instruction runs again and reads zeros. The ring code checks the damaged
//! flag wherever zeros could fool it and reports `Damaged`.
//!
//! Unlike libwayland, which guards a buffer only between `begin_access` and
//! `end_access`, a ring mapping is guarded for its whole life: registered
//! by [`crate::shm::Mapping::new`] right after `mmap`, unregistered before
//! `munmap`. The hot path pays nothing but a relaxed load of the flag where
//! it checks.
//!
//! # The registry
//!
//! A fixed array of [`SLOTS`] slots in static memory, so the handler never
//! allocates or locks: it scans the array with atomic loads. A slot is
//! `FREE`, `CLAIMED` (being filled in by a registration), `ACTIVE` (a
//! guarded range), or `RETIRING` (being unregistered). A registration CASes
//! a slot `FREE → CLAIMED`, stores the range, then publishes it with a
//! Release store of `ACTIVE`. A full registry fails the mapping with an
//! error rather than leaving it unguarded.
//!
//! # A fault racing an unregistration
//!
//! The danger: the handler finds a range, another thread unregisters and
//! unmaps it, a third maps something else at that address, and the handler's
//! `MAP_FIXED` then replaces the newcomer. To exclude it, the handler *pins*
//! a slot before trusting its range: it increments the slot's `users`, then
//! re-loads `state` and acts only if it is still `ACTIVE`; it unpins when
//! done. Unregistration stores `RETIRING`, then waits until `users` is 0,
//! and only then frees the slot; the mapping is unmapped after that. Both
//! sides are a store followed by a load of the other's word (Dekker), all
//! SeqCst: either the handler's load sees `RETIRING` (it leaves the slot
//! alone), or the unregistration's load sees the pin (it waits until the
//! handler is done). So a range the handler maps over is still the guarded
//! mapping. A fault that hits a mapping after its unregistration began is a
//! use-after-unmap bug anyway; it is not repaired, and it crashes.
//!
//! Unregistration cannot deadlock against its own thread: the handler runs
//! for a fault on guarded memory, and the waiting loop touches only the
//! registry. Two threads faulting on the same mapping at once may both map
//! zero pages over it; the second replaces the first's zeros with zeros
//! (and whatever the first thread stored there since, which is meaningless
//! after the damage), so that is harmless. A process forked while another
//! thread is inside the handler inherits its pin, and unregistering that
//! range in the child would wait forever; a child that `exec`s (every child
//! the HELIX programs start) never unregisters anything.
//!
//! # Faults that are not ours
//!
//! The handler is installed once, on the first registration, with
//! `SA_SIGINFO | SA_NODEFER | SA_ONSTACK`, after saving the disposition it
//! replaces. A SIGBUS it does not repair (not an address error, not in a
//! guarded range, sent with `kill`, or the repair's `mmap` failed) goes to
//! that previous disposition: a previous handler is called as it would
//! have been (Rust's own SIGBUS handler then resets the default and
//! returns); the default action is restored and the signal comes again (a
//! fault repeats when the instruction re-executes; a sent signal is raised
//! again), so the process dies of SIGBUS as it would without the guard.
//! A library that later replaces this handler switches the guard off.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicUsize, Ordering};
use std::sync::OnceLock;

/// Ranges one process can guard at once (each attachment of a ring uses
/// two: its data and control regions).
pub const SLOTS: usize = 1024;

const FREE: u32 = 0;
const CLAIMED: u32 = 1;
const ACTIVE: u32 = 2;
const RETIRING: u32 = 3;

/// One guarded range; a cache line of its own, so the flag the hot path
/// reads shares a line with nothing that other mappings' registrations
/// write.
#[repr(align(64))]
struct Slot {
    state: AtomicU32,
    /// Signal handlers currently looking at this slot's range.
    users: AtomicU32,
    start: AtomicUsize,
    len: AtomicUsize,
    /// `PROT_*` of the mapping, for the zero pages that replace it.
    prot: AtomicI32,
    damaged: AtomicBool,
}

impl Slot {
    const fn new() -> Slot {
        Slot {
            state: AtomicU32::new(FREE),
            users: AtomicU32::new(0),
            start: AtomicUsize::new(0),
            len: AtomicUsize::new(0),
            prot: AtomicI32::new(0),
            damaged: AtomicBool::new(false),
        }
    }
}

struct Registry<const N: usize> {
    slots: [Slot; N],
}

static REGISTRY: Registry<SLOTS> = Registry::new();

/// The disposition of SIGBUS before ours, for faults that are not ours.
static PREV_HANDLER: AtomicUsize = AtomicUsize::new(libc::SIG_DFL);
static PREV_FLAGS: AtomicI32 = AtomicI32::new(0);

impl<const N: usize> Registry<N> {
    const fn new() -> Self {
        Registry { slots: [const { Slot::new() }; N] }
    }

    /// Takes a free slot for `[start, start + len)`; `None` if all are used.
    fn claim(&self, start: usize, len: usize, prot: i32) -> Option<&Slot> {
        let slot = self
            .slots
            .iter()
            .find(|s| s.state.compare_exchange(FREE, CLAIMED, Ordering::Acquire, Ordering::Relaxed).is_ok())?;
        slot.start.store(start, Ordering::Relaxed);
        slot.len.store(len, Ordering::Relaxed);
        slot.prot.store(prot, Ordering::Relaxed);
        slot.damaged.store(false, Ordering::Relaxed);
        // SYNC POINT: guarded range published. Pairs with the handler's
        // SeqCst (so also Acquire) load of `state` in `repair`.
        slot.state.store(ACTIVE, Ordering::Release);
        Some(slot)
    }

    /// The handler's work: if `addr` is inside a guarded range, marks it
    /// damaged and maps zero pages over it. Async-signal-safe: atomics and
    /// one `mmap`, no allocation, no lock, nothing that can panic.
    fn repair(&self, addr: usize) -> bool {
        for slot in &self.slots {
            if slot.state.load(Ordering::Relaxed) != ACTIVE {
                continue;
            }
            // SYNC POINT: guard pin Dekker. Pin, then re-check the state;
            // pairs with `retire`, which stores RETIRING and then loads
            // `users`. A store followed by a load of another location needs
            // SeqCst on both sides; Acquire/Release cannot order them.
            slot.users.fetch_add(1, Ordering::SeqCst);
            let mut hit = false;
            let mut repaired = false;
            if slot.state.load(Ordering::SeqCst) == ACTIVE {
                let start = slot.start.load(Ordering::Relaxed);
                let len = slot.len.load(Ordering::Relaxed);
                hit = addr.wrapping_sub(start) < len;
                if hit {
                    // Flag first: whoever sees zeros afterwards also finds
                    // the flag set.
                    slot.damaged.store(true, Ordering::SeqCst);
                    let prot = slot.prot.load(Ordering::Relaxed);
                    // SAFETY: `[start, start + len)` is the guarded mapping,
                    // still mapped: it is pinned ACTIVE, and its owner
                    // unmaps it only after `retire` saw no pins. Replacing
                    // it with private anonymous pages of the same protection
                    // at the same address leaves every pointer into it
                    // valid; the memory now reads as zeros.
                    let p = unsafe {
                        libc::mmap(
                            start as *mut libc::c_void,
                            len,
                            prot,
                            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                            -1,
                            0,
                        )
                    };
                    repaired = p != libc::MAP_FAILED;
                }
            }
            slot.users.fetch_sub(1, Ordering::Release);
            if hit {
                return repaired;
            }
        }
        false
    }
}

/// A registered range, unregistered on drop (before its owner unmaps it).
pub(crate) struct Guard {
    slot: &'static Slot,
}

/// The damaged flag of a guarded mapping, as the ring code reads it.
#[derive(Clone, Copy)]
pub(crate) struct DamageFlag(&'static AtomicBool);

/// A flag that is never set, for mappings that cannot fault (empty ones,
/// the heap-backed rings of the loom models).
static NEVER: AtomicBool = AtomicBool::new(false);

impl DamageFlag {
    /// A flag nothing ever sets.
    pub(crate) fn never() -> DamageFlag {
        DamageFlag(&NEVER)
    }

    /// Whether the mapping was hit by a fault and now reads as zeros. One
    /// relaxed load: cheap enough for the hot path.
    #[inline]
    pub(crate) fn is_set(self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Guards `[ptr, ptr + len)`: from now on, a SIGBUS for an address in it
/// replaces the whole range with zero pages of protection `prot` instead of
/// killing the process. Installs the handler on first use.
///
/// # Safety
///
/// The range must be a mapping the caller owns, that stays mapped and is
/// used only through this guard's owner until the returned [`Guard`] is
/// dropped, and that the caller unmaps (if at all) only after dropping it.
/// Nothing may depend on its contents surviving: after a fault it is
/// replaced by private anonymous memory at the same address.
pub(crate) unsafe fn register(ptr: *mut u8, len: usize, prot: i32) -> io::Result<Guard> {
    install()?;
    REGISTRY.claim(ptr as usize, len, prot).map(|slot| Guard { slot }).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::OutOfMemory,
            format!("this process already guards {SLOTS} shared mappings (the fault guard's limit)"),
        )
    })
}

impl Guard {
    /// The mapping's damaged flag.
    pub(crate) fn flag(&self) -> DamageFlag {
        DamageFlag(&self.slot.damaged)
    }

    /// Whether a fault replaced the mapping with zeros.
    pub(crate) fn is_damaged(&self) -> bool {
        self.slot.damaged.load(Ordering::Relaxed)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        retire(self.slot);
    }
}

/// Unregisters a slot: no handler acts on it once this returns.
fn retire(slot: &Slot) {
    // SYNC POINT: guard pin Dekker (see `repair`).
    slot.state.store(RETIRING, Ordering::SeqCst);
    while slot.users.load(Ordering::SeqCst) != 0 {
        std::thread::yield_now();
    }
    // SYNC POINT: guard slot freed. Pairs with the Acquire CAS in `claim`.
    slot.state.store(FREE, Ordering::Release);
}

/// Installs the SIGBUS handler once per process.
fn install() -> io::Result<()> {
    static INSTALLED: OnceLock<i32> = OnceLock::new();
    let errno = *INSTALLED.get_or_init(|| {
        // SAFETY: sigaction reads and writes only the local structs passed;
        // `on_sigbus` is an `extern "C"` function with the SA_SIGINFO
        // signature that stays valid for the life of the process.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut old) != 0 {
                return io::Error::last_os_error().raw_os_error().unwrap_or(libc::EINVAL);
            }
            save_previous(&old);
            let mut new: libc::sigaction = std::mem::zeroed();
            let handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) = on_sigbus;
            new.sa_sigaction = handler as libc::sighandler_t;
            new.sa_flags = libc::SA_SIGINFO | libc::SA_NODEFER | libc::SA_ONSTACK;
            libc::sigemptyset(&mut new.sa_mask);
            if libc::sigaction(libc::SIGBUS, &new, &mut old) != 0 {
                return io::Error::last_os_error().raw_os_error().unwrap_or(libc::EINVAL);
            }
            // The same as the first query, unless someone changed it in
            // between: then this is the one to chain to.
            save_previous(&old);
        }
        0
    });
    if errno == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(errno))
    }
}

fn save_previous(old: &libc::sigaction) {
    PREV_FLAGS.store(old.sa_flags, Ordering::Relaxed);
    // SYNC POINT: previous disposition saved. Pairs with the Acquire load
    // in `chain`.
    PREV_HANDLER.store(old.sa_sigaction, Ordering::Release);
}

/// The SIGBUS handler. Async-signal-safe: it only scans the registry, calls
/// `mmap`, `sigaction` and `raise`, and keeps `errno` as it found it.
extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: `__errno_location` returns this thread's errno, always valid.
    let errno = unsafe { *libc::__errno_location() };
    let (code, addr) = if info.is_null() {
        (0, 0)
    } else {
        // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO
        // handler; `si_addr` is meaningful for a kernel-generated SIGBUS.
        unsafe { ((*info).si_code, (*info).si_addr() as usize) }
    };
    // BUS_ADRERR is the kernel's code for an access past the end of the
    // file backing a mapping. Anything else (alignment, a hardware memory
    // error, a signal sent by a process) is not ours to repair.
    if !(code == libc::BUS_ADRERR && REGISTRY.repair(addr)) {
        // SAFETY: called from the signal handler with the arguments the
        // kernel gave it.
        unsafe { chain(sig, info, ctx, code) };
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// Hands a SIGBUS that is not ours to the disposition we replaced.
///
/// # Safety
///
/// Only from the SIGBUS handler, with the arguments the kernel passed it.
unsafe fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void, code: libc::c_int) {
    // SYNC POINT: previous disposition saved.
    let handler = PREV_HANDLER.load(Ordering::Acquire);
    let flags = PREV_FLAGS.load(Ordering::Relaxed);
    // A kernel fault (code > 0) comes back when the instruction re-executes;
    // a signal sent by a process (code <= 0) does not.
    let sent = code <= 0;
    if handler == libc::SIG_IGN && sent {
        return;
    }
    if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
        // SAFETY: sigaction and raise are async-signal-safe; the struct is
        // local and initialised by sigemptyset.
        unsafe {
            let mut dfl: libc::sigaction = std::mem::zeroed();
            dfl.sa_sigaction = libc::SIG_DFL;
            libc::sigemptyset(&mut dfl.sa_mask);
            libc::sigaction(sig, &dfl, std::ptr::null_mut());
            if sent {
                // SA_NODEFER: delivered now, and the default action ends
                // the process.
                libc::raise(sig);
            }
        }
        return;
    }
    if flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the previous disposition was installed with SA_SIGINFO,
        // so its handler has this signature; we pass what we were given.
        unsafe {
            let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) = std::mem::transmute(handler);
            f(sig, info, ctx);
        }
    } else {
        // SAFETY: without SA_SIGINFO a handler takes the signal number only.
        unsafe {
            let f: extern "C" fn(libc::c_int) = std::mem::transmute(handler);
            f(sig);
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::shm::Mapping;
    use std::fs::File;
    use std::os::unix::fs::FileExt;

    fn file(tag: &str, len: u64) -> (File, std::path::PathBuf) {
        let path = std::env::temp_dir().join(format!("helix-guard-{tag}-{}", std::process::id()));
        let f = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path).unwrap();
        f.set_len(len).unwrap();
        (f, path)
    }

    fn load(map: &Mapping, offset: usize) -> u64 {
        assert!(offset + 8 <= map.len() && offset.is_multiple_of(8));
        // SAFETY: in bounds and aligned (the mapping is page aligned); an
        // atomic load, as for any shared memory.
        unsafe { (*(map.ptr().add(offset) as *const std::sync::atomic::AtomicU64)).load(Ordering::Relaxed) }
    }

    #[test]
    fn a_shrunk_file_reads_as_zeros_and_is_flagged() {
        let (f, path) = file("shrink", 3 * 4096);
        f.write_all_at(&[0xAB; 3 * 4096], 0).unwrap();
        let map = Mapping::new(&f, false).unwrap();
        assert_eq!(load(&map, 2 * 4096), u64::from_ne_bytes([0xAB; 8]));
        assert!(!map.is_damaged());
        f.set_len(4096).unwrap();
        // Past the new end: the fault is repaired with zeros.
        assert_eq!(load(&map, 2 * 4096), 0);
        assert!(map.is_damaged());
        // The whole mapping was replaced, also the part still in the file.
        assert_eq!(load(&map, 0), 0);
        drop(map);
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn probe_notices_a_shrink_without_an_access() {
        let (f, path) = file("probe", 2 * 4096);
        let map = Mapping::new(&f, true).unwrap();
        assert!(!map.probe());
        f.set_len(100).unwrap();
        assert!(map.probe());
        drop(map);
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn faults_race_registrations_and_unmaps() {
        // Threads map, shrink, fault and unmap over and over, so the
        // handler runs while other threads register and retire slots.
        let threads: Vec<_> = (0..4)
            .map(|t| {
                std::thread::spawn(move || {
                    let (f, path) = file(&format!("race{t}"), 2 * 4096);
                    for i in 0..200 {
                        f.set_len(2 * 4096).unwrap();
                        let map = Mapping::new(&f, i % 2 == 0).unwrap();
                        f.set_len(0).unwrap();
                        assert_eq!(load(&map, 4096), 0);
                        assert!(map.is_damaged());
                    }
                    let _ = std::fs::remove_file(path);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }

    #[test]
    fn a_full_registry_refuses_and_slots_are_reused() {
        static SMALL: Registry<2> = Registry::new();
        let a = SMALL.claim(0x1000, 10, libc::PROT_READ).unwrap();
        let b = SMALL.claim(0x3000, 10, libc::PROT_READ).unwrap();
        assert!(SMALL.claim(0x5000, 10, libc::PROT_READ).is_none());
        retire(a);
        let c = SMALL.claim(0x5000, 10, libc::PROT_READ).unwrap();
        assert!(std::ptr::eq(a, c));
        // An address in no range, or in a retired one, is not repaired.
        assert!(!SMALL.repair(0x9000));
        retire(b);
        assert!(!SMALL.repair(0x3004));
        retire(c);
    }
}
