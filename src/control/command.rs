//! The command record a sender puts on the `control` fan-in ring
//! (`docs/abi.md` §12.2), and its decoding.

use bytemuck::{Pod, Zeroable};

use crate::layout::{assert_layout, wire_enum};
use crate::shm::validate_ring_name;

use super::{Reason, FORMAT_VERSION, KIND_COMMAND, MAX_RATE_HZ};

/// Length of [`Command::source`].
pub const SOURCE_LEN: usize = 64;

wire_enum! {
    /// What a command asks for (`Command::op`); `as_str` is helixctl's verb.
    #[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize), serde(rename_all = "lowercase"))]
    pub enum Op: u16, from_u16 {
        /// Drive stream `stream` of the source toward the setpoint `value`.
        Set = 1, "set";
        /// Give stream `stream` back to the source's own values.
        Release = 2, "release";
        /// Stop the source's sampling.
        Pause = 3, "pause";
        /// Start it again.
        Resume = 4, "resume";
        /// Sample each of the source's streams at `value` Hz.
        Rate = 5, "rate";
    }
}

impl Op {
    /// Whether the op names a stream (`set`, `release`).
    pub fn has_stream(self) -> bool {
        matches!(self, Op::Set | Op::Release)
    }

    /// Whether the op carries a value (`set`, `rate`).
    pub fn has_value(self) -> bool {
        matches!(self, Op::Set | Op::Rate)
    }
}

/// One command, 96 bytes, little-endian (`docs/abi.md` §12.2): the payload
/// of a fan-in record of kind [`KIND_COMMAND`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct Command {
    /// [`FORMAT_VERSION`].
    pub version: u16,
    /// [`Op`] as a number.
    pub op: u16,
    /// The stream (`set`, `release`); 0 otherwise.
    pub stream: u32,
    /// Chosen by the sender, not 0: a command sent again with the same id
    /// (by the same uid) is answered with the first verdict, never applied
    /// twice.
    pub request: u64,
    /// The setpoint (`set`, finite) or the rate in Hz (`rate`); 0 otherwise.
    pub value: f64,
    /// Zero.
    pub reserved: u64,
    /// The source, by the name of the ring it writes, NUL-padded; empty
    /// for `set`/`release` means the source writing `telemetry`.
    pub source: [u8; SOURCE_LEN],
}

assert_layout!(Command, 96; version @ 0, op @ 2, stream @ 4, request @ 8, value @ 16, reserved @ 24, source @ 32);

/// The source a `set` or `release` with an empty name addresses.
pub const DEFAULT_SOURCE: &str = "telemetry";

/// A command that passed [`decode`]: every field checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Valid {
    /// What it asks.
    pub op: Op,
    /// The sender's request id (not 0).
    pub request: u64,
    /// The source, by its ring's name (a valid ring name).
    pub source: String,
    /// The stream (`set`, `release`), else 0.
    pub stream: u32,
    /// The setpoint or the rate, else 0.
    pub value: f64,
}

impl Command {
    /// A command of `op` on `source` (`""`: the default source).
    pub fn new(op: Op, request: u64, source: &str, stream: u32, value: f64) -> Command {
        let mut c = Command { version: FORMAT_VERSION, op: op as u16, stream, request, value, ..Zeroable::zeroed() };
        let n = source.len().min(SOURCE_LEN);
        c.source[..n].copy_from_slice(&source.as_bytes()[..n]);
        c
    }

    /// Sets stream `stream` of `source` toward `value`.
    pub fn set(request: u64, source: &str, stream: u32, value: f64) -> Command {
        Command::new(Op::Set, request, source, stream, value)
    }

    /// The name in `source`, up to its first NUL (lossy: for display).
    pub fn source_name(&self) -> String {
        let end = self.source.iter().position(|&b| b == 0).unwrap_or(SOURCE_LEN);
        String::from_utf8_lossy(&self.source[..end]).into_owned()
    }

    /// The command as [`decode`] would take it, if it is one.
    pub fn validate(&self) -> Result<Valid, Reason> {
        decode(KIND_COMMAND, bytemuck::bytes_of(self))
    }
}

/// Checks a fan-in record of `kind` with `payload` as a command. Every
/// field is checked, unused ones included (they must be zero), so garbage
/// is rejected with the first reason found, in the order of
/// `docs/abi.md` §12.2.
pub fn decode(kind: u32, payload: &[u8]) -> Result<Valid, Reason> {
    if kind != KIND_COMMAND {
        return Err(Reason::BadKind);
    }
    let c: Command = bytemuck::try_pod_read_unaligned(payload).map_err(|_| Reason::BadSize)?;
    if c.version != FORMAT_VERSION {
        return Err(Reason::BadVersion);
    }
    let op = Op::from_u16(c.op).ok_or(Reason::UnknownOp)?;
    if c.request == 0 {
        return Err(Reason::NoRequestId);
    }
    let unused_stream = !op.has_stream() && c.stream != 0;
    let unused_value = !op.has_value() && c.value.to_bits() != 0;
    if c.reserved != 0 || unused_stream || unused_value {
        return Err(Reason::NotZero);
    }
    let source = source(&c.source, op)?;
    match op {
        Op::Set if !c.value.is_finite() => return Err(Reason::BadValue),
        Op::Rate if !(c.value > 0.0 && c.value <= MAX_RATE_HZ) => return Err(Reason::BadValue),
        _ => {}
    }
    Ok(Valid { op, request: c.request, source, stream: c.stream, value: c.value })
}

/// The source name: a ring name, NUL-padded (nothing after the first NUL);
/// empty is the default source for stream ops.
fn source(bytes: &[u8; SOURCE_LEN], op: Op) -> Result<String, Reason> {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(SOURCE_LEN);
    if bytes[end..].iter().any(|&b| b != 0) {
        return Err(Reason::BadSource);
    }
    let name = std::str::from_utf8(&bytes[..end]).map_err(|_| Reason::BadSource)?;
    if name.is_empty() && op.has_stream() {
        return Ok(DEFAULT_SOURCE.to_owned());
    }
    validate_ring_name(name).map_err(|_| Reason::BadSource)?;
    Ok(name.to_owned())
}
