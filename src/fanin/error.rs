//! Why a fan-in operation failed, and what the consumer reports about a
//! lane it had to drop.

use std::path::{Path, PathBuf};

use crate::shm::NameError;

use super::lane::LaneFault;

/// Why a fan-in ring could not be created, attached (by its consumer or a
/// producer) or removed. Each variant names the file or the process.
#[derive(Debug, thiserror::Error)]
pub enum FanInError {
    /// The ring name is invalid.
    #[error(transparent)]
    Name(#[from] NameError),
    /// An option is out of range.
    #[error("fan-in option `{field}`: {reason}")]
    Options { field: &'static str, reason: String },
    /// A fan-in ring of that name already exists.
    #[error("{path} already exists (attach to it, or unlink it first)")]
    Exists { path: PathBuf },
    /// A broadcast ring of that name (either of its files), this user's or
    /// root's, exists: the two kinds share one name space, so that a name
    /// means one ring to every tool.
    #[error("a broadcast ring named {ring:?} exists ({path}); a fan-in ring may not share its name (choose another, or remove that ring first)")]
    BroadcastNamed { ring: String, path: PathBuf },
    /// No such fan-in ring.
    #[error("no fan-in ring {name:?} in namespace {namespace:?} ({path} does not exist)")]
    NotFound { name: String, namespace: String, path: PathBuf },
    /// The file may not be opened this way.
    #[error("permission denied opening {path} (the fan-in ring's mode and group decide who may produce)")]
    Permission { path: PathBuf },
    /// A system call failed.
    #[error("cannot {op} {path}: {error}")]
    Io { path: PathBuf, op: &'static str, error: std::io::Error },
    /// A header field is wrong.
    #[error("{path}: header field `{field}` is {found}, expected {expected}")]
    BadField { path: PathBuf, field: &'static str, found: u64, expected: String },
    /// The file was shrunk under this process's mapping.
    #[error("{path} was truncated under this process's mapping")]
    Damaged { path: PathBuf },
    /// Another live process is the consumer.
    #[error("fan-in ring {ring:?} already has a consumer (pid {pid}); one consumer at a time")]
    ConsumerHeld { ring: String, pid: u32 },
    /// This user is not on the ring's allow-list.
    #[error("uid {uid} may not produce into fan-in ring {ring:?} (not on its allow-list)")]
    NotAllowed { ring: String, uid: u32 },
    /// The ring's consumer is not one of the users a producer was told to
    /// believe ([`Producer::attach_trusting`](super::Producer::attach_trusting)):
    /// whoever made it would read what is sent.
    #[error(transparent)]
    Foreign(#[from] crate::ring::ForeignRing),
    /// The ring's folder is not one this process may trust: not a
    /// directory, not sticky, or not its consumer's (who made it first
    /// would receive the producers' records).
    #[error("{path} is not a fan-in ring folder to trust: {reason}")]
    Folder { path: PathBuf, reason: String },
    /// Every lane is held by a live producer (or by a dead one whose lane
    /// the consumer has not freed yet: it was asked to).
    #[error("every one of the {lanes} lanes of fan-in ring {ring:?} is taken")]
    NoFreeLane { ring: String, lanes: u32 },
}

impl FanInError {
    pub(crate) fn io(path: &Path, op: &'static str, error: std::io::Error) -> FanInError {
        if error.kind() == std::io::ErrorKind::PermissionDenied {
            FanInError::Permission { path: path.to_owned() }
        } else {
            FanInError::Io { path: path.to_owned(), op, error }
        }
    }

    pub(crate) fn field(path: &Path, field: &'static str, found: u64, expected: impl ToString) -> FanInError {
        FanInError::BadField { path: path.to_owned(), field, found, expected: expected.to_string() }
    }
}

/// Why a record could not be sent. Nothing of it became visible.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The payload is longer than the ring allows.
    #[error("a record of {len} bytes is longer than the ring's maximum payload of {max}")]
    TooLarge { len: usize, max: usize },
    /// The lane has no room now (`try_*` only).
    #[error("lane {lane} is full")]
    Full { lane: usize },
    /// The lane stayed full until the deadline.
    #[error("lane {lane} stayed full until the deadline")]
    Timeout { lane: usize },
    /// The consumer dropped this lane (it found it broken, or its file
    /// removed): nothing sent on it will be read. Attach again.
    #[error("the consumer dropped lane {lane} (epoch {epoch}); attach again")]
    Revoked { lane: usize, epoch: u64 },
    /// The lane file was shrunk under this producer's mapping.
    #[error("lane {lane}'s file was truncated under the producer's mapping")]
    Damaged { lane: usize },
    /// A record pushed into a [`Batch`](super::Batch) past the room it
    /// claimed (more records, or longer ones than the room left holds).
    #[error("the batch of {claimed} records has no room left for this one")]
    BatchFull { claimed: usize },
}

/// What was wrong with a lane the consumer dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LaneProblem {
    /// Its records break the protocol.
    #[error(transparent)]
    Protocol(#[from] LaneFault),
    /// Its file's owner is not on the allow-list.
    #[error("its owner, uid {uid}, is not on the ring's allow-list")]
    NotAllowed { uid: u32 },
    /// Its file is not a lane file of this ring.
    #[error("its file is not a lane of this ring: {reason}")]
    BadFile { reason: String },
}

/// A lane the consumer dropped: which, whose, and why. Its file is removed
/// and the lane is free for the next producer; other lanes are untouched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("fan-in ring {ring:?}, lane {lane} (uid {uid}, pid {pid}, epoch {epoch}): {problem}; lane dropped")]
pub struct LaneReport {
    /// The ring name.
    pub ring: String,
    /// Lane index.
    pub lane: usize,
    /// The lane file's owner, from the kernel (`fstat`).
    pub uid: u32,
    /// The producer's pid from the kernel (0 if unknown).
    pub pid: u32,
    /// The lane file's lease epoch.
    pub epoch: u64,
    /// What was wrong.
    pub problem: LaneProblem,
}
