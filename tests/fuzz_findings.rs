//! What the fuzz targets (`fuzz/`, run by `tools/fuzz`) found, one
//! regression test each.

mod common;

use std::fs::{self, OpenOptions};
use std::mem::offset_of;
use std::os::unix::fs::FileExt;
use std::path::Path;

use common::TestNs;
use helix::layout::RingHeader;
use helix::ledger::block::split_block;
use helix::ledger::format::{chain, segment_name, RingDecl, SegmentHeader, SEGMENT_HEADER_LEN};
use helix::ledger::{verify, Ledger, LedgerError, Problem, VerifyFailure};
use helix::*;

/// Rewrites segment `n` of `dir` without its block at `index` (counted
/// in the segment), re-hashing the blocks after it, so that the chain
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
        let block = split_block(&bytes[at..]).unwrap();
        if i != index {
            hash = chain(&hash, block.bytes);
            out.extend_from_slice(block.bytes);
            out.extend_from_slice(&hash);
        }
        at += block.header.len as usize;
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
    // Nor does the recorder take frame 3, whole and hashed, for a torn
    // tail and cut it off (it did, and resumed a ledger `verify` fails).
    match Ledger::open(dir.path(), 350) {
        Err(LedgerError::Corrupt { path, bad, .. }) => {
            assert_eq!((path, bad.offset), (dir.path().join(segment_name(2)), SEGMENT_HEADER_LEN as u64))
        }
        Err(e) => panic!("refused for another reason: {e}"),
        Ok((_, rec)) => panic!("the recorder resumed a ledger that does not verify: {:?}", rec.truncated),
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

/// Fuzz target `ring_attach`: a header whose `published` is `u64::MAX`
/// passed attach, and `published + 1` then overflowed in `Reader::new`,
/// `Reader::lag`, `Writer::new`, `stats` and `RingView::lags`: a debug
/// build panicked; a release build wrapped, and a new reader was handed a
/// "frame" of sequence 0 that was never published. Now `published` past
/// `MAX_SEQ` is refused by every attach, naming the field.
#[test]
fn a_published_count_of_u64_max_neither_panics_nor_delivers_a_frame_never_published() {
    let ns = TestNs::new();
    let ring = small_ring(&ns);
    patch_u64(&ns, offset_of!(RingHeader, published), u64::MAX);
    let named = |e: AttachError| matches!(e, AttachError::BadField { field: "published", .. });
    assert!(RingView::attach(&ns, "r").map(|_| ()).is_err_and(named));
    for start in [Start::Newest, Start::Oldest] {
        let opts = ReaderOptions { start, ..ReaderOptions::named("t") };
        assert!(Reader::attach(&ns, "r", &opts).map(|_| ()).is_err_and(named));
    }
    assert!(ring.writer().is_err(), "a writer continued from a published count past MAX_SEQ");
}

/// Fuzz target `ring_attach`: a header whose `bytes_published` is near
/// `u64::MAX` made the writer's byte count overflow: a panic in a debug
/// build, and as the unwinding dropped the `Claim`, whose drop publishes
/// again, a second panic that aborted the process. The count (a
/// statistic) now wraps.
#[test]
fn a_bytes_published_count_near_u64_max_does_not_panic_the_writer() {
    let ns = TestNs::new();
    let ring = small_ring(&ns);
    patch_u64(&ns, offset_of!(RingHeader, bytes_published), u64::MAX - 1);
    let mut w = ring.writer().unwrap();
    w.try_publish(b"four").unwrap();
    let _ = ring.stats();
}

/// Fuzz target `ring_attach`: a reader started `At` a sequence with bit 63
/// set (the stamp's WRITING mark: `helixctl tail --from-seq`, or a corrupt
/// ledger's next sequence) had a cursor equal to the stamp of a slot being
/// written, and was handed that frame before it was committed: a torn
/// read. A start past `MAX_SEQ` is now refused.
#[test]
fn a_reader_started_at_a_sequence_with_the_writing_bit_never_sees_an_uncommitted_frame() {
    let ns = TestNs::new();
    let ring = small_ring(&ns);
    let mut w = ring.writer().unwrap();
    let mut claim = w.try_claim(1).unwrap();
    let seq = claim.push(b"not yet").unwrap();
    let at = seq | helix::layout::STAMP_WRITING;
    let opts = ReaderOptions { start: Start::At(at), ..ReaderOptions::named("t") };
    match Reader::attach(&ns, "r", &opts) {
        Err(AttachError::StartPastMax { seq }) => assert_eq!(seq, at),
        Err(e) => panic!("refused for another reason: {e}"),
        Ok(mut r) => {
            let mut buf = [0u8; 64];
            let read = r.try_read(&mut buf);
            panic!("a start past MAX_SEQ was accepted (then read {read:?})");
        }
    }
    claim.commit();
}
