//! helix-twin: the digital twin. It reads the `telemetry` ring as a
//! non-gating reader, keeps a live model of every stream (last value and
//! times, count, min, max, running mean and variance, an exponentially
//! weighted mean, observed rate, staleness, gaps, and a one-step-ahead
//! prediction), raises and clears alarms by the configured rules, and
//! publishes the state table on `twin.state` and alarm events on `alarms`.
//!
//! The model ([`Twin`]) is plain computation: it is fed [`Input`]s and told
//! the time ([`Twin::tick`]); it never reads a clock itself, so what it
//! computes from a given input is exact and repeatable. `run.rs` wires it
//! to the rings, systemd and signals.

use std::collections::HashMap;

use helix::telemetry::Sample;
use helix::twin::*;

use crate::config::{Rule, TwinConfig};

// Beside this file whoever compiles it in (helix-twin, its tests, its bench).
#[path = "moments.rs"]
mod moments;
#[path = "takeover.rs"]
mod takeover;
use moments::Moments;
use takeover::TakenOver;

/// One telemetry frame as the twin classifies it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Input {
    /// A sample frame (kind 1, 40 bytes).
    Sample(Sample),
    /// A frame of another kind (counted as `bad_kind`).
    BadKind(u32),
    /// A sample frame of the wrong length (counted as `bad_size`).
    BadSize(usize),
}

/// The twin's own counters (also published in every snapshot marker).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Telemetry frames consumed (of any kind).
    pub frames: u64,
    /// Overrun events on the telemetry ring.
    pub overruns: u64,
    /// Telemetry frames lost to overruns.
    pub lost: u64,
    /// Samples of a stream id beyond the configured streams.
    pub rejected_streams: u64,
    /// Frames of an unknown kind.
    pub bad_kind: u64,
    /// Sample frames of the wrong size.
    pub bad_size: u64,
    /// Samples with a NaN or infinite value.
    pub nonfinite: u64,
    /// Samples missing from streams' sequence numbers.
    pub gaps: u64,
    /// Samples whose per-stream sequence went backwards and that were
    /// sampled after the stream's newest, or lie further back than
    /// [`REORDER_WINDOW`] (a restarted source): taken, no gap counted.
    pub seq_resets: u64,
    /// Samples that arrived after a newer one of their stream (reordered
    /// on the way), each filling the gap counted when it was skipped:
    /// taken into the statistics that do not depend on order (see
    /// `Twin::out_of_order`).
    pub late: u64,
    /// Samples of a sequence number their stream had already taken (a
    /// repeated datagram): not taken (they may raise an alarm).
    pub repeated: u64,
    /// Alarm events produced.
    pub alarm_events: u64,
    /// Alarms active now.
    pub alarms_active: u64,
}

/// How far behind its stream's newest sample a sample may arrive and still
/// be told late (filling its gap) or repeated, rather than a restart.
pub const REORDER_WINDOW: u64 = 64;

/// Where a sample's sequence number puts it in its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// Past the newest: `steps` ahead, the `steps - 1` between missing
    /// (lost, or yet to arrive late).
    Next { steps: u64 },
    /// Behind the newest, within the window, sampled before it and not
    /// taken yet: one counted missing has arrived.
    Late,
    /// Within the window and taken already.
    Repeated,
    /// Behind the newest but sampled after it, or further back than the
    /// window: the source started its sequence again.
    Restarted,
}

/// One stream's model.
#[derive(Debug, Clone, Copy, Default)]
struct Stream {
    count: u64,
    last: f64,
    last_seq: u64,
    /// Bit `k`: sequence `last_seq - 1 - k` has arrived (or is not to be
    /// counted: behind the first sample or a restart).
    behind: u64,
    last_sample_ns: u64,
    last_ingest_ns: u64,
    /// When this twin read its last sample, on its own clock: staleness
    /// and age are judged from it ([`Twin::reading`]).
    seen_ns: u64,
    last_quality: u32,
    min: f64,
    max: f64,
    /// Mean, variance, EWMA, level and trend.
    moments: Moments,
    /// Smoothed interval between samples, ns (0: unknown).
    interval_ns: f64,
    gaps: u64,
    /// Active alarm flags.
    alarms: u32,
    dirty: bool,
}

impl Stream {
    /// Takes the stream's first sample.
    fn first(&mut self, v: f64) {
        (self.min, self.max) = (v, v);
        self.moments.first(v);
        self.interval_ns = 0.0;
        self.count = 1;
        self.behind = u64::MAX;
    }

    /// Places `s` against the newest sample (not yet taken) and moves the
    /// window of what has arrived. A late sample fills its gap here.
    fn place(&mut self, s: &Sample) -> Place {
        if s.seq > self.last_seq {
            let steps = s.seq - self.last_seq;
            // Shift the window by `steps`; the old newest is `steps - 1`
            // behind the new one, those between it and the new one are not
            // here (yet).
            let kept = if steps < 64 { self.behind << steps } else { 0 };
            let newest = if steps <= 64 { 1 << (steps - 1) } else { 0 };
            self.behind = kept | newest;
            // A sender chooses `seq`: jumps of 2^64 must not wrap.
            self.gaps = self.gaps.saturating_add(steps - 1);
            return Place::Next { steps };
        }
        let back = self.last_seq - s.seq;
        if back > REORDER_WINDOW || s.sample_ns > self.last_sample_ns {
            self.behind = u64::MAX;
            return Place::Restarted;
        }
        if back == 0 {
            return Place::Repeated;
        }
        let bit = 1u64 << (back - 1);
        if self.behind & bit != 0 {
            return Place::Repeated;
        }
        self.behind |= bit;
        self.gaps = self.gaps.saturating_sub(1);
        Place::Late
    }

    /// Takes a later sample, `steps` sequence numbers after the newest
    /// (1 after a restart): the sample interval, the rate alarm (into
    /// `rate`) and the statistics.
    fn follow(&mut self, s: &Sample, steps: u64, rule: Option<&Rule>, alpha: f64, beta: f64, rate: &mut Fire) {
        let v = s.value;
        let dt = s.sample_ns.wrapping_sub(self.last_sample_ns) as i64;
        if dt > 0 {
            let per = dt as f64 / steps as f64;
            self.interval_ns =
                if self.interval_ns == 0.0 { per } else { self.interval_ns + alpha * (per - self.interval_ns) };
            *rate = self.rate(s, rule);
        }
        self.count += 1;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.moments.take(v, self.count, alpha, beta);
    }

    /// The rate alarm's transition for `s`, from the last sample (its value
    /// `last` at `last_sample_ns`), under `rule`.
    fn rate(&self, s: &Sample, rule: Option<&Rule>) -> Fire {
        let limit = rule.and_then(|r| r.rate_limit)?;
        let dt = s.sample_ns.wrapping_sub(self.last_sample_ns) as i64;
        if dt <= 0 {
            return None;
        }
        // Two finite values can be further apart than an f64 holds.
        let roc = ((s.value - self.last) / (dt as f64 / 1e9)).clamp(-f64::MAX, f64::MAX);
        let active = self.alarms & AlarmKind::Rate.flag() != 0;
        if !active && roc.abs() > limit {
            Some((AlarmKind::Rate, true, roc, limit))
        } else if active && roc.abs() <= limit {
            Some((AlarmKind::Rate, false, roc, limit))
        } else {
            None
        }
    }

    /// The low and high alarms' transitions for value `v` under `r`.
    fn limits(&self, r: &Rule, v: f64) -> [Fire; 2] {
        let active = |k: AlarmKind| self.alarms & k.flag() != 0;
        let mut fire = [None; 2];
        if let Some(low) = r.low {
            if !active(AlarmKind::Low) && v < low {
                fire[0] = Some((AlarmKind::Low, true, v, low));
            } else if active(AlarmKind::Low) && v >= low + r.hysteresis {
                fire[0] = Some((AlarmKind::Low, false, v, low + r.hysteresis));
            }
        }
        if let Some(high) = r.high {
            if !active(AlarmKind::High) && v > high {
                fire[1] = Some((AlarmKind::High, true, v, high));
            } else if active(AlarmKind::High) && v <= high - r.hysteresis {
                fire[1] = Some((AlarmKind::High, false, v, high - r.hysteresis));
            }
        }
        fire
    }
}

/// An alarm to raise or clear: its kind, raise (or clear), the value and
/// the limit.
type Fire = Option<(AlarmKind, bool, f64, f64)>;

/// The digital twin's model of every stream, and its alarm state.
pub struct Twin {
    streams: Vec<Stream>,
    rule_of: Vec<u32>,
    rules: Vec<Rule>,
    alpha: f64,
    beta: f64,
    instance: u64,
    counters: Counters,
    events: Vec<AlarmEvent>,
    dirty: Vec<u32>,
    seen: u64,
    /// The streams taken over from the previous instance that have not
    /// reported since, by id (their `count` is 0; their `last_seq` and
    /// `last_ingest_ns` are the previous instance's): see
    /// [`Twin::take_over`].
    taken_over: HashMap<u32, TakenOver>,
    /// This twin's clock when it read the samples it takes now
    /// ([`Twin::reading`]).
    read_ns: Option<u64>,
    /// Whether the telemetry ring held more than the twin read last
    /// ([`Twin::behind`]).
    behind: bool,
}

impl Twin {
    /// A twin for `config`'s streams and rules; `instance` identifies it in
    /// what it publishes (its start time, CLOCK_REALTIME ns).
    pub fn new(config: &TwinConfig, instance: u64) -> Twin {
        Twin {
            streams: vec![Stream::default(); config.streams as usize],
            rule_of: config.rule_index(),
            rules: config.rules.clone(),
            alpha: config.ewma_alpha,
            beta: config.trend_beta,
            instance,
            counters: Counters::default(),
            events: Vec::with_capacity(1024),
            dirty: Vec::with_capacity(config.streams as usize),
            seen: 0,
            taken_over: HashMap::new(),
            read_ns: None,
            behind: false,
        }
    }

    /// Whether the telemetry ring holds more than the twin has read: then
    /// no stream is judged stale, its newer samples may be unread (found
    /// by review: a twin held off the CPU past a `stale_after` raised a
    /// stale alarm on every slow stream as it read its backlog).
    pub fn behind(&mut self, behind: bool) {
        self.behind = behind;
    }

    /// This twin's clock (CLOCK_MONOTONIC) as it reads the samples it
    /// takes next: staleness and age are judged from when the twin read a
    /// stream's last sample, not from `ingest_ns`, the ring writer's clock
    /// (a bridge's telemetry is of another host's, which may boot again, a
    /// replay's of the recording's). Found by review: judged on it, a
    /// writer's clock ahead never let a stream be stale, one behind raised
    /// every stream stale at every tick. A model fed without it (by hand)
    /// takes a sample's `ingest_ns` for when it was read.
    pub fn reading(&mut self, now_ns: u64) {
        self.read_ns = Some(now_ns);
    }

    /// Streams configured.
    pub fn streams(&self) -> u32 {
        self.streams.len() as u32
    }

    /// Streams that have had a sample.
    pub fn streams_seen(&self) -> u64 {
        self.seen
    }

    /// The counters.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Takes in one telemetry frame.
    #[inline]
    pub fn input(&mut self, input: &Input) {
        self.counters.frames += 1;
        match input {
            Input::Sample(s) => self.sample(s),
            Input::BadKind(_) => self.counters.bad_kind += 1,
            Input::BadSize(_) => self.counters.bad_size += 1,
        }
    }

    /// Records `lost` telemetry frames lost to one overrun. Which streams
    /// they belonged to is unknowable; each stream's own gaps show up when
    /// its next sample arrives (by its sequence number).
    pub fn overrun(&mut self, lost: u64) {
        self.counters.overruns += 1;
        self.counters.lost = self.counters.lost.saturating_add(lost);
    }

    /// The rule that applies to `stream`, if any.
    pub fn rule_of(&self, stream: u32) -> Option<&Rule> {
        self.rule_of.get(stream as usize).and_then(|&i| self.rules.get(i as usize))
    }

    #[inline]
    fn sample(&mut self, s: &Sample) {
        let Some(st) = self.streams.get_mut(s.stream as usize) else {
            self.counters.rejected_streams += 1;
            return;
        };
        let v = s.value;
        if !v.is_finite() {
            self.counters.nonfinite += 1;
            return;
        }
        let rule = self.rules.get(self.rule_of[s.stream as usize] as usize);
        // Low, high, rate, stale: the order events go out in.
        let mut fire: [Fire; 4] = [None; 4];
        if st.count == 0 {
            // One taken over was counted seen then; its own statistics
            // begin, and its rate is judged from the previous instance's
            // last sample (found by review: a rate alarm taken over was
            // judged only at the second sample).
            match self.taken_over.remove(&s.stream) {
                Some(t) => {
                    (st.last, st.last_sample_ns) = (t.state.last, t.state.last_sample_ns);
                    fire[2] = st.rate(s, rule);
                }
                None => self.seen += 1,
            }
            st.first(v);
        } else {
            let steps = match st.place(s) {
                Place::Next { steps } => {
                    self.counters.gaps = self.counters.gaps.saturating_add(steps - 1);
                    steps
                }
                Place::Restarted => {
                    self.counters.seq_resets += 1;
                    1
                }
                Place::Late => return self.out_of_order(s, true),
                Place::Repeated => return self.out_of_order(s, false),
            };
            st.follow(s, steps, rule, self.alpha, self.beta, &mut fire[2]);
        }
        let seen_ns = self.read_ns.unwrap_or(s.ingest_ns);
        if st.alarms & AlarmKind::Stale.flag() != 0 {
            let age = seen_ns.saturating_sub(st.seen_ns) as f64 / 1e9;
            let limit = rule.and_then(|r| r.stale_after).map_or(0.0, |d| d.as_secs_f64());
            fire[3] = Some((AlarmKind::Stale, false, age, limit));
        }
        if let Some(r) = rule {
            [fire[0], fire[1]] = st.limits(r, v);
        }
        st.last = v;
        st.last_seq = s.seq;
        st.last_sample_ns = s.sample_ns;
        st.last_ingest_ns = s.ingest_ns;
        st.seen_ns = seen_ns;
        st.last_quality = s.quality;
        if !st.dirty {
            st.dirty = true;
            self.dirty.push(s.stream);
        }
        for (kind, raise, value, limit) in fire.into_iter().flatten() {
            self.event(s.stream, kind, raise, s.ingest_ns, s.seq, value, limit);
        }
    }

    /// A sample behind its stream's newest: a late one ([`Place::Late`])
    /// fills its gap and goes into the statistics that do not depend on
    /// order (count, min, max, mean, variance), a repeated one into none.
    /// Either may raise a low or high alarm, which shows the excursion
    /// happened, and never clears one: the newest sample says what holds
    /// now. (So a sender that gets samples in ahead of an instrument's
    /// cannot keep the instrument's excursions from raising alarms.) The
    /// last value, the smoothing, the rate and staleness follow the newest.
    #[cold]
    fn out_of_order(&mut self, s: &Sample, late: bool) {
        let (i, v) = (s.stream as usize, s.value);
        let rule = self.rules.get(self.rule_of[i] as usize);
        let st = &mut self.streams[i];
        if late {
            self.counters.late += 1;
            self.counters.gaps = self.counters.gaps.saturating_sub(1);
            st.count += 1;
            (st.min, st.max) = (st.min.min(v), st.max.max(v));
            st.moments.take_unordered(v, st.count);
            if !st.dirty {
                st.dirty = true;
                self.dirty.push(s.stream);
            }
        } else {
            self.counters.repeated += 1;
        }
        let raises = rule.map_or([None; 2], |r| st.limits(r, v)).map(|f| f.filter(|&(_, raise, _, _)| raise));
        for (kind, raise, value, limit) in raises.into_iter().flatten() {
            self.event(s.stream, kind, raise, s.ingest_ns, s.seq, value, limit);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn event(&mut self, stream: u32, kind: AlarmKind, raise: bool, time_ns: u64, seq: u64, value: f64, limit: f64) {
        let st = &mut self.streams[stream as usize];
        if raise {
            st.alarms |= kind.flag();
            self.counters.alarms_active += 1;
        } else {
            st.alarms &= !kind.flag();
            self.counters.alarms_active -= 1;
        }
        if !st.dirty {
            st.dirty = true;
            self.dirty.push(stream);
        }
        self.counters.alarm_events += 1;
        self.events.push(AlarmEvent {
            stream,
            rule: kind.number(),
            action: if raise { ACTION_RAISE } else { ACTION_CLEAR },
            instance: self.instance,
            event: self.counters.alarm_events,
            time_ns,
            sample_seq: seq,
            value,
            limit,
        });
    }

    /// Judges staleness at `now_ns` (this twin's CLOCK_MONOTONIC): a
    /// stream with a `stale_after` rule that has reported, and whose last
    /// sample this twin read longer than that ago ([`Twin::reading`]),
    /// raises its stale alarm (its next sample clears it). A stream that
    /// never reported is not judged; one taken over from the previous
    /// instance is, from [`TakenOver::judged_from_ns`]; none while the
    /// twin is [behind](Twin::behind). The raise's time is on the writer's
    /// clock, as every event's: the last `ingest_ns` and the age.
    pub fn tick(&mut self, now_ns: u64) {
        if self.behind {
            return;
        }
        for i in 0..self.streams.len() {
            let st = &self.streams[i];
            if st.alarms & AlarmKind::Stale.flag() != 0 {
                continue;
            }
            let since = match st.count {
                0 if self.taken_over.is_empty() => continue,
                0 => match self.taken_over.get(&(i as u32)) {
                    Some(t) => t.judged_from_ns,
                    None => continue,
                },
                _ => st.seen_ns,
            };
            let Some(after) = self.rules.get(self.rule_of[i] as usize).and_then(|r| r.stale_after) else {
                continue;
            };
            if now_ns.saturating_sub(since) > after.as_nanos() as u64 {
                let (seq, age) = (st.last_seq, now_ns.saturating_sub(st.seen_ns));
                let time = st.last_ingest_ns.saturating_add(age);
                self.event(i as u32, AlarmKind::Stale, true, time, seq, age as f64 / 1e9, after.as_secs_f64());
            }
        }
    }

    /// Alarm events produced since the last call, oldest first.
    pub fn take_events(&mut self) -> std::vec::Drain<'_, AlarmEvent> {
        self.events.drain(..)
    }

    /// Alarm events waiting to be taken.
    pub fn pending_events(&self) -> &[AlarmEvent] {
        &self.events
    }

    /// Moves the ids of streams changed since the last call into `out`
    /// (which is cleared first), in the order they first changed.
    pub fn take_changed(&mut self, out: &mut Vec<u32>) {
        out.clear();
        for &s in &self.dirty {
            self.streams[s as usize].dirty = false;
        }
        std::mem::swap(out, &mut self.dirty);
    }

    /// Marks every stream as unchanged (after a full snapshot).
    pub fn clear_changed(&mut self) {
        for &s in &self.dirty {
            self.streams[s as usize].dirty = false;
        }
        self.dirty.clear();
    }

    /// Whether [`state`](Self::state) has a state for `stream`: it has had
    /// a sample, or was taken over. Once true, it stays so.
    pub fn has_state(&self, stream: u32) -> bool {
        self.streams.get(stream as usize).is_some_and(|st| st.count > 0) || self.taken_over.contains_key(&stream)
    }

    /// Stream `stream`'s state as of `now_ns`, if it has had a sample (or,
    /// taken over, had one in the previous instance: [`Twin::take_over`]).
    /// `round` and `flags` (e.g. [`FLAG_SNAPSHOT`]) go into the frame.
    pub fn state(&self, stream: u32, now_ns: u64, round: u64, flags: u32) -> Option<StreamState> {
        let st = self.streams.get(stream as usize)?;
        if st.count == 0 {
            return self.taken_over_state(stream, now_ns, round, flags);
        }
        let rule = self.rule_of(stream);
        let period_ns = match rule.and_then(|r| r.period) {
            Some(p) => p.as_nanos() as u64,
            None => st.interval_ns.round() as u64,
        };
        let age_ns = now_ns.saturating_sub(st.seen_ns);
        Some(StreamState {
            stream,
            flags: st.alarms | flags | if rule.is_some() { FLAG_HAS_RULE } else { 0 },
            instance: self.instance,
            round,
            published_ns: now_ns,
            count: st.count,
            last_seq: st.last_seq,
            last_sample_ns: st.last_sample_ns,
            last_ingest_ns: st.last_ingest_ns,
            age_ns,
            period_ns,
            gaps: st.gaps,
            last_quality: st.last_quality,
            reserved: 0,
            last: st.last,
            min: st.min,
            max: st.max,
            mean: st.moments.mean(),
            variance: st.moments.variance(st.count),
            ewma: st.moments.ewma(),
            rate_hz: if st.interval_ns > 0.0 { 1e9 / st.interval_ns } else { 0.0 },
            trend: st.moments.trend(),
            prediction: st.moments.prediction(),
            staleness: if period_ns > 0 { age_ns as f64 / period_ns as f64 } else { 0.0 },
        })
    }

    /// The snapshot marker for `round` at `now_ns`; `publish_failed` is the
    /// count of alarm events the publisher could not write.
    pub fn marker(&self, round: u64, now_ns: u64, publish_failed: u64) -> Marker {
        let c = &self.counters;
        Marker {
            version: TWIN_FORMAT_VERSION,
            streams: self.streams(),
            instance: self.instance,
            round,
            published_ns: now_ns,
            streams_seen: self.seen,
            frames: c.frames,
            overruns: c.overruns,
            lost: c.lost,
            rejected_streams: c.rejected_streams,
            bad_kind: c.bad_kind,
            bad_size: c.bad_size,
            nonfinite: c.nonfinite,
            gaps: c.gaps,
            alarms_active: c.alarms_active,
            alarm_events: c.alarm_events,
            alarm_publish_failed: publish_failed,
        }
    }
}

#[cfg(test)]
#[path = "model_tests.rs"]
mod tests;
