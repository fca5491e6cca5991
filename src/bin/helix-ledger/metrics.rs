//! The recorder's own counters for `--metrics-file`: the chain's length,
//! this run's frames, gaps and syncs, the last completed fdatasync, the
//! segment files' bytes and the newest anchor. The ledger's lag behind a
//! ring is its reader's, in the ring's shared memory: `helixctl metrics`
//! reads it there (helix_reader_lag_frames{reader="helix-ledger"}).

use std::path::Path;

use helix::ledger::anchor::Anchor;
use helix::ledger::store::{segments, Ledger};

use crate::shared::textfile::{label, Text};

const COUNTER: &str = "counter";
const GAUGE: &str = "gauge";

/// What the recording loop knows beyond the ledger itself.
pub struct Extra<'a> {
    /// Unix time of the last fdatasync that completed (or of the ledger's
    /// opening, which leaves everything in it durable).
    pub synced_at: f64,
    /// How long the fdatasync in flight has run (0: none).
    pub sync_in_flight: f64,
    /// Each configured ring, and whether the recorder is attached to it.
    pub rings: Vec<(&'a str, bool)>,
    /// The newest anchor, if any is readable
    /// ([`NewestAnchor`](helix::ledger::anchor::NewestAnchor)).
    pub anchor: Option<&'a Anchor>,
}

/// The exposition text of the recorder.
pub fn render(ledger: &Ledger, extra: &Extra<'_>) -> String {
    let mut t = Text::default();
    let s = ledger.stats();
    let records = ledger.chain().records;
    let mut one = |name: &str, kind: &str, help: &str, v: f64| {
        t.family(name, kind, help);
        t.sample(name, "", v);
    };
    one(
        "helix_ledger_records_total",
        COUNTER,
        "Records in the ledger's hash chain (its length, all runs).",
        records as f64,
    );
    one("helix_ledger_frames_total", COUNTER, "Frames recorded by this run of the recorder.", s.frames as f64);
    one(
        "helix_ledger_gaps_total",
        COUNTER,
        "GAP records written by this run (frames lost before they were recorded).",
        s.gaps as f64,
    );
    one("helix_ledger_lost_sequences_total", COUNTER, "Ring sequences this run's GAP records cover.", s.lost as f64);
    one("helix_ledger_written_bytes_total", COUNTER, "Bytes this run wrote to segment files.", s.bytes as f64);
    one("helix_ledger_syncs_total", COUNTER, "fdatasync calls this run started.", s.syncs as f64);
    one(
        "helix_ledger_last_sync_timestamp_seconds",
        GAUGE,
        "Unix time the last fdatasync completed (or the ledger was opened).",
        extra.synced_at,
    );
    one(
        "helix_ledger_sync_in_flight_seconds",
        GAUGE,
        "How long the fdatasync in flight has run (0: none; growing: the disk is stuck).",
        extra.sync_in_flight,
    );
    one("helix_ledger_segment", GAUGE, "Number of the segment being written.", ledger.segment() as f64);
    let (count, bytes) = segment_files(ledger.dir());
    one("helix_ledger_segments", GAUGE, "Segment files in the ledger folder.", count as f64);
    one("helix_ledger_segment_bytes", GAUGE, "Bytes of the segment files in the ledger folder.", bytes as f64);
    anchors(&mut t, extra.anchor, records);
    t.family(
        "helix_ledger_ring_attached",
        GAUGE,
        "1 if the recorder is attached to the configured ring, 0 if waiting for it.",
    );
    for (ring, attached) in &extra.rings {
        t.sample("helix_ledger_ring_attached", &format!("ring=\"{}\"", label(ring)), if *attached { 1.0 } else { 0.0 });
    }
    t.0
}

/// How many segment files the folder holds and their bytes (0, 0 if it
/// cannot be read: the recorder's own errors are reported elsewhere).
fn segment_files(dir: &Path) -> (usize, u64) {
    let list = segments(dir).unwrap_or_default();
    let bytes = list.iter().filter_map(|(_, p)| std::fs::metadata(p).ok()).map(|m| m.len()).sum();
    (list.len(), bytes)
}

/// The newest anchor's time and the records after it; without a readable
/// anchor, every record is unanchored and the time is not given.
fn anchors(t: &mut Text, newest: Option<&Anchor>, records: u64) {
    if let Some(a) = newest {
        t.family(
            "helix_ledger_anchored_head_timestamp_seconds",
            GAUGE,
            "Unix time the newest anchor (a chain hash exported off the host) was recorded.",
        );
        t.sample("helix_ledger_anchored_head_timestamp_seconds", "", a.time_ns as f64 / 1e9);
    }
    t.family("helix_ledger_unanchored_records", GAUGE, "Records after the newest anchor (all of them without one).");
    t.sample("helix_ledger_unanchored_records", "", records.saturating_sub(newest.map_or(0, |a| a.records)) as f64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_ledger_has_every_family_and_all_its_records_unanchored() {
        let dir = tempfile::tempdir().unwrap();
        let (ledger, _) = Ledger::open(dir.path(), 1 << 20).unwrap();
        let extra = Extra {
            synced_at: 12.5,
            sync_in_flight: 0.0,
            rings: vec![("telemetry", true), ("x", false)],
            anchor: None,
        };
        let text = render(&ledger, &extra);
        for line in [
            "helix_ledger_last_sync_timestamp_seconds{} 12.5",
            "helix_ledger_segments{} 1",
            "helix_ledger_ring_attached{ring=\"telemetry\"} 1",
            "helix_ledger_ring_attached{ring=\"x\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "no line {line:?} in:\n{text}");
        }
        let records = ledger.chain().records;
        assert!(text.contains(&format!("helix_ledger_unanchored_records{{}} {records}\n")), "{text}");
        assert!(!text.contains("anchored_head_timestamp"), "no anchor, no time:\n{text}");
    }
}
