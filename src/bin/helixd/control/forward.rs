//! Commands for a UDP source go to its instrument (`docs/abi.md` §12.7):
//! once the command's audit record is recorded, the control thread sends
//! one datagram to the source's `instrument` address and answers at once.
//! Accepted means sent (the kernel took the datagram), not confirmed: the
//! instrument's effect arrives as telemetry, if at all. A send that fails
//! is a rejection, `send_failed`, logged with the address and the error.
//! The journal says a command is being sent before it is: a helixd killed
//! before its answer answers it `send_failed` at the next start rather
//! than send it again (`recover.rs`), and a command the journal cannot
//! say this of (the disk is full) is not sent: `send_failed` too.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;

use super::flow::ack0;
use super::{Flow, Pending};
use helix::control::{wire, Ack, Forward, Reason, ACK_FORWARDED};

/// The sockets commands leave from: one per address family, bound to an
/// ephemeral port when first needed, non-blocking (the control thread
/// never waits on an instrument: a full send buffer is a failed send).
#[derive(Debug, Default)]
pub struct Forwarder {
    v4: Option<UdpSocket>,
    v6: Option<UdpSocket>,
}

impl Forwarder {
    /// Sends `bytes` to `to` as one datagram.
    pub fn send(&mut self, to: SocketAddr, bytes: &[u8]) -> io::Result<()> {
        let (slot, any) = match to {
            SocketAddr::V4(_) => (&mut self.v4, "0.0.0.0:0"),
            SocketAddr::V6(_) => (&mut self.v6, "[::]:0"),
        };
        let socket = match slot {
            Some(s) => s,
            None => {
                let s = UdpSocket::bind(any.parse::<SocketAddr>().expect("a socket address"))?;
                s.set_nonblocking(true)?;
                slot.insert(s)
            }
        };
        let sent = socket.send_to(bytes, to)?;
        if sent != bytes.len() {
            return Err(io::Error::other(format!("sent {sent} of {} bytes", bytes.len())));
        }
        Ok(())
    }
}

impl Flow {
    /// Sends an audited command `p` to the instrument at `to`, and answers:
    /// accepted and flagged forwarded, or rejected `send_failed`.
    pub(super) fn forward(&mut self, p: &Pending, to: SocketAddr) {
        let c = &p.command;
        let datagram = Forward::new(p.uid, p.log_seq, c);
        let mut ack = Ack { uid: p.uid, request: c.request, op: c.op as u16, log_seq: p.log_seq, ..ack0() };
        let what = format!("uid {} request {}: {} {}", p.uid, c.request, c.op.as_str(), c.source);
        // At most once: a helixd killed from here to the answer's journal
        // line does not send it again (`recover.rs`); so a command the
        // journal cannot say this of is not sent at all.
        let intent = self.journal.sending(p.uid, c.request, p.log_seq);
        let unjournaled = intent.is_err();
        self.journaled(intent);
        let sent = if unjournaled {
            Err(io::Error::other("the control journal cannot be written, and a command is sent only once it says so"))
        } else {
            self.forwarder.send(to, datagram.as_bytes())
        };
        match sent {
            Ok(()) => {
                (ack.verdict, ack.reason) = wire(Ok(()));
                ack.flags = ACK_FORWARDED;
                self.stats.applied.fetch_add(1, Ordering::Relaxed);
                self.said[0].one(format!("control: {what}: forwarded to the instrument at {to}"));
            }
            Err(e) => {
                (ack.verdict, ack.reason) = wire(Err(Reason::SendFailed));
                self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                self.said[2].one(format!(
                    "control: {what}: rejected (send_failed): cannot send to the instrument at {to}: {e}"
                ));
            }
        }
        self.answer_first(ack, None);
    }
}
