//! Format version 2's unit, the block, byte for byte as in `docs/ledger.md`.
//!
//! A block holds the records of one ring that the recorder read together:
//! a FRAME block states the ring, the first sequence, the writer's epoch
//! and the time read once, then each frame as its length, its kind and its
//! bytes (sequences follow by order); a GAP or RING block holds one record,
//! laid out as a version-1 record. One chain hash ends each block,
//! `Blake3(previous chain hash || the block without its hash)`, hashed as
//! one input. A version-1 record reads as a block of one record
//! ([`BlockView::from_v1`]), so the chain and `verify` walk both versions
//! the same way.

use super::format::*;

/// Size of a block's fixed part, before its body.
pub const BLOCK_HEADER_LEN: usize = 40;
/// A block with an empty body.
pub const MIN_BLOCK_LEN: usize = BLOCK_HEADER_LEN + HASH_LEN;
/// Size of a frame's entry in a FRAME block, before its bytes.
pub const ENTRY_HEADER_LEN: usize = 8;
/// The largest body a block may have: room for a frame of [`MAX_PAYLOAD`]
/// and more (the recorder starts a new block well before, see
/// [`BLOCK_TARGET`]).
pub const MAX_BLOCK_BODY: usize = 64 << 20;
/// The body size the recorder aims a FRAME block at, at most (a batch of
/// frames read from a ring is cut to it; a single larger frame gets a
/// block of its own).
pub const BLOCK_TARGET: usize = 1 << 20;

/// The fixed part of a block (bytes 0..40).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlockHeader {
    /// Length of the whole block, hash included: 72 + `body_len`.
    pub len: u32,
    /// Raw type (see [`RecordType`]): what its records are.
    pub rtype: u16,
    /// Ring id, declared by a RING record.
    pub ring: u16,
    /// FRAME: the first frame's sequence (the others follow by one). GAP:
    /// the first lost sequence. RING: the next sequence expected.
    pub seq: u64,
    /// The writer's lease epoch when the ledger read the frames (0 in RING).
    pub epoch: u64,
    /// CLOCK_REALTIME (ns) just after the ledger finished reading them.
    pub recv_ns: u64,
    /// Records in the block: frames in a FRAME block; 1 in GAP and RING.
    pub count: u32,
    /// Bytes between the header and the hash.
    pub body_len: u32,
}

impl BlockHeader {
    /// Encodes into the first [`BLOCK_HEADER_LEN`] bytes of `out`.
    pub fn encode(&self, out: &mut [u8]) {
        // The same layout as a version-1 record header, `count` where the
        // kind was and `body_len` where the payload length was.
        let (kind, payload_len) = (self.count, self.body_len);
        let h = RecordHeader { len: self.len, rtype: self.rtype, ring: self.ring, kind, payload_len, ..self.v1() };
        h.encode(out);
    }

    /// Decodes the first [`BLOCK_HEADER_LEN`] bytes of `b`.
    pub fn decode(b: &[u8]) -> BlockHeader {
        let h = RecordHeader::decode(b);
        BlockHeader {
            len: h.len,
            rtype: h.rtype,
            ring: h.ring,
            seq: h.seq,
            epoch: h.epoch,
            recv_ns: h.recv_ns,
            count: h.kind,
            body_len: h.payload_len,
        }
    }

    /// The fields a version-1 record of this block's would share.
    fn v1(&self) -> RecordHeader {
        RecordHeader {
            rtype: self.rtype,
            ring: self.ring,
            seq: self.seq,
            epoch: self.epoch,
            recv_ns: self.recv_ns,
            ..RecordHeader::default()
        }
    }
}

/// A block as read back (or a version-1 record, as a block of one).
#[derive(Debug, Clone, Copy)]
pub struct BlockView<'a> {
    /// The fixed part.
    pub header: BlockHeader,
    /// A version-1 record's kind (`Some`: this is one); version-2 frames
    /// carry theirs in their entries.
    pub v1_kind: Option<u32>,
    /// The body: frame entries, or a GAP or RING payload.
    pub body: &'a [u8],
    /// The bytes the hash covers.
    pub bytes: &'a [u8],
    /// The stored chain hash.
    pub hash: &'a [u8],
}

/// One record as read back from either version: the header a version-1
/// record of it has (`len` 72 + payload), and its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Type, ring, sequence, epoch, time read, kind and lengths.
    pub header: RecordHeader,
    /// The frame's bytes, or the GAP or RING payload.
    pub payload: &'a [u8],
}

/// Splits the version-2 block at the start of `b` off, checking only its
/// framing (its records are checked with its hash, by the chain).
pub fn split_block(b: &[u8]) -> Result<BlockView<'_>, Torn> {
    // The same framing as a version-1 record's, with a larger body.
    let len = framed_len(b, MAX_BLOCK_BODY)?;
    let end = len - HASH_LEN;
    let header = BlockHeader::decode(b);
    Ok(BlockView { header, v1_kind: None, body: &b[BLOCK_HEADER_LEN..end], bytes: &b[..end], hash: &b[end..len] })
}

/// Splits the block of segment format `version` at the start of `b` off.
pub fn split(version: u32, b: &[u8]) -> Result<BlockView<'_>, Torn> {
    if version == VERSION_1 {
        split_record(b).map(BlockView::from_v1)
    } else {
        split_block(b)
    }
}

impl<'a> BlockView<'a> {
    /// A version-1 record as a block of one record.
    pub fn from_v1(r: RecordView<'a>) -> BlockView<'a> {
        let h = r.header;
        let header = BlockHeader { count: 1, body_len: h.payload_len, ..BlockHeader::decode(r.body) };
        BlockView { header, v1_kind: Some(h.kind), body: r.payload, bytes: r.body, hash: r.hash }
    }

    /// The record type, if it is one.
    pub fn rtype(&self) -> Option<RecordType> {
        RecordType::from_u16(self.header.rtype)
    }

    /// The records in the block, in order; `Err` says why its body does
    /// not hold `count` of them exactly (only a FRAME block can be wrong
    /// this way: a GAP or RING block's body is its one record's payload).
    pub fn records(&self) -> Records<'a> {
        Records { block: *self, at: 0, i: 0 }
    }

    /// The last sequence the block covers (its first is `header.seq`),
    /// as far as its fields say.
    pub fn last_seq(&self) -> u64 {
        let h = &self.header;
        match self.rtype() {
            Some(RecordType::Frame) => h.seq.saturating_add(u64::from(h.count.max(1)) - 1),
            Some(RecordType::Gap) => GapInfo::decode(self.body).map_or(h.seq, |g| g.last),
            _ => h.seq,
        }
    }
}

/// Iterates the records of a block ([`BlockView::records`]).
pub struct Records<'a> {
    block: BlockView<'a>,
    /// Offset of the next entry in the body.
    at: usize,
    /// Records returned.
    i: u32,
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<Record<'a>, String>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let b = &self.block;
        let h = &b.header;
        if self.i == h.count {
            let left = b.body.len() - self.at;
            self.at = b.body.len();
            return (left > 0 && h.count > 0)
                .then(|| Err(format!("{left} bytes of the block's body follow its {} frames", h.count)));
        }
        let seq = h.seq.wrapping_add(u64::from(self.i));
        let one = |payload: &'a [u8], kind: u32| Record {
            header: RecordHeader {
                len: (MIN_RECORD_LEN + payload.len()) as u32,
                kind,
                payload_len: payload.len() as u32,
                seq,
                ..h.v1()
            },
            payload,
        };
        self.i += 1;
        if b.v1_kind.is_some() || h.rtype != RecordType::Frame as u16 {
            if h.count != 1 {
                self.i = h.count;
                return Some(Err(format!("a {} block holds {} records, not 1", type_name(h.rtype), h.count)));
            }
            self.at = b.body.len();
            return Some(Ok(one(b.body, b.v1_kind.unwrap_or(0))));
        }
        let rest = &b.body[self.at..];
        let entry = (rest.len() >= ENTRY_HEADER_LEN).then(|| (u32_at(rest, 0) as usize, u32_at(rest, 4)));
        let why = match entry {
            Some((len, kind)) if len <= MAX_PAYLOAD && len <= rest.len() - ENTRY_HEADER_LEN => {
                self.at += ENTRY_HEADER_LEN + len;
                return Some(Ok(one(&rest[ENTRY_HEADER_LEN..ENTRY_HEADER_LEN + len], kind)));
            }
            Some((len, _)) if len > MAX_PAYLOAD => format!("has a length of {len} bytes, more than any frame"),
            _ => "runs past the end of the block's body".to_owned(),
        };
        let n = self.i - 1;
        self.i = h.count;
        self.at = b.body.len();
        Some(Err(format!("frame {n} of {} {why}", h.count)))
    }
}

/// A record type's name, or its number if unknown.
fn type_name(rtype: u16) -> String {
    RecordType::from_u16(rtype).map_or_else(|| format!("type-{rtype}"), |t| t.as_str().to_owned())
}

/// Writes a frame's entry header (its length and kind) into `out`.
#[inline]
pub fn encode_entry(out: &mut [u8], len: usize, kind: u32) {
    out[0..4].copy_from_slice(&(len as u32).to_le_bytes());
    out[4..8].copy_from_slice(&kind.to_le_bytes());
}

/// The length of the frame entry at the start of `b` (header included).
#[inline]
pub fn entry_len(b: &[u8]) -> usize {
    ENTRY_HEADER_LEN + u32_at(b, 0) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sealed FRAME block of `frames` (kind, bytes) after `prev`.
    fn frame_block(prev: &Hash, seq: u64, frames: &[(u32, &[u8])]) -> Vec<u8> {
        let mut b = vec![0u8; BLOCK_HEADER_LEN];
        for (kind, p) in frames {
            let at = b.len();
            b.resize(at + ENTRY_HEADER_LEN, 0);
            encode_entry(&mut b[at..], p.len(), *kind);
            b.extend_from_slice(p);
        }
        let body_len = b.len() - BLOCK_HEADER_LEN;
        let h = BlockHeader {
            len: (MIN_BLOCK_LEN + body_len) as u32,
            rtype: RecordType::Frame as u16,
            ring: 2,
            seq,
            epoch: 3,
            recv_ns: 4,
            count: frames.len() as u32,
            body_len: body_len as u32,
        };
        h.encode(&mut b);
        let hash = chain(prev, &b);
        b.extend_from_slice(&hash);
        b
    }

    #[test]
    fn a_frame_block_reads_back_as_its_records() {
        let b = frame_block(&GENESIS, 10, &[(1, b"abc"), (7, b""), (1, b"defgh")]);
        assert_eq!(b.len(), MIN_BLOCK_LEN + 3 * ENTRY_HEADER_LEN + 8);
        let v = split_block(&b).unwrap();
        assert_eq!((v.header.count, v.last_seq()), (3, 12));
        assert_eq!(v.hash, chain(&GENESIS, v.bytes));
        let recs: Vec<Record<'_>> = v.records().map(Result::unwrap).collect();
        assert_eq!(
            recs.iter().map(|r| (r.header.seq, r.header.kind, r.payload)).collect::<Vec<_>>(),
            [(10, 1, &b"abc"[..]), (11, 7, b""), (12, 1, b"defgh")]
        );
        assert_eq!(
            (recs[2].header.len, recs[2].header.epoch, recs[2].header.recv_ns, recs[2].header.ring),
            (77, 3, 4, 2)
        );
        // Framing: cut short, or a length that disagrees with the body.
        assert_eq!(split_block(&b[..30]).unwrap_err(), Torn::ShortHeader);
        assert_eq!(split_block(&b[..60]).unwrap_err(), Torn::PastEnd { len: b.len() as u32, left: 60 });
        let mut bad = b.clone();
        bad[36] ^= 1;
        assert!(matches!(split_block(&bad), Err(Torn::BadLength(_))));
    }

    #[test]
    fn a_body_that_does_not_hold_its_count_of_frames_is_named() {
        let mut b = frame_block(&GENESIS, 1, &[(1, b"abc"), (1, b"de")]);
        let errors = |b: &[u8]| -> Vec<String> { split_block(b).unwrap().records().filter_map(Result::err).collect() };
        assert!(errors(&b).is_empty());
        b[32] = 1; // count 1: the second frame is left over
        assert_eq!(errors(&b), ["10 bytes of the block's body follow its 1 frames"]);
        b[32] = 3; // count 3: the third runs past the end
        assert_eq!(errors(&b), ["frame 2 of 3 runs past the end of the block's body"]);
        b[32] = 2;
        b[BLOCK_HEADER_LEN] = 200; // the first frame's length
        assert_eq!(errors(&b), ["frame 0 of 2 runs past the end of the block's body"]);
        b[BLOCK_HEADER_LEN..BLOCK_HEADER_LEN + 4].copy_from_slice(&(MAX_PAYLOAD as u32 + 1).to_le_bytes());
        assert_eq!(errors(&b), ["frame 0 of 2 has a length of 16777217 bytes, more than any frame"]);
    }

    #[test]
    fn a_version_1_record_is_a_block_of_one() {
        let mut r = vec![0u8; MIN_RECORD_LEN + 2];
        let h = RecordHeader { len: 74, rtype: 1, ring: 1, seq: 9, epoch: 2, recv_ns: 5, kind: 6, payload_len: 2 };
        h.encode(&mut r);
        r[RECORD_HEADER_LEN..RECORD_HEADER_LEN + 2].copy_from_slice(b"xy");
        let v = split(VERSION_1, &r).unwrap();
        assert_eq!((v.header.count, v.header.seq, v.last_seq(), v.bytes.len()), (1, 9, 9, 42));
        let recs: Vec<Record<'_>> = v.records().map(Result::unwrap).collect();
        assert_eq!(recs, [Record { header: h, payload: b"xy" }]);
    }
}
