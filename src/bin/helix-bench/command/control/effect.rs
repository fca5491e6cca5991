//! Command to effect with the telemetry flowing: a `set` sent without
//! waiting, then this process reads `telemetry` (a non-gating reader) and
//! polls `control.acks` until it has the answer, the frame the answer
//! names as the first written under the command (`ring_seq`), and the
//! stream's first sample under it (`stream_seq`).

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use helix::control::{Ack, Command, Control};
use helix::shm::Namespace;
use helix::telemetry::Sample;
use helix::{Reader, ReaderOptions, Start, TryReadError, WaitStrategy};

use crate::stats::{fmt_ns, histogram, Summary};

/// How long one command may take to show its effect before the run fails.
const PATIENCE: Duration = Duration::from_secs(10);

/// Command to effect, over the commands sent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Effect {
    /// Commands measured.
    pub commands: u64,
    /// Commands left out because this reader was overrun meanwhile (the
    /// frames it needed were lost to it).
    pub skipped: u64,
    /// Send to the `ingest_ns` of the first frame written under the
    /// command: helixd wrote it, the command is in effect. The target's
    /// figure.
    pub applied: Summary,
    /// Send to this process having the answer.
    pub answered: Summary,
    /// Send to this reader receiving the stream's first sample that
    /// reflects the setpoint (it waits for the stream's next sample: up to
    /// one sampling period, 1 / rate).
    pub steered: Summary,
    /// How this reader waited for telemetry.
    pub wait: String,
}

impl Effect {
    /// Prints the figures.
    pub fn print(&self) {
        let row = |name: &str, s: &Summary| {
            println!(
                "command to effect, send to {name}: p50 {} p99 {} p99.9 {} max {}",
                fmt_ns(s.p50),
                fmt_ns(s.p99),
                fmt_ns(s.p999),
                fmt_ns(s.max)
            )
        };
        row("the first frame under it (applied)", &self.applied);
        row("its answer", &self.answered);
        row("the stream's first steered sample read", &self.steered);
        println!("({} commands, {} skipped: this reader overrun)", self.commands, self.skipped);
    }
}

/// A frame this reader had: its ring sequence, sample and when it had it.
#[derive(Clone, Copy)]
struct Had {
    seq: u64,
    sample: Sample,
    at_ns: u64,
}

/// One command's times after its send, ns.
struct Times {
    applied: u64,
    answered: u64,
    steered: u64,
}

/// Sends `commands` setpoints one after the other and times each one's
/// effect; `wait` is how the telemetry reader waits.
pub fn measure(ns: &Namespace, mut tx: super::Sender<'_>, commands: u64, wait: WaitStrategy) -> Result<Effect> {
    let opts = ReaderOptions { name: "helix-bench".into(), start: Start::Newest, wait, ..Default::default() };
    let mut telemetry = Reader::attach(ns, super::e2e::TELEMETRY, &opts).context("attaching to telemetry")?;
    let (mut applied, mut answered, mut steered) = (histogram(), histogram(), histogram());
    let mut had = Vec::with_capacity(1 << 16);
    let mut skipped = 0;
    for i in 0..commands {
        let cmd = tx.command(i)?;
        match one(&mut tx.ctl, &mut telemetry, &cmd, &mut had)? {
            Some(t) => {
                applied.record(t.applied.max(1))?;
                answered.record(t.answered.max(1))?;
                steered.record(t.steered.max(1))?;
            }
            None => skipped += 1,
        }
    }
    if applied.is_empty() {
        bail!("every command's effect was lost to overruns of this reader");
    }
    Ok(Effect {
        commands: applied.len(),
        skipped,
        applied: Summary::of(&applied),
        answered: Summary::of(&answered),
        steered: Summary::of(&steered),
        wait: super::wait_name(wait).into(),
    })
}

/// One command: its times, or `None` if this reader was overrun before it
/// had what it needed.
fn one(ctl: &mut Control, telemetry: &mut Reader, cmd: &Command, had: &mut Vec<Had>) -> Result<Option<Times>> {
    catch_up(telemetry)?;
    had.clear();
    let sent = helix::process::now_ns();
    let deadline = Instant::now() + PATIENCE;
    ctl.try_send(cmd)?;
    let (mut ack, mut found) = (None, Found::default());
    loop {
        if ack.is_none() {
            if let Some(a) = ctl.try_ack(cmd.request)? {
                if a.outcome() != Some(Ok(())) {
                    bail!("request {} was not accepted: {:?}", cmd.request, a.outcome());
                }
                // The frames read before the answer, looked at once.
                had.iter().for_each(|h| found.note(&a, cmd.stream, h));
                ack = Some((a, helix::process::now_ns()));
            }
        }
        if let (Some((_, at)), Some(first), Some(steered)) = (ack, found.first, found.steered) {
            let since = |t: u64| t.saturating_sub(sent);
            return Ok(Some(Times { applied: since(first), answered: since(at), steered: since(steered) }));
        }
        if Instant::now() > deadline {
            bail!("request {}: no answer and effect within {PATIENCE:?}", cmd.request);
        }
        match telemetry.try_read_pod::<Sample>() {
            Ok((seq, sample)) => {
                let h = Had { seq, sample, at_ns: helix::process::now_ns() };
                match &ack {
                    Some((a, _)) => found.note(a, cmd.stream, &h),
                    None => had.push(h),
                }
            }
            Err(TryReadError::Empty) => {
                let _ = telemetry.wait_timeout(Duration::from_micros(200));
            }
            Err(TryReadError::Overrun(_)) => return Ok(None),
            Err(TryReadError::Frame(_)) => {}
            Err(e) => bail!("reading telemetry: {e}"),
        }
    }
}

/// What a command's answer names, once this reader has had it.
#[derive(Default)]
struct Found {
    /// `ingest_ns` of the frame at the answer's `ring_seq`.
    first: Option<u64>,
    /// When this reader had the stream's sample at `stream_seq`.
    steered: Option<u64>,
}

impl Found {
    fn note(&mut self, a: &Ack, stream: u32, h: &Had) {
        if h.seq == a.ring_seq {
            self.first = Some(h.sample.ingest_ns);
        }
        if h.sample.stream == stream && h.sample.seq == a.stream_seq {
            self.steered = Some(h.at_ns);
        }
    }
}

/// Reads what is already published, so a command's frames are read as
/// they come.
fn catch_up(telemetry: &mut Reader) -> Result<()> {
    loop {
        match telemetry.try_read_pod::<Sample>() {
            Ok(_) | Err(TryReadError::Overrun(_) | TryReadError::Frame(_)) => {}
            Err(TryReadError::Empty) => return Ok(()),
            Err(e) => bail!("reading telemetry: {e}"),
        }
    }
}
