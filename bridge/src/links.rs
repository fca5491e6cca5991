//! One link of the bridge, from connecting to NATS to stopping: an export,
//! an import or the ledger head mirror. The ad-hoc commands run one; the
//! service (`--config`) runs each configured link on a thread of its own.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use async_nats::jetstream;
use async_nats::jetstream::consumer::{pull::OrderedConfig, DeliverPolicy};
use futures::StreamExt;
use helix::{Namespace, UnderName};
use tracing::{info, warn};

use crate::config::{Import, LedgerMirror};
use crate::counters::Counters;
use crate::export::Export;
use crate::import::{self, Importer};
use crate::{head, nats};

/// What every link runs with: the server and stream, the local rings'
/// namespace, its counters, the stop flag, and the flag it sets once it is
/// connected and ready to move data (the service's READY=1 waits for all).
pub struct Ctx {
    pub server: nats::Server,
    pub ns: Namespace,
    pub counters: Arc<Counters>,
    pub stop: Arc<AtomicBool>,
    pub ready: Arc<AtomicBool>,
}

/// Connects and finds (or creates) the stream, trying again every 2 s
/// while JetStream does not answer (a server that is not up yet, a cluster
/// without a leader) until stopped; then the link is ready. A stream
/// JetStream refuses ends the link with that error.
async fn connect(c: &Ctx, name: &str, queue: Option<usize>) -> Result<(jetstream::Context, jetstream::stream::Stream)> {
    let js = nats::connect(&c.server, name, c.counters.clone(), queue).await?;
    loop {
        match nats::stream(&js, &c.server, &c.counters.beats).await {
            Ok(stream) => {
                c.ready.store(true, Ordering::Relaxed);
                return Ok((js, stream));
            }
            // (Found by review: a refusal was asked again every 2 s for
            // ever, the link never ready, where docs/bridge.md says the
            // link fails with its error, to be started again.)
            Err(e) if c.stop.load(Ordering::Relaxed) || nats::stream_refused(&e) => return Err(e),
            Err(e) => {
                warn!("{name}: {e:#}; trying again in 2 s");
                Counters::add(&c.counters.beats, 1);
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

/// Exports ring `x.ring` until stopped.
pub async fn export(c: &Ctx, x: &Export) -> Result<()> {
    let (js, stream) = connect(c, "helix-bridge export", Some(crate::export::queue(x))).await?;
    // The stream's own limit on a message (-1: none), as its owner set it.
    let stream_limit = crate::export::Publisher::stream_limit(stream.cached_info().config.max_message_size);
    let js = crate::export::Publisher { js, stream_limit, server: c.server.clone() };
    crate::export::run(js, &c.ns, x, c.counters.clone(), &c.stop).await
}

/// How long an import waits with nothing arriving before it asks the
/// stream whether it holds more; if it does, the consumer is made again.
/// An ordered consumer whose server was killed is meant to make itself
/// again, and retries that silently for ever: once, with a node of the
/// cluster killed just after another came back, it delivered nothing for
/// minutes while the stream took the exporter's messages.
const STALLED: Duration = Duration::from_secs(10);

/// Imports `a.source_host`'s ring `a.source_ring` into ring `a.ring` until
/// stopped.
pub async fn import(c: &Ctx, site: &str, a: &Import) -> Result<()> {
    let open = || -> Result<(Importer, import::Place)> {
        let (mut imp, place) = Importer::open(&c.ns, &a.ring, &a.source_host, &a.source_ring, a.max_pending.max(1))?;
        imp.counters = c.counters.clone();
        Ok((imp, place))
    };
    let (mut imp, place) = open()?;
    let (_, stream) = connect(c, "helix-bridge import", None).await?;
    let subject = nats::subject(site, &a.source_host, &a.source_ring);
    info!("importing {subject} into ring {} from stream sequence {}", a.ring, place.resume.max(1));
    let mut next = place.resume;
    let mut clocks = Clocks::new();
    let mut destination = Looks::new(&a.ring);
    // When the stream was made, as its server says: one deleted and made
    // again under the name has another (its sequence started over).
    let mut made = None;
    let hole_timeout = import::hole_timeout(c.server.ack_timeout);
    while !c.stop.load(Ordering::Relaxed) {
        next = reset_resume(&stream, &subject, next, &mut made).await;
        if next == 0 {
            // Read from its start: a hole's time starts again with it.
            clocks.new = Instant::now();
        }
        // A JetStream that does not answer is waited for (the loop turns,
        // the watchdog is pinged), not an end of the link.
        let consumer = match nats::ordered_consumer(&stream, reading(&subject, next), &c.counters.beats).await {
            Ok(consumer) => consumer,
            Err(e) => {
                warn!("consuming {subject}: {e:#}; trying again in 2 s");
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
        };
        let mut messages = consumer.messages().await.map_err(|e| anyhow::anyhow!("consuming: {e}"))?;
        while !c.stop.load(Ordering::Relaxed) {
            Counters::add(&c.counters.beats, 1);
            imp.say_refusals(false);
            if destination.replaced(&c.ns, &imp)? {
                let place;
                (imp, place) = open()?;
                next = place.resume;
                info!("importing {subject} into the new ring {} from stream sequence {}", a.ring, next.max(1));
                break;
            }
            // On every turn: messages that bring nothing new, sent often
            // enough that the wait below never times out, must not hold a
            // hole open either.
            if imp.pending() > 0 && clocks.new.elapsed() >= hole_timeout {
                // What is missing is in the stream made again, from its
                // start: read, not written as lost.
                if remade(&stream, made.as_deref()).await {
                    break;
                }
                imp.fill_hole(&format!("nothing new arrived to fill it for {:.1} s", hole_timeout.as_secs_f64()))?;
            }
            match tokio::time::timeout(Duration::from_millis(200), messages.next()).await {
                Err(_) => {
                    if clocks.stalled(&stream, &subject, next, made.as_deref()).await {
                        break;
                    }
                }
                Ok(Some(Ok(msg))) => {
                    let seq =
                        msg.info().map_err(|e| anyhow::anyhow!("a message without stream info: {e}"))?.stream_sequence;
                    clocks.offer(&mut imp, seq, &msg.payload)?;
                    next = seq + 1;
                }
                Ok(Some(Err(e))) => {
                    warn!("consuming {subject}: {e}; consuming again from stream sequence {next}");
                    break;
                }
                Ok(None) => break,
            }
        }
    }
    imp.say_refusals(true);
    info!("importer stopped at source sequence {}", imp.hwm());
    Ok(())
}

/// An ordered consumer of `subject` from stream sequence `next` (0: from
/// the stream's start).
fn reading(subject: &str, next: u64) -> OrderedConfig {
    let deliver_policy = match next {
        0 => DeliverPolicy::All,
        s => DeliverPolicy::ByStartSequence { start_sequence: s },
    };
    OrderedConfig { filter_subject: subject.to_owned(), deliver_policy, ..Default::default() }
}

/// An importer's clocks: when a message last arrived, when it last asked
/// the stream whether it holds more, and when a message last brought
/// something new (written, or kept to wait for a hole): what a hole's
/// timeout counts from. A refused or duplicate message is nothing new;
/// before, one every 9 s from anyone who may publish kept a hole open, and
/// what waited behind it, for good.
struct Clocks {
    arrival: Instant,
    asked: Instant,
    new: Instant,
}

impl Clocks {
    fn new() -> Clocks {
        let now = Instant::now();
        Clocks { arrival: now, asked: now, new: now }
    }

    /// Hands the message at stream sequence `seq` to `imp`.
    fn offer(&mut self, imp: &mut Importer, seq: u64, payload: &[u8]) -> Result<()> {
        let before = (imp.hwm(), imp.pending());
        imp.offer(seq, payload)?;
        self.arrival = Instant::now();
        if (imp.hwm(), imp.pending()) != before {
            self.new = self.arrival;
        }
        Ok(())
    }

    /// After a wait with nothing: whether the consumer must be made again
    /// (nothing arrived for [`STALLED`] while the stream holds messages on
    /// `subject` from `next` on, or the stream was made again since it was
    /// `made`: the consumer, made again by its client at its old place,
    /// waits past the new stream's end; said).
    async fn stalled(
        &mut self,
        stream: &jetstream::stream::Stream,
        subject: &str,
        next: u64,
        made: Option<&str>,
    ) -> bool {
        if self.arrival.elapsed() < STALLED || self.asked.elapsed() < STALLED {
            return false;
        }
        self.asked = Instant::now();
        let Some(last) = holds_from(stream, subject, next).await else { return remade(stream, made).await };
        let idle = self.arrival.elapsed().as_secs();
        warn!(
            "consuming {subject}: nothing arrived for {idle} s while the stream holds its messages up to sequence \
             {last}; consuming again from stream sequence {next}"
        );
        true
    }
}

/// How often an importer looks whether its destination ring was removed
/// or replaced under it.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// An importer's looks at its destination ring's name (every
/// [`LOOK_EVERY`]): a ring removed and created again (helixd restarted with
/// `unlink_on_stop`, an operator's `rm`) is followed, as an exporter
/// follows its source; before, the importer wrote on into the removed ring
/// for good, and the new one got nothing.
struct Looks<'a> {
    ring: &'a str,
    last: Instant,
    said_gone: bool,
}

impl<'a> Looks<'a> {
    fn new(ring: &'a str) -> Looks<'a> {
        Looks { ring, last: Instant::now(), said_gone: false }
    }

    /// Whether another ring is under the name now (said); a name with no
    /// ring is said once. A ring damaged under the importer (a file of it
    /// shrank) is an error: the importer lets go of its writer lease, which
    /// helixd's repair takes (found by review: an importer of an
    /// `overwrite` ring, which never reads the reader table, never noticed,
    /// and held the ring unrepaired for as long as it ran).
    fn replaced(&mut self, ns: &Namespace, imp: &Importer) -> Result<bool> {
        if self.last.elapsed() < LOOK_EVERY {
            return Ok(false);
        }
        self.last = Instant::now();
        if let Some(d) = imp.damage() {
            anyhow::bail!(
                "destination ring {}: {d}; letting go of its writer lease for helixd to repair it",
                self.ring
            );
        }
        match imp.destination(ns) {
            UnderName::Gone => {
                if !self.said_gone {
                    warn!(
                        "destination ring {} was removed: importing into the removed ring until one is created \
                         under its name, which then gets what the stream holds",
                        self.ring
                    );
                }
                self.said_gone = true;
                Ok(false)
            }
            UnderName::Replaced(now) => {
                info!(
                    "destination ring {} was replaced (created at {} ns): importing into the new one",
                    self.ring,
                    now.geometry().created_ns
                );
                self.said_gone = false;
                Ok(true)
            }
            // Being created, say: looked at again in a second.
            UnderName::Same(_) | UnderName::Unknown(_) => Ok(false),
        }
    }
}

/// The stream sequence of the last message on `subject` (other links share
/// the stream), if it is `next` or after (`next` 0: any); `None` if it is
/// not, there is none, or the stream does not answer in 2 s.
async fn holds_from(stream: &jetstream::stream::Stream, subject: &str, next: u64) -> Option<u64> {
    let asked = stream.get_last_raw_message_by_subject(subject);
    let last = tokio::time::timeout(Duration::from_secs(2), asked).await.ok()?.ok()?.sequence;
    (last >= next.max(1)).then_some(last)
}

/// When the server says the stream was made (compared as text: the type
/// is the client's).
fn made_at(info: &jetstream::stream::Info) -> String {
    info.created.to_string()
}

/// Whether the stream under the name was made after the one read (`made`),
/// asked within 2 s (said). (Found by review: an importer whose stream was
/// deleted and made again waited for ever past the new stream's end, then
/// wrote what it had skipped as lost.)
async fn remade(stream: &jetstream::stream::Stream, made: Option<&str>) -> bool {
    let Some(made) = made else { return false };
    let Ok(Ok(info)) = tokio::time::timeout(Duration::from_secs(2), stream.get_info()).await else { return false };
    let now = made_at(&info);
    if now != made {
        warn!("stream {} was made again (at {now}; the one read was made at {made})", info.config.name);
    }
    now != made
}

/// Where to read the stream from, `next` or its start: a stream made again
/// since the one read (`made`, updated), or one that holds no message up
/// to `next - 1`, was deleted and made again (its sequence started again
/// at 1), so `next` (found from the destination ring's marks) names
/// something else or nothing in it; reading from its start is safe, the
/// importer drops what it already wrote by the source sequences. A stream
/// that cannot be asked is read from `next`.
async fn reset_resume(stream: &jetstream::stream::Stream, subject: &str, next: u64, made: &mut Option<String>) -> u64 {
    let Ok(info) = stream.get_info().await else { return next };
    let was = made.replace(made_at(&info));
    if was.is_some_and(|was| Some(&was) != made.as_ref()) {
        warn!("consuming {subject}: the stream was made again since this importer read it; reading it from its start");
        return 0;
    }
    let last = info.state.last_sequence;
    if next > last.saturating_add(1) {
        warn!(
            "consuming {subject}: the stream ends at sequence {last}, before {next}, where this importer was to read \
             on: it was made again; reading it from its start"
        );
        return 0;
    }
    next
}

/// Mirrors the ledger head of `m.dir` until stopped.
pub async fn ledger(c: &Ctx, host: &str, m: &LedgerMirror) -> Result<()> {
    let (js, _) = connect(c, "helix-bridge ledger", None).await?;
    head::run(&js, &c.server, host, m, &c.counters, &c.stop).await
}
