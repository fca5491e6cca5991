//! Scanning a segment file a piece at a time: `verify`, `head`, `export`,
//! `replay` and the recorder's start read segments of any size (up to the
//! 64 GiB `segment_size_mib` allows, or a sparse file someone put under a
//! segment's name) holding a piece of it in memory, not the file.

use std::io::{self, Read};
use std::path::Path;

use super::block::{split, BlockView};
use super::chain::{BadRecord, Chain, Problem};
use super::compress::{open_segment_telling, MAX_SEGMENT_BYTES};
use super::format::{SegmentHeader, Torn, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
use super::recovery::torn_rule;

/// Bytes read into memory at a time (more while a block longer than this
/// is read whole: blocks are at most 64 MiB).
const PIECE: usize = 8 << 20;

/// What a scan of a segment's blocks found.
#[derive(Debug)]
pub struct Scanned {
    /// The segment's length in bytes (decompressed).
    pub len: u64,
    /// The first bad block; the chain stopped before it.
    pub bad: Option<BadRecord>,
    /// Whether that block is the torn end of an interrupted append
    /// ([`is_torn_tail`](super::store::is_torn_tail)'s rule).
    pub torn: bool,
    /// The bytes after that block, if its framing can be read (all of
    /// them from its offset otherwise).
    pub follow: u64,
}

/// An open segment file, its header read.
pub struct SegmentFile {
    reader: io::Take<Box<dyn Read + Send + Sync>>,
    /// Whether the file is compressed: a read that fails is then the
    /// frame's fault.
    compressed: bool,
    /// Bytes read at a time ([`PIECE`]; tests use small ones).
    piece: usize,
    /// The header's bytes.
    pub head: Vec<u8>,
}

impl SegmentFile {
    /// Opens segment file `path` (compressed or not, as
    /// [`open_segment`](super::compress::open_segment)) and reads its
    /// header's bytes (fewer if the file is shorter).
    pub fn open(path: &Path) -> io::Result<SegmentFile> {
        let (reader, compressed) = open_segment_telling(path)?;
        // A compressed file could expand without end: it is cut off past
        // what a segment may hold. A plain one is as long as it is.
        let limit = if compressed { MAX_SEGMENT_BYTES + 1 } else { u64::MAX };
        let mut file = SegmentFile { reader: reader.take(limit), compressed, piece: PIECE, head: Vec::new() };
        let mut head = Vec::with_capacity(SEGMENT_HEADER_LEN);
        let r = (&mut file.reader).take(SEGMENT_HEADER_LEN as u64).read_to_end(&mut head);
        file.failed(r)?;
        file.head = head;
        Ok(file)
    }

    /// A read's result; a failed read of a compressed file is the file's
    /// fault, not the system's: `InvalidData`, naming the frame.
    fn failed<T>(&self, r: io::Result<T>) -> io::Result<T> {
        r.map_err(|e| match self.compressed {
            true => io::Error::new(
                io::ErrorKind::InvalidData,
                format!("compressed segment does not decode (LZ4 frame): {e}"),
            ),
            false => e,
        })
    }

    /// `Err` once a compressed file has expanded past what a segment may
    /// hold.
    fn too_long(&self) -> io::Result<()> {
        if self.compressed && self.reader.limit() == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("compressed segment expands past {MAX_SEGMENT_BYTES} bytes"),
            ));
        }
        Ok(())
    }

    /// The header.
    pub fn header(&self) -> Result<SegmentHeader, super::format::HeaderError> {
        SegmentHeader::decode(&self.head)
    }

    /// Scans the blocks after the header (of format `version`) into
    /// `chain`, as [`Chain::scan`] would scan the whole file's bytes:
    /// `visit` sees every good block with its file offset, and the scan
    /// stops at the first bad one.
    pub fn scan(
        mut self,
        chain: &mut Chain,
        version: u32,
        mut visit: impl FnMut(&Chain, &BlockView<'_>, u64),
    ) -> io::Result<Scanned> {
        let piece = self.piece;
        let mut buf = Vec::with_capacity(piece);
        // The file offset of `buf[0]`.
        let mut base = self.head.len() as u64;
        let mut want = piece;
        loop {
            let eof = self.fill(&mut buf, want)?;
            let Err(bad) = chain.scan(&buf, base, version, &mut visit) else {
                base += buf.len() as u64;
                buf.clear();
                // Back to a piece after a block longer than one.
                buf.shrink_to(piece);
                if eof {
                    return Ok(Scanned { len: base, bad: None, torn: false, follow: 0 });
                }
                want = piece;
                continue;
            };
            let at = (bad.offset - base) as usize;
            match bad.problem {
                // A block that runs past what is read so far: read on, at
                // least to its end (each turn reads more, or reaches the
                // end of the file).
                Problem::Torn(Torn::ShortHeader) if !eof => want = piece.max(RECORD_HEADER_LEN),
                Problem::Torn(Torn::PastEnd { len, .. }) if !eof => want = piece.max(len as usize),
                _ => return self.judge(bad, &buf[at..], version),
            }
            buf.drain(..at);
            base = bad.offset;
        }
    }

    /// Reads until `buf` holds `want` bytes or the file ends; true at its
    /// end.
    fn fill(&mut self, buf: &mut Vec<u8>, want: usize) -> io::Result<bool> {
        let more = want.saturating_sub(buf.len());
        // Room for exactly what is wanted: a block longer than a piece
        // takes its own length, not the doubling a growing vector makes.
        buf.reserve_exact(more);
        let r = (&mut self.reader).take(more as u64).read_to_end(buf);
        let got = self.failed(r)?;
        self.too_long()?;
        Ok(got < more)
    }

    /// What the bad block `bad`, whose bytes and the file's after it
    /// begin `rest`, is: torn or not, and how much follows it. Reads the
    /// rest of the file a piece at a time.
    fn judge(mut self, bad: BadRecord, rest: &[u8], version: u32) -> io::Result<Scanned> {
        let framed = split(version, rest).ok().map(|b| u64::from(b.header.len));
        let mut after = rest.len() as u64;
        let mut zeros = rest.iter().all(|&b| b == 0);
        let mut piece = vec![0u8; 64 << 10];
        loop {
            let n = match self.reader.read(&mut piece) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => self.failed(r)?,
            };
            if n == 0 {
                break;
            }
            after += n as u64;
            zeros = zeros && piece[..n].iter().all(|&b| b == 0);
            self.too_long()?;
        }
        let torn = torn_rule(&bad.problem, framed, after, zeros);
        let follow = after - framed.unwrap_or(0);
        Ok(Scanned { len: bad.offset + after, torn, follow, bad: Some(bad) })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::ledger::format::{segment_name, RingDecl};
    use crate::ledger::Ledger;

    /// A segment of a few hundred blocks of frames of several sizes.
    fn segment() -> (tempfile::TempDir, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let (mut ledger, _) = Ledger::open(dir.path(), 64 << 20).unwrap();
        let decl = RingDecl { created_ns: 1, capacity: 64, max_payload: 512, policy: 1, name: "t".into() };
        let (id, mut seq) = ledger.declare(&decl).unwrap();
        for batch in 0..300u64 {
            for _ in 0..=batch % 7 {
                ledger.reserve_frame(id, seq, 1, 0, 7, 8 + (seq as usize * 37) % 400).fill(seq as u8);
                ledger.seal(id, 1);
                seq += 1;
            }
            ledger.flush().unwrap();
        }
        drop(ledger);
        let bytes = std::fs::read(dir.path().join(segment_name(1))).unwrap();
        (dir, bytes)
    }

    /// What scanning `bytes` whole finds, as the scan did before it read a
    /// piece at a time: the chain, the bad block, torn or not, what
    /// follows it.
    fn whole(bytes: &[u8]) -> (Chain, Option<BadRecord>, bool, u64) {
        let header = SegmentHeader::decode(bytes).unwrap();
        let mut chain = Chain::at_segment(&header);
        let bad =
            chain.scan(&bytes[SEGMENT_HEADER_LEN..], SEGMENT_HEADER_LEN as u64, header.version, |_, _, _| {}).err();
        let Some(bad) = bad else { return (chain, None, false, 0) };
        let torn = crate::ledger::store::is_torn_tail(bytes, header.version, &bad);
        let rest = &bytes[bad.offset as usize..];
        let follow =
            split(header.version, rest).map_or(rest.len() as u64, |b| (rest.len() - b.header.len as usize) as u64);
        (chain, Some(bad), torn, follow)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Read in pieces of any size, a segment cut anywhere, with a byte
        /// changed anywhere, or with zeros or garbage after it, scans to
        /// the chain, bad block, torn verdict and length that scanning it
        /// whole gives.
        #[test]
        fn a_segment_scanned_a_piece_at_a_time_scans_as_it_does_whole(
            piece in prop_oneof![1usize..64, 64usize..5000],
            cut in any::<proptest::sample::Index>(),
            flip in proptest::option::of((any::<proptest::sample::Index>(), 1u8..=255)),
            tail in proptest::option::of((any::<bool>(), 1usize..3000)),
        ) {
            let (dir, mut bytes) = segment();
            let keep = SEGMENT_HEADER_LEN + cut.index(bytes.len() - SEGMENT_HEADER_LEN + 1);
            bytes.truncate(keep);
            if let Some((at, x)) = flip.filter(|_| keep > SEGMENT_HEADER_LEN) {
                let i = SEGMENT_HEADER_LEN + at.index(keep - SEGMENT_HEADER_LEN);
                bytes[i] ^= x;
            }
            if let Some((zeros, n)) = tail {
                bytes.extend((0..n).map(|i| if zeros { 0 } else { (i * 131 % 251) as u8 + 1 }));
            }
            let path = dir.path().join(segment_name(1));
            std::fs::write(&path, &bytes).unwrap();
            let (chain, bad, torn, follow) = whole(&bytes);

            let mut file = SegmentFile::open(&path).unwrap();
            file.piece = piece;
            let header = file.header().unwrap();
            let mut read = Chain::at_segment(&header);
            let scanned = file.scan(&mut read, header.version, |_, _, _| {}).unwrap();
            prop_assert_eq!(read, chain);
            prop_assert_eq!(scanned.len, bytes.len() as u64);
            prop_assert_eq!(scanned.torn, torn);
            prop_assert_eq!(scanned.bad, bad.clone());
            if bad.is_some() {
                prop_assert_eq!(scanned.follow, follow);
            }
        }
    }
}
