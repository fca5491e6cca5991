//! `helix-bridge export`: a ring's frames to a JetStream subject.
//!
//! The exporter is a reader of the ring (gating by default) that releases
//! what it read only once JetStream acknowledged it, so the ring cursor is
//! the durable position: an exporter killed at any point leaves its dead
//! reader entry's cursor at the first frame not yet acknowledged, and the
//! next exporter starts there. Messages are pipelined: up to
//! `max_in_flight` are published before the exporter waits for their
//! acknowledgements, then releases them all.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::Context;
use helix::{Namespace, ReadError, Reader, ReaderOptions, RingView, Start, TryReadError, UnderName, WaitStrategy};
use tracing::{error, info, warn};

mod limits;
mod lost;
use limits::Limits;
use lost::Lost;

use crate::counters::Counters;
use crate::wire::{self, Packer, Source};

/// What to export and how.
#[derive(Debug, Clone)]
pub struct Export {
    pub ring: String,
    pub host: String,
    pub subject: String,
    /// The reader name in the ring's table (how a restarted exporter finds
    /// its predecessor's cursor).
    pub reader_name: String,
    /// Gate the ring's writer (a `block` ring waits for the bridge).
    pub gating: bool,
    /// Messages published and not yet acknowledged, at most.
    pub max_in_flight: usize,
    /// Frames in one message, at most.
    pub max_frames: usize,
    /// Bytes of one message, about (at least one frame is always packed).
    pub max_bytes: usize,
}

/// One message published and not yet acknowledged.
struct InFlight {
    ack: PublishAckFuture,
    frames: u64,
    bytes: u64,
    sent: Instant,
}

/// How often an exporter with nothing to send looks whether its ring was
/// replaced.
const REPLACED_CHECK: Duration = Duration::from_secs(1);

/// How often an exporter looks for another exporter of its ring that
/// joined at the same time as it (see [`leave_to_an_older_exporter`]).
const RIVALS_CHECK: Duration = Duration::from_secs(1);

/// Why an export of one incarnation of the ring ended.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    Stopped,
    /// Another ring is under the name now (helixd created it again, or
    /// repaired a damaged one): export that one.
    Replaced,
}

/// Runs until `stop`, following the ring to each new incarnation under
/// its name; returns after the last acknowledgements.
pub async fn run(js: Publisher, ns: &Namespace, x: &Export, counters: Arc<Counters>, stop: &AtomicBool) -> Result<()> {
    while export_ring(&js, ns, x, &counters, stop).await? == Ended::Replaced {}
    Ok(())
}

/// Where the exporter publishes: the JetStream context, the stream's own
/// limit on a message (its `max_msg_size`, if it has one), and the
/// server's settings (to make the stream again if it is deleted).
pub struct Publisher {
    pub js: Context,
    /// Bytes; `usize::MAX`: none. Read again when the stream refuses a
    /// message as larger ([`Publisher::reread_stream_limit`]).
    pub stream_limit: AtomicUsize,
    pub server: crate::nats::Server,
}

impl Publisher {
    /// The stream's limit on a message as its owner set it (-1: none).
    pub fn stream_limit(max_message_size: i32) -> AtomicUsize {
        AtomicUsize::new(usize::try_from(max_message_size).unwrap_or(usize::MAX))
    }

    /// [`crate::nats::make_stream_if_gone`] of this publisher's stream.
    async fn make_stream_if_gone(&self, e: &anyhow::Error, beats: &std::sync::atomic::AtomicU64) {
        crate::nats::make_stream_if_gone(&self.js, &self.server, e, beats).await;
    }

    /// After a publish failed with `e`: if the stream refused the message
    /// as larger than its `max_msg_size`, reads that again (said if it
    /// changed since it was read), for the next [`Limits::of`]. (Found by
    /// review: it was read once, as the link started, and a stream whose
    /// owner lowered it meanwhile refused every larger message, sent again
    /// for ever.)
    async fn reread_stream_limit(&self, e: &anyhow::Error) {
        use async_nats::jetstream::{context::PublishError, ErrorCode};
        let refused = e.downcast_ref::<PublishError>().and_then(std::error::Error::source).is_some_and(|s| {
            s.downcast_ref::<async_nats::jetstream::Error>()
                .is_some_and(|j| j.error_code() == ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM)
        });
        if !refused {
            return;
        }
        let Ok(mut stream) = self.js.get_stream(&self.server.stream).await else { return };
        let Ok(info) = stream.info().await else { return };
        let now = Publisher::stream_limit(info.config.max_message_size).into_inner();
        // Relaxed: a number its one link's task writes and reads (between
        // its retries); nothing else is ordered by it.
        if self.stream_limit.swap(now, Ordering::Relaxed) == now {
            return;
        }
        let limit = match info.config.max_message_size {
            n if n < 0 => "no limit of its own".to_owned(),
            n => format!("messages of at most {n} bytes"),
        };
        warn!("JetStream stream {:?} now takes {limit}", self.server.stream);
    }
}

impl std::ops::Deref for Publisher {
    type Target = Context;
    fn deref(&self) -> &Context {
        &self.js
    }
}

/// Bytes of publishes an exporter's NATS client holds for its connection,
/// about, at most ([`queue`]).
const QUEUED_BYTES: usize = 32 << 20;

/// The publishes an exporter's NATS client holds for its connection at
/// most: about [`QUEUED_BYTES`] of messages. (Found by review: the
/// client's default, 2,048, filled while a server was stalled or being
/// reconnected to, each retry adding the pipeline's messages again: 512 MiB
/// a link with the default 256 KiB messages.) A publish that finds it full
/// waits, at most the acknowledgement timeout (`publish`).
pub fn queue(x: &Export) -> usize {
    (QUEUED_BYTES / x.max_bytes.max(1)).clamp(2, 2048)
}

/// Exports the ring now under the name until `stop`, or until it was
/// replaced and everything read from it was acknowledged.
async fn export_ring(
    js: &Publisher,
    ns: &Namespace,
    x: &Export,
    counters: &Counters,
    stop: &AtomicBool,
) -> Result<Ended> {
    let (view, mut reader, mut source, mut limits) = begin(js, ns, x, counters, stop).await?;
    let mut flight: VecDeque<InFlight> = VecDeque::new();
    let (mut checked, mut rivals_checked) = (Instant::now(), Instant::now());
    let mut lost = Lost::default();
    while !stop.load(Ordering::Relaxed) {
        Counters::add(&counters.beats, 1);
        if rivals_checked.elapsed() >= RIVALS_CHECK {
            rivals_checked = Instant::now();
            leave_to_an_older_exporter(&view, x)?;
        }
        source.epoch = reader.writer_epoch();
        let sent = send_next(js, x, &mut reader, &source, &limits, counters, &mut lost).await?;
        let result = match sent {
            Some(Ok(f)) => {
                flight.push_back(f);
                Counters::set(&counters.in_flight, flight.len() as u64);
                if flight.len() < x.max_in_flight {
                    continue;
                }
                settle(&mut flight, counters).await
            }
            Some(Err(e)) => Err(e),
            None if flight.is_empty() => {
                // Everything read is acknowledged and released: the time
                // to look whether the ring was replaced.
                if checked.elapsed() >= REPLACED_CHECK {
                    checked = Instant::now();
                    if replaced(ns, x, &source, &reader) {
                        return Ok(Ended::Replaced);
                    }
                }
                wait(&mut reader)?;
                continue;
            }
            None => settle(&mut flight, counters).await,
        };
        match result {
            Ok(()) => {
                reader.release();
                if reader.was_demoted() {
                    reader = rejoin(ns, x, &source, reader)?;
                }
            }
            Err(e) => {
                js.make_stream_if_gone(&e, &counters.beats).await;
                js.reread_stream_limit(&e).await;
                pause_to_retry(counters, &x.ring, &e, format!("publishing again from sequence {}", reader.released()))
                    .await;
                // The server's limit too, after the pause (a reconnect in
                // it may have met one that takes less; found by review:
                // read once, as the stream's was, its refusals were sent
                // again for ever).
                limits = Limits::of(js, x, &view, &source);
                flight.clear();
                // The same ring's frames again, whatever is under its name
                // now. (Found by review: a reader attached again by name
                // read a ring made again meanwhile, and its frames went out
                // as the old ring's.)
                reader.rewind();
            }
        }
        Counters::set(&counters.in_flight, 0);
    }
    settle(&mut flight, counters).await?;
    reader.release();
    info!("exporter stopped at sequence {}", reader.released());
    Ok(Ended::Stopped)
}

/// Publishes what the ring has next (frames, or a gap for an overrun or
/// a frame too large for any message); `None` if it has nothing. A loss is
/// said and counted the first time it is sent ([`Lost`]).
async fn send_next(
    js: &Publisher,
    x: &Export,
    reader: &mut Reader,
    source: &Source,
    limits: &Limits,
    counters: &Counters,
    lost: &mut Lost,
) -> Result<Option<Result<InFlight>>> {
    Ok(match next_message(reader, source, limits)? {
        Next::Message(body, first, last) => Some(publish(js, x, source, body, first, last, "").await),
        Next::TooLarge { seq, len } => {
            if lost.count(seq, seq, reader.released(), counters) > 0 {
                error!(
                    "ring {} frame {seq} is {len} bytes; a message to the NATS server holds at most {} \
                     (its max_payload, or the stream's max_msg_size): sending a gap",
                    x.ring, limits.largest
                );
            }
            Some(publish(js, x, source, wire::gap(source, seq, 1, now()), seq, seq, "gap/").await)
        }
        Next::Gap { first, lost: n } => {
            let last = first + n - 1;
            if lost.count(first, last, reader.released(), counters) > 0 {
                warn!("ring {}: lost {n} frames from sequence {first} (overrun); sending a gap", x.ring);
            }
            let gap = wire::gap(source, first, n, now());
            Some(publish(js, x, source, gap, first, last, "gap/").await)
        }
        Next::Empty => None,
    })
}

fn now() -> u64 {
    helix::process::realtime_ns()
}

/// The pause before a publish that failed is sent again.
pub const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// Says why a publish to ring `ring` that failed with `e` is made again
/// (`again`: what is sent again), counts the retry, and waits half a
/// second first.
async fn pause_to_retry(counters: &Counters, ring: &str, e: &anyhow::Error, again: String) {
    warn!("ring {ring}: {e:#}; {again}");
    Counters::add(&counters.retries, 1);
    tokio::time::sleep(RETRY_PAUSE).await;
}

/// Attaches to the ring and joins it as its exporter ([`join`]); a fresh
/// exporter of a ring that starts past sequence 1 sends a gap first.
/// Returns the ring, the reader, the source it exports and what a message
/// holds.
async fn begin(
    js: &Publisher,
    ns: &Namespace,
    x: &Export,
    counters: &Counters,
    stop: &AtomicBool,
) -> Result<(RingView, Reader, Source, Limits)> {
    let view = RingView::attach(ns, &x.ring).with_context(|| format!("attaching to ring {}", x.ring))?;
    // Judged before its reader table is read or swept (and again on each
    // reader's own mapping, in `attach`).
    view.check_owner().with_context(|| format!("exporting ring {}", x.ring))?;
    let (reader, fresh) = join(ns, &view, x)?;
    let source = Source {
        host: x.host.clone(),
        ring: x.ring.clone(),
        created_ns: view.geometry().created_ns,
        epoch: reader.writer_epoch(),
    };
    let limits = Limits::of(js, x, &view, &source);
    info!("exporting ring {} from sequence {} to {}", x.ring, reader.cursor(), x.subject);
    if fresh && reader.cursor() > 1 {
        // No predecessor, and the ring starts past sequence 1 (it lapped
        // before the bridge came): say so once, so the importer need not
        // wait to tell a gap from a delay.
        let lost = reader.cursor() - 1;
        // Sent again until acknowledged, as any publish is: before, a
        // failure here ended the link (and the process), and the dead
        // entry it left made the next start no fresh one, so the gap was
        // never sent and the importer waited it out as a hole.
        loop {
            let gap = wire::gap(&source, 1, lost, now());
            let sent = match publish(js, x, &source, gap, 1, lost, "gap/").await {
                Ok(f) => settle(&mut VecDeque::from([f]), counters).await,
                Err(e) => Err(e),
            };
            match sent {
                Ok(()) => break,
                Err(e) if !stop.load(Ordering::Relaxed) => {
                    pause_to_retry(counters, &x.ring, &e, format!("sending the gap of sequences 1 to {lost} again"))
                        .await;
                }
                Err(e) => return Err(e),
            }
        }
        Counters::add(&counters.gaps, lost);
    }
    Ok((view, reader, source, limits))
}

/// Whether another ring is under the name than the incarnation `source`
/// exports (none there, or one being created: not yet); says so.
fn replaced(ns: &Namespace, x: &Export, source: &Source, reader: &Reader) -> bool {
    let UnderName::Replaced(now) = RingView::under_name(ns, &x.ring, source.created_ns) else { return false };
    info!(
        "ring {} was replaced (created at {} ns, the one exported at {} ns): exporting the new one; \
         the old one ended at sequence {}",
        x.ring,
        now.geometry().created_ns,
        source.created_ns,
        reader.released().saturating_sub(1)
    );
    true
}

/// Registers the exporter's reader where its predecessor left off: the
/// lowest cursor of a dead reader of the same name, else the oldest frame.
/// A live reader of that name is another exporter, and refused, if its
/// process is another helix-bridge ([`another_bridge`]). Also says whether
/// there was no predecessor.
fn join(ns: &Namespace, view: &RingView, x: &Export) -> Result<(Reader, bool)> {
    let stats = view.stats();
    let ours: Vec<_> = stats.readers.iter().filter(|r| r.name == x.reader_name).collect();
    let me = helix::process::pid();
    for live in ours.iter().filter(|r| r.alive) {
        // An entry in this process's own pid was not made by it (it has not
        // joined yet): it is no other exporter. (Found by review: one
        // written with the service's pid kept every start off.)
        if live.pid != me && another_bridge(live.pid) {
            bail!(
                "ring {}: reader {:?} (pid {}) is attached already: is another helix-bridge export running?",
                x.ring,
                x.reader_name,
                live.pid
            );
        }
        let whose =
            if live.pid == me { "this process, which has not joined yet" } else { "no helix-bridge of this user's" };
        warn!(
            "ring {}: reader {:?} is attached already, but its process (pid {}) is {whose} (another process wrote the \
             name into the reader table?): exporting beside it",
            x.ring, x.reader_name, live.pid
        );
    }
    let dead: Vec<_> = ours.iter().filter(|r| !r.alive).collect();
    // A cursor past the ring's next sequence is not one an exporter leaves
    // (any process that may attach can write the reader table): starting
    // there would skip frames, starting at the oldest only sends again
    // what the importer already has (it drops them).
    let next = stats.published + 1;
    let start = match dead.iter().map(|r| r.cursor).min() {
        Some(cursor) if cursor > next => {
            warn!(
                "ring {}: the dead exporter's cursor {cursor} is past the ring's next sequence {next} \
                 (written by another process?): exporting from the oldest frame instead",
                x.ring
            );
            Start::Oldest
        }
        Some(cursor) => Start::At(cursor),
        None => Start::Oldest,
    };
    let reader = attach(ns, x, start)?;
    // Another exporter started at the same instant passed the check above
    // too: of the two, the older process keeps the ring.
    leave_to_an_older_exporter(view, x)?;
    // The predecessor's entries, which may still gate the writer.
    view.sweep();
    Ok((reader, dead.is_empty()))
}

/// Fails if another live process holds a reader of the exporter's name and
/// is older than this one (started earlier; of two started in the same
/// clock tick, the lower pid). Two exporters that joined at once each
/// passed [`join`]'s check before the other was there; both look again,
/// after joining and every [`RIVALS_CHECK`], and the younger leaves. Its
/// frames not yet acknowledged were sent by both: the importer drops the
/// second copy.
fn leave_to_an_older_exporter(view: &RingView, x: &Export) -> Result<()> {
    let (pid, start) = helix::process::identity();
    let rank = |pid: u32| helix::process::start_time(pid).map(|start| (start, pid));
    let older = view
        .stats()
        .readers
        .into_iter()
        .filter(|r| r.alive && r.name == x.reader_name && r.pid != pid && another_bridge(r.pid))
        .find(|r| rank(r.pid).is_some_and(|theirs| theirs < (start, pid)));
    if let Some(r) = older {
        bail!(
            "ring {}: reader {:?} (pid {}) joined it at the same time, and its process is older: \
             leaving the ring to that helix-bridge export",
            x.ring,
            x.reader_name,
            r.pid
        );
    }
    Ok(())
}

/// Whether the live process `pid`, found under the exporter's name in a
/// reader table, is another exporter of this bridge's: a process of the
/// same name as this one (`/proc/PID/comm`), of this user or root (any
/// user's, for a bridge run by root: an operator's copy beside the
/// service). Any process that may write the reader table can enter the
/// name with any live pid: pid 1's, or helixd's, whose user is the
/// bridge's own in the packaged service. (Found by review: helixd's pid
/// made a running exporter leave and kept the next one off, and a
/// service's every link went down with it, restart after restart.)
fn another_bridge(pid: u32) -> bool {
    let comm = |pid: &str| std::fs::read_to_string(format!("/proc/{pid}/comm")).ok();
    let me = helix::process::my_uid();
    let user = me == 0 || helix::process::uid_of(pid).is_some_and(|uid| uid == me || uid == 0);
    user && comm(&pid.to_string()).is_some_and(|name| Some(name) == comm("self"))
}

fn attach(ns: &Namespace, x: &Export, start: Start) -> Result<Reader> {
    let opts = ReaderOptions { name: x.reader_name.clone(), gating: x.gating, start, wait: WaitStrategy::Park };
    let mut r = Reader::attach(ns, &x.ring, &opts).with_context(|| format!("joining ring {} as a reader", x.ring))?;
    // Another user's ring under the name: its frames would be exported as
    // this host's.
    r.check_owner().with_context(|| format!("exporting ring {}", x.ring))?;
    r.set_deferred_release(true);
    Ok(r)
}

/// A gating reader again, for one the ring's writer demoted (it held the
/// ring longer than the ring's stall timeout while JetStream was slow to
/// acknowledge): joined at the first frame not acknowledged, before the
/// old one leaves. What the writer overwrote meanwhile goes out as a gap.
/// (Found by review: a demoted exporter stayed so for its life, and lost
/// frames to the writer whenever it fell behind.) If another ring is under
/// the name now, the old reader stays, to finish its own ring.
fn rejoin(ns: &Namespace, x: &Export, source: &Source, mut old: Reader) -> Result<Reader> {
    old.rewind();
    let new = attach(ns, x, Start::At(old.cursor()))?;
    if new.geometry().created_ns != source.created_ns {
        return Ok(old);
    }
    warn!(
        "ring {}: its writer demoted this exporter (it held the ring past the ring's stall timeout, waiting for \
         JetStream; make stall_timeout_ms longer than --ack-timeout-ms): joined again as a gating reader from \
         sequence {}",
        x.ring,
        old.cursor()
    );
    Ok(new)
}

enum Next {
    /// A frames message, its first and last sequence.
    Message(Vec<u8>, u64, u64),
    /// Frame `seq`, of `len` bytes, too large for any message the server
    /// takes (only when a message holds one frame: with more, every
    /// frame fits).
    TooLarge {
        seq: u64,
        len: usize,
    },
    /// An overrun: `lost` sequences from `first`.
    Gap {
        first: u64,
        lost: u64,
    },
    Empty,
}

/// Packs the frames available, up to `limits.per_message`.
fn next_message(reader: &mut Reader, source: &Source, limits: &Limits) -> Result<Next> {
    let first = reader.cursor();
    let mut packer = Packer::frames(source, first, now());
    let mut too_large = None;
    match reader.try_read_batch(limits.per_message, |f| {
        if f.len() > limits.largest {
            too_large = Some(f.len());
            return;
        }
        let _ = packer.push_with(f.kind(), f.len(), |buf| f.copy_to(buf).map(drop));
    }) {
        Ok(1..) if let Some(len) = too_large => Ok(Next::TooLarge { seq: first, len }),
        Ok(n) => {
            // A frame torn after its copy was taken is not consumed.
            if packer.count() as usize > n {
                packer.pop();
            }
            Ok(Next::Message(packer.finish(), first, first + n as u64 - 1))
        }
        Err(TryReadError::Empty) => Ok(Next::Empty),
        Err(TryReadError::Overrun(o)) => Ok(Next::Gap { first: o.resume_at - o.lost, lost: o.lost }),
        Err(e) => bail!("reading ring: {e}"),
    }
}

async fn publish(
    js: &Publisher,
    x: &Export,
    source: &Source,
    body: Vec<u8>,
    first: u64,
    last: u64,
    tag: &str,
) -> Result<InFlight> {
    let frames = if tag.is_empty() { last - first + 1 } else { 0 };
    let bytes = body.len() as u64;
    let id = format!("{}/{}/{:x}/{}/{tag}{first}-{last}", source.host, source.ring, source.created_ns, source.epoch);
    let sent = Instant::now();
    let message = PublishMessage::build().payload(body.into()).message_id(id);
    // Its client's queue full ([`queue`]: the server stalled, or being
    // reconnected to) is waited on no longer than an acknowledgement is.
    let wait = js.server.ack_timeout;
    let ack = tokio::time::timeout(wait, js.send_publish(x.subject.clone(), message))
        .await
        .map_err(|_| {
            anyhow::anyhow!("the NATS client took no publish for {wait:?}: its connection is stalled or down")
        })?
        .context("publishing to JetStream")?;
    Ok(InFlight { ack, frames, bytes, sent })
}

/// Waits for every acknowledgement in flight.
async fn settle(flight: &mut VecDeque<InFlight>, counters: &Counters) -> Result<()> {
    while let Some(f) = flight.pop_front() {
        let ack = f.ack.await.context("JetStream did not acknowledge a publish")?;
        Counters::add(&counters.ack_ns_sum, f.sent.elapsed().as_nanos() as u64);
        Counters::add(&counters.acks, 1);
        Counters::add(&counters.messages, 1);
        if ack.duplicate {
            Counters::add(&counters.duplicates, 1);
        } else {
            Counters::add(&counters.frames, f.frames);
            Counters::add(&counters.bytes, f.bytes);
        }
    }
    Ok(())
}

/// Parks until the ring has a frame, at most 100 ms (so `stop` is seen).
fn wait(reader: &mut Reader) -> Result<()> {
    match reader.wait_timeout(Duration::from_millis(100)) {
        Ok(()) | Err(ReadError::Timeout) | Err(ReadError::Overrun(_)) => Ok(()),
        Err(e) => bail!("waiting for frames: {e}"),
    }
}
