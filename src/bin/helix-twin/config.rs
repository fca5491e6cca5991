//! helix-twin's configuration (`/etc/helix/twin.toml`, or the embedded
//! default) and its alarm rules.
//!
//! Every error names the file and line, and what is wrong: contradicting
//! limits (low at or above high, a negative hysteresis, a hysteresis as wide
//! as the band), overlapping stream ranges and ranges past `streams` are
//! refused.

use std::path::{Path, PathBuf};
use std::time::Duration;

use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

pub use crate::shared::conf::ConfigError;
use crate::shared::conf::Source;
use helix::shm::{validate_ring_name, Namespace};
use helix::twin::StreamRange;

/// The configuration used when there is no file.
pub const DEFAULT_CONFIG: &str = include_str!("default.toml");

/// Where helix-twin looks for its configuration by default.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/helix/twin.toml";

/// Most streams a twin models (the state table is this many entries).
pub const MAX_STREAMS: u32 = 1 << 24;

/// One alarm rule, checked for consistency.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// The streams it covers.
    pub streams: StreamRange,
    /// Low limit.
    pub low: Option<f64>,
    /// High limit.
    pub high: Option<f64>,
    /// How far back past a limit a value must come to clear its alarm.
    pub hysteresis: f64,
    /// Largest rate of change, units per second.
    pub rate_limit: Option<f64>,
    /// A stream without a sample this long is stale.
    pub stale_after: Option<Duration>,
    /// The stream's expected sample period.
    pub period: Option<Duration>,
}

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct TwinConfig {
    /// Where it came from.
    pub path: PathBuf,
    /// Namespace of the rings.
    pub namespace: Namespace,
    /// Streams modelled: ids `0 .. streams`.
    pub streams: u32,
    /// The ring read.
    pub telemetry_ring: String,
    /// The ring the state table goes to.
    pub state_ring: String,
    /// The ring alarm events go to.
    pub alarm_ring: String,
    /// Full snapshot interval.
    pub snapshot_interval: Duration,
    /// Change update interval.
    pub update_interval: Duration,
    /// Once caught up with flowing telemetry, how long to wait before
    /// reading again (batches); zero: park on the ring's futex and read as
    /// it comes.
    pub poll_interval: Duration,
    /// EWMA smoothing factor.
    pub ewma_alpha: f64,
    /// Trend smoothing factor.
    pub trend_beta: f64,
    /// The rules, in file order.
    pub rules: Vec<Rule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    namespace: Option<Spanned<String>>,
    streams: Option<Spanned<i64>>,
    telemetry_ring: Option<Spanned<String>>,
    state_ring: Option<Spanned<String>>,
    alarm_ring: Option<Spanned<String>>,
    snapshot_interval_ms: Option<Spanned<i64>>,
    update_interval_ms: Option<Spanned<i64>>,
    poll_interval_ms: Option<Spanned<i64>>,
    ewma_alpha: Option<Spanned<f64>>,
    trend_beta: Option<Spanned<f64>>,
    #[serde(default)]
    rule: Vec<Spanned<RawRule>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawStreams {
    Id(i64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    streams: Spanned<RawStreams>,
    low: Option<Spanned<f64>>,
    high: Option<Spanned<f64>>,
    hysteresis: Option<Spanned<f64>>,
    rate_limit: Option<Spanned<f64>>,
    stale_after_ms: Option<Spanned<i64>>,
    period_ms: Option<Spanned<i64>>,
}

impl TwinConfig {
    /// The embedded default configuration.
    #[cfg(test)]
    pub fn embedded() -> Result<TwinConfig, ConfigError> {
        TwinConfig::parse(DEFAULT_CONFIG, Path::new(crate::shared::conf::EMBEDDED))
    }

    /// `path` if given (it must exist), else /etc/helix/twin.toml if it
    /// exists, else the embedded default.
    pub fn find(path: Option<&Path>) -> Result<TwinConfig, ConfigError> {
        crate::shared::conf::find(path, DEFAULT_CONFIG_PATH, DEFAULT_CONFIG, TwinConfig::parse)
    }

    /// Parses and validates configuration text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<TwinConfig, ConfigError> {
        let src = Source::new(text, path);
        let raw: RawConfig = src.toml()?;
        let namespace = src.namespace(&raw.namespace)?;
        let streams = match &raw.streams {
            None => 10_000,
            Some(s) => match u32::try_from(*s.get_ref()) {
                Ok(n) if (1..=MAX_STREAMS).contains(&n) => n,
                _ => return Err(src.at(s, format!("streams must be from 1 to {MAX_STREAMS}"))),
            },
        };
        let [telemetry_ring, state_ring, alarm_ring] = rings(&src, &raw)?;
        let ms = |v: &Option<Spanned<i64>>, default: u64, what: &str| {
            Ok::<_, ConfigError>(src.millis(v, what)?.unwrap_or(Duration::from_millis(default)))
        };
        let snapshot_interval = ms(&raw.snapshot_interval_ms, 1000, "snapshot_interval_ms")?;
        let update_interval = ms(&raw.update_interval_ms, 200, "update_interval_ms")?;
        let poll_interval = match &raw.poll_interval_ms {
            Some(v) if *v.get_ref() < 0 => {
                return Err(src.at(v, "poll_interval_ms must be 0 (read telemetry as it comes) or more"))
            }
            Some(v) if *v.get_ref() == 0 => Duration::ZERO,
            v => ms(v, 0, "poll_interval_ms")?,
        };
        if update_interval > snapshot_interval {
            // Name whichever of the two the file sets: a short snapshot
            // interval alone can undercut the default update interval.
            let at = raw.update_interval_ms.as_ref().or(raw.snapshot_interval_ms.as_ref()).map(|v| v.span());
            return Err(src.err(at, "update_interval_ms is longer than snapshot_interval_ms"));
        }
        let factor = |v: &Option<Spanned<f64>>, what: &str| match v {
            None => Ok(0.1),
            Some(v) if *v.get_ref() > 0.0 && *v.get_ref() <= 1.0 => Ok(*v.get_ref()),
            Some(v) => Err(src.at(v, format!("{what} must be above 0 and at most 1"))),
        };
        let ewma_alpha = factor(&raw.ewma_alpha, "ewma_alpha")?;
        let trend_beta = factor(&raw.trend_beta, "trend_beta")?;
        let mut rules: Vec<(Rule, Range<usize>)> = Vec::new();
        for r in &raw.rule {
            let checked = rule(&src, r, streams, &rules)?;
            rules.push((checked, r.span()));
        }
        Ok(TwinConfig {
            path: path.to_owned(),
            namespace,
            streams,
            telemetry_ring,
            state_ring,
            alarm_ring,
            snapshot_interval,
            update_interval,
            poll_interval,
            ewma_alpha,
            trend_beta,
            rules: rules.into_iter().map(|(r, _)| r).collect(),
        })
    }

    /// A configuration for `streams` streams with these rules and the
    /// defaults otherwise (for tests that build one in code).
    #[cfg(test)]
    pub fn with_rules(namespace: Namespace, streams: u32, rules: Vec<Rule>) -> TwinConfig {
        TwinConfig {
            path: PathBuf::from("<in code>"),
            namespace,
            streams,
            telemetry_ring: "telemetry".into(),
            state_ring: "twin.state".into(),
            alarm_ring: "alarms".into(),
            snapshot_interval: Duration::from_millis(1000),
            update_interval: Duration::from_millis(200),
            poll_interval: Duration::ZERO,
            ewma_alpha: 0.1,
            trend_beta: 0.1,
            rules,
        }
    }

    /// For each stream, the index of its rule (`u32::MAX`: none).
    pub fn rule_index(&self) -> Vec<u32> {
        let mut idx = vec![u32::MAX; self.streams as usize];
        for (i, r) in self.rules.iter().enumerate() {
            let last = r.streams.last.min(self.streams.saturating_sub(1));
            for s in r.streams.first..=last {
                idx[s as usize] = i as u32;
            }
        }
        idx
    }
}

/// The telemetry, state and alarm rings: valid names, the twin writing
/// neither the ring it reads nor one ring twice.
fn rings(src: &Source<'_>, raw: &RawConfig) -> Result<[String; 3], ConfigError> {
    let ring = |v: &Option<Spanned<String>>, default: &str, what: &str| match v {
        None => Ok(default.to_owned()),
        Some(v) => {
            validate_ring_name(v.get_ref()).map_err(|e| src.at(v, format!("{what}: {e}")))?;
            Ok(v.get_ref().clone())
        }
    };
    let telemetry_ring = ring(&raw.telemetry_ring, "telemetry", "telemetry_ring")?;
    let state_ring = ring(&raw.state_ring, "twin.state", "state_ring")?;
    let alarm_ring = ring(&raw.alarm_ring, "alarms", "alarm_ring")?;
    // Named in the file or by default: `telemetry_ring = "twin.state"`
    // alone is the default state ring.
    for (written, raw_name) in [(&state_ring, &raw.state_ring), (&alarm_ring, &raw.alarm_ring)] {
        if *written == telemetry_ring {
            let at = raw_name.as_ref().or(raw.telemetry_ring.as_ref()).map(|r| r.span());
            return Err(src.err(at, format!("the twin cannot write the ring it reads ({telemetry_ring})")));
        }
    }
    if state_ring == alarm_ring {
        let at = raw.alarm_ring.as_ref().or(raw.state_ring.as_ref()).map(|r| r.span());
        return Err(src.err(at, "state_ring and alarm_ring must be different rings"));
    }
    Ok([telemetry_ring, state_ring, alarm_ring])
}

/// One `[[rule]]` table, checked for consistency; `before` are the rules
/// above it, with their spans.
fn rule(
    src: &Source<'_>,
    r: &Spanned<RawRule>,
    streams: u32,
    before: &[(Rule, Range<usize>)],
) -> Result<Rule, ConfigError> {
    let span = r.span();
    let r = r.get_ref();
    let range = stream_range(src, r, streams, before)?;
    let (low, high, hysteresis) = limits(src, r)?;
    if let Some(v) = &r.rate_limit {
        if *v.get_ref() <= 0.0 {
            return Err(src.at(v, format!("rate_limit = {} must be above 0", v.get_ref())));
        }
    }
    let stale_after = src.millis(&r.stale_after_ms, "stale_after_ms")?;
    let period = src.millis(&r.period_ms, "period_ms")?;
    if low.is_none() && high.is_none() && r.rate_limit.is_none() && stale_after.is_none() && period.is_none() {
        return Err(
            src.err(Some(span), "a rule needs at least one of low, high, rate_limit, stale_after_ms, period_ms")
        );
    }
    Ok(Rule {
        streams: range,
        low,
        high,
        hysteresis,
        rate_limit: r.rate_limit.as_ref().map(|v| *v.get_ref()),
        stale_after,
        period,
    })
}

/// A rule's streams: ids within `streams`, overlapping no rule `before`.
fn stream_range(
    src: &Source<'_>,
    r: &RawRule,
    streams: u32,
    before: &[(Rule, Range<usize>)],
) -> Result<StreamRange, ConfigError> {
    let range = match r.streams.get_ref() {
        RawStreams::Id(i) => match u32::try_from(*i) {
            Ok(v) => StreamRange { first: v, last: v },
            Err(_) => return Err(src.at(&r.streams, format!("streams {i}: not a stream id"))),
        },
        RawStreams::Text(t) => StreamRange::parse(t, streams).map_err(|e| src.at(&r.streams, e.to_string()))?,
    };
    if range.last >= streams {
        return Err(src.at(
            &r.streams,
            format!("rule streams {range} reach past the configured streams = {streams} (ids 0-{})", streams - 1),
        ));
    }
    if let Some((other, other_span)) = before.iter().find(|(o, _)| o.streams.overlaps(&range)) {
        return Err(src.at(
            &r.streams,
            format!(
                "rule streams {range} overlap the rule at line {} (streams {}): a stream has one rule",
                src.line(other_span.start),
                other.streams
            ),
        ));
    }
    Ok(range)
}

/// A rule's low and high limits and hysteresis: finite, not contradicting,
/// a hysteresis only with a limit and narrower than the band.
fn limits(src: &Source<'_>, r: &RawRule) -> Result<(Option<f64>, Option<f64>, f64), ConfigError> {
    for v in [&r.low, &r.high, &r.hysteresis, &r.rate_limit].into_iter().flatten() {
        if !v.get_ref().is_finite() {
            return Err(src.at(v, "limits must be finite numbers"));
        }
    }
    let low = r.low.as_ref().map(|v| *v.get_ref());
    let high = r.high.as_ref().map(|v| *v.get_ref());
    if let (Some(l), Some(h)) = (&r.low, &r.high) {
        if l.get_ref() >= h.get_ref() {
            return Err(
                src.at(l, format!("low = {} is not below high = {}: the limits contradict", l.get_ref(), h.get_ref()))
            );
        }
    }
    let Some(h) = &r.hysteresis else { return Ok((low, high, 0.0)) };
    let hysteresis = *h.get_ref();
    if hysteresis < 0.0 {
        return Err(src.at(h, format!("hysteresis = {hysteresis} is negative")));
    }
    if let (Some(l), Some(hi)) = (low, high) {
        if hysteresis >= hi - l {
            return Err(src.at(
                h,
                format!(
                    "hysteresis = {hysteresis} is not narrower than the band {l} to {hi}: an alarm could never clear"
                ),
            ));
        }
    }
    if low.is_none() && high.is_none() {
        return Err(src.at(h, "hysteresis without a low or high limit"));
    }
    // An alarm clears past its limit by the hysteresis: a threshold beyond
    // the largest number is never passed.
    let clears = [low.map(|l| l + hysteresis), high.map(|hi| hi - hysteresis)];
    if clears.into_iter().flatten().any(|c| !c.is_finite()) {
        return Err(src.at(h, format!("hysteresis = {hysteresis} puts a limit's clearing point beyond the largest number: an alarm could never clear")));
    }
    Ok((low, high, hysteresis))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<TwinConfig, ConfigError> {
        TwinConfig::parse(text, Path::new("t.toml"))
    }

    fn line_err(text: &str) -> (usize, String) {
        crate::shared::conf::error_of(TwinConfig::parse, text)
    }

    #[test]
    fn the_embedded_default_is_valid_and_covers_every_stream() {
        let c = TwinConfig::embedded().unwrap();
        assert_eq!(c.streams, 10_000);
        assert_eq!(
            (c.telemetry_ring.as_str(), c.state_ring.as_str(), c.alarm_ring.as_str()),
            ("telemetry", "twin.state", "alarms")
        );
        assert_eq!(c.rules.len(), 1);
        assert_eq!(c.rules[0].streams, StreamRange { first: 0, last: 9999 });
        assert!(c.rule_index().iter().all(|&i| i == 0));
        // It reads telemetry as it comes.
        assert_eq!(c.poll_interval, Duration::ZERO);
    }

    #[test]
    fn poll_interval_ms_is_zero_to_read_as_telemetry_comes_or_a_batching_period() {
        let poll = |text: &str| parse(text).unwrap().poll_interval;
        assert_eq!(poll(""), Duration::ZERO);
        assert_eq!(poll("poll_interval_ms = 0\n"), Duration::ZERO);
        assert_eq!(poll("poll_interval_ms = 2\n"), Duration::from_millis(2));
        assert_eq!(
            line_err("\npoll_interval_ms = -1\n"),
            (2, "poll_interval_ms must be 0 (read telemetry as it comes) or more".into())
        );
    }

    #[test]
    fn mistakes_found_by_review_name_their_line() {
        // The default state ring read as telemetry (only a ring named in
        // the file was compared); a stale time whose nanoseconds wrap (it
        // became 448 µs); a clearing point beyond the largest number.
        assert_eq!(
            line_err("telemetry_ring = \"twin.state\"\n"),
            (1, "the twin cannot write the ring it reads (twin.state)".into())
        );
        let (line, msg) = line_err("[[rule]]\nstreams = \"all\"\nhigh = 1.0\nstale_after_ms = 18446744073710\n");
        assert_eq!(line, 4);
        assert!(msg.starts_with("stale_after_ms = 18446744073710 is more than 18446744073709"), "{msg}");
        let (line, msg) = line_err("[[rule]]\nstreams = \"all\"\nlow = 1e308\nhysteresis = 1e308\n");
        assert_eq!(line, 4);
        assert!(msg.contains("an alarm could never clear"), "{msg}");
    }

    #[test]
    fn ranges_parse_and_overlap() {
        assert_eq!(StreamRange::parse("0-99", 10), Ok(StreamRange { first: 0, last: 99 }));
        assert_eq!(StreamRange::parse(" 7 ", 10), Ok(StreamRange { first: 7, last: 7 }));
        assert_eq!(StreamRange::parse("all", 10), Ok(StreamRange { first: 0, last: 9 }));
        assert!(StreamRange::parse("9-3", 10).unwrap_err().to_string().contains("backwards"));
        assert!(StreamRange::parse("x", 10).is_err());
        assert!(StreamRange::parse("-1", 10).is_err());
        let a = StreamRange { first: 0, last: 9 };
        assert!(a.overlaps(&StreamRange { first: 9, last: 20 }));
        assert!(!a.overlaps(&StreamRange { first: 10, last: 20 }));
    }

    #[test]
    fn contradicting_limits_are_refused_naming_the_line() {
        let rule = |body: &str| format!("streams = 100\n[[rule]]\nstreams = \"0-9\"\n{body}");
        let cases = [
            ("low = 5.0\nhigh = 5.0\n", 4, "low = 5 is not below high = 5"),
            ("low = 0.0\nhigh = 10.0\nhysteresis = -1.0\n", 6, "negative"),
            ("low = 0.0\nhigh = 10.0\nhysteresis = 10.0\n", 6, "not narrower than the band"),
            ("rate_limit = 0.0\n", 4, "rate_limit"),
            ("stale_after_ms = 0\n", 4, "stale_after_ms"),
            ("high = nan\n", 4, "finite"),
            ("hysteresis = 1.0\nrate_limit = 3.0\n", 4, "without a low or high"),
            ("", 2, "at least one of"),
        ];
        for (body, line, what) in cases {
            let (l, m) = line_err(&rule(body));
            assert_eq!(l, line, "{body:?}: {m}");
            assert!(m.contains(what), "{body:?}: {m}");
        }
    }

    #[test]
    fn stream_ranges_may_not_overlap_or_reach_past_the_stream_count() {
        let text = "streams = 100\n[[rule]]\nstreams = \"0-9\"\nhigh = 1.0\n[[rule]]\nstreams = \"5-20\"\nhigh = 2.0\n";
        let (l, m) = line_err(text);
        assert_eq!(l, 6);
        assert!(m.contains("overlap the rule at line 2"), "{m}");
        let (l, m) = line_err("streams = 100\n[[rule]]\nstreams = \"90-100\"\nhigh = 1.0\n");
        assert_eq!(l, 3);
        assert!(m.contains("reach past the configured streams = 100"), "{m}");
        let (l, _) = line_err("streams = 100\n[[rule]]\nstreams = -3\nhigh = 1.0\n");
        assert_eq!(l, 3);
        let c = parse("streams = 100\n[[rule]]\nstreams = 7\nhigh = 1.0\n[[rule]]\nstreams = \"8-9\"\nlow = 1.0\n")
            .unwrap();
        let idx = c.rule_index();
        assert_eq!((idx[6], idx[7], idx[8], idx[9], idx[10]), (u32::MAX, 0, 1, 1, u32::MAX));
    }

    #[test]
    fn other_mistakes_name_their_line() {
        assert_eq!(line_err("bogus = 1\n").0, 1);
        assert!(line_err("streams = 0\n").1.contains("streams must be from 1"));
        assert_eq!(line_err("x = 1\nstreams = -5\n").0, 1);
        assert_eq!(line_err("\nupdate_interval_ms = 0\n").0, 2);
        assert_eq!(line_err("update_interval_ms = 5000\n").0, 1);
        assert_eq!(
            line_err("\nsnapshot_interval_ms = 100\n"),
            (2, "update_interval_ms is longer than snapshot_interval_ms".into())
        );
        assert_eq!(line_err("\n\newma_alpha = 1.5\n").0, 3);
        assert_eq!(line_err("state_ring = \"telemetry\"\n").0, 1);
        assert_eq!(line_err("state_ring = \"a\"\nalarm_ring = \"a\"\n").0, 2);
        assert_eq!(line_err("telemetry_ring = \"Bad\"\n").0, 1);
        assert_eq!(line_err("[[rule]]\nstreams = \"0-9\"\ncolour = 1\n").0, 3);
        let e = parse("x = 1\n").unwrap_err().to_string();
        assert!(e.starts_with("t.toml:1: ") && !e.contains('\n'), "{e}");
    }
}
