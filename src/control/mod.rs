//! The control path's formats (`docs/abi.md` §12): commands senders put on
//! helixd's `control` fan-in ring, the audit record helixd publishes on
//! `control.log` before a command takes effect, and the answer on
//! `control.acks`; and the datagram a command addressed to a UDP source is
//! forwarded to its instrument as ([`Forward`]).
//!
//! A sender is not trusted: [`decode`] checks every field of a command
//! (unused ones must be zero) and names the first thing wrong as a
//! [`Reason`]; nothing it is given can make it panic.
//!
//! ```
//! use helix::control::{decode, Command, Op, Reason, KIND_COMMAND};
//!
//! let c = Command::set(7, "", 12, 37.5);
//! let v = decode(KIND_COMMAND, bytemuck::bytes_of(&c)).unwrap();
//! assert_eq!((v.op, v.source.as_str(), v.stream, v.value), (Op::Set, "telemetry", 12, 37.5));
//! assert_eq!(decode(KIND_COMMAND, &[0; 5]), Err(Reason::BadSize));
//! ```

mod client;
mod command;
mod forward;
mod records;
#[cfg(test)]
mod tests;

pub use client::{Control, ControlError};
pub use command::{decode, Command, Op, Valid, DEFAULT_SOURCE, SOURCE_LEN};
pub use forward::{Forward, ForwardError, FORWARD_MAGIC, FORWARD_VERSION};
pub use records::{wire, Ack, LogRecord, Reason, Verdict, ACK_FORWARDED, ACK_REPEAT, LOGGED_BYTES, LOG_REPEAT};

/// Version of the control formats (§12), in each record's `version`.
pub const FORMAT_VERSION: u16 = 1;

/// Fan-in record kind of a [`Command`] (`"HC"`, 1).
pub const KIND_COMMAND: u32 = 0x4843_0001;
/// Frame kind of a [`LogRecord`] on `control.log`.
pub const KIND_LOG: u32 = 0x4843_0010;
/// Frame kind of an [`Ack`] on `control.acks`.
pub const KIND_ACK: u32 = 0x4843_0020;

/// Highest rate a `rate` command may ask, in Hz (the configuration's limit).
pub const MAX_RATE_HZ: f64 = 1e6;

/// The fan-in ring helixd consumes commands from.
pub const CONTROL_RING: &str = "control";
/// The broadcast ring of audit records.
pub const LOG_RING: &str = "control.log";
/// The broadcast ring of answers.
pub const ACK_RING: &str = "control.acks";
