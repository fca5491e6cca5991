//! `helixctl set | release | pause | resume | rate`: one command to helixd
//! through its `control` fan-in ring, and its answer from `control.acks`
//! (`docs/abi.md` §12). Exits non-zero if it is rejected or unanswered.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::json;
use helix::control::{Ack, Command, Control, Op, ACK_FORWARDED, ACK_REPEAT};
use helix::shm::Namespace;
use helix::{Owners, WaitStrategy};

/// How long to wait for an answer, in seconds (a command waits for the
/// ledger to record it before it takes effect).
#[derive(clap::Args)]
pub struct Common {
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// The request id (default: a new one). Sending one again gets the
    /// first answer; the command is never applied twice.
    #[arg(long)]
    request: Option<u64>,
}

/// Arguments of `helixctl set` and `release`.
#[derive(clap::Args)]
pub struct StreamArgs {
    /// The stream id.
    stream: u32,
    /// The setpoint (`set` only).
    #[arg(required = false, allow_negative_numbers = true)]
    value: Option<f64>,
    /// The source, by the ring it writes (default: telemetry).
    #[arg(long, default_value = "")]
    source: String,
    #[command(flatten)]
    common: Common,
}

/// Arguments of `helixctl pause` and `resume`.
#[derive(clap::Args)]
pub struct SourceArgs {
    /// The source, by the ring it writes.
    source: String,
    #[command(flatten)]
    common: Common,
}

/// Arguments of `helixctl rate`.
#[derive(clap::Args)]
pub struct RateArgs {
    /// The source, by the ring it writes.
    source: String,
    /// Samples per second per stream.
    hz: f64,
    #[command(flatten)]
    common: Common,
}

/// The answer, for `--json`.
#[derive(Serialize)]
struct Answer {
    request: u64,
    op: &'static str,
    accepted: bool,
    reason: Option<&'static str>,
    repeat: bool,
    /// Accepted by forwarding it to a UDP source's instrument (sent, not
    /// confirmed).
    forwarded: bool,
    log_seq: u64,
    ring_seq: u64,
    stream_seq: u64,
}

/// `set STREAM VALUE` (or `release STREAM` with `op` Release).
pub fn stream(ns: &Namespace, owners: &Owners, op: Op, a: &StreamArgs, json: bool) -> Result<ExitCode> {
    let value = match (op, a.value) {
        (Op::Set, Some(v)) => v,
        (Op::Set, None) => anyhow::bail!("set needs a VALUE"),
        (_, Some(_)) => anyhow::bail!("{} takes no VALUE", op.as_str()),
        (_, None) => 0.0,
    };
    send(ns, owners, &a.common, json, |r| Command::new(op, r, &a.source, a.stream, value))
}

/// `pause SOURCE`, `resume SOURCE`.
pub fn source(ns: &Namespace, owners: &Owners, op: Op, a: &SourceArgs, json: bool) -> Result<ExitCode> {
    send(ns, owners, &a.common, json, |r| Command::new(op, r, &a.source, 0, 0.0))
}

/// `rate SOURCE HZ`.
pub fn rate(ns: &Namespace, owners: &Owners, a: &RateArgs, json: bool) -> Result<ExitCode> {
    send(ns, owners, &a.common, json, |r| Command::new(Op::Rate, r, &a.source, 0, a.hz))
}

fn send(
    ns: &Namespace,
    owners: &Owners,
    c: &Common,
    json: bool,
    make: impl FnOnce(u64) -> Command,
) -> Result<ExitCode> {
    let mut ctl =
        Control::connect_trusting(ns, WaitStrategy::default(), owners).context("cannot reach helixd's control ring")?;
    let request = c.request.unwrap_or_else(|| ctl.next_request());
    let cmd = make(request);
    // Refuse here what helixd would reject as malformed.
    if let Err(reason) = cmd.validate() {
        anyhow::bail!("this command would be rejected: {reason}");
    }
    let timeout = Duration::try_from_secs_f64(c.timeout).context("--timeout")?;
    let ack = ctl.send(&cmd, timeout)?;
    print(&ack, json)
}

fn print(ack: &Ack, json: bool) -> Result<ExitCode> {
    let outcome = ack.outcome();
    let reason = match outcome {
        Some(Err(r)) => Some(r.as_str()),
        Some(Ok(())) => None,
        None => Some("unknown"),
    };
    let a = Answer {
        request: ack.request,
        op: ack.op().map_or("?", Op::as_str),
        accepted: outcome == Some(Ok(())),
        reason,
        repeat: ack.flags & ACK_REPEAT != 0,
        forwarded: ack.flags & ACK_FORWARDED != 0,
        log_seq: ack.log_seq,
        ring_seq: ack.ring_seq,
        stream_seq: ack.stream_seq,
    };
    let again = if a.repeat { " (answered before: not applied again)" } else { "" };
    if json {
        json::print(&a)?;
    } else if a.accepted && a.forwarded {
        println!(
            "request {}: {} forwarded to the instrument{again} (sent, not confirmed: its effect arrives as \
             telemetry); audit record {}",
            a.request, a.op, a.log_seq
        );
    } else if a.accepted {
        let stream = if a.stream_seq > 0 { format!(", the stream's sample {}", a.stream_seq) } else { String::new() };
        println!(
            "request {}: {} accepted{again}; in effect from ring sequence {}{stream}; audit record {}",
            a.request, a.op, a.ring_seq, a.log_seq
        );
    } else {
        println!("request {}: {} rejected: {}; audit record {}", a.request, a.op, reason.unwrap_or("?"), a.log_seq);
    }
    Ok(if a.accepted { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
