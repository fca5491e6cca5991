//! [`Control`]: a sender of commands to helixd, and the reader of its
//! answers.

use std::time::{Duration, Instant};

use crate::fanin::{FanInError, Producer, SendError};
use crate::ring::{AttachError, ForeignRing, Owners, ReadError, Reader, ReaderOptions, Start, TryReadError};
use crate::shm::Namespace;
use crate::wait::WaitStrategy;

use super::{Ack, Command, ACK_RING, CONTROL_RING, KIND_COMMAND};

/// Why a command could not be sent or answered.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The `control` fan-in ring cannot be attached (no helixd, or no
    /// permission: its mode and group decide who may send).
    #[error("control ring: {0}")]
    Attach(FanInError),
    /// The `control.acks` ring cannot be attached.
    #[error("control.acks ring: {0}")]
    Acks(AttachError),
    /// `control` or `control.acks` is not helixd's: its owner is not one
    /// believed ([`Owners`]). Whoever made it reads the commands sent and
    /// can answer them in helixd's name. Nothing was sent.
    #[error("not helixd's control path: {0}")]
    Foreign(ForeignRing),
    /// The command could not be put on the lane.
    #[error("sending the command: {0}")]
    Send(SendError),
    /// No answer came before the deadline (the command may still be
    /// applied: send it again with the same request id to learn its fate,
    /// it is never applied twice).
    #[error("no answer to request {request} within {waited:?}")]
    Timeout { request: u64, waited: Duration },
    /// The answers ring overran this reader: answers were lost (they can be
    /// asked for again by sending the same request id).
    #[error("control.acks overran this reader; {lost} answers lost")]
    Lost { lost: u64 },
    /// The answers ring failed otherwise (a peer truncated its reader
    /// table, say) while this waited for the answer to `request`. The
    /// command was sent, and may still be applied: once helixd has
    /// repaired the ring, send it again with the same request id to learn
    /// its fate (it is never applied twice). (Found by review: the error
    /// named no request id, and a retry under a new one applied it twice.)
    #[error(
        "reading control.acks, waiting for the answer to request {request}: {error}; the command was sent and may \
         still be applied: send it again with the same request id once helixd has repaired the ring"
    )]
    Read {
        /// The request waited for.
        request: u64,
        /// What the answers ring said.
        error: ReadError,
    },
}

/// A connection to helixd's control path: a lane of `control` and a reader
/// of `control.acks` (answers to this process's uid).
pub struct Control {
    producer: Producer,
    acks: Reader,
    uid: u32,
    next_request: u64,
}

impl Control {
    /// Takes a lane of the `control` ring of `ns` and joins `control.acks`;
    /// [`Control::send`] waits for answers with the default strategy. Both
    /// rings must be root's, this process's uid's or the packaged services'
    /// user's ([`Owners::packaged`]).
    pub fn connect(ns: &Namespace) -> Result<Control, ControlError> {
        Control::connect_waiting(ns, WaitStrategy::default())
    }

    /// [`Control::connect`], [`Control::send`] waiting for answers with
    /// `wait` (spin: the lowest latency, a core busy meanwhile).
    pub fn connect_waiting(ns: &Namespace, wait: WaitStrategy) -> Result<Control, ControlError> {
        Control::connect_trusting(ns, wait, &Owners::packaged())
    }

    /// [`Control::connect_waiting`], believing rings of `owners` only: for
    /// a helixd run as another user than the packaged one.
    pub fn connect_trusting(ns: &Namespace, wait: WaitStrategy, owners: &Owners) -> Result<Control, ControlError> {
        // Joined first, so no answer to what this sends can be missed.
        let opts = ReaderOptions { name: "helix-control".into(), start: Start::Newest, wait, ..Default::default() };
        // Each judged on the files attached, before a lane is taken: rings
        // made under these names by another user would read the commands
        // and answer "accepted" to what helixd never saw.
        let acks = Reader::attach(ns, ACK_RING, &opts).map_err(ControlError::Acks)?;
        acks.check_owner_in(owners).map_err(ControlError::Foreign)?;
        let producer = match Producer::attach_trusting(ns, CONTROL_RING, Duration::from_secs(1), Some(owners)) {
            Err(FanInError::Foreign(f)) => return Err(ControlError::Foreign(f)),
            r => r.map_err(ControlError::Attach)?,
        };
        let uid = crate::process::my_uid();
        Ok(Control { producer, acks, uid, next_request: first_request() })
    }

    /// A request id not used before by this connection.
    pub fn next_request(&mut self) -> u64 {
        let r = self.next_request;
        self.next_request += 1;
        r
    }

    /// Puts `cmd` on the lane without waiting (the non-blocking form); its
    /// answer comes from [`Control::try_ack`].
    pub fn try_send(&mut self, cmd: &Command) -> Result<(), ControlError> {
        self.producer.try_send(KIND_COMMAND, bytemuck::bytes_of(cmd)).map_err(ControlError::Send)
    }

    /// Sends `cmd` and waits at most `timeout` for its answer. If other
    /// answers overrun this connection's reader meanwhile, it sends `cmd`
    /// again (same request id: the first verdict comes back).
    pub fn send(&mut self, cmd: &Command, timeout: Duration) -> Result<Ack, ControlError> {
        let start = Instant::now();
        self.post(cmd, timeout)?;
        let answer = self.wait_ack(cmd, timeout.saturating_sub(start.elapsed()))?;
        answer.ok_or(ControlError::Timeout { request: cmd.request, waited: start.elapsed() })
    }

    /// Puts `cmd` on the lane, waiting at most `timeout` for room; its
    /// answer comes from [`Control::wait_ack`]. [`Control::send`] in two
    /// steps, for a caller that waits in slices (the Python package looks
    /// for Ctrl-C between them).
    pub fn post(&mut self, cmd: &Command, timeout: Duration) -> Result<(), ControlError> {
        self.producer.send_timeout(KIND_COMMAND, bytemuck::bytes_of(cmd), timeout).map_err(ControlError::Send)
    }

    /// Waits at most `timeout` for the answer to `cmd`, posted before;
    /// `None` if it has not come. If other answers overrun this reader
    /// meanwhile, it sends `cmd` again (same request id).
    pub fn wait_ack(&mut self, cmd: &Command, timeout: Duration) -> Result<Option<Ack>, ControlError> {
        let start = Instant::now();
        loop {
            match self.try_ack(cmd.request) {
                Ok(Some(ack)) => return Ok(Some(ack)),
                Ok(None) => {}
                // Others' answers (a flood of rejected garbage, say) overran
                // this reader, maybe this answer with them: ask again with
                // the same request id, which is answered with the first
                // verdict and never applied twice. A full lane will carry
                // the next ask.
                Err(ControlError::Lost { .. }) => {
                    let _ = self.producer.try_send(KIND_COMMAND, bytemuck::bytes_of(cmd));
                }
                Err(e) => return Err(e),
            }
            let left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Ok(None);
            }
            match self.acks.wait_timeout(left.min(Duration::from_millis(100))) {
                Ok(()) | Err(ReadError::Timeout) => {}
                Err(error) => return Err(ControlError::Read { request: cmd.request, error }),
            }
        }
    }

    /// The answer to `request`, if it has come; answers to others are
    /// passed over.
    pub fn try_ack(&mut self, request: u64) -> Result<Option<Ack>, ControlError> {
        loop {
            match self.acks.try_read_pod::<Ack>() {
                Ok((_, ack)) if ack.uid == self.uid && ack.request == request => return Ok(Some(ack)),
                Ok(_) => {}
                Err(TryReadError::Empty) => return Ok(None),
                Err(TryReadError::Overrun(o)) => return Err(ControlError::Lost { lost: o.lost }),
                // A frame of another kind or size is not an answer.
                Err(TryReadError::Frame(_)) => {}
                Err(e) => return Err(ControlError::Read { request, error: e.into() }),
            }
        }
    }

    /// This process's effective uid: the one helixd sees for its lane.
    pub fn uid(&self) -> u32 {
        self.uid
    }

    /// The lane this connection holds.
    pub fn lane(&self) -> usize {
        self.producer.lane()
    }
}

/// A connection's first request id: random, 63 bits, not 0. Neither an
/// earlier connection of this uid nor one opened beside it counts up
/// through the same ids (which helixd would answer with the other's
/// verdicts, applying nothing). Counted from the clock, two connections
/// opened a moment apart ran into each other's ids after as many commands
/// as nanoseconds lay between them.
fn first_request() -> u64 {
    let mut bytes = [0u8; 8];
    // getrandom(2), not /dev/urandom: it needs no /dev (a chroot, a unit's
    // PrivateDevices), and no descriptor.
    // SAFETY: `bytes` is 8 writable bytes; the kernel writes at most 8.
    let got = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), libc::GRND_NONBLOCK) };
    let n = match got {
        8 => u64::from_le_bytes(bytes),
        // The pool not yet initialised (early boot), or a seccomp filter
        // refusing the call: the clock and the pid.
        _ => crate::process::realtime_ns() ^ (u64::from(crate::process::pid()) << 40),
    };
    (n >> 1).max(1)
}
