//! `helixctl tail`: print a ring's frames as a non-gating reader, like
//! `tail -f`: telemetry samples decoded, anything else as hex.

use std::io::{self, Write};
use std::time::Duration;

use serde::Serialize;

use helix::shm::Namespace;
use helix::telemetry::{Sample, KIND_SAMPLE};
use helix::{FrameRef, ReadError, Reader, ReaderOptions, Start, WaitStrategy};

/// Where tail starts.
#[derive(Debug, Clone, Copy)]
pub enum From {
    /// The last `n` frames in the ring.
    Last(u64),
    /// At this sequence.
    Seq(u64),
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

/// Prints frames of `ring` from `from`: at most `count` frames, and with
/// `follow`, waits for new ones (until `count`, if given) instead of
/// stopping when caught up.
pub fn run(
    ns: &Namespace,
    ring: &str,
    from: From,
    count: Option<u64>,
    follow: bool,
    json: bool,
    out: &mut dyn Write,
) -> io::Result<()> {
    let view = helix::RingView::attach(ns, ring).map_err(io::Error::other)?;
    let published = view.stats().published;
    let start = match from {
        From::Last(n) => Start::At((published + 1).saturating_sub(n).max(1)),
        From::Seq(s) => Start::At(s),
    };
    let opts = ReaderOptions { name: "helixctl-tail".into(), gating: false, start, wait: WaitStrategy::Park };
    let mut r = Reader::attach(ns, ring, &opts).map_err(io::Error::other)?;
    let mut printed = 0u64;
    let emit = |l: &Line, out: &mut dyn Write| -> io::Result<()> {
        if json {
            writeln!(out, "{}", serde_json::to_string(l).map_err(io::Error::other)?)
        } else {
            writeln!(out, "{}", text(l))
        }
    };
    loop {
        if count.is_some_and(|c| printed >= c) {
            return Ok(());
        }
        let frame =
            if follow { r.peek_timeout(Duration::from_millis(500)) } else { r.try_peek().map_err(ReadError::from) };
        match frame {
            Ok(f) => {
                if let Some(l) = line_of(&f) {
                    emit(&l, out)?;
                    printed += 1;
                }
            }
            Err(ReadError::Timeout) if follow => {}
            Err(ReadError::Timeout) => return Ok(()),
            Err(ReadError::Overrun(o)) => emit(&Line::Overrun { lost: o.lost, resume_at: o.resume_at }, out)?,
            Err(e) => return Err(io::Error::other(e)),
        }
    }
}
