//! helix-twin's output: the state table and alarm events, published on
//! their rings (`docs/abi.md` §10), and those rings followed when helixd
//! replaces or repairs them.

use std::time::Duration;

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
        self.snapshot_due |= state_anew;
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
        for chunk in twin.pending_events().chunks(per_claim) {
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
                // same (a claim publishes what it holds when dropped).
                let before = self.alarm_failed;
                self.alarm_failed += (chunk.len() - pushed) as u64;
                if (before + 1..=self.alarm_failed).any(u64::is_power_of_two) {
                    let e = &chunk[pushed];
                    error!(
                        "cannot publish alarm event {} (stream {}) and the {} after it: {err}; {} not published so far",
                        e.event,
                        e.stream,
                        chunk.len() - pushed - 1,
                        self.alarm_failed
                    );
                }
            }
        }
        twin.take_events().for_each(drop);
    }

    /// Publishes `streams` (all of them, between markers, if `snapshot`).
    fn frames(&mut self, twin: &Twin, streams: &[u32], snapshot: bool, now: u64) {
        let round = self.round;
        let flags = if snapshot { FLAG_SNAPSHOT } else { 0 };
        let Some(state_writer) = self.state.as_mut() else {
            let frames = streams.iter().filter(|&&s| twin.state(s, now, round, flags).is_some()).count();
            count_state_failed(
                &mut self.state_failed,
                frames as u64 + 2 * snapshot as u64,
                &"the ring is damaged, waiting for its repair",
            );
            return;
        };
        let cap = state_writer.geometry().capacity.min(1024);
        let marker = twin.marker(round, now, self.alarm_failed);
        let mut pending: Vec<(u32, StreamState)> = Vec::new();
        // Publishes what is pending once it fills a claim (or if `force`);
        // false if that failed.
        let push = |w: &mut Writer, items: &mut Vec<(u32, StreamState)>, failed: &mut u64, force: bool| {
            if items.is_empty() || (!force && (items.len() as u64) < cap) {
                return true;
            }
            let r = w.claim_timeout(items.len() as u64, ALARM_PUBLISH_WAIT).and_then(|mut c| {
                for (kind, s) in items.iter() {
                    if *kind == KIND_STREAM_STATE {
                        c.push_kind(*kind, bytemuck::bytes_of(s))?;
                    } else {
                        c.push_kind(*kind, bytemuck::bytes_of(&marker))?;
                    }
                }
                c.commit();
                Ok::<(), PublishError>(())
            });
            let n = items.len() as u64;
            items.clear();
            r.map_err(|e| count_state_failed(failed, n, &e)).is_ok()
        };
        let zero = bytemuck::Zeroable::zeroed();
        if snapshot {
            pending.push((KIND_SNAPSHOT_BEGIN, zero));
        }
        // Whether every claim so far was published.
        let mut whole = true;
        for &s in streams {
            if let Some(state) = twin.state(s, now, round, flags) {
                pending.push((KIND_STREAM_STATE, state));
                whole &= push(state_writer, &mut pending, &mut self.state_failed, false);
            }
        }
        if snapshot {
            // A begin and an end marker of one round enclose the complete
            // table (docs/abi.md §10.2): a snapshot that lost a claim gets
            // no end marker. The last claim takes it along, or loses it.
            if whole {
                pending.push((KIND_SNAPSHOT_END, zero));
            } else {
                count_state_failed(
                    &mut self.state_failed,
                    1,
                    &"the snapshot's end marker is withheld: part of the snapshot was not published",
                );
            }
        }
        push(state_writer, &mut pending, &mut self.state_failed, true);
    }

    /// Publishes a full snapshot: a begin marker, every stream that has had
    /// a sample, an end marker.
    pub fn snapshot(&mut self, twin: &mut Twin, now: u64) {
        self.round += 1;
        twin.clear_changed();
        let all: Vec<u32> = (0..twin.streams()).collect();
        self.frames(twin, &all, true, now);
    }

    /// Publishes the streams changed since the last publication.
    pub fn update(&mut self, twin: &mut Twin, now: u64) {
        if std::mem::take(&mut self.snapshot_due) {
            return self.snapshot(twin, now);
        }
        let mut changed = std::mem::take(&mut self.changed);
        twin.take_changed(&mut changed);
        if !changed.is_empty() {
            self.round += 1;
            self.frames(twin, &changed, false, now);
        }
        self.changed = changed;
    }
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
