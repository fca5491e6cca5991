//! The fan-in ring: many producer processes into one consumer, with
//! variable-length records (`docs/abi.md` §11).
//!
//! A fan-in ring has `lanes` lanes; each producer takes one and is its only
//! writer. A lane is a byte ring of variable-length records (a 16-byte
//! header, the payload rounded up to 8 bytes) in a file the producer makes
//! and only it may write; the consumer reads it through a read-only
//! mapping and checks every length and offset it reads there.
//!
//! # Guarantees
//!
//! - **Lock-free and allocation-free on the hot path.** Claiming, writing,
//!   publishing and draining take no locks and allocate nothing; a producer
//!   makes a system call only if the consumer sleeps, the consumer only if
//!   the producer whose lane it frees waits for space.
//! - **Fair.** [`FanIn::try_drain`] takes at most `per_lane` records from
//!   each lane per round, so a busy lane cannot starve the others; a full
//!   lane blocks only its own producer.
//! - **Exactly once, in order, per lane.** Every record a producer
//!   published is delivered once, in its lane's order, also when the
//!   producer dies (its lane is freed only after it is drained); a record
//!   claimed and not published is never seen. Records a consumer was handed
//!   but had not released when it died are handed again to the next one.
//! - **A producer is not trusted.** Garbage in its lane, a stall, a death
//!   mid-record or a shrunk lane file hurt only its own lane: the consumer
//!   drops that lane with a [`LaneReport`] and goes on with the others.
//! - **Identity from the kernel.** Each lane's uid is its file's owner
//!   (`fstat`), its pid the holder of the file's process lock (`F_GETLK`).
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use helix::fanin::{Event, FanIn, FanInOptions, Producer};
//! use helix::Namespace;
//!
//! let ns = Namespace::new(&format!("docfan{}", std::process::id())).unwrap();
//! let mut consumer = FanIn::create(&ns, "cmd", &FanInOptions::default()).unwrap();
//! let mut producer = Producer::attach(&ns, "cmd").unwrap();
//! producer.try_send(7, b"hello").unwrap();
//!
//! let mut got = Vec::new();
//! consumer.drain_timeout(16, Duration::from_secs(5), |event| match event {
//!     Event::Record(r) => got.push((r.lane, r.kind, r.to_vec().unwrap())),
//!     Event::Dropped(report) => panic!("{report}"),
//!     Event::Unbindable { lane, reason } => panic!("lane {lane}: {reason}"),
//! });
//! assert_eq!(got, [(producer.lane(), 7, b"hello".to_vec())]);
//! # drop((producer, consumer));
//! FanIn::unlink(&ns, "cmd").unwrap();
//! ```

mod consumer;
mod error;
pub mod files;
mod folder;
#[cfg(test)]
mod heap;
pub mod inspect;
mod lane;
mod lane_file;
pub mod layout;
mod lease;
mod producer;
mod record;
mod stats;
#[cfg(all(test, not(loom)))]
mod tests;

#[cfg(all(test, loom))]
mod loom_tests;

pub use consumer::{Event, FanIn};
pub use error::{FanInError, LaneProblem, LaneReport, SendError};
pub use files::FanInGeometry;
pub use lane::LaneFault;
pub use producer::{Batch, Claim, Producer};
pub use record::{Record, RecordError};
pub use stats::{FanInStats, FanInView, LaneStats};

use layout::{record_size, MAX_ALLOW};

/// Most lanes a fan-in ring may have.
pub const MAX_LANES: u32 = 256;
/// Largest lane (1 GiB of records).
pub const MAX_LANE_CAPACITY: u64 = 1 << 30;
/// Largest record payload (16 MiB).
pub const MAX_RECORD: u32 = 16 << 20;

/// How a fan-in ring is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FanInOptions {
    /// Number of lanes: producers at once (1 to [`MAX_LANES`]).
    pub lanes: u32,
    /// Record bytes per lane: a power of two that holds at least one
    /// record of `max_payload` bytes.
    pub lane_capacity: u64,
    /// Largest record payload.
    pub max_payload: u32,
    /// Permission bits: group (or other) *write* lets those users produce;
    /// read alone lets them watch (tools). Default 0o660.
    pub mode: u32,
    /// Group of the ring's files (the creator must belong to it).
    pub group: Option<u32>,
    /// Uids allowed to hold a lane (at most 16; empty: anyone the mode
    /// lets in).
    pub allow_uids: Vec<u32>,
}

impl Default for FanInOptions {
    /// 8 lanes of 1 MiB, records up to 64 KiB, mode 0o660.
    fn default() -> Self {
        FanInOptions {
            lanes: 8,
            lane_capacity: 1 << 20,
            max_payload: 64 << 10,
            mode: 0o660,
            group: None,
            allow_uids: Vec::new(),
        }
    }
}

impl FanInOptions {
    pub(crate) fn validate(&self) -> Result<(), FanInError> {
        let bad = |field, reason: String| Err(FanInError::Options { field, reason });
        if self.lanes == 0 || self.lanes > MAX_LANES {
            return bad("lanes", format!("{} is not between 1 and {MAX_LANES}", self.lanes));
        }
        if self.max_payload > MAX_RECORD {
            return bad("max_payload", format!("{} is more than {MAX_RECORD}", self.max_payload));
        }
        let need = record_size(self.max_payload as usize) as u64;
        let cap = self.lane_capacity;
        if !cap.is_power_of_two() || cap < need || cap > MAX_LANE_CAPACITY {
            return bad(
                "lane_capacity",
                format!("{cap} is not a power of two between {need} (one largest record) and {MAX_LANE_CAPACITY}"),
            );
        }
        if self.mode & !0o777 != 0 {
            return bad("mode", format!("{:o} has bits outside 0o777", self.mode));
        }
        if self.allow_uids.len() > MAX_ALLOW {
            return bad("allow_uids", format!("{} uids; at most {MAX_ALLOW}", self.allow_uids.len()));
        }
        Ok(())
    }
}
