//! What the fuzz targets (`fuzz/`, run by `tools/fuzz`) found, one test
//! each. A fixed finding is a regression test; a finding in code its owner
//! has still to fix is an ignored test that reproduces it, and its fuzz
//! target masks it until then (see `mask_reported` in
//! `fuzz/fuzz_targets/ring_attach.rs`).

mod common;

use std::fs::{self, OpenOptions};
use std::mem::offset_of;
use std::os::unix::fs::FileExt;
use std::path::Path;

use common::TestNs;
use helix::layout::RingHeader;
use helix::ledger::format::{chain, segment_name, split_record, RingDecl, SegmentHeader, SEGMENT_HEADER_LEN};
use helix::ledger::{verify, Ledger, Problem, VerifyFailure};
use helix::*;

/// Rewrites segment `n` of `dir` without its record at `index` (counted
/// in the segment), re-hashing the records after it, so that the chain
/// stays intact and only the ledger's rules can object.
fn drop_record(dir: &Path, n: u64, index: usize) {
    let path = dir.join(segment_name(n));
    let bytes = fs::read(&path).unwrap();
    let header = SegmentHeader::decode(&bytes).unwrap();
    let mut out = bytes[..SEGMENT_HEADER_LEN].to_vec();
    let mut hash = header.prev_hash;
    let mut at = SEGMENT_HEADER_LEN;
    let mut i = 0;
    while at < bytes.len() {
        let rec = split_record(&bytes[at..]).unwrap();
        if i != index {
            hash = chain(&hash, rec.body);
            out.extend_from_slice(rec.body);
            out.extend_from_slice(&hash);
        }
        at += rec.header.len as usize;
        i += 1;
    }
    fs::write(&path, out).unwrap();
}

/// Fuzz target `ledger`: a second segment that does not begin by restating
/// the rings declared before it verified, yet the recorder, which resumes
/// from the last segment alone, then appended records that broke the
/// ledger. `verify` now holds every segment to rule 3 of docs/ledger.md.
#[test]
fn a_segment_that_does_not_restate_every_ring_declared_before_it_does_not_verify() {
    let dir = tempfile::tempdir().unwrap();
    let decl = RingDecl { created_ns: 7, capacity: 8, max_payload: 8, policy: 1, name: "telemetry".into() };
    // Segment 1: RING, frames 1 and 2 (393 bytes: past the limit, so the
    // ledger moves on); segment 2: the RING record restating the ring,
    // frame 3 (313 bytes).
    let (mut l, _) = Ledger::open(dir.path(), 350).unwrap();
    let (id, _) = l.declare(&decl).unwrap();
    for seq in 1..=3 {
        l.reserve_frame(id, seq, 1, 0, 1, 8).copy_from_slice(b"12345678");
        l.seal(id, 1);
        if seq != 1 {
            l.flush().unwrap();
        }
    }
    drop(l);
    assert_eq!(verify(dir.path()).unwrap().map(|s| (s.segments, s.records)), Ok((2, 5)));

    // Without the RING record, frame 3 stands where it must be.
    drop_record(dir.path(), 2, 0);
    match verify(dir.path()).unwrap() {
        Err(VerifyFailure::Record { path, bad }) => {
            assert_eq!(path, dir.path().join(segment_name(2)));
            assert_eq!((bad.offset, bad.index), (SEGMENT_HEADER_LEN as u64, 3));
            assert!(
                matches!(&bad.problem, Problem::Invalid(m) if m.contains("must restate ring telemetry (id 0)")),
                "{:?}",
                bad.problem
            );
        }
        other => panic!("a segment without its declarations verified: {other:?}"),
    }
    // A segment that ends before its declarations is named at its end.
    drop_record(dir.path(), 2, 0);
    match verify(dir.path()).unwrap() {
        Err(VerifyFailure::Record { bad, .. }) => {
            assert_eq!((bad.offset, bad.index), (SEGMENT_HEADER_LEN as u64, 3));
            assert!(bad.problem.to_string().contains("ends before it restates ring telemetry"), "{}", bad.problem);
        }
        other => panic!("a segment without its declarations verified: {other:?}"),
    }
}

/// Sets the data header's `published` (or another u64 field) of ring `r`.
fn patch_u64(ns: &TestNs, offset: usize, value: u64) {
    let f = OpenOptions::new().write(true).open(ns.data_path("r")).unwrap();
    f.write_all_at(&value.to_ne_bytes(), offset as u64).unwrap();
}

fn small_ring(ns: &TestNs) -> Ring {
    Ring::create(ns, "r", &RingOptions { capacity: 8, max_readers: 4, ..Default::default() }).unwrap()
}

/// Fuzz target `ring_attach`, reported to the owner of
/// `src/ring/{mod,reader,writer}.rs`: a header whose `published` is
/// `u64::MAX` passes attach, and `published + 1` then overflows in
/// `Reader::new` (reader.rs, `start_at`), `Reader::lag`, `Writer::new`
/// (writer.rs, `next`), `stats` (mod.rs, a reader's lag) and
/// `RingView::lags`. A debug build panics; a release build wraps, and a
/// new reader's cursor becomes 0: it is handed a "frame" of sequence 0
/// that was never published. Run with
/// `cargo test --test fuzz_findings -- --ignored` (debug: the panics) or
/// with `--release` (the phantom frame).
#[test]
#[ignore = "reported to the owner of src/ring/{mod,reader,writer}.rs; un-ignore with the fix"]
fn a_published_count_of_u64_max_neither_panics_nor_delivers_a_frame_never_published() {
    let ns = TestNs::new();
    let ring = small_ring(&ns);
    patch_u64(&ns, offset_of!(RingHeader, published), u64::MAX);
    let view = RingView::attach(&ns, "r").unwrap();
    let _ = view.lags();
    let mut buf = [0u8; 64];
    for start in [Start::Newest, Start::Oldest] {
        let opts = ReaderOptions { start, ..ReaderOptions::named("t") };
        if let Ok(mut r) = Reader::attach(&ns, "r", &opts) {
            let _ = (r.lag(), ring.stats(), view.lags());
            if let Ok(info) = r.try_read(&mut buf) {
                panic!("nothing was ever published, yet the reader got {info:?}");
            }
        }
    }
    if let Ok(mut w) = ring.writer() {
        let _ = w.try_publish(b"x");
    }
}

/// Fuzz target `ring_attach`, reported to the owner of
/// `src/ring/writer.rs`: a header whose `bytes_published` is near
/// `u64::MAX` makes the writer's `self.bytes += bytes` (writer.rs,
/// `finish`) overflow: a panic in a debug build (wrapping in release),
/// and as the unwinding drops the `Claim`, whose drop publishes again, a
/// second panic that aborts the process. Run with
/// `cargo test --test fuzz_findings a_bytes -- --ignored`.
#[test]
#[ignore = "reported to the owner of src/ring/writer.rs; un-ignore with the fix"]
fn a_bytes_published_count_near_u64_max_does_not_panic_the_writer() {
    let ns = TestNs::new();
    let ring = small_ring(&ns);
    patch_u64(&ns, offset_of!(RingHeader, bytes_published), u64::MAX - 1);
    let mut w = ring.writer().unwrap();
    w.try_publish(b"four").unwrap();
    let _ = ring.stats();
}

/// Fuzz target `ring_attach`, reported to the owner of
/// `src/ring/reader.rs`: a reader started `At` a sequence with bit 63 set
/// (the stamp's WRITING mark: `helixctl tail --from-seq`, or a corrupt
/// ledger's next sequence) has a cursor equal to the stamp of a slot being
/// written, and is handed that frame before it is committed: a torn read.
/// At `u64::MAX` the cursor's `seq + 1` also overflows (frame.rs, `Frame`'s
/// drop; a panic in a debug build). Run with
/// `cargo test --release --test fuzz_findings -- --ignored`.
#[test]
#[ignore = "reported to the owner of src/ring/reader.rs; un-ignore with the fix"]
fn a_reader_started_at_a_sequence_with_the_writing_bit_never_sees_an_uncommitted_frame() {
    let ns = TestNs::new();
    let ring = small_ring(&ns);
    let mut w = ring.writer().unwrap();
    let mut claim = w.try_claim(1).unwrap();
    let seq = claim.push(b"not yet").unwrap();
    let opts = ReaderOptions { start: Start::At(seq | helix::layout::STAMP_WRITING), ..ReaderOptions::named("t") };
    let mut buf = [0u8; 64];
    if let Ok(mut r) = Reader::attach(&ns, "r", &opts) {
        if let Ok(info) = r.try_read(&mut buf) {
            panic!("read a frame its writer had not committed: {info:?}");
        }
    }
    claim.commit();
}
