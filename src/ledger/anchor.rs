//! Anchors: chain hashes recorded as exported off the host.
//!
//! The chain proves that nothing was changed in the middle relative to its
//! last hash; a hash kept somewhere else proves that the records up to it
//! were not cut off or rewritten. The file `anchors` in the ledger folder
//! lists the hashes that were exported (by `helix-ledger anchor`, or by a
//! mirroring tool that appends the same lines), one line each, append-only,
//! each line carrying its own checksum (docs/ledger.md, "Anchors"). The
//! recorder's retention deletes only segments whose last record an anchor
//! that still matches the chain covers.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::block::{MAX_BLOCK_BODY, MIN_BLOCK_LEN};
use super::chain::Chain;
use super::compress::{open_segment, read_segment_start};
use super::format::*;
use super::store::{io_err, segments, LedgerError};

mod newest;
pub use newest::NewestAnchor;

/// The anchors file in a ledger folder.
pub const ANCHORS_FILE: &str = "anchors";

/// Hex digits of a line's checksum: the first 8 bytes of its Blake3.
const CHECK_HEX: usize = 16;

/// The longest line of the anchors file, its newline included. A line is
/// read only up to this: a sparse file of the memory's size (anyone who
/// may write the folder can make one) would otherwise be read whole into
/// memory by `verify`, the recorder's start and its metrics.
const MAX_ANCHOR_LINE: usize = 4096;

/// One line of `r` into `line` (cleared first), its newline kept, read up
/// to [`MAX_ANCHOR_LINE`] bytes; false at the end of the file.
pub(super) fn next_line(r: &mut impl BufRead, line: &mut Vec<u8>) -> io::Result<bool> {
    line.clear();
    Ok(r.take(MAX_ANCHOR_LINE as u64).read_until(b'\n', line)? > 0)
}

/// Why a line read by [`next_line`] without its newline is not one to
/// wait for (an append in progress): it is as long as a line may be.
pub(super) fn too_long(line: &[u8]) -> Option<String> {
    (line.len() >= MAX_ANCHOR_LINE).then(|| format!("longer than {MAX_ANCHOR_LINE} bytes (not an anchors file?)"))
}

/// A chain hash recorded as exported: the ledger's first `records` records
/// end at `hash`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    /// Records the anchored chain covers (the anchored hash is record
    /// `records - 1`'s).
    pub records: u64,
    /// The chain hash after those records.
    pub hash: Hash,
    /// CLOCK_REALTIME (ns) when it was recorded.
    pub time_ns: u64,
    /// Free text (where it was exported to), without control characters.
    pub note: String,
}

/// A line of a file the ledger keeps beside its segments (`anchors`,
/// `pruned`) that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    /// The file could not be read or written.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        error: io::Error,
    },
    /// A line that is not what the format says.
    #[error("{path}: line {line}: {problem}")]
    Bad {
        /// The file.
        path: PathBuf,
        /// The line, from 1.
        line: usize,
        /// What is wrong.
        problem: String,
    },
}

/// `text` followed by its checksum: one line of a checked file, without
/// its newline.
pub(super) fn checked_line(text: &str) -> String {
    let sum = blake3::hash(text.as_bytes());
    format!("{text} {}", &hex(sum.as_bytes())[..CHECK_HEX])
}

/// The text of a checked line, if its checksum (the last field) matches.
pub(super) fn check_line(line: &str) -> Result<&str, String> {
    if let Some(c) = line.chars().find(|c| c.is_control()) {
        return Err(format!("control character {c:?} in the line"));
    }
    let (text, sum) = line.rsplit_once(' ').ok_or("no checksum (the last field)")?;
    if checked_line(text) != line {
        return Err(format!("checksum {sum:?} does not match the line (garbled or edited by hand)"));
    }
    Ok(text)
}

/// Parses a 64-digit hex chain hash.
pub fn parse_hash(s: &str) -> Result<Hash, String> {
    parse_hex(s, "a chain hash")
}

/// Parses `2 × N` hex digits into `N` bytes; `what` names them in the error.
pub(super) fn parse_hex<const N: usize>(s: &str, what: &str) -> Result<[u8; N], String> {
    let bad = || format!("{s:?} is not {what} ({} hex digits)", 2 * N);
    if s.len() != 2 * N || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let mut h = [0u8; N];
    for (i, b) in h.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(h)
}

/// Parses a decimal field named `what`.
pub(super) fn parse_u64(s: &str, what: &str) -> Result<u64, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{what} {s:?} is not a decimal number"));
    }
    s.parse().map_err(|_| format!("{what} {s:?} is too large"))
}

impl Anchor {
    /// The line (without its newline): `anchor RECORDS HASH TIME_NS NOTE CHECK`,
    /// the note possibly empty.
    pub fn encode(&self) -> String {
        checked_line(&format!("anchor {} {} {} {}", self.records, hex(&self.hash), self.time_ns, self.note))
    }

    /// Decodes one line.
    pub fn decode(line: &str) -> Result<Anchor, String> {
        let text = check_line(line)?;
        let mut f = text.splitn(5, ' ');
        if f.next() != Some("anchor") {
            return Err("does not start with `anchor`".into());
        }
        let mut field = |what: &str| f.next().ok_or_else(|| format!("no {what}"));
        let records = parse_u64(field("record count")?, "record count")?;
        let hash = parse_hash(field("hash")?)?;
        let time_ns = parse_u64(field("time")?, "time")?;
        let note = field("note")?.to_owned();
        if records == 0 {
            return Err("an anchor of 0 records anchors nothing".into());
        }
        Ok(Anchor { records, hash, time_ns, note })
    }
}

/// The anchors file's lines, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Anchors {
    /// (line number from 1, anchor).
    pub list: Vec<(usize, Anchor)>,
    /// The line number of a last line without its newline: an append in
    /// progress, or one cut short. It is not read.
    pub incomplete: Option<usize>,
}

/// Reads `dir/anchors` (no file: no anchors). The first bad line is an
/// error naming it.
pub fn read_anchors(dir: &Path) -> Result<Anchors, LineError> {
    let mut list = Vec::new();
    let incomplete = scan_anchors(dir, |line, a| list.push((line, a)))?;
    Ok(Anchors { list, incomplete })
}

/// The `most` anchors of more than `floor` records that come after
/// `after` (an anchor's record count and line) in the order of most
/// records first, of equal counts the first in the file (`None`: from the
/// first): what retention asks of the file each pass, the highest anchors
/// first, then the next ones. The file grows by a line every few seconds
/// while heads are exported; it was held whole (found by review).
pub fn read_anchors_top(
    dir: &Path,
    floor: u64,
    after: Option<(u64, usize)>,
    most: usize,
) -> Result<Anchors, LineError> {
    let key = |records: u64, line: usize| (std::cmp::Reverse(records), line);
    let order = |list: &mut Vec<(usize, Anchor)>| list.sort_by_key(|(line, a)| key(a.records, *line));
    let mut list = Vec::new();
    let incomplete = scan_anchors(dir, |line, a| {
        if a.records > floor && after.is_none_or(|(records, at)| key(a.records, line) > key(records, at)) {
            list.push((line, a));
            if list.len() >= 2 * most.max(1) {
                order(&mut list);
                list.truncate(most);
            }
        }
    })?;
    order(&mut list);
    list.truncate(most);
    Ok(Anchors { list, incomplete })
}

/// Reads `dir/anchors` a line at a time (no file: no anchors), handing
/// each anchor to `each` with its line number; returns the line number of
/// a last line without its newline, if any (it is not read). The first bad
/// line is an error naming it. Holds a line in memory, not the file.
pub fn scan_anchors(dir: &Path, mut each: impl FnMut(usize, Anchor)) -> Result<Option<usize>, LineError> {
    let path = dir.join(ANCHORS_FILE);
    let mut r = match open_anchors(&path, false) {
        Ok((f, _)) => BufReader::new(f),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(LineError::Io { path, error }),
    };
    let mut raw = Vec::new();
    for i in 1.. {
        match next_line(&mut r, &mut raw) {
            Ok(true) => {}
            Ok(false) => break,
            Err(error) => return Err(LineError::Io { path, error }),
        }
        let bad = |problem: String| LineError::Bad { path: path.clone(), line: i, problem };
        let Some(line) = raw.strip_suffix(b"\n") else {
            if let Some(problem) = too_long(&raw) {
                return Err(bad(problem));
            }
            return Ok(Some(i));
        };
        let text = std::str::from_utf8(line).map_err(|_| bad("not UTF-8".into()))?;
        each(i, Anchor::decode(text).map_err(bad)?);
    }
    Ok(None)
}

/// Appends `anchor` to `dir/anchors` in one `write(2)` (O_APPEND, so
/// concurrent appenders do not interleave) and makes it durable. The
/// file's existing lines are checked first: a garbled file is an error
/// naming its line, and nothing is appended to it.
pub fn append_anchor(dir: &Path, anchor: &Anchor) -> Result<(), LineError> {
    let path = dir.join(ANCHORS_FILE);
    if let Some(line) = scan_anchors(dir, |_, _| {})? {
        return Err(LineError::Bad {
            path,
            line,
            problem: "the last line has no newline (an append cut short?): remove it, then anchor again".into(),
        });
    }
    if anchor.note.chars().any(char::is_control) {
        return Err(LineError::Bad { path, line: 0, problem: "the note must not hold control characters".into() });
    }
    let line = format!("{}\n", anchor.encode());
    if line.len() > MAX_ANCHOR_LINE {
        let problem = format!("the note is too long: a line may be {MAX_ANCHOR_LINE} bytes at the most");
        return Err(LineError::Bad { path, line: 0, problem });
    }
    let io = |error| LineError::Io { path: path.clone(), error };
    let (mut file, created) = open_anchors(&path, true).map_err(io)?;
    if created {
        give_to_folder_owner(dir, &file);
    }
    file.write_all(line.as_bytes()).map_err(io)?;
    file.sync_data().map_err(io)?;
    sync_dir(dir).map_err(io)
}

/// Opens the anchors file at `path` to read it, or to append to it
/// (`append`: made if there is none; then also whether this call made it).
/// Only a regular file is opened. Whoever may write the folder could put a
/// link there, to a file of root's say, that an operator's `sudo
/// helix-ledger anchor` would follow, make, write and give to the folder's
/// owner; a FIFO would hold every reader of it (the recorder's retention
/// too) waiting for a writer.
pub(super) fn open_anchors(path: &Path, append: bool) -> io::Result<(File, bool)> {
    let open = |create_new: bool| {
        let mut o = OpenOptions::new();
        match (append, create_new) {
            (true, true) => o.append(true).create_new(true).mode(0o640),
            (true, false) => o.append(true),
            (false, _) => o.read(true),
        };
        super::folder::open(path, &mut o)
    };
    match open(append) {
        Ok(f) => Ok((f, append)),
        // A link, even one to nothing, makes `create_new` fail as existing.
        Err(e) if append && e.kind() == io::ErrorKind::AlreadyExists => Ok((open(false)?, false)),
        Err(e) => Err(e),
    }
}

/// Gives `file` (in `dir`) to the folder's owner and group, where this
/// process may (root, as an operator's `sudo helix-ledger anchor`): the
/// recorder, which runs as the folder's owner, must read it. Elsewhere the
/// file is already the caller's, who owns the folder or was let write it.
fn give_to_folder_owner(dir: &Path, file: &File) {
    use std::os::unix::fs::MetadataExt;
    if let (Ok(d), Ok(f)) = (fs::metadata(dir), file.metadata()) {
        if (d.uid(), d.gid()) != (f.uid(), f.gid()) {
            let _ = std::os::unix::fs::fchown(file, Some(d.uid()), Some(d.gid()));
        }
    }
}

/// Makes a folder's entries (a file created, renamed or removed) durable.
pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The chain hash after the ledger's first `records` records, read from the
/// segment that holds record `records - 1` (or from the header of the
/// segment that starts there). `None` if no block ends there (a chain hash
/// is kept per block), or the folder does not hold that record: the
/// ledger is shorter, or it was pruned.
pub fn hash_at(dir: &Path, records: u64) -> Result<Option<Hash>, LedgerError> {
    let mut holder = None;
    for (_, path) in segments(dir)? {
        let header = read_header(&path)?;
        if header.first_record == records && header.first_record > 0 {
            return Ok(Some(header.prev_hash));
        }
        if header.first_record < records {
            holder = Some((header, path));
        }
    }
    let Some((header, path)) = holder else { return Ok(None) };
    // One block at a time: a segment may be 64 MiB or more, and this runs
    // in the recorder's retention thread at every new anchor (reading the
    // whole segment into memory stepped the recorder's RSS by 22 MiB in the
    // one-hour soak: glibc kept the freed buffer in the thread's arena).
    let mut reader = open_segment(&path).map_err(io_err(&path))?;
    io::copy(&mut (&mut reader).take(SEGMENT_HEADER_LEN as u64), &mut io::sink()).map_err(io_err(&path))?;
    let mut chain = Chain::at_segment(&header);
    let mut found = None;
    let mut block = Vec::new();
    let mut offset = SEGMENT_HEADER_LEN as u64;
    // A bad or torn block ends the scan: the hash is found before it or not
    // at all. A chain hash is kept per block (per record in version 1): an
    // anchor counts the records of whole blocks, as `head` prints them.
    while chain.records < records && next_block(&mut reader, &mut block).map_err(io_err(&path))? {
        let scanned = chain.scan(&block, offset, header.version, |c, _, _| {
            if c.records == records {
                found = Some(c.hash);
            }
        });
        if scanned.is_err() {
            break;
        }
        offset += block.len() as u64;
    }
    Ok(found)
}

/// Reads the next block (a version-1 record) of a segment into `block`;
/// false at the end of the segment, at a torn last block, or at a length no
/// block can have (the scan that called reports nothing past it).
fn next_block(reader: &mut impl Read, block: &mut Vec<u8>) -> io::Result<bool> {
    /// The longest block of either version: its header, the largest body, its hash.
    const MAX_BLOCK: usize = MIN_BLOCK_LEN + if MAX_BLOCK_BODY > MAX_PAYLOAD { MAX_BLOCK_BODY } else { MAX_PAYLOAD };
    let mut len = [0u8; 4];
    if !read_full(reader, &mut len)? {
        return Ok(false);
    }
    let len = u32::from_le_bytes(len) as usize;
    if !(MIN_BLOCK_LEN.min(MIN_RECORD_LEN)..=MAX_BLOCK).contains(&len) {
        return Ok(false);
    }
    block.clear();
    block.extend_from_slice(&(len as u32).to_le_bytes());
    block.resize(len, 0);
    read_full(reader, &mut block[4..])
}

/// Fills `buf`; false if the reader ends first.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    match reader.read_exact(buf) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// The header of segment file `path`.
pub fn read_header(path: &Path) -> Result<SegmentHeader, LedgerError> {
    let b = read_segment_start(path, SEGMENT_HEADER_LEN).map_err(io_err(path))?;
    SegmentHeader::decode(&b).map_err(|problem| LedgerError::Header { path: path.to_owned(), problem })
}

/// An anchor that does not match the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmatched {
    /// Its line in the anchors file.
    pub line: usize,
    /// The anchor.
    pub anchor: Anchor,
    /// Why it does not match.
    pub problem: String,
}

/// How far the anchors cover the ledger in `dir`: the record count of the
/// highest anchor whose hash is the chain's hash at that count (at least
/// `floor`: a count already checked, or the records pruned), and the
/// anchors above it that did not match, highest first. Anchors are checked
/// highest first, each by reading the segment that holds its record.
pub fn covered(dir: &Path, anchors: &Anchors, floor: u64) -> Result<(u64, Vec<Unmatched>), LedgerError> {
    let mut list: Vec<&(usize, Anchor)> = anchors.list.iter().filter(|(_, a)| a.records > floor).collect();
    list.sort_by_key(|(line, a)| (std::cmp::Reverse(a.records), *line));
    let mut unmatched = Vec::new();
    for (line, a) in list {
        let problem = match hash_at(dir, a.records)? {
            Some(h) if h == a.hash => return Ok((a.records, unmatched)),
            Some(h) => format!(
                "the chain's hash after {} records is {}, not {}: the ledger was rewritten, or the anchor is another ledger's",
                a.records,
                hex(&h),
                hex(&a.hash)
            ),
            None => format!(
                "the folder holds no chain hash after {} records: no block ends there, or the ledger is shorter \
                 (records lost in a power failure, or the anchor is another ledger's)",
                a.records
            ),
        };
        unmatched.push(Unmatched { line: *line, anchor: a.clone(), problem });
    }
    Ok((floor, unmatched))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anchor(records: u64) -> Anchor {
        Anchor { records, hash: [0xab; HASH_LEN], time_ns: 17, note: "copied to the historian".into() }
    }

    #[test]
    fn lines_round_trip_and_garbled_ones_are_named() {
        let a = anchor(1000);
        let line = a.encode();
        assert!(line.starts_with("anchor 1000 abab"), "{line}");
        assert_eq!(Anchor::decode(&line), Ok(a.clone()));
        let empty = Anchor { note: String::new(), ..a.clone() };
        assert_eq!(Anchor::decode(&empty.encode()), Ok(empty));
        // Any byte changed breaks the checksum.
        let edited = line.replacen("1000", "2000", 1);
        assert!(Anchor::decode(&edited).unwrap_err().contains("checksum"), "{edited}");
        assert!(Anchor::decode("anchor 5").unwrap_err().contains("checksum"));
        assert!(Anchor::decode("").unwrap_err().contains("no checksum"));
        assert!(Anchor::decode("anchor\t1").unwrap_err().contains("control character"));
        let zero = Anchor { records: 0, ..a.clone() };
        assert!(Anchor::decode(&zero.encode()).unwrap_err().contains("anchors nothing"));
        let bad_hash = checked_line("anchor 5 xyz 1 note");
        assert!(Anchor::decode(&bad_hash).unwrap_err().contains("not a chain hash"), "{bad_hash}");
        assert!(Anchor::decode(&checked_line("head 5")).unwrap_err().contains("does not start with"));
        assert_eq!(parse_hash(&hex(&[7; 32])), Ok([7; 32]));
    }

    #[test]
    fn the_newest_anchor_follows_the_file_as_it_grows_is_replaced_or_goes_bad() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(ANCHORS_FILE);
        let append = |text: &str| {
            OpenOptions::new().append(true).create(true).open(&path).unwrap().write_all(text.as_bytes()).unwrap()
        };
        let mut n = NewestAnchor::default();
        assert_eq!(n.refresh(dir.path()), None);
        append(&format!("{}\n{}\n", anchor(10).encode(), anchor(30).encode()));
        assert_eq!(n.refresh(dir.path()).map(|a| a.records), Some(30));
        // An older anchor appended later does not hide a newer one; a line
        // being written (no newline yet) is taken once it is whole.
        let line = anchor(50).encode();
        append(&format!("{}\n{}", anchor(20).encode(), &line[..9]));
        assert_eq!(n.refresh(dir.path()).map(|a| a.records), Some(30));
        append(&format!("{}\n", &line[9..]));
        assert_eq!(n.refresh(dir.path()).map(|a| a.records), Some(50));
        // What `read_anchors` refuses counts for nothing.
        append("garbage\n");
        assert!(read_anchors(dir.path()).is_err());
        assert_eq!(n.refresh(dir.path()), None);
        let good = fs::metadata(&path).unwrap().len() - "garbage\n".len() as u64;
        append(&format!("{}\n", anchor(60).encode()));
        assert_eq!(n.refresh(dir.path()), None);
        // The bad line cut out in place (an operator's editor, `truncate`):
        // counted again.
        OpenOptions::new().write(true).open(&path).unwrap().set_len(good).unwrap();
        assert_eq!(n.refresh(dir.path()).map(|a| a.records), Some(50));
        // A file replaced (or cut shorter) is read from its start.
        let tmp = dir.path().join("new");
        fs::write(&tmp, format!("{}\n", anchor(5).encode())).unwrap();
        fs::rename(&tmp, &path).unwrap();
        assert_eq!(n.refresh(dir.path()).map(|a| a.records), Some(5));
        fs::remove_file(&path).unwrap();
        assert_eq!(n.refresh(dir.path()), None);
    }

    /// An operator's `sudo helix-ledger anchor` must leave a file the
    /// recorder (the folder's owner) can read. Checked where the test runs
    /// as root, as CI does.
    #[test]
    fn an_anchors_file_created_by_root_belongs_to_the_folders_owner() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        if std::os::unix::fs::chown(dir.path(), Some(65534), Some(65534)).is_err() {
            return; // not root
        }
        append_anchor(dir.path(), &anchor(1)).unwrap();
        let m = fs::metadata(dir.path().join(ANCHORS_FILE)).unwrap();
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o777), (65534, 65534, 0o640));
    }

    #[test]
    fn the_anchors_file_names_its_bad_line_and_ignores_an_append_in_progress() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_anchors(dir.path()).unwrap(), Anchors::default());
        append_anchor(dir.path(), &anchor(10)).unwrap();
        append_anchor(dir.path(), &anchor(20)).unwrap();
        let got = read_anchors(dir.path()).unwrap();
        assert_eq!(got.list, vec![(1, anchor(10)), (2, anchor(20))]);
        let path = dir.path().join(ANCHORS_FILE);
        // An append cut short: read, but not appended to.
        let mut text = fs::read_to_string(&path).unwrap();
        fs::write(&path, format!("{text}anchor 3")).unwrap();
        assert_eq!(read_anchors(dir.path()).unwrap().incomplete, Some(3));
        let e = append_anchor(dir.path(), &anchor(30)).unwrap_err().to_string();
        assert!(e.contains("line 3: the last line has no newline"), "{e}");
        // A garbled line in the middle is an error naming it.
        text = text.replacen("anchor 20", "anchor 21", 1);
        fs::write(&path, &text).unwrap();
        let e = read_anchors(dir.path()).unwrap_err().to_string();
        assert!(e.contains("anchors: line 2: checksum"), "{e}");
        fs::write(&path, b"\xff\n").unwrap();
        assert!(read_anchors(dir.path()).unwrap_err().to_string().contains("line 1: not UTF-8"));
        let e = append_anchor(dir.path(), &Anchor { note: "a\nb".into(), ..anchor(1) });
        assert!(e.is_err());
    }

    /// A sparse anchors file of 1 GiB (anyone who may write the folder can
    /// make one): refused at its first line, read only that far. Before,
    /// `read_anchors` and the recorder's metrics read it whole into memory.
    #[test]
    fn an_anchors_file_of_one_endless_line_is_refused_after_the_longest_a_line_may_be() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(ANCHORS_FILE);
        fs::write(&path, format!("{}\n", anchor(10).encode())).unwrap();
        OpenOptions::new().write(true).open(&path).unwrap().set_len(1 << 30).unwrap();
        let e = read_anchors(dir.path()).unwrap_err().to_string();
        assert!(e.contains("anchors: line 2: longer than 4096 bytes"), "{e}");
        assert_eq!(NewestAnchor::default().refresh(dir.path()), None);
        let e = append_anchor(dir.path(), &anchor(20)).unwrap_err().to_string();
        assert!(e.contains("line 2: longer than"), "{e}");
        // A note that would make such a line is refused, not written.
        fs::remove_file(&path).unwrap();
        let e = append_anchor(dir.path(), &Anchor { note: "n".repeat(MAX_ANCHOR_LINE), ..anchor(1) });
        assert!(e.unwrap_err().to_string().contains("the note is too long"));
        assert!(!path.exists());
        // And such a line is read only that far: a reader of endless zeros
        // gives up a few pages in.
        struct Counted<'a, R>(R, &'a mut u64);
        impl<R: Read> Read for Counted<'_, R> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = self.0.read(buf)?;
                *self.1 += n as u64;
                Ok(n)
            }
        }
        let (mut read, mut line) = (0, Vec::new());
        assert!(next_line(&mut BufReader::new(Counted(io::repeat(0).take(1 << 30), &mut read)), &mut line).unwrap());
        assert_eq!(line.len(), MAX_ANCHOR_LINE);
        assert!(read <= 2 * MAX_ANCHOR_LINE as u64 + 8192, "{read} bytes read");
    }
}
