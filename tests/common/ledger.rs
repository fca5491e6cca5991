//! Ledger folders for tests: a small one written by the library, and one
//! rewritten as someone who can write the folder would.

use std::fs;
use std::path::Path;

use helix::ledger::block::{split, BlockHeader, BLOCK_HEADER_LEN};
use helix::ledger::format::*;
use helix::ledger::sign::Checkpoint;

/// What an attacker who can write the folder can do: rewrites every
/// segment through `edit` (given each block's index in the original
/// ledger and its bytes without the hash; false drops the block) and
/// recomputes every hash, every header, and the chain fields of every
/// checkpoint (but cannot sign them).
pub fn rewrite(dir: &Path, mut edit: impl FnMut(u64, &mut Vec<u8>) -> bool) {
    let (mut hash, mut records, mut blocks, mut original) = (GENESIS, 0u64, 0u64, 0u64);
    for n in 1.. {
        let path = dir.join(segment_name(n));
        let Ok(bytes) = fs::read(&path) else { break };
        let mut h = SegmentHeader::decode(&bytes).unwrap();
        (h.prev_hash, h.first_record, h.first_block) = (hash, records, blocks);
        let mut out = h.encode().to_vec();
        let mut at = SEGMENT_HEADER_LEN;
        while at < bytes.len() {
            let b = split(h.version, &bytes[at..]).unwrap();
            at += b.header.len as usize;
            let mut block = b.bytes.to_vec();
            original += 1;
            if !edit(original - 1, &mut block) {
                continue;
            }
            let header = BlockHeader::decode(&block);
            if header.rtype == RecordType::Checkpoint as u16 {
                let mut c = Checkpoint::decode(&block[BLOCK_HEADER_LEN..]).unwrap();
                (c.records, c.blocks, c.hash) = (records, blocks, hash);
                block[BLOCK_HEADER_LEN..].copy_from_slice(&c.encode());
            }
            hash = chain(&hash, &block);
            out.extend_from_slice(&block);
            out.extend_from_slice(&hash);
            records += u64::from(header.count);
            blocks += 1;
        }
        fs::write(&path, out).unwrap();
    }
}

/// A ledger in `dir` (segments of `segment_limit` bytes) that declares
/// ring `name` (8 slots of up to 40 bytes) and holds `frames` frames of 20
/// bytes, each a block of its own and frame `s` filled with the byte `s`.
pub fn small_ledger(dir: &Path, name: &str, frames: u64, segment_limit: u64) {
    let (mut l, _) = helix::ledger::Ledger::open(dir, segment_limit).unwrap();
    let decl = RingDecl { created_ns: 1, capacity: 8, max_payload: 40, policy: 1, name: name.into() };
    let (id, _) = l.declare(&decl).unwrap();
    for seq in 1..=frames {
        l.reserve_frame(id, seq, 1, 0, 1, 20).fill(seq as u8);
        l.seal(id, 1);
        l.flush().unwrap();
    }
}
