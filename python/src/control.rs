//! `helix.Control`: commands to helixd's control path (docs/abi.md §12)
//! and their answers, through the library's `Control` client.

use std::time::Instant;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use helix::control::{Ack, Command, Op, Reason, Verdict, ACK_FORWARDED, ACK_REPEAT};
use helix::fanin::SendError;
use helix::{Owners, WaitStrategy};

use crate::errors::ControlError;
use crate::SIGNAL_CHECK;

/// A connection to helixd's control path: a lane of its `control` ring
/// and a reader of the answers on `control.acks`.
#[pyclass(module = "helix")]
pub struct Control {
    inner: crate::Handle<helix::control::Control>,
    /// This process's uid as helixd sees it.
    #[pyo3(get)]
    uid: u32,
    /// The lane of `control` this connection holds (held, once closed).
    #[pyo3(get)]
    lane: usize,
    /// The request id of the last command `send` began: one interrupted
    /// (Ctrl-C) or timed out is sent again with `request=` it (answered
    /// with its first verdict if helixd took it).
    #[pyo3(get)]
    last_request: Option<u64>,
    /// What `repr` shows: the fan-in ring the lane is of.
    name: String,
    namespace: String,
}

fn parse_op(op: &str) -> PyResult<Op> {
    (1..=u16::MAX).map_while(Op::from_u16).find(|o| o.as_str() == op).ok_or_else(|| {
        let known: Vec<_> = (1..=u16::MAX).map_while(Op::from_u16).map(Op::as_str).collect();
        PyValueError::new_err(format!("unknown op {op:?}: expected one of {}", known.join(", ")))
    })
}

fn ack_dict<'py>(py: Python<'py>, a: &Ack) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    let verdict = match Verdict::from_u16(a.verdict) {
        Some(Verdict::Accepted) => "accepted",
        Some(Verdict::Rejected) => "rejected",
        None => "unknown",
    };
    d.set_item("request", a.request)?;
    d.set_item("verdict", verdict)?;
    d.set_item("reason", Reason::from_u16(a.reason).map(Reason::as_str))?;
    d.set_item("op", Op::from_u16(a.op).map(Op::as_str))?;
    d.set_item("repeat", a.flags & ACK_REPEAT != 0)?;
    d.set_item("forwarded", a.flags & ACK_FORWARDED != 0)?;
    d.set_item("log_seq", a.log_seq)?;
    d.set_item("ring_seq", a.ring_seq)?;
    d.set_item("stream_seq", a.stream_seq)?;
    Ok(d)
}

#[pymethods]
impl Control {
    /// Connects to helixd's control path in `namespace` (waiting up to a
    /// second for a free lane, with the GIL released). Its rings must be
    /// root's, this process's uid's or `service_uid`'s (default: the
    /// packaged user `helix`'s, if the host has it).
    #[new]
    #[pyo3(signature = (namespace=None, service_uid=None))]
    fn new(py: Python<'_>, namespace: Option<&str>, service_uid: Option<u32>) -> PyResult<Control> {
        // A connection's every failure is a ControlError, as the stub says
        // (found by review: a bad namespace was an AttachError).
        let ns = crate::namespace(namespace).map_err(|e| ControlError::new_err(e.value(py).to_string()))?;
        // The user database asked with the GIL released too: through NSS
        // (LDAP, SSSD) it may take seconds (found by review).
        let connect = || {
            let owners = service_uid.map_or_else(Owners::packaged, Owners::with_service);
            helix::control::Control::connect_trusting(&ns, WaitStrategy::default(), &owners)
        };
        let inner = py.detach(connect).map_err(|e| ControlError::new_err(e.to_string()))?;
        let (uid, lane) = (inner.uid(), inner.lane());
        let name = helix::control::CONTROL_RING.to_owned();
        Ok(Control { inner: crate::Handle::new(inner), uid, lane, last_request: None, name, namespace: ns.to_string() })
    }

    /// Sends one command and waits at most `timeout` seconds for its answer
    /// (a dict). Both waits (for room on the lane, for the answer) release
    /// the GIL and look for signals (Ctrl-C) every [`SIGNAL_CHECK`].
    #[pyo3(signature = (op, stream=0, value=0.0, source="", timeout=2.0, request=None))]
    // Each Python keyword argument is a parameter of its own (PyO3 maps
    // them one to one); a struct would not be a Python signature.
    #[allow(clippy::too_many_arguments)]
    fn send<'py>(
        &mut self,
        py: Python<'py>,
        op: &str,
        stream: u32,
        value: f64,
        source: &str,
        timeout: f64,
        request: Option<u64>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let op = parse_op(op)?;
        let timeout = crate::timeout(timeout, "seconds >= 0")?;
        let inner = self.inner.get_mut("the control connection")?;
        let request = request.unwrap_or_else(|| inner.next_request());
        let cmd = Command::new(op, request, source, stream, value);
        // Refused here, as helixctl does, what helixd would reject as
        // malformed (a source name too long was cut to 64 bytes).
        if let Err(reason) = cmd.validate() {
            return Err(PyValueError::new_err(format!(
                "this command would be rejected ({}): nothing was sent",
                reason.as_str()
            )));
        }
        self.last_request = Some(request);
        let failed = |e: helix::control::ControlError| ControlError::new_err(e.to_string());
        let start = Instant::now();
        let slice = || timeout.saturating_sub(start.elapsed()).min(SIGNAL_CHECK);
        loop {
            match py.detach(|| inner.post(&cmd, slice())) {
                Ok(()) => break,
                Err(helix::control::ControlError::Send(SendError::Timeout { .. })) if !slice().is_zero() => {
                    py.check_signals()?
                }
                Err(e) => return Err(failed(e)),
            }
        }
        loop {
            if let Some(ack) = py.detach(|| inner.wait_ack(&cmd, slice())).map_err(failed)? {
                return ack_dict(py, &ack);
            }
            py.check_signals()?;
            if slice().is_zero() {
                return Err(failed(helix::control::ControlError::Timeout { request, waited: start.elapsed() }));
            }
        }
    }
}

crate::handle_methods!(Control, "Gives the lane back (and leaves `control.acks`); later calls raise RuntimeError.");
