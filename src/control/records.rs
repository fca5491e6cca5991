//! What helixd publishes about each command: its audit record on
//! `control.log` and its answer on `control.acks` (`docs/abi.md` §12.3,
//! §12.4), and the reasons a command is rejected.

use bytemuck::{Pod, Zeroable};

use crate::layout::{assert_layout, wire_enum};

use super::command::{Command, Op};
use super::FORMAT_VERSION;

wire_enum! {
    /// A verdict on a command.
    #[cfg_attr(feature = "serde", derive(serde::Serialize), serde(rename_all = "lowercase"))]
    pub enum Verdict: u16, from_u16 {
        /// It is (or was) applied.
        Accepted = 1, "accepted";
        /// It was not, and never will be; the reason says why.
        Rejected = 2, "rejected";
    }
}

wire_enum! {
    /// Why a command was rejected (`docs/abi.md` §12.5). The numbers are
    /// the wire values; 0 is "none" (accepted). `as_str` is the short name
    /// the log and `--json` use.
    pub enum Reason: u16, from_u16 {
        /// The fan-in record's kind is not [`super::KIND_COMMAND`].
        BadKind = 1, "bad_kind";
        /// The payload is not 96 bytes.
        BadSize = 2, "bad_size";
        /// `version` is not [`FORMAT_VERSION`].
        BadVersion = 3, "bad_version";
        /// `op` is no known op.
        UnknownOp = 4, "unknown_op";
        /// `request` is 0.
        NoRequestId = 5, "no_request_id";
        /// `reserved`, or a field the op does not use, is not zero.
        NotZero = 6, "not_zero";
        /// `source` is not a ring name, NUL-padded.
        BadSource = 7, "bad_source";
        /// A setpoint that is not finite, or a rate not in (0, 1e6] Hz.
        BadValue = 8, "bad_value";
        /// The sender's uid is not on helixd's allow-list.
        NotAllowed = 16, "not_allowed";
        /// No configured source writes the named ring.
        UnknownSource = 17, "unknown_source";
        /// The stream is not one of the source's.
        UnknownStream = 18, "unknown_stream";
        /// The source is not simulated and has no instrument to forward
        /// commands to (a UDP source without `instrument`).
        NotSimulated = 19, "not_simulated";
        /// The source is not running (its ring is being repaired).
        SourceDown = 20, "source_down";
        /// The command was for a UDP source's instrument and the datagram
        /// could not be sent (helixd's log names the address and the error).
        SendFailed = 21, "send_failed";
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// How many bytes of the sent payload a [`LogRecord`] keeps.
pub const LOGGED_BYTES: usize = std::mem::size_of::<Command>();

/// The audit record of one command, 144 bytes, frame kind
/// [`super::KIND_LOG`] on `control.log`: published before the command
/// takes effect, whatever the verdict.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct LogRecord {
    /// [`FORMAT_VERSION`].
    pub version: u32,
    /// [`Verdict`] as a number.
    pub verdict: u16,
    /// [`Reason`] as a number; 0 when accepted.
    pub reason: u16,
    /// The sender's uid, from the kernel (its lane file's owner).
    pub uid: u32,
    /// The sender's pid, from the kernel (0 if it had already gone).
    pub pid: u32,
    /// The fan-in lane it came on.
    pub lane: u32,
    /// Payload bytes it sent (the first [`LOGGED_BYTES`] are in `command`).
    pub len: u32,
    /// The record's sequence in its lane file.
    pub lane_seq: u64,
    /// CLOCK_REALTIME ns when helixd decided.
    pub time_ns: u64,
    /// The fan-in record's kind.
    pub kind: u32,
    /// Bit 0 ([`LOG_REPEAT`]): the request id was seen before; the verdict
    /// is the first one's and nothing is applied again.
    pub flags: u32,
    /// The payload as sent, its first [`LOGGED_BYTES`] bytes, zero-padded:
    /// a [`Command`] when it was one.
    pub command: [u8; LOGGED_BYTES],
}

assert_layout!(LogRecord, 144;
    version @ 0, verdict @ 4, reason @ 6, uid @ 8, pid @ 12, lane @ 16, len @ 20, lane_seq @ 24, time_ns @ 32,
    kind @ 40, flags @ 44, command @ 48);

impl LogRecord {
    /// The record of a payload of `kind` and its verdict.
    pub fn new(kind: u32, payload: &[u8], verdict: Result<(), Reason>) -> LogRecord {
        let mut r = LogRecord { version: FORMAT_VERSION as u32, kind, len: payload.len() as u32, ..Zeroable::zeroed() };
        let n = payload.len().min(LOGGED_BYTES);
        r.command[..n].copy_from_slice(&payload[..n]);
        (r.verdict, r.reason) = wire(verdict);
        r
    }

    /// The logged bytes as a command (whatever they hold).
    pub fn command(&self) -> Command {
        bytemuck::cast(self.command)
    }

    /// The verdict and reason, if the fields hold known values.
    pub fn outcome(&self) -> Option<Result<(), Reason>> {
        outcome(self.verdict, self.reason)
    }
}

/// The answer to one command, 48 bytes, frame kind [`super::KIND_ACK`] on
/// `control.acks`. A sender finds its own by `uid` and `request`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct Ack {
    /// [`FORMAT_VERSION`].
    pub version: u32,
    /// The sender's uid, from the kernel.
    pub uid: u32,
    /// The sender's request id.
    pub request: u64,
    /// [`Verdict`] as a number.
    pub verdict: u16,
    /// [`Reason`] as a number; 0 when accepted.
    pub reason: u16,
    /// The command's [`Op`] as a number (0 if it had none).
    pub op: u16,
    /// Bit 0 ([`ACK_REPEAT`]): the request id was seen before; this repeats
    /// the first answer and nothing was applied again. Bit 1
    /// ([`ACK_FORWARDED`]): accepted means forwarded to the instrument
    /// (sent, not confirmed).
    pub flags: u16,
    /// The sequence of the command's record on `control.log`.
    pub log_seq: u64,
    /// Accepted: the sequence, on the source's ring, of the first frame
    /// written after the command took effect; else 0 (and 0 for a
    /// forwarded command: the instrument's effect arrives as telemetry).
    pub ring_seq: u64,
    /// Accepted `set`/`release`: the per-stream sequence (`Sample::seq`)
    /// of the stream's first sample that reflects it; else 0.
    pub stream_seq: u64,
}

assert_layout!(Ack, 48;
    version @ 0, uid @ 4, request @ 8, verdict @ 16, reason @ 18, op @ 20, flags @ 22, log_seq @ 24,
    ring_seq @ 32, stream_seq @ 40);

/// [`Ack::flags`]: this answers a repeated request id.
pub const ACK_REPEAT: u16 = 1;

/// [`Ack::flags`]: the command was forwarded to a UDP source's instrument
/// (`docs/abi.md` §12.7): sent, its effect not confirmed.
pub const ACK_FORWARDED: u16 = 2;

/// [`LogRecord::flags`]: a repeated request id.
pub const LOG_REPEAT: u32 = 1;

impl Ack {
    /// The verdict and reason, if the fields hold known values.
    pub fn outcome(&self) -> Option<Result<(), Reason>> {
        outcome(self.verdict, self.reason)
    }

    /// The op, if known.
    pub fn op(&self) -> Option<Op> {
        Op::from_u16(self.op)
    }
}

/// A verdict as its two wire fields.
pub fn wire(verdict: Result<(), Reason>) -> (u16, u16) {
    match verdict {
        Ok(()) => (Verdict::Accepted as u16, 0),
        Err(r) => (Verdict::Rejected as u16, r as u16),
    }
}

fn outcome(verdict: u16, reason: u16) -> Option<Result<(), Reason>> {
    match (Verdict::from_u16(verdict)?, reason) {
        (Verdict::Accepted, 0) => Some(Ok(())),
        (Verdict::Rejected, r) => Reason::from_u16(r).map(Err),
        (Verdict::Accepted, _) => None,
    }
}
