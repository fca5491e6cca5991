//! Heap-allocated rings for the loom models: the same `Region` over boxed
//! structures of loom atomics instead of a mapping.

use std::path::PathBuf;

use crate::guard::DamageFlag;
use crate::layout::*;
use crate::sync::{AtomicU32, AtomicU64};

use super::{Backing, Geometry, Policy, Region};

/// Payload words per slot in the models.
pub(crate) const WORDS: usize = 2;

#[repr(C)]
pub(crate) struct HeapSlot {
    header: SlotHeader,
    payload: [AtomicU64; WORDS],
}

pub(crate) struct Heap {
    _hdr: Box<RingHeader>,
    _rd: Box<ReadersHeader>,
    _entries: Vec<ReaderEntry>,
    _slots: Vec<HeapSlot>,
}

fn a64() -> AtomicU64 {
    AtomicU64::new(0)
}
fn a32() -> AtomicU32 {
    AtomicU32::new(0)
}

/// A ring of `capacity` slots of `WORDS` payload words.
pub(crate) fn region(capacity: u64, policy: Policy, max_readers: u32) -> Region {
    let hdr = ring_header(capacity, policy, max_readers);
    let rd = readers_header(max_readers);
    let entries: Vec<ReaderEntry> = (0..max_readers).map(|_| reader_entry()).collect();
    let slots: Vec<HeapSlot> = (0..capacity)
        .map(|_| HeapSlot { header: SlotHeader { stamp: a64(), len: a32(), kind: a32() }, payload: [a64(), a64()] })
        .collect();
    assert_eq!(std::mem::offset_of!(HeapSlot, payload), std::mem::size_of::<SlotHeader>());
    let stride = std::mem::size_of::<HeapSlot>();
    Region {
        hdr: &*hdr,
        rd: &*rd,
        entries: entries.as_ptr(),
        slots: slots.as_ptr() as *const u8,
        stride,
        mask: capacity - 1,
        payload_words: WORDS,
        damage: [DamageFlag::never(); 2],
        geometry: Geometry {
            capacity,
            slot_size: 0,
            max_payload: (WORDS * 8) as u32,
            policy,
            max_readers,
            stall_timeout_ns: u64::MAX,
            created_ns: 0,
        },
        name: "loom".into(),
        path: PathBuf::from("loom"),
        writable: true,
        owner: 0,
        control: None,
        backing: Backing::Heap(Heap { _hdr: hdr, _rd: rd, _entries: entries, _slots: slots }),
    }
}

/// A published data region header (only what the protocol reads is set).
fn ring_header(capacity: u64, policy: Policy, max_readers: u32) -> Box<RingHeader> {
    Box::new(RingHeader {
        magic: RING_MAGIC,
        version: AtomicU32::new(ABI_VERSION),
        header_size: 0,
        capacity,
        slot_size: 0,
        policy: policy.to_raw(),
        max_readers,
        flags: 0,
        stall_timeout_ns: u64::MAX,
        data_offset: 0,
        file_size: 0,
        created_ns: 0,
        _reserved0: [0; 56],
        name_len: 0,
        _pad1: 0,
        name: [0; 64],
        _reserved1: [0; 56],
        lease: a64(),
        lease_start_time: a64(),
        lease_since_ns: a64(),
        takeovers: a64(),
        _reserved2: [0; 96],
        published: a64(),
        notify: a32(),
        _pad3: 0,
        _reserved3: [0; 112],
        bytes_published: a64(),
        writer_waits: a64(),
        writer_wait_ns: a64(),
        _reserved4: [0; 104],
        _reserved5: [0; 384],
    })
}

/// A published control region header.
fn readers_header(max_readers: u32) -> Box<ReadersHeader> {
    Box::new(ReadersHeader {
        magic: READERS_MAGIC,
        version: AtomicU32::new(ABI_VERSION),
        header_size: 0,
        max_readers,
        entry_size: 0,
        created_ns: 0,
        file_size: 0,
        _reserved0: [0; 88],
        waiters: a32(),
        table_epoch: a32(),
        demotions: a64(),
        swept: a64(),
        _reserved1: [0; 104],
        writer_waiting: a32(),
        writer_wake: a32(),
        _reserved2: [0; 120],
        _reserved3: [0; 128],
    })
}

/// A free reader entry.
fn reader_entry() -> ReaderEntry {
    ReaderEntry {
        cursor: a64(),
        _reserved_a: [0; 120],
        state: a32(),
        gating: a32(),
        pid: a32(),
        parked: a32(),
        start_time: a64(),
        heartbeat_ns: a64(),
        overruns: a64(),
        lost: a64(),
        frames: a64(),
        joined_ns: a64(),
        name: [a64(), a64(), a64(), a64()],
        _reserved_b: [0; 32],
    }
}
