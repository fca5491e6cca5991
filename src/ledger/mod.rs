//! The audit ledger's format: Blake3 hash-chained segment files, written by
//! helix-ledger and read by `verify`, helixctl and anyone who audits.
//!
//! The ledger taps rings as a gating reader and appends each frame to
//! append-only segment files as a record whose chain hash covers the
//! previous one (format: [`format`](mod@format), `docs/ledger.md`). Frames are released
//! to the writer only after their records are written, so a ledger that is
//! killed loses no frame the ring still holds: on restart it cuts off a
//! torn tail, checks the tail of the chain, and resumes at the next
//! sequence. Frames lost anyway (an overwriting ring, a late start, a
//! demotion) are recorded as explicit GAP records.

pub mod anchor;
pub mod chain;
pub mod compress;
pub mod format;
mod recovery;
pub mod retention;
pub mod store;
pub mod verify;

pub use chain::{BadRecord, Chain, Problem, RingState};
pub use store::{AppendStats, Ledger, LedgerError, Recovery};
pub use verify::{head, verify, walk, Head, Summary, VerifyFailure};
