//! The shared-memory layout: the ABI every process attaching to a ring obeys.
//!
//! This module and `docs/abi.md` are the contract; they change together, and
//! [`ABI_VERSION`] changes whenever a byte here does. Every offset and size is
//! asserted at compile time at the bottom of this file. No pointers live in
//! shared memory, only offsets and sizes. All integers are native-endian
//! (little-endian on the supported targets).
//!
//! A ring is two files in `/dev/shm`:
//!
//! | file | who maps it writable | holds |
//! |---|---|---|
//! | `<ns>.<ring>` (data region) | the writer and the daemon | [`RingHeader`], then `capacity` slots |
//! | `<ns>.<ring>@readers` (control region) | everyone attached | [`ReadersHeader`], then `max_readers` [`ReaderEntry`]s |
//!
//! Readers map the data region read-only, so no reader can change what
//! another reader reads. What a reader must write (its cursor, heartbeat,
//! the parked-waiter count) lives in the control region.
//!
//! Hot and cold fields, writer-owned and reader-owned fields, sit on separate
//! 128-byte lines (two cache lines: the adjacent-line prefetcher on x86-64
//! pulls pairs).

use crate::sync::{AtomicU32, AtomicU64};

/// Bumped whenever any byte of this layout changes meaning.
pub const ABI_VERSION: u32 = 4;
/// First eight bytes of a data region: `b"HELIXRNG"`.
pub const RING_MAGIC: u64 = u64::from_le_bytes(*b"HELIXRNG");
/// First eight bytes of a control region: `b"HELIXRDR"`.
pub const READERS_MAGIC: u64 = u64::from_le_bytes(*b"HELIXRDR");
/// The unit of separation between independently written fields.
pub const LINE: usize = 128;
/// Slot sizes are multiples of this (one cache line).
pub const SLOT_ALIGN: usize = 64;
/// Size of [`RingHeader`]; the first slot starts here.
pub const RING_HEADER_SIZE: usize = 1024;
/// Size of [`ReadersHeader`]; the first reader entry starts here.
pub const READERS_HEADER_SIZE: usize = 512;
/// Size of one [`ReaderEntry`].
pub const READER_ENTRY_SIZE: usize = 256;
/// Size of [`SlotHeader`]; a slot's payload starts here.
pub const SLOT_HEADER_SIZE: usize = 16;
/// Longest ring name in bytes.
pub const MAX_NAME_LEN: usize = 63;
/// Longest reader name in bytes.
pub const MAX_READER_NAME_LEN: usize = 32;

/// `policy` value: the writer never waits; slow readers see overruns.
pub const POLICY_OVERWRITE: u32 = 0;
/// `policy` value: gating readers hold the writer back (lossless).
pub const POLICY_BLOCK: u32 = 1;

/// `lease` bit: the holder has finished writing `lease_start_time`.
pub const LEASE_COMMITTED: u64 = 1 << 63;
/// `lease` bits 0..32: holder pid (0: free).
pub const LEASE_PID_MASK: u64 = 0xFFFF_FFFF;
/// `lease` bits 32..63: epoch, incremented by every acquisition.
pub const LEASE_EPOCH_SHIFT: u32 = 32;
/// Mask of the epoch after shifting.
pub const LEASE_EPOCH_MASK: u64 = 0x7FFF_FFFF;

/// `stamp` bit: the slot is being written for the sequence in the low bits.
pub const STAMP_WRITING: u64 = 1 << 63;
/// The largest sequence number, 2^63 - 1: a sequence shares the slot's
/// `stamp` word with [`STAMP_WRITING`], so it must fit in the low 63 bits.
/// `published` is at most this; a region whose `published` is larger is
/// refused, and a writer that reaches it stops publishing.
pub const MAX_SEQ: u64 = STAMP_WRITING - 1;

/// `state` of a reader entry: unused. Any other value is `pid << 2 | tag`.
pub const ENTRY_FREE: u32 = 0;
/// `state` tag (bits 0..2): being filled in by the joining reader `pid`.
pub const ENTRY_CLAIMING: u32 = 1;
/// `state` tag (bits 0..2): a registered reader, process `pid`.
pub const ENTRY_ACTIVE: u32 = 2;
/// Mask of the tag bits of `state`.
pub const ENTRY_TAG_MASK: u32 = 3;
/// `state` bits 2..32 hold the owner's pid (Linux pids are below 2^22).
pub const ENTRY_PID_SHIFT: u32 = 2;

/// `gating` of a reader entry: the reader never holds the writer back.
pub const GATING_NO: u32 = 0;
/// `gating` of a reader entry: the writer of a `block` ring waits for it.
pub const GATING_YES: u32 = 1;
/// `gating` of a reader entry: was gating, demoted (stalled or dead).
pub const GATING_DEMOTED: u32 = 2;

/// The data region's header: 1024 bytes at offset 0.
#[repr(C)]
pub struct RingHeader {
    // ---- line 0: identity, written once at creation before `version` ----
    /// [`RING_MAGIC`].
    pub magic: u64,
    /// [`ABI_VERSION`]; 0 while the region is being initialised. Written last.
    pub version: AtomicU32,
    /// [`RING_HEADER_SIZE`].
    pub header_size: u32,
    /// Number of slots, a power of two.
    pub capacity: u64,
    /// Bytes per slot (header and payload), a multiple of [`SLOT_ALIGN`].
    pub slot_size: u32,
    /// [`POLICY_OVERWRITE`] or [`POLICY_BLOCK`].
    pub policy: u32,
    /// Number of entries in the control region.
    pub max_readers: u32,
    /// Reserved, 0.
    pub flags: u32,
    /// A gating reader that has not released what a waiting writer needs
    /// this long after the writer started waiting for it is demoted.
    pub stall_timeout_ns: u64,
    /// Offset of slot 0 from the start of the file.
    pub data_offset: u64,
    /// Exact size of this file.
    pub file_size: u64,
    /// CLOCK_REALTIME at creation, in ns; the control region repeats it, so
    /// a mismatched pair of files is detected.
    pub created_ns: u64,
    pub _reserved0: [u8; 56],
    // ---- line 1: name ----
    /// Length of `name` in bytes.
    pub name_len: u32,
    pub _pad1: u32,
    /// The ring name, NUL-padded.
    pub name: [u8; 64],
    pub _reserved1: [u8; 56],
    // ---- line 2: writer lease (written on acquisition and release) ----
    /// Holder pid (bits 0..32), epoch (bits 32..63), committed (bit 63).
    pub lease: AtomicU64,
    /// Holder's start time (clock ticks since boot, `/proc/PID/stat` field 22).
    pub lease_start_time: AtomicU64,
    /// CLOCK_REALTIME ns of the last acquisition.
    pub lease_since_ns: AtomicU64,
    /// Leases taken over from a dead holder.
    pub takeovers: AtomicU64,
    pub _reserved2: [u8; 96],
    // ---- line 3: publication (writer writes, readers poll and park) ----
    /// Highest published sequence number (0: none yet). Sequences start at 1
    /// and never exceed [`MAX_SEQ`].
    pub published: AtomicU64,
    /// Futex word parked readers sleep on; the writer bumps it to wake them.
    pub notify: AtomicU32,
    pub _pad3: u32,
    pub _reserved3: [u8; 112],
    // ---- line 4: writer counters ----
    /// Payload bytes published, ever.
    pub bytes_published: AtomicU64,
    /// Times the writer of a `block` ring had to wait for space.
    pub writer_waits: AtomicU64,
    /// Nanoseconds the writer spent waiting for space.
    pub writer_wait_ns: AtomicU64,
    pub _reserved4: [u8; 104],
    // ---- lines 5..8: reserved ----
    pub _reserved5: [u8; 384],
}

/// The header of every slot; the payload follows it.
#[repr(C)]
pub struct SlotHeader {
    /// The sequence stored in this slot; with [`STAMP_WRITING`] set while the
    /// writer changes the payload; 0 if never written.
    pub stamp: AtomicU64,
    /// Payload length in bytes.
    pub len: AtomicU32,
    /// Application-defined frame kind (0 if unused).
    pub kind: AtomicU32,
}

/// The control region's header: 512 bytes at offset 0.
#[repr(C)]
pub struct ReadersHeader {
    // ---- line 0: identity ----
    /// [`READERS_MAGIC`].
    pub magic: u64,
    /// [`ABI_VERSION`]; 0 while being initialised. Written last.
    pub version: AtomicU32,
    /// [`READERS_HEADER_SIZE`].
    pub header_size: u32,
    /// Number of entries.
    pub max_readers: u32,
    /// [`READER_ENTRY_SIZE`].
    pub entry_size: u32,
    /// Same value as the data region's `created_ns`.
    pub created_ns: u64,
    /// Exact size of this file.
    pub file_size: u64,
    pub _reserved0: [u8; 88],
    // ---- line 1: reader bookkeeping ----
    /// Readers currently parked (or about to park) on `notify`.
    pub waiters: AtomicU32,
    /// Incremented on every join and leave, so the writer rescans the table.
    pub table_epoch: AtomicU32,
    /// Gating readers demoted because they stalled or died.
    pub demotions: AtomicU64,
    /// Entries of dead readers freed by a sweep.
    pub swept: AtomicU64,
    pub _reserved1: [u8; 104],
    // ---- line 2: the writer waiting for space ----
    /// 1 while the writer of a `block` ring waits (or is about to) for space.
    pub writer_waiting: AtomicU32,
    /// Futex word the waiting writer sleeps on; gating readers bump it.
    pub writer_wake: AtomicU32,
    pub _reserved2: [u8; 120],
    // ---- line 3: reserved ----
    pub _reserved3: [u8; 128],
}

/// One registered reader: 256 bytes.
#[repr(C)]
pub struct ReaderEntry {
    // ---- line A: written by the reader on every consume ----
    /// Next sequence this reader will read; everything below is consumed.
    pub cursor: AtomicU64,
    pub _reserved_a: [u8; 120],
    // ---- line B: registration and statistics ----
    /// [`ENTRY_FREE`], or the owner's pid and a tag: `pid << 2 |`
    /// [`ENTRY_CLAIMING`] or `pid << 2 |` [`ENTRY_ACTIVE`]. Changed only by
    /// compare-and-swap, so an owner is never confused with the next one.
    pub state: AtomicU32,
    /// [`GATING_NO`], [`GATING_YES`] or [`GATING_DEMOTED`].
    pub gating: AtomicU32,
    /// The reader's pid (the same as in `state`; for tools).
    pub pid: AtomicU32,
    /// 1 while the reader is counted in `waiters` (so a sweep can undo the
    /// count of a reader that died parked).
    pub parked: AtomicU32,
    /// The reader's start time (clock ticks since boot).
    pub start_time: AtomicU64,
    /// CLOCK_MONOTONIC ns of the reader's last sign of life.
    pub heartbeat_ns: AtomicU64,
    /// Overrun events this reader saw.
    pub overruns: AtomicU64,
    /// Sequences this reader lost to overruns.
    pub lost: AtomicU64,
    /// Frames this reader consumed.
    pub frames: AtomicU64,
    /// CLOCK_REALTIME ns when the reader joined.
    pub joined_ns: AtomicU64,
    /// The reader's name, NUL-padded UTF-8, as four native-endian words.
    pub name: [AtomicU64; 4],
    pub _reserved_b: [u8; 32],
}

/// Asserts at compile time the size of a `#[repr(C)]` type and the offset
/// of each named field: `assert_layout!(Type, size; field @ offset, ...)`.
/// For the shared layout below and the frame formats (`telemetry`, `twin`).
macro_rules! assert_layout {
    ($t:ty, $size:expr; $($field:ident @ $offset:expr),+ $(,)?) => {
        const _: () = assert!(core::mem::size_of::<$t>() == $size);
        $(const _: () = assert!(core::mem::offset_of!($t, $field) == $offset);)+
    };
}
pub(crate) use assert_layout;

/// A C-like enum carried as a number in a shared layout or a file format,
/// written once with its wire values and names:
///
/// ```text
/// wire_enum! {
///     /// What the enum is.
///     pub enum Name: u16, from_u16 {
///         /// What the variant means.
///         Variant = 1, "variant";
///     }
/// }
/// ```
///
/// gives the enum (`#[repr(u16)]`, `Debug, Clone, Copy, PartialEq, Eq,
/// Hash`, and any attributes written before `pub enum`), `from_u16` (the
/// variant of a wire value, if it is one), `as_str` (its name as the tools
/// print it) and `ALL` (every variant, in wire order). One table, so a
/// variant cannot be added without its decoding.
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident: $repr:ident, $from:ident {
            $($(#[doc = $doc:literal])* $variant:ident = $code:literal, $text:literal;)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr($repr)]
        $vis enum $name {
            $($(#[doc = $doc])* $variant = $code,)+
        }

        impl $name {
            /// Every variant, in wire order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The variant of a wire value, if it is one.
            pub fn $from(v: $repr) -> Option<$name> {
                match v {
                    $($code => Some($name::$variant),)+
                    _ => None,
                }
            }

            /// Its name, as the tools print it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }
    };
}
pub(crate) use wire_enum;

// The offsets of docs/abi.md §2, a line of 128 bytes to a line. (Not under
// loom, whose atomics are larger.)
#[cfg(not(loom))]
mod asserts {
    use super::*;

    assert_layout!(RingHeader, RING_HEADER_SIZE;
        magic @ 0, version @ 8, header_size @ 12, capacity @ 16, slot_size @ 24, policy @ 28, max_readers @ 32,
        flags @ 36, stall_timeout_ns @ 40, data_offset @ 48, file_size @ 56, created_ns @ 64,
        name_len @ 128, name @ 136,
        lease @ 256, lease_start_time @ 264, lease_since_ns @ 272, takeovers @ 280,
        published @ 384, notify @ 392,
        bytes_published @ 512, writer_waits @ 520, writer_wait_ns @ 528,
        _reserved5 @ 640,
    );
    assert_layout!(SlotHeader, SLOT_HEADER_SIZE; stamp @ 0, len @ 8, kind @ 12);
    assert_layout!(ReadersHeader, READERS_HEADER_SIZE;
        magic @ 0, version @ 8, header_size @ 12, max_readers @ 16, entry_size @ 20, created_ns @ 24, file_size @ 32,
        waiters @ 128, table_epoch @ 132, demotions @ 136, swept @ 144,
        writer_waiting @ 256, writer_wake @ 260,
    );
    assert_layout!(ReaderEntry, READER_ENTRY_SIZE;
        cursor @ 0,
        state @ 128, gating @ 132, pid @ 136, parked @ 140, start_time @ 144, heartbeat_ns @ 152, overruns @ 160,
        lost @ 168, frames @ 176, joined_ns @ 184, name @ 192,
    );

    // Every shared struct is at least 8-aligned and its hot lines start on
    // 128-byte boundaries when the struct does (mmap gives page alignment).
    const _: () = assert!(core::mem::align_of::<RingHeader>() == 8);
    const _: () = assert!(RING_HEADER_SIZE.is_multiple_of(LINE));
    const _: () = assert!(READERS_HEADER_SIZE.is_multiple_of(LINE));
    const _: () = assert!(READER_ENTRY_SIZE.is_multiple_of(LINE));
}

/// Bytes of a slot for payloads of up to `max_payload` bytes.
pub const fn slot_size_for(max_payload: usize) -> usize {
    (SLOT_HEADER_SIZE + max_payload).div_ceil(SLOT_ALIGN) * SLOT_ALIGN
}

/// Size of the data region file.
pub const fn ring_file_size(capacity: u64, slot_size: u32) -> u64 {
    RING_HEADER_SIZE as u64 + capacity * slot_size as u64
}

/// Size of the control region file.
pub const fn readers_file_size(max_readers: u32) -> u64 {
    READERS_HEADER_SIZE as u64 + max_readers as u64 * READER_ENTRY_SIZE as u64
}

/// Packs a lease word.
pub const fn lease_word(pid: u32, epoch: u64, committed: bool) -> u64 {
    (pid as u64) | ((epoch & LEASE_EPOCH_MASK) << LEASE_EPOCH_SHIFT) | if committed { LEASE_COMMITTED } else { 0 }
}

/// A reader entry's `state` for owner `pid` with `tag`.
pub const fn entry_state(pid: u32, tag: u32) -> u32 {
    (pid << ENTRY_PID_SHIFT) | tag
}

/// Unpacks a reader entry's `state` into (pid, tag).
pub const fn entry_parts(state: u32) -> (u32, u32) {
    (state >> ENTRY_PID_SHIFT, state & ENTRY_TAG_MASK)
}

/// Unpacks a lease word into (pid, epoch, committed).
pub const fn lease_parts(word: u64) -> (u32, u64, bool) {
    ((word & LEASE_PID_MASK) as u32, (word >> LEASE_EPOCH_SHIFT) & LEASE_EPOCH_MASK, word & LEASE_COMMITTED != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_sizes_round_up_to_cache_lines() {
        assert_eq!(slot_size_for(0), 64);
        assert_eq!(slot_size_for(48), 64);
        assert_eq!(slot_size_for(49), 128);
        assert_eq!(slot_size_for(64), 128);
        assert_eq!(slot_size_for(16 * 1024), 16 * 1024 + 64);
    }

    #[test]
    fn lease_word_round_trips() {
        for &(pid, epoch, c) in &[(0, 0, false), (1, 1, true), (4_194_304, LEASE_EPOCH_MASK, true)] {
            assert_eq!(lease_parts(lease_word(pid, epoch, c)), (pid, epoch, c));
        }
        // The epoch wraps inside its 31 bits and never touches the flag.
        assert_eq!(lease_parts(lease_word(7, LEASE_EPOCH_MASK + 1, false)), (7, 0, false));
    }

    #[test]
    fn entry_state_round_trips() {
        assert_eq!(entry_parts(ENTRY_FREE), (0, ENTRY_FREE));
        for pid in [1, 4_194_304, (1 << 30) - 1] {
            assert_eq!(entry_parts(entry_state(pid, ENTRY_ACTIVE)), (pid, ENTRY_ACTIVE));
            assert_eq!(entry_parts(entry_state(pid, ENTRY_CLAIMING)), (pid, ENTRY_CLAIMING));
        }
    }

    #[test]
    fn magics_spell_their_names() {
        assert_eq!(&RING_MAGIC.to_le_bytes(), b"HELIXRNG");
        assert_eq!(&READERS_MAGIC.to_le_bytes(), b"HELIXRDR");
    }
}
