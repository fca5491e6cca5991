//! The ledger head mirror: every interval, the head of the ledger folder
//! (what `helix-ledger head --json` prints) is published, when it changed,
//! to `helix.<site>.<host>.ledger.head` in the bridge's JetStream stream,
//! with `Nats-Msg-Id` `<host>/ledger.head/<records>/<hash>` so a head sent again
//! (a restart) is dropped by JetStream. Once JetStream acknowledged it, the
//! head left the host: with `anchor = true` the mirror records it in the
//! folder's `anchors` file (docs/ledger.md, "Anchors"), as the step that
//! knows it did.
//!
//! The message is [`message`]'s JSON object: the head, and under
//! `checkpoint` the latest signed checkpoint (what `helix-ledger head
//! --signed --json` prints of it), or null when the ledger signs none. The
//! checkpoint is what another host can check with the recorder's public key
//! alone; the head's hash, unsigned, says how far the chain went since.

use std::io::ErrorKind;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use async_nats::jetstream::{self, message::PublishMessage};
use helix::ledger::anchor::{append_anchor, scan_anchors, Anchor, LineError};
use helix::ledger::format::hex;
use helix::ledger::sign::Checkpoint;
use helix::ledger::{verify, Head};
use serde_json::{json, Value};
use tracing::{error, info, warn};

use crate::checkpoint;
use crate::config::LedgerMirror;
use crate::counters::Counters;

/// The head as `helix-ledger head --json` prints it, with the latest
/// signed checkpoint `signed`.
pub fn message(h: &Head, signed: Option<&Checkpoint>) -> Value {
    let rings: Vec<Value> = h.rings.iter().map(|(n, s)| json!({ "name": n, "next_seq": s })).collect();
    json!({
        "hash": hex(&h.hash), "records": h.records, "blocks": h.blocks, "segment": h.segment,
        "torn_bytes": h.torn_bytes, "rings": rings, "checkpoint": signed.map(checkpoint::json),
    })
}

/// The latest signed checkpoint in `dir`, if it has one; a problem reading
/// it is logged, and the head goes out without it.
async fn latest_checkpoint(dir: &Path) -> Option<Checkpoint> {
    let d = dir.to_owned();
    let problem = match tokio::task::spawn_blocking(move || verify::latest_checkpoint(&d)).await {
        Ok(Ok(Ok(found))) => return found.map(|h| h.checkpoint),
        Ok(Ok(Err(failure))) => format!("its latest checkpoint does not verify: {failure}"),
        Ok(Err(e)) => format!("reading its latest checkpoint: {e}"),
        Err(e) => format!("reading its latest checkpoint: {e}"),
    };
    warn!("ledger {}: {problem}; the head goes out without it", dir.display());
    None
}

/// The head of `dir` if it can be read and holds a record; a problem is
/// logged when it differs from the last one logged (`said`).
async fn read(m: &LedgerMirror, said: &mut String) -> Option<Head> {
    let dir = m.dir.clone();
    let got = tokio::task::spawn_blocking(move || verify::head(&dir)).await;
    let problem = match got {
        Ok(Ok(Ok(h))) if h.records > 0 => return Some(h),
        Ok(Ok(Ok(_))) => "the ledger holds no record yet".to_owned(),
        Ok(Ok(Err(failure))) => format!("its head does not verify: {failure}"),
        Ok(Err(e)) => e.to_string(),
        Err(e) => format!("reading the head: {e}"),
    };
    if *said != problem {
        warn!("ledger {}: {problem}; not mirrored", m.dir.display());
        *said = problem;
    }
    None
}

/// Publishes `body` and waits for JetStream's acknowledgement: the stream
/// sequence, and whether JetStream found it a duplicate.
async fn publish(js: &jetstream::Context, subject: &str, id: &str, body: Vec<u8>) -> Result<(u64, bool)> {
    let msg = PublishMessage::build().message_id(id).payload(body.into());
    // The errors kept whole, for `make_stream_if_gone` to read.
    let ack = js.send_publish(subject.to_owned(), msg).await.context("publishing")?;
    let ack = ack.await.context("acknowledgement")?;
    Ok((ack.sequence, ack.duplicate))
}

/// Runs until `stop`.
pub async fn run(
    js: &jetstream::Context,
    server: &crate::nats::Server,
    host: &str,
    m: &LedgerMirror,
    counters: &Counters,
    stop: &AtomicBool,
) -> Result<()> {
    info!("mirroring the head of ledger {} to {} every {:?}", m.dir.display(), m.subject, m.interval);
    let mut anchoring = m.anchor;
    let mut published = None;
    let mut said = String::new();
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        Counters::add(&counters.beats, 1);
        if Instant::now() < next {
            tokio::time::sleep(next.saturating_duration_since(Instant::now()).min(Duration::from_millis(200))).await;
            continue;
        }
        next = Instant::now() + m.interval;
        Counters::add(&counters.heads_read, 1);
        let Some(h) = read(m, &mut said).await else { continue };
        if published == Some((h.records, h.hash)) {
            continue;
        }
        // The hash too: another head of the same length (a ledger started
        // again in the folder) is not a duplicate of the one JetStream
        // holds, and must not be anchored as if it had left the host.
        let id = format!("{host}/ledger.head/{}/{}", h.records, hex(&h.hash));
        let sent = Instant::now();
        let signed = latest_checkpoint(&m.dir).await;
        match publish(js, &m.subject, &id, message(&h, signed.as_ref()).to_string().into_bytes()).await {
            Ok((seq, duplicate)) => {
                Counters::add(&counters.ack_ns_sum, sent.elapsed().as_nanos() as u64);
                Counters::add(&counters.acks, 1);
                Counters::add(&counters.messages, 1);
                Counters::add(&counters.duplicates, u64::from(duplicate));
                Counters::set(&counters.head_records, h.records);
                published = Some((h.records, h.hash));
                said.clear();
                if anchoring {
                    let stream = &server.stream;
                    anchoring = anchor(m, &h, &format!("nats stream {stream} seq {seq} subject {}", m.subject));
                    Counters::add(&counters.anchors, u64::from(anchoring));
                }
            }
            Err(e) => {
                warn!("ledger head of {} records: {e:#}; trying again in {:?}", h.records, m.interval);
                crate::nats::make_stream_if_gone(js, server, &e, &counters.beats).await;
            }
        }
    }
    Ok(())
}

/// Records `h` in the folder's anchors file unless its last anchor is this
/// head already (a restarted mirror publishes it again). False if anchors
/// cannot be written here at all: the mirror goes on without them.
fn anchor(m: &LedgerMirror, h: &Head, note: &str) -> bool {
    // The last line only is held (the file grows by one a head; found by
    // review: it was held whole, at each head).
    let mut last = None;
    let last = scan_anchors(&m.dir, |_, a| last = Some((a.records, a.hash))).ok().and(last);
    if last == Some((h.records, h.hash)) {
        return true;
    }
    let a = Anchor { records: h.records, hash: h.hash, time_ns: helix::process::realtime_ns(), note: note.into() };
    match append_anchor(&m.dir, &a) {
        Ok(()) => true,
        Err(LineError::Io { path, error }) if error.kind() == ErrorKind::PermissionDenied => {
            error!(
                "cannot record anchors in {}: {error}; heads are mirrored without anchors (the bridge must run as \
                 the ledger folder's owner, helix, to record them)",
                path.display()
            );
            false
        }
        Err(e) => {
            error!("recording the anchor of {} records: {e}", h.records);
            true
        }
    }
}
