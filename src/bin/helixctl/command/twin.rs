//! `helixctl twin`: the twin's latest state and active alarms, read from
//! the rings it publishes (`twin.state` and `alarms`) as a non-gating
//! reader from the oldest frame each ring still holds.
//!
//! The state of a stream is its newest `StreamState` frame of the newest
//! twin instance; the twin's counters come from its newest snapshot marker.
//! An alarm is active if the `alarms` ring holds its raise and no later
//! clear, or if the stream's newest state frame carries its flag (its raise
//! may have left the ring).

use std::collections::BTreeMap;

use serde::Serialize;

use helix::shm::Namespace;
use helix::twin::*;
use helix::{AttachError, FrameRef, Reader, ReaderOptions, RingView, Start, TryReadError, WaitStrategy};

/// Why the twin's rings could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TwinError {
    /// The ring does not exist.
    #[error("{ring} not found: is helix-twin running? (no ring {ring:?} in namespace {namespace})")]
    NotFound { ring: String, namespace: String },
    /// Any other attach failure.
    #[error("{ring}: {source}")]
    Attach { ring: String, source: AttachError },
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
    /// When it was raised (CLOCK_MONOTONIC ns).
    pub raised_ns: Option<u64>,
    /// How long ago.
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

fn attach(ns: &Namespace, ring: &str) -> Result<(RingView, Reader), TwinError> {
    let err = |e: AttachError| match e {
        AttachError::NotFound { .. } => TwinError::NotFound { ring: ring.into(), namespace: ns.to_string() },
        source => TwinError::Attach { ring: ring.into(), source },
    };
    let view = RingView::attach(ns, ring).map_err(err)?;
    let opts =
        ReaderOptions { name: "helixctl-twin".into(), gating: false, start: Start::Oldest, wait: WaitStrategy::Park };
    let reader = Reader::attach(ns, ring, &opts).map_err(err)?;
    Ok((view, reader))
}

/// Hands every frame up to what was published when it started to `f`.
fn drain(view: &RingView, reader: &mut Reader, mut f: impl FnMut(&FrameRef<'_>)) {
    let end = view.stats().published;
    while reader.cursor() <= end {
        match reader.try_read_batch(4096, &mut f) {
            Ok(_) | Err(TryReadError::Overrun(_)) => {}
            Err(_) => break,
        }
    }
}

/// Reads the twin's state and alarms; `filter` limits the streams shown.
pub fn read(
    ns: &Namespace,
    state_ring: &str,
    alarm_ring: &str,
    filter: Option<StreamRange>,
) -> Result<TwinView, TwinError> {
    let (state_view, mut state_reader) = attach(ns, state_ring)?;
    let (alarm_view, mut alarm_reader) = attach(ns, alarm_ring)?;
    let lease = state_view.stats().lease;
    let now = helix::process::now_ns();

    let mut instance = 0u64;
    let mut states: BTreeMap<u32, StreamState> = BTreeMap::new();
    let mut markers: Vec<Marker> = Vec::new();
    drain(&state_view, &mut state_reader, |f| match f.kind() {
        KIND_STREAM_STATE => {
            if let Ok(s) = f.read::<StreamState>() {
                if s.instance > instance {
                    instance = s.instance;
                    states.clear();
                    markers.clear();
                }
                if s.instance == instance {
                    states.insert(s.stream, s);
                }
            }
        }
        KIND_SNAPSHOT_BEGIN => {
            if let Ok(m) = f.read::<Marker>() {
                if m.instance > instance {
                    instance = m.instance;
                    states.clear();
                    markers.clear();
                }
                if m.instance == instance {
                    markers.push(m);
                }
            }
        }
        _ => {}
    });

    let mut raised: BTreeMap<(u32, AlarmKind), AlarmEvent> = BTreeMap::new();
    let mut alarm_instance = 0u64;
    drain(&alarm_view, &mut alarm_reader, |f| {
        if f.kind() != KIND_ALARM {
            return;
        }
        let Ok(e) = f.read::<AlarmEvent>() else { return };
        let Some(kind) = e.kind() else { return };
        if e.instance > alarm_instance {
            alarm_instance = e.instance;
            raised.clear();
        }
        if e.instance != alarm_instance {
            return;
        }
        if e.is_raise() {
            raised.insert((e.stream, kind), e);
        } else {
            raised.remove(&(e.stream, kind));
        }
    });
    // Alarms of an older twin than the state's are void.
    if alarm_instance != instance && instance != 0 {
        raised.clear();
    }

    let wanted = |s: u32| filter.is_none_or(|r| r.contains(s));
    let mut active: BTreeMap<(u32, AlarmKind), ActiveAlarm> = raised
        .iter()
        .filter(|((s, _), _)| wanted(*s))
        .map(|(&(stream, rule), e)| {
            let a = ActiveAlarm {
                stream,
                rule,
                event: Some(e.event),
                value: Some(e.value),
                limit: Some(e.limit),
                raised_ns: Some(e.time_ns),
                age_ns: Some(now.saturating_sub(e.time_ns)),
                sample_seq: Some(e.sample_seq),
            };
            ((stream, rule), a)
        })
        .collect();
    for s in states.values().filter(|s| wanted(s.stream)) {
        for rule in AlarmKind::ALL {
            if s.flags & rule.flag() != 0 {
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
    }

    let twin = markers.last().map(|m| {
        let frames_per_sec = (markers.len() >= 2).then(|| {
            let p = &markers[markers.len() - 2];
            let secs = m.published_ns.saturating_sub(p.published_ns) as f64 / 1e9;
            if secs > 0.0 {
                m.frames.saturating_sub(p.frames) as f64 / secs
            } else {
                0.0
            }
        });
        TwinSummary { marker: *m, age_ns: now.saturating_sub(m.published_ns), frames_per_sec }
    });
    let streams = states
        .values()
        .filter(|s| wanted(s.stream))
        .map(|s| {
            let age_ns = now.saturating_sub(s.last_ingest_ns);
            StreamView {
                state: *s,
                alarms: active.keys().filter(|(id, _)| *id == s.stream).map(|&(_, k)| k).collect(),
                has_rule: s.flags & FLAG_HAS_RULE != 0,
                age_ns,
                staleness: if s.period_ns > 0 { age_ns as f64 / s.period_ns as f64 } else { 0.0 },
            }
        })
        .collect();
    Ok(TwinView {
        namespace: ns.to_string(),
        pid: lease.pid,
        alive: lease.alive,
        twin,
        streams,
        alarms: active.into_values().collect(),
    })
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
pub fn render(v: &TwinView, filter: Option<StreamRange>, all: bool) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let who = match (v.pid, v.alive) {
        (Some(p), true) => format!("pid {p}"),
        (Some(p), false) => format!("pid {p} (dead: what follows is its last state)"),
        (None, _) => "not running (what follows is the last state published)".into(),
    };
    let _ = writeln!(o, "helix-twin in namespace {}: {who}", v.namespace);
    match &v.twin {
        None => {
            let _ = writeln!(o, "  no snapshot in the state ring yet");
        }
        Some(summary) => {
            let (t, rate) = (&summary.marker, summary.frames_per_sec.map_or("-".into(), |r| format!("{r:.0}")));
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
    }
    let _ = writeln!(o);
    if v.alarms.is_empty() {
        let _ = writeln!(o, "no active alarms");
    } else {
        let _ = writeln!(o, "{:>8} {:<6} {:>14} {:>14} {:>10}", "STREAM", "ALARM", "VALUE", "LIMIT", "SINCE");
        for a in &v.alarms {
            let num = |x: Option<f64>| x.map_or("-".into(), |x| format!("{x:.4}"));
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
    let shown: Vec<&StreamView> = if all || filter.is_some() {
        v.streams.iter().collect()
    } else {
        v.streams.iter().filter(|s| !s.alarms.is_empty()).collect()
    };
    let _ = writeln!(o);
    if shown.is_empty() {
        if filter.is_some() {
            let _ = writeln!(o, "no state for those streams");
        }
    } else {
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
    if !all && filter.is_none() {
        let _ = writeln!(
            o,
            "{} streams with state; `helixctl twin STREAM` (or a range, or --all) shows them",
            v.streams.len()
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

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
