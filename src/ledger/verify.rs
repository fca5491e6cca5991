//! Checking a whole ledger (`verify`), its latest hash (`head`) and
//! printing records for an audit (`export`).

use std::fmt;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use super::anchor::LineError;
use super::block::{BlockView, Record};
use super::chain::{BadRecord, Chain, Problem, RingState};
use super::format::*;
use super::retention::{read_pruned, Pruned, PRUNED_FILE};
use super::scan::SegmentFile;
pub use super::signed::{latest_checkpoint, verify_signed, Signed, SignedHead};
use super::store::{scan_tail, segments, LedgerError};

/// The first thing wrong with a ledger, precisely located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyFailure {
    /// The folder holds no segment.
    Empty,
    /// A segment is missing from the numbering.
    MissingSegment {
        /// The number expected.
        expected: u64,
        /// The file found in its place.
        found: PathBuf,
    },
    /// A segment's header is unreadable or does not continue the chain.
    Header {
        /// The segment.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The `pruned` manifest is unreadable, or the folder's first segment
    /// does not continue from it.
    Pruned {
        /// The manifest (or the segment).
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// A segment was removed while it was being read: the recorder's
    /// retention pruned it meanwhile.
    PrunedMeanwhile {
        /// The segment.
        segment: u64,
    },
    /// A segment file that cannot be read as one: a compressed segment
    /// that does not decode.
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// A signed checkpoint that is bad (another key, a signature that does
    /// not verify, another segment's) or missing where one must be
    /// (`verify --pubkey`, docs/ledger.md "Signed checkpoints").
    Checkpoint {
        /// The segment.
        path: PathBuf,
        /// The byte offset of the block in question in the segment.
        offset: u64,
        /// Its index in the ledger.
        block: u64,
        /// What is wrong.
        problem: String,
    },
    /// A bad block (in a version-1 segment, a bad record).
    Record {
        /// The segment.
        path: PathBuf,
        /// The block.
        bad: BadRecord,
    },
}

impl fmt::Display for VerifyFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VerifyFailure::Empty => write!(f, "no ledger segment (seg-NNNNNNNNNN.hxl) in this folder"),
            VerifyFailure::MissingSegment { expected: 1, found } => write!(
                f,
                "segment 1 ({}) is missing and no `{PRUNED_FILE}` manifest says that segments were pruned \
                 (removed by hand?); the first segment is {}",
                segment_name(1),
                found.display()
            ),
            VerifyFailure::MissingSegment { expected, found } => {
                write!(f, "segment {expected} ({}) is missing; next is {}", segment_name(*expected), found.display())
            }
            VerifyFailure::Pruned { path, problem } | VerifyFailure::Unreadable { path, problem } => {
                write!(f, "{}: {problem}", path.display())
            }
            VerifyFailure::PrunedMeanwhile { segment } => write!(
                f,
                "segment {segment} ({}) was pruned by the recorder's retention while it was being read: run again",
                segment_name(*segment)
            ),
            VerifyFailure::Header { path, problem } => write!(f, "{}: header: {problem}", path.display()),
            VerifyFailure::Checkpoint { path, offset, block, problem } => {
                write!(f, "{}: offset {offset}, block {block}: {problem}", path.display())
            }
            VerifyFailure::Record { path, bad } => {
                write!(f, "{}: offset {}, block {}, ", path.display(), bad.offset, bad.block)?;
                match bad.records {
                    1 => write!(f, "record {}", bad.index)?,
                    _ => write!(f, "records {} to {}", bad.index, bad.last_record())?,
                }
                match &bad.ring_seq {
                    Some((ring, first, last)) if first == last => write!(f, " ({ring} seq {first})")?,
                    Some((ring, first, last)) => write!(f, " ({ring} seq {first} to {last})")?,
                    None => {}
                }
                write!(f, ": {}", bad.problem)
            }
        }
    }
}

/// A ledger that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Segment files.
    pub segments: u64,
    /// What was pruned from the start of the ledger, if anything: the
    /// verification started from its record count and hash.
    pub pruned: Option<Pruned>,
    /// Records of all types.
    pub records: u64,
    /// Blocks (a version-1 record is a block of one).
    pub blocks: u64,
    /// The final chain hash.
    pub hash: Hash,
    /// Every ring, with its counts over the whole ledger.
    pub rings: Vec<RingState>,
    /// Bytes of a torn tail at the very end of the last segment (a block
    /// not whole, a last block whose hash does not match, or zeros): a ledger
    /// still writing, or one stopped in the middle of a write (it cuts
    /// them off when it starts). Not a failure: only whole blocks that
    /// verify are part of the ledger.
    pub partial_tail: u64,
    /// CHECKPOINT blocks (each is one record; their signatures are checked
    /// by [`verify_signed`] only).
    pub checkpoints: u64,
}

/// Where a record is and what it holds, for [`walk`]'s visitor.
pub struct Located<'a> {
    /// Segment number.
    pub segment: u64,
    /// Offset of its block in the segment file.
    pub offset: u64,
    /// Its block's index in the ledger.
    pub block: u64,
    /// Index in the ledger.
    pub index: u64,
    /// The ring's name.
    pub ring: &'a str,
    /// The record.
    pub record: &'a Record<'a>,
    /// The chain hash after this record: its block's, for the last record
    /// of a block (every version-1 record); `None` inside a block.
    pub hash: Option<&'a [u8]>,
}

/// What is wrong with segment `n`'s header, given the chain so far.
fn header_problem(header: &SegmentHeader, n: u64, chain: &Chain) -> Option<String> {
    if header.segment != n {
        Some(format!("says it is segment {}", header.segment))
    } else if header.first_record != chain.records {
        Some(format!("says {} records precede it; the chain has {}", header.first_record, chain.records))
    } else if header.first_block != chain.blocks {
        Some(format!("says {} blocks precede it; the chain has {}", header.first_block, chain.blocks))
    } else if header.prev_hash != chain.hash {
        Some(format!(
            "continues from hash {}, but the chain ends at {}",
            hex(&header.prev_hash[..8]),
            hex(&chain.hash[..8])
        ))
    } else {
        None
    }
}

/// Segment `n`'s header (at `path`, whose bytes are `bytes`), checked
/// against the chain so far and the format `version` of the segment before
/// it. The first segment after a `pruned` manifest (`after_manifest`)
/// takes its block count from its header: the manifest names none.
fn checked_header(
    bytes: &[u8],
    path: &Path,
    n: u64,
    after_manifest: bool,
    chain: &mut Chain,
    version: u32,
) -> Result<SegmentHeader, VerifyFailure> {
    let header = SegmentHeader::decode(bytes)
        .map_err(|e| VerifyFailure::Header { path: path.to_owned(), problem: e.to_string() })?;
    if after_manifest {
        chain.blocks = header.first_block;
    }
    if let Some(problem) = header_problem(&header, n, chain) {
        return Err(if after_manifest {
            VerifyFailure::Pruned {
                path: path.to_owned(),
                problem: format!("the first segment after the `{PRUNED_FILE}` manifest {problem}"),
            }
        } else {
            VerifyFailure::Header { path: path.to_owned(), problem }
        });
    }
    if header.version < version {
        // A recorder writes only its own version, and a newer one never
        // resumes an older segment: the versions never go down.
        let problem = format!("is of format version {} after a segment of version {version}", header.version);
        return Err(VerifyFailure::Header { path: path.to_owned(), problem });
    }
    Ok(header)
}

/// Adds block `block` of ring `id` (whose state in the chain is `ring`)
/// to the whole ledger's counts. The chain's counts restart with each
/// segment's declarations; these run over the whole ledger. Ids are
/// declared in order.
fn count(totals: &mut Vec<RingState>, id: usize, ring: &RingState, block: &BlockView<'_>) {
    if id == totals.len() {
        totals.push(RingState { frames: 0, gaps: 0, lost: 0, ..ring.clone() });
    }
    let t = &mut totals[id];
    t.next_seq = ring.next_seq;
    match block.rtype() {
        Some(RecordType::Frame) => t.frames += u64::from(block.header.count),
        Some(RecordType::Gap) => {
            t.gaps += 1;
            t.lost = t.lost.saturating_add(block.last_seq() - block.header.seq + 1);
        }
        Some(RecordType::Ring) => t.decl = ring.decl.clone(),
        // Not counted here: of no ring.
        Some(RecordType::Checkpoint) | None => {}
    }
}

/// Calls `visit` for each record of `block`, which `chain` has just
/// verified and advanced past.
fn visit_records(
    chain: &Chain,
    block: &BlockView<'_>,
    segment: u64,
    offset: u64,
    visit: &mut impl FnMut(&Located<'_>),
) {
    // A checkpoint is of no ring.
    let ring = match block.rtype() {
        Some(RecordType::Checkpoint) => "",
        _ => &chain.rings[block.header.ring as usize].decl.name,
    };
    let count = u64::from(block.header.count);
    let first = chain.records - count;
    for (i, record) in block.records().enumerate() {
        // Verified: every record is whole.
        let Ok(record) = record else { break };
        let i = i as u64;
        let hash = (i + 1 == count).then_some(block.hash);
        let index = first + i;
        visit(&Located { segment, offset, block: chain.blocks - 1, index, ring, record: &record, hash });
    }
}

/// The folder's `pruned` manifest, if any, and its segments from the first
/// one after it (leftovers of an interrupted pruning are not read).
type Start = (Option<Pruned>, Vec<(u64, PathBuf)>);

fn start(dir: &Path) -> Result<Result<Start, VerifyFailure>, LedgerError> {
    let segs = segments(dir)?;
    let pruned = match read_pruned(dir) {
        Ok(p) => p,
        Err(LineError::Bad { path, line, problem }) => {
            return Ok(Err(VerifyFailure::Pruned { path, problem: format!("line {line}: {problem}") }))
        }
        Err(LineError::Io { path, error }) => return Err(LedgerError::Io { path, error }),
    };
    let first = pruned.map_or(1, |p| p.segment + 1);
    let segs: Vec<_> = segs.into_iter().filter(|(n, _)| *n >= first).collect();
    if segs.is_empty() {
        return Ok(Err(VerifyFailure::Empty));
    }
    Ok(Ok((pruned, segs)))
}

/// Segment `n` at `path`, opened (decompressing) and its header's bytes
/// read; one that retention deleted meanwhile, or a compressed one that
/// does not decode, is a failure.
fn open(dir: &Path, n: u64, path: &Path) -> Result<Result<SegmentFile, VerifyFailure>, LedgerError> {
    SegmentFile::open(path).map_or_else(|e| io_failure(dir, n, path, e), |f| Ok(Ok(f)))
}

/// What a failure to read segment `n` at `path` is: gone because retention
/// pruned it meanwhile, a compressed file that does not decode (or expands
/// past what a segment may hold), or an I/O error. A failure partway
/// through a segment comes after the blocks before it were visited, as a
/// bad block does.
fn io_failure<T>(dir: &Path, n: u64, path: &Path, e: std::io::Error) -> Result<Result<T, VerifyFailure>, LedgerError> {
    match e.kind() {
        std::io::ErrorKind::NotFound if pruned_since(dir, n) => Ok(Err(VerifyFailure::PrunedMeanwhile { segment: n })),
        std::io::ErrorKind::InvalidData => {
            Ok(Err(VerifyFailure::Unreadable { path: path.to_owned(), problem: e.to_string() }))
        }
        _ => Err(LedgerError::Io { path: path.to_owned(), error: e }),
    }
}

/// Reads every segment in order, checking every header and record, and
/// calls `visit` for each good record (a CHECKPOINT's with ring `""`).
/// Stops at the first failure.
pub fn walk(dir: &Path, mut visit: impl FnMut(&Located<'_>)) -> Result<Result<Summary, VerifyFailure>, LedgerError> {
    walk_segments(
        dir,
        |_, _| ControlFlow::Continue(()),
        |chain, block, segment, offset| {
            visit_records(chain, block, segment, offset, &mut visit);
            ControlFlow::Continue(())
        },
    )
}

/// Reads every segment in order, checking every header and block, and
/// calls `visit` for each good FRAME, GAP and RING block with the chain that
/// has just verified it and advanced past it (its ring:
/// `chain.rings[block.header.ring]`), its segment and its offset there.
/// CHECKPOINT blocks are verified but not visited ([`walk_segments`] visits
/// them). Stops at the first failure; a visit that breaks stops the walk at
/// the end of that segment (the summary then covers the segments read).
pub fn walk_blocks(
    dir: &Path,
    mut visit: impl FnMut(&Chain, &BlockView<'_>, u64, u64) -> ControlFlow<()>,
) -> Result<Result<Summary, VerifyFailure>, LedgerError> {
    walk_segments(
        dir,
        |_, _| ControlFlow::Continue(()),
        |chain, block, segment, offset| match block.rtype() {
            Some(RecordType::Checkpoint) => ControlFlow::Continue(()),
            _ => visit(chain, block, segment, offset),
        },
    )
}

/// [`walk_blocks`], visiting every block (CHECKPOINTs too), and calling
/// `on_segment` with each segment's header and file once the header has
/// been checked, before its blocks: a break there stops the walk before
/// that segment (the summary covers the segments read before it).
pub fn walk_segments(
    dir: &Path,
    mut on_segment: impl FnMut(&SegmentHeader, &Path) -> ControlFlow<()>,
    mut visit: impl FnMut(&Chain, &BlockView<'_>, u64, u64) -> ControlFlow<()>,
) -> Result<Result<Summary, VerifyFailure>, LedgerError> {
    let (pruned, segs) = match start(dir)? {
        Ok(s) => s,
        Err(f) => return Ok(Err(f)),
    };
    let first = pruned.map_or(1, |p| p.segment + 1);
    let mut chain = Chain::default();
    if let Some(p) = pruned {
        (chain.hash, chain.records) = (p.hash, p.records);
    }
    // Counts over the whole ledger, by ring id (the chain's counts restart
    // with each segment's declarations).
    let mut totals: Vec<RingState> = Vec::new();
    let mut partial_tail = 0;
    let mut stopped = false;
    let mut read_segments = 0;
    let (mut checkpoints, mut version) = (0, VERSION_1);
    for (i, (n, path)) in segs.iter().enumerate() {
        if stopped {
            break;
        }
        let expected = first + i as u64;
        if *n != expected {
            return Ok(Err(VerifyFailure::MissingSegment { expected, found: path.clone() }));
        }
        let file = match open(dir, *n, path)? {
            Ok(f) => f,
            Err(f) => return Ok(Err(f)),
        };
        let after_manifest = i == 0 && pruned.is_some();
        let header = match checked_header(&file.head, path, *n, after_manifest, &mut chain, version) {
            Ok(h) => h,
            Err(f) => return Ok(Err(f)),
        };
        version = header.version;
        if on_segment(&header, path).is_break() {
            break;
        }
        read_segments += 1;
        if i > 0 {
            chain.begin_segment();
        }
        let scanned = file.scan(&mut chain, header.version, |c, block, offset| {
            stopped = stopped || visit(c, block, *n, offset).is_break();
            if block.rtype() == Some(RecordType::Checkpoint) {
                checkpoints += 1;
                return;
            }
            let id = block.header.ring as usize;
            count(&mut totals, id, &c.rings[id], block);
        });
        let scanned = match scanned {
            Ok(s) => s,
            Err(e) => return io_failure(dir, *n, path, e),
        };
        partial_tail = match torn_tail(scanned.bad, scanned.torn && i + 1 == segs.len(), scanned.len) {
            Ok(torn) => torn,
            Err(bad) => return Ok(Err(VerifyFailure::Record { path: path.clone(), bad })),
        };
        if let Some(bad) = unrestated(&chain, scanned.len - partial_tail) {
            return Ok(Err(VerifyFailure::Record { path: path.clone(), bad }));
        }
    }
    Ok(Ok(Summary {
        segments: read_segments,
        pruned,
        records: chain.records,
        blocks: chain.blocks,
        hash: chain.hash,
        rings: totals,
        partial_tail,
        checkpoints,
    }))
}

/// The bytes of a torn tail at the end of a segment `len` bytes long whose
/// scan stopped at `bad`: 0 if it scanned whole. Only the last segment may
/// end torn (`torn_and_last`), and by the recorder's own rule
/// ([`is_torn_tail`](super::store::is_torn_tail): what it cuts off when it
/// starts), so the two never disagree on what the tail is. What precedes
/// the tail stands. Any other problem is the scan's.
fn torn_tail(bad: Option<BadRecord>, torn_and_last: bool, len: u64) -> Result<u64, BadRecord> {
    match bad {
        None => Ok(0),
        Some(bad) if torn_and_last => Ok(len - bad.offset),
        Some(bad) => Err(bad),
    }
}

/// A segment that ended (at byte `end`) before restating every ring
/// declared so far: the problem, where the missing declaration should
/// have been.
fn unrestated(chain: &Chain, end: u64) -> Option<BadRecord> {
    let missing = chain.unrestated();
    (missing > 0).then(|| {
        let want = chain.rings.len() - missing;
        BadRecord {
            offset: end,
            block: chain.blocks,
            index: chain.records,
            records: 1,
            ring_seq: None,
            problem: Problem::Invalid(format!(
                "the segment ends before it restates ring {} (id {want})",
                chain.rings[want].decl.name
            )),
        }
    })
}

/// Whether the `pruned` manifest now counts segment `n` as pruned.
fn pruned_since(dir: &Path, n: u64) -> bool {
    read_pruned(dir).ok().flatten().is_some_and(|p| p.segment >= n)
}

/// Verifies the whole ledger in `dir`.
pub fn verify(dir: &Path) -> Result<Result<Summary, VerifyFailure>, LedgerError> {
    walk(dir, |_| {})
}

/// The latest block of a ledger, for anchoring it elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// The last segment.
    pub segment: u64,
    /// Records in the ledger.
    pub records: u64,
    /// Blocks in the ledger.
    pub blocks: u64,
    /// The chain hash of the last block (the chain after the last record).
    pub hash: Hash,
    /// Bytes after the last complete block (a torn tail the ledger will
    /// cut off when it next starts), if any.
    pub torn_bytes: u64,
    /// Each ring's next expected sequence.
    pub rings: Vec<(String, u64)>,
}

/// The head of the ledger in `dir`: the last segment's chain, checked from
/// its header. A corrupt last segment is an error; a torn tail is reported.
pub fn head(dir: &Path) -> Result<Result<Head, VerifyFailure>, LedgerError> {
    let Some((segment, path)) = segments(dir)?.pop() else { return Ok(Err(VerifyFailure::Empty)) };
    let (_, chain, scanned) = match scan_tail(&path) {
        Ok(t) => t,
        Err(LedgerError::Header { path, problem }) => {
            return Ok(Err(VerifyFailure::Header { path, problem: problem.to_string() }))
        }
        Err(e) => return Err(e),
    };
    let torn_bytes = match scanned.bad {
        Some(bad) if scanned.torn => scanned.len - bad.offset,
        Some(bad) => return Ok(Err(VerifyFailure::Record { path, bad })),
        None => 0,
    };
    let rings = chain.rings.iter().map(|r| (r.decl.name.clone(), r.next_seq)).collect();
    Ok(Ok(Head { segment, records: chain.records, blocks: chain.blocks, hash: chain.hash, torn_bytes, rings }))
}
