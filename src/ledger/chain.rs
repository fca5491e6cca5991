//! Reading a ledger back: the chain state a sequence of blocks leads to,
//! and the checks every block and record must pass (shared by the
//! recorder, restart, `verify`, `head` and `export`).

use std::fmt;

use super::block::*;
use super::format::*;
use super::sign::Checkpoint;

/// What the ledger knows of one ring id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingState {
    /// Its declaration (name and incarnation).
    pub decl: RingDecl,
    /// The next sequence the ledger expects from it.
    pub next_seq: u64,
    /// FRAME records of this ring.
    pub frames: u64,
    /// GAP records of this ring.
    pub gaps: u64,
    /// Sequences the GAP records cover (saturating at `u64::MAX`).
    pub lost: u64,
}

/// The state of the chain after some blocks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chain {
    /// The last block's chain hash.
    pub hash: Hash,
    /// Records so far (the next record's index).
    pub records: u64,
    /// Blocks so far (the next block's index; a version-1 record is a
    /// block of one).
    pub blocks: u64,
    /// Declared rings, by id.
    pub rings: Vec<RingState>,
    /// Ids of the rings a new segment has still to restate, in order,
    /// before any other record (see [`Chain::begin_segment`]).
    pub(super) restating: std::ops::Range<usize>,
}

/// Why a block is bad.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The bytes are not a whole block (or version-1 record).
    Torn(Torn),
    /// The stored chain hash is not Blake3(previous hash || block).
    Hash,
    /// A whole block with a correct hash that breaks the ledger's rules
    /// (unknown type, undeclared ring, a sequence out of order, frames
    /// that do not fill its body).
    Invalid(String),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Torn(t) => t.fmt(f),
            Problem::Hash => write!(f, "chain hash mismatch"),
            Problem::Invalid(m) => f.write_str(m),
        }
    }
}

/// A bad block (in version 1, a bad record): where it starts in its
/// segment, the records it covers and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRecord {
    /// Byte offset in the segment file.
    pub offset: u64,
    /// The block's index in the whole ledger.
    pub block: u64,
    /// The index of its first record in the whole ledger.
    pub index: u64,
    /// How many records it covers, as its header says (1 when its header
    /// is unreadable).
    pub records: u64,
    /// Its ring and the first and last sequence it covers, when its header
    /// could be read.
    pub ring_seq: Option<(String, u64, u64)>,
    /// What is wrong.
    pub problem: Problem,
}

impl BadRecord {
    /// The index of the last record it covers (its counts come from a file:
    /// saturating, not overflowing, at the end of the range).
    pub fn last_record(&self) -> u64 {
        self.index.saturating_add(self.records.saturating_sub(1))
    }
}

impl Chain {
    /// The state before the first block of a segment that continues from
    /// `header`; ring declarations follow at the segment's start.
    pub fn at_segment(header: &SegmentHeader) -> Chain {
        Chain { hash: header.prev_hash, records: header.first_record, blocks: header.first_block, ..Chain::default() }
    }

    /// The records that follow begin a new segment of the same ledger:
    /// its first records must restate every ring declared so far, by id in
    /// order (docs/ledger.md, rule 3), as the recorder, which reads only
    /// the last segment when it starts, relies on.
    pub fn begin_segment(&mut self) {
        self.restating = 0..self.rings.len();
    }

    /// Rings a new segment has not restated yet.
    pub fn unrestated(&self) -> usize {
        self.restating.len()
    }

    /// The id of ring `name`, if declared.
    pub fn ring_id(&self, name: &str) -> Option<u16> {
        self.rings.iter().position(|r| r.decl.name == name).map(|i| i as u16)
    }

    /// The name of ring id `id` (or a placeholder naming the id).
    pub fn ring_name(&self, id: u16) -> String {
        self.rings.get(id as usize).map_or_else(|| format!("#{id}"), |r| r.decl.name.clone())
    }

    /// Checks a version-1 record's hash and rules and advances past it.
    pub fn apply(&mut self, rec: &RecordView<'_>) -> Result<(), Problem> {
        self.apply_block(&BlockView::from_v1(*rec))
    }

    /// Checks `block`'s hash (one Blake3 input: the previous hash and the
    /// block) and rules, and advances the state past it.
    pub fn apply_block(&mut self, block: &BlockView<'_>) -> Result<(), Problem> {
        self.apply_in(VERSION, block)
    }

    /// [`Chain::apply_block`] for a block of a segment of format `version`:
    /// a CHECKPOINT is a block of the current format only. The hash is
    /// compared first, before every rule: a [`Problem::Invalid`] block was
    /// written whole (a torn write is a [`Problem::Hash`]).
    pub fn apply_in(&mut self, version: u32, block: &BlockView<'_>) -> Result<(), Problem> {
        if chain(&self.hash, block.bytes) != block.hash {
            return Err(Problem::Hash);
        }
        if version < VERSION && block.rtype() == Some(RecordType::Checkpoint) {
            return Err(Problem::Invalid(format!("a CHECKPOINT in a segment of format version {version}")));
        }
        self.accept_block(block)
    }

    /// Advances past `block`, whose hash the caller computed itself, if it
    /// keeps the ledger's rules.
    pub fn accept_block(&mut self, block: &BlockView<'_>) -> Result<(), Problem> {
        // A count a header set near u64::MAX (a folder someone wrote) is a
        // broken rule, not an overflow; judged before `check`, which
        // changes the rings' state: a block refused changes nothing.
        let records = self.records.checked_add(u64::from(block.header.count));
        let (Some(records), Some(blocks)) = (records, self.blocks.checked_add(1)) else {
            return Err(Problem::Invalid(format!("record count {} overflows", self.records)));
        };
        self.check(block).map_err(Problem::Invalid)?;
        self.hash = block.hash.try_into().unwrap();
        (self.records, self.blocks) = (records, blocks);
        Ok(())
    }

    /// A RING record's rules: a declaration of a new id, a restatement of a
    /// known one, or a new incarnation of a name.
    fn declare(&mut self, h: &BlockHeader, payload: &[u8]) -> Result<(), String> {
        let id = h.ring as usize;
        let decl = RingDecl::decode(payload).map_err(str::to_owned)?;
        if h.seq == 0 {
            return Err(format!("ring {} declared with next sequence 0", decl.name));
        }
        if let Some(other) = self.rings.iter().position(|r| r.decl.name == decl.name).filter(|&i| i != id) {
            return Err(format!("ring {} declared as id {id}, but it is id {other}", decl.name));
        }
        let count = self.rings.len();
        match self.rings.get_mut(id) {
            Some(r) if r.decl.name != decl.name => {
                return Err(format!("ring id {id} is {}, re-declared as {}", r.decl.name, decl.name))
            }
            Some(r) if r.decl.created_ns == decl.created_ns => {
                if h.seq != r.next_seq {
                    return Err(format!(
                        "ring {} re-declared at sequence {}, but the next sequence is {}",
                        decl.name, h.seq, r.next_seq
                    ));
                }
                r.decl = decl;
            }
            // A new incarnation of the name starts its own sequence.
            Some(r) => {
                r.decl = decl;
                r.next_seq = h.seq;
            }
            None if id == count => self.rings.push(RingState { decl, next_seq: h.seq, frames: 0, gaps: 0, lost: 0 }),
            None => return Err(format!("ring id {id} declared before id {count}")),
        }
        Ok(())
    }

    /// The ledger's rules; updates the ring states.
    fn check(&mut self, block: &BlockView<'_>) -> Result<(), String> {
        let h = &block.header;
        let rtype = RecordType::from_u16(h.rtype).ok_or_else(|| format!("unknown record type {}", h.rtype))?;
        if h.count == 0 {
            return Err(format!("a {} block with no record", rtype.as_str()));
        }
        // The body holds its count of records exactly.
        if let Some(Err(e)) = block.records().find(Result::is_err) {
            return Err(e);
        }
        let id = h.ring as usize;
        if let Some(want) = (!self.restating.is_empty()).then_some(self.restating.start) {
            if rtype != RecordType::Ring || id != want {
                return Err(format!(
                    "a {} record of ring id {id} where the segment must restate ring {} (id {want}) first",
                    rtype.as_str(),
                    self.rings[want].decl.name
                ));
            }
        }
        if rtype == RecordType::Checkpoint {
            return self.check_checkpoint(h, block.body);
        }
        if rtype == RecordType::Ring {
            self.declare(h, block.body)?;
            if !self.restating.is_empty() {
                self.restating.start += 1;
            }
            return Ok(());
        }
        let ring = self.rings.get_mut(id).ok_or_else(|| format!("record of undeclared ring id {id}"))?;
        if h.seq != ring.next_seq {
            let what = if h.seq < ring.next_seq { "repeats" } else { "skips to" };
            return Err(format!(
                "ring {} {what} sequence {}: the next sequence is {} (a {} record)",
                ring.decl.name,
                h.seq,
                ring.next_seq,
                rtype.as_str()
            ));
        }
        // The last sequence a block covers must have a successor: the next
        // sequence expected is kept as a u64.
        let endless = |last: u64| format!("ring {} sequence {last} has no next sequence", ring.decl.name);
        match rtype {
            RecordType::Frame => {
                let last = h.seq.checked_add(u64::from(h.count) - 1).ok_or_else(|| endless(u64::MAX))?;
                ring.next_seq = last.checked_add(1).ok_or_else(|| endless(last))?;
                ring.frames += u64::from(h.count);
            }
            RecordType::Gap => {
                let gap = GapInfo::decode(block.body).map_err(str::to_owned)?;
                if gap.last < h.seq {
                    return Err(format!(
                        "GAP of ring {} ends at {} before it starts at {}",
                        ring.decl.name, gap.last, h.seq
                    ));
                }
                ring.next_seq = gap.last.checked_add(1).ok_or_else(|| endless(gap.last))?;
                ring.gaps += 1;
                // A count over every incarnation of the name: it saturates.
                ring.lost = ring.lost.saturating_add(gap.last - h.seq + 1);
            }
            RecordType::Ring | RecordType::Checkpoint => unreachable!("handled above"),
        }
        Ok(())
    }

    /// A CHECKPOINT's rules: of no ring, and stating the chain as it is
    /// before it (records, blocks, hash) and its own time. Its signature
    /// and segment are checked by `verify`, which knows the key and the
    /// segment.
    fn check_checkpoint(&self, h: &BlockHeader, body: &[u8]) -> Result<(), String> {
        let c = Checkpoint::decode(body).map_err(str::to_owned)?;
        if (h.ring, h.seq, h.epoch) != (0, 0, 0) {
            return Err("a CHECKPOINT with a ring, sequence or epoch".into());
        }
        if h.recv_ns != c.time_ns {
            return Err(format!("a CHECKPOINT whose block time {} is not its own {}", h.recv_ns, c.time_ns));
        }
        if (c.records, c.blocks) != (self.records, self.blocks) {
            return Err(format!(
                "a CHECKPOINT of {} records and {} blocks where the chain has {} and {}",
                c.records, c.blocks, self.records, self.blocks
            ));
        }
        if c.hash != self.hash {
            return Err(format!(
                "a CHECKPOINT of hash {} where the chain is at {}",
                hex(&c.hash[..8]),
                hex(&self.hash[..8])
            ));
        }
        Ok(())
    }

    /// The bad block at `offset` whose header (if readable) is `block`.
    fn bad(&self, offset: u64, problem: Problem, block: Option<&BlockView<'_>>) -> BadRecord {
        BadRecord {
            offset,
            block: self.blocks,
            index: self.records,
            records: block.map_or(1, |b| u64::from(b.header.count.max(1))),
            ring_seq: block
                .filter(|b| b.rtype() != Some(RecordType::Checkpoint))
                .map(|b| (self.ring_name(b.header.ring), b.header.seq, b.last_seq())),
            problem,
        }
    }

    /// Scans the blocks in `bytes` (a segment of format `version` after
    /// its header, which starts at file offset `base`), applying each.
    /// Stops at the first bad block; `visit` sees every good one with its
    /// file offset, after the chain advanced past it.
    pub fn scan(
        &mut self,
        bytes: &[u8],
        base: u64,
        version: u32,
        mut visit: impl FnMut(&Chain, &BlockView<'_>, u64),
    ) -> Result<(), BadRecord> {
        let mut at = 0usize;
        while at < bytes.len() {
            let offset = base + at as u64;
            let block = split(version, &bytes[at..]).map_err(|t| {
                // The header, as far as it can be read.
                let header = (bytes.len() - at >= RECORD_HEADER_LEN).then(|| {
                    let b = &bytes[at..at + RECORD_HEADER_LEN];
                    let view =
                        BlockView { header: BlockHeader::decode(b), v1_kind: None, body: &[], bytes: b, hash: &[] };
                    if version == VERSION_1 {
                        BlockView { header: BlockHeader { count: 1, ..view.header }, ..view }
                    } else {
                        view
                    }
                });
                self.bad(offset, Problem::Torn(t), header.as_ref())
            })?;
            if let Err(p) = self.apply_in(version, &block) {
                return Err(self.bad(offset, p, Some(&block)));
            }
            visit(self, &block, offset);
            at += block.header.len as usize;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    /// A bad block's record range, from counts a folder's writer can make
    /// anything (a `pruned` manifest, a segment header whose checksum
    /// anyone can compute): named without overflowing. (Found by review:
    /// `verify`, `head` and `anchor` panicked in debug builds, and printed
    /// wrapped numbers in release.)
    #[test]
    fn a_bad_blocks_record_range_at_the_end_of_the_counts_does_not_overflow() {
        let bad =
            |index, records| BadRecord { offset: 0, block: 0, index, records, ring_seq: None, problem: Problem::Hash };
        assert_eq!(bad(u64::MAX - 1, 5).last_record(), u64::MAX);
        assert_eq!(bad(7, 1).last_record(), 7);
        assert_eq!(bad(7, 0).last_record(), 7);
        let shown = crate::ledger::verify::VerifyFailure::Record { path: "seg".into(), bad: bad(u64::MAX - 1, 5) };
        assert!(shown.to_string().contains(&format!("records {} to {}", u64::MAX - 1, u64::MAX)), "{shown}");
    }

    use super::*;

    fn record(prev: &Hash, h: RecordHeader, payload: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; MIN_RECORD_LEN + payload.len()];
        RecordHeader { len: b.len() as u32, payload_len: payload.len() as u32, ..h }.encode(&mut b);
        b[RECORD_HEADER_LEN..RECORD_HEADER_LEN + payload.len()].copy_from_slice(payload);
        let end = b.len() - HASH_LEN;
        let hash = chain(prev, &b[..end]);
        b[end..].copy_from_slice(&hash);
        b
    }

    fn hdr(rtype: RecordType, seq: u64) -> RecordHeader {
        RecordHeader { len: 0, rtype: rtype as u16, ring: 0, seq, epoch: 1, recv_ns: 0, kind: 0, payload_len: 0 }
    }

    #[test]
    fn a_record_count_that_would_overflow_is_a_broken_rule() {
        let decl = RingDecl { created_ns: 5, capacity: 8, max_payload: 8, policy: 1, name: "t".into() };
        // A folder whose header says the chain is u64::MAX records in.
        let mut c = Chain { records: u64::MAX, ..Chain::default() };
        let r = record(&c.hash, hdr(RecordType::Ring, 1), &decl.encode());
        let e = c.apply(&split_record(&r).unwrap()).unwrap_err();
        assert_eq!(e, Problem::Invalid(format!("record count {} overflows", u64::MAX)));
        assert_eq!((c.records, c.blocks, c.hash), (u64::MAX, 0, Chain::default().hash), "unchanged");
        assert!(c.rings.is_empty(), "a refused declaration declared nothing: {:?}", c.rings);
    }

    #[test]
    fn frames_and_gaps_must_follow_each_other_without_holes_or_repeats() {
        let decl = RingDecl { created_ns: 5, capacity: 8, max_payload: 8, policy: 1, name: "t".into() };
        let mut c = Chain::default();
        let mut bytes = Vec::new();
        let mut push = |c: &mut Chain, h: RecordHeader, p: &[u8]| {
            let r = record(&c.hash, h, p);
            c.apply(&split_record(&r).unwrap())?;
            bytes.extend_from_slice(&r);
            Ok::<_, Problem>(())
        };
        push(&mut c, hdr(RecordType::Ring, 1), &decl.encode()).unwrap();
        push(&mut c, hdr(RecordType::Frame, 1), b"a").unwrap();
        push(&mut c, hdr(RecordType::Gap, 2), &GapInfo { last: 4, reason: GAP_OVERRUN }.encode()).unwrap();
        push(&mut c, hdr(RecordType::Frame, 5), b"b").unwrap();
        assert_eq!((c.records, c.rings[0].next_seq, c.rings[0].frames, c.rings[0].lost), (4, 6, 2, 3));
        assert!(
            matches!(push(&mut c, hdr(RecordType::Frame, 5), b"c"), Err(Problem::Invalid(m)) if m.contains("repeats"))
        );
        assert!(
            matches!(push(&mut c, hdr(RecordType::Frame, 7), b"c"), Err(Problem::Invalid(m)) if m.contains("skips"))
        );
        let mut bad = hdr(RecordType::Frame, 6);
        bad.ring = 1;
        assert!(matches!(push(&mut c, bad, b"c"), Err(Problem::Invalid(m)) if m.contains("undeclared")));
        // A new incarnation restarts the ring's sequence.
        let again = RingDecl { created_ns: 6, ..decl };
        push(&mut c, hdr(RecordType::Ring, 1), &again.encode()).unwrap();
        push(&mut c, hdr(RecordType::Frame, 1), b"d").unwrap();

        // Scanning the bytes again from scratch reaches the same state.
        let mut again = Chain::default();
        let mut offsets = Vec::new();
        again.scan(&bytes, 128, VERSION_1, |_, _, off| offsets.push(off)).unwrap();
        assert_eq!(again, c);
        assert_eq!(offsets[0], 128);
        let mut flipped = bytes.clone();
        flipped[offsets[3] as usize - 128 + RECORD_HEADER_LEN] ^= 0x20;
        let err = Chain::default().scan(&flipped, 128, VERSION_1, |_, _, _| {}).unwrap_err();
        assert_eq!((err.offset, err.index, err.problem), (offsets[3], 3, Problem::Hash));
        assert_eq!(err.ring_seq, Some(("t".into(), 5, 5)));
    }

    /// Found by the `ledger` fuzz target: a GAP ending at `u64::MAX` (or a
    /// FRAME there) overflowed the next expected sequence, and GAPs of
    /// several incarnations overflowed the lost count.
    #[test]
    fn the_end_of_the_sequence_space_is_refused_and_counts_saturate() {
        let decl = RingDecl { created_ns: 5, capacity: 8, max_payload: 8, policy: 1, name: "t".into() };
        let apply = |c: &mut Chain, h: RecordHeader, p: &[u8]| c.apply(&split_record(&record(&c.hash, h, p)).unwrap());
        let gap = |last| GapInfo { last, reason: GAP_OVERRUN }.encode();
        let refused =
            |r: Result<(), Problem>| matches!(r, Err(Problem::Invalid(m)) if m.contains("has no next sequence"));

        let mut c = Chain::default();
        apply(&mut c, hdr(RecordType::Ring, 1), &decl.encode()).unwrap();
        assert!(refused(apply(&mut c, hdr(RecordType::Gap, 1), &gap(u64::MAX))));
        apply(&mut c, hdr(RecordType::Ring, u64::MAX), &RingDecl { created_ns: 6, ..decl.clone() }.encode()).unwrap();
        assert!(refused(apply(&mut c, hdr(RecordType::Frame, u64::MAX), b"x")));
        assert_eq!((c.records, c.rings[0].next_seq), (2, u64::MAX), "a refused record changes nothing");

        // Two incarnations, each losing all but the last sequence.
        for created_ns in [7, 8] {
            apply(&mut c, hdr(RecordType::Ring, 1), &RingDecl { created_ns, ..decl.clone() }.encode()).unwrap();
            apply(&mut c, hdr(RecordType::Gap, 1), &gap(u64::MAX - 1)).unwrap();
        }
        assert_eq!((c.rings[0].next_seq, c.rings[0].gaps, c.rings[0].lost), (u64::MAX, 2, u64::MAX));
    }
}
