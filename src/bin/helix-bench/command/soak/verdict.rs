//! What the soak decides at the end, apart from any measurement: each
//! process's RSS growth against the tolerance, the gating readers'
//! overruns and demotion, the ledger's gaps, completeness and verification.
//!
//! Completeness is judged twice: by the recorder's own count of what it
//! recorded this run (its last log line), which covers segments retention
//! deleted during the soak, and by `verify` of what the folder still holds,
//! which must account for every frame when nothing was deleted.

use serde::{Deserialize, Serialize};

/// One process at the end of the soak, against its first reading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessEnd {
    /// helixd, helix-ledger, helix-twin or helix-bench.
    pub name: String,
    /// RSS outside shared memory after the warm-up, and at the end, bytes.
    pub rss_start: u64,
    /// See `rss_start`.
    pub rss_end: u64,
    /// Whether it reads telemetry as a gating reader (or did until demoted).
    pub gating: bool,
    /// Overrun events it saw (readers), and whether it was demoted.
    pub overruns: u64,
    /// See `overruns`.
    pub demoted: bool,
}

/// `helix-ledger verify --json` of the soak's ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verified {
    /// Whether every record and hash verified.
    pub ok: bool,
    /// What verify said, if it failed.
    pub problem: Option<String>,
    /// FRAME records of the telemetry ring, GAP records, sequences lost.
    pub frames: u64,
    /// See `frames`.
    pub gaps: u64,
    /// See `frames`.
    pub lost: u64,
    /// Whether retention deleted the oldest segments (verify then checks
    /// the chain from the last one deleted).
    pub pruned: bool,
}

/// What helix-ledger says it recorded this run, in its last log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recorded {
    /// FRAME records, GAP records and sequences lost, of every ring.
    pub frames: u64,
    /// See `frames`.
    pub gaps: u64,
    /// See `frames`.
    pub lost: u64,
}

/// Why the soak fails, one reason each (empty: it passes). `tolerance` is
/// the RSS growth allowed per process, bytes; `published` the frames
/// helixd published in all.
pub fn failures(
    processes: &[ProcessEnd],
    tolerance: u64,
    verified: &Verified,
    recorded: Option<Recorded>,
    published: u64,
) -> Vec<String> {
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let mut why = Vec::new();
    for p in processes {
        let grew = p.rss_end.saturating_sub(p.rss_start);
        if grew > tolerance {
            why.push(format!(
                "{} private RSS grew by {:.1} MiB ({:.1} to {:.1} MiB; at most {:.1} allowed)",
                p.name,
                mib(grew),
                mib(p.rss_start),
                mib(p.rss_end),
                mib(tolerance)
            ));
        }
        if p.gating && p.overruns > 0 {
            why.push(format!("gating reader {} was overrun {} times", p.name, p.overruns));
        }
        if p.demoted {
            why.push(format!("gating reader {} was demoted (it stalled the writer)", p.name));
        }
    }
    if !verified.ok {
        why.push(format!("the ledger did not verify: {}", verified.problem.as_deref().unwrap_or("no reason given")));
    }
    if verified.gaps > 0 {
        why.push(format!("{} ledger gaps ({} sequences lost)", verified.gaps, verified.lost));
    }
    if verified.ok && !verified.pruned && verified.frames != published {
        why.push(format!("the ledger holds {} frames of {} published", verified.frames, published));
    }
    let Some(r) = recorded else {
        why.push("helix-ledger's log has no final line saying what it recorded".into());
        return why;
    };
    // Gaps verify saw are named above; these were in deleted segments.
    if r.gaps > verified.gaps {
        why.push(format!("helix-ledger recorded {} gaps ({} sequences lost) this run", r.gaps, r.lost));
    }
    if r.frames != published {
        why.push(format!("helix-ledger recorded {} frames of {} published", r.frames, published));
    }
    why
}

/// Reads helix-ledger's log for its last `stopped: N frames and G gaps (L
/// sequences lost) recorded this run` line.
pub fn parse_recorded(log: &str) -> Option<Recorded> {
    let line = log.lines().rev().find_map(|l| l.split_once("stopped: ").map(|(_, rest)| rest))?;
    let words: Vec<&str> = line.split(|c: char| c.is_whitespace() || c == '(').filter(|w| !w.is_empty()).collect();
    let [frames, "frames", "and", gaps, "gaps", lost, "sequences", ..] = words[..] else { return None };
    let number = |w: &str| w.replace(',', "").parse().ok();
    Some(Recorded { frames: number(frames)?, gaps: number(gaps)?, lost: number(lost)? })
}

/// Reads `helix-ledger verify --json`'s line for `ring`.
pub fn parse_verify(json: &str, ring: &str) -> Result<Verified, String> {
    let v: serde_json::Value =
        serde_json::from_str(json.trim()).map_err(|e| format!("helix-ledger verify --json printed {json:?}: {e}"))?;
    if v["ok"] != true {
        let problem = v["error"].as_str().map_or_else(|| v.to_string(), str::to_owned);
        return Ok(Verified { ok: false, problem: Some(problem), frames: 0, gaps: 0, lost: 0, pruned: false });
    }
    let rings = v["rings"].as_array().ok_or_else(|| format!("helix-ledger verify --json: no rings in {v}"))?;
    let r = rings.iter().find(|r| r["name"] == ring);
    let n = |key: &str| r.and_then(|r| r[key].as_u64()).unwrap_or(0);
    let pruned = !v["pruned"].is_null();
    Ok(Verified { ok: true, problem: None, frames: n("frames"), gaps: n("gaps"), lost: n("lost"), pruned })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn process(name: &str, start: u64, end: u64) -> ProcessEnd {
        ProcessEnd {
            name: name.into(),
            rss_start: start * MIB,
            rss_end: end * MIB,
            gating: name == "helix-ledger",
            overruns: 0,
            demoted: false,
        }
    }

    fn ok(frames: u64) -> Verified {
        Verified { ok: true, problem: None, frames, gaps: 0, lost: 0, pruned: false }
    }

    fn all(frames: u64) -> Option<Recorded> {
        Some(Recorded { frames, gaps: 0, lost: 0 })
    }

    #[test]
    fn a_flat_complete_soak_passes_and_each_failure_is_named() {
        let flat = [process("helixd", 262, 262), process("helix-ledger", 40, 56), process("helix-twin", 30, 20)];
        assert!(failures(&flat, 16 * MIB, &ok(1000), all(1000), 1000).is_empty());
        let grown = [process("helixd", 262, 262), process("helix-ledger", 40, 57)];
        assert_eq!(
            failures(&grown, 16 * MIB, &ok(1000), all(1000), 1000),
            ["helix-ledger private RSS grew by 17.0 MiB (40.0 to 57.0 MiB; at most 16.0 allowed)"]
        );
        // Overruns count against a gating reader only.
        let mut overrun = [process("helix-ledger", 40, 40), process("helix-twin", 30, 30)];
        overrun[1].overruns = 5;
        assert!(failures(&overrun, MIB, &ok(1), all(1), 1).is_empty());
        overrun[0].overruns = 2;
        overrun[0].demoted = true;
        assert_eq!(
            failures(&overrun, MIB, &ok(1), all(1), 1),
            [
                "gating reader helix-ledger was overrun 2 times",
                "gating reader helix-ledger was demoted (it stalled the writer)"
            ]
        );
        let gaps = Verified { gaps: 2, lost: 300, ..ok(700) };
        assert_eq!(
            failures(&[], MIB, &gaps, all(1000), 1000),
            ["2 ledger gaps (300 sequences lost)", "the ledger holds 700 frames of 1000 published"]
        );
        let bad = Verified { ok: false, problem: Some("record 7: bad hash".into()), ..ok(0) };
        assert_eq!(failures(&[], MIB, &bad, all(1000), 1000), ["the ledger did not verify: record 7: bad hash"]);
    }

    #[test]
    fn with_segments_deleted_the_recorders_own_count_decides_completeness() {
        let pruned = Verified { pruned: true, ..ok(400) };
        assert!(failures(&[], MIB, &pruned, all(1000), 1000).is_empty());
        assert_eq!(failures(&[], MIB, &pruned, all(999), 1000), ["helix-ledger recorded 999 frames of 1000 published"]);
        let gap = Some(Recorded { frames: 990, gaps: 1, lost: 10 });
        assert_eq!(
            failures(&[], MIB, &pruned, gap, 1000),
            [
                "helix-ledger recorded 1 gaps (10 sequences lost) this run",
                "helix-ledger recorded 990 frames of 1000 published"
            ]
        );
        assert_eq!(
            failures(&[], MIB, &pruned, None, 1000),
            ["helix-ledger's log has no final line saying what it recorded"]
        );
    }

    #[test]
    fn the_recorders_last_line_is_read() {
        let log = "2026-12-02T12:00:00Z INFO recording telemetry: 1 ring\n\
                   2026-12-02T13:00:00Z INFO stopped: 3600000000 frames and 2 gaps (17 sequences lost) recorded \
                   this run, 360000 fsyncs, head 0a1b\n";
        assert_eq!(parse_recorded(log), Some(Recorded { frames: 3_600_000_000, gaps: 2, lost: 17 }));
        assert_eq!(parse_recorded("INFO stopped: many frames and 0 gaps"), None);
        assert_eq!(parse_recorded("INFO recording telemetry"), None);
    }

    #[test]
    fn verify_json_is_read_for_the_telemetry_ring() {
        let line = r#"{"ok":true,"segments":2,"records":12,"hash":"ab","partial_tail":0,
            "rings":[{"name":"other","frames":1,"gaps":0,"lost":0},{"name":"telemetry","frames":10,"gaps":1,"lost":4}]}"#;
        assert_eq!(parse_verify(line, "telemetry"), Ok(Verified { gaps: 1, lost: 4, ..ok(10) }));
        let failed = parse_verify(r#"{"ok":false,"error":"segment 3: bad hash"}"#, "telemetry").unwrap();
        assert_eq!(failed.problem.as_deref(), Some("segment 3: bad hash"));
        assert!(parse_verify("not json", "telemetry").unwrap_err().contains("printed \"not json\""));
        assert!(parse_verify(r#"{"ok":true}"#, "telemetry").unwrap_err().contains("no rings"));
        let pruned = r#"{"ok":true,"rings":[{"name":"telemetry","frames":5}],"pruned":{"segment":3,"records":9}}"#;
        assert!(parse_verify(pruned, "telemetry").unwrap().pruned);
    }
}
