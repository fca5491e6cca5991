//! The fan-in ring's shared layout (`docs/abi.md` §11): every offset and
//! size below is asserted at compile time and printed in the document.
//!
//! A fan-in ring is a directory `/dev/shm/<ns>.<ring>@fanin` holding:
//!
//! | file | created and written by | holds |
//! |---|---|---|
//! | `ring` | the consumer | [`FanInHeader`], then `lanes` [`LaneState`]s |
//! | `bell` | producers (group-writable) | [`BellHeader`]: the doorbell words |
//! | `lane.<k>` | the producer holding lane `k` | [`LaneHeader`], then `lane_capacity` record bytes |
//!
//! Each side maps the other's files read-only: a producer can write only its
//! own lane file and the doorbell; the consumer writes only its own file.

use crate::sync::{AtomicU32, AtomicU64};

/// First eight bytes of the consumer's file: `b"HELIXFAN"`.
pub const FANIN_MAGIC: u64 = u64::from_le_bytes(*b"HELIXFAN");
/// First eight bytes of a lane file: `b"HELIXLAN"`.
pub const LANE_MAGIC: u64 = u64::from_le_bytes(*b"HELIXLAN");
/// First eight bytes of the doorbell file: `b"HELIXBEL"`.
pub const BELL_MAGIC: u64 = u64::from_le_bytes(*b"HELIXBEL");
/// Size of [`FanInHeader`]; lane state 0 starts here.
pub const FANIN_HEADER_SIZE: usize = 1024;
/// Size of one [`LaneState`].
pub const LANE_STATE_SIZE: usize = 256;
/// Size of [`LaneHeader`]; a lane's record bytes start here.
pub const LANE_HEADER_SIZE: usize = 512;
/// Size of the doorbell file (one page).
pub const BELL_FILE_SIZE: usize = 4096;
/// Size of [`RecordHeader`].
pub const RECORD_HEADER_SIZE: usize = 16;
/// Records start and end on multiples of this.
pub const RECORD_ALIGN: usize = 8;
/// `len` of a padding word: the rest of the lane up to its end is skipped.
pub const PAD_LEN: u32 = u32::MAX;
/// Most uids an allow-list holds.
pub const MAX_ALLOW: usize = 16;

/// [`LaneState::status`]: no lane file is bound; the name `lane.<k>` is free
/// (or holds a file the consumer has not bound yet).
pub const LANE_FREE: u32 = 0;
/// [`LaneState::status`]: the consumer reads the lane file of `epoch`.
pub const LANE_BOUND: u32 = 1;

/// [`LaneHeader::closed`] value of a producer that let its lane go.
pub const LANE_CLOSED: u32 = 1;

/// The consumer's header: 1024 bytes at offset 0 of `ring`.
#[repr(C)]
pub struct FanInHeader {
    // ---- line 0: identity, written once at creation before `version` ----
    /// [`FANIN_MAGIC`].
    pub magic: u64,
    /// `ABI_VERSION`; written last at creation.
    pub version: AtomicU32,
    /// [`FANIN_HEADER_SIZE`].
    pub header_size: u32,
    /// Number of lanes.
    pub lanes: u32,
    /// [`LANE_STATE_SIZE`].
    pub lane_state_size: u32,
    /// Record bytes per lane, a power of two.
    pub lane_capacity: u64,
    /// Largest record payload.
    pub max_payload: u32,
    /// [`LANE_HEADER_SIZE`].
    pub lane_header_size: u32,
    /// CLOCK_REALTIME ns at creation; every lane file repeats it.
    pub created_ns: u64,
    /// Exact size of this file.
    pub file_size: u64,
    /// Entries used in `allow_uids` (0: any user who may open the files).
    pub allow_count: u32,
    /// Reserved, 0.
    pub flags: u32,
    /// Uids allowed to hold a lane, if `allow_count > 0`.
    pub allow_uids: [u32; MAX_ALLOW],
    // ---- line 1: name ----
    /// Length of `name`.
    pub name_len: u32,
    pub _pad1: u32,
    /// The ring name, NUL-padded.
    pub name: [u8; 64],
    pub _reserved1: [u8; 56],
    // ---- line 2: the consumer ----
    /// Pid of the consumer that holds the ring (0: none).
    pub consumer_pid: AtomicU32,
    pub _pad2: u32,
    /// Its start time (clock ticks since boot).
    pub consumer_start_time: AtomicU64,
    /// CLOCK_REALTIME ns when it attached.
    pub consumer_since_ns: AtomicU64,
    pub _reserved2: [u8; 104],
    // ---- line 3: what producers poll ----
    /// 1 while the consumer sleeps (or is about to) on the doorbell.
    pub sleeping: AtomicU32,
    /// Futex word: bumped whenever the consumer frees a lane.
    pub lanes_freed: AtomicU32,
    pub _reserved3: [u8; 120],
    // ---- line 4: consumer counters ----
    /// Drain rounds that delivered at least one record.
    pub rounds: AtomicU64,
    /// Times the consumer slept on the doorbell.
    pub sleeps: AtomicU64,
    /// Times the consumer rescanned the lane files.
    pub rescans: AtomicU64,
    /// Lanes quarantined for breaking the protocol.
    pub faults: AtomicU64,
    /// Lanes freed after their producer died or closed.
    pub reclaimed: AtomicU64,
    /// Rescan requests (`attach_seq` bumps) that came sooner than the
    /// consumer's limit allows: served together later.
    pub rescans_refused: AtomicU64,
    pub _reserved4: [u8; 80],
    // ---- lines 5..8: reserved ----
    pub _reserved5: [u8; 384],
}

/// The consumer's record of lane `k`: 256 bytes at `1024 + k × 256` of
/// `ring`. Only the consumer writes it.
#[repr(C)]
pub struct LaneState {
    // ---- line A: written on every consume ----
    /// Bytes of the bound lane file consumed (a running offset).
    pub tail: AtomicU64,
    /// Futex word a producer waiting for space sleeps on.
    pub space: AtomicU32,
    /// [`LANE_FREE`] or [`LANE_BOUND`].
    pub status: AtomicU32,
    pub _reserved_a: [u8; 112],
    // ---- line B: binding and counters ----
    /// Lease epoch of the bound (or last) lane file.
    pub epoch: AtomicU64,
    /// Inode number of the bound lane file.
    pub ino: AtomicU64,
    /// Owner of the bound lane file (`fstat`).
    pub uid: AtomicU32,
    /// Pid holding the file's pid lock (`F_GETLK`), 0 if none.
    pub pid: AtomicU32,
    /// Records consumed from this lane, every producer.
    pub records: AtomicU64,
    /// Payload bytes consumed from this lane.
    pub bytes: AtomicU64,
    /// Sequence number the next record of the bound file must carry.
    pub next_seq: AtomicU64,
    /// CLOCK_REALTIME ns when the bound file was bound.
    pub bound_ns: AtomicU64,
    /// Lane files of this lane quarantined.
    pub faults: AtomicU64,
    /// Lease epochs this lane has had.
    pub leases: AtomicU64,
    pub _reserved_b: [u8; 56],
}

/// A lane file's header: 512 bytes at offset 0 of `lane.<k>`. Written only
/// by the producer that created the file, so the consumer trusts nothing in
/// it beyond bounds-checked use.
#[repr(C)]
pub struct LaneHeader {
    // ---- line 0: identity, written before `version` and the link ----
    /// [`LANE_MAGIC`].
    pub magic: u64,
    /// `ABI_VERSION`.
    pub version: AtomicU32,
    /// [`LANE_HEADER_SIZE`].
    pub header_size: u32,
    /// Lane index `k`.
    pub lane: u32,
    /// The ring's `max_payload`.
    pub max_payload: u32,
    /// The ring's `lane_capacity`.
    pub capacity: u64,
    /// The ring's `created_ns`.
    pub ring_created_ns: u64,
    /// Lease epoch: the consumer's `LaneState::epoch` + 1 when created.
    pub epoch: u64,
    /// Exact size of this file.
    pub file_size: u64,
    /// The producer's pid (as it says; the consumer checks it).
    pub pid: u32,
    pub _pad0: u32,
    /// The producer's start time.
    pub start_time: u64,
    /// CLOCK_REALTIME ns when the file was made.
    pub attached_ns: u64,
    pub _reserved0: [u8; 48],
    // ---- line 1: publication ----
    /// Bytes published (a running offset; the records below it are whole).
    pub head: AtomicU64,
    /// 1 while the producer waits (or is about to) for space.
    pub waiting: AtomicU32,
    /// [`LANE_CLOSED`] once the producer let the lane go.
    pub closed: AtomicU32,
    pub _reserved1: [u8; 112],
    // ---- line 2: producer counters ----
    /// Records published.
    pub records: AtomicU64,
    /// Payload bytes published.
    pub bytes: AtomicU64,
    /// Times the producer found its lane full and waited.
    pub full_waits: AtomicU64,
    /// Nanoseconds it spent waiting.
    pub wait_ns: AtomicU64,
    pub _reserved2: [u8; 96],
    // ---- line 3: reserved ----
    pub _reserved3: [u8; 128],
}

/// The doorbell file: a page, writable by every producer.
#[repr(C)]
pub struct BellHeader {
    // ---- line 0: identity ----
    /// [`BELL_MAGIC`].
    pub magic: u64,
    /// `ABI_VERSION`.
    pub version: AtomicU32,
    pub _pad0: u32,
    /// The ring's `created_ns`.
    pub created_ns: u64,
    pub _reserved0: [u8; 104],
    // ---- line 1: the doorbell ----
    /// Futex word the consumer sleeps on; a producer bumps it to wake it.
    pub bell: AtomicU32,
    pub _pad1: u32,
    pub _reserved1: [u8; 120],
    // ---- line 2: lane changes ----
    /// Bumped by a producer after it linked a lane file or wants a dead
    /// producer's lane freed: the consumer then rescans the lane files.
    pub attach_seq: AtomicU32,
    pub _pad2: u32,
    pub _reserved2: [u8; 120],
}

/// The header of every record in a lane; the payload follows it.
#[repr(C)]
pub struct RecordHeader {
    /// Payload bytes, at most `max_payload`; [`PAD_LEN`] for padding.
    pub len: AtomicU32,
    /// Application-defined record kind.
    pub kind: AtomicU32,
    /// The producer's sequence number: 1 for the first record of a lane
    /// file, then one more for each record.
    pub seq: AtomicU64,
}

/// Bytes a record of `len` payload bytes takes in a lane.
pub const fn record_size(len: usize) -> usize {
    RECORD_HEADER_SIZE + len.div_ceil(RECORD_ALIGN) * RECORD_ALIGN
}

/// Size of the consumer's file for `lanes` lanes.
pub const fn fanin_file_size(lanes: u32) -> u64 {
    FANIN_HEADER_SIZE as u64 + lanes as u64 * LANE_STATE_SIZE as u64
}

/// Size of a lane file of `capacity` record bytes.
pub const fn lane_file_size(capacity: u64) -> u64 {
    LANE_HEADER_SIZE as u64 + capacity
}

#[cfg(not(loom))]
mod asserts {
    use super::*;
    use crate::layout::assert_layout;

    assert_layout!(FanInHeader, FANIN_HEADER_SIZE;
        magic @ 0, version @ 8, header_size @ 12, lanes @ 16, lane_state_size @ 20, lane_capacity @ 24,
        max_payload @ 32, lane_header_size @ 36, created_ns @ 40, file_size @ 48, allow_count @ 56, flags @ 60,
        allow_uids @ 64,
        name_len @ 128, name @ 136,
        consumer_pid @ 256, consumer_start_time @ 264, consumer_since_ns @ 272,
        sleeping @ 384, lanes_freed @ 388,
        rounds @ 512, sleeps @ 520, rescans @ 528, faults @ 536, reclaimed @ 544, rescans_refused @ 552,
        _reserved5 @ 640,
    );
    assert_layout!(LaneState, LANE_STATE_SIZE;
        tail @ 0, space @ 8, status @ 12,
        epoch @ 128, ino @ 136, uid @ 144, pid @ 148, records @ 152, bytes @ 160, next_seq @ 168, bound_ns @ 176,
        faults @ 184, leases @ 192,
    );
    assert_layout!(LaneHeader, LANE_HEADER_SIZE;
        magic @ 0, version @ 8, header_size @ 12, lane @ 16, max_payload @ 20, capacity @ 24, ring_created_ns @ 32,
        epoch @ 40, file_size @ 48, pid @ 56, start_time @ 64, attached_ns @ 72,
        head @ 128, waiting @ 136, closed @ 140,
        records @ 256, bytes @ 264, full_waits @ 272, wait_ns @ 280,
        _reserved3 @ 384,
    );
    assert_layout!(BellHeader, 384; magic @ 0, version @ 8, created_ns @ 16, bell @ 128, attach_seq @ 256);
    assert_layout!(RecordHeader, RECORD_HEADER_SIZE; len @ 0, kind @ 4, seq @ 8);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_up_to_eight_bytes() {
        assert_eq!(record_size(0), 16);
        assert_eq!(record_size(1), 24);
        assert_eq!(record_size(8), 24);
        assert_eq!(record_size(64), 80);
        assert_eq!(record_size(65536), 65552);
    }

    #[test]
    fn magics_spell_their_names() {
        assert_eq!(&FANIN_MAGIC.to_le_bytes(), b"HELIXFAN");
        assert_eq!(&LANE_MAGIC.to_le_bytes(), b"HELIXLAN");
        assert_eq!(&BELL_MAGIC.to_le_bytes(), b"HELIXBEL");
    }
}
