//! A claim: slots reserved by the writer, filled one by one and published
//! together (`docs/abi.md` §4.4).

use bytemuck::Pod;

use crate::layout::STAMP_WRITING;
use crate::sync::{fence, Ordering};

use super::super::frame::store_bytes;
use super::{PublishError, Writer};

/// Slots reserved by [`Writer::claim`]. Frames pushed into it become visible
/// together on [`Claim::commit`] (or when the claim is dropped); reserved
/// slots left unfilled are not published and are reused by the next claim.
pub struct Claim<'w> {
    writer: &'w mut Writer,
    first: u64,
    n: u64,
    written: u64,
    bytes: u64,
}

impl<'w> Claim<'w> {
    /// Reserves `n` slots from the writer's next sequence (already gated).
    pub(super) fn new(writer: &'w mut Writer, n: u64) -> Claim<'w> {
        Claim { first: writer.next, n, written: 0, bytes: 0, writer }
    }

    /// Writes the next reserved slot; returns its sequence number.
    #[inline]
    pub fn push(&mut self, payload: &[u8]) -> Result<u64, PublishError> {
        self.push_kind(0, payload)
    }

    /// Writes a plain-old-data value into the next reserved slot.
    #[inline]
    pub fn push_pod<T: Pod>(&mut self, value: &T) -> Result<u64, PublishError> {
        self.push_kind(0, bytemuck::bytes_of(value))
    }

    /// Writes the next reserved slot with an application-defined `kind`.
    #[inline]
    pub fn push_kind(&mut self, kind: u32, payload: &[u8]) -> Result<u64, PublishError> {
        let region = &self.writer.region;
        let max = region.max_payload();
        if payload.len() > max {
            return Err(PublishError::TooLarge { len: payload.len(), max });
        }
        if self.written == self.n {
            return Err(PublishError::ClaimFull { claimed: self.n });
        }
        let seq = self.first + self.written;
        let slot = region.slot(seq);
        slot.header.stamp.store(seq | STAMP_WRITING, Ordering::Relaxed);
        // SYNC POINT: seqlock WRITING mark. Orders the WRITING mark before the
        // payload stores; pairs with the Acquire fence in `still_valid`, so a
        // reader that sees any new payload word also sees the mark.
        fence(Ordering::Release);
        store_bytes(slot.payload, payload);
        slot.header.len.store(payload.len() as u32, Ordering::Relaxed);
        slot.header.kind.store(kind, Ordering::Relaxed);
        // These stores may have been the first to meet a shrunk file: then
        // they went into zeros, and the frame is not counted as written.
        if let Some(d) = region.damaged() {
            return Err(PublishError::Damaged(d));
        }
        self.written += 1;
        self.bytes = self.bytes.wrapping_add(payload.len() as u64);
        Ok(seq)
    }

    /// The sequence the next push gets.
    pub fn next_seq(&self) -> u64 {
        self.first + self.written
    }

    /// Slots reserved and not yet written.
    pub fn remaining(&self) -> u64 {
        self.n - self.written
    }

    /// Publishes every frame pushed so far; returns the last sequence (None
    /// if nothing was pushed).
    #[inline]
    pub fn commit(mut self) -> Option<u64> {
        self.publish()
    }

    #[inline]
    fn publish(&mut self) -> Option<u64> {
        if self.written == 0 {
            return None;
        }
        let region = &self.writer.region;
        for seq in self.first..self.first + self.written {
            // SYNC POINT: slot payload visible to readers. Pairs with the
            // Acquire load of the stamp in `Reader::try_peek` and `batch`.
            region.slot(seq).header.stamp.store(seq, Ordering::Release);
        }
        let last = self.first + self.written - 1;
        self.writer.finish(last, self.bytes);
        self.written = 0;
        Some(last)
    }
}

impl Drop for Claim<'_> {
    #[inline]
    fn drop(&mut self) {
        self.publish();
    }
}
