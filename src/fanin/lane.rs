//! One lane's protocol (`docs/abi.md` §11.5–11.8): the producer's write
//! side, the consumer's bounds-checked read side, and the two waits (a
//! producer for space, the consumer on the doorbell). No system call but
//! the futex, no file: the loom models drive exactly this code.
//!
//! A lane is a byte ring of `capacity` bytes (a power of two). `head` (in
//! the lane file, producer-written) and `tail` (in the consumer's file) are
//! running byte offsets; `head - tail` bytes are published and unconsumed.
//! A record is a [`RecordHeader`] and its payload rounded up to 8 bytes,
//! never split by the end of the lane: if it would be, the producer writes
//! one padding word (`len == PAD_LEN`) and starts the record at offset 0.

use std::time::Duration;

use crate::sync::{fence, futex, host, spin_hint, AtomicU32, AtomicU64, Ordering};

use super::layout::*;
use crate::ring::store_bytes;

/// A sleeper wakes at least this often to look again (a hostile producer
/// may swallow a wake-up of the consumer by resetting the doorbell word;
/// this bounds what that costs).
pub(crate) const PARK_RECHECK: Duration = Duration::from_millis(100);

/// The three places one lane's protocol touches.
#[derive(Clone, Copy)]
pub(crate) struct Ends<'a> {
    /// The lane file's header (producer-written).
    pub(crate) hdr: &'a LaneHeader,
    /// The consumer's record of the lane (consumer-written).
    pub(crate) state: &'a LaneState,
    /// The lane's record bytes as words.
    pub(crate) data: &'a [AtomicU64],
}

impl Ends<'_> {
    fn capacity(&self) -> u64 {
        self.data.len() as u64 * 8
    }
}

/// Why the consumer stopped reading a lane: what the producer wrote breaks
/// the protocol. The lane is quarantined; no other lane is affected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LaneFault {
    /// `head` went backwards past what was consumed.
    #[error("head {head} is behind the consumed tail {tail}")]
    HeadBehind { head: u64, tail: u64 },
    /// `head` claims more unconsumed bytes than the lane holds.
    #[error("head {head} is {ahead} bytes past the tail {tail}; the lane holds {capacity}")]
    HeadTooFar { head: u64, tail: u64, ahead: u64, capacity: u64 },
    /// `head` is not a multiple of 8.
    #[error("head {head} is not a multiple of 8")]
    Misaligned { head: u64 },
    /// A record longer than the ring's maximum payload.
    #[error("the record at byte {at} claims {len} payload bytes; the maximum is {max}")]
    TooLong { at: u64, len: u32, max: u32 },
    /// A record that would cross the end of the lane.
    #[error("the record at byte {at} ({size} bytes) crosses the end of the lane")]
    Crosses { at: u64, size: u64 },
    /// A record (or padding) that ends past `head`.
    #[error("the record at byte {at} ({size} bytes) ends past the head {head}")]
    PastHead { at: u64, size: u64, head: u64 },
    /// A record out of sequence (torn, replayed or forged).
    #[error("the record at byte {at} has sequence {found}; {expected} was due")]
    Sequence { at: u64, found: u64, expected: u64 },
    /// The lane file shrank under the consumer's mapping.
    #[error("the lane file shrank under the consumer's mapping")]
    Shrunk,
}

/// Where a validated record is, for the consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Found {
    /// Word index of its payload in the lane's data.
    pub(crate) word: usize,
    pub(crate) len: u32,
    pub(crate) kind: u32,
    pub(crate) seq: u64,
    /// Bytes it and any padding before it take.
    pub(crate) advance: u64,
}

#[inline(always)]
fn header_word(len: u32, kind: u32) -> u64 {
    // `len` in the first four bytes of the word, `kind` in the next four.
    if cfg!(target_endian = "little") {
        len as u64 | (kind as u64) << 32
    } else {
        (len as u64) << 32 | kind as u64
    }
}

#[inline(always)]
fn split_header_word(w: u64) -> (u32, u32) {
    if cfg!(target_endian = "little") {
        (w as u32, (w >> 32) as u32)
    } else {
        ((w >> 32) as u32, w as u32)
    }
}

/// The producer's side of a lane: its private cursors.
#[derive(Debug, Clone, Default)]
pub(crate) struct Writing {
    /// End of what was written (published or pending).
    pub(crate) head: u64,
    /// End of what was published.
    pub(crate) published: u64,
    /// The consumer's tail as last read.
    pub(crate) tail: u64,
    /// Sequence the next record gets.
    pub(crate) next_seq: u64,
    /// The lane file's epoch: the consumer's `tail` is ours once its
    /// `LaneState::epoch` says so (before, it is a previous file's).
    epoch: u64,
    pending_records: u64,
    pending_bytes: u64,
}

impl Writing {
    /// A fresh lane file of `epoch`: nothing written, sequences from 1.
    pub(crate) fn new(epoch: u64) -> Writing {
        Writing { next_seq: 1, epoch, ..Default::default() }
    }

    /// Whether a record of `len` bytes fits now, re-reading the consumer's
    /// tail only if the cached one says it may not.
    pub(crate) fn fits(&mut self, e: &Ends, len: usize) -> bool {
        let cap = e.capacity();
        if place(self.head, cap, len).1 - self.tail <= cap {
            return true;
        }
        self.refresh_tail(e);
        place(self.head, cap, len).1 - self.tail <= cap
    }

    /// How many records of up to `len` bytes each, at most `n`, fit now
    /// (the room checked once for all of them), re-reading the consumer's
    /// tail only if the cached one does not give room for `n`.
    pub(crate) fn fit_n(&mut self, e: &Ends, n: usize, len: usize) -> usize {
        let cap = e.capacity();
        let k = fit_count(self.head, self.tail, cap, record_size(len) as u64, n as u64) as usize;
        if k == n {
            return k;
        }
        self.refresh_tail(e);
        fit_count(self.head, self.tail, cap, record_size(len) as u64, n as u64) as usize
    }

    /// Whether records of exactly `lens`, in order, fit now (the room
    /// checked once for all of them).
    pub(crate) fn fit_lens(&mut self, e: &Ends, lens: &[usize]) -> bool {
        let cap = e.capacity();
        let end = lens.iter().fold(self.head, |at, &len| place(at, cap, len).1);
        if end - self.tail <= cap {
            return true;
        }
        self.refresh_tail(e);
        end - self.tail <= cap
    }

    /// The running offset up to which records may be written: the
    /// consumer's tail as last read, plus the lane's capacity.
    pub(crate) fn limit(&self, e: &Ends) -> u64 {
        self.tail + e.capacity()
    }

    /// Re-reads the consumer's tail.
    fn refresh_tail(&mut self, e: &Ends) {
        // SYNC POINT: lane bound. Pairs with the consumer's Release store of
        // `epoch` when it binds our file: only then is `tail` about it.
        if e.state.epoch.load(Ordering::Acquire) != self.epoch {
            return;
        }
        // SYNC POINT: space released. Pairs with the consumer's Release
        // store of `tail` in `Reading::release`: the records it consumed are
        // no longer read, so their bytes may be overwritten. A tail past our
        // head (a damaged consumer file reads as zeros, never past) is
        // treated as no progress.
        let tail = e.state.tail.load(Ordering::Acquire);
        if tail <= self.head && tail > self.tail {
            self.tail = tail;
        }
    }

    /// Writes the header of a record of `len` bytes of `kind` (the caller
    /// checked [`Writing::fits`]), padding first if it would cross the end.
    /// Returns the word index of its payload and the bytes it advances the
    /// head by (padding included), for [`Writing::end`]. Nothing changes
    /// here but unpublished lane bytes, so a record begun and never ended
    /// leaves no trace.
    pub(crate) fn begin(&self, e: &Ends, len: usize, kind: u32) -> (usize, u64) {
        let (start, end) = place(self.head, e.capacity(), len);
        (put_header(e, self.head, start, len, kind, self.next_seq), end - self.head)
    }

    /// Counts the record begun at the head as written (pending).
    pub(crate) fn end(&mut self, len: usize, advance: u64) {
        self.ended(advance, 1, len as u64);
    }

    /// Counts `records` records of `bytes` payload bytes, `advance` lane
    /// bytes in all, written at the head as pending: a batch's bookkeeping,
    /// once for all of it.
    pub(crate) fn ended(&mut self, advance: u64, records: u64, bytes: u64) {
        self.head += advance;
        self.next_seq += records;
        self.pending_records += records;
        self.pending_bytes += bytes;
    }

    /// Writes a whole record (the caller checked [`Writing::fits`]).
    pub(crate) fn write(&mut self, e: &Ends, kind: u32, payload: &[u8]) {
        let end = put(e, self.head, self.next_seq, kind, payload);
        self.ended(end - self.head, 1, payload.len() as u64);
    }

    /// Records written and not yet published.
    pub(crate) fn pending(&self) -> u64 {
        self.pending_records
    }

    /// Makes every pending record visible; returns whether the consumer
    /// sleeps and needs the doorbell rung (see [`ring_bell`]).
    pub(crate) fn publish(&mut self, e: &Ends, sleeping: &AtomicU32) -> bool {
        if self.head == self.published {
            return false;
        }
        // SYNC POINT: records published. Pairs with the consumer's Acquire
        // load of `head` in `Reading::refresh`: every record byte below it
        // is written before the consumer reads it.
        e.hdr.head.store(self.head, Ordering::Release);
        self.published = self.head;
        // Counters only this producer writes: no read-modify-write needed.
        let r = e.hdr.records.load(Ordering::Relaxed);
        e.hdr.records.store(r + self.pending_records, Ordering::Relaxed);
        let b = e.hdr.bytes.load(Ordering::Relaxed);
        e.hdr.bytes.store(b + self.pending_bytes, Ordering::Relaxed);
        self.pending_records = 0;
        self.pending_bytes = 0;
        // SYNC POINT: doorbell Dekker. Pairs with the SeqCst fence in
        // `park_consumer`: either the consumer's re-check of the lanes sees
        // our head, or we see its `sleeping` and ring. A store followed by a
        // load needs SeqCst fences on both sides; Acquire/Release cannot
        // order them.
        fence(Ordering::SeqCst);
        sleeping.load(Ordering::Relaxed) != 0
    }

    /// Waits until a record of `len` bytes fits, spinning `spins` times,
    /// then sleeping on the lane's `space` word; `false` at the deadline.
    /// Only this lane's producer ever waits here.
    pub(crate) fn wait_space(&mut self, e: &Ends, len: usize, spins: u32, deadline_ns: Option<u64>) -> bool {
        for _ in 0..spins {
            if self.fits(e, len) {
                return true;
            }
            spin_hint();
        }
        let start = host::now_ns();
        e.hdr.full_waits.store(e.hdr.full_waits.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        let fits = loop {
            e.hdr.waiting.store(1, Ordering::Relaxed);
            // SYNC POINT: space-wait Dekker. Pairs with the SeqCst fence in
            // `Reading::release`: either our re-check below sees the
            // consumer's new tail, or it sees `waiting` and wakes us.
            fence(Ordering::SeqCst);
            // SYNC POINT: producer woken. Pairs with the consumer's Release
            // bump of `space`.
            let seen = e.state.space.load(Ordering::Acquire);
            if self.fits(e, len) {
                break true;
            }
            let Some(timeout) = next_sleep(deadline_ns) else { break false };
            // A failure (EFAULT on a shrunk file) just means we poll.
            let _ = futex::wait(&e.state.space, seen, Some(timeout));
        };
        e.hdr.waiting.store(0, Ordering::Relaxed);
        let waited = host::now_ns().saturating_sub(start);
        e.hdr.wait_ns.store(e.hdr.wait_ns.load(Ordering::Relaxed) + waited, Ordering::Relaxed);
        fits
    }
}

/// How long the next futex sleep may last: until the deadline, at most
/// [`PARK_RECHECK`]; `None` once the deadline has passed.
fn next_sleep(deadline_ns: Option<u64>) -> Option<Duration> {
    let now = host::now_ns();
    match deadline_ns {
        Some(d) if now >= d => None,
        Some(d) => Some(Duration::from_nanos(d - now).min(PARK_RECHECK)),
        None => Some(PARK_RECHECK),
    }
}

/// Rings the doorbell (`BellHeader::bell`): bumps the word and wakes the
/// consumer.
pub(crate) fn ring_bell(bell: &AtomicU32) {
    // SYNC POINT: consumer woken. Pairs with the Acquire load of `bell` in
    // `park_consumer`.
    bell.fetch_add(1, Ordering::Release);
    let _ = futex::wake_all(bell);
}

/// The consumer's side of a lane: its private cursors.
#[derive(Debug, Clone)]
pub(crate) struct Reading {
    /// End of what was consumed (and released, or about to be).
    pub(crate) tail: u64,
    /// The producer's head as last read (validated).
    head: u64,
    /// Sequence the next record must carry.
    pub(crate) next_seq: u64,
    /// `tail` as last stored in shared memory.
    released: u64,
    max_payload: u32,
}

impl Reading {
    /// Resumes a lane at `tail`, expecting sequence `next_seq`.
    pub(crate) fn new(tail: u64, next_seq: u64, max_payload: u32) -> Reading {
        Reading { tail, head: tail, next_seq, released: tail, max_payload }
    }

    /// A restarted consumer's reading of a lane (`e.state` as the last
    /// consumer left it). [`Reading::release`] stores `next_seq` before
    /// `tail`: one killed between the two left `next_seq` ahead of `tail` by
    /// its last round's records, delivered and still in the lane. They are
    /// skipped here, each checked as any record is, and the release is
    /// finished. Anything else is for the drain to judge, and so is a run
    /// past a lane's worth of bytes from `tail`: no honest producer has
    /// that much unreleased, and a hostile one writing as fast as the skip
    /// reads would hold the consumer here.
    pub(crate) fn resume(e: &Ends, max_payload: u32) -> Reading {
        let (tail, next_seq) = (e.state.tail.load(Ordering::Relaxed), e.state.next_seq.load(Ordering::Relaxed));
        let mut reading = Reading::new(tail, next_seq, max_payload);
        let Err(LaneFault::Sequence { found, expected, .. }) = reading.next(e) else { return reading };
        if found >= expected {
            return reading;
        }
        let mut skip = Reading::new(tail, found, max_payload);
        for _ in found..expected {
            match skip.next(e) {
                Ok(Some(r)) if skip.tail + r.advance - tail <= e.capacity() => skip.consume(&r),
                _ => return reading,
            }
        }
        skip.release(e);
        skip
    }

    /// Whether a record may be waiting: the cached head, else a fresh one.
    pub(crate) fn ready(&mut self, e: &Ends) -> Result<bool, LaneFault> {
        if self.head != self.tail {
            return Ok(true);
        }
        self.refresh(e)?;
        Ok(self.head != self.tail)
    }

    /// Loads and validates the producer's head.
    fn refresh(&mut self, e: &Ends) -> Result<(), LaneFault> {
        // SYNC POINT: records published (see `Writing::publish`).
        let head = e.hdr.head.load(Ordering::Acquire);
        let (tail, capacity) = (self.tail, e.capacity());
        if !head.is_multiple_of(8) {
            return Err(LaneFault::Misaligned { head });
        }
        if head < tail {
            return Err(LaneFault::HeadBehind { head, tail });
        }
        if head - tail > capacity {
            return Err(LaneFault::HeadTooFar { head, tail, ahead: head - tail, capacity });
        }
        self.head = head;
        Ok(())
    }

    /// The next record at the tail, validated against everything the
    /// producer could have written; `None` if the lane is empty.
    pub(crate) fn next(&mut self, e: &Ends) -> Result<Option<Found>, LaneFault> {
        if !self.ready(e)? {
            return Ok(None);
        }
        check_at(e, self.tail, self.head, self.next_seq, self.max_payload).map(Some)
    }

    /// The consumer's batch view of a lane, one drain round's worth: loads
    /// `head` once (and checks it), then walks the published records from
    /// the tail, each checked as [`Reading::next`] checks it, handing at
    /// most `budget` of them to `deliver` (which returns false if the lane
    /// turned out damaged meanwhile); the cursors are updated once, after.
    /// Nothing is released here ([`Reading::release`], once per round).
    pub(crate) fn take(&mut self, e: &Ends, budget: usize, mut deliver: impl FnMut(&Found) -> bool) -> Taken {
        let mut t = Taken { records: 0, bytes: 0, end: Ok(false) };
        if let Err(fault) = self.refresh(e) {
            t.end = Err(fault);
            return t;
        }
        let (head, max) = (self.head, self.max_payload);
        let (mut at, mut seq) = (self.tail, self.next_seq);
        while t.records < budget && at != head {
            let found = match check_at(e, at, head, seq, max) {
                Ok(found) => found,
                Err(fault) => {
                    t.end = Err(fault);
                    break;
                }
            };
            if !deliver(&found) {
                t.end = Err(LaneFault::Shrunk);
                break;
            }
            at += found.advance;
            seq += 1;
            t.records += 1;
            t.bytes += found.len as u64;
        }
        (self.tail, self.next_seq) = (at, seq);
        if t.end.is_ok() {
            t.end = Ok(at == head);
        }
        t
    }

    /// Marks `found` consumed (not yet released to the producer).
    pub(crate) fn consume(&mut self, found: &Found) {
        self.tail += found.advance;
        self.next_seq += 1;
    }

    /// Gives the consumed bytes back to the producer and wakes it if it
    /// waits for space. Returns whether anything was released.
    pub(crate) fn release(&mut self, e: &Ends) -> bool {
        if self.tail == self.released {
            return false;
        }
        // `next_seq` first: a consumer killed between the two stores
        // leaves `next_seq` ahead of `tail`, which the next one repairs
        // (`Reading::resume`); the Release below keeps this store before it.
        e.state.next_seq.store(self.next_seq, Ordering::Relaxed);
        // SYNC POINT: space released (see `Writing::fits`).
        e.state.tail.store(self.tail, Ordering::Release);
        self.released = self.tail;
        // SYNC POINT: space-wait Dekker (see `Writing::wait_space`).
        fence(Ordering::SeqCst);
        if e.hdr.waiting.load(Ordering::Relaxed) != 0 {
            // SYNC POINT: producer woken. Pairs with the Acquire load of
            // `space` in `Writing::wait_space`.
            e.state.space.fetch_add(1, Ordering::Release);
            let _ = futex::wake_all(&e.state.space);
        }
        true
    }
}

/// What [`Reading::take`] took from a lane in a round.
#[derive(Debug)]
pub(crate) struct Taken {
    /// Records handed over (and consumed).
    pub(crate) records: usize,
    /// Their payload bytes.
    pub(crate) bytes: u64,
    /// `Ok(true)` if the lane is now empty (as of the head loaded), or the
    /// fault that stopped the walk (the records before it were handed
    /// over).
    pub(crate) end: Result<bool, LaneFault>,
}

/// Checks the record at running offset `at` (the tail, or past the records
/// before it in a round) against everything the producer could have
/// written: `head` (already checked), the ring's `max` payload, the
/// sequence `seq` due. Each word is loaded once, and only the loaded value
/// is checked and used.
#[inline(always)]
fn check_at(e: &Ends, mut at: u64, head: u64, seq: u64, max: u32) -> Result<Found, LaneFault> {
    let cap = e.capacity();
    let (mut len, mut kind) = split_header_word(e.data[word_of(at, cap)].load(Ordering::Relaxed));
    let mut skipped = 0;
    if len == PAD_LEN {
        skipped = cap - (at & (cap - 1));
        if at + skipped >= head {
            // Padding is written only before a record; with nothing
            // after it, the lane ends mid-record.
            return Err(LaneFault::PastHead { at, size: skipped, head });
        }
        at += skipped;
        (len, kind) = split_header_word(e.data[word_of(at, cap)].load(Ordering::Relaxed));
    }
    if len > max {
        return Err(LaneFault::TooLong { at, len, max });
    }
    let size = record_size(len as usize) as u64;
    if size > cap - (at & (cap - 1)) {
        return Err(LaneFault::Crosses { at, size });
    }
    if at + size > head {
        return Err(LaneFault::PastHead { at, size, head });
    }
    let w = word_of(at, cap);
    let found = e.data[w + 1].load(Ordering::Relaxed);
    if found != seq {
        return Err(LaneFault::Sequence { at, found, expected: seq });
    }
    Ok(Found { word: w + 2, len, kind, seq, advance: skipped + size })
}

fn word_of(at: u64, cap: u64) -> usize {
    ((at & (cap - 1)) / 8) as usize
}

/// Where a record of `len` payload bytes goes if written at running offset
/// `at` of a lane of `cap` bytes: its start (past the wrap padding if it
/// would cross the end) and its end.
#[inline]
pub(crate) fn place(at: u64, cap: u64, len: usize) -> (u64, u64) {
    let size = record_size(len) as u64;
    let contig = cap - (at & (cap - 1));
    let start = if size <= contig { at } else { at + contig };
    (start, start + size)
}

/// How many records of `size` bytes, at most `n`, fit from running offset
/// `head` with the consumer at `tail`, wrap padding included (a batch's
/// room, reckoned at once rather than record by record).
fn fit_count(head: u64, tail: u64, cap: u64, size: u64, n: u64) -> u64 {
    let free = cap - (head - tail);
    let contig = cap - (head & (cap - 1));
    // Records before the end of the lane, then (past the padding) from 0.
    let before = contig / size;
    if free < contig || n <= before {
        return n.min(before).min(free / size);
    }
    n.min(before + (free - contig) / size)
}

/// Writes the padding (if `start` is past `at`) and the header of a record
/// of `len` bytes, sequence `seq`, starting at running offset `start`;
/// returns the word index of its payload.
#[inline]
fn put_header(e: &Ends, at: u64, start: u64, len: usize, kind: u32, seq: u64) -> usize {
    let cap = e.capacity();
    if start != at {
        e.data[word_of(at, cap)].store(header_word(PAD_LEN, 0), Ordering::Relaxed);
    }
    let w = word_of(start, cap);
    e.data[w].store(header_word(len as u32, kind), Ordering::Relaxed);
    e.data[w + 1].store(seq, Ordering::Relaxed);
    w + 2
}

/// Writes a whole record at running offset `at` (its room checked: it
/// ends at or before the limit); returns the running offset after it.
#[inline]
pub(crate) fn put(e: &Ends, at: u64, seq: u64, kind: u32, payload: &[u8]) -> u64 {
    let (start, end) = place(at, e.capacity(), payload.len());
    let w = put_header(e, at, start, payload.len(), kind, seq);
    store_bytes(&e.data[w..w + payload.len().div_ceil(8)], payload);
    end
}

/// Writes a record's padding and header at running offset `at` and hands
/// its payload words to `f` (zero-padded past `len`); returns the running
/// offset after it.
#[inline]
pub(crate) fn put_with(e: &Ends, at: u64, seq: u64, kind: u32, len: usize, f: impl FnOnce(&[AtomicU64])) -> u64 {
    let (start, end) = place(at, e.capacity(), len);
    let w = put_header(e, at, start, len, kind, seq);
    f(&e.data[w..w + len.div_ceil(8)]);
    end
}

/// The consumer's sleep on the doorbell: announces itself in `sleeping`,
/// re-checks with `ready` (every lane), and sleeps only if it still finds
/// nothing, at most until `deadline_ns` and never longer than
/// [`PARK_RECHECK`] at a time. Returns `ready`'s last answer.
pub(crate) fn park_consumer(
    sleeping: &AtomicU32,
    bell: &AtomicU32,
    deadline_ns: Option<u64>,
    mut ready: impl FnMut() -> bool,
) -> bool {
    sleeping.store(1, Ordering::Relaxed);
    // SYNC POINT: doorbell Dekker (see `Writing::publish`).
    fence(Ordering::SeqCst);
    let found = loop {
        // SYNC POINT: consumer woken (see `ring_bell`).
        let seen = bell.load(Ordering::Acquire);
        if ready() {
            break true;
        }
        let Some(timeout) = next_sleep(deadline_ns) else { break false };
        // Woken, timed out or interrupted: the loop looks again either way.
        let _ = futex::wait(bell, seen, Some(timeout));
    };
    sleeping.store(0, Ordering::Relaxed);
    found
}
