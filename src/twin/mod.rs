//! The frames helix-twin publishes: per-stream state and snapshot markers on
//! `twin.state`, alarm events on `alarms`. Each is a `#[repr(C)]` plain-old-
//! data struct with its offsets asserted at compile time, and a distinct
//! slot `kind`. The byte-for-byte description, with its own format version,
//! is docs/abi.md section 10 ("Twin frames").
//!
//! A consumer reads them back with [`Snapshot::read`] (each stream's newest
//! state and the twin's counters, from `twin.state`) and
//! [`ActiveAlarms::read`] (the alarms raised and not cleared, from
//! `alarms`).

use std::fmt;

use bytemuck::{Pod, Zeroable};

use crate::layout::assert_layout;

mod alarms;
mod snapshot;

pub use alarms::ActiveAlarms;
pub use snapshot::{Snapshot, TwinRingError};

/// Version of the twin frame formats (docs/abi.md §10). Changing a layout
/// below changes this, not the ring ABI version.
pub const TWIN_FORMAT_VERSION: u32 = 1;

/// Slot kind of a [`StreamState`] frame ("TW" 0x0001).
pub const KIND_STREAM_STATE: u32 = 0x5457_0001;
/// Slot kind of the [`Marker`] that opens a full snapshot.
pub const KIND_SNAPSHOT_BEGIN: u32 = 0x5457_0002;
/// Slot kind of the [`Marker`] that closes a full snapshot.
pub const KIND_SNAPSHOT_END: u32 = 0x5457_0003;
/// Slot kind of an [`AlarmEvent`] frame.
pub const KIND_ALARM: u32 = 0x5457_0010;

/// `StreamState::flags`: the low-limit alarm is active.
pub const FLAG_ALARM_LOW: u32 = 1 << 0;
/// `StreamState::flags`: the high-limit alarm is active.
pub const FLAG_ALARM_HIGH: u32 = 1 << 1;
/// `StreamState::flags`: the rate-of-change alarm is active.
pub const FLAG_ALARM_RATE: u32 = 1 << 2;
/// `StreamState::flags`: the stale alarm is active.
pub const FLAG_ALARM_STALE: u32 = 1 << 3;
/// `StreamState::flags`: an alarm rule applies to the stream.
pub const FLAG_HAS_RULE: u32 = 1 << 8;
/// `StreamState::flags`: this frame is part of a full snapshot (between a
/// begin and an end marker of the same round), not a change update.
pub const FLAG_SNAPSHOT: u32 = 1 << 9;

/// `AlarmEvent::action`: the alarm became active.
pub const ACTION_RAISE: u16 = 1;
/// `AlarmEvent::action`: the alarm is no longer active.
pub const ACTION_CLEAR: u16 = 2;

/// The alarm rules, as numbered in [`AlarmEvent::rule`] (and, minus one,
/// the bit of their flag in [`StreamState::flags`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize), serde(rename_all = "lowercase"))]
pub enum AlarmKind {
    /// The value fell below the low limit.
    Low = 1,
    /// The value rose above the high limit.
    High = 2,
    /// The value changed faster than the rate-of-change limit.
    Rate = 3,
    /// No sample for longer than the stale limit.
    Stale = 4,
}

impl AlarmKind {
    /// Every kind, in number order.
    pub const ALL: [AlarmKind; 4] = [AlarmKind::Low, AlarmKind::High, AlarmKind::Rate, AlarmKind::Stale];

    /// The number carried in [`AlarmEvent::rule`].
    pub fn number(self) -> u16 {
        self as u16
    }

    /// The kind with that number.
    pub fn from_number(n: u16) -> Option<AlarmKind> {
        AlarmKind::ALL.into_iter().find(|k| k.number() == n)
    }

    /// Its bit in [`StreamState::flags`].
    pub fn flag(self) -> u32 {
        1 << (self as u32 - 1)
    }

    /// `"low"`, `"high"`, `"rate"` or `"stale"`.
    pub fn as_str(self) -> &'static str {
        match self {
            AlarmKind::Low => "low",
            AlarmKind::High => "high",
            AlarmKind::Rate => "rate",
            AlarmKind::Stale => "stale",
        }
    }
}

/// One stream's state, as published on `twin.state` (176 bytes, kind
/// [`KIND_STREAM_STATE`]). Times are CLOCK_MONOTONIC ns except
/// `last_sample_ns`, which is the source's own timestamp. Serialised (for
/// `helixctl twin --json`) without the fields a reader decodes or recomputes
/// as of now: `flags`, `instance`, `reserved`, `age_ns`, `staleness`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct StreamState {
    /// Stream id.
    pub stream: u32,
    /// `FLAG_*` bits: active alarms, whether a rule applies, snapshot.
    #[cfg_attr(feature = "serde", serde(skip))]
    pub flags: u32,
    /// The publishing twin's instance (its start, CLOCK_REALTIME ns): a
    /// reader keeps only frames of the newest instance.
    #[cfg_attr(feature = "serde", serde(skip))]
    pub instance: u64,
    /// Publication round: every snapshot and every change update is one.
    pub round: u64,
    /// When this frame was published (CLOCK_MONOTONIC ns).
    pub published_ns: u64,
    /// Samples taken into the statistics.
    pub count: u64,
    /// Per-stream sequence number of the last sample.
    pub last_seq: u64,
    /// The last sample's own timestamp (`Sample::sample_ns`).
    pub last_sample_ns: u64,
    /// When the last sample was ingested (`Sample::ingest_ns`).
    pub last_ingest_ns: u64,
    /// How long before `published_ns` the twin read the stream's last
    /// sample (docs/abi.md §10.1).
    #[cfg_attr(feature = "serde", serde(skip))]
    pub age_ns: u64,
    /// Expected period between samples: the rule's `period_ms`, else the
    /// observed mean interval; 0 while unknown.
    pub period_ns: u64,
    /// Samples missing from the stream's sequence numbers (gaps seen).
    pub gaps: u64,
    /// Quality flags of the last sample (`Sample::quality`).
    pub last_quality: u32,
    /// Zero.
    #[cfg_attr(feature = "serde", serde(skip))]
    pub reserved: u32,
    /// Last value.
    pub last: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Running mean.
    pub mean: f64,
    /// Running sample variance (n - 1 in the denominator; 0 below 2 samples).
    pub variance: f64,
    /// Exponentially weighted mean.
    pub ewma: f64,
    /// Observed sample rate in Hz (from the smoothed sample interval).
    pub rate_hz: f64,
    /// Smoothed change per sample (the trend of the prediction).
    pub trend: f64,
    /// One-step-ahead prediction of the next value.
    pub prediction: f64,
    /// `age_ns / period_ns` (0 while the period is unknown).
    #[cfg_attr(feature = "serde", serde(skip))]
    pub staleness: f64,
}

assert_layout!(StreamState, 176;
    stream @ 0, flags @ 4, instance @ 8, round @ 16, published_ns @ 24, count @ 32, last_seq @ 40, last_sample_ns @ 48,
    last_ingest_ns @ 56, age_ns @ 64, period_ns @ 72, gaps @ 80, last_quality @ 88, reserved @ 92, last @ 96, min @ 104,
    max @ 112, mean @ 120, variance @ 128, ewma @ 136, rate_hz @ 144, trend @ 152, prediction @ 160, staleness @ 168,
);

/// Opens or closes a full snapshot on `twin.state` (128 bytes, kind
/// [`KIND_SNAPSHOT_BEGIN`] or [`KIND_SNAPSHOT_END`]), and carries the twin's
/// own counters.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Marker {
    /// [`TWIN_FORMAT_VERSION`].
    #[cfg_attr(feature = "serde", serde(skip))]
    pub version: u32,
    /// Streams configured (ids `0 .. streams`).
    #[cfg_attr(feature = "serde", serde(rename = "streams_configured"))]
    pub streams: u32,
    /// The publishing twin's instance.
    pub instance: u64,
    /// The snapshot's round (its stream frames carry the same).
    pub round: u64,
    /// When it was published (CLOCK_MONOTONIC ns).
    pub published_ns: u64,
    /// Streams that have had a sample: the number of stream frames in the
    /// snapshot.
    pub streams_seen: u64,
    /// Telemetry frames consumed.
    pub frames: u64,
    /// Overrun events on the telemetry ring.
    pub overruns: u64,
    /// Telemetry frames lost to overruns.
    pub lost: u64,
    /// Samples of a stream id at or beyond `streams`, not taken.
    pub rejected_streams: u64,
    /// Frames of an unknown kind.
    pub bad_kind: u64,
    /// Sample frames of the wrong size.
    pub bad_size: u64,
    /// Samples whose value is NaN or infinite, not taken.
    pub nonfinite: u64,
    /// Samples missing from streams' sequence numbers, over all streams.
    pub gaps: u64,
    /// Alarms active now.
    pub alarms_active: u64,
    /// Alarm events published, ever (this instance).
    pub alarm_events: u64,
    /// Alarm events that could not be published (counted, logged).
    pub alarm_publish_failed: u64,
}

assert_layout!(Marker, 128;
    version @ 0, streams @ 4, instance @ 8, round @ 16, published_ns @ 24, streams_seen @ 32, frames @ 40,
    overruns @ 48, lost @ 56, rejected_streams @ 64, bad_kind @ 72, bad_size @ 80, nonfinite @ 88, gaps @ 96,
    alarms_active @ 104, alarm_events @ 112, alarm_publish_failed @ 120,
);

/// An alarm raised or cleared, as published on `alarms` (56 bytes, kind
/// [`KIND_ALARM`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct AlarmEvent {
    /// Stream id.
    pub stream: u32,
    /// [`AlarmKind`] number: 1 low, 2 high, 3 rate, 4 stale.
    pub rule: u16,
    /// [`ACTION_RAISE`] or [`ACTION_CLEAR`].
    pub action: u16,
    /// The publishing twin's instance.
    pub instance: u64,
    /// Event number within the instance, from 1.
    pub event: u64,
    /// On the ring writer's clock (`Sample::ingest_ns`): the triggering
    /// sample's `ingest_ns`, or for a stale raise the last one's plus the
    /// age the twin judged (docs/abi.md §10.3).
    pub time_ns: u64,
    /// Per-stream sequence of the triggering sample (for a stale raise,
    /// the last sample's).
    pub sample_seq: u64,
    /// The value judged: the sample's value (low, high), its rate of
    /// change in units per second (rate), or the age in seconds (stale).
    pub value: f64,
    /// The limit it crossed (raise) or the threshold it came back past
    /// (clear: the limit moved by the hysteresis).
    pub limit: f64,
}

assert_layout!(AlarmEvent, 56;
    stream @ 0, rule @ 4, action @ 6, instance @ 8, event @ 16, time_ns @ 24, sample_seq @ 32, value @ 40, limit @ 48,
);

impl AlarmEvent {
    /// The rule, if its number is known.
    pub fn kind(&self) -> Option<AlarmKind> {
        AlarmKind::from_number(self.rule)
    }

    /// Whether it raises (else it clears).
    pub fn is_raise(&self) -> bool {
        self.action == ACTION_RAISE
    }
}

/// Stream ids `first ..= last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamRange {
    /// First id.
    pub first: u32,
    /// Last id (included).
    pub last: u32,
}

impl StreamRange {
    /// Whether `stream` is in the range.
    pub fn contains(&self, stream: u32) -> bool {
        (self.first..=self.last).contains(&stream)
    }

    /// Whether the two ranges share an id.
    pub fn overlaps(&self, other: &StreamRange) -> bool {
        self.first <= other.last && other.first <= self.last
    }

    /// Parses `"7"`, `"0-99"`, or (given the stream count) `"all"`.
    pub fn parse(text: &str, streams: u32) -> Result<StreamRange, StreamRangeError> {
        let t = text.trim();
        if t == "all" {
            return Ok(StreamRange { first: 0, last: streams.saturating_sub(1) });
        }
        let id = |s: &str| s.trim().parse::<u32>().map_err(|_| StreamRangeError::NotARange(text.to_owned()));
        let range = match t.split_once('-') {
            Some((a, b)) => StreamRange { first: id(a)?, last: id(b)? },
            None => {
                let v = id(t)?;
                StreamRange { first: v, last: v }
            }
        };
        if range.first > range.last {
            return Err(StreamRangeError::Backwards { text: text.to_owned(), first: range.first, last: range.last });
        }
        Ok(range)
    }
}

/// Why a text is not a [`StreamRange`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamRangeError {
    /// Neither an id, nor `first-last`, nor `all`.
    #[error("streams {0:?}: expected a stream id, a range like \"0-99\", or \"all\"")]
    NotARange(String),
    /// `first-last` with `first > last`.
    #[error("streams {text:?}: the range runs backwards ({first} > {last})")]
    Backwards {
        /// The text as given.
        text: String,
        /// Its first id.
        first: u32,
        /// Its last id.
        last: u32,
    },
}

impl fmt::Display for StreamRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_distinct_and_flags_match_rule_numbers() {
        let kinds = [KIND_STREAM_STATE, KIND_SNAPSHOT_BEGIN, KIND_SNAPSHOT_END, KIND_ALARM];
        for (i, a) in kinds.iter().enumerate() {
            assert_ne!(*a, crate::telemetry::KIND_SAMPLE);
            assert!(kinds[i + 1..].iter().all(|b| a != b));
        }
        let flags: Vec<u32> = AlarmKind::ALL.iter().map(|k| k.flag()).collect();
        assert_eq!(flags, [FLAG_ALARM_LOW, FLAG_ALARM_HIGH, FLAG_ALARM_RATE, FLAG_ALARM_STALE]);
        for k in AlarmKind::ALL {
            assert_eq!(AlarmKind::from_number(k.number()), Some(k));
        }
        assert_eq!(AlarmKind::from_number(0), None);
        // Every frame fits the `s` preset's 256-byte payloads.
        assert!(std::mem::size_of::<StreamState>() <= 256);
    }
}
