//! `helixctl twin`: the twin's latest state and active alarms, read from
//! the rings it publishes (`twin.state` and `alarms`) with the library's
//! readers ([`Snapshot`], [`ActiveAlarms`]: docs/abi.md §10); this file
//! puts them together as of now, and shows them.
//!
//! The state of a stream is its newest `StreamState` frame of the newest
//! twin instance (the last to begin a snapshot, in ring order); the twin's
//! counters come from its newest snapshot marker. An alarm is active if
//! the `alarms` ring holds its raise by that instance and no later clear,
//! or if the stream's newest state frame carries its flag (its raise may
//! have left the ring).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::Result;
use serde::Serialize;

use crate::{format, json};
use helix::shm::Namespace;
use helix::twin::*;
use helix::Owners;

/// Arguments of `helixctl twin`.
#[derive(clap::Args)]
pub struct Args {
    /// A stream id or a range such as 0-99 (default: the summary, the
    /// active alarms and the streams in alarm).
    stream: Option<String>,
    /// Show every stream's state.
    #[arg(long)]
    all: bool,
    /// The ring the twin publishes its state table on.
    #[arg(long, default_value = "twin.state")]
    state_ring: String,
    /// The ring the twin publishes alarm events on.
    #[arg(long, default_value = "alarms")]
    alarm_ring: String,
}

/// The name helixctl's reader has in the twin's rings while it reads.
const READER: &str = "helixctl-twin";

/// Shows the twin's state, as tables or (`json`) as JSON. Believes the rings only if one of `owners` owns them.
pub fn run(ns: &Namespace, args: &Args, owners: &Owners, json: bool) -> Result<()> {
    let filter = match &args.stream {
        Some(s) => Some(StreamRange::parse(s, u32::MAX).map_err(anyhow::Error::msg)?),
        None => None,
    };
    let snapshot = Snapshot::read(ns, &args.state_ring, READER, owners)?;
    let alarms = ActiveAlarms::read(ns, &args.alarm_ring, READER, owners, snapshot.instance)?;
    let view = TwinView::new(ns, &snapshot, alarms, filter);
    if json {
        json::print(&view)
    } else {
        print!("{}", render(&view, filter, args.all));
        Ok(())
    }
}

/// The twin's counters, from its newest snapshot marker (its fields, in
/// JSON at the top level), and what a reader derives from the markers.
#[derive(Debug, Clone, Serialize)]
pub struct TwinSummary {
    /// The newest snapshot marker, as published.
    #[serde(flatten)]
    pub marker: Marker,
    /// How long ago it was published.
    pub age_ns: u64,
    /// Frames consumed per second between the two newest snapshots (null
    /// with only one in the ring).
    pub frames_per_sec: Option<f64>,
}

/// One stream's state (JSON: the frame's fields at the top level, alarms
/// by name, and its age and staleness as of now).
#[derive(Debug, Clone, Serialize)]
pub struct StreamView {
    /// The stream's state frame, as published.
    #[serde(flatten)]
    pub state: StreamState,
    /// Active alarms.
    pub alarms: Vec<AlarmKind>,
    /// Whether an alarm rule applies.
    pub has_rule: bool,
    /// Time since the last sample was ingested, now.
    pub age_ns: u64,
    /// `age_ns / period_ns`, now (0 while the period is unknown).
    pub staleness: f64,
}

/// An active alarm.
#[derive(Debug, Clone, Serialize)]
pub struct ActiveAlarm {
    /// Stream id.
    pub stream: u32,
    /// The rule.
    pub rule: AlarmKind,
    /// The raise event's number (null if the raise has left the ring and
    /// only the stream's state shows the alarm).
    pub event: Option<u64>,
    /// The value that raised it (as in the event).
    pub value: Option<f64>,
    /// The limit it crossed.
    pub limit: Option<f64>,
    /// When it was raised (ns, on the telemetry's clock: its writer's
    /// CLOCK_MONOTONIC).
    pub raised_ns: Option<u64>,
    /// How long ago (on its stream's state: none without one).
    pub age_ns: Option<u64>,
    /// Per-stream sequence of the sample that raised it.
    pub sample_seq: Option<u64>,
}

/// Everything `helixctl twin` shows.
#[derive(Debug, Clone, Serialize)]
pub struct TwinView {
    /// Namespace.
    pub namespace: String,
    /// The twin's pid (the state ring's writer), if one holds it.
    pub pid: Option<u32>,
    /// Whether that process is alive.
    pub alive: bool,
    /// The newest snapshot marker's figures (null before the first).
    pub twin: Option<TwinSummary>,
    /// The streams asked for, by id.
    pub streams: Vec<StreamView>,
    /// Active alarms of those streams, by stream and rule.
    pub alarms: Vec<ActiveAlarm>,
}

impl TwinView {
    /// What `helixctl twin` shows of `snapshot` and `alarms` (read for the
    /// snapshot's instance: those of another twin are void), as of now;
    /// `filter` limits the streams.
    pub fn new(ns: &Namespace, snapshot: &Snapshot, alarms: ActiveAlarms, filter: Option<StreamRange>) -> TwinView {
        let now = helix::process::now_ns();
        let wanted = |s: &StreamState| filter.is_none_or(|r| r.contains(s.stream));
        let active = active_alarms(snapshot.streams.values().filter(|s| wanted(s)), &alarms, filter, now);
        let twin = snapshot.marker.map(|m| TwinSummary {
            marker: m,
            age_ns: now.saturating_sub(m.published_ns),
            frames_per_sec: snapshot.frames_per_sec(),
        });
        let streams =
            snapshot.streams.values().filter(|s| wanted(s)).map(|s| StreamView::new(s, &active, now)).collect();
        TwinView {
            namespace: ns.to_string(),
            pid: snapshot.writer.pid,
            alive: snapshot.writer.alive,
            twin,
            streams,
            alarms: active.into_values().collect(),
        }
    }
}

impl StreamView {
    /// `s` with its active alarms, its age and its staleness as of `now`.
    fn new(s: &StreamState, active: &BTreeMap<(u32, AlarmKind), ActiveAlarm>, now: u64) -> StreamView {
        let age_ns = s.age_ns.saturating_add(now.saturating_sub(s.published_ns));
        StreamView {
            state: *s,
            // Looked up, not filtered from all: with every stream in alarm
            // (helixd stopped: all stale) a scan per stream is quadratic.
            alarms: active
                .range((s.stream, AlarmKind::Low)..=(s.stream, AlarmKind::Stale))
                .map(|(&(_, k), _)| k)
                .collect(),
            has_rule: s.flags & FLAG_HAS_RULE != 0,
            age_ns,
            staleness: if s.period_ns > 0 { age_ns as f64 / s.period_ns as f64 } else { 0.0 },
        }
    }
}

/// The active alarms of the streams `filter` asks for: those raised on the
/// alarm ring and not cleared, then those only the streams' `states` show
/// (their raise has left the ring). A raise that a stream's state
/// published after it does not show was cleared: its clear event was lost
/// (one the alarm ring had no room for, say, which the twin counts in
/// `alarm_publish_failed`). (Found by review: such an alarm was shown,
/// and counted in the metrics, for as long as its raise stayed on the
/// ring.)
fn active_alarms<'a>(
    states: impl Iterator<Item = &'a StreamState>,
    alarms: &ActiveAlarms,
    filter: Option<StreamRange>,
    now: u64,
) -> BTreeMap<(u32, AlarmKind), ActiveAlarm> {
    let states: BTreeMap<u32, &StreamState> = states.map(|s| (s.stream, s)).collect();
    // An event's time is on the telemetry's clock (its writer's, which
    // need not be this host's: a bridge's, a replay's); a state says where
    // that clock was when it was published (`last_ingest_ns + age_ns`).
    let clock_at_publish = |s: &StreamState| s.last_ingest_ns.saturating_add(s.age_ns);
    // After the raise: published after it, of a sample at or after the one
    // that raised it (the raise's time is its sample's ingest: a state
    // published after that, of earlier samples, is older than the raise).
    let cleared_since = |stream: u32, rule: AlarmKind, e: &AlarmEvent| {
        states.get(&stream).is_some_and(|s| {
            clock_at_publish(s) > e.time_ns && s.last_seq >= e.sample_seq && s.flags & rule.flag() == 0
        })
    };
    // Where that clock is now, by the stream's state (none without one:
    // this host's clock may be days from it).
    let clock_now = |stream: u32| {
        let s = states.get(&stream)?;
        Some(clock_at_publish(s).saturating_add(now.saturating_sub(s.published_ns)))
    };
    let mut active: BTreeMap<(u32, AlarmKind), ActiveAlarm> = alarms
        .raised
        .iter()
        .filter(|((s, _), _)| filter.is_none_or(|r| r.contains(*s)))
        .filter(|(&(stream, rule), e)| !cleared_since(stream, rule, e))
        .map(|(&(stream, rule), e)| {
            let a = ActiveAlarm {
                stream,
                rule,
                event: Some(e.event),
                value: Some(e.value),
                limit: Some(e.limit),
                raised_ns: Some(e.time_ns),
                age_ns: clock_now(stream).map(|c| c.saturating_sub(e.time_ns)),
                sample_seq: Some(e.sample_seq),
            };
            ((stream, rule), a)
        })
        .collect();
    for s in states.values() {
        for rule in AlarmKind::ALL.into_iter().filter(|rule| s.flags & rule.flag() != 0) {
            active.entry((s.stream, rule)).or_insert(ActiveAlarm {
                stream: s.stream,
                rule,
                event: None,
                value: None,
                limit: None,
                raised_ns: None,
                age_ns: None,
                sample_seq: None,
            });
        }
    }
    active
}

fn secs(ns: u64) -> String {
    let s = ns as f64 / 1e9;
    if s < 10.0 {
        format!("{s:.2} s")
    } else {
        format!("{s:.0} s")
    }
}

/// The table form. `all`: every stream; else only the streams asked for
/// by `filter`, or (without one) those in alarm.
fn render(v: &TwinView, filter: Option<StreamRange>, all: bool) -> String {
    let mut o = String::new();
    summary_lines(&mut o, v);
    let _ = writeln!(o);
    alarm_table(&mut o, &v.alarms);
    let shown: Vec<&StreamView> = if all || filter.is_some() {
        v.streams.iter().collect()
    } else {
        v.streams.iter().filter(|s| !s.alarms.is_empty()).collect()
    };
    let _ = writeln!(o);
    if !shown.is_empty() {
        stream_table(&mut o, &shown);
    } else if filter.is_some() {
        let _ = writeln!(o, "no state for those streams");
    }
    if !all && filter.is_none() {
        let _ = writeln!(
            o,
            "{} streams with state; `helixctl twin STREAM` (or a range, or --all) shows them",
            v.streams.len()
        );
    }
    o
}

/// Who the twin is, and its counters.
fn summary_lines(o: &mut String, v: &TwinView) {
    let who = match (v.pid, v.alive) {
        (Some(p), true) => format!("pid {p}"),
        (Some(p), false) => format!("pid {p} (dead: what follows is its last state)"),
        (None, _) => "not running (what follows is the last state published)".into(),
    };
    let _ = writeln!(o, "helix-twin in namespace {}: {who}", v.namespace);
    let Some(summary) = &v.twin else {
        let _ = writeln!(o, "  no snapshot in the state ring yet");
        return;
    };
    let (t, rate) = (&summary.marker, format::rate(summary.frames_per_sec));
    let _ = writeln!(o, "  snapshot   round {}, {} ago", t.round, secs(summary.age_ns));
    let _ = writeln!(o, "  streams    {} of {} seen", t.streams_seen, t.streams);
    let _ = writeln!(
        o,
        "  telemetry  {} frames, {rate} frames/s; {} overruns, {} frames lost; {} samples missing by sequence",
        t.frames, t.overruns, t.lost, t.gaps
    );
    let _ = writeln!(
        o,
        "  rejected   {} out-of-range streams, {} unknown kinds, {} wrong sizes, {} non-finite values",
        t.rejected_streams, t.bad_kind, t.bad_size, t.nonfinite
    );
    let _ = writeln!(
        o,
        "  alarms     {} active, {} events, {} not published",
        t.alarms_active, t.alarm_events, t.alarm_publish_failed
    );
}

/// The active alarms' table.
fn alarm_table(o: &mut String, alarms: &[ActiveAlarm]) {
    if alarms.is_empty() {
        let _ = writeln!(o, "no active alarms");
        return;
    }
    let _ = writeln!(o, "{:>8} {:<6} {:>14} {:>14} {:>10}", "STREAM", "ALARM", "VALUE", "LIMIT", "SINCE");
    let num = |x: Option<f64>| x.map_or("-".into(), |x| format!("{x:.4}"));
    for a in alarms {
        let _ = writeln!(
            o,
            "{:>8} {:<6} {:>14} {:>14} {:>10}",
            a.stream,
            a.rule.as_str(),
            num(a.value),
            num(a.limit),
            a.age_ns.map_or("-".into(), secs)
        );
    }
}

/// The streams' table.
fn stream_table(o: &mut String, shown: &[&StreamView]) {
    let _ = writeln!(
        o,
        "{:>8} {:>10} {:>12} {:>12} {:>12} {:>12} {:>10} {:>12} {:>12} {:>8} {:>9} {:>6}  ALARMS",
        "STREAM", "COUNT", "LAST", "MIN", "MAX", "MEAN", "STDDEV", "EWMA", "PREDICTION", "RATE/S", "AGE", "GAPS"
    );
    for v in shown {
        let (s, alarms) = (&v.state, v.alarms.iter().map(|k| k.as_str()).collect::<Vec<&str>>());
        let _ = writeln!(
            o,
            "{:>8} {:>10} {:>12.4} {:>12.4} {:>12.4} {:>12.4} {:>10.4} {:>12.4} {:>12.4} {:>8.1} {:>9} {:>6}  {}",
            s.stream,
            s.count,
            s.last,
            s.min,
            s.max,
            s.mean,
            s.variance.sqrt(),
            s.ewma,
            s.prediction,
            s.rate_hz,
            secs(v.age_ns),
            s.gaps,
            if alarms.is_empty() { "-".into() } else { alarms.join(",") }
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A raise whose clear event was lost: the stream's state published
    /// after it shows no alarm, so none is active; one published before
    /// it (the raise is newer) leaves it active. Before and after on the
    /// telemetry's clock, which the raise's time is of, not on this
    /// host's, which `published_ns` is of (found by review: a twin of
    /// another host's telemetry, a bridge's, has the two days apart).
    #[test]
    fn an_alarm_a_later_state_shows_cleared_is_not_active() {
        let state = |clock: u64, last_seq, flags| StreamState {
            stream: 3,
            published_ns: clock + 86_400_000_000_000,
            last_ingest_ns: clock - 10,
            age_ns: 10,
            last_seq,
            flags,
            ..bytemuck::Zeroable::zeroed()
        };
        let raise = AlarmEvent {
            stream: 3,
            rule: AlarmKind::High as u16,
            time_ns: 100,
            sample_seq: 7,
            ..bytemuck::Zeroable::zeroed()
        };
        let alarms = ActiveAlarms { instance: 1, raised: [((3, AlarmKind::High), raise)].into() };
        let active =
            |s: StreamState| active_alarms([&s].into_iter(), &alarms, None, 1_000).into_keys().collect::<Vec<_>>();
        assert_eq!(active(state(200, 8, 0)), [], "cleared since");
        assert_eq!(active(state(50, 8, 0)), [(3, AlarmKind::High)], "the state is older than the raise");
        // Published after the raise's sample was taken in, but of samples
        // before it (the twin had not judged it yet): still active (found
        // by review of the fix).
        assert_eq!(active(state(200, 6, 0)), [(3, AlarmKind::High)]);
        assert_eq!(active(state(200, 8, AlarmKind::High.flag())), [(3, AlarmKind::High)]);
    }

    #[test]
    fn a_stream_serialises_with_the_documented_keys() {
        let v = StreamView {
            state: StreamState { stream: 3, flags: FLAG_HAS_RULE, ..bytemuck::Zeroable::zeroed() },
            alarms: vec![AlarmKind::High],
            has_rule: true,
            age_ns: 5,
            staleness: 0.5,
        };
        let json = serde_json::to_value(&v).unwrap();
        let keys: std::collections::BTreeSet<&str> = json.as_object().unwrap().keys().map(String::as_str).collect();
        // docs/helixctl.md, `twin --json`: the frame's fields (not its
        // flags, instance, reserved word, or its own age and staleness),
        // then what helixctl derives.
        let documented = [
            "stream",
            "round",
            "published_ns",
            "count",
            "last_seq",
            "last_sample_ns",
            "last_ingest_ns",
            "period_ns",
            "gaps",
            "last_quality",
            "last",
            "min",
            "max",
            "mean",
            "variance",
            "ewma",
            "rate_hz",
            "trend",
            "prediction",
            "alarms",
            "has_rule",
            "age_ns",
            "staleness",
        ];
        assert_eq!(keys, documented.into_iter().collect());
        assert_eq!((json["stream"].as_u64(), json["age_ns"].as_u64()), (Some(3), Some(5)));
        assert_eq!(json["alarms"], serde_json::json!(["high"]));
    }
}
