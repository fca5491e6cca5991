//! `helixctl control-log`: helixd's audit trail of commands (`control.log`,
//! `docs/abi.md` §12.3): who sent what, from which lane, and the verdict.

use std::io::{self, Write};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::json;
use helix::control::{LogRecord, Op, Reason, KIND_COMMAND, KIND_LOG, LOG_REPEAT, LOG_RING};
use helix::shm::Namespace;
use helix::{Owners, ReadError, Reader, ReaderOptions, RingView, Start, WaitStrategy};

/// Arguments of `helixctl control-log`.
#[derive(clap::Args)]
pub struct Args {
    /// Records to print (default 20; with --follow, unlimited).
    #[arg(long, short = 'n')]
    count: Option<u64>,
    /// Keep printing new records until interrupted.
    #[arg(long, short = 'f')]
    follow: bool,
}

/// One audit record, for `--json` (one object per line).
#[derive(Serialize)]
struct Line {
    seq: u64,
    time_ns: u64,
    uid: u32,
    pid: u32,
    lane: u32,
    lane_seq: u64,
    accepted: bool,
    reason: Option<&'static str>,
    repeat: bool,
    /// The command, if the record held a well-formed one's op.
    op: Option<&'static str>,
    request: u64,
    source: String,
    stream: u32,
    value: f64,
    /// Payload bytes sent, and the record's fan-in kind.
    len: u32,
    kind: u32,
}

fn line(seq: u64, r: &LogRecord) -> Line {
    let c = r.command();
    let outcome = r.outcome();
    let is_command = r.kind == KIND_COMMAND && r.len as usize == std::mem::size_of_val(&c);
    Line {
        seq,
        time_ns: r.time_ns,
        uid: r.uid,
        pid: r.pid,
        lane: r.lane,
        lane_seq: r.lane_seq,
        accepted: outcome == Some(Ok(())),
        reason: match outcome {
            Some(Err(reason)) => Some(Reason::as_str(reason)),
            Some(Ok(())) => None,
            None => Some("unknown"),
        },
        repeat: r.flags & LOG_REPEAT != 0,
        op: Op::from_u16(c.op).filter(|_| is_command).map(Op::as_str),
        request: if is_command { c.request } else { 0 },
        source: if is_command { crate::format::printable(&c.source_name()).into_owned() } else { String::new() },
        stream: if is_command { c.stream } else { 0 },
        value: if is_command { c.value } else { 0.0 },
        len: r.len,
        kind: r.kind,
    }
}

fn text(l: &Line) -> String {
    let verdict = match l.reason {
        None => "accepted".to_owned(),
        Some(r) => format!("rejected ({r})"),
    };
    let again = if l.repeat { " repeat" } else { "" };
    let what = match l.op {
        Some(op) => format!("{op} source={:?} stream={} value={} request={}", l.source, l.stream, l.value, l.request),
        None => format!("{} bytes of kind {:#x}", l.len, l.kind),
    };
    format!("{} uid={} pid={} lane={} {what}: {verdict}{again}", l.seq, l.uid, l.pid, l.lane)
}

/// Prints the last `--count` audit records; with `--follow`, new ones as
/// they come. Reads only a `control.log` one of `owners` owns: anyone else's
/// holds whatever uids, pids and verdicts its maker wrote.
pub fn run(ns: &Namespace, args: &Args, owners: &Owners, json: bool) -> Result<()> {
    let count = args.count.unwrap_or(20);
    let view = RingView::attach(ns, LOG_RING).context("control.log")?;
    view.check_owner_in(owners).context("control.log is not helixd's")?;
    let start = Start::At((view.stats().published + 1).saturating_sub(count).max(1));
    let opts = ReaderOptions { name: "helixctl-control-log".into(), gating: false, start, wait: WaitStrategy::Park };
    let mut reader = view.reader(&opts)?;
    let mut out = io::stdout().lock();
    let mut follows = super::tail::Follow::new(ns, LOG_RING, opts).believing(*owners);
    loop {
        while let Some((seq, r)) = next(&mut reader, &mut out)? {
            let l = line(seq, &r);
            if json {
                json::line(&l, &mut out)?;
            } else {
                writeln!(out, "{}", text(&l))?;
            }
        }
        if !args.follow {
            return Ok(());
        }
        match reader.wait_timeout(Duration::from_millis(500)) {
            Ok(()) => {}
            Err(ReadError::Timeout) => {
                if let Some(new) = follows.replaced(&reader) {
                    reader = new;
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The next audit record, or `None` when caught up; overruns are noted.
fn next(reader: &mut Reader, out: &mut dyn Write) -> Result<Option<(u64, LogRecord)>> {
    loop {
        let frame = match reader.try_peek() {
            Ok(f) => f,
            Err(helix::TryReadError::Empty) => return Ok(None),
            Err(helix::TryReadError::Overrun(o)) => {
                writeln!(out, "-- {} records lost, resuming at {}", o.lost, o.resume_at)?;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if frame.info().kind == KIND_LOG {
            if let Ok(r) = frame.read::<LogRecord>() {
                return Ok(Some((frame.info().seq, r)));
            }
        }
    }
}
