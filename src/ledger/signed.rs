//! Checking a ledger's signed checkpoints (`verify --pubkey`) and finding
//! the latest one (`head --signed`). The rules, docs/ledger.md "Signed
//! checkpoints":
//!
//! - every CHECKPOINT is signed by the given key (its key id first, then
//!   its signature) and states the segment it is in (the chain's rules
//!   already check that it states the chain's records, blocks and hash);
//! - in segments of format version 3, no FRAME or GAP block precedes the
//!   first checkpoint (the recorder signs when it opens the ledger), but
//!   in a folder whose first segments were pruned, where the checkpoint
//!   that closed the last pruned segment is gone;
//! - a closed segment of version 3 (every segment but the last) ends with a
//!   checkpoint;
//! - no FRAME or GAP block is read more than twice the interval (as the
//!   last checkpoint states it) after the first block that followed that
//!   checkpoint, without a checkpoint between: the recorder signs every
//!   interval, so one was deleted;
//! - the ledger holds at least one checkpoint.
//!
//! What follows the last checkpoint is not signed (yet): reported, not a
//! failure.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;

use super::block::BlockView;
use super::chain::Chain;
use super::format::*;
use super::retention::{read_pruned, PRUNED_FILE};
use super::scan::SegmentFile;
use super::sign::{key_id, Checkpoint};
use super::store::{segments, LedgerError};
use super::verify::{walk_segments, Summary, VerifyFailure};

/// A ledger whose chain and checkpoints verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// The chain's summary.
    pub summary: Summary,
    /// The last checkpoint.
    pub last: Checkpoint,
    /// Records after it, which no signature covers yet.
    pub unsigned_records: u64,
}

/// A segment's last block so far: whether it is a checkpoint, and its
/// offset.
type LastBlock = (bool, u64);

/// Where the walk is, for the rules.
struct State<'k> {
    dir: &'k Path,
    key: &'k VerifyingKey,
    key_id: [u8; 8],
    /// The segment being read: its path, format version, and whether its
    /// last block so far is a checkpoint, and its offset (`None`: no block
    /// yet).
    segment: Option<(PathBuf, u32, Option<LastBlock>)>,
    /// The last checkpoint, and the records up to it (itself included).
    last: Option<Checkpoint>,
    signed_records: u64,
    /// The first FRAME or GAP block after the last checkpoint: its time
    /// read, index and offset.
    first_unsigned: Option<(u64, u64, u64)>,
    failure: Option<VerifyFailure>,
    /// The folder starts after pruned segments: the blocks before its
    /// first checkpoint followed one that was pruned.
    pruned_start: bool,
}

impl State<'_> {
    fn fail(&mut self, offset: u64, block: u64, problem: String) -> ControlFlow<()> {
        let path = self.segment.as_ref().map(|s| s.0.clone()).unwrap_or_default();
        self.failure = Some(VerifyFailure::Checkpoint { path, offset, block, problem });
        ControlFlow::Break(())
    }

    /// A new segment: the one before it, if closed in version 3, must
    /// have ended with a checkpoint.
    fn segment(&mut self, header: &SegmentHeader, path: &Path) -> ControlFlow<()> {
        if let Some((_, VERSION.., Some((false, offset)))) = self.segment {
            let problem = format!(
                "segment {} was closed without a checkpoint as its last block (block {} is not one)",
                header.segment - 1,
                header.first_block.saturating_sub(1)
            );
            let block = header.first_block.saturating_sub(1);
            // Named where that last block is (found by review: at offset 0,
            // the segment's header).
            return self.fail(offset, block, problem);
        }
        let first = self.segment.is_none();
        self.segment = Some((path.to_owned(), header.version, None));
        if first && header.segment > 1 {
            self.pruned_start = true;
            return self.manifest(header);
        }
        ControlFlow::Continue(())
    }

    /// A folder that starts after pruned segments: its `pruned` manifest
    /// must be signed by the key, or the oldest segments may have been
    /// deleted by hand (the manifest's checksum is no seal: anyone can
    /// write one).
    fn manifest(&mut self, header: &SegmentHeader) -> ControlFlow<()> {
        let path = self.dir.join(PRUNED_FILE);
        let fail = |st: &mut Self, problem: String| {
            st.failure =
                Some(VerifyFailure::Checkpoint { path: path.clone(), offset: 0, block: header.first_block, problem });
            ControlFlow::Break(())
        };
        let p = match read_pruned(self.dir) {
            Ok(Some(p)) => p,
            Ok(None) => return fail(self, "the folder starts after segment 1 without a `pruned` manifest".into()),
            Err(e) => return fail(self, e.to_string()),
        };
        let Some(signed) = p.signed else {
            let problem = format!(
                "the manifest of segments 1..={} ({} records) is not signed: they may have been deleted by hand \
                 (a recorder that signs checkpoints signs what its retention prunes)",
                p.segment, p.records
            );
            return fail(self, problem);
        };
        if signed.key_id != self.key_id {
            let problem = format!(
                "the manifest is signed by key id {}, not by the given key (key id {})",
                hex(&signed.key_id),
                hex(&self.key_id)
            );
            return fail(self, problem);
        }
        // The walk read the manifest once and checked this header against
        // it; this is a second read. One swapped in between (a signed one
        // for the unsigned one the walk used) must not pass for it.
        if (p.segment + 1, p.records, p.hash) != (header.segment, header.first_record, header.prev_hash) {
            return fail(self, "the manifest changed while the folder was verified: verify again".into());
        }
        if !signed.signs(self.key, p.segment, p.records, &p.hash) {
            return fail(
                self,
                format!("the manifest of segments 1..={}: its signature does not verify: forged", p.segment),
            );
        }
        ControlFlow::Continue(())
    }

    fn block(&mut self, chain: &Chain, block: &BlockView<'_>, segment: u64, offset: u64) -> ControlFlow<()> {
        let index = chain.blocks - 1;
        let version = self.segment.as_ref().map_or(VERSION, |s| s.1);
        let is_checkpoint = block.rtype() == Some(RecordType::Checkpoint);
        if let Some(s) = &mut self.segment {
            s.2 = Some((is_checkpoint, offset));
        }
        if is_checkpoint {
            // The chain's rules have decoded it.
            let Ok(c) = Checkpoint::decode(block.body) else { unreachable!("a verified checkpoint") };
            if c.segment != segment {
                return self.fail(offset, index, format!("a checkpoint that says it is in segment {}", c.segment));
            }
            if c.key_id != self.key_id {
                let problem = format!(
                    "a checkpoint signed by key id {}, not by the given key (key id {})",
                    hex(&c.key_id),
                    hex(&self.key_id)
                );
                return self.fail(offset, index, problem);
            }
            if !c.signed_by(self.key) {
                let problem = format!("a checkpoint (records {}) whose signature does not verify: forged", c.records);
                return self.fail(offset, index, problem);
            }
            self.signed_records = chain.records;
            (self.last, self.first_unsigned) = (Some(c), None);
            return ControlFlow::Continue(());
        }
        let frame_or_gap = matches!(block.rtype(), Some(RecordType::Frame | RecordType::Gap));
        if version < VERSION || !frame_or_gap {
            return ControlFlow::Continue(());
        }
        let Some(last) = self.last else {
            if self.pruned_start {
                return ControlFlow::Continue(());
            }
            let problem = "a block of records in a segment of format version 3 before any checkpoint \
                           (the recorder signs when it opens the ledger)";
            return self.fail(offset, index, problem.into());
        };
        let t = block.header.recv_ns;
        match self.first_unsigned {
            None => self.first_unsigned = Some((t, index, offset)),
            Some((first, at, _)) if t.saturating_sub(first) > 2 * u64::from(last.interval_s) * 1_000_000_000 => {
                let problem = format!(
                    "no checkpoint within twice the interval ({} s) of block {at}: this block was read {:.1} s \
                     after it (a checkpoint deleted?)",
                    last.interval_s,
                    (t - first) as f64 / 1e9
                );
                return self.fail(offset, index, problem);
            }
            Some(_) => {}
        }
        ControlFlow::Continue(())
    }
}

/// Verifies the ledger in `dir` as [`verify`](super::verify::verify)
/// does, and its checkpoints against `key` (the module's rules).
pub fn verify_signed(dir: &Path, key: &VerifyingKey) -> Result<Result<Signed, VerifyFailure>, LedgerError> {
    let mut st = State {
        dir,
        key,
        key_id: key_id(key),
        segment: None,
        last: None,
        signed_records: 0,
        first_unsigned: None,
        failure: None,
        pruned_start: false,
    };
    let cell = std::cell::RefCell::new(&mut st);
    let walked = walk_segments(
        dir,
        |h, p| cell.borrow_mut().segment(h, p),
        |c, b, n, off| cell.borrow_mut().block(c, b, n, off),
    )?;
    if let Some(f) = st.failure.take() {
        return Ok(Err(f));
    }
    let summary = match walked {
        Ok(s) => s,
        Err(f) => return Ok(Err(f)),
    };
    let Some(last) = st.last else {
        let path = st.segment.map(|s| s.0).unwrap_or_else(|| dir.to_owned());
        let problem = "the ledger holds no signed checkpoint".to_owned();
        return Ok(Err(VerifyFailure::Checkpoint { path, offset: 0, block: summary.blocks, problem }));
    };
    Ok(Ok(Signed { unsigned_records: summary.records - st.signed_records, summary, last }))
}

/// The latest checkpoint of a ledger and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHead {
    /// The checkpoint.
    pub checkpoint: Checkpoint,
    /// The segment file.
    pub path: PathBuf,
    /// Its block's offset there.
    pub offset: u64,
    /// Its block's index in the ledger.
    pub block: u64,
}

/// The latest checkpoint in the ledger in `dir`, for anchoring it
/// elsewhere: read from the last segment, or the one before it (whose
/// last block it is when the last segment has none yet), each checked
/// from its header on as `head` does. `None` if neither holds one. Its
/// signature is not checked here: [`Checkpoint::signed_by`].
pub fn latest_checkpoint(dir: &Path) -> Result<Result<Option<SignedHead>, VerifyFailure>, LedgerError> {
    let segs = segments(dir)?;
    if segs.is_empty() {
        return Ok(Err(VerifyFailure::Empty));
    }
    for (_, path) in segs.iter().rev().take(2) {
        let io = |error| LedgerError::Io { path: path.clone(), error };
        let file = SegmentFile::open(path).map_err(io)?;
        let header = match file.header() {
            Ok(h) => h,
            Err(e) => return Ok(Err(VerifyFailure::Header { path: path.clone(), problem: e.to_string() })),
        };
        let mut chain = Chain::at_segment(&header);
        let mut found = None;
        let scanned = file
            .scan(&mut chain, header.version, |c, b, off| {
                if b.rtype() == Some(RecordType::Checkpoint) {
                    found = Checkpoint::decode(b.body).ok().map(|cp| (cp, off, c.blocks - 1));
                }
            })
            .map_err(io)?;
        if let Some(bad) = scanned.bad.filter(|_| !scanned.torn) {
            return Ok(Err(VerifyFailure::Record { path: path.clone(), bad }));
        }
        if let Some((checkpoint, offset, block)) = found {
            return Ok(Ok(Some(SignedHead { checkpoint, path: path.clone(), offset, block })));
        }
    }
    Ok(Ok(None))
}
