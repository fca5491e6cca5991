//! Moving payload bytes in and out of slots without a data race.
//!
//! A slot can be overwritten while a reader looks at it (overwrite rings, or
//! a demoted gating reader). Reading bytes that another process writes
//! concurrently through `&[u8]` is a data race in Rust's memory model, so
//! the library never creates a `&[u8]` (or `&mut [u8]`) into slot memory.
//! Both sides access the payload only as relaxed 64-bit atomic loads and
//! stores, bracketed by the slot's `stamp` word as a seqlock:
//!
//! - writer: `stamp = seq | WRITING`; release fence; payload stores;
//!   `stamp = seq` (release);
//! - reader: `v1 = stamp` (acquire); payload loads; acquire fence;
//!   `v2 = stamp`; the copy is valid only if `v1 == v2 == seq`.
//!
//! A torn copy is therefore always detected and reported, never returned.
//! On x86-64 relaxed atomic loads and stores are plain `mov`s, so this costs
//! nothing over a `memcpy` for the small frames the ring is built for.

use bytemuck::Pod;

use crate::sync::{fence, AtomicU64, Ordering};

use super::region::Slot;

/// What a successful read returns besides the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameInfo {
    /// The frame's sequence number.
    pub seq: u64,
    /// Payload length in bytes.
    pub len: usize,
    /// The frame kind the writer set (0 if none).
    pub kind: u32,
}

/// Why a frame's bytes could not be delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The writer overwrote the slot while it was being read; nothing was
    /// delivered. The next read reports the overrun.
    #[error("frame {seq} was overwritten while being read")]
    Overwritten { seq: u64 },
    /// The destination is smaller than the frame.
    #[error("frame {seq} is {len} bytes; the buffer holds {capacity}")]
    TooSmall { seq: u64, len: usize, capacity: usize },
    /// A typed read asked for a type of another size than the frame, or a
    /// range past its end.
    #[error("frame {seq} is {len} bytes; cannot read {wanted} bytes at offset {offset}")]
    WrongSize { seq: u64, len: usize, offset: usize, wanted: usize },
}

/// Words a copy moves per step: its loads (or stores) are independent, so
/// they issue together, and the loop's own cost is paid once per 32 bytes.
/// Each is still one whole aligned 64-bit atomic access: sound against a
/// peer that writes (or reads) the words concurrently, which a `memcpy`
/// (or a wider vector load, which Rust's memory model does not make atomic)
/// would not be.
const STEP: usize = 4;

/// Copies `src` into the payload words, zero-padding the last word.
#[inline]
pub(crate) fn store_bytes(words: &[AtomicU64], src: &[u8]) {
    debug_assert!(src.len() <= words.len() * 8);
    let whole = src.len() / 8;
    let (body, rest) = src.split_at(whole * 8);
    let words = &words[..src.len().div_ceil(8)];
    let mut chunks = body.chunks_exact(8 * STEP);
    let mut blocks = words.chunks_exact(STEP);
    for (c, w) in (&mut chunks).zip(&mut blocks) {
        for i in 0..STEP {
            w[i].store(u64::from_ne_bytes(c[8 * i..8 * i + 8].try_into().unwrap()), Ordering::Relaxed);
        }
    }
    let done = whole - whole % STEP;
    for (c, w) in chunks.remainder().chunks_exact(8).zip(&words[done..whole]) {
        w.store(u64::from_ne_bytes(c.try_into().unwrap()), Ordering::Relaxed);
    }
    if !rest.is_empty() {
        let mut last = [0u8; 8];
        last[..rest.len()].copy_from_slice(rest);
        words[whole].store(u64::from_ne_bytes(last), Ordering::Relaxed);
    }
}

/// Copies `dst.len()` bytes from the payload words, starting at byte
/// `offset`. Every load is a whole aligned 64-bit atomic load.
#[inline]
pub(crate) fn load_bytes(words: &[AtomicU64], offset: usize, dst: &mut [u8]) {
    if offset.is_multiple_of(8) {
        // The common case: whole words straight into the destination,
        // STEP at a time (each an 8-byte move, no call), then at most one
        // partial word.
        let words = &words[offset / 8..offset / 8 + dst.len().div_ceil(8)];
        let whole = dst.len() / 8;
        let (body, rest) = dst.split_at_mut(whole * 8);
        let mut chunks = body.chunks_exact_mut(8 * STEP);
        let mut blocks = words.chunks_exact(STEP);
        for (c, w) in (&mut chunks).zip(&mut blocks) {
            for i in 0..STEP {
                c[8 * i..8 * i + 8].copy_from_slice(&w[i].load(Ordering::Relaxed).to_ne_bytes());
            }
        }
        let done = whole - whole % STEP;
        for (c, w) in chunks.into_remainder().chunks_exact_mut(8).zip(&words[done..whole]) {
            c.copy_from_slice(&w.load(Ordering::Relaxed).to_ne_bytes());
        }
        if !rest.is_empty() {
            let n = rest.len();
            rest.copy_from_slice(&words[whole].load(Ordering::Relaxed).to_ne_bytes()[..n]);
        }
        return;
    }
    let mut pos = offset;
    let mut out = 0;
    while out < dst.len() {
        let word = words[pos / 8].load(Ordering::Relaxed).to_ne_bytes();
        let skip = pos % 8;
        let n = (8 - skip).min(dst.len() - out);
        dst[out..out + n].copy_from_slice(&word[skip..skip + n]);
        out += n;
        pos += n;
    }
}

/// Whether the slot still holds `seq` after the loads just done.
#[inline(always)]
pub(crate) fn still_valid(slot: &Slot<'_>, seq: u64) -> bool {
    // SYNC POINT: seqlock WRITING mark. The acquire fence orders the payload
    // loads above before this load; it pairs with the release fence the
    // writer issues after marking the slot WRITING.
    fence(Ordering::Acquire);
    slot.header.stamp.load(Ordering::Relaxed) == seq
}

/// A published frame, looked at in place. Every accessor copies with atomic
/// loads and re-validates, so it returns either exactly the published bytes
/// or [`FrameError::Overwritten`]; a torn read cannot be missed.
pub struct FrameRef<'a> {
    pub(crate) slot: Slot<'a>,
    pub(crate) info: FrameInfo,
    pub(crate) torn: std::cell::Cell<bool>,
}

impl FrameRef<'_> {
    /// Sequence number.
    #[inline]
    pub fn seq(&self) -> u64 {
        self.info.seq
    }

    /// Payload length.
    #[inline]
    pub fn len(&self) -> usize {
        self.info.len
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.info.len == 0
    }

    /// Frame kind.
    #[inline]
    pub fn kind(&self) -> u32 {
        self.info.kind
    }

    /// Sequence, length and kind.
    #[inline]
    pub fn info(&self) -> FrameInfo {
        self.info
    }

    #[inline]
    fn check(&self) -> Result<(), FrameError> {
        if still_valid(&self.slot, self.info.seq) {
            Ok(())
        } else {
            self.torn.set(true);
            Err(FrameError::Overwritten { seq: self.info.seq })
        }
    }

    /// Copies the payload into the start of `dst`; returns its length.
    #[inline]
    pub fn copy_to(&self, dst: &mut [u8]) -> Result<usize, FrameError> {
        let len = self.info.len;
        if dst.len() < len {
            // The length itself may be torn: only a valid frame is too big.
            self.check()?;
            return Err(FrameError::TooSmall { seq: self.info.seq, len, capacity: dst.len() });
        }
        load_bytes(self.slot.payload, 0, &mut dst[..len]);
        self.check()?;
        Ok(len)
    }

    /// Reads the whole payload as a `T`; its size must equal the frame's.
    #[inline]
    pub fn read<T: Pod>(&self) -> Result<T, FrameError> {
        if std::mem::size_of::<T>() != self.info.len {
            return Err(self.wrong(0, std::mem::size_of::<T>()));
        }
        self.read_at(0)
    }

    /// Reads a `T` at byte `offset` of the payload.
    #[inline]
    pub fn read_at<T: Pod>(&self, offset: usize) -> Result<T, FrameError> {
        let size = std::mem::size_of::<T>();
        if offset.checked_add(size).is_none_or(|end| end > self.info.len) {
            return Err(self.wrong(offset, size));
        }
        let mut value = T::zeroed();
        load_bytes(self.slot.payload, offset, bytemuck::bytes_of_mut(&mut value));
        self.check()?;
        Ok(value)
    }

    /// The error for a read that does not fit the frame: `WrongSize` only if
    /// the length it was judged by was not torn.
    fn wrong(&self, offset: usize, wanted: usize) -> FrameError {
        match self.check() {
            Ok(()) => FrameError::WrongSize { seq: self.info.seq, len: self.info.len, offset, wanted },
            Err(torn) => torn,
        }
    }

    /// Re-validates the frame: whether everything read from it so far
    /// (including `len` and `kind`) is what the writer published.
    pub fn is_intact(&self) -> bool {
        self.check().is_ok()
    }
}

/// A frame borrowed from a [`Reader`](super::Reader): [`FrameRef`]'s accessors
/// (through `Deref`), and on drop the reader's cursor moves past it,
/// releasing the slot to a writer that waits for it. If an accessor found
/// the frame overwritten, dropping it does not consume it: the next read
/// reports the overrun with its exact loss.
pub struct Frame<'a> {
    pub(crate) inner: FrameRef<'a>,
    pub(crate) region: &'a super::Region,
    pub(crate) core: &'a mut super::reader::ReaderCore,
}

impl<'a> std::ops::Deref for Frame<'a> {
    type Target = FrameRef<'a>;
    fn deref(&self) -> &FrameRef<'a> {
        &self.inner
    }
}

impl Drop for Frame<'_> {
    #[inline]
    fn drop(&mut self) {
        if !self.inner.torn.get() {
            self.core.consumed(self.region, self.inner.info.seq + 1, 1);
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn words(n: usize) -> Vec<AtomicU64> {
        (0..n).map(|_| AtomicU64::new(u64::MAX)).collect()
    }

    #[test]
    fn bytes_round_trip_at_every_length_and_offset() {
        let w = words(4);
        let src: Vec<u8> = (1..=32).collect();
        for len in 0..=32 {
            store_bytes(&w, &src[..len]);
            let mut out = vec![0u8; len];
            load_bytes(&w, 0, &mut out);
            assert_eq!(out, &src[..len]);
            for off in 0..len {
                let mut part = vec![0u8; len - off];
                load_bytes(&w, off, &mut part);
                assert_eq!(part, &src[off..len], "len {len} off {off}");
            }
        }
    }

    #[test]
    fn the_tail_word_is_zero_padded() {
        let w = words(2);
        store_bytes(&w, &[0xAA; 9]);
        let mut out = [0u8; 16];
        load_bytes(&w, 0, &mut out);
        assert_eq!(&out[9..], &[0; 7]);
    }
}
