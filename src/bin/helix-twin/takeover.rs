//! Taking over from the previous instance (beside `model.rs`, which
//! includes it).
//!
//! A restarted twin starts from nothing: no statistics, no alarms. But a
//! stream that has gone silent never reports again, and a twin that only
//! judges streams that reported to it would never find it stale: its stale
//! alarm would leave with the instance that raised it (readers void an
//! older instance's alarms). So the twin takes over, from the previous
//! instance's newest state frames, when each stream last reported, and
//! judges its staleness again; until the stream reports, the twin
//! publishes that state as its own (its alarm bits this instance's), so
//! that the next instance can take it over in turn.

use helix::twin::{StreamState, FLAG_ALARM_HIGH, FLAG_ALARM_LOW, FLAG_ALARM_RATE, FLAG_ALARM_STALE, FLAG_HAS_RULE};

use super::Twin;

/// A stream taken over from the previous instance that has not reported
/// since. It is judged on this twin's clock (CLOCK_MONOTONIC), which the
/// previous instance's `published_ns` and `age_ns` are of (the ring lives
/// in /dev/shm, which does not outlive a boot).
#[derive(Debug, Clone, Copy)]
pub struct TakenOver {
    /// The previous instance's newest state of the stream.
    pub state: StreamState,
    /// Staleness is judged from this time on: when the previous instance
    /// last read a sample of it (`published_ns - age_ns`; one ahead of the
    /// take-over, a damaged frame, counts as then) if it had judged it
    /// stale, else when this twin took over.
    /// Samples ingested while no twin read the telemetry ring are unknown
    /// to it, so a stream that may have reported then is given
    /// `stale_after` from the take-over: a restart longer than that does
    /// not raise a stale alarm on every stream.
    pub judged_from_ns: u64,
}

impl Twin {
    /// Takes over `previous`, the previous instance's newest state frames
    /// (as `helix::twin::Snapshot::read` finds them on the state ring), at
    /// `now_ns` (CLOCK_MONOTONIC, after this twin began to read telemetry
    /// and before its first sample): each stream in this twin's range that
    /// has not had a sample gets the frame's last sequence and ingest time,
    /// so that [`Twin::tick`] judges it, and is published with that state
    /// until its first sample here ([`TakenOver`]). Returns how many
    /// streams it took over.
    pub fn take_over<'a>(&mut self, previous: impl IntoIterator<Item = &'a StreamState>, now_ns: u64) -> u64 {
        let mut taken = 0;
        for prev in previous {
            // The checks its rule makes now: an alarm taken over that no
            // check of its rule judges would never clear (found by review:
            // a rule changed to drop the limit, with the twin restarted,
            // left the alarm on for good, and every later instance took it
            // over again).
            let judged = self.rule_of(prev.stream).map_or(0, |r| {
                let has = |limit: bool, flag: u32| if limit { flag } else { 0 };
                has(r.low.is_some(), FLAG_ALARM_LOW)
                    | has(r.high.is_some(), FLAG_ALARM_HIGH)
                    | has(r.rate_limit.is_some(), FLAG_ALARM_RATE)
            });
            let Some(st) = self.streams.get_mut(prev.stream as usize) else { continue };
            if st.count > 0 || self.taken_over.contains_key(&prev.stream) {
                continue;
            }
            let seen_ns = prev.published_ns.saturating_sub(prev.age_ns).min(now_ns);
            let was_stale = prev.flags & FLAG_ALARM_STALE != 0;
            let judged_from_ns = if was_stale { seen_ns } else { now_ns };
            (st.last_seq, st.last_ingest_ns, st.seen_ns) = (prev.last_seq, prev.last_ingest_ns, seen_ns);
            // Its low, high and rate alarms stay active (this instance's,
            // without a raise event) until its next sample judges them:
            // a stream that went silent in an excursion stays in it. Only
            // those its rule still checks.
            st.alarms = prev.flags & judged;
            self.counters.alarms_active += u64::from(st.alarms.count_ones());
            let state = StreamState { count: prev.count.max(1), ..*prev };
            self.taken_over.insert(prev.stream, TakenOver { state, judged_from_ns });
            self.seen += 1;
            taken += 1;
        }
        taken
    }

    /// The state of `stream`, taken over and not reported since, as of
    /// `now_ns`: the previous instance's statistics, this instance's
    /// alarms, rule, round and times.
    pub(super) fn taken_over_state(&self, stream: u32, now_ns: u64, round: u64, flags: u32) -> Option<StreamState> {
        let prev = &self.taken_over.get(&stream)?.state;
        let st = &self.streams[stream as usize];
        let rule = self.rule_of(stream);
        let period_ns = rule.and_then(|r| r.period).map_or(prev.period_ns, |p| p.as_nanos() as u64);
        let age_ns = now_ns.saturating_sub(st.seen_ns);
        Some(StreamState {
            flags: st.alarms | flags | if rule.is_some() { FLAG_HAS_RULE } else { 0 },
            instance: self.instance,
            round,
            published_ns: now_ns,
            age_ns,
            period_ns,
            reserved: 0,
            staleness: if period_ns > 0 { age_ns as f64 / period_ns as f64 } else { 0.0 },
            ..*prev
        })
    }
}
