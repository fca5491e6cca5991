//! The datagram helixd sends to a UDP source's instrument for a command
//! addressed to that source (`docs/abi.md` §12.7): sent once the command's
//! audit record is recorded, never for a rejected command or a repeat.

use bytemuck::{Pod, Zeroable};

use crate::layout::assert_layout;

use super::command::{Op, Valid};

/// The datagram's first four bytes, `"HXC1"`.
pub const FORWARD_MAGIC: [u8; 4] = *b"HXC1";

/// Version of the forwarded-command datagram, in [`Forward::version`].
pub const FORWARD_VERSION: u16 = 1;

/// A command forwarded to an instrument: one UDP datagram of exactly 40
/// bytes, little-endian (`docs/abi.md` §12.7).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct Forward {
    /// [`FORWARD_MAGIC`].
    pub magic: [u8; 4],
    /// [`FORWARD_VERSION`].
    pub version: u16,
    /// The command's [`Op`] as a number.
    pub op: u16,
    /// The stream (`set`, `release`); 0 otherwise.
    pub stream: u32,
    /// The sender's uid, from the kernel (with `request`, the command's
    /// identity: helixd forwards each (uid, request) at most once).
    pub uid: u32,
    /// The sender's request id.
    pub request: u64,
    /// The sequence of the command's audit record on `control.log`: the
    /// ledger record an auditor finds it by.
    pub log_seq: u64,
    /// The setpoint (`set`) or the rate in Hz (`rate`); 0 otherwise.
    pub value: f64,
}

assert_layout!(Forward, 40;
    magic @ 0, version @ 4, op @ 6, stream @ 8, uid @ 12, request @ 16, log_seq @ 24, value @ 32);

/// Why bytes are not a [`Forward`] datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ForwardError {
    /// Not exactly 40 bytes.
    #[error("a forwarded command is 40 bytes, not {0}")]
    BadSize(usize),
    /// The first four bytes are not `HXC1`.
    #[error("the magic is not HXC1")]
    BadMagic,
    /// `version` is not [`FORWARD_VERSION`].
    #[error("version {0} is not {FORWARD_VERSION}")]
    BadVersion(u16),
    /// `op` is no known op.
    #[error("op {0} is no known op")]
    UnknownOp(u16),
}

impl Forward {
    /// The datagram of command `v` from `uid`, audited at `log_seq`.
    pub fn new(uid: u32, log_seq: u64, v: &Valid) -> Forward {
        Forward {
            magic: FORWARD_MAGIC,
            version: FORWARD_VERSION,
            op: v.op as u16,
            stream: v.stream,
            uid,
            request: v.request,
            log_seq,
            value: v.value,
        }
    }

    /// The datagram's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        bytemuck::bytes_of(self)
    }

    /// Reads a datagram as an instrument would: the length, magic, version
    /// and op are checked.
    pub fn parse(bytes: &[u8]) -> Result<Forward, ForwardError> {
        let f: Forward = bytemuck::try_pod_read_unaligned(bytes).map_err(|_| ForwardError::BadSize(bytes.len()))?;
        if f.magic != FORWARD_MAGIC {
            return Err(ForwardError::BadMagic);
        }
        if f.version != FORWARD_VERSION {
            return Err(ForwardError::BadVersion(f.version));
        }
        Op::from_u16(f.op).ok_or(ForwardError::UnknownOp(f.op))?;
        Ok(f)
    }

    /// The op.
    pub fn op(&self) -> Option<Op> {
        Op::from_u16(self.op)
    }
}
