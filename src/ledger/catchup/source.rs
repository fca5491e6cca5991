//! The ledger side of a catch-up: one ring incarnation's records from a
//! sequence on, read forward across segments as the recorder writes them.

use std::path::{Path, PathBuf};

use super::segment::{restated, Segment, Step};
use super::CatchUpError;
use crate::ledger::block::{split, ENTRY_HEADER_LEN};
use crate::ledger::format::{GapInfo, RecordType};
use crate::ledger::recovery::segments;
use crate::ledger::retention::read_pruned;
use crate::ledger::store::LedgerError;

/// The next record for the reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Item {
    /// A frame: its sequence, kind and payload length (the payload is
    /// [`LedgerSource::payload`]).
    Frame { seq: u64, kind: u32, len: usize },
    /// Sequences `first..=last` the ledger recorded as lost.
    Gap { first: u64, last: u64 },
}

/// Reads ring `ring` (incarnation `created_ns`) from the ledger in `dir`.
pub(super) struct LedgerSource {
    dir: PathBuf,
    ring: String,
    created_ns: u64,
    seg: Segment,
    /// The frames of the current FRAME block not yet taken, as entries
    /// (length, kind, payload), and the sequence of the first.
    entries: Vec<u8>,
    at: usize,
    seq: u64,
    /// A GAP not yet taken.
    gap: Option<(u64, u64)>,
    /// The next sequence wanted: records before it are skipped.
    pub next: u64,
    /// The first sequence seen of the incarnation (before skipping).
    pub first: Option<u64>,
    /// Why the visible end is where it is, if it is not a clean end.
    pub tail: Option<String>,
    /// Retention pruned the segments after the one this reader was in: the
    /// next record of the incarnation past `next` leaves a gap before it.
    overtaken: bool,
}

impl LedgerSource {
    /// Positions at `from` in ring `ring`'s incarnation `created_ns`: the
    /// reading starts at the last segment whose restated declaration of
    /// the incarnation expects `from` or an earlier sequence (the first
    /// kept segment if none does).
    pub fn open(dir: &Path, ring: &str, created_ns: u64, from: u64) -> Result<LedgerSource, CatchUpError> {
        if !dir.is_dir() {
            return Err(CatchUpError::NoLedger { dir: dir.to_owned() });
        }
        let segs = segments(dir).map_err(CatchUpError::Ledger)?;
        let kept = read_pruned(dir).map_err(|e| CatchUpError::Ledger(crate::ledger::LedgerError::Manifest(e)))?;
        let first_kept = kept.map_or(1, |p| p.segment + 1);
        let segs: Vec<_> = segs.into_iter().filter(|(n, _)| *n >= first_kept).collect();
        let Some(mut start) = segs.first().cloned() else {
            return Err(CatchUpError::NoLedger { dir: dir.to_owned() });
        };
        for (n, path) in &segs[1..] {
            match restated(path, ring) {
                Some((c, next)) if c == created_ns && next <= from => start = (*n, path.clone()),
                Some((c, _)) if c == created_ns => break,
                _ => {}
            }
        }
        let seg = Segment::open(start.0, &start.1, None)?;
        Ok(LedgerSource {
            dir: dir.to_owned(),
            ring: ring.to_owned(),
            created_ns,
            seg,
            entries: Vec::new(),
            at: 0,
            seq: 0,
            gap: None,
            next: from,
            first: None,
            tail: None,
            overtaken: false,
        })
    }

    /// The next record at or after `next`, if the ledger has made one
    /// visible.
    pub fn peek(&mut self) -> Result<Option<Item>, CatchUpError> {
        loop {
            if let Some((first, last)) = self.gap {
                return Ok(Some(Item::Gap { first, last }));
            }
            if self.at < self.entries.len() {
                let e = &self.entries[self.at..];
                let len = u32::from_le_bytes(e[..4].try_into().unwrap()) as usize;
                let kind = u32::from_le_bytes(e[4..8].try_into().unwrap());
                return Ok(Some(Item::Frame { seq: self.seq, kind, len }));
            }
            if !self.load()? {
                return Ok(None);
            }
        }
    }

    /// Moves on to `next` (the reader went on in the ring meanwhile): what
    /// is loaded before it is passed over. (Found by review: a reader
    /// lapped again went back to the block an earlier lap had loaded, and
    /// delivered its sequences again, going backwards.)
    pub fn seek(&mut self, next: u64) {
        self.next = next;
        if let Some((first, last)) = self.gap {
            self.gap = (last >= next).then_some((first.max(next), last));
        }
        while self.at < self.entries.len() && self.seq < next {
            let len = u32::from_le_bytes(self.entries[self.at..self.at + 4].try_into().unwrap()) as usize;
            self.at += ENTRY_HEADER_LEN + len;
            self.seq += 1;
        }
    }

    /// The payload of the frame [`peek`](Self::peek) returned.
    pub fn payload(&self) -> &[u8] {
        let e = &self.entries[self.at..];
        let len = u32::from_le_bytes(e[..4].try_into().unwrap()) as usize;
        &e[ENTRY_HEADER_LEN..ENTRY_HEADER_LEN + len]
    }

    /// Takes the record [`peek`](Self::peek) returned.
    pub fn take(&mut self) {
        if let Some((_, last)) = self.gap.take() {
            self.next = last + 1;
            return;
        }
        let len = u32::from_le_bytes(self.entries[self.at..self.at + 4].try_into().unwrap()) as usize;
        self.at += ENTRY_HEADER_LEN + len;
        self.seq += 1;
        self.next = self.seq;
    }

    /// Reads blocks until one of the incarnation holds a sequence at or
    /// after `next`; false at the end of what is visible.
    fn load(&mut self) -> Result<bool, CatchUpError> {
        loop {
            if self.gap.is_some() || self.at < self.entries.len() {
                return Ok(true);
            }
            let range = match self.seg.next_block()? {
                Step::Block(r) => r,
                Step::End(note) => {
                    if self.advance(note)? {
                        continue;
                    }
                    return Ok(false);
                }
            };
            self.tail = None;
            if self.accept(range)? {
                return Ok(true);
            }
        }
    }

    /// Takes what the verified block at `range` holds at or after `next`,
    /// if it is of the incarnation; whether it held anything.
    fn accept(&mut self, range: std::ops::Range<usize>) -> Result<bool, CatchUpError> {
        let block = split(self.seg.version, &self.seg.bytes()[range]).expect("verified");
        // CHECKPOINTs (which name no ring), and kinds of record this reader
        // does not know (a newer format's): not frames.
        if !matches!(block.rtype(), Some(RecordType::Frame | RecordType::Gap | RecordType::Ring)) {
            return Ok(false);
        }
        let decl = &self.seg.chain.rings[block.header.ring as usize].decl;
        if decl.name != self.ring {
            return Ok(false);
        }
        if decl.created_ns != self.created_ns {
            // Another incarnation of the name: an older one is skipped; a
            // newer one after this one's records means the ring was
            // replaced, and its sequence started again.
            return match self.first {
                Some(_) if block.rtype() == Some(RecordType::Ring) => {
                    Err(CatchUpError::Replaced { ring: self.ring.clone(), after: self.next.saturating_sub(1) })
                }
                _ => Ok(false),
            };
        }
        let (first, last) = (block.header.seq, block.last_seq());
        // The first record of the incarnation past pruned segments (its
        // restatement, which says the next sequence even of a ring idle
        // since; found by review: a gap waited for its next frame) says
        // what they held of it: lost to this reader.
        if std::mem::take(&mut self.overtaken) && first > self.next {
            self.gap = Some((self.next, first - 1));
        }
        match block.rtype() {
            Some(RecordType::Frame) => {
                self.first.get_or_insert(first);
                if last < self.next {
                    return Ok(false);
                }
                self.entries.clear();
                self.at = 0;
                for r in block.records().skip((self.next.max(first) - first) as usize) {
                    let r =
                        r.map_err(|p| CatchUpError::Corrupt { path: self.seg.path.clone(), offset: 0, problem: p })?;
                    self.entries.extend_from_slice(&(r.payload.len() as u32).to_le_bytes());
                    self.entries.extend_from_slice(&r.header.kind.to_le_bytes());
                    self.entries.extend_from_slice(r.payload);
                }
                self.seq = self.next.max(first);
                Ok(true)
            }
            Some(RecordType::Gap) => {
                self.first.get_or_insert(first);
                let last = GapInfo::decode(block.body).map_or(first, |g| g.last);
                if last < self.next {
                    return Ok(false);
                }
                // (From before it, if the pruned segments' loss comes first.)
                self.gap = Some((self.gap.map_or(self.next.max(first), |(from, _)| from), last));
                Ok(true)
            }
            // RING declarations.
            _ => Ok(false),
        }
    }

    /// At the visible end of the current segment (`note`: why, if bytes
    /// follow): moves to the next segment if there is one. The recorder
    /// renames a segment into place only after the one before is whole,
    /// so once the next exists, this one is read to its end once more and
    /// must end cleanly.
    fn advance(&mut self, note: Option<String>) -> Result<bool, CatchUpError> {
        let n = self.seg.n + 1;
        let listed = segments(&self.dir).map_err(CatchUpError::Ledger)?;
        let path = match listed.iter().find(|(m, _)| *m >= n).cloned() {
            Some((m, path)) if m == n => path,
            // Retention pruned the segments after this one while it was
            // read (a slow reader overtaken): on at the first kept one
            // (segments the manifest counts may still be there: they are
            // deleted after it is written), what they held of the ring
            // said lost. (Found by review: the reader stopped with a
            // damaged ledger's error.)
            Some(_)
                if let Some(kept) = read_pruned(&self.dir).ok().flatten().map(|p| p.segment + 1).filter(|&k| k > n) =>
            {
                let Some((_, path)) = listed.iter().find(|(m, _)| *m == kept) else {
                    let missing = LedgerError::MissingSegment { dir: self.dir.clone(), segment: kept, next: None };
                    return Err(CatchUpError::Ledger(missing));
                };
                self.seg = Segment::open(kept, path, None)?;
                self.overtaken = true;
                return Ok(true);
            }
            Some((m, _)) => {
                let missing = LedgerError::MissingSegment { dir: self.dir.clone(), segment: n, next: Some(m) };
                return Err(CatchUpError::Ledger(missing));
            }
            None => {
                self.tail = note;
                return Ok(false);
            }
        };
        match self.seg.next_block()? {
            Step::Block(r) => {
                // Written before the rename, read only now.
                self.accept(r)?;
                return Ok(true);
            }
            Step::End(Some(note)) => {
                return Err(CatchUpError::Corrupt {
                    path: self.seg.path.clone(),
                    offset: 0,
                    problem: format!("a closed segment ends with a bad block ({note})"),
                })
            }
            Step::End(None) => {}
        }
        if self.seg.chain.unrestated() > 0 {
            return Err(CatchUpError::Corrupt {
                path: self.seg.path.clone(),
                offset: 0,
                problem: format!(
                    "a closed segment that restates only some of the {} rings",
                    self.seg.chain.rings.len()
                ),
            });
        }
        let (chain, version) = (self.seg.chain.clone(), self.seg.version);
        self.seg = Segment::open(n, &path, Some((&chain, version)))?;
        Ok(true)
    }
}
