//! Retention: deleting the oldest closed segments of a ledger past an age
//! or a total size, never one whose last record no anchor covers, and the
//! `pruned` manifest that lets a pruned folder start at segment N.
//!
//! Pruning is crash-safe: the manifest naming the last segment pruned (its
//! number, and the record count and chain hash the next segment continues
//! from) is written under a temporary name, synced and renamed into place
//! *before* any segment is removed, oldest first. A crash in between
//! leaves segments the manifest already counts as pruned: readers skip
//! them and the recorder removes them when it next opens the folder.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::anchor::{check_line, checked_line, parse_hash, parse_u64, read_header, sync_dir, LineError};
use super::format::*;
use super::store::{io_err, segments, LedgerError};

/// The manifest of what was pruned from a ledger folder.
pub const PRUNED_FILE: &str = "pruned";

/// The segments pruned from the start of a ledger: `1..=segment`, holding
/// its first `records` records, which end at chain hash `hash`. The first
/// segment kept is `segment + 1`, and its header's `first_record` and
/// `prev_hash` are `records` and `hash`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    /// The last segment pruned.
    pub segment: u64,
    /// Records in the segments pruned.
    pub records: u64,
    /// The chain hash after them.
    pub hash: Hash,
}

impl Pruned {
    /// The manifest's one line (without its newline).
    pub fn encode(&self) -> String {
        checked_line(&format!("pruned {} {} {}", self.segment, self.records, hex(&self.hash)))
    }

    /// Decodes the manifest's line.
    pub fn decode(line: &str) -> Result<Pruned, String> {
        let text = check_line(line)?;
        let f: Vec<&str> = text.split(' ').collect();
        let ["pruned", segment, records, hash] = f[..] else {
            return Err("expected `pruned SEGMENT RECORDS HASH CHECK`".into());
        };
        let segment = parse_u64(segment, "segment")?;
        if segment == 0 {
            return Err("segment 0 does not exist (segments start at 1)".into());
        }
        Ok(Pruned { segment, records: parse_u64(records, "record count")?, hash: parse_hash(hash)? })
    }
}

/// Reads `dir/pruned` (no file: nothing was pruned). A garbled manifest is
/// an error naming it.
pub fn read_pruned(dir: &Path) -> Result<Option<Pruned>, LineError> {
    let path = dir.join(PRUNED_FILE);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(LineError::Io { path, source }),
    };
    let bad = |problem: String| LineError::Bad { path: path.clone(), line: 1, problem };
    let text = std::str::from_utf8(&bytes).map_err(|_| bad("not UTF-8".into()))?;
    let line = text.strip_suffix('\n').filter(|l| !l.contains('\n'));
    let line = line.ok_or_else(|| bad("the manifest must be exactly one line".into()))?;
    Pruned::decode(line).map(Some).map_err(bad)
}

/// Replaces `dir/pruned` atomically: written under `pruned.tmp`, synced,
/// renamed, and the folder synced.
pub fn write_pruned(dir: &Path, p: &Pruned) -> Result<(), LedgerError> {
    let path = dir.join(PRUNED_FILE);
    let tmp = dir.join(format!("{PRUNED_FILE}.tmp"));
    fs::write(&tmp, format!("{}\n", p.encode())).map_err(io_err(&tmp))?;
    fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(io_err(&tmp))?;
    fs::rename(&tmp, &path).map_err(io_err(&path))?;
    sync_dir(dir).map_err(io_err(dir))
}

/// How long closed segments are kept: both limits optional.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Policy {
    /// A closed segment older than this (since the next one was started)
    /// is past retention.
    pub max_age: Option<Duration>,
    /// While the segments take more bytes than this, the oldest closed one
    /// is past retention.
    pub max_total_bytes: Option<u64>,
}

impl Policy {
    /// Whether any limit is set.
    pub fn is_set(&self) -> bool {
        self.max_age.is_some() || self.max_total_bytes.is_some()
    }
}

/// A segment file, as retention sees it: its header, size and the time it
/// was closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// Its number.
    pub segment: u64,
    /// Its file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// Its header.
    pub header: SegmentHeader,
}

/// The segments of `dir` after those `pruned` counts (leftovers of an
/// interrupted pruning are not listed), in order.
pub fn segment_infos(dir: &Path, pruned: Option<&Pruned>) -> Result<Vec<SegmentInfo>, LedgerError> {
    let first = pruned.map_or(1, |p| p.segment + 1);
    let mut out = Vec::new();
    for (segment, path) in segments(dir)?.into_iter().filter(|(n, _)| *n >= first) {
        let bytes = fs::metadata(&path).map_err(io_err(&path))?.len();
        out.push(SegmentInfo { segment, bytes, header: read_header(&path)?, path });
    }
    Ok(out)
}

/// What retention decides for a folder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// The oldest closed segments to delete, in order.
    pub delete: Vec<SegmentInfo>,
    /// The oldest segment past retention that is kept because no anchor
    /// covers its last record.
    pub unanchored: Option<u64>,
}

/// Decides which of `segs` (in order, consecutive; the last is the one
/// being written) to delete at `now_ns` (CLOCK_REALTIME): the oldest closed
/// segments past `policy`, stopping at the first one within it or whose
/// last record is not covered by `anchored` (the record count of the
/// highest anchor that matches the chain). Segment `i` closed when segment
/// `i + 1` was started (its header's `created_ns`), and its records end
/// where segment `i + 1`'s begin.
pub fn plan(segs: &[SegmentInfo], policy: &Policy, now_ns: u64, anchored: u64) -> Plan {
    let mut total: u64 = segs.iter().map(|s| s.bytes).sum();
    let mut out = Plan::default();
    for pair in segs.windows(2) {
        let (seg, next) = (&pair[0], &pair[1].header);
        let old = policy.max_age.is_some_and(|a| now_ns.saturating_sub(next.created_ns) > a.as_nanos() as u64);
        let big = policy.max_total_bytes.is_some_and(|m| total > m);
        if !old && !big {
            break;
        }
        if next.first_record > anchored {
            out.unanchored = Some(seg.segment);
            break;
        }
        total -= seg.bytes;
        out.delete.push(seg.clone());
    }
    out
}

/// Deletes the segments of `plan` (the oldest of the folder, in order):
/// first the manifest is replaced by one naming the last of them, then the
/// files are removed, oldest first. `segs` are the folder's segments, as
/// the plan was made from. Returns the new manifest.
pub fn prune(dir: &Path, segs: &[SegmentInfo], plan: &Plan) -> Result<Option<Pruned>, LedgerError> {
    let Some(last) = plan.delete.last() else { return Ok(None) };
    let next = segs.iter().find(|s| s.segment == last.segment + 1).expect("a plan never deletes the last segment");
    let p = Pruned { segment: last.segment, records: next.header.first_record, hash: next.header.prev_hash };
    write_pruned(dir, &p)?;
    for s in &plan.delete {
        fs::remove_file(&s.path).map_err(io_err(&s.path))?;
    }
    sync_dir(dir).map_err(io_err(dir))?;
    Ok(Some(p))
}

/// Finishes a pruning that was interrupted, when a recorder opens `dir`:
/// removes the segments the manifest already counts as pruned (returned),
/// and refuses a folder whose manifest is unreadable or that holds no
/// segment after it (a new ledger started there would not continue the
/// chain).
pub fn finish_pruning(dir: &Path) -> Result<Vec<PathBuf>, LedgerError> {
    let Some(p) = read_pruned(dir).map_err(LedgerError::Manifest)? else { return Ok(Vec::new()) };
    let segs = segments(dir)?;
    if !segs.iter().any(|(n, _)| *n > p.segment) {
        return Err(LedgerError::Manifest(LineError::Bad {
            path: dir.join(PRUNED_FILE),
            line: 1,
            problem: format!(
                "segments up to {} were pruned, but segment {} ({}) is missing",
                p.segment,
                p.segment + 1,
                segment_name(p.segment + 1)
            ),
        }));
    }
    let mut removed = Vec::new();
    for (_, path) in segs.into_iter().filter(|(n, _)| *n <= p.segment) {
        fs::remove_file(&path).map_err(io_err(&path))?;
        removed.push(path);
    }
    if !removed.is_empty() {
        sync_dir(dir).map_err(io_err(dir))?;
    }
    Ok(removed)
}
