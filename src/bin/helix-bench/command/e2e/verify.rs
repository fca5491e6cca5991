//! The ledger after the run: every record and hash verified, its frames
//! counted, and each sample's ingest-to-record latency over the window.

use std::path::Path;

use anyhow::Result;
use hdrhistogram::Histogram;

use helix::ledger::format::{hex, RecordType};
use helix::telemetry::{Sample, KIND_SAMPLE};

use super::results::LedgerCheck;
use super::TELEMETRY;
use crate::stats::histogram;

/// What the walk over the ledger's records found.
struct Frames {
    /// FRAME records.
    frames: u64,
    /// recv_ns - (ingest_ns + offset) of the window's samples, ns.
    latency: Histogram<u64>,
    /// Of those, how many came out negative, and the most negative.
    negative: u64,
    most_negative: u64,
}

/// Verifies the ledger in `dir` and measures the latency of the samples
/// ingested in `[t0, t1)` (CLOCK_MONOTONIC), put on the ledger's
/// CLOCK_REALTIME by `offset`; `published` is what helixd published in all.
pub fn check(dir: &Path, t0: u64, t1: u64, offset: i64, published: u64) -> Result<(LedgerCheck, Histogram<u64>)> {
    let mut f = Frames { frames: 0, latency: histogram(), negative: 0, most_negative: 0 };
    let walked = helix::ledger::walk(dir, |at| {
        let rec = at.record;
        if rec.header.rtype != RecordType::Frame as u16 {
            return;
        }
        f.frames += 1;
        if rec.header.kind != KIND_SAMPLE || rec.payload.len() != std::mem::size_of::<Sample>() {
            return;
        }
        let s: Sample = bytemuck::pod_read_unaligned(rec.payload);
        if !(t0..t1).contains(&s.ingest_ns) {
            return;
        }
        let d = rec.header.recv_ns as i64 - (s.ingest_ns as i64 + offset);
        if d < 0 {
            f.negative += 1;
            f.most_negative = f.most_negative.max(d.unsigned_abs());
        }
        let _ = f.latency.record(d.max(1) as u64);
    })?;
    let bytes = std::fs::read_dir(dir)?.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum();
    let failed = LedgerCheck {
        verified: false,
        problem: None,
        segments: 0,
        records: 0,
        frames: f.frames,
        gaps: 0,
        lost: 0,
        published,
        hash: String::new(),
        bytes,
        negative: f.negative,
        most_negative_ns: f.most_negative,
    };
    let check = match walked {
        Ok(sum) => {
            let ring = sum.rings.iter().find(|r| r.decl.name == TELEMETRY);
            LedgerCheck {
                verified: true,
                segments: sum.segments,
                records: sum.records,
                gaps: ring.map_or(0, |r| r.gaps),
                lost: ring.map_or(0, |r| r.lost),
                hash: hex(&sum.hash),
                ..failed
            }
        }
        Err(failure) => LedgerCheck { problem: Some(failure.to_string()), ..failed },
    };
    Ok((check, f.latency))
}
