//! The audit ledger's format: Blake3 hash-chained segment files, written by
//! helix-ledger and read by `verify`, helixctl and anyone who audits.
//!
//! The ledger taps rings as a gating reader and appends the frames of each
//! batch it reads to append-only segment files as a block whose chain hash
//! covers the previous one (format version 2: [`block`], [`format`](mod@format),
//! `docs/ledger.md`; version 1, a chain hash per record, is still read).
//! Frames are released to the writer only after their block is written, so
//! a ledger that is killed loses no frame the ring still holds: on restart
//! it cuts off a torn tail, checks the tail of the chain, and resumes at
//! the next sequence. Frames lost anyway (an overwriting ring, a late
//! start, a demotion) are recorded as explicit GAP records.

pub mod anchor;
pub mod block;
pub mod catchup;
pub mod chain;
pub mod compress;
mod folder;
pub mod format;
mod recovery;
pub mod replay;
pub mod retention;
pub mod scan;
pub mod sign;
mod signed;
pub mod store;
pub mod verify;

pub use block::{BlockView, Record};
pub use chain::{BadRecord, Chain, Problem, RingState};
pub use recovery::lock as lock_folder;
pub use store::{AppendStats, Ledger, LedgerError, Recovery};
pub use verify::{
    head, latest_checkpoint, verify, verify_signed, walk, walk_blocks, walk_segments, Head, Summary, VerifyFailure,
};
