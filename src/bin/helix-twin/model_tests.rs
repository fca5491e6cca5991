//! The twin model's unit tests (beside `model.rs`, which includes them).

use super::*;
use std::time::Duration;

fn ns() -> helix::Namespace {
    helix::Namespace::new("unit").unwrap()
}

fn sample(stream: u32, seq: u64, t_ms: u64, value: f64) -> Input {
    let t = t_ms * 1_000_000;
    Input::Sample(Sample { stream, quality: 0, seq, sample_ns: t, ingest_ns: t + 500, value })
}

/// A rule for streams `0..=last`: a high limit and a stale time, if any;
/// nothing else.
fn rule(last: u32, high: Option<f64>, stale_after: Option<Duration>) -> Rule {
    Rule {
        streams: StreamRange { first: 0, last },
        low: None,
        high,
        hysteresis: 0.0,
        rate_limit: None,
        stale_after,
        period: None,
    }
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
fn a_late_sample_fills_its_gap_and_a_repeated_one_is_not_taken_twice() {
    let cfg = TwinConfig::with_rules(ns(), 1, vec![]);
    let mut t = Twin::new(&cfg, 1);
    // 2 overtaken by 3 on the way: counted missing at 3, found at 2.
    for seq in [0, 1, 3, 2, 4] {
        t.input(&sample(0, seq, seq * 10, seq as f64));
    }
    let (s, c) = (t.state(0, 0, 0, 0).unwrap(), t.counters());
    assert_eq!((s.gaps, c.gaps, c.late, c.seq_resets), (0, 0, 1, 0));
    // 2 is in the statistics that do not depend on order; the last value,
    // the smoothing and the rate follow the newest sample.
    assert_eq!((s.count, s.min, s.max, s.mean, s.last, s.last_seq), (5, 0.0, 4.0, 2.0, 4.0, 4));
    assert!((s.rate_hz - 100.0).abs() < 1e-9);
    // Datagrams sent twice: the newest, and one behind it.
    t.input(&sample(0, 4, 40, 4.0));
    t.input(&sample(0, 3, 30, 3.0));
    assert_eq!((t.counters().repeated, t.state(0, 0, 0, 0).unwrap().count), (2, 5));
    // A jump past the whole window, then one from inside it and one
    // from just outside it (taken as a restart).
    t.input(&sample(0, 100, 1000, 100.0));
    assert_eq!(t.counters().gaps, 95);
    t.input(&sample(0, 100 - REORDER_WINDOW, 360, 36.0));
    t.input(&sample(0, 99 - REORDER_WINDOW, 350, 35.0));
    let c = t.counters();
    assert_eq!((c.gaps, c.late, c.seq_resets), (94, 2, 1));
    // A restarted source's samples are newer: taken, whatever their
    // sequence; and one from before the restart fills nothing.
    t.input(&sample(0, 3, 2000, 7.0));
    t.input(&sample(0, 2, 990, 7.0));
    let (s, c) = (t.state(0, 0, 0, 0).unwrap(), t.counters());
    assert_eq!((c.seq_resets, c.repeated, c.gaps, s.last_seq, s.last), (2, 3, 94, 3, 7.0));
}

proptest::proptest! {
    /// A sequence with some samples lost and the rest delivered out
    /// of order, none further than the window from its place: the
    /// gaps are the lost ones, each delivered sample is taken once,
    /// late or in order (the mean is theirs), and none is seen as a
    /// restart.
    #[test]
    fn gaps_are_the_samples_lost_however_the_rest_are_reordered(
        kept in proptest::collection::vec(proptest::bool::weighted(0.8), 1..400),
        delays in proptest::collection::vec(0..REORDER_WINDOW, 400),
        repeats in proptest::collection::vec(proptest::bool::weighted(0.05), 400),
    ) {
        let cfg = TwinConfig::with_rules(ns(), 1, vec![]);
        let mut t = Twin::new(&cfg, 1);
        // Sequence 0 first (the twin measures from its first sample);
        // each later one is delivered at its sequence plus a delay
        // below the window, in that order, sometimes twice.
        let mut arrivals: Vec<(u64, u64)> = kept
            .iter()
            .enumerate()
            .filter(|&(seq, &k)| k && seq > 0)
            .map(|(seq, _)| (seq as u64 + delays[seq], seq as u64))
            .collect();
        arrivals.sort();
        t.input(&sample(0, 0, 0, 0.0));
        for &(_, seq) in &arrivals {
            t.input(&sample(0, seq, seq, seq as f64));
            if repeats[seq as usize] {
                t.input(&sample(0, seq, seq, seq as f64));
            }
        }
        let newest = arrivals.iter().map(|&(_, seq)| seq).max().unwrap_or(0);
        let lost = (1..newest).filter(|&seq| !kept[seq as usize]).count() as u64;
        let c = t.counters();
        let s = t.state(0, 0, 0, 0).unwrap();
        proptest::prop_assert_eq!((c.gaps, s.gaps, c.seq_resets), (lost, lost, 0));
        proptest::prop_assert_eq!(s.count, arrivals.len() as u64 + 1);
        let sum: u64 = arrivals.iter().map(|&(_, seq)| seq).sum();
        let mean = sum as f64 / s.count as f64;
        proptest::prop_assert!((s.mean - mean).abs() <= 1e-9 * mean.max(1.0), "{} against {}", s.mean, mean);
        let twice = arrivals.iter().filter(|&&(_, seq)| repeats[seq as usize]).count() as u64;
        proptest::prop_assert_eq!(c.repeated, twice);
        proptest::prop_assert_eq!(s.last_seq, newest);
    }
}

#[test]
fn a_sample_behind_the_newest_raises_an_alarm_and_never_clears_one() {
    let rule = rule(0, Some(10.0), None);
    let mut t = Twin::new(&TwinConfig::with_rules(ns(), 1, vec![rule]), 1);
    let events = |t: &mut Twin, seq: u64, t_ms: u64, v: f64| {
        t.input(&sample(0, seq, t_ms, v));
        t.take_events().map(|e| (e.sample_seq, e.action == ACTION_RAISE)).collect::<Vec<_>>()
    };
    assert!(events(&mut t, 0, 0, 1.0).is_empty());
    assert!(events(&mut t, 2, 20, 1.0).is_empty());
    // Late, and above the limit: it happened, so it raises.
    assert_eq!(events(&mut t, 1, 10, 11.0), [(1, true)]);
    assert!(events(&mut t, 3, 30, 12.0).is_empty(), "still raised");
    t.input(&sample(0, 5, 50, 12.0));
    // Late and inside the limit: the newest sample says what holds now.
    assert!(events(&mut t, 4, 40, 1.0).is_empty(), "a late sample cleared the alarm");
    assert_eq!(events(&mut t, 6, 60, 1.0), [(6, false)]);
    // A sender that gets a sequence number in ahead of the instrument
    // (a normal value, dated in the future) does not hide the instrument's
    // excursion, which then arrives as a repeat.
    assert!(events(&mut t, 7, u64::MAX / 1_000_000, 1.0).is_empty());
    assert_eq!(events(&mut t, 7, 70, 50.0), [(7, true)]);
    let c = t.counters();
    assert_eq!((c.late, c.repeated, c.alarms_active), (2, 1, 1));
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

#[test]
fn a_twin_takes_over_when_streams_last_reported_and_judges_them_stale_again() {
    let rule = rule(2, None, Some(Duration::from_millis(100)));
    let cfg = TwinConfig::with_rules(ns(), 3, vec![rule]);
    // The previous twin: stream 0 last reported at 10 ms and went stale;
    // stream 1 reported at 300 ms.
    let mut old = Twin::new(&cfg, 9);
    old.input(&sample(0, 4, 10, 1.0));
    old.tick(200_000_000);
    old.input(&sample(1, 7, 300, 2.0));
    let mut previous: Vec<StreamState> = (0..3).filter_map(|s| old.state(s, 350_000_000, 5, 0)).collect();
    assert_eq!(previous[0].flags & FLAG_ALARM_STALE, FLAG_ALARM_STALE);
    // A frame of a stream beyond this twin's, and a damaged time.
    previous.push(StreamState { stream: 3, ..previous[1] });
    previous[1].published_ns = u64::MAX;

    let start = 400_000_000;
    let mut t = Twin::new(&cfg, 1);
    assert_eq!(t.take_over(&previous, start), 2);
    assert_eq!(t.streams_seen(), 2);
    // Stream 0 was stale: raised again at once, as of its last report.
    t.tick(start + 1);
    let e: Vec<AlarmEvent> = t.take_events().collect();
    assert_eq!(
        e.iter().map(|e| (e.stream, e.rule, e.action, e.sample_seq, e.instance)).collect::<Vec<_>>(),
        [(0, AlarmKind::Stale.number(), ACTION_RAISE, 4, 1)]
    );
    assert!((e[0].value - 0.389_999_501).abs() < 1e-12, "the age since its last report: {}", e[0].value);
    // Stream 1 may have reported while no twin read: stale_after from the
    // take-over.
    t.tick(start + 100_000_000);
    assert!(t.pending_events().is_empty());
    t.tick(start + 100_000_001);
    let e: Vec<(u32, u64)> = t.take_events().map(|e| (e.stream, e.sample_seq)).collect();
    assert_eq!(e, [(1, 7)]);
    // Published as this instance's, with the previous statistics, until
    // the stream reports; stream 2 never reported.
    let s = t.state(0, start, 3, FLAG_SNAPSHOT).unwrap();
    assert_eq!((s.instance, s.round, s.count, s.last, s.last_seq, s.last_ingest_ns), (1, 3, 1, 1.0, 4, 10_000_500));
    assert_eq!(s.flags, FLAG_ALARM_STALE | FLAG_HAS_RULE | FLAG_SNAPSHOT);
    assert_eq!(t.state(1, start, 3, 0).unwrap().age_ns, 0);
    assert!(t.state(2, start, 3, 0).is_none());
    // Its next sample clears the alarm, and its statistics begin.
    t.input(&sample(0, 5, 600, 3.0));
    let e: Vec<(u64, u16)> = t.take_events().map(|e| (e.sample_seq, e.action)).collect();
    assert_eq!(e, [(5, ACTION_CLEAR)]);
    let s = t.state(0, 600_000_500, 4, 0).unwrap();
    assert_eq!((s.count, s.last, s.flags, t.streams_seen(), t.counters().alarms_active), (1, 3.0, FLAG_HAS_RULE, 2, 1));
}

#[test]
fn a_stream_taken_over_in_an_excursion_stays_in_it_until_it_reports_and_counts_no_gap_then() {
    let rule = rule(1, Some(10.0), None);
    let cfg = TwinConfig::with_rules(ns(), 2, vec![rule]);
    // The previous twin: stream 0 went high, then silent.
    let mut old = Twin::new(&cfg, 9);
    old.input(&sample(0, 4, 10, 12.0));
    let previous: Vec<StreamState> = old.state(0, 20_000_000, 1, 0).into_iter().collect();
    assert_eq!(previous[0].flags & FLAG_ALARM_HIGH, FLAG_ALARM_HIGH);

    let mut t = Twin::new(&cfg, 1);
    assert_eq!(t.take_over(&previous, 30_000_000), 1);
    // Still high, as this instance's, without a raise event.
    assert!(t.pending_events().is_empty());
    assert_eq!(t.state(0, 30_000_000, 1, 0).unwrap().flags & FLAG_ALARM_HIGH, FLAG_ALARM_HIGH);
    assert_eq!(t.counters().alarms_active, 1);
    // Its next sample, back in range and 46 sequences on (those came while
    // no twin read): the alarm clears, and no gap is counted.
    t.input(&sample(0, 50, 40, 5.0));
    let e: Vec<(u16, u16)> = t.take_events().map(|e| (e.rule, e.action)).collect();
    assert_eq!(e, [(AlarmKind::High.number(), ACTION_CLEAR)]);
    assert_eq!((t.counters().alarms_active, t.counters().gaps), (0, 0));
    assert_eq!(t.state(0, 40_000_000, 2, 0).unwrap().flags & FLAG_ALARM_HIGH, 0);
}

#[test]
fn an_alarm_taken_over_that_the_rule_no_longer_checks_is_not_kept() {
    // The previous twin: stream 0 went high under a rule with a high limit.
    let before = TwinConfig::with_rules(ns(), 2, vec![rule(1, Some(10.0), None)]);
    let mut old = Twin::new(&before, 9);
    old.input(&sample(0, 4, 10, 12.0));
    let previous: Vec<StreamState> = old.state(0, 20_000_000, 1, 0).into_iter().collect();
    assert_eq!(previous[0].flags & FLAG_ALARM_HIGH, FLAG_ALARM_HIGH);
    // The rule now checks staleness only: nothing would ever clear it.
    let after = TwinConfig::with_rules(ns(), 2, vec![rule(1, None, Some(Duration::from_secs(60)))]);
    let mut t = Twin::new(&after, 1);
    assert_eq!(t.take_over(&previous, 30_000_000), 1);
    assert_eq!(t.state(0, 30_000_000, 1, 0).unwrap().flags & FLAG_ALARM_HIGH, 0);
    assert_eq!(t.counters().alarms_active, 0);
    // Under the same rule it is kept, as before.
    let mut same = Twin::new(&before, 2);
    same.take_over(&previous, 30_000_000);
    assert_eq!(same.counters().alarms_active, 1);
}

/// Found by review: a stream taken over in a rate excursion had its rate
/// judged only at its second sample here; the first is judged against the
/// previous instance's last sample (which it publishes).
#[test]
fn a_taken_over_streams_first_sample_judges_its_rate_from_the_previous_instances_last() {
    let rule = Rule { rate_limit: Some(10.0), ..rule(1, None, None) };
    let cfg = TwinConfig::with_rules(ns(), 2, vec![rule]);
    // The previous twin: stream 0 rose at 50/s (raised), stream 1 at 5/s.
    let mut old = Twin::new(&cfg, 9);
    for (stream, v) in [(0, 5.0), (1, 0.5)] {
        old.input(&sample(stream, 1, 0, 0.0));
        old.input(&sample(stream, 2, 100, v));
    }
    let previous: Vec<StreamState> = (0..2).filter_map(|s| old.state(s, 200_000_000, 1, 0)).collect();
    assert_eq!(previous.iter().map(|p| p.flags & FLAG_ALARM_RATE).collect::<Vec<_>>(), [FLAG_ALARM_RATE, 0]);

    let mut t = Twin::new(&cfg, 1);
    assert_eq!(t.take_over(&previous, 300_000_000), 2);
    // A second after: stream 0 has slowed to 0.5/s (cleared); stream 1
    // jumped by 20 (20/s, raised).
    t.input(&sample(0, 3, 1100, 5.5));
    t.input(&sample(1, 3, 1100, 20.5));
    let e: Vec<(u32, u16, u16)> = t.take_events().map(|e| (e.stream, e.rule, e.action)).collect();
    let rate = AlarmKind::Rate.number();
    assert_eq!(e, [(0, rate, ACTION_CLEAR), (1, rate, ACTION_RAISE)]);
    assert_eq!(t.counters().alarms_active, 1);
}

/// Found by review: staleness was judged on `ingest_ns`, the ring writer's
/// clock, which need not be the twin's: a central twin reads telemetry a
/// bridge brought from another host (which may boot again), a replay the
/// recording's. A writer's clock ahead never let a stream be stale, one
/// behind raised every stream stale at every tick, one gone back (its host
/// booted again) hid a silent stream for as long as its old uptime. It is
/// judged from when the twin read each stream's last sample.
#[test]
fn staleness_is_judged_from_when_the_twin_read_a_stream_not_on_the_writers_clock() {
    let cfg = TwinConfig::with_rules(ns(), 2, vec![rule(1, None, Some(Duration::from_millis(100)))]);
    let twins = 1_000_000; // the twin's clock, ms
    let month = 28 * 86_400_000;
    // The writer's clock ahead, behind, and gone back near 0 as stream 1
    // falls silent.
    for (before, after) in [(twins + month, twins + month), (5_000, 5_000), (twins + month, 0)] {
        let mut t = Twin::new(&cfg, 1);
        let mut stale = vec![];
        // Both streams report every 10 ms, stream 1 for the first second
        // only; each batch is read as it comes.
        for i in 0..150u64 {
            let now = (twins + 10 * i) * 1_000_000;
            t.reading(now);
            let writers = if i < 100 { before } else { after };
            for stream in (0..2).filter(|&s| s == 0 || i < 100) {
                t.input(&sample(stream, i, writers + 10 * i, 1.0));
            }
            t.tick(now);
            stale.extend(t.take_events().map(|e| (i, e.stream, e.action)));
        }
        // Stream 1's last sample was read at i = 99: 100 ms later is not
        // yet stale, 110 ms later is.
        assert_eq!(stale, [(110, 1, ACTION_RAISE)], "the writer's clock at {before} then {after} ms");
        let s = t.state(1, (twins + 1500) * 1_000_000, 1, 0).unwrap();
        assert_eq!(s.age_ns, 510_000_000);
    }
    // A forged (or damaged) frame's far-future time moves nothing but its
    // own stream's times.
    let mut t = Twin::new(&cfg, 1);
    t.reading(1_000_000_000);
    t.input(&sample(0, 1, 1_000, 1.0));
    t.input(&sample(1, 1, 1_000, 1.0));
    t.reading(1_050_000_000);
    t.input(&Input::Sample(Sample {
        stream: 1,
        quality: 0,
        seq: 2,
        sample_ns: 0,
        ingest_ns: u64::MAX / 2,
        value: 1.0,
    }));
    t.tick(1_060_000_000);
    assert!(t.pending_events().is_empty());
}
