//! One lane on the heap, for the unit tests and the loom models: the
//! structures of `layout` over boxed atomics (loom's under `cfg(loom)`),
//! driven by the real protocol in `lane`.

use crate::sync::{AtomicU32, AtomicU64};

use super::lane::Ends;
use super::layout::*;

fn a64() -> AtomicU64 {
    AtomicU64::new(0)
}

fn a32() -> AtomicU32 {
    AtomicU32::new(0)
}

/// A lane's three places, owned.
pub(crate) struct HeapLane {
    hdr: Box<LaneHeader>,
    state: Box<LaneState>,
    data: Vec<AtomicU64>,
}

impl HeapLane {
    /// A lane of `capacity` bytes (a power of two, a multiple of 8), bound
    /// by the consumer at epoch 1.
    pub(crate) fn new(capacity: usize) -> HeapLane {
        let hdr = Box::new(LaneHeader {
            magic: LANE_MAGIC,
            version: a32(),
            header_size: LANE_HEADER_SIZE as u32,
            lane: 0,
            max_payload: 0,
            capacity: capacity as u64,
            ring_created_ns: 0,
            epoch: 1,
            file_size: 0,
            pid: 0,
            _pad0: 0,
            start_time: 0,
            attached_ns: 0,
            _reserved0: [0; 48],
            head: a64(),
            waiting: a32(),
            closed: a32(),
            _reserved1: [0; 112],
            records: a64(),
            bytes: a64(),
            full_waits: a64(),
            wait_ns: a64(),
            _reserved2: [0; 96],
            _reserved3: [0; 128],
        });
        let state = Box::new(LaneState {
            tail: a64(),
            space: a32(),
            status: AtomicU32::new(LANE_BOUND),
            _reserved_a: [0; 112],
            epoch: AtomicU64::new(1),
            ino: a64(),
            uid: a32(),
            pid: a32(),
            records: a64(),
            bytes: a64(),
            next_seq: a64(),
            bound_ns: a64(),
            faults: a64(),
            leases: a64(),
            _reserved_b: [0; 56],
        });
        HeapLane { hdr, state, data: (0..capacity / 8).map(|_| a64()).collect() }
    }

    pub(crate) fn ends(&self) -> Ends<'_> {
        Ends { hdr: &self.hdr, state: &self.state, data: &self.data }
    }
}
