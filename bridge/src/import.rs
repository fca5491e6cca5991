//! `helix-bridge import`: a JetStream subject's messages into a local ring,
//! exactly once.
//!
//! The importer is the destination ring's writer. Before the frames of a
//! message it writes a *mark* (kind [`wire::KIND_BATCH`]) naming the source
//! sequence of the frame after it; a source gap is written as a gap mark
//! ([`wire::KIND_GAP`]). Its place after any crash or reconnect comes from
//! the destination ring alone: the last mark and the frames after it give
//! the last source sequence written (the high-water mark) and the stream
//! sequence to read from again. What arrives at or below the high-water
//! mark is dropped and counted; a message ahead of it waits (bounded) for
//! the messages before it, which a publish that failed and was sent again
//! puts later in the stream.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use helix::{Namespace, ReaderOptions, Ring, RingView, Start, TryReadError, UnderName, Writer};
use tracing::{error, info, warn};

use crate::counters::Counters;
use crate::said::Said;
use crate::wire::{self, Body, Mark, Message};

/// Where the importer is: found from the destination ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Place {
    /// The source ring incarnation (`created_ns`) and the last source
    /// sequence written; `None` for a ring the importer never wrote.
    pub hwm: Option<(u64, u64)>,
    /// The stream sequence to read from (0: from the start).
    pub resume: u64,
}

/// The importing state machine, apart from NATS: takes messages in stream
/// order, writes the destination ring.
pub struct Importer {
    writer: Writer,
    host: String,
    ring: String,
    source_id: u64,
    /// Frames after one mark, at most (a quarter of the ring, so a mark is
    /// always among the ring's last `chunk + 1` frames).
    chunk: usize,
    max_payload: usize,
    created: u64,
    hwm: u64,
    /// Messages ahead of the high-water mark, by first sequence: (stream
    /// sequence, message).
    pending: BTreeMap<u64, (u64, Message)>,
    max_pending: usize,
    /// The older source incarnation whose messages were last said to be
    /// dropped (said once per incarnation).
    said_older: u64,
    /// Refused messages, as logged (a few a while: a publisher's flood of
    /// garbage filled journald's rate limit for the service).
    refusals: Said,
    /// Frames of sequences a gap message said were lost at the source,
    /// dropped as written already, as logged; and the last such gap.
    dropped: Said,
    lost_at_source: Option<(u64, u64)>,
    pub counters: std::sync::Arc<Counters>,
}

impl Importer {
    /// Takes the destination ring's writer lease and finds the place.
    pub fn open(ns: &Namespace, dest: &str, host: &str, ring: &str, max_pending: usize) -> Result<(Importer, Place)> {
        let r = Ring::open(ns, dest).with_context(|| format!("attaching to destination ring {dest}"))?;
        // Another user's ring under the name would carry whatever its
        // maker writes beside the imported frames.
        r.check_owner().with_context(|| format!("destination ring {dest}"))?;
        let writer = r.writer().with_context(|| format!("taking the writer lease of ring {dest}"))?;
        let g = r.geometry();
        if (g.max_payload as usize) < std::mem::size_of::<Mark>() {
            bail!("destination ring {dest} holds payloads of {} bytes; the bridge's marks need 64", g.max_payload);
        }
        let chunk = ((g.capacity / 4) as usize).clamp(1, 4096);
        let source_id = wire::source_id(host, ring);
        let place = find_place(&r, &writer, source_id, chunk)?;
        let (created, hwm) = place.hwm.unwrap_or((0, 0));
        let imp = Importer {
            writer,
            host: host.to_owned(),
            ring: ring.to_owned(),
            source_id,
            chunk,
            max_payload: g.max_payload as usize,
            created,
            hwm,
            pending: BTreeMap::new(),
            max_pending,
            said_older: 0,
            refusals: Said::warning("stream messages refused (each counted in rejected_total)"),
            dropped: Said::warning("stream messages dropped (each counted in duplicates_total)"),
            lost_at_source: None,
            counters: Default::default(),
        };
        Ok((imp, place))
    }

    /// The last source sequence written.
    pub fn hwm(&self) -> u64 {
        self.hwm
    }

    /// Messages waiting for the ones before them.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Why the destination ring cannot be written, if a file of it shrank.
    pub fn damage(&self) -> Option<helix::Damaged> {
        self.writer.damage()
    }

    /// What is under the destination ring's name now, against the ring
    /// this importer writes (into the removed ring, if it is gone).
    pub fn destination(&self, ns: &Namespace) -> UnderName {
        RingView::under_name(ns, self.writer.ring_name(), self.writer.geometry().created_ns)
    }

    /// Takes the message at `stream_seq`. Malformed messages and messages
    /// of another source are refused: counted, logged, not written.
    pub fn offer(&mut self, stream_seq: u64, bytes: &[u8]) -> Result<()> {
        Counters::add(&self.counters.messages, 1);
        let m = match Message::decode(bytes, helix::ring::MAX_PAYLOAD as usize) {
            Ok(m) => m,
            Err(e) => return self.reject(stream_seq, &e.to_string()),
        };
        if (m.source.host.as_str(), m.source.ring.as_str()) != (self.host.as_str(), self.ring.as_str()) {
            // The names as sent, escaped: a newline in one would start a
            // line of the log of its sender's making.
            let (host, ring) = (m.source.host.escape_debug(), m.source.ring.escape_debug());
            let why = format!("from {host}/{ring}, not {}/{}", self.host, self.ring);
            return self.reject(stream_seq, &why);
        }
        if m.source.created_ns < self.created {
            self.older(stream_seq, &m);
            return Ok(());
        }
        if m.source.created_ns > self.created {
            if self.created != 0 {
                warn!("source ring {}/{} was recreated; its sequence starts again", self.host, self.ring);
            }
            // What waits behind a hole of the old incarnation: the hole
            // will not fill now.
            while !self.pending.is_empty() {
                self.fill_hole("the source ring was created again")?;
            }
            (self.created, self.hwm) = (m.source.created_ns, 0);
        }
        if m.last_seq() <= self.hwm {
            Counters::add(&self.counters.duplicates, m.count());
            // Frames of sequences a gap message said were lost at the
            // source: the source never had both, so one of the two was
            // forged. Said (a few a while); before, every real message
            // behind a forged gap of a vast loss was dropped without a
            // word (found by review). A message read again (a restart, a
            // publish sent again) is no such thing, and is not said.
            let overlaps = self.lost_at_source.is_some_and(|(a, b)| m.first_seq <= b && m.last_seq() >= a);
            if overlaps && matches!(m.body, Body::Frames(_)) {
                let why = format!(
                    "frames of source sequences {}..={}, which a gap message said were lost at the source: one \
                     of the two was forged (the frames are not written)",
                    m.first_seq,
                    m.last_seq()
                );
                self.dropped.one(format!("stream message {stream_seq}: dropped: {why}"));
            }
        } else if m.first_seq > self.hwm + 1 {
            self.wait(stream_seq, m);
            if self.pending.len() > self.max_pending {
                self.fill_hole("more messages ahead than the importer holds")?;
            }
        } else {
            self.apply(stream_seq, &m)?;
        }
        self.drain_pending()
    }

    /// Keeps `m` (at `stream_seq`, ahead of the high-water mark) until the
    /// messages before it come. Of two with the same first sequence the
    /// longer is kept, and the other's frames, which it holds too, are
    /// counted as duplicates (before, the second was dropped uncounted, and
    /// what only it held was written later as lost).
    fn wait(&mut self, stream_seq: u64, m: Message) {
        use std::collections::btree_map::Entry;
        let dropped = match self.pending.entry(m.first_seq) {
            Entry::Vacant(v) => {
                v.insert((stream_seq, m));
                return;
            }
            Entry::Occupied(mut o) if m.last_seq() > o.get().1.last_seq() => {
                std::mem::replace(o.get_mut(), (stream_seq, m)).1
            }
            Entry::Occupied(_) => m,
        };
        Counters::add(&self.counters.duplicates, dropped.count());
    }

    /// The messages after a hole never came: writes the hole as a gap and
    /// goes on with what waited.
    pub fn fill_hole(&mut self, why: &str) -> Result<()> {
        let Some((&first, _)) = self.pending.first_key_value() else { return Ok(()) };
        let lost = first - self.hwm - 1;
        error!(
            "source {}/{}: sequences {}..={} never arrived ({why}); writing a gap",
            self.host,
            self.ring,
            self.hwm + 1,
            first - 1
        );
        let resume = self.resume(u64::MAX);
        self.gap(self.hwm + 1, lost, 0, resume)?;
        self.drain_pending()
    }

    fn drain_pending(&mut self) -> Result<()> {
        while let Some(entry) = self.pending.first_entry() {
            if *entry.key() > self.hwm + 1 {
                break;
            }
            let (s, m) = entry.remove();
            if m.last_seq() <= self.hwm {
                Counters::add(&self.counters.duplicates, m.count());
            } else {
                self.apply(s, &m)?;
            }
        }
        Ok(())
    }

    /// A message of an older incarnation of the source ring than the one
    /// imported: dropped (counted as duplicates), said once per incarnation.
    /// Incarnations are ordered by their `created_ns` (CLOCK_REALTIME at
    /// creation), so a source host whose clock went back makes its new
    /// ring look older: the log names both.
    fn older(&mut self, stream_seq: u64, m: &Message) {
        Counters::add(&self.counters.duplicates, m.count());
        if self.said_older != m.source.created_ns {
            self.said_older = m.source.created_ns;
            warn!(
                "stream message {stream_seq}: source ring {}/{} of incarnation {} (created_ns), older than the one \
                 imported ({}): its messages are dropped. If that ring was not created again since, the source \
                 host's clock went back (a reboot without a clock, a step) or another host has its name",
                self.host, self.ring, m.source.created_ns, self.created
            );
        }
    }

    fn reject(&mut self, stream_seq: u64, why: &str) -> Result<()> {
        Counters::add(&self.counters.rejected, 1);
        self.refusals.one(format!("stream message {stream_seq}: refused: {why}"));
        Ok(())
    }

    /// Sums up the refusals not said one by one once their window is over
    /// (each turn of the loop), or now (`at_end`).
    pub fn say_refusals(&mut self, at_end: bool) {
        for r in [&mut self.refusals, &mut self.dropped] {
            if at_end {
                r.sum_up();
            } else {
                r.tick();
            }
        }
    }

    /// Where a restart reads again: this message, or an earlier one still
    /// waiting.
    fn resume(&self, stream_seq: u64) -> u64 {
        self.pending.values().map(|(s, _)| *s).min().unwrap_or(u64::MAX).min(stream_seq)
    }

    /// Writes the part of `m` past the high-water mark (which `m` reaches).
    fn apply(&mut self, stream_seq: u64, m: &Message) -> Result<()> {
        let skip = self.hwm + 1 - m.first_seq;
        Counters::add(&self.counters.duplicates, skip);
        let resume = self.resume(stream_seq);
        match &m.body {
            Body::Gap { .. } => self.gap_around_held(stream_seq, m),
            Body::Frames(frames) => self.frames(&frames[skip as usize..], m, resume),
        }
    }

    /// Writes gap message `m` (at `stream_seq`, reaching the high-water
    /// mark) as lost, but for the frames of messages waiting ahead within
    /// it, which are written in their places. (Found by review: they were
    /// written as lost, and counted as duplicates.)
    fn gap_around_held(&mut self, stream_seq: u64, m: &Message) -> Result<()> {
        let last = m.last_seq();
        while self.hwm < last {
            let held = self.pending.keys().next().copied().filter(|&k| k <= last);
            let upto = held.map_or(last, |k| k - 1);
            if upto > self.hwm {
                let (first, lost) = (self.hwm + 1, upto - self.hwm);
                warn!("source {}/{}: {lost} sequences lost at the source from {first}", self.host, self.ring);
                self.lost_at_source = Some((first, upto));
                let resume = self.resume(stream_seq);
                self.gap(first, lost, m.export_ns, resume)?;
            }
            if held.is_none() {
                break;
            }
            self.drain_pending()?;
        }
        Ok(())
    }

    fn mark(&self, first_seq: u64, lost: u64, export_ns: u64, resume: u64) -> Mark {
        Mark {
            source_id: self.source_id,
            first_seq,
            lost,
            src_created_ns: self.created,
            src_epoch: 0,
            export_ns,
            import_ns: helix::process::realtime_ns(),
            resume_stream_seq: resume,
        }
    }

    fn gap(&mut self, first: u64, lost: u64, export_ns: u64, resume: u64) -> Result<()> {
        let mark = self.mark(first, lost, export_ns, resume);
        self.writer.publish_kind(wire::KIND_GAP, bytemuck::bytes_of(&mark)).context("writing a gap mark")?;
        Counters::add(&self.counters.gaps, lost);
        self.hwm = first + lost - 1;
        Ok(())
    }

    /// Writes frames (the first is `hwm + 1`), a mark before every
    /// `chunk`; a frame too large for the destination, or of a mark's kind
    /// ([`wire::is_mark_kind`]), is written as a gap.
    fn frames(&mut self, frames: &[(u32, Vec<u8>)], m: &Message, resume: u64) -> Result<()> {
        let mut rest = frames;
        let max_payload = self.max_payload;
        let carried = |(kind, p): &&(u32, Vec<u8>)| p.len() <= max_payload && !wire::is_mark_kind(*kind);
        while !rest.is_empty() {
            let fit = rest.iter().take(self.chunk).take_while(carried).count();
            if fit == 0 {
                let (kind, payload) = &rest[0];
                let why = if wire::is_mark_kind(*kind) {
                    format!("has kind {kind:#x}, a kind of the bridge's own marks in the destination ring")
                } else {
                    format!("is {} bytes; ring slots hold {max_payload}", payload.len())
                };
                error!("source {}/{} frame {} {why}: written as a gap", self.host, self.ring, self.hwm + 1);
                self.gap(self.hwm + 1, 1, m.export_ns, resume)?;
                rest = &rest[1..];
                continue;
            }
            let mut mark = self.mark(self.hwm + 1, 0, m.export_ns, resume);
            mark.src_epoch = m.source.epoch;
            let mut claim = self.writer.claim(fit as u64 + 1).context("claiming destination slots")?;
            claim.push_kind(wire::KIND_BATCH, bytemuck::bytes_of(&mark)).context("writing a batch mark")?;
            let mut bytes = 0;
            for (kind, payload) in &rest[..fit] {
                claim.push_kind(*kind, payload).context("writing a frame")?;
                bytes += payload.len() as u64;
            }
            claim.commit();
            self.hwm += fit as u64;
            Counters::add(&self.counters.frames, fit as u64);
            Counters::add(&self.counters.bytes, bytes);
            rest = &rest[fit..];
        }
        Ok(())
    }
}

/// The place from the destination ring's last frames: the last mark among
/// them and how many frames follow it.
pub fn find_place(ring: &Ring, writer: &Writer, source_id: u64, chunk: usize) -> Result<Place> {
    let last = writer.next_seq() - 1;
    if last == 0 {
        return Ok(Place::default());
    }
    let from = last.saturating_sub(chunk as u64).max(1);
    let opts = ReaderOptions { start: Start::At(from), ..ReaderOptions::named("helix-bridge-place") };
    let mut reader = ring.reader(&opts).context("reading the destination ring's last frames")?;
    let mut buf = vec![0u8; ring.geometry().max_payload as usize];
    let mut found: Option<(u32, Mark, u64)> = None;
    loop {
        match reader.try_read(&mut buf) {
            Ok(info) => {
                match (info.kind, found.as_mut()) {
                    (wire::KIND_BATCH | wire::KIND_GAP, _) if info.len == 64 => {
                        found = Some((info.kind, bytemuck::pod_read_unaligned(&buf[..64]), 0))
                    }
                    (_, Some((_, _, after))) => *after += 1,
                    (_, None) => {}
                }
                if info.seq >= last {
                    break;
                }
            }
            Err(TryReadError::Overrun(_)) => continue,
            Err(TryReadError::Empty) => break,
            Err(e) => bail!("reading the destination ring's last frames: {e}"),
        }
    }
    let Some((kind, mark, after)) = found else {
        bail!(
            "destination ring {} holds {last} frames and no helix-bridge mark among its last {}: something else writes it; \
             give the importer a ring of its own",
            ring.name(),
            last - from + 1
        );
    };
    if mark.source_id != source_id {
        bail!(
            "destination ring {} was filled from another source host/ring; give each source a ring of its own",
            ring.name()
        );
    }
    let hwm = match kind {
        wire::KIND_GAP => mark.first_seq + mark.lost - 1,
        _ => mark.first_seq + after - 1,
    };
    info!(
        "destination ring {}: source sequence {hwm} written; reading the stream from {}",
        ring.name(),
        mark.resume_stream_seq
    );
    Ok(Place { hwm: Some((mark.src_created_ns, hwm)), resume: mark.resume_stream_seq })
}

/// How long a hole may stay open while nothing new arrives before it is
/// written as a gap, for a bridge whose publishes time out after
/// `ack_timeout`: longer than an exporter of the same configuration takes
/// to send a publish that failed again (its ack timeout and the pause
/// before the retry), with 5 s to spare. (Found by review: a fixed 10 s
/// against the default 10 s ack timeout wrote a hole as lost just before
/// the message that filled it was sent again, which was then dropped.)
pub fn hole_timeout(ack_timeout: Duration) -> Duration {
    ack_timeout + crate::export::RETRY_PAUSE + Duration::from_secs(5)
}

#[cfg(test)]
mod hole_tests {
    use super::*;

    #[test]
    fn a_hole_outwaits_the_resend_of_a_publish_that_failed() {
        for ms in [1, 2_000, 10_000, 600_000] {
            let ack = Duration::from_millis(ms);
            let resent = ack + crate::export::RETRY_PAUSE;
            assert!(hole_timeout(ack) >= resent + Duration::from_secs(5), "{ack:?}");
        }
        assert_eq!(hole_timeout(Duration::from_secs(10)), Duration::from_millis(15_500));
    }
}
