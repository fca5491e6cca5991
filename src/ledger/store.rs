//! Appending to a ledger folder: group commit, segment rotation. Opening
//! one, and the recovery of its tail, are in `recovery.rs`.
//!
//! The frames of a batch are encoded into a buffer as one FRAME block,
//! sealed (hashed into the chain, as one Blake3 input) once the ring
//! confirmed them intact, written with one `write(2)` by [`Ledger::flush`]
//! with whatever else the buffer holds, and made durable by `fdatasync` on
//! an interval. A new segment is written under a temporary name with its
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

/// Why a ledger folder cannot be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The error.
        source: io::Error,
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

pub(super) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> LedgerError + '_ {
    move |source| LedgerError::Io { path: path.to_owned(), source }
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
    /// Bytes written to segment files.
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
    /// the frames afterwards.
    pub fn flush(&mut self) -> Result<(), LedgerError> {
        assert!(self.open.is_none(), "ledger {}: flush with an unsealed block", self.dir.display());
        if self.buf.is_empty() {
            return Ok(());
        }
        // The path only for an error: a flush allocates nothing.
        self.write_buffer()
            .map_err(|source| LedgerError::Io { path: self.dir.join(segment_name(self.segment)), source })?;
        if self.seg_len >= self.segment_limit {
            // A closed segment ends with a checkpoint, when signing.
            if self.checkpoint(crate::process::realtime_ns(), Reason::SegmentEnd) {
                self.write_buffer()
                    .map_err(|source| LedgerError::Io { path: self.dir.join(segment_name(self.segment)), source })?;
            }
            self.sync()?;
            let (stats, signer, signed) = (self.stats, self.signer.take(), self.signed);
            *self = Ledger::start_segment(
                &self.dir,
                self.lock.clone(),
                self.segment + 1,
                self.chain.clone(),
                self.segment_limit,
                stats,
            )?;
            (self.signer, self.signed) = (signer, signed);
        }
        Ok(())
    }

    /// Writes the buffer out: one `write(2)` unless the kernel takes less.
    /// What reached the file leaves the buffer even if a later `write`
    /// fails (no room, say): a retry goes on after it (the file is appended
    /// to), rather than writing it again, breaking the chain mid-file.
    fn write_buffer(&mut self) -> io::Result<()> {
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
        result
    }

    /// Makes everything written durable (fdatasync), if anything is new.
    pub fn sync(&mut self) -> Result<(), LedgerError> {
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
    /// its `fdatasync` covers every write made before this call) and the
    /// file's path; `None` if nothing new was written. Counted as a sync;
    /// the interval restarts now.
    pub fn begin_sync(&mut self) -> Result<Option<(File, PathBuf)>, LedgerError> {
        self.last_sync = Instant::now();
        if !self.dirty {
            return Ok(None);
        }
        let path = self.dir.join(segment_name(self.segment));
        let file = self.file.try_clone().map_err(io_err(&path))?;
        self.dirty = false;
        self.stats.syncs += 1;
        Ok(Some((file, path)))
    }

    /// How long until the written data must be synced under `interval`, or
    /// `None` if nothing waits for a sync.
    pub fn sync_due_in(&self, interval: Duration) -> Option<Duration> {
        self.dirty.then(|| interval.saturating_sub(self.last_sync.elapsed()))
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::ledger::chain::Problem;
    use crate::ledger::verify::{verify, VerifyFailure};

    /// A folder removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let p = std::env::temp_dir().join(format!("helix-ledger-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&p);
            TempDir(p)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn decl() -> RingDecl {
        RingDecl { created_ns: 42, capacity: 64, max_payload: 32, policy: 1, name: "t".into() }
    }

    /// Appends frames `from..from+n` of ring `t` with 20-byte payloads,
    /// then flushes them.
    pub(in crate::ledger) fn append(l: &mut Ledger, from: u64, n: u64) {
        let (id, next) = l.declare(&decl()).unwrap();
        assert_eq!(next, from);
        for seq in from..from + n {
            l.reserve_frame(id, seq, 1, 0, 7, 20).fill(seq as u8);
            l.seal(id, 1);
        }
        l.flush().unwrap();
    }

    /// A child process being started holds every open file of its parent
    /// between its fork and its exec, the ledger folder's handle with its lock
    /// among them. A Ledger closed and opened again meanwhile (here: a child
    /// forked while the first was open, that exits 50 ms later) waits that
    /// out; before, it was refused as locked, in its own process's name.
    #[test]
    fn a_lock_a_starting_child_still_holds_is_waited_out() {
        let d = TempDir::new("forked-lock");
        let (l, _) = Ledger::open(&d.0, 1 << 20).unwrap();
        // SAFETY: the child calls only async-signal-safe functions (usleep,
        // _exit) before it ends.
        let child = unsafe { libc::fork() };
        if child == 0 {
            // SAFETY: as above.
            unsafe {
                libc::usleep(50_000);
                libc::_exit(0);
            }
        }
        assert!(child > 0, "fork failed");
        drop(l);
        let reopened = Ledger::open(&d.0, 1 << 20).map(drop);
        let mut status = 0;
        // SAFETY: `child` is this process's child; `status` is a valid int.
        assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
        reopened.unwrap();
        // Another process's lock is refused at once, naming it (tests/ledger.rs).
    }

    #[test]
    fn a_sync_handed_off_covers_what_was_written_and_only_new_writes_need_another() {
        let d = TempDir::new("handoff");
        let (mut l, _) = Ledger::open(&d.0, 1 << 20).unwrap();
        // A new ledger's first segment was synced when it was created.
        assert!(l.begin_sync().unwrap().is_none());
        append(&mut l, 1, 10);
        let syncs = l.stats().syncs;
        assert!(l.sync_due_in(Duration::from_secs(3600)).is_some(), "written data waits for a sync");
        let (file, path) = l.begin_sync().unwrap().expect("written data to sync");
        assert_eq!(path, d.0.join(segment_name(1)));
        // The handle is the segment file itself: its length is what was written.
        assert_eq!(file.metadata().unwrap().len(), fs::metadata(&path).unwrap().len());
        file.sync_data().unwrap();
        assert_eq!(l.stats().syncs, syncs + 1);
        assert_eq!(l.sync_due_in(Duration::ZERO), None, "nothing new since");
        assert!(l.begin_sync().unwrap().is_none());
        append(&mut l, 11, 1);
        assert!(l.begin_sync().unwrap().is_some());
    }

    /// Found by review: a write cut short (no room, a file-size limit) was
    /// retried whole, after its part already in the file, breaking the
    /// chain mid-file. In a process of its own (the limit is per process).
    #[test]
    fn a_write_cut_short_by_an_error_goes_on_where_it_stopped_when_retried() {
        const CHILD: &str = "HELIX_TEST_CUT_SHORT_DIR";
        let Some(dir) = std::env::var_os(CHILD) else {
            let d = TempDir::new("cut-short");
            let name = "ledger::store::tests::a_write_cut_short_by_an_error_goes_on_where_it_stopped_when_retried";
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", name, "--test-threads=1", "--nocapture"])
                .env(CHILD, &d.0)
                .output()
                .unwrap();
            let said = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success() && said.contains("1 passed"), "{said}");
            let s = verify(&d.0).unwrap().unwrap();
            assert_eq!((s.rings[0].frames, s.rings[0].next_seq), (40, 41));
            Ledger::open(&d.0, 1 << 20).unwrap();
            return;
        };
        let (mut l, _) = Ledger::open(std::path::Path::new(&dir), 1 << 20).unwrap();
        append(&mut l, 1, 10);
        let path = std::path::Path::new(&dir).join(segment_name(1));
        let len = fs::metadata(&path).unwrap().len();
        let limit = |cur: u64| libc::rlimit { rlim_cur: cur, rlim_max: libc::RLIM_INFINITY };
        // SAFETY: ignoring SIGXFSZ (a write past the limit then fails with
        // EFBIG instead of killing the process); `limit` gives valid rlimits.
        unsafe {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit(len + 100)), 0);
        }
        let (id, _) = l.declare(&decl()).unwrap();
        for seq in 11..41 {
            l.reserve_frame(id, seq, 1, 0, 7, 20).fill(seq as u8);
            l.seal(id, 1);
        }
        assert!(l.flush().is_err(), "the limit is 100 bytes on");
        assert_eq!(fs::metadata(&path).unwrap().len(), len + 100, "cut short, part written");
        // SAFETY: as above.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_FSIZE, &limit(libc::RLIM_INFINITY)) }, 0);
        l.flush().unwrap();
    }

    #[test]
    fn a_torn_tail_is_cut_off_and_the_chain_resumes() {
        let d = TempDir::new("torn");
        let (mut l, rec) = Ledger::open(&d.0, 1 << 20).unwrap();
        assert!(rec.created);
        append(&mut l, 1, 10);
        let head = l.chain().clone();
        // Half a record, as a write cut short would leave.
        let (id, _) = l.declare(&decl()).unwrap();
        l.reserve_frame(id, 11, 1, 0, 7, 20);
        l.seal(id, 1);
        let half = &l.buf[..30].to_vec();
        l.buf.clear();
        l.sealed = 0;
        drop(l);
        let path = d.0.join(segment_name(1));
        let len = fs::metadata(&path).unwrap().len();
        OpenOptions::new().append(true).open(&path).unwrap().write_all(half).unwrap();

        let (mut l, rec) = Ledger::open(&d.0, 1 << 20).unwrap();
        let (p, offset, cut, _) = rec.truncated.unwrap();
        assert_eq!((p, offset, cut), (path.clone(), len, 30));
        assert_eq!((l.chain().hash, l.chain().records), (head.hash, head.records));
        append(&mut l, 11, 5);
        drop(l);
        let s = verify(&d.0).unwrap().unwrap();
        assert_eq!((s.rings[0].frames, s.rings[0].next_seq), (15, 16));
    }

    #[test]
    fn a_bad_record_with_data_after_it_is_refused_not_truncated() {
        let d = TempDir::new("corrupt");
        let (mut l, _) = Ledger::open(&d.0, 1 << 20).unwrap();
        append(&mut l, 1, 10);
        drop(l);
        let path = d.0.join(segment_name(1));
        let mut bytes = fs::read(&path).unwrap();
        let len = bytes.len();
        // A byte of the fifth frame's length (after the header and the RING
        // block; each frame sealed alone is a block of its own).
        let ring_len = MIN_BLOCK_LEN + decl().encode().len();
        let frame_len = MIN_BLOCK_LEN + ENTRY_HEADER_LEN + 20;
        let fifth = SEGMENT_HEADER_LEN + ring_len + 4 * frame_len;
        bytes[fifth + BLOCK_HEADER_LEN + 3] ^= 1;
        fs::write(&path, &bytes).unwrap();
        match Ledger::open(&d.0, 1 << 20) {
            Err(LedgerError::Corrupt { bad, follow, .. }) => {
                assert_eq!((bad.offset, bad.index, bad.problem), (fifth as u64, 5, Problem::Hash));
                assert_eq!(follow, (len - fifth - frame_len) as u64);
            }
            other => panic!("expected Corrupt, got {:?}", other.map(|_| ())),
        }
        assert_eq!(fs::metadata(&path).unwrap().len(), len as u64, "nothing truncated");
    }

    #[test]
    fn segments_rotate_and_each_restates_its_rings() {
        let d = TempDir::new("rotate");
        let (mut l, _) = Ledger::open(&d.0, 4096).unwrap();
        for i in 0..20 {
            append(&mut l, 1 + i * 10, 10);
        }
        assert!(l.segment() >= 4, "segment {}", l.segment());
        drop(l);
        let s = verify(&d.0).unwrap().unwrap();
        assert_eq!((s.segments >= 4, s.rings.len(), s.rings[0].frames, s.rings[0].next_seq), (true, 1, 200, 201));
        // Reopening resumes from the last segment alone.
        let (l, rec) = Ledger::open(&d.0, 4096).unwrap();
        assert_eq!((rec.truncated, l.chain().rings[0].next_seq), (None, 201));
        // A leftover of an interrupted rotation is removed on open.
        drop(l);
        let tmp = d.0.join(format!("{}.tmp", segment_name(99)));
        fs::write(&tmp, b"partial").unwrap();
        let (_, rec) = Ledger::open(&d.0, 4096).unwrap();
        assert_eq!(rec.removed, vec![tmp]);
        // A new incarnation of the ring starts again at 1.
        let (mut l, _) = Ledger::open(&d.0, 4096).unwrap();
        assert_eq!(l.declare(&RingDecl { created_ns: 43, ..decl() }).unwrap(), (0, 1));
        l.flush().unwrap();
        drop(l);
        fs::remove_file(d.0.join(segment_name(2))).unwrap();
        assert!(matches!(verify(&d.0).unwrap(), Err(VerifyFailure::MissingSegment { expected: 2, .. })));
    }
}
