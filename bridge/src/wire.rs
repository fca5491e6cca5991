//! What crosses the wire and what lands in the destination ring
//! (`docs/bridge.md`, "Message format" and "Marks").
//!
//! A JetStream message carries frames of one source ring, consecutive in
//! sequence, or one gap (sequences the exporter lost to an overrun). All
//! integers are little-endian. The importer trusts nothing in a message:
//! [`Message::decode`] checks every length and range and names what is
//! wrong.

use std::fmt;

/// `"HXB1"`, little-endian: the first four bytes of every message.
pub const MAGIC: u32 = u32::from_le_bytes(*b"HXB1");
/// The message format's version.
pub const VERSION: u16 = 1;
/// Bytes of the fixed header, before the host and ring names.
pub const HEADER: usize = 52;
/// Bytes before each frame's payload (kind, length).
pub const FRAME_HEADER: usize = 8;
/// Message type: frames.
const TYPE_FRAMES: u16 = 1;
/// Message type: a gap.
const TYPE_GAP: u16 = 2;

/// Destination frame kind of a batch mark (`"HB"`, 1): the frames after it
/// are source frames `first_seq`, `first_seq + 1`, ...
pub const KIND_BATCH: u32 = 0x4842_0001;
/// Destination frame kind of a gap mark: source sequences `first_seq ..
/// first_seq + lost` are lost and will never arrive.
pub const KIND_GAP: u32 = 0x4842_0002;

/// Whether `kind` is a mark's: the importer finds its place after a restart
/// by the marks in the destination ring, so it writes no source frame of
/// these kinds there (it writes a gap instead).
pub fn is_mark_kind(kind: u32) -> bool {
    kind == KIND_BATCH || kind == KIND_GAP
}

/// Where a message's frames come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The exporting host's name.
    pub host: String,
    /// The source ring's name.
    pub ring: String,
    /// The source ring's `created_ns` (its incarnation: a recreated ring
    /// starts its sequence again at 1).
    pub created_ns: u64,
    /// The source ring's writer epoch when the message was packed.
    pub epoch: u64,
}

/// FNV-1a (64-bit) of `host/ring`.
pub fn source_id(host: &str, ring: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in host.bytes().chain(std::iter::once(b'/')).chain(ring.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// What a message carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// Source frames `first_seq ..`: (kind, payload) each.
    Frames(Vec<(u32, Vec<u8>)>),
    /// `lost` sequences starting at `first_seq` were lost at the source.
    Gap { lost: u64 },
}

/// One decoded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub source: Source,
    /// Source sequence of the first frame (or the first lost one).
    pub first_seq: u64,
    /// CLOCK_REALTIME ns when the exporter packed it.
    pub export_ns: u64,
    pub body: Body,
}

impl Message {
    /// Sequences the message covers.
    pub fn count(&self) -> u64 {
        match &self.body {
            Body::Frames(f) => f.len() as u64,
            Body::Gap { lost } => *lost,
        }
    }

    /// The last source sequence it covers.
    pub fn last_seq(&self) -> u64 {
        self.first_seq + self.count() - 1
    }
}

/// Why a message was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub String);

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Malformed {}

fn bad<T>(why: impl Into<String>) -> Result<T, Malformed> {
    Err(Malformed(why.into()))
}

/// Builds a message: the header once, then frames appended one by one.
pub struct Packer {
    buf: Vec<u8>,
    frames: u32,
    /// Where the last frame starts, for [`Packer::pop`].
    last: usize,
}

impl Packer {
    /// Starts a frames message of `source` at `first_seq`.
    pub fn frames(source: &Source, first_seq: u64, export_ns: u64) -> Packer {
        Packer { buf: header(source, TYPE_FRAMES, first_seq, 0, export_ns), frames: 0, last: 0 }
    }

    /// Appends one frame.
    #[cfg(test)]
    pub fn push(&mut self, kind: u32, payload: &[u8]) {
        self.last = self.buf.len();
        self.buf.extend_from_slice(&kind.to_le_bytes());
        self.buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(payload);
        self.frames += 1;
    }

    /// Appends one frame whose payload `fill` writes into `len` zeroed
    /// bytes (a ring frame copied straight in).
    pub fn push_with<E>(
        &mut self,
        kind: u32,
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let start = self.buf.len();
        self.buf.extend_from_slice(&kind.to_le_bytes());
        self.buf.extend_from_slice(&(len as u32).to_le_bytes());
        self.buf.resize(start + FRAME_HEADER + len, 0);
        match fill(&mut self.buf[start + FRAME_HEADER..]) {
            Ok(()) => {
                self.last = start;
                self.frames += 1;
                Ok(())
            }
            Err(e) => {
                self.buf.truncate(start);
                Err(e)
            }
        }
    }

    /// Removes the last frame pushed (a frame the ring reports torn after
    /// its copy was taken); only once between pushes.
    pub fn pop(&mut self) {
        assert!(self.frames > 0 && self.last >= HEADER, "nothing to pop");
        self.buf.truncate(self.last);
        self.last = 0;
        self.frames -= 1;
    }

    /// Frames so far.
    pub fn count(&self) -> u32 {
        self.frames
    }

    /// The finished message.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf[32..40].copy_from_slice(&u64::from(self.frames).to_le_bytes());
        self.buf
    }
}

/// A gap message: `lost` sequences from `first_seq`.
pub fn gap(source: &Source, first_seq: u64, lost: u64, export_ns: u64) -> Vec<u8> {
    header(source, TYPE_GAP, first_seq, lost, export_ns)
}

fn header(source: &Source, kind: u16, first_seq: u64, count: u64, export_ns: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(4096);
    b.extend_from_slice(&MAGIC.to_le_bytes());
    b.extend_from_slice(&VERSION.to_le_bytes());
    b.extend_from_slice(&kind.to_le_bytes());
    b.extend_from_slice(&source.created_ns.to_le_bytes());
    b.extend_from_slice(&source.epoch.to_le_bytes());
    b.extend_from_slice(&first_seq.to_le_bytes());
    b.extend_from_slice(&count.to_le_bytes());
    b.extend_from_slice(&export_ns.to_le_bytes());
    debug_assert!(source.host.len() <= crate::config::MAX_TOKEN && source.ring.len() <= u8::MAX as usize);
    b.push(source.host.len() as u8);
    b.push(source.ring.len() as u8);
    b.extend_from_slice(&0u16.to_le_bytes());
    debug_assert_eq!(b.len(), HEADER);
    b.extend_from_slice(source.host.as_bytes());
    b.extend_from_slice(source.ring.as_bytes());
    b
}

/// Little-endian reads from a byte slice that name what is missing.
struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], Malformed> {
        match self.b.get(self.at..self.at.saturating_add(n)) {
            Some(s) => {
                self.at += n;
                Ok(s)
            }
            None => bad(format!("{} bytes end at byte {} inside the {what}", self.b.len(), self.at)),
        }
    }

    fn u16(&mut self, what: &str) -> Result<u16, Malformed> {
        Ok(u16::from_le_bytes(self.take(2, what)?.try_into().expect("2 bytes")))
    }

    fn u32(&mut self, what: &str) -> Result<u32, Malformed> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().expect("4 bytes")))
    }

    fn u64(&mut self, what: &str) -> Result<u64, Malformed> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().expect("8 bytes")))
    }

    fn name(&mut self, len: u8, what: &str) -> Result<String, Malformed> {
        let b = self.take(len.into(), what)?;
        match std::str::from_utf8(b) {
            Ok(s) if !s.is_empty() => Ok(s.to_owned()),
            _ => bad(format!("the {what} is empty or not UTF-8")),
        }
    }
}

impl Message {
    /// Decodes and checks a message; `max_payload` bounds each frame.
    pub fn decode(b: &[u8], max_payload: usize) -> Result<Message, Malformed> {
        let mut c = Cursor { b, at: 0 };
        let magic = c.u32("header")?;
        if magic != MAGIC {
            return bad(format!("not a helix-bridge message (magic {magic:#010x}, expected {MAGIC:#010x})"));
        }
        let version = c.u16("header")?;
        if version != VERSION {
            return bad(format!("message format version {version}; this importer reads version {VERSION}"));
        }
        let kind = c.u16("header")?;
        let created_ns = c.u64("header")?;
        let epoch = c.u64("header")?;
        let first_seq = c.u64("header")?;
        let count = c.u64("header")?;
        let export_ns = c.u64("header")?;
        let (host_len, ring_len) = (c.take(1, "header")?[0], c.take(1, "header")?[0]);
        let _reserved = c.u16("header")?;
        let source =
            Source { host: c.name(host_len, "host name")?, ring: c.name(ring_len, "ring name")?, created_ns, epoch };
        if count == 0 {
            return bad("the message covers no sequence (count 0)");
        }
        if first_seq == 0 || first_seq.checked_add(count).is_none_or(|end| end > helix::layout::MAX_SEQ) {
            return bad(format!("sequences {first_seq} + {count} are out of range"));
        }
        let body = match kind {
            TYPE_FRAMES => Body::Frames(frames(&mut c, count, max_payload)?),
            TYPE_GAP => Body::Gap { lost: count },
            k => return bad(format!("unknown message type {k}")),
        };
        if c.at != b.len() {
            return bad(format!("{} bytes left over after the last frame", b.len() - c.at));
        }
        Ok(Message { source, first_seq, export_ns, body })
    }
}

fn frames(c: &mut Cursor<'_>, count: u64, max_payload: usize) -> Result<Vec<(u32, Vec<u8>)>, Malformed> {
    // Each frame takes at least its 8-byte header: a count the message
    // cannot hold is refused before anything is allocated for it.
    if count.saturating_mul(FRAME_HEADER as u64) > (c.b.len() - c.at) as u64 {
        return bad(format!("{count} frames cannot fit in {} bytes", c.b.len() - c.at));
    }
    let mut out = Vec::with_capacity(count as usize);
    for i in 0..count {
        let kind = c.u32("frame header")?;
        let len = c.u32("frame header")? as usize;
        if len > max_payload {
            return bad(format!("frame {i} is {len} bytes, more than the largest payload {max_payload}"));
        }
        out.push((kind, c.take(len, "frame payload")?.to_vec()));
    }
    Ok(out)
}

/// A mark in the destination ring (64 bytes, kind [`KIND_BATCH`] or
/// [`KIND_GAP`]): what the importer finds its place from after a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct Mark {
    /// [`source_id`] of the source host and ring.
    pub source_id: u64,
    /// Source sequence of the first frame after the mark (batch), or of the
    /// first lost sequence (gap).
    pub first_seq: u64,
    /// Sequences lost (gap marks; 0 in batch marks).
    pub lost: u64,
    /// The source ring's `created_ns`.
    pub src_created_ns: u64,
    /// The source ring's writer epoch.
    pub src_epoch: u64,
    /// CLOCK_REALTIME ns when the exporter packed the message.
    pub export_ns: u64,
    /// CLOCK_REALTIME ns when the importer wrote the mark.
    pub import_ns: u64,
    /// The JetStream stream sequence an importer restarting here resumes
    /// reading from.
    pub resume_stream_seq: u64,
}

const _: () = assert!(std::mem::size_of::<Mark>() == 64);

#[cfg(test)]
mod tests {
    use super::*;

    fn src() -> Source {
        Source { host: "gw1".into(), ring: "telemetry".into(), created_ns: 7, epoch: 3 }
    }

    #[test]
    fn frames_and_gaps_round_trip() {
        let mut p = Packer::frames(&src(), 10, 99);
        p.push(1, b"abc");
        p.push(2, b"");
        p.push_with::<()>(3, 4, |b| {
            b.copy_from_slice(b"wxyz");
            Ok(())
        })
        .unwrap();
        assert_eq!(p.push_with(4, 9, |_| Err("torn")), Err("torn"));
        p.push(5, b"popped");
        p.pop();
        let m = Message::decode(&p.finish(), 64).unwrap();
        assert_eq!((m.source.clone(), m.first_seq, m.export_ns, m.last_seq()), (src(), 10, 99, 12));
        assert_eq!(m.body, Body::Frames(vec![(1, b"abc".to_vec()), (2, vec![]), (3, b"wxyz".to_vec())]));
        let g = Message::decode(&gap(&src(), 5, 4, 1), 64).unwrap();
        assert_eq!((g.first_seq, g.last_seq(), g.body), (5, 8, Body::Gap { lost: 4 }));
    }

    #[test]
    fn every_damage_is_named() {
        let mut p = Packer::frames(&src(), 1, 0);
        p.push(1, &[9; 20]);
        let good = p.finish();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"HXB1\x01".to_vec(), "inside the header"),
            ([&[0u8; 4][..], &good[4..]].concat(), "not a helix-bridge message"),
            (good[..good.len() - 1].to_vec(), "inside the frame payload"),
            ([&good[..], &[0]].concat(), "left over"),
            (with(&good, 32, &0u64.to_le_bytes()), "count 0"),
            (with(&good, 32, &u64::from(u32::MAX).to_le_bytes()), "cannot fit"),
            (with(&good, 32, &u64::MAX.to_le_bytes()), "out of range"),
            (with(&good, 24, &0u64.to_le_bytes()), "out of range"),
            (with(&good, 6, &9u16.to_le_bytes()), "unknown message type 9"),
            (with(&good, 4, &2u16.to_le_bytes()), "version 2"),
            (with(&good, HEADER + 12 + 4, &1000u32.to_le_bytes()), "more than the largest payload"),
            (with(&good, HEADER, &[0xff]), "not UTF-8"),
        ];
        for (bytes, why) in cases {
            let e = Message::decode(&bytes, 64).unwrap_err();
            assert!(e.0.contains(why), "{why:?} not in {e}");
        }
    }

    fn with(b: &[u8], at: usize, patch: &[u8]) -> Vec<u8> {
        let mut v = b.to_vec();
        v[at..at + patch.len()].copy_from_slice(patch);
        v
    }

    #[test]
    fn source_ids_differ() {
        assert_ne!(source_id("a", "bc"), source_id("ab", "c"));
    }
}
