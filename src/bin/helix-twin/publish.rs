//! helix-twin's output: the state table and alarm events, published on
//! their rings (`docs/abi.md` §10), and those rings followed when helixd
//! replaces or repairs them.

use std::time::Duration;

use bytemuck::Zeroable;
use tracing::{error, info, warn};

use helix::shm::Namespace;
use helix::twin::*;
use helix::{PublishError, Writer};

use crate::model::Twin;
use crate::run::{replaced, writer, StartError};

/// Alarm events published per claim at most.
const ALARM_BATCH: u64 = 256;
/// Longest a publish of an alarm event waits for room on a `block` ring.
const ALARM_PUBLISH_WAIT: Duration = Duration::from_millis(100);

/// Writes the state table and alarm events.
pub struct Publisher {
    /// The writers of the state and alarm rings; `None` while a ring is
    /// damaged: its lease let go, so that helixd can repair it (see
    /// [`Publisher::follow_rings`]).
    state: Option<Writer>,
    alarms: Option<Writer>,
    round: u64,
    changed: Vec<u32>,
    /// Alarm events that could not be published.
    pub alarm_failed: u64,
    /// State frames that could not be published.
    pub state_failed: u64,
    /// Set when the state ring is written anew (replaced, or repaired):
    /// the next update is a whole snapshot, so that the changes made
    /// meanwhile reach its readers.
    snapshot_due: bool,
    /// The publication of the state table under way, if any.
    publication: Option<Publication>,
    /// The frames of its claim being written.
    pending: Vec<(u32, StreamState)>,
    /// Whether the failure to take a ring's lease again was logged (state,
    /// alarms).
    retake_logged: [bool; 2],
}

impl Publisher {
    /// Takes the writer leases of the state and alarm rings.
    pub fn attach(ns: &Namespace, state_ring: &str, alarm_ring: &str) -> Result<Publisher, StartError> {
        let state = writer(ns, state_ring, std::mem::size_of::<StreamState>(), "stream state")?;
        let alarms = writer(ns, alarm_ring, std::mem::size_of::<AlarmEvent>(), "alarm")?;
        Ok(Publisher::new(state, alarms))
    }

    /// The state ring's slots (`None` while it is not written).
    pub fn state_capacity(&self) -> Option<u64> {
        self.state.as_ref().map(|w| w.geometry().capacity)
    }

    /// Publishes through these writers (tests make their own).
    pub fn new(state: Writer, alarms: Writer) -> Publisher {
        Publisher {
            state: Some(state),
            alarms: Some(alarms),
            round: 0,
            changed: Vec::new(),
            alarm_failed: 0,
            state_failed: 0,
            snapshot_due: false,
            publication: None,
            pending: Vec::new(),
            retake_logged: [false; 2],
        }
    }

    /// Keeps the state and alarm rings written: a ring replaced (see
    /// [`replaced`]) is written anew; a damaged one (a process that may
    /// write its control region truncated it, say) has its writer lease
    /// let go, which helixd's repair needs, and is written again once it
    /// can be. Logs what it did.
    pub fn follow_rings(&mut self, ns: &Namespace, state_ring: &str, alarm_ring: &str) {
        let Publisher { state, alarms, retake_logged: [state_logged, alarms_logged], .. } = self;
        let rings = [
            (state, state_logged, state_ring, std::mem::size_of::<StreamState>(), "stream state"),
            (alarms, alarms_logged, alarm_ring, std::mem::size_of::<AlarmEvent>(), "alarm"),
        ];
        let mut state_anew = false;
        for (k, (w, logged, ring, needed, what)) in rings.into_iter().enumerate() {
            if let Some(d) = w.as_ref().and_then(Writer::damage) {
                warn!(
                    "ring {ring} is damaged ({d}): its writer lease let go for helixd to repair it; \
                     writing it again once it can be, {what} frames not published until then"
                );
                (*w, *logged) = (None, false);
                continue;
            }
            let anew = match w {
                Some(old) if replaced(ns, ring, old.geometry().created_ns) => match writer(ns, ring, needed, what) {
                    Ok(new) => {
                        (*w, *logged) = (Some(new), false);
                        info!("ring {ring} was replaced (created again); writing the new one");
                        true
                    }
                    Err(e) => {
                        // Said once: it is tried again every second.
                        if !std::mem::replace(logged, true) {
                            warn!(
                                "ring {ring} was replaced (created again), and cannot be written: {e}; retrying \
                                 every second"
                            );
                        }
                        false
                    }
                },
                Some(_) => false,
                None => match writer(ns, ring, needed, what) {
                    Ok(new) => {
                        info!("ring {ring} can be written again (next sequence {}); writing it", new.next_seq());
                        *w = Some(new);
                        true
                    }
                    // Not repaired yet is the usual; anything else (the
                    // lease another's, slots too small, another user's
                    // ring in its place) is said once.
                    Err(e)
                        if matches!(e, StartError::Foreign(_))
                            || !e.is_transient() && !matches!(e, StartError::Attach { .. }) =>
                    {
                        if !std::mem::replace(logged, true) {
                            warn!("ring {ring} cannot be written again: {e}; retrying every second");
                        }
                        false
                    }
                    Err(_) => false,
                },
            };
            state_anew |= anew && k == 0;
        }
        if state_anew {
            // The rest of what was under way is dropped, not counted as
            // failed: the snapshot that follows covers it.
            self.done();
            self.snapshot_due = true;
        }
    }

    /// Publishes the twin's pending alarm events, in order, up to
    /// [`ALARM_BATCH`] per claim: a burst (the simulator's spikes raise a
    /// thousand at once at 50,000 streams) is a few commits, not one commit
    /// (and one wake-up of each parked reader) per event. Events that
    /// cannot be written within a bounded wait are counted and logged, not
    /// retried.
    pub fn alarms(&mut self, twin: &mut Twin) {
        let Some(alarms) = self.alarms.as_mut() else {
            let pending = twin.pending_events().len() as u64;
            let before = self.alarm_failed;
            self.alarm_failed += pending;
            if (before + 1..=self.alarm_failed).any(u64::is_power_of_two) {
                error!(
                    "cannot publish {pending} alarm events: the alarm ring is damaged, waiting for its repair; \
                     {} not published so far",
                    self.alarm_failed
                );
            }
            twin.take_events().for_each(drop);
            return;
        };
        let per_claim = alarms.geometry().capacity.min(ALARM_BATCH) as usize;
        let events = twin.pending_events();
        for (i, chunk) in events.chunks(per_claim).enumerate() {
            let mut pushed = 0;
            let r = alarms.claim_timeout(chunk.len() as u64, ALARM_PUBLISH_WAIT).and_then(|mut c| {
                for e in chunk {
                    c.push_kind(KIND_ALARM, bytemuck::bytes_of(e))?;
                    pushed += 1;
                }
                c.commit();
                Ok(())
            });
            if let Err(err) = r {
                // Those pushed before a failed push are published all the
                // same (a claim publishes what it holds when dropped). The
                // rest of the burst is not tried: each claim would wait its
                // own 100 ms, keeping the loop from telemetry and the
                // watchdog for seconds (found by review).
                let failed = events.len() - i * per_claim - pushed;
                let before = self.alarm_failed;
                self.alarm_failed += failed as u64;
                if (before + 1..=self.alarm_failed).any(u64::is_power_of_two) {
                    let e = &chunk[pushed];
                    error!(
                        "cannot publish alarm event {} (stream {}) and the {} after it: {err}; {} not published so far",
                        e.event,
                        e.stream,
                        failed - 1,
                        self.alarm_failed
                    );
                }
                break;
            }
        }
        twin.take_events().for_each(drop);
    }

    /// Whether a publication of the state table is under way: [`step`]
    /// writes its next claim.
    ///
    /// [`step`]: Publisher::step
    pub fn publishing(&self) -> bool {
        self.publication.is_some()
    }

    /// Begins a full snapshot: a begin marker, every stream that has had a
    /// sample (or was taken over), an end marker. [`step`](Self::step)
    /// writes it a claim at a time.
    pub fn start_snapshot(&mut self, twin: &mut Twin, now: u64) {
        self.finish(twin, now);
        self.snapshot_due = false;
        self.round += 1;
        twin.clear_changed();
        let mut streams = std::mem::take(&mut self.changed);
        streams.clear();
        streams.extend((0..twin.streams()).filter(|&s| twin.has_state(s)));
        let marker = twin.marker(self.round, now, self.alarm_failed);
        self.publication = Some(Publication { marker: Some(marker), round: self.round, streams, next: 0, whole: true });
    }

    /// Begins an update: the streams changed since the last publication (a
    /// snapshot, if the state ring is written anew).
    pub fn start_update(&mut self, twin: &mut Twin, now: u64) {
        self.finish(twin, now);
        if self.snapshot_due {
            return self.start_snapshot(twin, now);
        }
        let mut streams = std::mem::take(&mut self.changed);
        twin.take_changed(&mut streams);
        if streams.is_empty() {
            self.changed = streams;
            return;
        }
        self.round += 1;
        self.publication = Some(Publication { marker: None, round: self.round, streams, next: 0, whole: true });
    }

    /// Writes the next claim of the publication under way (at most 1,024
    /// frames, or the ring's capacity), each stream as of `now`: the twin
    /// reads telemetry between claims, so that a publication of 50,000
    /// streams does not hold up its alarms for milliseconds.
    pub fn step(&mut self, twin: &Twin, now: u64) {
        let Some(p) = self.publication.as_mut() else { return };
        let flags = if p.marker.is_some() { FLAG_SNAPSHOT } else { 0 };
        // The frames of the publication: the begin marker, the streams, the
        // end marker (a snapshot's); `next` counts those written.
        let snapshot = p.marker.is_some() as usize;
        let total = p.streams.len() + 2 * snapshot;
        let Some(w) = self.state.as_mut() else {
            let streams = p.streams[p.next.saturating_sub(snapshot).min(p.streams.len())..].iter();
            let frames = streams.filter(|&&s| twin.has_state(s)).count();
            let markers = if p.next == 0 { 2 * snapshot } else { snapshot };
            count_state_failed(
                &mut self.state_failed,
                (frames + markers) as u64,
                &"the ring is damaged, waiting for its repair",
            );
            return self.done();
        };
        let cap = w.geometry().capacity.min(1024) as usize;
        let pending = &mut self.pending;
        pending.clear();
        let end = (p.next + cap).min(total);
        for i in p.next..end {
            if snapshot == 1 && i == 0 {
                pending.push((KIND_SNAPSHOT_BEGIN, Zeroable::zeroed()));
            } else if snapshot == 1 && i == total - 1 {
                // A begin and an end marker of one round enclose the
                // complete table (docs/abi.md §10.2): a snapshot that lost
                // a claim gets no end marker.
                if p.whole {
                    pending.push((KIND_SNAPSHOT_END, Zeroable::zeroed()));
                } else {
                    count_state_failed(
                        &mut self.state_failed,
                        1,
                        &"the snapshot's end marker is withheld: part of the snapshot was not published",
                    );
                }
            } else if let Some(state) = twin.state(p.streams[i - snapshot], now, p.round, flags) {
                pending.push((KIND_STREAM_STATE, state));
            }
        }
        p.next = end;
        if !pending.is_empty() {
            let marker = p.marker.unwrap_or(Zeroable::zeroed());
            let r = w.claim_timeout(pending.len() as u64, ALARM_PUBLISH_WAIT).and_then(|mut c| {
                for (kind, s) in pending.iter() {
                    let bytes = match *kind {
                        KIND_STREAM_STATE => bytemuck::bytes_of(s),
                        _ => bytemuck::bytes_of(&marker),
                    };
                    c.push_kind(*kind, bytes)?;
                }
                c.commit();
                Ok::<(), PublishError>(())
            });
            if let Err(e) = r {
                p.whole = false;
                count_state_failed(&mut self.state_failed, pending.len() as u64, &e);
            }
        }
        if end == total {
            self.done();
        }
    }

    /// Ends the publication under way, keeping its buffer.
    fn done(&mut self) {
        if let Some(p) = self.publication.take() {
            self.changed = p.streams;
        }
    }

    /// Writes the rest of the publication under way, if any (the twin
    /// stopping leaves no snapshot half written).
    pub fn finish(&mut self, twin: &Twin, now: u64) {
        while self.publishing() {
            self.step(twin, now);
        }
    }

    /// Publishes a full snapshot, whole ([`start_snapshot`] and each
    /// [`step`]): for the tests and the bench (the twin's loop steps).
    ///
    /// [`start_snapshot`]: Publisher::start_snapshot
    /// [`step`]: Publisher::step
    #[allow(dead_code)]
    pub fn snapshot(&mut self, twin: &mut Twin, now: u64) {
        self.start_snapshot(twin, now);
        self.finish(twin, now);
    }

    /// Publishes the streams changed since the last publication, whole.
    #[allow(dead_code)]
    pub fn update(&mut self, twin: &mut Twin, now: u64) {
        self.start_update(twin, now);
        self.finish(twin, now);
    }
}

/// A publication of the state table under way.
struct Publication {
    /// A snapshot's markers (the twin's counters at its start); `None` for
    /// an update.
    marker: Option<Marker>,
    round: u64,
    /// The streams it publishes, in order.
    streams: Vec<u32>,
    /// Frames written so far, the begin marker counted.
    next: usize,
    /// Whether every claim so far was published.
    whole: bool,
}

/// Adds `n` state frames not published to `failed`; says so each time the
/// count passes a power of two.
fn count_state_failed(failed: &mut u64, n: u64, why: &dyn std::fmt::Display) {
    let before = *failed;
    *failed += n;
    if (before + 1..=*failed).any(u64::is_power_of_two) {
        warn!("cannot publish {n} frames of the state table: {why}; {} not published so far", *failed);
    }
}
