//! Closed segments, compressed: `seg-NNNNNNNNNN.hxl.lz4` is segment N's
//! file, byte for byte, in the LZ4 frame format (with its content checksum;
//! `lz4 -d` restores it). Every reader of the ledger reads a compressed
//! segment as the plain one, decompressing a piece at a time as it reads
//! ([`open_segment`]); the format of the segment inside is untouched.
//!
//! A segment is compressed once closed (a later one exists), off the
//! recording thread: written under `.tmp`, synced, read back and compared,
//! renamed into place, and only then is the plain file removed. A crash at
//! any point leaves the plain file, a complete compressed one, or both
//! (readers then take the plain one, and the next pass compresses it
//! again); a `.tmp` left behind is removed when the recorder starts.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use super::anchor::sync_dir;
use super::folder;
use super::format::segment_name;
use super::store::{io_err, LedgerError};

/// The suffix of a compressed segment's file name, after `.hxl`.
pub const COMPRESSED_SUFFIX: &str = ".lz4";

/// The most a compressed segment may expand to: the largest segment the
/// recorder writes (`segment_size_mib` at most 64 GiB) and a last record
/// (at most 16 MiB and its header) past it. A file that claims more is
/// refused rather than read into memory without end.
pub(crate) const MAX_SEGMENT_BYTES: u64 = (64 << 30) + (32 << 20);

/// Whether `path` names a compressed segment.
pub fn is_compressed(path: &Path) -> bool {
    path.to_str().is_some_and(|p| p.ends_with(COMPRESSED_SUFFIX))
}

/// The compressed file name of segment `n`.
pub fn compressed_name(n: u64) -> String {
    format!("{}{COMPRESSED_SUFFIX}", segment_name(n))
}

/// The bytes of segment file `path`, decompressed if it is compressed. A
/// compressed file that does not decode (garbled, truncated, its checksum
/// wrong) is an error naming it.
///
/// A plain file that is gone is looked for under its compressed name: the
/// recorder compresses closed segments while readers read the folder.
pub fn read_segment(path: &Path) -> io::Result<Vec<u8>> {
    if is_compressed(path) {
        return decompress(path);
    }
    match folder::read(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => decompress(&compressed_path(path)).map_err(|_| e),
        r => r,
    }
}

/// The compressed file's path of the plain segment file `plain`.
pub(crate) fn compressed_path(plain: &Path) -> PathBuf {
    PathBuf::from(format!("{}{COMPRESSED_SUFFIX}", plain.display()))
}

/// The content of the LZ4 frame file `path`.
fn decompress(path: &Path) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let decoder = lz4_flex::frame::FrameDecoder::new(io::BufReader::new(folder::open_read(path)?));
    decoder.take(MAX_SEGMENT_BYTES + 1).read_to_end(&mut out).map_err(|e| {
        io::Error::new(io::ErrorKind::InvalidData, format!("compressed segment does not decode (LZ4 frame): {e}"))
    })?;
    if out.len() as u64 > MAX_SEGMENT_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("compressed segment expands past {MAX_SEGMENT_BYTES} bytes"),
        ));
    }
    Ok(out)
}

/// A reader of segment file `path`'s bytes, decompressing as it goes if the
/// file is compressed; a plain file that is gone is looked for under its
/// compressed name (as [`read_segment`]). Nothing is read ahead beyond a
/// buffer: a reader of one block at a time holds one block in memory, not
/// the segment.
pub fn open_segment(path: &Path) -> io::Result<Box<dyn Read + Send + Sync>> {
    open_segment_telling(path).map(|(r, _)| r)
}

/// [`open_segment`], and whether what it reads is compressed.
pub(crate) fn open_segment_telling(path: &Path) -> io::Result<(Box<dyn Read + Send + Sync>, bool)> {
    let packed = |file| -> (Box<dyn Read + Send + Sync>, bool) {
        (Box::new(lz4_flex::frame::FrameDecoder::new(io::BufReader::new(file))), true)
    };
    match folder::open_read(path) {
        Ok(file) if is_compressed(path) => Ok(packed(file)),
        Ok(file) => Ok((Box::new(io::BufReader::with_capacity(SEGMENT_READ_BUF, file)), false)),
        // Compressed meanwhile (as `read_segment`).
        Err(e) if e.kind() == io::ErrorKind::NotFound && !is_compressed(path) => {
            folder::open_read(&compressed_path(path)).map(packed).map_err(|_| e)
        }
        Err(e) => Err(e),
    }
}

/// The buffer of a plain segment read by [`open_segment`].
const SEGMENT_READ_BUF: usize = 256 << 10;

/// The first `n` bytes of segment file `path` (fewer if it is shorter),
/// decompressing only as much as needed.
pub fn read_segment_start(path: &Path, n: usize) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(n);
    open_segment(path)?.take(n as u64).read_to_end(&mut out)?;
    Ok(out)
}

/// Compresses the plain segment file `plain` (closed: the recorder
/// appends only to the newest) into `seg-N.hxl.lz4`, crash-safe as the
/// module says, and removes the plain file. Returns the sizes before and
/// after.
pub fn compress_segment(dir: &Path, plain: &Path) -> Result<(u64, u64), LedgerError> {
    // Streamed, a buffer at a time: this runs in the recorder's retention
    // thread, and a segment may be 64 MiB or more.
    let path = compressed_path(plain);
    let tmp = PathBuf::from(format!("{}.tmp", path.display()));
    let info = lz4_flex::frame::FrameInfo::new().content_checksum(true);
    let mut enc = lz4_flex::frame::FrameEncoder::with_frame_info(info, folder::create_new(&tmp).map_err(io_err(&tmp))?);
    let mut source = io::BufReader::with_capacity(SEGMENT_READ_BUF, folder::open_read(plain).map_err(io_err(plain))?);
    let before = io::copy(&mut source, &mut enc).map_err(io_err(plain))?;
    let file = enc.finish().map_err(|e| io_err(&tmp)(e.into()))?;
    file.sync_all().map_err(io_err(&tmp))?;
    drop(file);
    // Read back before the plain file goes: what was written must restore it.
    let mut written =
        lz4_flex::frame::FrameDecoder::new(io::BufReader::new(folder::open_read(&tmp).map_err(io_err(&tmp))?));
    let mut source = folder::open_read(plain).map_err(io_err(plain))?;
    if !same_bytes(&mut written, &mut source).map_err(io_err(&tmp))? {
        let _ = fs::remove_file(&tmp);
        let e = io::Error::new(io::ErrorKind::InvalidData, "the compressed file read back differs from the segment");
        return Err(io_err(&tmp)(e));
    }
    let size = fs::metadata(&tmp).map_err(io_err(&tmp))?.len();
    fs::rename(&tmp, &path).map_err(io_err(&path))?;
    sync_dir(dir).map_err(io_err(dir))?;
    fs::remove_file(plain).map_err(io_err(plain))?;
    sync_dir(dir).map_err(io_err(dir))?;
    Ok((before, size))
}

/// Whether readers `a` and `b` give the same bytes to their ends.
fn same_bytes(a: &mut impl Read, b: &mut impl Read) -> io::Result<bool> {
    let (mut x, mut y) = (vec![0u8; 64 << 10], vec![0u8; 64 << 10]);
    loop {
        let n = read_up_to(a, &mut x)?;
        if read_up_to(b, &mut y[..n.max(1)])? != n || x[..n] != y[..n] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

/// Reads until `buf` is full or the reader ends; the bytes read.
fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::anchor::hash_at;
    use crate::ledger::retention::tests::append;
    use crate::ledger::store::{segments, Ledger};
    use crate::ledger::verify::{head, verify, walk, VerifyFailure};

    /// A ledger of several 1 KiB segments, all closed ones compressed.
    fn compressed_ledger() -> (tempfile::TempDir, Vec<(u64, PathBuf)>) {
        let d = tempfile::tempdir().unwrap();
        let (mut l, _) = Ledger::open(d.path(), 1024).unwrap();
        append(&mut l, 1, 60);
        drop(l);
        let plain = segments(d.path()).unwrap();
        assert!(plain.len() >= 4);
        for (_, path) in &plain[..plain.len() - 1] {
            let (before, after) = compress_segment(d.path(), path).unwrap();
            assert!(after < before, "{after} < {before}");
            assert!(!path.exists());
        }
        let segs = segments(d.path()).unwrap();
        (d, segs)
    }

    fn flip(path: &Path, at: usize) {
        let mut b = fs::read(path).unwrap();
        b[at] ^= 0x40;
        fs::write(path, b).unwrap();
    }

    #[test]
    fn compressed_segments_read_as_the_plain_ones_and_the_ledger_resumes() {
        let d = tempfile::tempdir().unwrap();
        let (mut l, _) = Ledger::open(d.path(), 1024).unwrap();
        append(&mut l, 1, 60);
        drop(l);
        let before = verify(d.path()).unwrap().unwrap();
        let mut records = Vec::new();
        walk(d.path(), |at| records.push((at.index, at.hash.map(<[u8]>::to_vec)))).unwrap().unwrap();
        let at = segments(d.path()).unwrap()[1].0;
        let probe = hash_at(d.path(), 7).unwrap();

        let (d2, segs) = compressed_ledger();
        let dir = d2.path();
        assert!(segs[..segs.len() - 1].iter().all(|(_, p)| is_compressed(p)), "{segs:?}");
        assert_eq!(segs[1].1, dir.join(compressed_name(at)));
        // The same ledger, read through the compressed files.
        let after = verify(dir).unwrap().unwrap();
        assert_eq!((after.records, after.hash, after.segments), (before.records, before.hash, before.segments));
        let mut again = Vec::new();
        walk(dir, |at| again.push((at.index, at.hash.map(<[u8]>::to_vec)))).unwrap().unwrap();
        assert_eq!(again, records);
        assert_eq!(hash_at(dir, 7).unwrap(), probe);
        assert_eq!(head(dir).unwrap().unwrap().hash, before.hash);
        // The recorder appends to the newest (plain) segment and rotates.
        let (mut l, _) = Ledger::open(dir, 1024).unwrap();
        append(&mut l, 61, 30);
        drop(l);
        assert_eq!(verify(dir).unwrap().unwrap().rings[0].next_seq, 91);
    }

    #[test]
    fn an_interrupted_compression_leaves_a_folder_that_verifies() {
        let (d, segs) = compressed_ledger();
        let dir = d.path();
        let hash = verify(dir).unwrap().unwrap().hash;
        // Killed after the rename, before the plain file was removed: both
        // files, and readers take the plain one.
        let (n, packed) = &segs[1];
        let plain = dir.join(segment_name(*n));
        fs::write(&plain, read_segment(packed).unwrap()).unwrap();
        assert_eq!(segments(dir).unwrap()[1].1, plain);
        assert_eq!(verify(dir).unwrap().unwrap().hash, hash);
        // The next pass compresses it again.
        compress_segment(dir, &plain).unwrap();
        assert_eq!(segments(dir).unwrap()[1].1, *packed);
        // Killed before the rename: a temporary file, which is no segment.
        fs::write(dir.join(format!("{}.tmp", compressed_name(*n + 100))), b"half").unwrap();
        assert_eq!(verify(dir).unwrap().unwrap().hash, hash);
        let (_l, rec) = Ledger::open(dir, 1024).unwrap();
        assert_eq!(rec.removed.len(), 1);
    }

    #[test]
    fn a_corrupt_compressed_segment_is_reported_by_verify_naming_the_file() {
        let (d, segs) = compressed_ledger();
        let dir = d.path();
        let path = &segs[1].1;
        let len = fs::metadata(path).unwrap().len() as usize;
        // Garbled in the middle: the frame's checksum (or its block
        // structure) no longer holds.
        flip(path, len / 2);
        let f = verify(dir).unwrap().unwrap_err();
        assert!(matches!(&f, VerifyFailure::Unreadable { path: p, .. } if p == path), "{f}");
        let text = f.to_string();
        assert!(text.starts_with(&path.display().to_string()) && text.contains("does not decode"), "{text}");
        // Cut short.
        let (d, segs) = compressed_ledger();
        let path = &segs[2].1;
        let b = fs::read(path).unwrap();
        fs::write(path, &b[..b.len() - 9]).unwrap();
        assert!(matches!(verify(d.path()).unwrap(), Err(VerifyFailure::Unreadable { .. })));
        // Not LZ4 at all.
        fs::write(path, b"HELIXLDG not compressed").unwrap();
        assert!(verify(d.path()).unwrap().unwrap_err().to_string().contains("does not decode"));
    }

    #[test]
    fn the_recorder_refuses_a_compressed_newest_segment() {
        let (d, segs) = compressed_ledger();
        let (_, last) = segs.last().unwrap();
        compress_segment(d.path(), last).unwrap();
        let e = Ledger::open(d.path(), 1024).err().unwrap().to_string();
        assert!(e.contains(".hxl.lz4: the newest segment is compressed"), "{e}");
    }
}
