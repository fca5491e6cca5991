//! What the fuzz targets (`fuzz/`, run by `tools/fuzz`) found, one test
//! each.

use std::fs;
use std::path::Path;

use helix::ledger::format::{chain, segment_name, split_record, RingDecl, SegmentHeader, SEGMENT_HEADER_LEN};
use helix::ledger::{verify, Ledger, Problem, VerifyFailure};

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
