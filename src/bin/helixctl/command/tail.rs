//! `helixctl tail`: print a ring's frames as a non-gating reader, like
//! `tail -f`: telemetry samples decoded, anything else as hex.

use std::io::{self, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::json;
use helix::ledger::catchup::{CatchUpError, CatchUpReader, DEFAULT_LEDGER_DIR};
use helix::shm::Namespace;
use helix::telemetry::{Sample, KIND_SAMPLE};
use helix::{FrameInfo, Owners, ReadError, Reader, ReaderOptions, RingView, Start, UnderName, WaitStrategy};

/// Arguments of `helixctl tail`.
#[derive(clap::Args)]
pub struct Args {
    ring: String,
    /// Frames to print (default 10; with --follow, unlimited).
    #[arg(long, short = 'n')]
    count: Option<u64>,
    /// Start at this sequence instead of the last --count frames; if the
    /// ring no longer holds it, catch up from the ledger (--ledger), then
    /// read the ring live, with no gap and no duplicate at the join.
    #[arg(long)]
    from: Option<u64>,
    /// The ledger folder a --from start catches up from.
    #[arg(long, default_value = DEFAULT_LEDGER_DIR, requires = "from")]
    ledger: PathBuf,
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

fn line_of(f: FrameInfo, bytes: &[u8]) -> Line {
    if f.kind == KIND_SAMPLE && bytes.len() == std::mem::size_of::<Sample>() {
        let s: Sample = bytemuck::pod_read_unaligned(bytes);
        return Line::Sample {
            seq: f.seq,
            stream: s.stream,
            quality: s.quality,
            stream_seq: s.seq,
            sample_ns: s.sample_ns,
            ingest_ns: s.ingest_ns,
            value: s.value,
        };
    }
    let hex = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Line::Frame { seq: f.seq, kind: f.kind, len: bytes.len(), hex }
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
    let opts =
        ReaderOptions { name: "helixctl-tail".into(), gating: false, wait: WaitStrategy::Park, ..Default::default() };
    if let Some(from) = args.from {
        match CatchUpReader::open(ns, &args.ring, &args.ledger, from, &opts) {
            Ok(mut reader) => {
                let mut out = io::stdout().lock();
                let printed = print_catch_up(&mut reader, count, args.follow, json, &mut out);
                out.flush().ok();
                return printed.with_context(|| format!("tail {}", args.ring));
            }
            // No ledger to catch up from: the ring alone, its loss reported.
            Err(CatchUpError::NoLedger { dir }) => eprintln!(
                "helixctl tail: no ledger in {}; reading ring {} from {from}: what it no longer holds prints as an overrun",
                dir.display(),
                args.ring
            ),
            Err(e) => {
                return Err(e).with_context(|| format!("tail {} --from {from} (ledger {})", args.ring, args.ledger.display()))
            }
        }
    }
    let start = match args.from {
        Some(seq) => Start::At(seq),
        None => {
            let published = RingView::attach(ns, &args.ring)?.stats().published;
            Start::At(published.saturating_add(1).saturating_sub(count.unwrap_or(10)).max(1))
        }
    };
    let opts = ReaderOptions { start, ..opts };
    let mut reader = Reader::attach(ns, &args.ring, &opts)?;
    let mut out = io::stdout().lock();
    let mut follows = Follow::new(ns, &args.ring, opts);
    let printed = print(&mut reader, count, args.follow.then_some(&mut follows), json, &mut out);
    out.flush().ok();
    printed.with_context(|| format!("tail {}", args.ring))
}

/// Writes one line, as JSON or text.
fn emit(l: &Line, json: bool, out: &mut dyn Write) -> Result<()> {
    if json {
        json::line(l, out)?;
    } else {
        writeln!(out, "{}", text(l))?;
    }
    Ok(())
}

/// Follows ring `ring` by its name: the ring under it now, if it is no
/// longer the one a reader reads (removed and created again: helixd's
/// `recreate`, an operator's `rm` and a new start). Without it,
/// `tail -f` and `control-log -f` waited on the removed ring for good,
/// printing nothing, as if nothing flowed.
pub struct Follow<'a> {
    ns: &'a Namespace,
    ring: &'a str,
    opts: ReaderOptions,
    said_gone: bool,
    /// The new ring (its `created_ns`) said to be followed and not joined
    /// yet (its reader table full, say): said once, tried again quietly.
    said_new: Option<u64>,
    /// Whose new ring is followed (`None`: anyone's).
    owners: Option<Owners>,
}

impl<'a> Follow<'a> {
    /// `opts`: how a reader of the new ring joins (it starts at its oldest
    /// frame).
    pub fn new(ns: &'a Namespace, ring: &'a str, opts: ReaderOptions) -> Follow<'a> {
        let opts = ReaderOptions { start: Start::Oldest, ..opts };
        Follow { ns, ring, opts, said_gone: false, said_new: None, owners: None }
    }

    /// Follows only a new ring that one of `owners` owns (another's is
    /// said once, and not read).
    pub fn believing(self, owners: Owners) -> Follow<'a> {
        Follow { owners: Some(owners), ..self }
    }

    /// After a wait with nothing read: a reader of the ring under the name,
    /// if that is another ring than `reader`'s (said on stderr); a name
    /// with no ring is said once, and waited on.
    pub fn replaced(&mut self, reader: &Reader) -> Option<Reader> {
        match RingView::under_name(self.ns, self.ring, reader.geometry().created_ns) {
            UnderName::Replaced(now) => {
                self.said_gone = false;
                // On the ring just looked at; said once per ring, and so is
                // why it cannot be joined.
                let first = self.said_new.replace(now.geometry().created_ns) != Some(now.geometry().created_ns);
                if let Some(Err(e)) = self.owners.map(|o| now.check_owner_in(&o)) {
                    if first {
                        eprintln!("helixctl: ring {} was created again, and is not followed: {e}", self.ring);
                    }
                    return None;
                }
                if first {
                    eprintln!(
                        "helixctl: ring {} was created again; following the new one from its first frame",
                        self.ring
                    );
                }
                match now.reader(&self.opts) {
                    Ok(r) => Some(r),
                    Err(e) => {
                        if first {
                            eprintln!("helixctl: ring {}: cannot join it yet ({e}); trying again", self.ring);
                        }
                        None
                    }
                }
            }
            UnderName::Gone => {
                if !std::mem::replace(&mut self.said_gone, true) {
                    eprintln!("helixctl: ring {} was removed; waiting for it to be created again", self.ring);
                }
                None
            }
            // Being created, say: looked at again after the next wait.
            UnderName::Same(_) | UnderName::Unknown(_) => None,
        }
    }
}

/// Prints `reader`'s frames to `out`, as `run` says (`follow`: waiting for
/// new ones, following the ring's name).
fn print(
    reader: &mut Reader,
    count: Option<u64>,
    mut follow: Option<&mut Follow<'_>>,
    json: bool,
    out: &mut dyn Write,
) -> Result<()> {
    let emit = |l: &Line, out: &mut dyn Write| emit(l, json, out);
    let mut buf = vec![0u8; reader.geometry().max_payload as usize];
    let mut printed = 0u64;
    while count.is_none_or(|c| printed < c) {
        let frame = if follow.is_some() {
            reader.read_timeout(&mut buf, Duration::from_millis(500))
        } else {
            reader.try_read(&mut buf).map_err(ReadError::from)
        };
        match frame {
            Ok(f) => {
                emit(&line_of(f, &buf[..f.len]), out)?;
                printed += 1;
            }
            Err(ReadError::Timeout) => match follow.as_mut() {
                Some(f) => {
                    if let Some(new) = f.replaced(reader) {
                        *reader = new;
                        buf.resize(reader.geometry().max_payload as usize, 0);
                    }
                }
                None => break,
            },
            Err(ReadError::Overrun(o)) => emit(&Line::Overrun { lost: o.lost, resume_at: o.resume_at }, out)?,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Prints a catch-up reader's frames to `out`, as `run` says: from the
/// ledger, then the ring; what the ledger recorded as lost prints as an
/// overrun line.
fn print_catch_up(
    reader: &mut CatchUpReader,
    count: Option<u64>,
    follow: bool,
    json: bool,
    out: &mut dyn Write,
) -> Result<()> {
    let mut buf = vec![0u8; reader.geometry().max_payload as usize];
    let mut printed = 0u64;
    while count.is_none_or(|c| printed < c) {
        let frame =
            if follow { reader.read_timeout(&mut buf, Duration::from_millis(500)) } else { reader.try_read(&mut buf) };
        match frame {
            Ok(f) => {
                emit(&line_of(f, &buf[..f.len]), json, out)?;
                printed += 1;
            }
            Err(CatchUpError::Empty) if follow => {}
            Err(CatchUpError::Empty) => break,
            Err(CatchUpError::Overrun(o)) => emit(&Line::Overrun { lost: o.lost, resume_at: o.resume_at }, json, out)?,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
