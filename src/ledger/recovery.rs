//! Opening a ledger folder: the lock that makes one recorder per folder,
//! the segment files in it, and the recovery of the last segment's tail
//! (a torn append cut off; a bad record with data after it refused).

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::block::{split, BlockView};
use super::chain::{BadRecord, Chain, Problem};
use super::compress::{is_compressed, COMPRESSED_SUFFIX};
use super::format::*;
use super::scan::{Scanned, SegmentFile};
use super::store::{io_err, LedgerError};

/// What opening a ledger found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// The folder had no segment: a new ledger was started.
    pub created: bool,
    /// A torn tail was cut off: (segment file, offset, bytes removed, why).
    pub truncated: Option<(PathBuf, u64, u64, String)>,
    /// Temporary files of an unfinished segment rotation that were removed.
    pub removed: Vec<PathBuf>,
    /// Segments an interrupted pruning had left behind, removed (the
    /// `pruned` manifest already counted them as pruned).
    pub pruned: Vec<PathBuf>,
    /// Records in the ledger.
    pub records: u64,
    /// The segment appended to.
    pub segment: u64,
    /// The last segment was of format version 1: it was left as it is
    /// (closed), and this new segment of the current version was started,
    /// chained to its last hash.
    pub upgraded: Option<u64>,
    /// Records of the last segment after its last checkpoint (all of them
    /// if it has none): written by a recorder that stopped before it
    /// signed them (killed between checkpoints), or that did not sign. A
    /// recorder that signs vouches for them at its first checkpoint, as it
    /// found them.
    pub unsigned: u64,
}

/// The file in a ledger folder whose lock makes one recorder per folder.
pub const LOCK_FILE: &str = "lock";

/// How long [`lock`] waits out a lock held in this process's own name (or
/// in nobody's known name: the lock file gone): a child mid-start lets go
/// within milliseconds, or as long as a loaded machine keeps it off the
/// CPU. (A second Ledger opened on the folder while this process's first
/// is open waits this long, then is refused.)
const OWN_LOCK_WAIT: Duration = Duration::from_secs(5);

/// Takes the folder's lock (`flock` of the folder itself, released by the
/// kernel when the holder exits, however it exits) and writes this
/// process's pid into the lock file for the next one to name. A second
/// recorder on the folder gets [`LedgerError::Locked`]. (The lock was once
/// on the lock file: removing that file, which anyone who may write the
/// folder can, let a second recorder lock a new one and write beside the
/// first.)
/// Tools that change a folder's files beside the recorder's own
/// (`helix-ledger sign-pruned`) take it too, for as long as they do.
pub fn lock(dir: &Path) -> Result<Arc<File>, LedgerError> {
    let path = dir.join(LOCK_FILE);
    let folder = File::open(dir).map_err(io_err(dir))?;
    // A lock held in this process's own name: a Ledger on the folder was
    // just closed, and a child this process is starting (between its fork
    // and its exec) still has the folder open, and so the lock, for an
    // instant. Wait that out, briefly; any other holder is refused at once.
    let deadline = Instant::now() + OWN_LOCK_WAIT;
    loop {
        match folder.try_lock() {
            Ok(()) => break,
            Err(TryLockError::WouldBlock) => {
                let text = super::folder::read_small(&path, 64).ok().and_then(|b| String::from_utf8(b).ok());
                let holder = text.and_then(|t| t.trim().parse().ok());
                // Ours, or not known (no lock file: someone removed it, or
                // a child of ours forked as we unlocked holds it still):
                // waited out, briefly.
                if holder.is_none_or(|p| p == std::process::id()) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                return Err(LedgerError::Locked { dir: dir.to_owned(), holder });
            }
            Err(TryLockError::Error(e)) => return Err(io_err(dir)(e)),
        }
    }
    // Made afresh (removed, then created exclusively): the folder's lock
    // keeps every other recorder out, and whatever was under the name (a
    // hard link to a file of root's, a FIFO) is neither written nor
    // waited on.
    let file = super::folder::create_new(&path).map_err(io_err(&path))?;
    file.set_len(0).and_then(|()| writeln!(&file, "{}", std::process::id())).map_err(io_err(&path))?;
    Ok(Arc::new(folder))
}

/// The segment files in `dir`, sorted by number: plain or compressed
/// (`seg-N.hxl.lz4`); where a compression was interrupted after its rename
/// and both are there, the plain one.
pub fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, LedgerError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let (plain, compressed) = match name.strip_suffix(COMPRESSED_SUFFIX) {
            Some(plain) => (plain, true),
            None => (name, false),
        };
        if let Some(n) = parse_segment_name(plain) {
            out.push((n, compressed, entry.path()));
        }
    }
    out.sort();
    out.dedup_by_key(|(n, _, _)| *n);
    Ok(out.into_iter().map(|(n, _, path)| (n, path)).collect())
}

/// The chain state at the end of segment `path`, checked from its header,
/// read a piece at a time. A bad block is returned (in [`Scanned`]) with
/// the state before it, and whether it is a torn tail.
pub fn scan_tail(path: &Path) -> Result<(SegmentHeader, Chain, Scanned), LedgerError> {
    scan_tail_visiting(path, |_, _, _| {})
}

/// [`scan_tail`], `visit` seeing each good block ([`SegmentFile::scan`]).
fn scan_tail_visiting(
    path: &Path,
    visit: impl FnMut(&Chain, &BlockView<'_>, u64),
) -> Result<(SegmentHeader, Chain, Scanned), LedgerError> {
    let file = SegmentFile::open(path).map_err(io_err(path))?;
    let header = file.header().map_err(|problem| LedgerError::Header { path: path.to_owned(), problem })?;
    let mut chain = Chain::at_segment(&header);
    let scanned = file.scan(&mut chain, header.version, visit).map_err(io_err(path))?;
    Ok((header, chain, scanned))
}

/// Whether the bad block at `bad.offset` of a segment of format `version`
/// is the torn end of an interrupted append: its bytes run past the end
/// of the file, or it ends there and its hash does not match (part of it
/// never reached the disk), or everything from it on is zero (a
/// file extended but never written). A block whose hash matches was
/// written whole: if it breaks a rule ([`Problem::Invalid`]) it is not
/// torn, and cutting it would drop what was recorded (a segment that
/// does not restate its rings, say: `fuzz_findings`).
pub fn is_torn_tail(bytes: &[u8], version: u32, bad: &BadRecord) -> bool {
    let rest = &bytes[bad.offset as usize..];
    let framed = split(version, rest).ok().map(|b| u64::from(b.header.len));
    torn_rule(&bad.problem, framed, rest.len() as u64, rest.iter().all(|&b| b == 0))
}

/// [`is_torn_tail`]'s rule, for a bad block with `problem` whose framing
/// says it is `framed` bytes long (if it can be read), `rest` bytes from
/// it to the end of the file, all zero or not.
pub(crate) fn torn_rule(problem: &Problem, framed: Option<u64>, rest: u64, zeros: bool) -> bool {
    let reaches_end = match problem {
        Problem::Torn(Torn::ShortHeader | Torn::PastEnd { .. }) => true,
        Problem::Torn(Torn::BadLength(_)) | Problem::Invalid(_) => false,
        Problem::Hash => framed == Some(rest),
    };
    reaches_end || zeros
}

/// Whether a last segment (`header`) that keeps `kept` (its chain,
/// before a torn tail if it has one) lacks part of its restatement of the
/// rings the segment before, `prev`, declared. A new segment is renamed
/// into place only once its restatement is written and synced, so no
/// crash tears it: that is damage, and resuming there would leave rings
/// undeclared, writing a ledger that no longer verifies. `prev` is read
/// only if `kept` holds nothing but declarations (a restatement is
/// followed by the segment's other blocks). Returns how many rings `prev`
/// declared, if so.
fn cuts_restatement(header: &SegmentHeader, kept: &Chain, prev: Option<&Path>) -> Result<Option<usize>, LedgerError> {
    let only_declarations = kept.blocks - header.first_block <= kept.rings.len() as u64;
    let Some(prev) = prev.filter(|_| only_declarations) else { return Ok(None) };
    let (_, before, _) = scan_tail(prev)?;
    Ok((kept.rings.len() < before.rings.len()).then_some(before.rings.len()))
}

/// Removes the temporary files an unfinished segment rotation left in
/// `dir`; returns them.
pub(super) fn remove_temporaries(dir: &Path) -> Result<Vec<PathBuf>, LedgerError> {
    let mut removed = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let path = entry.map_err(io_err(dir))?.path();
        if path.extension().is_some_and(|e| e == "tmp") {
            fs::remove_file(&path).map_err(io_err(&path))?;
            removed.push(path);
        }
    }
    Ok(removed)
}

/// Checks the last segment, `path`, from its header on, and cuts off a
/// torn tail (noted in `recovery`); returns its header, the chain after
/// its last block and the segment's length. A bad block that is not a
/// torn tail is refused: [`LedgerError::Corrupt`]; so is a segment cut
/// (within a block or at a block's end) inside its restatement of the
/// rings that `prev` (the segment before, if the folder has it) declared.
pub(super) fn recover_tail(
    path: PathBuf,
    prev: Option<&Path>,
    recovery: &mut Recovery,
) -> Result<(SegmentHeader, Chain, u64), LedgerError> {
    if is_compressed(&path) {
        let e = io::Error::new(
            io::ErrorKind::InvalidInput,
            "the newest segment is compressed, but the recorder appends to it (only closed segments are \
             compressed): restore it with `lz4 -d`",
        );
        return Err(io_err(&path)(e));
    }
    // The chain's records as its last checkpoint signed them (the visit
    // sees each block applied).
    let mut signed = None;
    let note_checkpoint = |c: &Chain, b: &BlockView<'_>, _| {
        if b.rtype() == Some(RecordType::Checkpoint) {
            signed = Some(c.records);
        }
    };
    let (header, chain, Scanned { len, bad, torn, follow }) = scan_tail_visiting(&path, note_checkpoint)?;
    if let Some(bad) = bad.as_ref().filter(|_| !torn) {
        return Err(LedgerError::Corrupt { path, bad: Box::new(bad.clone()), follow });
    }
    // What is kept: everything, or what precedes a torn tail.
    let end = bad.as_ref().map_or(len, |b| b.offset);
    if let Some(declared) = cuts_restatement(&header, &chain, prev)? {
        let problem = Problem::Invalid(format!(
            "the segment ends at offset {end}{}, inside its restatement of the rings the segment before \
             declared ({} of {declared}): a new segment is renamed into place only once that is written, so this \
             is damage, not a torn write",
            bad.as_ref().map_or(String::new(), |b| format!(" ({})", b.problem)),
            chain.rings.len(),
        ));
        let at =
            BadRecord { offset: end, block: chain.blocks, index: chain.records, records: 1, ring_seq: None, problem };
        return Err(LedgerError::Corrupt { path, bad: Box::new(at), follow: len - end });
    }
    recovery.unsigned = chain.records - signed.unwrap_or(header.first_record);
    let Some(bad) = bad else {
        return Ok((header, chain, len));
    };
    let file = super::folder::open(&path, OpenOptions::new().write(true)).map_err(io_err(&path))?;
    file.set_len(bad.offset).map_err(io_err(&path))?;
    file.sync_data().map_err(io_err(&path))?;
    recovery.truncated = Some((path, bad.offset, len - bad.offset, bad.problem.to_string()));
    Ok((header, chain, bad.offset))
}
