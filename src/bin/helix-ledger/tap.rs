//! One ring the ledger records: attaching to it (of this user's or
//! root's only), reading its batches into the ledger, holding each batch
//! in the ring until the flush that carried it is written, and following
//! it when it is replaced or the writer demotes the ledger.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use helix::ledger::block::{BLOCK_TARGET, ENTRY_HEADER_LEN};
use helix::ledger::format::{RingDecl, GAP_LET_GO, GAP_RING_LOST, GAP_TOO_LARGE, MAX_PAYLOAD};
use helix::ledger::store::{Ledger, LedgerError};
use helix::{
    AttachError, Namespace, Policy, Reader, ReaderOptions, RingFile, RingView, Start, TryReadError, UnderName,
    WaitStrategy,
};

/// Frames read from one ring per batch, at most (a batch is one block: see
/// `Tap::batch`).
const BATCH: usize = 4096;

/// Bytes a let-go's reading of a replaced ring buffers before it writes
/// them ([`Tap::let_go_replaced`]).
const LET_GO_FLUSH: usize = 4 << 20;
/// One ring the ledger records.
pub struct Tap {
    pub name: String,
    pub reader: Option<Reader>,
    pub id: u16,
    pub created_ns: u64,
    /// Frames read per batch: [`BATCH`], or fewer, so that a batch of the
    /// ring's largest frames stays within a block's target size.
    pub batch: usize,
    /// Whether its last batch found the ring empty: what the switch from a
    /// replaced ring waits for (each ring its own: another ring always
    /// busy does not hold it back).
    pub drained: bool,
    /// Why it is not recorded, as last logged: each reason is logged
    /// once (it is looked at every 50 ms) until the ring is recorded.
    pub said: Option<String>,
    /// Frames read and flushed, not yet released: the flush that carried
    /// them ([`Ledger::flushed`] just after it) and the reader's cursor
    /// then, oldest first. Each is released once the ledger has written
    /// that flush.
    pub unwritten: VecDeque<(u64, u64)>,
    /// When the ring was first found replaced while its last batch had
    /// frames: the switch waits for it to be read to its end no longer
    /// than [`SWITCH_WITHIN`].
    pub replaced_since: Option<Instant>,
    /// The last sequence found published in the ring (by a count its
    /// slots bore out, at most a ring's worth past the cursor), looked at
    /// before each batch.
    pub seen: u64,
    /// A ring the tap lost before it read it to its end: found damaged
    /// (reason [`GAP_RING_LOST`]), or let go after a demotion and not
    /// joined again (reason [`GAP_LET_GO`]). Its incarnation, the last
    /// sequence seen published in it, its writer's epoch and the reason.
    /// Made again under its name, what the ledger had not read of it is a
    /// GAP; the same ring (its control file repaired, or joined again) is
    /// read on. (Found by review: it ended in the ledger where the
    /// recorder last read it, without a word.)
    pub lost: Option<(u64, u64, u64, u32)>,
}

/// How long the switch from a replaced ring waits for it to be found
/// empty: a writer still holding the old ring may publish into it for as
/// long as it likes, and the new ring, its own writer's, would have no
/// ledger reader meanwhile (found by review: it waited for ever). Past
/// this, what the old ring holds is read and the rest recorded as a GAP
/// ([`Tap::let_go_replaced`]).
pub const SWITCH_WITHIN: Duration = Duration::from_secs(3);

fn reader_options(next_seq: u64) -> ReaderOptions {
    ReaderOptions { name: "helix-ledger".into(), gating: true, start: Start::At(next_seq), wait: WaitStrategy::Park }
}

impl Tap {
    /// The ring `name`, not attached yet.
    pub fn new(name: &str) -> Tap {
        Tap {
            name: name.to_owned(),
            reader: None,
            id: 0,
            created_ns: 0,
            batch: 1,
            drained: false,
            said: None,
            unwritten: VecDeque::new(),
            replaced_since: None,
            seen: 0,
            lost: None,
        }
    }

    /// Attaches to the ring if it exists, declaring it in the ledger.
    pub fn attach(&mut self, ns: &Namespace, ledger: &mut Ledger) -> Result<(), LedgerError> {
        let view = match RingView::attach(ns, &self.name) {
            Ok(v) => v,
            Err(e) => {
                if let Some(why) = self.anew(format!("ring {}: {e}; attaching when it appears", self.name)) {
                    // Not there yet is how every boot begins (the ledger
                    // starts before helixd creates its rings).
                    if matches!(e, AttachError::NotFound { .. }) {
                        info!("{why}");
                    } else {
                        warn!("{why}");
                    }
                }
                return Ok(());
            }
        };
        let g = view.geometry();
        let decl = RingDecl {
            created_ns: g.created_ns,
            capacity: g.capacity,
            max_payload: g.max_payload,
            policy: u8::from(g.policy == Policy::Block),
            name: self.name.clone(),
        };
        // Before it is declared: another user's ring under the name
        // (anyone may create files in /dev/shm) is not recorded, lest its
        // frames stand in the audit trail as the ring's.
        if let Err(e) = view.check_owner() {
            self.refuse(&e);
            return Ok(());
        }
        self.gap_for_a_lost_ring(ledger, g.created_ns);
        let (id, next) = ledger.declare(&decl)?;
        // On the mapping judged and declared above, whatever the name
        // means by now.
        match view.reader(&reader_options(next)) {
            Ok(mut r) => {
                r.set_deferred_release(true);
                // A configured trade-off (control.acks, by default), said
                // once; a frame actually lost is a warning of its own.
                if g.policy == Policy::Overwrite {
                    info!(
                        "ring {} overwrites: frames the ledger is too slow for are lost (and recorded as GAPs)",
                        self.name
                    );
                }
                info!("recording ring {} from sequence {next} (ledger ring id {id})", self.name);
                self.unwritten.clear();
                self.reader = Some(r);
                self.id = id;
                self.created_ns = g.created_ns;
                self.batch = (BLOCK_TARGET / (ENTRY_HEADER_LEN + g.max_payload as usize)).clamp(1, BATCH);
                self.said = None;
                self.replaced_since = None;
                self.seen = next.saturating_sub(1);
            }
            Err(e) => {
                if let Some(why) = self.anew(format!("ring {}: cannot attach: {e}; retrying", self.name)) {
                    warn!("{why}");
                }
            }
        }
        Ok(())
    }

    /// Before ring `created_ns` is declared under the name (0: at once, its
    /// data region damaged): if it replaces one found damaged
    /// ([`Tap::lost`]), what the ledger had not read of that one, up to the
    /// last sequence seen published in it, is a GAP.
    fn gap_for_a_lost_ring(&mut self, ledger: &mut Ledger, created_ns: u64) {
        let Some((lost, seen, epoch, reason)) = self.lost.take() else { return };
        let Some(id) = ledger.chain().ring_id(&self.name) else { return };
        let ring = &ledger.chain().rings[id as usize];
        if ring.decl.created_ns != lost || created_ns == lost || seen < ring.next_seq {
            return;
        }
        let first = ring.next_seq;
        let why = if reason == GAP_RING_LOST { "its data region was damaged" } else { "the ledger was let go of it" };
        warn!(
            "ring {}: {why}; sequences {first} to {seen} of it were published and not read: recording a GAP",
            self.name
        );
        ledger.append_gap_for(id, first, seen, epoch, reason);
    }

    /// Says that another user's ring is not recorded.
    fn refuse(&mut self, e: &helix::ForeignRing) {
        let why = format!(
            "ring {}: not recorded: {e}; recording it once a ring of this user's or root's is there",
            self.name
        );
        if let Some(why) = self.anew(why) {
            error!("{why}");
        }
    }

    /// `why`, if it is not what was logged last.
    fn anew(&mut self, why: String) -> Option<String> {
        (self.said.as_ref() != Some(&why)).then(|| {
            self.said = Some(why.clone());
            why
        })
    }

    /// Records frame `seq` of `len` bytes, at the reader's cursor and larger
    /// than a record may carry, as a GAP of reason [`GAP_TOO_LARGE`], and
    /// reads past it; says so. Returns the records added. A frame
    /// overwritten meanwhile is part of the overrun the read reports, and
    /// recorded as such. (Found by review: that overrun was dropped, the
    /// reader having moved past the lost frames; the next block skipped
    /// them, and the recorder panicked.)
    fn record_too_large(&mut self, ledger: &mut Ledger, (seq, len): (u64, usize), epoch: u64) -> usize {
        let Some(reader) = self.reader.as_mut() else { return 0 };
        match reader.try_read_batch(1, |_| {}) {
            Ok(1) => {}
            Err(e @ TryReadError::Overrun(_)) => return self.took(ledger, Err(e), epoch),
            _ => return 0,
        }
        warn!(
            "ring {}: frame {seq} is {len} bytes, more than a ledger record may carry ({MAX_PAYLOAD}); recording a \
             GAP for it",
            self.name
        );
        ledger.append_gap_for(self.id, seq, seq, epoch, GAP_TOO_LARGE);
        1
    }

    /// Reads one batch into the ledger, as one block; returns how many
    /// records it added.
    #[inline]
    pub fn pump(&mut self, ledger: &mut Ledger) -> usize {
        let Some(reader) = self.reader.as_mut() else { return 0 };
        let id = self.id;
        let epoch = reader.writer_epoch();
        if let Some(lag) = reader.trusted_lag() {
            let most = lag.min(reader.geometry().capacity);
            self.seen = self.seen.max(reader.cursor().saturating_sub(1).saturating_add(most));
        }
        self.drained = false;
        match read_batch(reader, ledger, id, epoch, self.batch) {
            (Ok(0), Some(big)) => {
                ledger.seal(id, 0);
                self.record_too_large(ledger, big, epoch)
            }
            (got, _) => self.took(ledger, got, epoch),
        }
    }

    /// What a batch read into the ledger came to (`got`): the block sealed,
    /// or why nothing was read. Returns the records added.
    fn took(&mut self, ledger: &mut Ledger, got: Result<usize, TryReadError>, epoch: u64) -> usize {
        let id = self.id;
        match got {
            Ok(n) => {
                // Stamped now that the whole batch has been read.
                ledger.stamp_unsealed(helix::process::realtime_ns());
                ledger.seal(id, n);
                n
            }
            Err(TryReadError::Empty) => {
                ledger.seal(id, 0);
                self.drained = true;
                0
            }
            Err(TryReadError::Overrun(o)) => {
                ledger.seal(id, 0);
                let first = o.resume_at - o.lost;
                warn!(
                    "ring {}: sequences {first} to {} were overwritten before the ledger read them; recording a GAP",
                    self.name,
                    o.resume_at - 1
                );
                ledger.append_gap(id, first, o.resume_at - 1, epoch);
                1
            }
            Err(TryReadError::Frame(e)) => {
                // A batch reports no frame errors; should one appear, the
                // frame stays unread and is retried.
                ledger.seal(id, 0);
                error!("ring {}: {e}", self.name);
                0
            }
            Err(TryReadError::Damaged(d)) => {
                // A ring file shrank under the reader: drop it; `check`
                // attaches again, at the ledger's next sequence, once the
                // ring is repaired.
                ledger.seal(id, 0);
                warn!("{d}");
                // A data region shrunk is never repaired (helixd makes the
                // ring again): its unread frames are gone now, and said so
                // now, lest a restart meanwhile forget it (found by review).
                // A control file may be: said if the ring is made again.
                self.lost = Some((self.created_ns, self.seen, epoch, GAP_RING_LOST));
                if d.file == RingFile::Data {
                    self.gap_for_a_lost_ring(ledger, 0);
                }
                // Its frames are gone with its memory: nothing to hold.
                self.reader = None;
                self.unwritten.clear();
                0
            }
        }
    }

    /// Notes that what was read so far went out with flush `flush`.
    pub fn flushed(&mut self, flush: u64) {
        let Some(r) = self.reader.as_ref() else { return };
        // Everything read so far went out with this flush or before it.
        let cursor = r.cursor();
        match self.unwritten.back_mut() {
            Some(last) if last.0 == flush => last.1 = cursor,
            // Nothing read since the last flush.
            Some(&mut (_, c)) if c == cursor => {}
            None if r.released() == cursor => {}
            _ => self.unwritten.push_back((flush, cursor)),
        }
    }

    /// Releases the frames of every flush the ledger has written.
    pub fn release_written(&mut self, written: u64) {
        let mut upto = None;
        while let Some(&(flush, cursor)) = self.unwritten.front() {
            if flush > written {
                break;
            }
            upto = Some(cursor);
            self.unwritten.pop_front();
        }
        if let (Some(seq), Some(r)) = (upto, self.reader.as_mut()) {
            r.release_to(seq);
        }
    }

    /// Stops reading the ring, once what was read from it is written: a
    /// frame let go unwritten would be lost to a crash, with no GAP.
    fn let_go(&mut self, ledger: &mut Ledger) -> Result<(), LedgerError> {
        ledger.flush()?;
        ledger.wait_written()?;
        self.reader = None;
        self.unwritten.clear();
        Ok(())
    }

    /// Stops reading a replaced ring, found read to its end: what its
    /// writer published since (one that still holds the old ring) is read
    /// first, as much as the ring holds; what it publishes while the ledger
    /// writes that out is recorded as a GAP of reason [`GAP_LET_GO`], so no
    /// sequence of it goes unsaid. (Found by review: the ring was let go as
    /// found drained, and frames published since were neither recorded nor
    /// a GAP.)
    fn let_go_replaced(&mut self, ledger: &mut Ledger) -> Result<(), LedgerError> {
        let Some(r) = self.reader.as_ref() else { return Ok(()) };
        // Not followed for ever: a ring's worth of batches, and one more.
        let batches = r.geometry().capacity.div_ceil(self.batch as u64) + 1;
        for _ in 0..batches {
            // (A damaged ring's reader is dropped by the pump: nothing left.)
            if self.pump(ledger) == 0 && (self.drained || self.reader.is_none()) {
                break;
            }
            // Written as it goes, not held whole (found by review: a ring's
            // worth of data, GiBs for a large ring, on the recording thread).
            if ledger.buffered() >= LET_GO_FLUSH {
                ledger.flush()?;
            }
        }
        ledger.flush()?;
        ledger.wait_written()?;
        // By a `published` the slots bear out, and a ring's worth at most:
        // anyone who maps the old ring writable can store the count, and
        // the stamp that bears it out, and would have it recorded as a
        // false GAP (found by review: u64::MAX made one of 1.8e19
        // sequences; then 2^63 - 1, with its stamp).
        match self.reader.as_ref().map(|r| (r, r.trusted_lag())) {
            Some((r, Some(lag))) if lag > 0 => {
                let capacity = r.geometry().capacity;
                let (first, last) = (r.cursor(), r.cursor().saturating_add(lag.min(capacity) - 1));
                let more = if lag > capacity { " (it says more, past what it holds: not recorded)" } else { "" };
                warn!(
                    "ring {}: sequences {first} to {last} were published into it after it was replaced and read to \
                     its end{more}; recording a GAP",
                    self.name
                );
                ledger.append_gap_for(self.id, first, last, r.writer_epoch(), GAP_LET_GO);
            }
            Some((r, None)) => warn!(
                "ring {}: let go at sequence {} with a published count its slots do not bear out (written by hand?); \
                 what its writer published after that is not known, and not recorded",
                self.name,
                r.cursor()
            ),
            _ => {}
        }
        self.let_go(ledger)
    }

    /// Housekeeping for one ring: switch to a replacement ring once the
    /// old one is drained, or re-register after a demotion. The
    /// replacement first: a reader demoted on a ring since replaced would
    /// otherwise join the new ring at the old one's sequence, under its
    /// declaration.
    pub fn check(&mut self, ns: &Namespace, ledger: &mut Ledger) -> Result<(), LedgerError> {
        let Some(reader) = self.reader.as_ref() else { return self.attach(ns, ledger) };
        let under = RingView::under_name(ns, &self.name, self.created_ns);
        // A replacement gone again is waited for afresh (found by review).
        if !matches!(under, UnderName::Replaced(_)) {
            self.replaced_since = None;
        }
        let now = match under {
            UnderName::Replaced(_) if self.drained => {
                info!("ring {} was replaced; the old one is drained, recording the new one", self.name);
                self.let_go_replaced(ledger)?;
                return self.attach(ns, ledger);
            }
            UnderName::Replaced(_) if self.replaced_since.is_some_and(|t| t.elapsed() >= SWITCH_WITHIN) => {
                warn!(
                    "ring {} was replaced {} s ago and a writer still publishes into the old one; recording the new \
                     one, the old one's rest as a GAP",
                    self.name,
                    SWITCH_WITHIN.as_secs()
                );
                self.let_go_replaced(ledger)?;
                return self.attach(ns, ledger);
            }
            UnderName::Replaced(_) => {
                self.replaced_since.get_or_insert_with(Instant::now);
                return Ok(());
            }
            UnderName::Same(view) => Ok(view),
            UnderName::Gone => Err("its files were removed".to_owned()),
            UnderName::Unknown(e) => Err(e.to_string()),
        };
        if !reader.was_demoted() {
            return Ok(());
        }
        // Its name no longer holds it: it is read on, demoted (found by
        // review: it was let go, though it could still be read to its
        // end, and a ring made again under the name declared without a
        // GAP for its rest). A replacement is followed as any is.
        let view = match now {
            Ok(view) => view,
            Err(e) => {
                let why = format!("ring {}: the writer demoted the ledger, and {e}; reading it on, demoted", self.name);
                if let Some(why) = self.anew(why) {
                    warn!("{why}");
                }
                return Ok(());
            }
        };
        let (next, epoch) = (ledger.chain().rings[self.id as usize].next_seq, reader.writer_epoch());
        warn!("ring {}: the writer demoted the ledger (too slow); re-registering as a gating reader", self.name);
        self.let_go(ledger)?;
        // Only on the ring it was recording (of this user's, created then):
        // anything else is for `attach` at the next look. Not joined again,
        // a ring made again under the name has a GAP for its rest first.
        let joined = match view.check_owner() {
            Ok(()) => view.reader(&reader_options(next)).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match joined {
            Ok(mut r) => {
                r.set_deferred_release(true);
                self.reader = Some(r);
            }
            Err(e) => {
                warn!("ring {}: cannot attach: {e}; retrying", self.name);
                self.lost = Some((self.created_ns, self.seen, epoch, GAP_LET_GO));
            }
        }
        Ok(())
    }
}

/// Reads up to `batch` frames of `reader` into the open block of ring `id`
/// (read under writer `epoch`), ending the batch before a frame larger than
/// a record may carry (a ring's slots hold up to 48 bytes more than the
/// 16 MiB a ring may be configured with), whose sequence and length come
/// back. Found by review: the recorder panicked on such a frame, and again
/// at every start, reading it again.
fn read_batch(
    reader: &mut Reader,
    ledger: &mut Ledger,
    id: u16,
    epoch: u64,
    batch: usize,
) -> (Result<usize, TryReadError>, Option<(u64, usize)>) {
    let mut too_large = None;
    let got = reader.try_read_batch_while(batch, |f| {
        if f.len() > MAX_PAYLOAD {
            too_large = Some((f.seq(), f.len()));
            return false;
        }
        let payload = ledger.reserve_frame(id, f.seq(), epoch, 0, f.kind(), f.len());
        // A frame overwritten while copied is not counted by the batch,
        // and `seal` drops it.
        let _ = f.copy_to(payload);
        true
    });
    (got, too_large)
}

#[cfg(test)]
mod tests;
