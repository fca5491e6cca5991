//! `helixctl tail`: print a ring's frames as a non-gating reader, like
//! `tail -f`: telemetry samples decoded, anything else as hex.

use std::io::{self, Write};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::json;
use helix::shm::Namespace;
use helix::telemetry::{Sample, KIND_SAMPLE};
use helix::{FrameRef, ReadError, Reader, ReaderOptions, RingView, Start, WaitStrategy};

/// Arguments of `helixctl tail`.
#[derive(clap::Args)]
pub struct Args {
    ring: String,
    /// Frames to print (default 10; with --follow, unlimited).
    #[arg(long, short = 'n')]
    count: Option<u64>,
    /// Start at this sequence instead of the last --count frames.
    #[arg(long)]
    from: Option<u64>,
    /// Keep printing new frames until interrupted.
    #[arg(long, short = 'f')]
    follow: bool,
}

/// One printed frame, for `--json` (one object per line).
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Line {
    /// A telemetry sample.
    Sample {
        /// Ring sequence.
        seq: u64,
        /// The sample's fields.
        stream: u32,
        /// Quality flags.
        quality: u32,
        /// Per-stream sequence.
        stream_seq: u64,
        /// Sample time, ns.
        sample_ns: u64,
        /// Ingest time, ns.
        ingest_ns: u64,
        /// Value.
        value: f64,
    },
    /// Any other frame.
    Frame {
        /// Ring sequence.
        seq: u64,
        /// Frame kind.
        kind: u32,
        /// Payload length.
        len: usize,
        /// Payload as lowercase hex.
        hex: String,
    },
    /// Frames lost before the next one printed.
    Overrun {
        /// How many.
        lost: u64,
        /// Where reading resumed.
        resume_at: u64,
    },
}

fn line_of(f: &FrameRef<'_>) -> Option<Line> {
    if f.kind() == KIND_SAMPLE && f.len() == std::mem::size_of::<Sample>() {
        let s = f.read::<Sample>().ok()?;
        return Some(Line::Sample {
            seq: f.seq(),
            stream: s.stream,
            quality: s.quality,
            stream_seq: s.seq,
            sample_ns: s.sample_ns,
            ingest_ns: s.ingest_ns,
            value: s.value,
        });
    }
    let mut buf = vec![0u8; f.len()];
    f.copy_to(&mut buf).ok()?;
    let hex = buf.iter().map(|b| format!("{b:02x}")).collect();
    Some(Line::Frame { seq: f.seq(), kind: f.kind(), len: f.len(), hex })
}

fn text(l: &Line) -> String {
    match l {
        Line::Sample { seq, stream, quality, stream_seq, sample_ns, ingest_ns, value } => {
            format!("{seq} stream={stream} seq={stream_seq} value={value} quality={quality:#x} sample_ns={sample_ns} ingest_ns={ingest_ns}")
        }
        Line::Frame { seq, kind, len, hex } => format!("{seq} kind={kind} len={len} {hex}"),
        Line::Overrun { lost, resume_at } => format!("-- overrun: {lost} frames lost, resuming at {resume_at}"),
    }
}

/// Prints frames of the ring from `--from` (else the last `--count`): at
/// most `--count` frames, and with `--follow`, waits for new ones (until
/// the count, if given) instead of stopping when caught up.
pub fn run(ns: &Namespace, args: &Args, json: bool) -> Result<()> {
    let count = args.count.or(if args.follow { None } else { Some(10) });
    let start = match args.from {
        Some(seq) => Start::At(seq),
        None => {
            let published = RingView::attach(ns, &args.ring)?.stats().published;
            Start::At((published + 1).saturating_sub(count.unwrap_or(10)).max(1))
        }
    };
    let opts = ReaderOptions { name: "helixctl-tail".into(), gating: false, start, wait: WaitStrategy::Park };
    let mut reader = Reader::attach(ns, &args.ring, &opts)?;
    let mut out = io::stdout().lock();
    let printed = print(&mut reader, count, args.follow, json, &mut out);
    out.flush().ok();
    printed.with_context(|| format!("tail {}", args.ring))
}

/// Prints `reader`'s frames to `out`, as `run` says.
fn print(reader: &mut Reader, count: Option<u64>, follow: bool, json: bool, out: &mut dyn Write) -> Result<()> {
    let emit = |l: &Line, out: &mut dyn Write| -> Result<()> {
        if json {
            json::line(l, out)?;
        } else {
            writeln!(out, "{}", text(l))?;
        }
        Ok(())
    };
    let mut printed = 0u64;
    while count.is_none_or(|c| printed < c) {
        let frame = if follow {
            reader.peek_timeout(Duration::from_millis(500))
        } else {
            reader.try_peek().map_err(ReadError::from)
        };
        match frame {
            Ok(f) => {
                if let Some(l) = line_of(&f) {
                    emit(&l, out)?;
                    printed += 1;
                }
            }
            Err(ReadError::Timeout) if follow => {}
            Err(ReadError::Timeout) => break,
            Err(ReadError::Overrun(o)) => emit(&Line::Overrun { lost: o.lost, resume_at: o.resume_at }, out)?,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
