//! Catch-up from the ledger (Aeron's replay-merge): a reader that starts at
//! a sequence the ring no longer holds is served from the ledger up to
//! where the ring holds what comes next, then joins the ring and reads on
//! live, with no gap and no duplicate at the join. `docs/ledger.md`
//! ("Catch-up").
//!
//! The ledger is read forward from the segment that holds the start,
//! block by block, each verified (hash and rules) from its segment's
//! header; only whole blocks count, so the reader sees what the recorder
//! has written, not what it still buffers. When the ledger has nothing
//! more to show and the ring still holds the next sequence, the reader
//! joins the ring there ([`join::decide`]). If the ring laps the reader
//! (while it joins, or later), it goes back to the ledger, which holds
//! every sequence the ring overwrote (the recorder gates the writer, or
//! records a GAP), and joins again later.
//!
//! The join is keyed on the ring's incarnation (its `created_ns`): a ring
//! removed and created again starts its sequence again, and the ledger's
//! records of another incarnation are never spliced in. A writer restart
//! (a new lease epoch) keeps the sequence, and is crossed as if nothing
//! happened.

pub mod join;
mod segment;
mod source;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use join::{decide, Source};
use source::{Item, LedgerSource};

use super::LedgerError;
use crate::ring::{AttachError, FrameError, FrameInfo, Geometry, Overrun, ReadError, TryReadError, UnderName};
use crate::{Namespace, Reader, ReaderOptions, RingView, Start};

/// Where `helix-ledger` records by default (its configuration's `dir`).
pub const DEFAULT_LEDGER_DIR: &str = "/var/lib/helix/ledger";

/// Why a catch-up reader returned no frame.
#[derive(Debug, thiserror::Error)]
pub enum CatchUpError {
    /// Nothing to read yet (within the timeout, for a waiting read).
    #[error("no frame yet")]
    Empty,
    /// Sequences lost: a GAP the ledger recorded, or frames the ring
    /// overwrote that no ledger holds. Reading goes on at `resume_at`.
    #[error("{} sequences lost; next is {}", .0.lost, .0.resume_at)]
    Overrun(Overrun),
    /// The frame does not fit the buffer (it stays unread).
    #[error(transparent)]
    Frame(FrameError),
    /// The ring could not be attached, or a file of it shrank.
    #[error(transparent)]
    Attach(#[from] AttachError),
    /// A read of the ring failed (a file of it shrank).
    #[error("{0}")]
    Ring(String),
    /// Sequences start at 1.
    #[error("sequence 0 does not exist: sequences start at 1")]
    ZeroStart,
    /// The start is after the next sequence the writer will publish.
    #[error("sequence {from} is in the future: ring {ring:?} publishes {head} next")]
    Future {
        /// The ring.
        ring: String,
        /// The start asked for.
        from: u64,
        /// The next sequence the writer publishes.
        head: u64,
    },
    /// The start is older than both the ledger and the ring hold.
    #[error(
        "sequence {from} of ring {ring:?} is older than the ledger holds (its first recorded sequence of this ring is \
         {first}; retention may have pruned the rest) and the ring no longer holds it: start at {first} or later"
    )]
    Before {
        /// The ring.
        ring: String,
        /// The start asked for.
        from: u64,
        /// The first sequence a source holds.
        first: u64,
    },
    /// The ledger holds no record of this incarnation of the ring (nor
    /// does a segment from the start on), and the ring no longer holds
    /// the start.
    #[error(
        "the ledger holds no record of ring {ring:?} as created at {created_ns} ns (not recorded, or another          incarnation of the name), and the ring no longer holds sequence {from}"
    )]
    NotRecorded {
        /// The ring.
        ring: String,
        /// The start asked for.
        from: u64,
        /// The live ring's `created_ns`.
        created_ns: u64,
    },
    /// The folder holds no ledger segment, or does not exist.
    #[error("{}: no ledger segment (seg-NNNNNNNNNN.hxl) in this folder, or no such folder", .dir.display())]
    NoLedger {
        /// The folder.
        dir: PathBuf,
    },
    /// The ledger declares a new incarnation of the ring after the
    /// sequences read, or (at a waiting read's timeout) the ring's name
    /// holds another incarnation than the one joined: the ring was
    /// replaced and its sequence started again; the reader does not splice
    /// the two.
    #[error(
        "ring {ring:?} was removed and created again after sequence {after}: the sequence started again, so reading \
         does not go on across it; start a new reader"
    )]
    Replaced {
        /// The ring.
        ring: String,
        /// The last sequence read of the incarnation.
        after: u64,
    },
    /// A segment holds a bad block with data after it, or a closed segment
    /// ends in one: the ledger is damaged (`helix-ledger verify` names it).
    #[error("{}: offset {offset}: {problem} (run `helix-ledger verify`)", .path.display())]
    Corrupt {
        /// The segment.
        path: PathBuf,
        /// The block's offset.
        offset: u64,
        /// What is wrong.
        problem: String,
    },
    /// A file of the ledger could not be read.
    #[error("{}: {error}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        error: std::io::Error,
    },
    /// The folder could not be listed, or its manifest read.
    #[error(transparent)]
    Ledger(LedgerError),
}

impl CatchUpError {
    fn ring(e: TryReadError) -> CatchUpError {
        match e {
            TryReadError::Empty => CatchUpError::Empty,
            TryReadError::Overrun(o) => CatchUpError::Overrun(o),
            TryReadError::Frame(f) => CatchUpError::Frame(f),
            TryReadError::Damaged(d) => CatchUpError::Ring(d.to_string()),
        }
    }
}

/// Counters of a catch-up reader.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CatchUpStats {
    /// Frames read from the ledger.
    pub from_ledger: u64,
    /// Frames read from the ring.
    pub from_ring: u64,
    /// Times it joined the ring.
    pub joins: u64,
    /// Times the ring lapped it and it went back to the ledger.
    pub rejoins: u64,
    /// Sequences reported lost ([`CatchUpError::Overrun`]).
    pub lost: u64,
}

/// A reader served from the ledger until it can join the ring (see the
/// module documentation). Its reads report the next frame, or why there
/// is none, like [`Reader`]'s.
pub struct CatchUpReader {
    ns: Namespace,
    ring: String,
    view: RingView,
    opts: ReaderOptions,
    dir: PathBuf,
    created_ns: u64,
    /// The next sequence to deliver.
    next: u64,
    source: Option<LedgerSource>,
    live: Option<Reader>,
    stats: CatchUpStats,
}

impl CatchUpReader {
    /// A reader of ring `ring` in `ns` from sequence `from`, served from
    /// the ledger in `dir` while the ring no longer holds what comes next.
    /// `opts.start` is ignored; `opts.gating` applies once it joins the
    /// ring. Fails with [`CatchUpError::Future`] past the writer's next
    /// sequence, and [`CatchUpError::Before`] where neither the ledger nor
    /// the ring holds `from`.
    pub fn open(
        ns: &Namespace,
        ring: &str,
        dir: &Path,
        from: u64,
        opts: &ReaderOptions,
    ) -> Result<CatchUpReader, CatchUpError> {
        if from == 0 {
            return Err(CatchUpError::ZeroStart);
        }
        let view = RingView::attach(ns, ring)?;
        let created_ns = view.geometry().created_ns;
        let mut r = CatchUpReader {
            ns: ns.clone(),
            ring: ring.to_owned(),
            view,
            opts: opts.clone(),
            dir: dir.to_owned(),
            created_ns,
            next: from,
            source: None,
            live: None,
            stats: CatchUpStats::default(),
        };
        let (oldest, head) = r.window();
        match decide(from, from..from, oldest, head) {
            Source::Future { head } => return Err(CatchUpError::Future { ring: r.ring, from, head }),
            Source::Ring => r.join()?,
            _ => {
                let mut source = LedgerSource::open(dir, ring, created_ns, from)?;
                source.peek()?;
                let first = source.first.filter(|&f| f > from);
                let none = source.first.is_none();
                r.source = Some(source);
                if none {
                    return Err(CatchUpError::NotRecorded { ring: r.ring, from, created_ns });
                }
                if let Some(first) = first {
                    let (oldest, head) = r.window();
                    match decide(from, first..first + 1, oldest, head) {
                        Source::Ring => r.join()?,
                        _ => return Err(CatchUpError::Before { ring: r.ring, from, first: first.min(oldest) }),
                    }
                }
            }
        }
        Ok(r)
    }

    /// The ring's oldest frame and the next sequence it publishes.
    fn window(&self) -> (u64, u64) {
        let head = self.view.published().saturating_add(1);
        (head.saturating_sub(self.view.geometry().capacity).max(1), head)
    }

    /// Joins the ring at `next`.
    fn join(&mut self) -> Result<(), CatchUpError> {
        let opts = ReaderOptions { start: Start::At(self.next), ..self.opts.clone() };
        self.live = Some(Reader::attach(&self.ns, &self.ring, &opts)?);
        self.stats.joins += 1;
        Ok(())
    }

    /// The ring lapped the live reader (`o`): back to the ledger if it
    /// holds, or will hold, the lost sequences; if it begins among them
    /// (retention pruned what came before), only those before it are
    /// reported lost, and reading goes on from the ledger there;
    /// otherwise the loss is reported and reading goes on in the ring.
    fn lapped(&mut self, o: Overrun) -> Result<Option<Overrun>, CatchUpError> {
        if self.source.is_none() {
            match LedgerSource::open(&self.dir, &self.ring, self.created_ns, self.next) {
                Ok(s) => self.source = Some(s),
                Err(CatchUpError::NoLedger { .. }) => return Ok(Some(o)),
                Err(e) => return Err(e),
            }
        }
        let source = self.source.as_mut().expect("opened above");
        source.seek(self.next);
        source.peek()?;
        match source.first {
            Some(first) if first <= self.next => {
                self.live = None;
                self.stats.rejoins += 1;
                Ok(None)
            }
            // (Found by review: all of `o` was reported lost, and what the
            // ledger holds of it was never delivered.)
            Some(first) if first < o.resume_at => {
                source.seek(first);
                self.live = None;
                self.stats.rejoins += 1;
                Ok(Some(Overrun { lost: first - self.next, resume_at: first }))
            }
            _ => Ok(Some(o)),
        }
    }

    /// Copies the next frame into `buf` without waiting.
    pub fn try_read(&mut self, buf: &mut [u8]) -> Result<FrameInfo, CatchUpError> {
        self.step(buf, None)
    }

    /// Copies the next frame into `buf`, waiting at most `timeout` (the
    /// ledger is looked at again every millisecond while it is behind).
    /// A wait on the ring that times out checks that the ring's name still
    /// holds the incarnation joined ([`CatchUpError::Replaced`] if not).
    pub fn read_timeout(&mut self, buf: &mut [u8], timeout: Duration) -> Result<FrameInfo, CatchUpError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.step(buf, Some(left)) {
                Err(CatchUpError::Empty) if !left.is_zero() => {
                    if self.live.is_none() {
                        std::thread::sleep(left.min(Duration::from_millis(1)));
                    }
                }
                Err(CatchUpError::Empty) if self.live.is_some() => return Err(self.replaced()),
                r => return r,
            }
        }
    }

    /// After a waiting read of the ring found nothing: [`CatchUpError::Replaced`]
    /// if the ring's name now holds another incarnation (the one joined
    /// will never publish again), else [`CatchUpError::Empty`].
    fn replaced(&self) -> CatchUpError {
        match RingView::under_name(&self.ns, &self.ring, self.created_ns) {
            UnderName::Replaced(_) => {
                CatchUpError::Replaced { ring: self.ring.clone(), after: self.next.saturating_sub(1) }
            }
            _ => CatchUpError::Empty,
        }
    }

    /// One read: at most a few changes of source, then a frame or why not.
    fn step(&mut self, buf: &mut [u8], wait: Option<Duration>) -> Result<FrameInfo, CatchUpError> {
        for _ in 0..4 {
            if let Some(r) = self.live.as_mut() {
                let got = match wait {
                    None => r.try_read(buf).map_err(CatchUpError::ring),
                    Some(t) => r.read_timeout(buf, t).map_err(|e| match e {
                        ReadError::Timeout => CatchUpError::Empty,
                        ReadError::Overrun(o) => CatchUpError::Overrun(o),
                        ReadError::Frame(f) => CatchUpError::Frame(f),
                        ReadError::Damaged(d) => CatchUpError::Ring(d.to_string()),
                    }),
                };
                match got {
                    Ok(info) => {
                        self.next = info.seq + 1;
                        self.stats.from_ring += 1;
                        return Ok(info);
                    }
                    Err(CatchUpError::Overrun(o)) => match self.lapped(o)? {
                        None => continue,
                        Some(o) => return Err(self.lost(o)),
                    },
                    Err(e) => return Err(e),
                }
            }
            match self.read_ledger(buf)? {
                Some(r) => return r,
                None => continue,
            }
        }
        Err(CatchUpError::Empty)
    }

    /// Counts a loss reported to the caller.
    fn lost(&mut self, o: Overrun) -> CatchUpError {
        self.next = o.resume_at;
        self.stats.lost += o.lost;
        CatchUpError::Overrun(o)
    }

    /// The next record from the ledger; `None` once it joined the ring.
    fn read_ledger(&mut self, buf: &mut [u8]) -> Result<Option<Result<FrameInfo, CatchUpError>>, CatchUpError> {
        let (oldest, head) = self.window();
        let source = self.source.as_mut().expect("reading from the ledger");
        match source.peek()? {
            Some(Item::Frame { seq, kind, len }) => {
                if buf.len() < len {
                    return Ok(Some(Err(CatchUpError::Frame(FrameError::TooSmall { seq, len, capacity: buf.len() }))));
                }
                buf[..len].copy_from_slice(source.payload());
                source.take();
                self.next = seq + 1;
                self.stats.from_ledger += 1;
                Ok(Some(Ok(FrameInfo { seq, len, kind })))
            }
            Some(Item::Gap { first, last }) => {
                source.take();
                let o = Overrun { lost: last - first + 1, resume_at: last + 1 };
                Ok(Some(Err(self.lost(o))))
            }
            None => {
                let first = source.first.unwrap_or(self.next).min(self.next);
                match decide(self.next, first..self.next, oldest, head) {
                    Source::Ring => {
                        self.join()?;
                        Ok(None)
                    }
                    Source::Lost { resume_at } => {
                        let o = Overrun { lost: resume_at - self.next, resume_at };
                        source.next = resume_at;
                        Ok(Some(Err(self.lost(o))))
                    }
                    Source::Ledger | Source::Wait | Source::Future { .. } => Ok(Some(Err(CatchUpError::Empty))),
                }
            }
        }
    }

    /// The next sequence this reader will deliver.
    pub fn cursor(&self) -> u64 {
        self.next
    }

    /// Whether it reads the ring (it joined), not the ledger.
    pub fn is_live(&self) -> bool {
        self.live.is_some()
    }

    /// What the ledger's visible end is, when it is not a clean end of a
    /// block: a block being written, or one a crash tore (the recorder
    /// cuts it when it starts again). `None` while reading the ring.
    pub fn ledger_tail(&self) -> Option<&str> {
        self.live.is_none().then(|| self.source.as_ref().and_then(|s| s.tail.as_deref())).flatten()
    }

    /// The ring's geometry (a buffer of `max_payload` bytes holds any frame).
    pub fn geometry(&self) -> &Geometry {
        self.view.geometry()
    }

    /// Its counters.
    pub fn stats(&self) -> CatchUpStats {
        self.stats
    }

    /// The ring's writer lease epoch now, as [`Reader::writer_epoch`].
    pub fn writer_epoch(&self) -> Option<u64> {
        self.live.as_ref().map(Reader::writer_epoch)
    }
}
