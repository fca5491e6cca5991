//! One segment file read forward while the recorder may still append to
//! it: the blocks are verified from the segment's header on (hash and
//! rules), and a block that is not whole yet ends what is visible.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};

use super::CatchUpError;
use crate::ledger::block::split;
use crate::ledger::chain::{Chain, Problem};
use crate::ledger::compress::{compressed_path, is_compressed, open_segment};
use crate::ledger::format::{SegmentHeader, Torn, SEGMENT_HEADER_LEN};

/// Bytes read at a time (a larger block is read on until it is whole).
const READ_CHUNK: u64 = 8 << 20;

/// A segment being read.
pub(super) struct Segment {
    /// Its number.
    pub n: u64,
    /// Its file.
    pub path: PathBuf,
    /// Its format version.
    pub version: u32,
    /// The chain after the last block handed out.
    pub chain: Chain,
    /// Where its bytes come from.
    source: Source,
    /// Bytes from offset `off` on (of the segment's content), as far as
    /// read.
    data: Vec<u8>,
    /// The next block's start in `data`.
    at: usize,
    off: u64,
    /// The file's length and time of change when it was last found to hold
    /// only zeros past what was read ([`Segment::written_past`]): not
    /// looked at again while they stay so (a catch-up looks every
    /// millisecond).
    zeros_to: Option<(u64, Option<std::time::SystemTime>)>,
}

/// Where a segment's bytes come from.
enum Source {
    /// A plain file, which the recorder may still append to: what was not
    /// a whole block at its end is read again from the file.
    Plain(File),
    /// A compressed segment (closed), decompressed as it is read: a piece
    /// at a time, like a plain one, not whole (a file of a few KiB may
    /// expand to tens of GiB).
    Packed(Box<dyn Read + Send + Sync>),
    /// A compressed segment that failed to decode: the decoder's state
    /// after an error is not to be read on (it may skip a block, or take
    /// a missing end for a clean one), so the failure is given again.
    Failed(std::io::ErrorKind, String),
}

/// What [`Segment::next_block`] found.
pub(super) enum Step {
    /// A verified block at this range of [`Segment::bytes`].
    Block(Range<usize>),
    /// Nothing more is visible: the end of the file, or a block that is
    /// not whole (being written, or torn by a crash: the recorder cuts it
    /// when it starts again). Its description, if there are bytes.
    End(Option<String>),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CatchUpError + '_ {
    move |error| CatchUpError::Io { path: path.to_owned(), error }
}

impl Segment {
    /// Opens segment `n` at `path`. With `prev` (the chain at the end of the
    /// segment before, and that segment's format version), its header must
    /// continue that chain, its version must not be lower, and its first
    /// blocks must restate that chain's rings at the sequences they reached,
    /// as `verify` checks.
    pub fn open(n: u64, path: &Path, prev: Option<(&Chain, u32)>) -> Result<Segment, CatchUpError> {
        let (path, mut source) = match open_source(path) {
            Ok(opened) => opened,
            Err(e) => return Err(io(path)(e)),
        };
        let path = path.as_path();
        let mut data = Vec::with_capacity(SEGMENT_HEADER_LEN);
        source.read(SEGMENT_HEADER_LEN as u64, &mut data).map_err(io(path))?;
        let bad = |problem: String| CatchUpError::Corrupt { path: path.to_owned(), offset: 0, problem };
        let header = SegmentHeader::decode(&data).map_err(|e| bad(format!("header: {e}")))?;
        if header.segment != n {
            return Err(bad(format!("header says it is segment {}", header.segment)));
        }
        let chain = match prev {
            Some((c, version)) => {
                if (header.prev_hash, header.first_record, header.first_block) != (c.hash, c.records, c.blocks) {
                    return Err(bad("header does not continue the chain of the segment before".into()));
                }
                if header.version < version {
                    return Err(bad(format!("format version {} after a segment of version {version}", header.version)));
                }
                let mut chain = c.clone();
                chain.begin_segment();
                chain
            }
            None => Chain::at_segment(&header),
        };
        let (version, path) = (header.version, path.to_owned());
        let mut s = Segment { n, path, version, chain, source, data, at: 0, off: 0, zeros_to: None };
        s.at = SEGMENT_HEADER_LEN;
        Ok(s)
    }

    /// The bytes a [`Step::Block`] range indexes.
    pub fn bytes(&self) -> &[u8] {
        &self.data
    }

    /// Reads what the segment holds past what was read (a piece of
    /// [`READ_CHUNK`]); returns how many bytes came.
    fn more(&mut self) -> Result<usize, CatchUpError> {
        if self.at > 0 {
            self.data.drain(..self.at);
            self.off += self.at as u64;
            self.at = 0;
        }
        let before = self.data.len();
        if let Source::Plain(f) = &mut self.source {
            f.seek(SeekFrom::Start(self.off + before as u64)).map_err(io(&self.path))?;
        }
        // Room for a piece, not a doubled vector.
        self.data.reserve_exact(READ_CHUNK as usize);
        if let Err(e) = self.source.read(READ_CHUNK, &mut self.data) {
            // What came before the failure is not served either.
            self.data.truncate(before);
            return Err(io(&self.path)(e));
        }
        Ok(self.data.len() - before)
    }

    /// The next block, verified and applied to the chain; or the end of
    /// what is visible. A bad block with bytes after it, a last block
    /// whose hash matches and that breaks a rule, or a block whose length
    /// field is impossible, is corruption (the recorder would refuse to
    /// append after it too: `recovery::is_torn_tail`): an error naming it.
    pub fn next_block(&mut self) -> Result<Step, CatchUpError> {
        loop {
            let rest = &self.data[self.at..];
            let (left, zeros) = (rest.len(), rest.iter().all(|&b| b == 0));
            let offset = self.off + self.at as u64;
            match split(self.version, rest) {
                Ok(block) => {
                    let len = block.header.len as usize;
                    match self.chain.apply_in(self.version, &block) {
                        Ok(()) => {
                            let start = self.at;
                            self.at += len;
                            return Ok(Step::Block(start..start + len));
                        }
                        // Only a last block whose hash does not match may
                        // be one still being written (or torn); one whose
                        // hash matches was written whole, and a rule it
                        // breaks is corruption, as the recorder holds it.
                        Err(p @ Problem::Hash) if len == left => {
                            if self.more()? > 0 {
                                continue;
                            }
                            return Ok(self.end(Some(format!("offset {offset}: {p}"))));
                        }
                        Err(p) => return Err(self.corrupt(offset, p.to_string())),
                    }
                }
                Err(Torn::ShortHeader | Torn::PastEnd { .. }) => {
                    if self.more()? > 0 {
                        continue;
                    }
                    let note = (left > 0).then(|| format!("offset {offset}: {left} bytes of a block"));
                    return Ok(self.end(note));
                }
                Err(t @ Torn::BadLength(_)) => {
                    // Zeros to the end of the file are a torn tail (a file
                    // extended, never written); blocks after them, as the
                    // recorder and `verify` hold it, corruption. (Found by
                    // review: only the piece read was looked at, and zeros
                    // longer than it were waited at for ever.)
                    if zeros && !self.written_past(self.off + self.data.len() as u64)? {
                        return Ok(self.end(Some(format!("offset {offset}: zero bytes"))));
                    }
                    return Err(self.corrupt(offset, t.to_string()));
                }
            }
        }
    }

    /// Whether a plain segment holds a byte other than zero from `from` to
    /// its end, looked at a piece at a time (not held), while the zeros
    /// read before `from` are zeros in the file still: a recorder started
    /// again cuts a torn tail and writes on, and what it wrote after the
    /// zeros read is no corruption (found by review).
    fn written_past(&mut self, from: u64) -> Result<bool, CatchUpError> {
        use std::os::unix::fs::FileExt;
        let Source::Plain(f) = &self.source else { return Ok(false) };
        let meta = f.metadata().map_err(io(&self.path))?;
        let now = (meta.len(), meta.modified().ok());
        if self.zeros_to == Some(now) {
            return Ok(false);
        }
        let mut piece = vec![0u8; 64 << 10];
        let zeros = |f: &File, piece: &mut [u8], mut at: u64, end: u64| -> std::io::Result<bool> {
            while at < end {
                let want = piece.len().min((end - at) as usize);
                match f.read_at(&mut piece[..want], at)? {
                    0 => return Ok(true),
                    n if piece[..n].iter().any(|&b| b != 0) => return Ok(false),
                    n => at += n as u64,
                }
            }
            Ok(true)
        };
        if zeros(f, &mut piece, from, u64::MAX).map_err(io(&self.path))? {
            self.zeros_to = Some(now);
            return Ok(false);
        }
        // Written past the zeros: corruption, if those are still zeros.
        let read_from = self.off + self.at as u64;
        zeros(f, &mut piece, read_from, from).map_err(io(&self.path))
    }

    /// The visible end: the bytes not read as a block are dropped, so the
    /// next look reads them again from the file (the recorder, started
    /// again, may have cut them and written others).
    fn end(&mut self, note: Option<String>) -> Step {
        if let Source::Plain(_) = self.source {
            self.data.truncate(self.at);
        }
        Step::End(note)
    }

    fn corrupt(&self, offset: u64, problem: String) -> CatchUpError {
        CatchUpError::Corrupt { path: self.path.clone(), offset, problem }
    }
}

/// Segment file `path` opened, and the path it was opened at: the
/// compressed file's if the plain one was compressed since the folder was
/// listed (and gone by now).
fn open_source(path: &Path) -> std::io::Result<(PathBuf, Source)> {
    if is_compressed(path) {
        return Ok((path.to_owned(), Source::Packed(open_segment(path)?)));
    }
    match crate::ledger::folder::open_read(path) {
        Ok(f) => Ok((path.to_owned(), Source::Plain(f))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let packed = compressed_path(path);
            match open_segment(&packed) {
                Ok(r) => Ok((packed, Source::Packed(r))),
                // Neither: the plain one is what was listed.
                Err(p) if p.kind() == std::io::ErrorKind::NotFound => Err(e),
                Err(p) => Err(p),
            }
        }
        Err(e) => Err(e),
    }
}

impl Source {
    /// Appends at most `n` bytes, from where the last read ended, to `out`.
    fn read(&mut self, n: u64, out: &mut Vec<u8>) -> std::io::Result<usize> {
        use std::io::{Error, ErrorKind};
        let decoded = match self {
            Source::Plain(f) => return f.take(n).read_to_end(out),
            Source::Packed(r) => r.take(n).read_to_end(out),
            Source::Failed(kind, what) => return Err(Error::new(*kind, what.clone())),
        };
        decoded.map_err(|e| {
            let what = format!("compressed segment does not decode (LZ4 frame): {e}");
            *self = Source::Failed(ErrorKind::InvalidData, what.clone());
            Error::new(ErrorKind::InvalidData, what)
        })
    }
}

/// The ring `name`'s declaration restated at the start of segment `path`,
/// without verifying: `(created_ns, next sequence)`. A hint to find where
/// to start; the blocks read from there are verified.
pub(super) fn restated(path: &Path, name: &str) -> Option<(u64, u64)> {
    use crate::ledger::compress::read_segment_start;
    use crate::ledger::format::{RecordType, RingDecl};
    let bytes = read_segment_start(path, 256 << 10).ok()?;
    let header = SegmentHeader::decode(&bytes).ok()?;
    let mut at = SEGMENT_HEADER_LEN;
    while let Ok(block) = split(header.version, &bytes[at..]) {
        if block.rtype() != Some(RecordType::Ring) {
            return None;
        }
        let decl = RingDecl::decode(block.body).ok()?;
        if decl.name == name {
            return Some((decl.created_ns, block.header.seq));
        }
        at += block.header.len as usize;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::compress::compress_segment;
    use crate::ledger::format::{segment_name, RingDecl};
    use crate::ledger::Ledger;

    /// A ledger folder of one segment, `blocks` blocks of frames after the
    /// ring's declaration, compressed; the plain segment's path (gone).
    fn compressed(blocks: u64) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let (mut ledger, _) = Ledger::open(dir.path(), 64 << 20).unwrap();
        let decl = RingDecl { created_ns: 1, capacity: 64, max_payload: 512, policy: 1, name: "t".into() };
        let (id, seq) = ledger.declare(&decl).unwrap();
        for s in seq..seq + blocks {
            ledger.reserve_frame(id, s, 1, 0, 7, 300).fill(s as u8);
            ledger.seal(id, 1);
        }
        ledger.flush().unwrap();
        drop(ledger);
        let plain = dir.path().join(segment_name(1));
        compress_segment(dir.path(), &plain).unwrap();
        (dir, plain)
    }

    /// The blocks read, up to the end or the first error.
    fn blocks(s: &mut Segment) -> Result<usize, CatchUpError> {
        let mut n = 0;
        while let Step::Block(_) = s.next_block()? {
            n += 1;
        }
        Ok(n)
    }

    #[test]
    fn a_segment_compressed_since_it_was_listed_is_read_and_named_by_its_compressed_file() {
        let (_dir, plain) = compressed(50);
        let mut s = Segment::open(1, &plain, None).unwrap();
        assert_eq!(s.path, compressed_path(&plain));
        // The declaration and 50 frames.
        assert_eq!(blocks(&mut s).unwrap(), 51);
    }

    #[test]
    fn a_compressed_segment_that_fails_to_decode_fails_again_and_is_never_read_past() {
        let (_dir, plain) = compressed(2000);
        let packed = compressed_path(&plain);
        let mut bytes = std::fs::read(&packed).unwrap();
        // The frame's content checksum (its last 4 bytes) made wrong: every
        // block decodes, and the end fails the check.
        let n = bytes.len();
        bytes[n - 1] ^= 0xff;
        std::fs::write(&packed, bytes).unwrap();
        let mut s = Segment::open(1, &packed, None).unwrap();
        let first = blocks(&mut s).unwrap_err().to_string();
        assert!(first.contains("does not decode") && first.contains(&*packed.to_string_lossy()), "{first}");
        // Looked at again (the newest segment is, while a catch-up waits
        // for more), it fails the same way rather than end cleanly.
        for _ in 0..3 {
            assert_eq!(s.next_block().err().map(|e| e.to_string()), Some(first.clone()));
        }
    }

    /// Found by review: zeros longer than a piece read (8 MiB), with blocks
    /// after them, were taken for a torn tail and waited at for ever;
    /// `verify` and the recorder call the file corrupt. Zeros to the end
    /// are still a torn tail.
    #[test]
    fn zeros_longer_than_a_piece_then_blocks_are_corruption_and_to_the_end_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ledger, _) = Ledger::open(dir.path(), 64 << 20).unwrap();
        let decl = RingDecl { created_ns: 1, capacity: 64, max_payload: 512, policy: 1, name: "t".into() };
        let (id, seq) = ledger.declare(&decl).unwrap();
        for s in seq..seq + 3 {
            ledger.reserve_frame(id, s, 1, 0, 7, 300).fill(s as u8);
            ledger.seal(id, 1);
        }
        ledger.flush().unwrap();
        drop(ledger);
        let path = dir.path().join(segment_name(1));
        let whole = std::fs::read(&path).unwrap();
        let zeros = vec![0u8; (READ_CHUNK + (1 << 20)) as usize];
        std::fs::write(&path, [&whole[..], &zeros[..]].concat()).unwrap();
        let mut s = Segment::open(1, &path, None).unwrap();
        assert_eq!(blocks(&mut s).unwrap(), 4, "the declaration and 3 frames, then a torn tail");
        // Bytes of a block after the zeros.
        let last_block = &whole[whole.len() - 344..];
        std::fs::write(&path, [&whole[..], &zeros[..], last_block].concat()).unwrap();
        let mut s = Segment::open(1, &path, None).unwrap();
        let e = blocks(&mut s).unwrap_err().to_string();
        assert!(e.contains(&format!("offset {}", whole.len())), "{e}");
    }
}
