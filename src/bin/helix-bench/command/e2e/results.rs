//! What `helix-bench e2e --json` writes under `results`, and the CPU
//! placement it records.

use serde::{Deserialize, Serialize};

use crate::stats::Summary;

/// The CPUs each process is confined to (an empty list: not confined).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// helixd (its simulated HAL writes the telemetry).
    pub helixd: Vec<usize>,
    /// helix-ledger.
    pub ledger: Vec<usize>,
    /// helix-twin.
    pub twin: Vec<usize>,
    /// helix-bench, whose reader the targets speak of.
    pub reader: Vec<usize>,
}

impl Placement {
    /// Every process confined to `cpus`.
    #[cfg(test)]
    pub fn all(cpus: &[usize]) -> Placement {
        Placement { helixd: cpus.to_vec(), ledger: cpus.to_vec(), twin: cpus.to_vec(), reader: cpus.to_vec() }
    }

    /// Whether every process has the same CPUs.
    pub fn shared(&self) -> bool {
        [&self.ledger, &self.twin, &self.reader].iter().all(|c| **c == self.helixd)
    }

    /// In words: "every process on CPUs 0,1", "not confined", or each
    /// process's CPUs.
    pub fn describe(&self) -> String {
        let cpus = |c: &[usize]| match c {
            [] => "any CPU".to_owned(),
            [one] => format!("CPU {one}"),
            many => format!("CPUs {}", many.iter().map(usize::to_string).collect::<Vec<_>>().join(",")),
        };
        if self.shared() {
            return if self.helixd.is_empty() {
                "not confined to CPUs".into()
            } else {
                format!("every process on {}", cpus(&self.helixd))
            };
        }
        // Group the processes sharing a CPU set, in a fixed order.
        let mut groups: Vec<(&[usize], Vec<&str>)> = Vec::new();
        for (name, set) in [
            ("helixd", &self.helixd),
            ("helix-ledger", &self.ledger),
            ("helix-twin", &self.twin),
            ("helix-bench", &self.reader),
        ] {
            match groups.iter_mut().find(|(c, _)| *c == set.as_slice()) {
                Some((_, names)) => names.push(name),
                None => groups.push((set, vec![name])),
            }
        }
        groups.iter().map(|(c, names)| format!("{} on {}", names.join(", "), cpus(c))).collect::<Vec<_>>().join("; ")
    }
}

/// How far a reader was behind the writer, sampled every 10 ms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lag {
    /// Samples taken.
    pub samples: u64,
    /// Median frames behind.
    pub p50_frames: u64,
    /// 99th percentile frames behind.
    pub p99_frames: u64,
    /// Most frames behind.
    pub max_frames: u64,
    /// `p50_frames` as time at the configured rate, ns.
    pub p50_ns: u64,
    /// `p99_frames` as time, ns.
    pub p99_ns: u64,
    /// `max_frames` as time, ns.
    pub max_ns: u64,
}

/// One reader of `telemetry` over the measured window.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReaderResult {
    /// Process: helix-bench, helix-ledger or helix-twin.
    pub name: String,
    /// Whether it gates helixd's writer.
    pub gating: bool,
    /// Frames it consumed in the window.
    pub frames: u64,
    /// `frames` per second.
    pub frames_per_sec: f64,
    /// Overrun events in the window.
    pub overruns: u64,
    /// Frames lost to overruns in the window.
    pub lost: u64,
    /// How far behind helixd it was.
    pub lag: Option<Lag>,
    /// What `latency` measures, and how.
    pub latency_method: String,
    /// The latency, ns (none if nothing was measured).
    pub latency: Option<Summary>,
}

/// A process's CPU use over the window.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessCpu {
    /// The program.
    pub process: String,
    /// Percent of one CPU (user + system, all threads).
    pub percent: f64,
}

/// The offset used to put CLOCK_MONOTONIC times on CLOCK_REALTIME.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClockOffset {
    /// realtime - monotonic at the start of the window, ns.
    pub offset_ns: i64,
    /// Half the time the paired clock readings took: the offset's error
    /// bound, ns.
    pub uncertainty_ns: u64,
    /// How much the offset changed by the end of the window (NTP slewing or
    /// a clock step), ns.
    pub drift_ns: i64,
}

/// The ledger after the run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LedgerCheck {
    /// Whether every record and hash verified.
    pub verified: bool,
    /// The first problem, if not.
    pub problem: Option<String>,
    /// Segment files.
    pub segments: u64,
    /// Records of all types.
    pub records: u64,
    /// FRAME records of the telemetry ring.
    pub frames: u64,
    /// GAP records.
    pub gaps: u64,
    /// Sequences inside GAP records.
    pub lost: u64,
    /// Frames helixd published in all.
    pub published: u64,
    /// The final chain hash, hex.
    pub hash: String,
    /// Bytes of segment files.
    pub bytes: u64,
    /// Frames of the window whose `recv_ns` came out before their
    /// converted `ingest_ns` (counted as 1 ns): `recv_ns` is read just
    /// before the batch, so a frame published between that clock read and
    /// the read itself lands here, as does the offset's error.
    pub negative: u64,
    /// The most negative of those, ns (0 if none).
    pub most_negative_ns: u64,
}

/// What `helix-bench e2e --json` writes under `results`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    /// Simulated streams.
    pub streams: u32,
    /// Samples per second per stream.
    pub rate_hz: f64,
    /// Seconds measured.
    pub seconds: f64,
    /// Seconds of warm-up before.
    pub warmup: f64,
    /// The CPUs each process was confined to.
    pub placement: Placement,
    /// Telemetry ring slots.
    pub capacity: u64,
    /// The ledger's fsync interval, ms.
    pub fsync_ms: u64,
    /// helix-bench's reader's wait strategy.
    pub wait: String,
    /// How often the twin reads telemetry while it flows, ms (its
    /// `poll_interval_ms`); 0: as it comes, parked on the ring between.
    pub twin_poll_ms: u64,
    /// Frames helixd published in the window.
    pub published: u64,
    /// `published` per second.
    pub frames_per_sec: f64,
    /// Times helixd waited for a gating reader in the window.
    pub writer_waits: u64,
    /// Each reader.
    pub readers: Vec<ReaderResult>,
    /// Each process's CPU use.
    pub cpu: Vec<ProcessCpu>,
    /// The clock offset used for the ledger's latency.
    pub clock: ClockOffset,
    /// Alarm events helix-bench received in the window.
    pub alarm_events: u64,
    /// The ledger, verified after the run.
    pub ledger: LedgerCheck,
}

impl Results {
    /// The reader named `name`.
    pub fn reader(&self, name: &str) -> Option<&ReaderResult> {
        self.readers.iter().find(|r| r.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::Placement;

    #[test]
    fn a_placement_reads_as_processes_grouped_by_cpus() {
        assert_eq!(Placement::all(&[]).describe(), "not confined to CPUs");
        assert_eq!(Placement::all(&[0, 1]).describe(), "every process on CPUs 0,1");
        let apart = Placement { ledger: vec![1], ..Placement::all(&[0]) };
        assert!(!apart.shared());
        assert_eq!(apart.describe(), "helixd, helix-twin, helix-bench on CPU 0; helix-ledger on CPU 1");
        let mixed = Placement { helixd: vec![2, 3], ledger: vec![], twin: vec![2, 3], reader: vec![1] };
        assert_eq!(mixed.describe(), "helixd, helix-twin on CPUs 2,3; helix-ledger on any CPU; helix-bench on CPU 1");
    }
}
