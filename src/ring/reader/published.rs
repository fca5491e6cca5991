//! What the data region says is published, as far as a reader may trust
//! it: a slot's frame, by its stamp; the `published` count, borne out by
//! the slots.

use std::cell::Cell;

use crate::layout::*;
use crate::sync::Ordering;

use super::{FrameInfo, FrameRef, Region};

/// The frame of `seq`, if its slot holds it (published, and not being
/// overwritten); otherwise the stamp the slot holds.
#[inline]
pub(super) fn published_frame(region: &Region, seq: u64) -> Result<FrameRef<'_>, u64> {
    let slot = region.slot(seq);
    // SYNC POINT: slot payload visible to readers. Pairs with the Release
    // store of the stamp in `Claim::commit`.
    let stamp = slot.header.stamp.load(Ordering::Acquire);
    if stamp != seq {
        return Err(stamp);
    }
    let len = (slot.header.len.load(Ordering::Relaxed) as usize).min(region.max_payload());
    let kind = slot.header.kind.load(Ordering::Relaxed);
    Ok(FrameRef { slot, info: FrameInfo { seq, len, kind }, torn: Cell::new(false) })
}

/// `published`, if the slots bear it out; otherwise `Err` with the value.
///
/// Only a writer stores `published`, but anyone who maps the data region
/// writable can, and a reader that followed a value no writer will reach
/// would wait for it for ever. A real value is always borne out: a commit
/// stores the stamps of its frames before `published` (Release), so once
/// the Acquire load below returns `p`, the slot of `p` holds `p` or a newer
/// frame (by coherence). A value above [`MAX_SEQ`] never is (stamps hold 63
/// bits).
pub(super) fn trusted_published(region: &Region) -> Result<u64, u64> {
    // SYNC POINT: published count.
    let p = region.header().published.load(Ordering::Acquire);
    if p == 0 {
        return Ok(0);
    }
    if p > MAX_SEQ {
        return Err(p);
    }
    // Relaxed: the Acquire load above already orders the stamp's store
    // before this load.
    let in_slot = region.slot(p).header.stamp.load(Ordering::Relaxed) & !STAMP_WRITING;
    if in_slot >= p {
        Ok(p)
    } else {
        Err(p)
    }
}
