//! Reading a ledger (`helix::ledger`): the fuzzer's bytes become one or
//! more segment files in a private folder, then `verify`, `walk`, `head`
//! and `Ledger::open` (recovery) run on it. Each returns a verdict or an
//! error and never panics or hangs; and a ledger that verifies can be
//! opened, appended to and still verifies.
//!
//! Input: a flags byte, then the segments' bytes, split before every
//! `HELIXLDG` (at most eight files, `seg-0000000001.hxl` on). Blake3 is
//! out of a fuzzer's reach, so flags can make the harness re-hash what it
//! wrote, letting the mutations reach the record rules behind the hashes:
//!
//! - `FIX_RECORDS`: every block (version-1 record, in a segment of
//!   version 1) the framing finds gets its correct chain hash (the chain
//!   running across the segments);
//! - `FIX_HEADERS`: every segment header is re-encoded with its number,
//!   the records and blocks before it and the hash it continues from (and
//!   so with the right magic and checksum, and version 1 if its version
//!   byte says 1, else the current version).
#![no_main]

use std::fs;

use helix::ledger::block::split;
use helix::ledger::format::{
    chain, segment_name, Hash, RingDecl, SegmentHeader, GENESIS, HASH_LEN, MAGIC, SEGMENT_HEADER_LEN, VERSION,
    VERSION_1,
};
use helix::ledger::{head, verify, walk, Ledger};
use libfuzzer_sys::fuzz_target;

#[path = "common/scratch.rs"]
mod scratch;
use scratch::dir;

const FIX_RECORDS: u8 = 1;
const FIX_HEADERS: u8 = 2;
/// Segments past this many are left in the last one.
const MAX_SEGMENTS: usize = 8;

/// Splits `body` before each segment magic after the first byte.
fn split_segments(body: &[u8]) -> Vec<Vec<u8>> {
    let mut starts = vec![0];
    let mut at = 1;
    while starts.len() < MAX_SEGMENTS && at + MAGIC.len() <= body.len() {
        if body[at..at + MAGIC.len()] == MAGIC {
            starts.push(at);
            at += MAGIC.len();
        } else {
            at += 1;
        }
    }
    starts.push(body.len());
    starts.windows(2).map(|w| body[w[0]..w[1]].to_vec()).collect()
}

/// Re-hashes as the flags say, carrying the chain across segments.
fn fix(segments: &mut [Vec<u8>], flags: u8) {
    let (mut hash, mut records, mut blocks): (Hash, u64, u64) = (GENESIS, 0, 0);
    for (i, seg) in segments.iter_mut().enumerate() {
        if flags & FIX_HEADERS != 0 {
            if seg.len() < SEGMENT_HEADER_LEN {
                seg.resize(SEGMENT_HEADER_LEN, 0);
            }
            let created_ns = u64::from_le_bytes(seg[32..40].try_into().unwrap());
            let header = SegmentHeader {
                version: if seg[8] == VERSION_1 as u8 { VERSION_1 } else { VERSION },
                ..SegmentHeader::new(i as u64 + 1, records, blocks, created_ns, hash)
            };
            seg[..SEGMENT_HEADER_LEN].copy_from_slice(&header.encode());
        }
        if seg.len() < SEGMENT_HEADER_LEN {
            continue;
        }
        let version = u32::from_le_bytes(seg[8..12].try_into().unwrap());
        let mut at = SEGMENT_HEADER_LEN;
        while let Ok(block) = split(version, &seg[at..]) {
            let len = block.header.len as usize;
            let count = u64::from(block.header.count);
            if flags & FIX_RECORDS != 0 {
                hash = chain(&hash, block.bytes);
                seg[at + len - HASH_LEN..at + len].copy_from_slice(&hash);
            } else {
                hash = block.hash.try_into().unwrap();
            }
            records += count;
            blocks += 1;
            at += len;
        }
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&flags, body)) = input.split_first() else { return };
    let mut segments = split_segments(body);
    fix(&mut segments, flags);

    let dir = dir();
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir).unwrap();
    for (i, seg) in segments.iter().enumerate() {
        fs::write(dir.join(segment_name(i as u64 + 1)), seg).unwrap();
    }

    let verdict = verify(dir).expect("the folder is readable");
    let mut visited = 0u64;
    let walked = walk(dir, |r| {
        visited += 1;
        assert!(r.offset >= SEGMENT_HEADER_LEN as u64 && (1..=MAX_SEGMENTS as u64).contains(&r.segment));
        let _ = (r.ring.len(), r.record.payload.len(), r.hash.map(<[u8]>::len));
    })
    .expect("the folder is readable");
    assert_eq!(walked, verdict, "walk and verify disagree");
    if let Ok(summary) = &verdict {
        assert_eq!(summary.records, visited, "verify counted records walk did not visit");
        assert!(summary.blocks <= summary.records, "more blocks than records");
    }
    let head = head(dir).expect("the folder is readable");
    if let (Ok(summary), Ok(head)) = (&verdict, &head) {
        assert_eq!(
            (head.hash, head.records, head.blocks),
            (summary.hash, summary.records, summary.blocks),
            "head disagrees with verify"
        );
    }

    // Recovery: open cuts a torn tail or refuses; a ledger that verified
    // opens, takes one more record and still verifies.
    let opened = Ledger::open(dir, 4096);
    if let Ok(summary) = &verdict {
        let (mut ledger, _) = match opened {
            Ok(l) => l,
            Err(e) => panic!("a ledger that verifies does not open: {e}"),
        };
        let decl = RingDecl { created_ns: 1, capacity: 2, max_payload: 8, policy: 0, name: "fuzz".into() };
        let Ok((id, seq)) = ledger.declare(&decl) else { return };
        if seq == u64::MAX {
            // The ledger may expect it (a RING record says so), but no record
            // can cover it: the recorder would wait for it forever.
            return;
        }
        ledger.reserve_frame(id, seq, 1, 0, 0, 8).copy_from_slice(b"appended");
        let two = seq < u64::MAX - 1;
        if two {
            ledger.reserve_frame(id, seq + 1, 1, 0, 0, 3).copy_from_slice(b"two");
        }
        ledger.seal(id, 1 + usize::from(two));
        ledger.flush().unwrap();
        drop(ledger);
        let after = verify(dir).unwrap().unwrap_or_else(|f| panic!("appending broke a ledger that verified: {f}"));
        assert!(after.records > summary.records);
    }
});
