//! A lane's lease in `LaneState[k]`: the consumer's stores that grant it to
//! a lane file, and what a producer reads of them to learn whether it
//! still holds it (`docs/abi.md` §11.9). The order of the stores is what
//! keeps a producer whose file is being bound from reading itself dropped.

use crate::sync::Ordering;

use super::layout::{LaneState, LANE_BOUND, LANE_FREE};

/// Binds a lane file of `epoch` and inode `ino` afresh, owned by `uid`
/// (its producer `pid`, 0 if unknown), at `now_ns`: its reading from the
/// start, the binding's fields, then `status`, and last `epoch`. A
/// producer loads `epoch` first when it reads its lease (SYNC POINT *lane
/// bound*), so by the time it sees its epoch it sees the lane bound.
/// (Found by review: `status` was stored after `epoch`, and a producer
/// whose lane filled meanwhile read its epoch with the lane free: revoked,
/// while it was being bound.)
pub(crate) fn bind_fresh(st: &LaneState, epoch: u64, ino: u64, uid: u32, pid: u32, now_ns: u64) {
    st.tail.store(0, Ordering::Relaxed);
    st.next_seq.store(1, Ordering::Relaxed);
    st.ino.store(ino, Ordering::Relaxed);
    st.bound_ns.store(now_ns, Ordering::Relaxed);
    st.leases.store(st.leases.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    st.uid.store(uid, Ordering::Relaxed);
    st.pid.store(pid, Ordering::Relaxed);
    // SYNC POINT: lane bound. With the epoch still the last file's, and
    // `ino` already this one's: that file's producer reads another inode
    // (dropped), this one's producer another epoch (not yet its).
    st.status.store(LANE_BOUND, Ordering::Release);
    // SYNC POINT: lane bound. Pairs with the producer's Acquire load of
    // `epoch` in `Writing::refresh_tail` and in [`revoked`]: once it sees
    // its epoch, the tail it reads is this lane file's (0 or later), and
    // the status is bound.
    st.epoch.store(epoch, Ordering::Release);
}

/// Spends `epoch` on a refused lane file of inode `ino` without binding
/// it (the lane stays free): the file's producer, and any other that read
/// the epoch, finds it spent, so a file of that epoch linked once the name
/// is free is stale (`LaneFile::link`) rather than published into and
/// refused later. Stored before the refused file's name is freed.
pub(crate) fn spend(st: &LaneState, epoch: u64, ino: u64) {
    st.tail.store(0, Ordering::Relaxed);
    st.next_seq.store(1, Ordering::Relaxed);
    st.ino.store(ino, Ordering::Relaxed);
    // SYNC POINT: lane bound (an epoch spent, never bound). Pairs with the
    // producer's Acquire load of `epoch` in [`revoked`] and in its check
    // after linking.
    st.epoch.store(epoch, Ordering::Release);
}

/// Whether the consumer dropped the lane of a producer's file of `epoch`
/// and inode `ino`: it bound a later epoch, or has the lane free at ours,
/// or bound our epoch for another file.
pub(crate) fn revoked(st: &LaneState, epoch: u64, ino: u64) -> bool {
    // SYNC POINT: lane bound (see `bind_fresh`): epoch first.
    let now = st.epoch.load(Ordering::Acquire);
    // SYNC POINT: lane freed. Pairs with the consumer's Release store of
    // `status` when it frees the lane.
    let status = st.status.load(Ordering::Acquire);
    let other = st.ino.load(Ordering::Relaxed) != ino;
    now > epoch || (now == epoch && (status == LANE_FREE || other))
}
