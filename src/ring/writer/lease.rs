//! The writer lease: one live writer per ring, taken over from a dead
//! one (`docs/abi.md` §4.1).

use crate::layout::*;
use crate::sync::{host, Ordering};

use super::LeaseError;

/// Releases the lease this process holds at `epoch` (a no-op if it was
/// taken over or swept meanwhile).
pub(in crate::ring) fn release_lease(h: &RingHeader, epoch: u64) {
    let (me, _) = host::identity();
    let word = lease_word(me, epoch, true);
    // SYNC POINT: lease released. Release: everything this writer published
    // happens before the next holder's Acquire CAS in `take_lease`.
    let _ = h.lease.compare_exchange(word, lease_word(0, epoch, true), Ordering::AcqRel, Ordering::Relaxed);
}

/// Takes the lease of ring `ring`: free, or held by a dead process. Returns
/// the new epoch.
pub(in crate::ring) fn take_lease(h: &RingHeader, ring: &str) -> Result<u64, LeaseError> {
    let (me, my_start) = host::identity();
    loop {
        // SYNC POINT: lease committed (the holder's start time is visible).
        let word = h.lease.load(Ordering::Acquire);
        let (pid, epoch, committed) = lease_parts(word);
        let takeover = pid != 0;
        if takeover && holder_alive(h, pid, committed) {
            return Err(LeaseError::Held { ring: ring.to_owned(), pid, epoch });
        }
        let epoch = (epoch + 1) & LEASE_EPOCH_MASK;
        // SYNC POINT: lease released. The Acquire half pairs with the Release
        // CAS of the holder that let the lease go (`release_lease`, or a
        // sweep's): its work happens before ours. (The Release half orders
        // nothing anyone relies on; the committed store below publishes.)
        if h.lease.compare_exchange(word, lease_word(me, epoch, false), Ordering::AcqRel, Ordering::Acquire).is_err() {
            continue;
        }
        h.lease_start_time.store(my_start, Ordering::Relaxed);
        h.lease_since_ns.store(host::realtime_ns(), Ordering::Relaxed);
        // SYNC POINT: lease committed. Pairs with the Acquire load of `lease`
        // before `lease_start_time` is read.
        h.lease.store(lease_word(me, epoch, true), Ordering::Release);
        if takeover {
            h.takeovers.fetch_add(1, Ordering::Relaxed);
        }
        return Ok(epoch);
    }
}

/// Whether the lease holder `pid` (read with `committed` from the lease
/// word, after an Acquire load of it) is a live process: by pid and start
/// time, or mid-acquisition, when its start time is not written yet, by pid
/// alone.
pub(crate) fn holder_alive(h: &RingHeader, pid: u32, committed: bool) -> bool {
    if committed {
        host::alive(pid, h.lease_start_time.load(Ordering::Relaxed))
    } else {
        host::exists(pid)
    }
}
