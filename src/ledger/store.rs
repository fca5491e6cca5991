//! Appending to a ledger folder: group commit, segment rotation. Opening
//! one, and the recovery of its tail, are in `recovery.rs`.
//!
//! The frames of a batch are encoded into a buffer as one FRAME block,
//! sealed (hashed into the chain, as one Blake3 input) once the ring
//! confirmed them intact, written with one `write(2)` by [`Ledger::flush`]
//! with whatever else the buffer holds (or, writing behind, by a thread of
//! the ledger's own: [`Ledger::write_behind`]), and made durable by
//! `fdatasync` on an interval. A new segment is written under a temporary name with its
//! header and ring declarations, synced, and renamed into place, so every
//! segment file starts whole.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::block::*;
use super::chain::{BadRecord, Chain};
use super::format::*;
use super::recovery;
pub use super::recovery::{is_torn_tail, scan_tail, segments, Recovery, LOCK_FILE};
use super::sign::{Reason, Signer};
use append::OpenBlock;

mod append;
mod behind;

/// Why a ledger folder cannot be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// A file operation failed.
    #[error("{path}: {error}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The error.
        error: io::Error,
    },
    /// The last segment's header is unreadable.
    #[error("{path}: {problem}")]
    Header {
        /// The segment.
        path: PathBuf,
        /// What is wrong.
        problem: HeaderError,
    },
    /// Another recorder holds the folder: two would fork the hash chain.
    #[error(
        "{dir}: another helix-ledger records into this folder{}; two recorders would fork the hash chain, so stop that one first",
        .holder.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    Locked {
        /// The folder.
        dir: PathBuf,
        /// The holder's pid, as it wrote it into the lock file.
        holder: Option<u32>,
    },
    /// A bad record that is not a torn tail: data follows it, so truncating
    /// would destroy records. The ledger refuses to append to it.
    #[error(
        "{path}: offset {}, record {}: {} ({} bytes follow); this is not a torn tail, so nothing is truncated: \
         run `helix-ledger verify`, and move the folder aside to start a new ledger",
        .bad.offset, .bad.index, .bad.problem, .follow
    )]
    Corrupt {
        /// The segment.
        path: PathBuf,
        /// The first bad block (boxed: it is large, and rare).
        bad: Box<BadRecord>,
        /// Bytes from its end (or its start, if its length is unreadable)
        /// to the end of the file.
        follow: u64,
    },
    /// A ring name that cannot be recorded: none a ring can have.
    #[error("ring name {0:?} cannot be recorded: {1}")]
    RingName(String, crate::shm::NameError),
    /// More rings than a record's ring id can name.
    #[error("a ledger records at most 65536 rings")]
    TooManyRings,
    /// The `pruned` manifest is unreadable or does not fit the folder.
    #[error("{0}")]
    Manifest(super::anchor::LineError),
    /// A segment is missing from the folder's numbering (deleted by hand,
    /// lost in a restore): the segments do not continue the chain, and
    /// retention deletes nothing from such a folder.
    #[error(
        "{dir}: segment {segment} ({}) is missing{}; the folder does not continue the hash chain: run `helix-ledger verify`",
        segment_name(*.segment),
        .next.map(|n| format!(" and segment {n} follows")).unwrap_or_default()
    )]
    MissingSegment {
        /// The folder.
        dir: PathBuf,
        /// The first segment missing.
        segment: u64,
        /// The segment found in its place, if any.
        next: Option<u64>,
    },
}

/// The most a flush with no write in flight writes on the calling thread
/// rather than hand to the writing thread ([`Ledger::write_behind`]).
const WRITE_HERE_MAX: usize = 64 << 10;

pub(super) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> LedgerError + '_ {
    move |error| LedgerError::Io { path: path.to_owned(), error }
}

/// Counters of an open ledger since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppendStats {
    /// FRAME records sealed.
    pub frames: u64,
    /// GAP records written.
    pub gaps: u64,
    /// Sequences the GAP records cover.
    pub lost: u64,
    /// Bytes written to segment files (with a writing thread, handed to
    /// it: see [`Ledger::write_behind`]).
    pub bytes: u64,
    /// fdatasync calls.
    pub syncs: u64,
    /// Segments started.
    pub segments: u64,
    /// Checkpoints signed.
    pub checkpoints: u64,
}

/// An open ledger folder, appending.
pub struct Ledger {
    dir: PathBuf,
    /// The folder's lock, held while this value lives (see [`recovery::lock`]).
    lock: Arc<File>,
    file: File,
    segment: u64,
    /// Bytes in the current segment file.
    seg_len: u64,
    segment_limit: u64,
    /// Encoded blocks not yet written; `buf[..sealed]` are hashed, and
    /// `buf[sealed..]` is the open FRAME block, if any.
    buf: Vec<u8>,
    sealed: usize,
    /// The FRAME block being filled (see [`Ledger::reserve_frame`]).
    open: Option<OpenBlock>,
    /// The chain after the last sealed block.
    chain: Chain,
    dirty: bool,
    last_sync: Instant,
    stats: AppendStats,
    /// Signs checkpoints, if set ([`Ledger::set_signer`]).
    signer: Option<Signer>,
    /// When the last checkpoint was made (CLOCK_REALTIME ns), and the
    /// chain's block count just after it.
    signed: (u64, u64),
    /// The writing thread, if writes go behind ([`Ledger::write_behind`]).
    behind: Option<behind::Behind>,
    /// Flushes that wrote something, without a writing thread.
    flushes: u64,
}

impl Drop for Ledger {
    /// Lets the writing thread finish before the folder's lock goes: no
    /// second recorder may take the folder while this one still writes.
    fn drop(&mut self) {
        self.behind = None;
    }
}

/// An `fdatasync` to run off the recording thread: see
/// [`Ledger::begin_sync`].
pub struct SyncJob {
    file: File,
    path: PathBuf,
    /// With a writing thread: what it must have written first.
    after: Option<(Arc<behind::Shared>, u64)>,
}

impl SyncJob {
    /// An `fdatasync` of `file`, named `path` in its error.
    pub fn new(file: File, path: PathBuf) -> SyncJob {
        SyncJob { file, path, after: None }
    }

    /// Waits for the writes it covers (with a writing thread), then makes
    /// them durable.
    pub fn run(self) -> Result<(), LedgerError> {
        let fail = |e: io::Error| LedgerError::Io {
            path: self.path.clone(),
            error: io::Error::new(e.kind(), format!("fdatasync: {e}")),
        };
        if let Some((shared, flushes)) = &self.after {
            shared.wait_for(*flushes).map_err(io_err(&self.path))?;
        }
        self.file.sync_data().map_err(fail)
    }
}

impl Ledger {
    /// Opens (or starts) the ledger in `dir`: finds the last complete
    /// block, cuts off a torn tail, and checks the last segment's chain
    /// from its header on. A last segment of format version 1 is left as
    /// it is, and a new segment continues the chain.
    pub fn open(dir: &Path, segment_limit: u64) -> Result<(Ledger, Recovery), LedgerError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let lock = recovery::lock(dir)?;
        let mut recovery = Recovery { removed: recovery::remove_temporaries(dir)?, ..Recovery::default() };
        recovery.pruned = super::retention::finish_pruning(dir)?;
        let mut all = segments(dir)?;
        let Some((segment, path)) = all.pop() else {
            recovery.created = true;
            let ledger = Ledger::start_segment(dir, lock, 1, Chain::default(), segment_limit, AppendStats::default())?;
            return Ok((ledger, recovery));
        };
        let prev = all.pop().filter(|(n, _)| *n + 1 == segment).map(|(_, p)| p);
        let (header, chain, len) = recovery::recover_tail(path.clone(), prev.as_deref(), &mut recovery)?;
        recovery.records = chain.records;
        recovery.segment = segment;
        if header.version != VERSION {
            // The recorder appends only in its own format.
            recovery.segment = segment + 1;
            recovery.upgraded = Some(segment + 1);
            let ledger = Ledger::start_segment(dir, lock, segment + 1, chain, segment_limit, AppendStats::default())?;
            return Ok((ledger, recovery));
        }
        let file = super::folder::open(&path, OpenOptions::new().append(true)).map_err(io_err(&path))?;
        let mut ledger = Ledger::new(dir, lock, file, segment, segment_limit, chain, AppendStats::default());
        ledger.seg_len = len;
        Ok((ledger, recovery))
    }

    /// A ledger appending to `file`, segment `segment`, empty so far, with
    /// nothing buffered.
    fn new(
        dir: &Path,
        lock: Arc<File>,
        file: File,
        segment: u64,
        segment_limit: u64,
        chain: Chain,
        stats: AppendStats,
    ) -> Ledger {
        Ledger {
            dir: dir.to_owned(),
            lock,
            file,
            segment,
            seg_len: 0,
            segment_limit,
            buf: Vec::with_capacity(1 << 20),
            sealed: 0,
            open: None,
            chain,
            dirty: false,
            last_sync: Instant::now(),
            stats,
            signer: None,
            signed: (0, 0),
            behind: None,
            flushes: 0,
        }
    }

    /// Writes segment `n` (header and a declaration of every ring) under a
    /// temporary name, syncs it and renames it into place.
    fn start_segment(
        dir: &Path,
        lock: Arc<File>,
        n: u64,
        chain: Chain,
        segment_limit: u64,
        stats: AppendStats,
    ) -> Result<Ledger, LedgerError> {
        let header = SegmentHeader::new(n, chain.records, chain.blocks, crate::process::realtime_ns(), chain.hash);
        let path = dir.join(segment_name(n));
        let tmp = dir.join(format!("{}.tmp", segment_name(n)));
        let file = super::folder::create_new(&tmp).map_err(io_err(&tmp))?;
        let fresh = Chain { rings: Vec::new(), ..chain.clone() };
        let stats = AppendStats { segments: stats.segments + 1, ..stats };
        let mut ledger = Ledger::new(dir, lock, file, n, segment_limit, fresh, stats);
        ledger.buf.extend_from_slice(&header.encode());
        ledger.sealed = ledger.buf.len();
        for (id, r) in chain.rings.iter().enumerate() {
            ledger.append_ring(id as u16, &r.decl, r.next_seq);
        }
        // The new chain keeps the old counters of every ring.
        ledger.chain.rings = chain.rings;
        ledger.write_buffer().map_err(io_err(&tmp))?;
        ledger.file.sync_data().map_err(io_err(&tmp))?;
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))?;
        ledger.dirty = false;
        ledger.last_sync = Instant::now();
        Ok(ledger)
    }

    /// The chain after the last sealed record.
    pub fn chain(&self) -> &Chain {
        &self.chain
    }

    /// Counters since open.
    pub fn stats(&self) -> AppendStats {
        self.stats
    }

    /// The segment being appended to.
    pub fn segment(&self) -> u64 {
        self.segment
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The id of `decl.name` and the next sequence to record from it. A
    /// ring not seen before, or a new incarnation of one (another
    /// `created_ns`), is declared with a RING record and starts at 1.
    pub fn declare(&mut self, decl: &RingDecl) -> Result<(u16, u64), LedgerError> {
        // A RING record of any other name breaks a rule (`RingDecl::decode`).
        crate::shm::validate_ring_name(&decl.name).map_err(|e| LedgerError::RingName(decl.name.clone(), e))?;
        let id = match self.chain.ring_id(&decl.name) {
            Some(id) if self.chain.rings[id as usize].decl.created_ns == decl.created_ns => {
                return Ok((id, self.chain.rings[id as usize].next_seq))
            }
            Some(id) => id,
            None => u16::try_from(self.chain.rings.len()).map_err(|_| LedgerError::TooManyRings)?,
        };
        self.append_ring(id, decl, 1);
        Ok((id, 1))
    }

    /// Bytes buffered and not yet written.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Writes the sealed blocks to the segment file with one `write(2)`
    /// (the page cache: they survive this process being killed), and
    /// starts the next segment if this one is full. The caller may release
    /// the frames afterwards; writing behind, once [`Ledger::written`]
    /// reaches [`Ledger::flushed`] as it is after this call.
    pub fn flush(&mut self) -> Result<(), LedgerError> {
        assert!(self.open.is_none(), "ledger {}: flush with an unsealed block", self.dir.display());
        if self.buf.is_empty() {
            return Ok(());
        }
        // The path only for an error: a flush allocates nothing.
        self.write_buffer()
            .map_err(|error| LedgerError::Io { path: self.dir.join(segment_name(self.segment)), error })?;
        if self.seg_len >= self.segment_limit {
            // A closed segment ends with a checkpoint, when signing.
            if self.checkpoint(crate::process::realtime_ns(), Reason::SegmentEnd) {
                self.write_buffer()
                    .map_err(|error| LedgerError::Io { path: self.dir.join(segment_name(self.segment)), error })?;
            }
            // Durable before the next segment exists, whatever a sync
            // started earlier is still doing.
            self.dirty = true;
            self.sync()?;
            let (stats, signer, signed) = (self.stats, self.signer.take(), self.signed);
            let (behind, flushes) = (self.behind.take(), self.flushes);
            *self = Ledger::start_segment(
                &self.dir,
                self.lock.clone(),
                self.segment + 1,
                self.chain.clone(),
                self.segment_limit,
                stats,
            )?;
            (self.signer, self.signed, self.flushes) = (signer, signed, flushes);
            if let Some(mut b) = behind {
                let path = self.dir.join(segment_name(self.segment));
                b.switch(self.file.try_clone().map_err(io_err(&path))?).map_err(io_err(&path))?;
                self.behind = Some(b);
            }
        }
        Ok(())
    }

    /// From now on, [`Ledger::flush`] hands the buffer to a thread of the
    /// ledger's own, which makes the `write(2)`, and returns: the caller
    /// reads on while the kernel copies. Frames flushed may be released
    /// once [`Ledger::written`] reaches [`Ledger::flushed`] as it was
    /// just after their flush. [`Ledger::sync`] and a new segment wait
    /// for the thread first. A failed write fails every later flush.
    pub fn write_behind(&mut self) -> Result<(), LedgerError> {
        if self.behind.is_none() {
            let path = self.dir.join(segment_name(self.segment));
            let file = self.file.try_clone().map_err(io_err(&path))?;
            self.behind = Some(behind::Behind::spawn(file, self.flushes).map_err(io_err(&path))?);
        }
        Ok(())
    }

    /// Flushes that wrote something or handed it to be written, counted
    /// from open.
    pub fn flushed(&self) -> u64 {
        self.behind.as_ref().map_or(self.flushes, |b| b.handed())
    }

    /// Of [`Ledger::flushed`], those whose bytes are in the segment file
    /// (the page cache: they survive this process being killed). Without
    /// a writing thread, all of them.
    pub fn written(&self) -> u64 {
        self.behind.as_ref().map_or(self.flushes, |b| b.written())
    }

    /// Waits until everything flushed is in the segment file.
    pub fn wait_written(&self) -> Result<(), LedgerError> {
        match &self.behind {
            Some(b) => b.wait_written().map_err(io_err(&self.dir.join(segment_name(self.segment)))),
            None => Ok(()),
        }
    }

    /// Writes the buffer out: one `write(2)` unless the kernel takes less.
    /// What reached the file leaves the buffer even if a later `write`
    /// fails (no room, say): a retry goes on after it (the file is appended
    /// to), rather than writing it again, breaking the chain mid-file.
    fn write_buffer(&mut self) -> io::Result<()> {
        if let Some(b) = self.behind.as_mut() {
            let len = self.buf.len() as u64;
            // A little, with nothing in flight (a quiet ledger, a command's
            // record): written at once, without waking the thread.
            let result = if self.buf.len() <= WRITE_HERE_MAX && b.idle() {
                b.write_here(&mut self.file, &mut self.buf)
            } else {
                b.hand(std::mem::take(&mut self.buf)).map(|next| self.buf = next)
            };
            // The buffer is out (or lost with a failure that ends the
            // writing: every later flush fails).
            self.buf.clear();
            self.sealed = 0;
            result?;
            self.seg_len += len;
            self.stats.bytes += len;
            self.dirty = true;
            return Ok(());
        }
        let mut written = 0;
        let result = loop {
            if written == self.buf.len() {
                break Ok(());
            }
            match self.file.write(&self.buf[written..]) {
                Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        self.seg_len += written as u64;
        self.stats.bytes += written as u64;
        self.dirty |= written > 0;
        self.buf.drain(..written);
        // Only sealed blocks are written (no block is open in a flush).
        self.sealed = self.buf.len();
        self.flushes += u64::from(result.is_ok());
        result
    }

    /// Makes everything written durable (fdatasync), if anything is new.
    pub fn sync(&mut self) -> Result<(), LedgerError> {
        self.wait_written()?;
        if self.dirty {
            let path = self.dir.join(segment_name(self.segment));
            self.file.sync_data().map_err(io_err(&path))?;
            self.dirty = false;
            self.stats.syncs += 1;
        }
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Hands what was written so far to be made durable by another thread:
    /// a second handle on the current segment file (the same open file, so
    /// its `fdatasync` covers every write made before this call; with a
    /// writing thread, [`SyncJob::run`] waits for those writes first);
    /// `None` if nothing new was written. Counted as a sync; the interval
    /// restarts now.
    pub fn begin_sync(&mut self) -> Result<Option<SyncJob>, LedgerError> {
        self.last_sync = Instant::now();
        if !self.dirty {
            return Ok(None);
        }
        let path = self.dir.join(segment_name(self.segment));
        let file = self.file.try_clone().map_err(io_err(&path))?;
        self.dirty = false;
        self.stats.syncs += 1;
        let after = self.behind.as_ref().map(|b| b.sync_after());
        Ok(Some(SyncJob { file, path, after }))
    }

    /// How long until the written data must be synced under `interval`, or
    /// `None` if nothing waits for a sync.
    pub fn sync_due_in(&self, interval: Duration) -> Option<Duration> {
        self.dirty.then(|| interval.saturating_sub(self.last_sync.elapsed()))
    }
}

#[cfg(test)]
pub(super) mod tests;
