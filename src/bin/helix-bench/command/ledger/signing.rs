//! The cost of signed checkpoints (docs/ledger.md, "Signed checkpoints"):
//! the time of one checkpoint on the recorder's own path (sign, hash,
//! encode, write), times how often the recorder signs at the default
//! interval while recording flat out (once a minute, plus once per segment
//! it closes), as a share of the ledger's CPU in that throughput run.

use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};

use helix::ledger::format::RingDecl;
use helix::ledger::sign::{Reason, Signer};
use helix::ledger::Ledger;

use super::Throughput;

/// The recorder's default interval and segment size.
const INTERVAL_S: u32 = 60;
const SEGMENT_BYTES: f64 = (64u64 << 20) as f64;

/// What signing costs the ledger.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Signing {
    /// Checkpoints timed per run.
    pub checkpoints: u64,
    /// Nanoseconds per checkpoint, the median of the runs.
    pub ns_per_checkpoint: f64,
    /// The interval assumed (the default), in seconds.
    pub interval_s: u32,
    /// The throughput run it is set against: frame size and fsync interval.
    pub size: usize,
    pub fsync_ms: u64,
    /// Segments closed per second at that run's write rate (64 MiB each).
    pub segment_closes_per_sec: f64,
    /// The ledger's CPU in that run, in cores (CPU seconds per second);
    /// `None` if the kernel gave none (no `/proc/PID/task/*/schedstat`).
    pub ledger_cpu: Option<f64>,
    /// Signing's CPU as a percentage of the ledger's.
    pub percent: Option<f64>,
}

impl Signing {
    /// Its share of the ledger's CPU, in words.
    pub fn share(&self) -> String {
        match (self.percent, self.ledger_cpu) {
            (Some(p), Some(c)) => format!("{p:.4}% of the ledger's {c:.2} cores"),
            _ => format!(
                "{:.1} us of CPU per second (the kernel gave no CPU time for the ledger: no schedstat)",
                self.ns_per_checkpoint * 1e-3 * (1.0 / f64::from(self.interval_s) + self.segment_closes_per_sec)
            ),
        }
    }
}

/// Times `n` checkpoints (median of `runs`) in a ledger in `dir`, and sets
/// them against the throughput run `tp`.
pub fn measure(dir: &Path, tp: &Throughput, n: u64, runs: usize) -> Result<Signing> {
    let mut per = (0..runs.max(1))
        .map(|i| time_checkpoints(&dir.join(format!("signing-{i}")), n))
        .collect::<Result<Vec<f64>>>()?;
    per.sort_by(f64::total_cmp);
    let ns = per[per.len() / 2];
    let closes = tp.ledger_bytes as f64 / tp.seconds / SEGMENT_BYTES;
    let ledger_cpu = tp.ledger_cpu_s.filter(|s| *s > 0.0).map(|s| s / tp.seconds);
    let signing = ns * 1e-9 * (1.0 / f64::from(INTERVAL_S) + closes);
    let s = Signing {
        checkpoints: n,
        ns_per_checkpoint: ns,
        interval_s: INTERVAL_S,
        size: tp.size,
        fsync_ms: tp.fsync_ms,
        segment_closes_per_sec: closes,
        ledger_cpu,
        percent: ledger_cpu.map(|c| 100.0 * signing / c),
    };
    println!(
        "signing: {:.1} us per checkpoint; every {} s and at {:.2} segment closes/s ({} B frames, fsync {} ms): \
         {}",
        s.ns_per_checkpoint / 1e3,
        s.interval_s,
        s.segment_closes_per_sec,
        s.size,
        s.fsync_ms,
        s.share()
    );
    Ok(s)
}

/// Nanoseconds per checkpoint over `n`, each after a one-frame block (so
/// each signs a new hash) and written with its own `write(2)`, as the
/// recorder's flush does. The folder is removed after.
fn time_checkpoints(dir: &Path, n: u64) -> Result<f64> {
    let _ = std::fs::remove_dir_all(dir);
    let result = (|| -> Result<f64> {
        let (mut l, _) = Ledger::open(dir, 1 << 30)?;
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed).map_err(|e| anyhow::anyhow!("getrandom: {e}"))?;
        l.set_signer(Some(Signer::new(SigningKey::from_bytes(&seed), INTERVAL_S)));
        let decl = RingDecl { created_ns: 1, capacity: 1024, max_payload: 40, policy: 1, name: "bench".into() };
        let (id, _) = l.declare(&decl)?;
        let mut spent = 0.0;
        for seq in 1..=n {
            l.reserve_frame(id, seq, 1, seq, 1, 40).fill(7);
            l.seal(id, 1);
            l.flush()?;
            let t = Instant::now();
            l.checkpoint(helix::process::realtime_ns(), Reason::Interval);
            l.flush()?;
            spent += t.elapsed().as_secs_f64();
        }
        Ok(spent * 1e9 / n as f64)
    })();
    let _ = std::fs::remove_dir_all(dir);
    result
}
