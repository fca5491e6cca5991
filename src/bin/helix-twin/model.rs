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

use helix::telemetry::Sample;
use helix::twin::*;

use crate::config::{Rule, TwinConfig};

// Beside this file whoever compiles it in (helix-twin, its tests, its bench).
#[path = "moments.rs"]
mod moments;
use moments::Moments;

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
    /// Samples whose per-stream sequence went backwards (a restarted
    /// source): taken, no gap counted.
    pub seq_resets: u64,
    /// Alarm events produced.
    pub alarm_events: u64,
    /// Alarms active now.
    pub alarms_active: u64,
}

/// One stream's model.
#[derive(Debug, Clone, Copy, Default)]
struct Stream {
    count: u64,
    last: f64,
    last_seq: u64,
    last_sample_ns: u64,
    last_ingest_ns: u64,
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
    }

    /// Takes a later sample: gaps, the sample interval, the rate alarm (into
    /// `rate`) and the statistics. Returns the samples missing before it,
    /// or `None` if its sequence went backwards (a restarted source).
    fn follow(&mut self, s: &Sample, rule: Option<&Rule>, alpha: f64, beta: f64, rate: &mut Fire) -> Option<u64> {
        let v = s.value;
        let (steps, missing) = if s.seq > self.last_seq {
            let missing = s.seq - self.last_seq - 1;
            // A sender chooses `seq`: jumps of 2^64 must not wrap.
            self.gaps = self.gaps.saturating_add(missing);
            (s.seq - self.last_seq, Some(missing))
        } else {
            (1, None)
        };
        let dt = s.sample_ns.wrapping_sub(self.last_sample_ns) as i64;
        if dt > 0 {
            let per = dt as f64 / steps as f64;
            self.interval_ns =
                if self.interval_ns == 0.0 { per } else { self.interval_ns + alpha * (per - self.interval_ns) };
            if let Some(limit) = rule.and_then(|r| r.rate_limit) {
                // Two finite values can be further apart than an f64 holds.
                let roc = ((v - self.last) / (dt as f64 / 1e9)).clamp(-f64::MAX, f64::MAX);
                let active = self.alarms & AlarmKind::Rate.flag() != 0;
                if !active && roc.abs() > limit {
                    *rate = Some((AlarmKind::Rate, true, roc, limit));
                } else if active && roc.abs() <= limit {
                    *rate = Some((AlarmKind::Rate, false, roc, limit));
                }
            }
        }
        self.count += 1;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.moments.take(v, self.count, alpha, beta);
        missing
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
        }
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
        self.counters.lost += lost;
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
            self.seen += 1;
            st.first(v);
        } else {
            let missing = st.follow(s, rule, self.alpha, self.beta, &mut fire[2]);
            match missing {
                Some(n) => self.counters.gaps = self.counters.gaps.saturating_add(n),
                None => self.counters.seq_resets += 1,
            }
        }
        if st.alarms & AlarmKind::Stale.flag() != 0 {
            let age = s.ingest_ns.saturating_sub(st.last_ingest_ns) as f64 / 1e9;
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
        st.last_quality = s.quality;
        if !st.dirty {
            st.dirty = true;
            self.dirty.push(s.stream);
        }
        for (kind, raise, value, limit) in fire.into_iter().flatten() {
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

    /// Judges staleness at `now_ns` (CLOCK_MONOTONIC, the clock of
    /// `Sample::ingest_ns`): a stream with a `stale_after` rule that has
    /// reported, and has had no sample for longer than that, raises its
    /// stale alarm (its next sample clears it). A stream that never
    /// reported is not judged.
    pub fn tick(&mut self, now_ns: u64) {
        for i in 0..self.streams.len() {
            let st = &self.streams[i];
            if st.count == 0 || st.alarms & AlarmKind::Stale.flag() != 0 {
                continue;
            }
            let Some(after) = self.rules.get(self.rule_of[i] as usize).and_then(|r| r.stale_after) else {
                continue;
            };
            let age = now_ns.saturating_sub(st.last_ingest_ns);
            if age > after.as_nanos() as u64 {
                let seq = st.last_seq;
                self.event(i as u32, AlarmKind::Stale, true, now_ns, seq, age as f64 / 1e9, after.as_secs_f64());
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

    /// Stream `stream`'s state as of `now_ns`, if it has had a sample.
    /// `round` and `flags` (e.g. [`FLAG_SNAPSHOT`]) go into the frame.
    pub fn state(&self, stream: u32, now_ns: u64, round: u64, flags: u32) -> Option<StreamState> {
        let st = self.streams.get(stream as usize)?;
        if st.count == 0 {
            return None;
        }
        let rule = self.rule_of(stream);
        let period_ns = match rule.and_then(|r| r.period) {
            Some(p) => p.as_nanos() as u64,
            None => st.interval_ns.round() as u64,
        };
        let age_ns = now_ns.saturating_sub(st.last_ingest_ns);
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
mod tests {
    use super::*;
    use std::time::Duration;

    fn ns() -> helix::Namespace {
        helix::Namespace::new("unit").unwrap()
    }

    fn sample(stream: u32, seq: u64, t_ms: u64, value: f64) -> Input {
        let t = t_ms * 1_000_000;
        Input::Sample(Sample { stream, quality: 0, seq, sample_ns: t, ingest_ns: t + 500, value })
    }

    #[test]
    fn statistics_of_a_short_series() {
        let cfg = TwinConfig::with_rules(ns(), 2, vec![]);
        let mut t = Twin::new(&cfg, 9);
        for (i, v) in [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0].into_iter().enumerate() {
            t.input(&sample(1, i as u64, 10 * i as u64, v));
        }
        let s = t.state(1, 70_000_500, 3, 0).unwrap();
        assert_eq!((s.count, s.min, s.max, s.mean, s.last), (8, 2.0, 9.0, 5.0, 9.0));
        assert!((s.variance - 32.0 / 7.0).abs() < 1e-12, "{}", s.variance);
        assert!((s.rate_hz - 100.0).abs() < 1e-9);
        assert_eq!((s.period_ns, s.age_ns, s.instance, s.round), (10_000_000, 0, 9, 3));
        assert!(t.state(0, 0, 0, 0).is_none());
        assert_eq!(t.streams_seen(), 1);
    }

    #[test]
    fn holt_prediction_follows_a_ramp_exactly() {
        let cfg = TwinConfig::with_rules(ns(), 1, vec![]);
        let mut t = Twin::new(&cfg, 1);
        for i in 0..400 {
            t.input(&sample(0, i, i * 10, 3.0 * i as f64));
        }
        let s = t.state(0, 0, 0, 0).unwrap();
        assert!((s.prediction - 1200.0).abs() < 1e-6, "{}", s.prediction);
        assert!((s.trend - 3.0).abs() < 1e-6);
    }

    #[test]
    fn gaps_come_from_sequence_numbers_and_do_not_skew_the_rate() {
        let cfg = TwinConfig::with_rules(ns(), 1, vec![]);
        let mut t = Twin::new(&cfg, 1);
        for seq in [0, 1, 2, 5, 6, 10] {
            t.input(&sample(0, seq, seq * 10, 1.0));
        }
        let s = t.state(0, 0, 0, 0).unwrap();
        assert_eq!((s.gaps, t.counters().gaps), (5, 5));
        assert!((s.rate_hz - 100.0).abs() < 1e-9);
        t.input(&sample(0, 0, 200, 1.0));
        assert_eq!(t.counters().seq_resets, 1);
    }

    #[test]
    fn bad_input_is_counted_not_taken() {
        let cfg = TwinConfig::with_rules(ns(), 4, vec![]);
        let mut t = Twin::new(&cfg, 1);
        t.input(&Input::BadKind(7));
        t.input(&Input::BadSize(12));
        t.input(&sample(4, 0, 0, 1.0));
        t.input(&sample(u32::MAX, 0, 0, 1.0));
        t.input(&sample(0, 0, 0, f64::NAN));
        t.input(&sample(0, 1, 0, f64::INFINITY));
        let c = t.counters();
        assert_eq!((c.frames, c.bad_kind, c.bad_size, c.rejected_streams, c.nonfinite), (6, 1, 1, 2, 2));
        assert_eq!(t.streams_seen(), 0);
    }

    #[test]
    fn limits_with_hysteresis_rate_and_stale() {
        let rule = Rule {
            streams: StreamRange { first: 0, last: 0 },
            low: Some(0.0),
            high: Some(10.0),
            hysteresis: 1.0,
            rate_limit: Some(500.0),
            stale_after: Some(Duration::from_millis(100)),
            period: None,
        };
        let cfg = TwinConfig::with_rules(ns(), 1, vec![rule]);
        let mut t = Twin::new(&cfg, 1);
        let mut log = vec![];
        let feed = |t: &mut Twin, log: &mut Vec<(u64, u16, bool)>, seq: u64, v: f64| {
            t.input(&sample(0, seq, seq * 10, v));
            log.extend(t.take_events().map(|e| (seq, e.rule, e.action == ACTION_RAISE)));
        };
        // 5 -> 10.5 (high, and 550/s > 500/s) -> 9.5 (inside the band; 100/s
        // clears rate) -> 8.9 (clears high) -> 3.9 (500/s is not above the
        // limit) -> -1 (low) -> 0.5 (inside the band) -> 1.0 (clears low)
        for (seq, v) in [(0, 5.0), (1, 10.5), (2, 9.5), (3, 8.9), (4, 3.9), (5, -1.0), (6, 0.5), (7, 1.0)] {
            feed(&mut t, &mut log, seq, v);
        }
        let (h, l, r) = (AlarmKind::High.number(), AlarmKind::Low.number(), AlarmKind::Rate.number());
        assert_eq!(log, [(1, h, true), (1, r, true), (2, r, false), (3, h, false), (5, l, true), (7, l, false)]);
        assert_eq!(t.counters().alarms_active, 0);
        // Stale: last ingest at 70 ms + 500 ns; 100 ms later is not yet
        // stale, a nanosecond more is.
        t.tick(170_000_500);
        assert!(t.pending_events().is_empty());
        t.tick(170_000_501);
        let e: Vec<AlarmEvent> = t.take_events().collect();
        assert_eq!(e.len(), 1);
        assert_eq!((e[0].rule, e[0].action, e[0].sample_seq), (AlarmKind::Stale.number(), ACTION_RAISE, 7));
        t.tick(900_000_000);
        assert!(t.pending_events().is_empty(), "raised once");
        assert_eq!(t.state(0, 0, 0, 0).unwrap().flags & FLAG_ALARM_STALE, FLAG_ALARM_STALE);
        feed(&mut t, &mut log, 8, 2.0);
        assert_eq!(log.last(), Some(&(8, AlarmKind::Stale.number(), false)));
        assert_eq!(t.counters().alarms_active, 0);
    }
}
