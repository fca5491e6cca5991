//! The trust boundary (DESIGN.md §2.1) against peers that write shared
//! memory directly, not through the library: a gating reader that fakes
//! progress with its cursor word, and a `published` counter outside the
//! range sequences may take. Each test reaches the raw words through its
//! own mapping of the ring's files in /dev/shm, as a hostile peer would.

mod common;

use std::fs::OpenOptions;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{watchdog, TestNs};
use helix::layout::*;
use helix::*;

/// A read-write mapping of a whole ring file, the way a peer holding a
/// writable descriptor sees it.
struct Raw(memmap2::MmapMut);

impl Raw {
    fn map(path: &Path) -> Raw {
        let f = OpenOptions::new().read(true).write(true).open(path).unwrap();
        // SAFETY: a shared mapping of a ring file; the test touches it only
        // through the aligned 64-bit atomics returned by `word`.
        Raw(unsafe { memmap2::MmapMut::map_mut(&f) }.unwrap())
    }

    /// The 64-bit word at byte `offset`.
    fn word(&self, offset: usize) -> &AtomicU64 {
        assert!(offset % 8 == 0 && offset + 8 <= self.0.len());
        // SAFETY: in bounds and 8-aligned (the mapping is page aligned); the
        // ring's processes access this word only atomically.
        unsafe { &*(self.0.as_ptr().add(offset) as *const AtomicU64) }
    }
}

/// Byte offset of reader entry `index`'s cursor in the control region.
fn cursor_offset(index: usize) -> usize {
    READERS_HEADER_SIZE + index * READER_ENTRY_SIZE + std::mem::offset_of!(ReaderEntry, cursor)
}

/// A gating reader whose cursor keeps changing without ever releasing the
/// slot the writer needs (it toggles between c and c + 1) is not making
/// progress: it is demoted after the stall timeout, and the writer's
/// publish completes. (Before the fix the writer restarted its stall clock
/// on every change of the cursor, and this test hung until its watchdog.)
#[test]
fn a_gating_reader_toggling_its_cursor_is_demoted_after_the_stall_timeout() {
    let _dog = watchdog("writer held by a toggling cursor", Duration::from_secs(60));
    let ns = TestNs::new();
    let stall = Duration::from_secs(1);
    let opts = RingOptions { capacity: 4, policy: Policy::Block, stall_timeout: stall, ..Default::default() };
    let ring = Ring::create(&ns, "toggle", &opts).unwrap();
    let mut w = ring.writer().unwrap();
    let hostile =
        Reader::attach(&ns, "toggle", &ReaderOptions { gating: true, ..ReaderOptions::named("hostile") }).unwrap();
    let c = hostile.cursor();
    assert_eq!(c, 1);
    // Fill the ring: sequences 1..=4 need nothing released.
    for _ in 0..4 {
        w.publish(b"x").unwrap();
    }
    // The peer writes its own cursor word: c + 1, c, c + 1, ... It never
    // reaches c + 2, which sequence 6 needs (6 reuses the slot of 2).
    let raw = Raw::map(&ns.readers_path("toggle"));
    let stop = Arc::new(AtomicBool::new(false));
    let toggler = {
        let stop = stop.clone();
        let index = hostile.index();
        std::thread::spawn(move || {
            let cursor = raw.word(cursor_offset(index));
            let mut flips = 0u64;
            while !stop.load(Ordering::Relaxed) {
                cursor.store(c + 1 - (flips & 1), Ordering::Release);
                flips += 1;
                std::thread::sleep(Duration::from_micros(200));
            }
            flips
        })
    };
    let started = Instant::now();
    // Sequence 5 needs c + 1 released, which the toggler shows half the time;
    // sequence 6 needs c + 2, which it never shows.
    assert_eq!(w.publish(b"5").unwrap(), 5);
    assert_eq!(w.publish(b"6").unwrap(), 6);
    let waited = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let flips = toggler.join().unwrap();
    assert!(flips > 2, "the toggler ran ({flips} stores)");
    // Demoted for stalling (it is alive), counted, and visible to itself.
    let s = ring.stats();
    assert_eq!(s.demotions, 1, "{s:?}");
    let me = s.readers.iter().find(|r| r.index == hostile.index()).unwrap();
    assert!(me.alive && me.demoted && !me.gating, "{me:?}");
    assert!(hostile.was_demoted());
    // Demotion comes at the stall deadline, never before it.
    assert!(waited >= stall, "demoted after {waited:?}, before the stall timeout {stall:?}");
    // The writer is free again: the demoted reader no longer gates it.
    for seq in 7..=20 {
        assert_eq!(w.try_publish(b"x").unwrap(), seq);
    }
}
