//! Ledger format version 2 through the library: records written in blocks
//! read back as a model says (proptest), every byte of a segment checked,
//! a torn tail cut at every point of the last block, and the version-1
//! fixture (`tests/fixtures/ledger-v1`, written by the v1 writer) read,
//! resumed and verified as a mixed folder.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{payload, payload_len};
use helix::ledger::block::split_block;
use helix::ledger::format::{
    segment_name, GapInfo, RecordType, RingDecl, SegmentHeader, GAP_OVERRUN, SEGMENT_HEADER_LEN, VERSION,
};
use helix::ledger::{head, verify, walk, Ledger, VerifyFailure};
use proptest::prelude::*;

fn decl(name: &str, created_ns: u64) -> RingDecl {
    RingDecl { created_ns, capacity: 1024, max_payload: 64, policy: 1, name: name.into() }
}

/// What the model expects of one record: (type, ring, seq, epoch, kind, payload).
type Expected = (RecordType, String, u64, u64, u32, Vec<u8>);

/// One step of a recorder.
#[derive(Debug, Clone)]
enum Op {
    /// A batch of frames of ring `ring` (0 or 1): their lengths; `keep`
    /// of them are confirmed intact (sealed), the rest dropped.
    Frames { ring: usize, lens: Vec<usize>, keep: usize },
    /// Sequences lost on ring `ring`.
    Gap { ring: usize, lost: u64 },
    /// Ring `ring` was created again.
    Incarnation { ring: usize },
    /// The buffer is written out.
    Flush,
    /// The recorder stops and another opens the folder.
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..2usize, prop::collection::vec(0..64usize, 1..40), 0..45usize)
            .prop_map(|(ring, lens, keep)| Op::Frames { keep: keep.min(lens.len()), ring, lens }),
        1 => (0..2usize, 1..1000u64).prop_map(|(ring, lost)| Op::Gap { ring, lost }),
        1 => (0..2usize).prop_map(|ring| Op::Incarnation { ring }),
        2 => Just(Op::Flush),
        1 => Just(Op::Reopen),
    ]
}

/// Runs `ops` against a ledger in `dir` (segments of `limit` bytes) and a
/// model of the records it must hold.
fn record(dir: &Path, limit: u64, ops: &[Op]) -> Vec<Expected> {
    let names = ["a", "b"];
    let mut created = [1u64, 1];
    let mut model = Vec::new();
    let (mut l, _) = Ledger::open(dir, limit).unwrap();
    let mut buf = [0u8; 64];
    for (step, op) in ops.iter().enumerate() {
        let epoch = step as u64;
        match op {
            Op::Frames { ring, lens, keep } => {
                let d = decl(names[*ring], created[*ring]);
                let (id, next) = l.declare(&d).unwrap();
                for (i, len) in lens.iter().enumerate() {
                    let seq = next + i as u64;
                    payload(seq, *len, &mut buf);
                    l.reserve_frame(id, seq, epoch, 0, seq as u32 % 3, *len).copy_from_slice(&buf[..*len]);
                }
                l.stamp_unsealed(7 + epoch);
                l.seal(id, *keep);
                for (i, len) in lens.iter().take(*keep).enumerate() {
                    let seq = next + i as u64;
                    payload(seq, *len, &mut buf);
                    let rec = (RecordType::Frame, d.name.clone(), seq, epoch, seq as u32 % 3, buf[..*len].to_vec());
                    model.push(rec);
                }
            }
            Op::Gap { ring, lost } => {
                let (id, next) = l.declare(&decl(names[*ring], created[*ring])).unwrap();
                l.append_gap(id, next, next + lost - 1, epoch);
                let info = GapInfo { last: next + lost - 1, reason: GAP_OVERRUN }.encode().to_vec();
                model.push((RecordType::Gap, names[*ring].into(), next, epoch, 0, info));
            }
            Op::Incarnation { ring } => created[*ring] += 1,
            Op::Flush => l.flush().unwrap(),
            Op::Reopen => {
                l.flush().unwrap();
                drop(l);
                l = Ledger::open(dir, limit).unwrap().0;
            }
        }
    }
    l.flush().unwrap();
    model
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Records go into blocks and come back as the model says, across
    /// segments and restarts; every block is a whole batch.
    #[test]
    fn records_written_in_blocks_read_back_as_the_model_says(
        ops in prop::collection::vec(op(), 1..40),
        limit in 600..6000u64,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let model = record(dir.path(), limit, &ops);
        let mut got = Vec::new();
        let mut blocks = Vec::new();
        let summary = walk(dir.path(), |at| {
            let h = &at.record.header;
            let rtype = RecordType::from_u16(h.rtype).unwrap();
            if at.hash.is_some() {
                blocks.push(at.block);
            }
            if rtype != RecordType::Ring {
                got.push((rtype, at.ring.to_owned(), h.seq, h.epoch, h.kind, at.record.payload.to_vec()));
            }
        })
        .unwrap()
        .unwrap();
        prop_assert_eq!(&got, &model);
        // Every block ended once, in order.
        prop_assert_eq!(blocks.len() as u64, summary.blocks);
        prop_assert!(blocks.iter().enumerate().all(|(i, b)| *b == i as u64));
        // Fewer blocks than records as soon as a batch held several frames.
        let batches = ops.iter().filter(|o| matches!(o, Op::Frames { keep, .. } if *keep > 1)).count();
        prop_assert!(batches == 0 || summary.blocks < summary.records);
        let h = head(dir.path()).unwrap().unwrap();
        prop_assert_eq!((h.hash, h.records, h.blocks), (summary.hash, summary.records, summary.blocks));
    }
}

/// A ledger of ring `t`, frames 1..=`n` in blocks of `per_block`, in one
/// segment unless `limit` is small.
fn blocks_ledger(dir: &Path, n: u64, per_block: u64, limit: u64) {
    let (mut l, _) = Ledger::open(dir, limit).unwrap();
    let (id, _) = l.declare(&decl("t", 1)).unwrap();
    let mut buf = [0u8; 64];
    for first in (1..=n).step_by(per_block as usize) {
        let last = (first + per_block - 1).min(n);
        for seq in first..=last {
            let len = payload_len(seq, 64);
            payload(seq, len, &mut buf);
            l.reserve_frame(id, seq, 1, seq, 1, len).copy_from_slice(&buf[..len]);
        }
        l.seal(id, (last - first + 1) as usize);
        l.flush().unwrap();
    }
}

/// Block starts in a segment file: (offset, length).
fn block_spans(path: &Path) -> Vec<(usize, usize)> {
    let bytes = fs::read(path).unwrap();
    let mut at = SEGMENT_HEADER_LEN;
    let mut spans = Vec::new();
    while at < bytes.len() {
        let len = split_block(&bytes[at..]).unwrap().header.len as usize;
        spans.push((at, len));
        at += len;
    }
    spans
}

/// A one-segment ledger of `blocks_ledger(n, per_block)` in `dir/pristine`:
/// the folder, its segment and the segment's bytes.
fn pristine_segment(dir: &Path, n: u64, per_block: u64) -> (PathBuf, PathBuf, Vec<u8>) {
    let pristine = dir.join("pristine");
    blocks_ledger(&pristine, n, per_block, 1 << 20);
    let path = pristine.join(segment_name(1));
    let bytes = fs::read(&path).unwrap();
    (pristine, path, bytes)
}

#[test]
fn a_flip_of_any_byte_of_a_segment_is_named_by_its_block_or_the_header() {
    let dir = tempfile::tempdir().unwrap();
    let (pristine, path, bytes) = pristine_segment(dir.path(), 40, 7);
    let spans = block_spans(&path);
    assert_eq!(spans.len(), 1 + 6, "a RING block and six FRAME blocks");
    let whole = verify(&pristine).unwrap().unwrap();
    let work = dir.path().join("work");
    fs::create_dir_all(&work).unwrap();
    let target = work.join(segment_name(1));
    for i in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[i] ^= 0x10;
        fs::write(&target, &bad).unwrap();
        let verdict = verify(&work).unwrap();
        if i < SEGMENT_HEADER_LEN {
            assert!(matches!(verdict, Err(VerifyFailure::Header { .. })), "byte {i}: {verdict:?}");
            continue;
        }
        let (b, (start, len)) = spans.iter().enumerate().find(|(_, s)| (s.0..s.0 + s.1).contains(&i)).unwrap();
        match verdict {
            Err(VerifyFailure::Record { bad, .. }) => {
                assert_eq!((bad.offset, bad.block), (*start as u64, b as u64), "byte {i}");
                // The records it covers: the RING block is record 0, then
                // frames 1..=40 (record index = sequence), 7 a block.
                let first = if b == 0 { 0 } else { 1 + 7 * (b as u64 - 1) };
                assert_eq!(bad.index, first, "byte {i}");
                if let Some(got) = bad.ring_seq.filter(|_| i >= start + 40) {
                    // With the header intact, the range is the block's (the
                    // RING block's ring is not declared yet: named by id).
                    let last = (first + 6).min(40);
                    let want =
                        if b == 0 { ("#0".into(), 1, 1, 1) } else { ("t".into(), first, last, last - first + 1) };
                    assert_eq!((got.0, got.1, got.2, bad.records), want, "byte {i}");
                }
            }
            // A flip in the last block that leaves it reaching the end of
            // the file (or pushes its length past it) reads as a torn tail,
            // as the recorder takes it when it starts: a crash's torn write
            // looks the same there. The blocks before it stand, and
            // anchoring the head is what detects a changed or cut end
            // (docs/ledger.md, Anchoring).
            Ok(s) if b + 1 == spans.len() => {
                assert_eq!((s.partial_tail, s.records), ((bytes.len() - start) as u64, whole.records - 5), "byte {i}");
            }
            other => panic!("byte {i} of block {b} (at {start}, {len} bytes): {other:?}"),
        }
    }
}

#[test]
fn a_torn_last_block_is_cut_at_every_point_and_recording_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let (pristine, path, bytes) = pristine_segment(dir.path(), 30, 10);
    let &(start, len) = block_spans(&path).last().unwrap();
    assert_eq!(start + len, bytes.len());
    let before = verify(&pristine).unwrap().unwrap();
    for cut in start + 1..start + len {
        let d = dir.path().join(format!("cut{cut}"));
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join(segment_name(1)), &bytes[..cut]).unwrap();
        // verify: the blocks before stand, the partial one is reported.
        let s = verify(&d).unwrap().unwrap();
        assert_eq!((s.records, s.partial_tail), (before.records - 10, (cut - start) as u64), "cut {cut}");
        // The recorder cuts it off and records frames 21.. again.
        let (mut l, rec) = Ledger::open(&d, 1 << 20).unwrap();
        let (_, offset, removed, _) = rec.truncated.expect("a torn tail cut off");
        assert_eq!((offset, removed), (start as u64, (cut - start) as u64), "cut {cut}");
        let (id, next) = l.declare(&decl("t", 1)).unwrap();
        assert_eq!(next, 21);
        for seq in 21..=30 {
            l.reserve_frame(id, seq, 1, 0, 1, 3).copy_from_slice(b"new");
        }
        l.seal(id, 10);
        l.flush().unwrap();
        drop(l);
        let s = verify(&d).unwrap().unwrap();
        assert_eq!((s.records, s.partial_tail, s.rings[0].next_seq), (before.records, 0, 31), "cut {cut}");
        fs::remove_dir_all(&d).unwrap();
    }
}

#[test]
fn verify_fails_a_tail_exactly_when_the_recorder_would_refuse_it() {
    let dir = tempfile::tempdir().unwrap();
    let (pristine, path, bytes) = pristine_segment(dir.path(), 30, 10);
    let &(start, len) = block_spans(&path).last().unwrap();
    let (prev, _) = block_spans(&path)[block_spans(&path).len() - 2];
    let before = verify(&pristine).unwrap().unwrap();
    let flipped = |at: usize| {
        let mut b = bytes.clone();
        b[at] ^= 0x10;
        b
    };
    // (case, the segment, the torn bytes the recorder cuts; None: it refuses)
    let cases: Vec<(&str, Vec<u8>, Option<usize>)> = vec![
        ("a flip in the last block's body", flipped(start + len / 2), Some(len)),
        ("a flip in the last block's hash", flipped(start + len - 3), Some(len)),
        ("zeros after the last block", [bytes.clone(), vec![0; 100]].concat(), Some(100)),
        ("a flip in the block before the last", flipped(prev + 50), None),
        ("garbage after the last block", [bytes.clone(), vec![0xAB; 100]].concat(), None),
    ];
    for (case, segment, torn) in cases {
        let d = dir.path().join(case.replace(' ', "_"));
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join(segment_name(1)), &segment).unwrap();
        let verdict = verify(&d).unwrap();
        let opened = Ledger::open(&d, 1 << 20);
        match torn {
            Some(torn) => {
                let s = verdict.unwrap_or_else(|f| panic!("{case}: verify failed: {f}"));
                assert_eq!(s.partial_tail, torn as u64, "{case}");
                let (_, rec) = opened.unwrap_or_else(|e| panic!("{case}: the recorder refused: {e}"));
                let (_, _, removed, _) = rec.truncated.expect("a torn tail cut off");
                assert_eq!(removed, torn as u64, "{case}");
                let s = verify(&d).unwrap().unwrap();
                assert_eq!(s.partial_tail, 0, "{case}");
                let kept = if torn == len { before.records - 10 } else { before.records };
                assert_eq!(s.records, kept, "{case}");
            }
            None => {
                assert!(verdict.is_err(), "{case}: verify passed it: {verdict:?}");
                assert!(opened.is_err(), "{case}: the recorder resumed it");
                assert_eq!(fs::read(d.join(segment_name(1))).unwrap(), segment, "{case}: cut");
            }
        }
    }
}

/// A copy of the version-1 fixture in a scratch folder.
fn v1_fixture(into: &Path) -> PathBuf {
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ledger-v1");
    let to = into.join("v1");
    fs::create_dir_all(&to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
    to
}

#[test]
fn a_version_1_folder_verifies_and_resumes_in_a_version_2_segment() {
    let dir = tempfile::tempdir().unwrap();
    let d = v1_fixture(dir.path());
    // As the v1 verifier reported it when the fixture was written.
    let v1 = verify(&d).unwrap().unwrap();
    assert_eq!((v1.segments, v1.records, v1.blocks), (5, 470, 470));
    assert_eq!(
        helix::ledger::format::hex(&v1.hash),
        "a4e3e79d6b385d38da8c2b5ace8b8a99d6f0cd2db716a6346a0b6c6e05216bab"
    );
    let rings: Vec<_> = v1.rings.iter().map(|r| (r.decl.name.as_str(), r.frames, r.gaps, r.lost, r.next_seq)).collect();
    assert_eq!(rings, [("t", 440, 1, 10, 451), ("u", 20, 0, 0, 21)]);
    let mut frames = 0;
    walk(&d, |at| {
        let h = &at.record.header;
        if h.rtype == RecordType::Frame as u16 && at.ring == "t" {
            let mut buf = [0u8; 64];
            let len = payload_len(h.seq, 64);
            payload(h.seq, len, &mut buf);
            assert_eq!((at.record.payload, h.recv_ns), (&buf[..len], h.seq * 1000));
            assert!(at.hash.is_some(), "every version-1 record has its hash");
            frames += 1;
        }
    })
    .unwrap()
    .unwrap();
    assert_eq!(frames, 440);
    let last_v1 = fs::read(d.join(segment_name(5))).unwrap();

    // Resume: segment 5 stays as it is; segment 6, of version 2, continues.
    let (mut l, rec) = Ledger::open(&d, 1 << 20).unwrap();
    assert_eq!((rec.records, rec.segment, rec.upgraded, rec.truncated), (470, 6, Some(6), None));
    let (id, next) = l.declare(&decl("t", 1)).unwrap();
    assert_eq!((id, next), (0, 451));
    for seq in 451..461 {
        l.reserve_frame(id, seq, 2, 0, 1, 4).copy_from_slice(b"v2v2");
    }
    l.seal(id, 10);
    l.flush().unwrap();
    drop(l);
    assert_eq!(fs::read(d.join(segment_name(5))).unwrap(), last_v1, "the version-1 segment is untouched");
    let h6 = SegmentHeader::decode(&fs::read(d.join(segment_name(6))).unwrap()).unwrap();
    assert_eq!((h6.version, h6.first_record, h6.first_block, h6.prev_hash), (VERSION, 470, 470, v1.hash));
    // The mixed folder verifies: v1 records then v2 blocks, one chain.
    let mixed = verify(&d).unwrap().unwrap();
    // Two RING restatements and a block of ten frames.
    assert_eq!((mixed.segments, mixed.records, mixed.blocks), (6, 482, 473));
    assert_eq!((mixed.rings[0].frames, mixed.rings[0].next_seq), (450, 461));
    let h = head(&d).unwrap().unwrap();
    assert_eq!((h.hash, h.records, h.blocks), (mixed.hash, 482, 473));
    // And it resumes again in its version-2 segment.
    let (_, rec) = Ledger::open(&d, 1 << 20).unwrap();
    assert_eq!((rec.segment, rec.upgraded), (6, None));

    // A torn version-1 tail is cut before the new segment starts.
    let d2 = dir.path().join("torn");
    fs::create_dir_all(&d2).unwrap();
    for n in 1..=5 {
        fs::copy(v1_fixture(&dir.path().join("again")).join(segment_name(n)), d2.join(segment_name(n))).unwrap();
    }
    let mut torn = last_v1.clone();
    torn.extend_from_slice(&last_v1[SEGMENT_HEADER_LEN..SEGMENT_HEADER_LEN + 50]);
    fs::write(d2.join(segment_name(5)), &torn).unwrap();
    let (l, rec) = Ledger::open(&d2, 1 << 20).unwrap();
    assert_eq!(rec.truncated.map(|t| (t.1, t.2)), Some((last_v1.len() as u64, 50)));
    // The new segment restates rings t and u.
    assert_eq!((rec.upgraded, l.chain().records), (Some(6), 472));
    drop(l);
    assert_eq!(verify(&d2).unwrap().unwrap().records, 472);
}
