//! HELIX: named shared-memory broadcast rings for one Linux host.
//!
//! A ring is a fixed-capacity, power-of-two array of fixed-size slots in
//! `/dev/shm`, with one writer and up to `max_readers` readers, each with its
//! own cursor (LMAX Disruptor style). Processes attach by name. A second
//! kind, the fan-in ring ([`fanin`]), carries variable-length records from
//! many untrusted producer processes to one consumer.
//!
//! # Guarantees
//!
//! - **Lock-free and allocation-free after attach.** Publishing, reading and
//!   waiting take no locks and allocate nothing; the writer makes no system
//!   call unless a reader is parked.
//! - **Sequence numbers.** Every published frame has a 64-bit sequence
//!   number, starting at 1 and increasing by one, never reused, also when a
//!   writer dies and another takes over its lease.
//! - **No torn frame is ever delivered.** Slots are seqlocks; a copy that
//!   raced with the writer is detected and reported, never returned. No
//!   `&[u8]` into shared memory is ever created, so there is no data race in
//!   Rust's memory model (see `ring::frame` and `docs/abi.md`).
//! - **No silent loss.** A reader that falls a whole ring behind gets
//!   [`TryReadError::Overrun`] with the exact number of sequences lost and
//!   resumes at the oldest intact frame; losses are counted in shared memory.
//! - **When full:** an [`Policy::Overwrite`] ring's writer never waits; a
//!   [`Policy::Block`] ring's writer waits for *gating* readers, and demotes
//!   one that is dead or has not released the slot it needs within the
//!   ring's stall timeout, whatever its cursor does meanwhile (the demotion
//!   is counted and visible).
//! - **When a process dies:** a dead writer's lease is taken over by the
//!   next writer, which continues the sequence; a dead reader stops gating
//!   within the stall timeout, and [`RingView::sweep`] frees its entry; a
//!   creator killed mid-creation leaves nothing that blocks the next
//!   [`Ring::create`], and [`Ring::recreate`] refuses a ring a live writer
//!   holds.
//! - **Least privilege.** Readers map the frame data read-only; what they
//!   write (cursor, heartbeat, waiter count) lives in a separate region.
//!
//! # Example
//!
//! ```
//! use helix::{Namespace, Reader, ReaderOptions, Ring, RingOptions, TryReadError};
//!
//! let ns = Namespace::new(&format!("doc{}", std::process::id())).unwrap();
//! let ring = Ring::create(&ns, "demo", &RingOptions::default()).unwrap();
//! let mut writer = ring.writer().unwrap();
//! let mut reader = Reader::attach(&ns, "demo", &ReaderOptions::named("doc")).unwrap();
//!
//! writer.publish(b"hello").unwrap();
//! let mut buf = [0u8; 64];
//! let info = reader.try_read(&mut buf).unwrap();
//! assert_eq!((info.seq, &buf[..info.len]), (1, &b"hello"[..]));
//! assert_eq!(reader.try_read(&mut buf), Err(TryReadError::Empty));
//! # drop((reader, writer, ring));
//! Ring::unlink(&ns, "demo").unwrap();
//! ```

pub mod control;
pub mod fanin;
pub mod futex;
mod guard;
pub mod layout;
#[cfg(feature = "ledger")]
pub mod ledger;
pub mod process;
pub mod ring;
pub mod shm;
mod sync;
pub mod telemetry;
pub mod twin;
pub mod wait;

pub use ring::{
    AttachError, Claim, CreateError, Damaged, EvictError, ForeignRing, Frame, FrameError, FrameInfo, FrameRef,
    FreedReader, Geometry, LeaseError, LeaseInfo, Overrun, Owners, Policy, Preset, PublishError, ReadError, Reader,
    ReaderOptions, ReaderStats, RepairError, Ring, RingFile, RingName, RingOptions, RingStats, RingView, Start,
    SweepReport, TryReadError, UnderName, Writer,
};
pub use shm::{NameError, Namespace};
pub use wait::WaitStrategy;
