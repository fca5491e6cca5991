//! Rewriting a ledger folder as someone who can write it would.

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
