//! The ledger's on-disk format, byte for byte as in `docs/ledger.md`.
//!
//! A ledger is a folder of segment files `seg-NNNNNNNNNN.hxl`. Each segment
//! is a 128-byte header followed by blocks (format version 2, [`block`](super::block))
//! or by records (version 1, this module: the legacy format, still read).
//! Every block, and every version-1 record, ends with its chain hash,
//! `Blake3(previous chain hash || its bytes without the hash)`; the chain
//! runs across segments (a segment header names the hash it continues
//! from) and starts from 32 zero bytes. All integers are little-endian.

use std::fmt;

use crate::layout::wire_enum;

/// The first eight bytes of every segment.
pub const MAGIC: [u8; 8] = *b"HELIXLDG";
/// The format version this code writes (it reads [`VERSION_1`] and
/// [`VERSION_2`] too): version 2 with signed CHECKPOINT blocks.
pub const VERSION: u32 = 3;
/// The block format without checkpoints: a CHECKPOINT block in a segment
/// of this version is refused (a version-2 reader does not know the type).
pub const VERSION_2: u32 = 2;
/// The first format version: one chain hash per record.
pub const VERSION_1: u32 = 1;
/// Size of a segment header.
pub const SEGMENT_HEADER_LEN: usize = 128;
/// Size of a version-1 record's fixed part, before the payload.
pub const RECORD_HEADER_LEN: usize = 40;
/// Size of a chain hash.
pub const HASH_LEN: usize = 32;
/// A record with an empty payload.
pub const MIN_RECORD_LEN: usize = RECORD_HEADER_LEN + HASH_LEN;
/// The largest payload a record may carry (a ring's payload is smaller).
pub const MAX_PAYLOAD: usize = 16 << 20;
/// The chain value before the first record.
pub const GENESIS: Hash = [0; HASH_LEN];

/// A chain hash.
pub type Hash = [u8; HASH_LEN];

wire_enum! {
    /// What a record says; `as_str` is the name `export` prints.
    pub enum RecordType: u16, from_u16 {
        /// A frame as the ring delivered it.
        Frame = 1, "frame";
        /// Sequences of a ring that the ledger could not record (they were
        /// overwritten before it read them).
        Gap = 2, "gap";
        /// Declares a ring id: its name and incarnation, and the next
        /// sequence the ledger expects from it. Written when a ring is first
        /// seen, when it was replaced, and at the start of every segment for
        /// every ring.
        Ring = 3, "ring";
        /// A signed checkpoint: the chain's hash at that point, signed with
        /// the recorder's Ed25519 key ([`sign`](super::sign)). Format
        /// version 3 on.
        Checkpoint = 4, "checkpoint";
    }
}

/// A GAP record's reason: the ring overwrote the frames before the
/// recorder read them.
pub const GAP_OVERRUN: u32 = 1;

/// A GAP record's reason: the frame was larger than a record may carry
/// ([`MAX_PAYLOAD`]); a ring's slots hold up to 48 bytes more (its
/// `slot_size` rounds the configured payload up).
pub const GAP_TOO_LARGE: u32 = 2;

/// A GAP record's reason: the frames were published into a ring after it
/// was replaced under its name, while the recorder, having read it to its
/// end, was letting it go (a writer that still held the old ring); or into
/// a ring the recorder was let go of after a demotion and could not join
/// again, then made again under its name.
pub const GAP_LET_GO: u32 = 3;

/// A GAP record's reason: the frames were published into a ring whose
/// data region a peer damaged (shrank) before the recorder read them, and
/// the ring was made again under its name: they went with it (up to the
/// last sequence the recorder had found published in it).
pub const GAP_RING_LOST: u32 = 4;

/// The fixed part of a version-1 record (bytes 0..40). Records read back
/// from a version-2 block are presented with the header a version-1 record
/// of theirs would have (see [`Record`](super::block::Record)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordHeader {
    /// Length of the whole record, hash included.
    pub len: u32,
    /// Raw type (see [`RecordType`]).
    pub rtype: u16,
    /// Ring id, declared by a RING record.
    pub ring: u16,
    /// FRAME: the frame's sequence. GAP: the first lost sequence. RING: the
    /// next sequence expected.
    pub seq: u64,
    /// The writer's lease epoch when the ledger read the frame.
    pub epoch: u64,
    /// CLOCK_REALTIME (ns) just after the ledger read the batch holding it.
    pub recv_ns: u64,
    /// The frame's kind (0 for GAP and RING).
    pub kind: u32,
    /// Payload length.
    pub payload_len: u32,
}

impl RecordHeader {
    /// Encodes into the first [`RECORD_HEADER_LEN`] bytes of `out`.
    pub fn encode(&self, out: &mut [u8]) {
        out[0..4].copy_from_slice(&self.len.to_le_bytes());
        out[4..6].copy_from_slice(&self.rtype.to_le_bytes());
        out[6..8].copy_from_slice(&self.ring.to_le_bytes());
        out[8..16].copy_from_slice(&self.seq.to_le_bytes());
        out[16..24].copy_from_slice(&self.epoch.to_le_bytes());
        out[24..32].copy_from_slice(&self.recv_ns.to_le_bytes());
        out[32..36].copy_from_slice(&self.kind.to_le_bytes());
        out[36..40].copy_from_slice(&self.payload_len.to_le_bytes());
    }

    /// Decodes the first [`RECORD_HEADER_LEN`] bytes of `b`.
    pub fn decode(b: &[u8]) -> RecordHeader {
        RecordHeader {
            len: u32_at(b, 0),
            rtype: u16_at(b, 4),
            ring: u16_at(b, 6),
            seq: u64_at(b, 8),
            epoch: u64_at(b, 16),
            recv_ns: u64_at(b, 24),
            kind: u32_at(b, 32),
            payload_len: u32_at(b, 36),
        }
    }
}

/// The payload of a RING record (24 bytes and the name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingDecl {
    /// The ring's `created_ns`: which incarnation of the name this is.
    pub created_ns: u64,
    /// Its capacity in slots.
    pub capacity: u64,
    /// Its largest payload.
    pub max_payload: u32,
    /// 0 overwrite, 1 block.
    pub policy: u8,
    /// The ring's name.
    pub name: String,
}

impl RingDecl {
    /// The encoded payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(24 + self.name.len());
        p.extend_from_slice(&self.created_ns.to_le_bytes());
        p.extend_from_slice(&self.capacity.to_le_bytes());
        p.extend_from_slice(&self.max_payload.to_le_bytes());
        p.push(self.policy);
        p.push(self.name.len() as u8);
        p.extend_from_slice(&[0, 0]);
        p.extend_from_slice(self.name.as_bytes());
        p
    }

    /// Decodes a payload, or says what is wrong with it.
    pub fn decode(p: &[u8]) -> Result<RingDecl, &'static str> {
        if p.len() < 24 {
            return Err("RING payload shorter than 24 bytes");
        }
        let name_len = p[21] as usize;
        if p.len() != 24 + name_len {
            return Err("RING payload length does not match its name length");
        }
        let name = std::str::from_utf8(&p[24..]).map_err(|_| "RING name is not UTF-8")?;
        // Only what a ring may be called (a recorder records rings): any
        // other name, one with terminal escapes say, would reach whoever
        // reads the ledger's errors and listings as it is.
        crate::shm::validate_ring_name(name)
            .map_err(|_| "RING name is not a ring's name (a-z 0-9 . _ -, starting with a-z or 0-9)")?;
        Ok(RingDecl {
            created_ns: u64_at(p, 0),
            capacity: u64_at(p, 8),
            max_payload: u32_at(p, 16),
            policy: p[20],
            name: name.to_owned(),
        })
    }
}

/// The payload of a GAP record (16 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GapInfo {
    /// The last lost sequence (inclusive; the first is the record's `seq`).
    pub last: u64,
    /// Why ([`GAP_OVERRUN`], [`GAP_TOO_LARGE`], [`GAP_LET_GO`]).
    pub reason: u32,
}

impl GapInfo {
    /// The encoded payload.
    pub fn encode(&self) -> [u8; 16] {
        let mut p = [0u8; 16];
        p[0..8].copy_from_slice(&self.last.to_le_bytes());
        p[8..12].copy_from_slice(&self.reason.to_le_bytes());
        p
    }

    /// Decodes a payload.
    pub fn decode(p: &[u8]) -> Result<GapInfo, &'static str> {
        if p.len() != 16 {
            return Err("GAP payload is not 16 bytes");
        }
        Ok(GapInfo { last: u64_at(p, 0), reason: u32_at(p, 8) })
    }
}

/// A segment header (128 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Its format version: [`VERSION`], or [`VERSION_1`] in a folder started
    /// by an older recorder.
    pub version: u32,
    /// The segment's number, 1 for the first; also its file name.
    pub segment: u64,
    /// How many records the ledger held before this segment.
    pub first_record: u64,
    /// How many blocks the ledger held before this segment (a version-1
    /// record is a block of one; in a version-1 header, which has no such
    /// field, it equals `first_record`).
    pub first_block: u64,
    /// CLOCK_REALTIME (ns) when the segment was started.
    pub created_ns: u64,
    /// The chain hash this segment continues from: the last record's hash
    /// in the previous segment, or [`GENESIS`].
    pub prev_hash: Hash,
}

/// What is wrong with a segment header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    /// Fewer than 128 bytes.
    Short(usize),
    /// Not a ledger segment.
    Magic,
    /// A version this code does not read.
    Version(u32),
    /// The header's own hash does not match its bytes.
    Checksum,
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::Short(n) => write!(f, "segment header is {n} bytes, expected {SEGMENT_HEADER_LEN}"),
            HeaderError::Magic => write!(f, "not a HELIX ledger segment (bad magic)"),
            HeaderError::Version(v) => {
                write!(f, "segment format version {v}, this program reads {VERSION_1} to {VERSION}")
            }
            HeaderError::Checksum => write!(f, "segment header checksum mismatch"),
        }
    }
}

impl SegmentHeader {
    /// A header of the version this code writes.
    pub fn new(segment: u64, first_record: u64, first_block: u64, created_ns: u64, prev_hash: Hash) -> SegmentHeader {
        SegmentHeader { version: VERSION, segment, first_record, first_block, created_ns, prev_hash }
    }

    /// The encoded header, its checksum (Blake3 of bytes 0..96) at 96..128.
    /// Version 1 has no `first_block` (bytes 72..96 are reserved, zero).
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut b = [0u8; SEGMENT_HEADER_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&self.version.to_le_bytes());
        b[12..16].copy_from_slice(&(SEGMENT_HEADER_LEN as u32).to_le_bytes());
        b[16..24].copy_from_slice(&self.segment.to_le_bytes());
        b[24..32].copy_from_slice(&self.first_record.to_le_bytes());
        b[32..40].copy_from_slice(&self.created_ns.to_le_bytes());
        b[40..72].copy_from_slice(&self.prev_hash);
        if self.version != VERSION_1 {
            b[72..80].copy_from_slice(&self.first_block.to_le_bytes());
        }
        let sum = blake3::hash(&b[..96]);
        b[96..128].copy_from_slice(sum.as_bytes());
        b
    }

    /// Decodes and checks a header.
    pub fn decode(b: &[u8]) -> Result<SegmentHeader, HeaderError> {
        if b.len() < SEGMENT_HEADER_LEN {
            return Err(HeaderError::Short(b.len()));
        }
        if b[0..8] != MAGIC {
            return Err(HeaderError::Magic);
        }
        let version = u32_at(b, 8);
        if !(VERSION_1..=VERSION).contains(&version) || u32_at(b, 12) as usize != SEGMENT_HEADER_LEN {
            return Err(HeaderError::Version(version));
        }
        if blake3::hash(&b[..96]).as_bytes() != &b[96..128] {
            return Err(HeaderError::Checksum);
        }
        let first_record = u64_at(b, 24);
        Ok(SegmentHeader {
            version,
            segment: u64_at(b, 16),
            first_record,
            first_block: if version == VERSION_1 { first_record } else { u64_at(b, 72) },
            created_ns: u64_at(b, 32),
            prev_hash: b[40..72].try_into().unwrap(),
        })
    }
}

/// The chain hash of `record` (its bytes without the hash) after `prev`.
#[inline]
pub fn chain(prev: &Hash, record: &[u8]) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(prev);
    h.update(record);
    *h.finalize().as_bytes()
}

/// The file name of segment `n`.
pub fn segment_name(n: u64) -> String {
    format!("seg-{n:010}.hxl")
}

/// The segment number in a file name, if it is a segment's.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("seg-")?.strip_suffix(".hxl")?;
    (digits.len() == 10 && digits.bytes().all(|c| c.is_ascii_digit())).then(|| digits.parse().ok()).flatten()
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

pub(super) fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

pub(super) fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

pub(super) fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// A version-1 record as read back: header, payload and stored hash.
#[derive(Debug, Clone, Copy)]
pub struct RecordView<'a> {
    /// The fixed part.
    pub header: RecordHeader,
    /// The payload.
    pub payload: &'a [u8],
    /// The bytes the hash covers.
    pub body: &'a [u8],
    /// The stored chain hash.
    pub hash: &'a [u8],
}

/// Why the bytes at an offset are not a whole record (or block).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Torn {
    /// Fewer bytes left than a record (or block) header.
    #[error("fewer than {RECORD_HEADER_LEN} bytes left for a block header")]
    ShortHeader,
    /// The length field is impossible (shorter than a record or longer than
    /// any record may be) or disagrees with the payload (or body) length.
    #[error("impossible block length {0}")]
    BadLength(u32),
    /// The record (or block) runs past the end of the file.
    #[error("block of {len} bytes runs past the end ({left} bytes left)")]
    PastEnd {
        /// Its length.
        len: u32,
        /// Bytes left in the file.
        left: usize,
    },
}

/// Checks the framing a version-1 record and a block share: a 40-byte
/// header whose `len` (bytes 0..4) is 72 + the length at bytes 36..40, at
/// most 72 + `max_body`, and within `b`. Returns `len`.
pub(super) fn framed_len(b: &[u8], max_body: usize) -> Result<usize, Torn> {
    if b.len() < RECORD_HEADER_LEN {
        return Err(Torn::ShortHeader);
    }
    let (len, body_len) = (u32_at(b, 0), u32_at(b, 36) as usize);
    let n = len as usize;
    if !(MIN_RECORD_LEN..=MIN_RECORD_LEN + max_body).contains(&n) || body_len != n - MIN_RECORD_LEN {
        return Err(Torn::BadLength(len));
    }
    if n > b.len() {
        return Err(Torn::PastEnd { len, left: b.len() });
    }
    Ok(n)
}

/// Splits the version-1 record at the start of `b` off, checking only its
/// framing.
pub fn split_record(b: &[u8]) -> Result<RecordView<'_>, Torn> {
    let len = framed_len(b, MAX_PAYLOAD)?;
    let body_end = len - HASH_LEN;
    let header = RecordHeader::decode(b);
    Ok(RecordView { header, payload: &b[RECORD_HEADER_LEN..body_end], body: &b[..body_end], hash: &b[body_end..len] })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_every_byte_of_a_segment_header_is_checked() {
        let h = SegmentHeader::new(7, 99, 40, 12345, [0xab; 32]);
        let v1 = SegmentHeader { version: VERSION_1, first_block: 99, ..h };
        for h in [h, v1] {
            let b = h.encode();
            assert_eq!(SegmentHeader::decode(&b), Ok(h));
            for i in 0..SEGMENT_HEADER_LEN {
                let mut bad = b;
                bad[i] ^= 1;
                assert!(SegmentHeader::decode(&bad).is_err(), "flip at {i} not detected");
            }
        }
        let mut v3 = SegmentHeader::new(7, 99, 40, 12345, [0xab; 32]).encode();
        v3[8] = 4;
        assert_eq!(SegmentHeader::decode(&v3), Err(HeaderError::Version(4)));
        let r = RecordHeader { len: 80, rtype: 1, ring: 3, seq: 5, epoch: 2, recv_ns: 9, kind: 1, payload_len: 8 };
        let mut rb = [0u8; RECORD_HEADER_LEN];
        r.encode(&mut rb);
        assert_eq!(RecordHeader::decode(&rb), r);
        let d = RingDecl { created_ns: 1, capacity: 64, max_payload: 48, policy: 1, name: "telemetry".into() };
        assert_eq!(RingDecl::decode(&d.encode()), Ok(d));
        let g = GapInfo { last: 77, reason: GAP_OVERRUN };
        assert_eq!(GapInfo::decode(&g.encode()), Ok(g));
    }

    #[test]
    fn framing_errors_are_told_apart() {
        let mut rec = vec![0u8; MIN_RECORD_LEN + 4];
        RecordHeader {
            len: rec.len() as u32,
            rtype: 1,
            ring: 0,
            seq: 1,
            epoch: 1,
            recv_ns: 0,
            kind: 0,
            payload_len: 4,
        }
        .encode(&mut rec);
        assert_eq!(split_record(&rec).unwrap().payload.len(), 4);
        assert_eq!(split_record(&rec[..10]).unwrap_err(), Torn::ShortHeader);
        assert_eq!(split_record(&rec[..50]).unwrap_err(), Torn::PastEnd { len: 76, left: 50 });
        rec[0] = 3;
        assert_eq!(split_record(&rec).unwrap_err(), Torn::BadLength(3));
        assert_eq!(parse_segment_name(&segment_name(42)), Some(42));
        assert_eq!(parse_segment_name("seg-42.hxl"), None);
    }
}
