//! Attaching to a ring whose files hold anything (`Ring::open`,
//! `Reader::attach`, `RingView::attach`): a typed error or a ring that
//! works, never a panic, a hang or a fault. After an attach succeeds the
//! harness reads, publishes, sweeps and takes stats on whatever the files
//! say.
//!
//! Input: a flags byte, a little-endian u16 `n`, then `n` bytes of the
//! data region (`<ns>.r`) and the rest for the control region
//! (`<ns>.r@readers`). Each file is sized as its header's `file_size` says
//! (zero-padded or cut; as given if that is over 256 KiB), so inputs get
//! past the size check and reach what lies behind it; a truncated file is
//! another engineer's guard. The namespace is this process's own.
//!
//! Flags:
//! - `FIX_DATA`: the data header gets a valid identity (magic, version,
//!   sizes, name; a small geometry from the fuzzer's bytes), leaving every
//!   counter, the lease and the slots as the fuzzer wrote them;
//! - `FIX_READERS`: the control header gets the identity matching it;
//! - bits 2-3: what attaches: `Ring::open` (and a writer), `Reader::attach`,
//!   `RingView::attach`, or all three at once;
//! - bit 4: the reader gates; bits 5-6: where it starts (newest, oldest,
//!   or at the sequence in the input's last eight bytes).
#![no_main]

use std::fs;
use std::io::Write;
use std::mem::offset_of;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use helix::layout::*;
use helix::{AttachError, Namespace, Reader, ReaderOptions, Ring, RingView, Start, TryReadError};
use libfuzzer_sys::fuzz_target;

const FIX_DATA: u8 = 1;
const FIX_READERS: u8 = 2;
const GATING: u8 = 1 << 4;
/// Largest file the harness makes (bigger claims are written as given).
const LIMIT: u64 = 256 << 10;
const RING: &str = "r";

struct Files {
    ns: Namespace,
    data: PathBuf,
    readers: PathBuf,
}

/// This process's ring files, removed after every input, and by the panic
/// hook when a finding aborts the process.
fn files() -> &'static Files {
    static FILES: OnceLock<Files> = OnceLock::new();
    FILES.get_or_init(|| {
        let ns = Namespace::new(&format!("fuzz{}", std::process::id())).unwrap();
        let files = Files { data: ns.data_path(RING), readers: ns.readers_path(RING), ns };
        let paths = [files.data.clone(), files.readers.clone()];
        // Then libfuzzer-sys's hook, which aborts: libFuzzer writes the
        // crash artifact.
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            for p in &paths {
                let _ = fs::remove_file(p);
            }
            previous(info);
        }));
        files
    })
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_ne_bytes());
}

fn get_u32(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(b[at..at + 4].try_into().unwrap())
}

fn get_u64(b: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(b[at..at + 8].try_into().unwrap())
}

/// A valid identity for the data header: 2 to 128 slots of 64 to 256
/// bytes, 1 to 8 readers, chosen by the bytes already there.
fn fix_data(d: &mut Vec<u8>) {
    if d.len() < RING_HEADER_SIZE {
        d.resize(RING_HEADER_SIZE, 0);
    }
    let capacity = 2u64 << (d[offset_of!(RingHeader, capacity)] % 7);
    let slot_size = SLOT_ALIGN as u32 * (1 + u32::from(d[offset_of!(RingHeader, slot_size)] % 4));
    let max_readers = 1 + u32::from(d[offset_of!(RingHeader, max_readers)] % 8);
    put_u64(d, offset_of!(RingHeader, magic), RING_MAGIC);
    put_u32(d, offset_of!(RingHeader, version), ABI_VERSION);
    put_u32(d, offset_of!(RingHeader, header_size), RING_HEADER_SIZE as u32);
    put_u64(d, offset_of!(RingHeader, capacity), capacity);
    put_u32(d, offset_of!(RingHeader, slot_size), slot_size);
    let policy = u32::from(d[offset_of!(RingHeader, policy)] & 1);
    put_u32(d, offset_of!(RingHeader, policy), policy);
    put_u32(d, offset_of!(RingHeader, max_readers), max_readers);
    put_u32(d, offset_of!(RingHeader, flags), 0);
    let stall = get_u64(d, offset_of!(RingHeader, stall_timeout_ns)).max(1);
    put_u64(d, offset_of!(RingHeader, stall_timeout_ns), stall);
    put_u64(d, offset_of!(RingHeader, data_offset), RING_HEADER_SIZE as u64);
    put_u64(d, offset_of!(RingHeader, file_size), ring_file_size(capacity, slot_size));
    put_u32(d, offset_of!(RingHeader, name_len), RING.len() as u32);
    let name = offset_of!(RingHeader, name);
    d[name..name + RING.len()].copy_from_slice(RING.as_bytes());
}

/// The control header matching the data header `d`.
fn fix_readers(r: &mut Vec<u8>, d: &[u8]) {
    if r.len() < READERS_HEADER_SIZE {
        r.resize(READERS_HEADER_SIZE, 0);
    }
    let max_readers = if d.len() >= RING_HEADER_SIZE { get_u32(d, offset_of!(RingHeader, max_readers)) } else { 1 };
    let created = if d.len() >= RING_HEADER_SIZE { get_u64(d, offset_of!(RingHeader, created_ns)) } else { 0 };
    put_u64(r, offset_of!(ReadersHeader, magic), READERS_MAGIC);
    put_u32(r, offset_of!(ReadersHeader, version), ABI_VERSION);
    put_u32(r, offset_of!(ReadersHeader, header_size), READERS_HEADER_SIZE as u32);
    put_u32(r, offset_of!(ReadersHeader, max_readers), max_readers);
    put_u32(r, offset_of!(ReadersHeader, entry_size), READER_ENTRY_SIZE as u32);
    put_u64(r, offset_of!(ReadersHeader, created_ns), created);
    put_u64(r, offset_of!(ReadersHeader, file_size), readers_file_size(max_readers));
}

/// Sizes `b` as the `file_size` field at `at` says, if it is small enough.
fn size_from_header(b: &mut Vec<u8>, at: usize) {
    if b.len() >= at + 8 {
        let claimed = get_u64(b, at);
        if claimed <= LIMIT {
            b.resize(claimed as usize, 0);
        }
    }
}

fn write(path: &Path, bytes: &[u8], mode: u32) {
    let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(path).unwrap();
    f.write_all(bytes).unwrap();
}

/// A few non-blocking reads of every kind, then the reader's counters.
fn read_some(r: &mut Reader) {
    let mut small = [0u8; 8];
    let mut big = vec![0u8; r.geometry().max_payload as usize];
    for i in 0..12 {
        let result = match i % 6 {
            0 => r.try_read(&mut big).map(|_| ()),
            1 => r.try_read(&mut small).map(|_| ()),
            2 => r.try_read_pod::<u64>().map(|_| ()),
            3 => r.try_peek().map(|f| {
                let _ = (f.read_at::<u32>(4), f.copy_to(&mut small), f.is_intact());
            }),
            4 => r
                .try_read_batch(4, |f| {
                    let _ = f.copy_to(&mut big);
                })
                .map(|_| ()),
            _ => r.try_read_batch_pod::<[u8; 16]>(&mut [[0; 16]; 3]).map(|_| ()),
        };
        if result == Err(TryReadError::Empty) && i >= 6 {
            break;
        }
    }
    r.release();
    let _ = (r.lag(), r.backpressure_ratio(), r.should_throttle(), r.released(), r.writer_epoch());
    let _ = (r.frames(), r.overruns(), r.lost(), r.is_gating(), r.was_demoted());
}

fn exercise_ring(ring: &Ring, opts: &ReaderOptions) {
    let _ = ring.stats();
    if let Ok(mut w) = ring.writer() {
        for payload in [&b"fuzz"[..], &[0xA5; 48][..]] {
            let _ = w.try_publish(payload);
        }
        if let Ok(mut claim) = w.try_claim(2) {
            let _ = claim.push(b"batch");
            claim.commit();
        }
        if let Ok(mut r) = ring.reader(opts) {
            read_some(&mut r);
        }
    }
    let _ = ring.sweep();
}

fn exercise_view(view: &RingView, force: bool) {
    let _ = (view.stats(), view.lags(), view.sweep());
    for i in 0..=view.geometry().max_readers.min(4) as usize {
        let _ = view.evict(i, force);
    }
}

/// The two files' bytes from the input, fixed and sized as the
/// flags say.
fn regions(flags: u8, rest: &[u8], n: usize) -> (Vec<u8>, Vec<u8>) {
    let (data, readers) = rest.split_at(n.min(rest.len()));
    let (mut data, mut readers) = (data.to_vec(), readers.to_vec());
    if flags & FIX_DATA != 0 {
        fix_data(&mut data);
    }
    if flags & FIX_READERS != 0 {
        fix_readers(&mut readers, &data);
    }
    size_from_header(&mut data, offset_of!(RingHeader, file_size));
    size_from_header(&mut readers, offset_of!(ReadersHeader, file_size));
    (data, readers)
}

fn reader_options(flags: u8, input: &[u8]) -> ReaderOptions {
    let start = match (flags >> 5) & 3 {
        0 => Start::Newest,
        1 => Start::Oldest,
        _ => Start::At(input.len().checked_sub(8).map_or(1, |at| get_u64(input, at))),
    };
    ReaderOptions { gating: flags & GATING != 0, start, ..ReaderOptions::named("fuzz") }
}

/// Helixd, a reader and helixctl at once. The same files attach every way
/// or none (a reader may also find the table full of live readers, be
/// evicted joining, refuse a `published` the slots do not bear out, or a
/// start past MAX_SEQ).
fn attach_all(ns: &Namespace, opts: &ReaderOptions) {
    let ring = Ring::open(ns, RING);
    let reader = Reader::attach(ns, RING, opts);
    let view = RingView::attach(ns, RING);
    let reader_ok = matches!(reader, Ok(_) | Err(AttachError::ReaderTableFull { .. } | AttachError::Evicted { .. }));
    // A reader also refuses a `published` the slots do not bear out (it
    // would follow it), where the owner and a view take the header as it
    // is, and a start past MAX_SEQ.
    let untrusted =
        matches!(reader, Err(AttachError::BadField { field: "published", .. } | AttachError::StartPastMax { .. }));
    assert!(
        ring.is_ok() == view.is_ok() && (ring.is_ok() == reader_ok || (ring.is_ok() && untrusted)),
        "the same files attach one way and not another: {:?} / {:?} / {:?}",
        ring.as_ref().err(),
        reader.as_ref().err(),
        view.as_ref().err()
    );
    if let (Ok(ring), Ok(mut reader), Ok(view)) = (ring, reader, view) {
        exercise_ring(&ring, opts);
        read_some(&mut reader);
        exercise_view(&view, true);
    }
}

fuzz_target!(|input: &[u8]| {
    let [flags, n0, n1, rest @ ..] = input else { return };
    let (data, readers) = regions(*flags, rest, usize::from(u16::from_le_bytes([*n0, *n1])));
    let opts = reader_options(*flags, input);

    let f = files();
    let _ = Ring::unlink(&f.ns, RING);
    write(&f.data, &data, 0o640);
    write(&f.readers, &readers, 0o660);
    match (flags >> 2) & 3 {
        0 => {
            if let Ok(ring) = Ring::open(&f.ns, RING) {
                exercise_ring(&ring, &opts);
            }
        }
        1 => {
            if let Ok(mut r) = Reader::attach(&f.ns, RING, &opts) {
                read_some(&mut r);
            }
        }
        2 => {
            if let Ok(view) = RingView::attach(&f.ns, RING) {
                exercise_view(&view, flags & GATING != 0);
            }
        }
        _ => attach_all(&f.ns, &opts),
    }
    let _ = Ring::unlink(&f.ns, RING);
});
