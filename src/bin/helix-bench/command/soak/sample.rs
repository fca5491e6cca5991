//! What the soak reads about the processes and the ledger, from /proc, the
//! ring's reader table and the file system, and one report's lines.

use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use helix::{RingStats, RingView};

use crate::command::render::group;
use crate::machine::cpu_seconds;

/// A process the soak watches.
pub struct Watched {
    /// helixd, helix-ledger, helix-twin or helix-bench.
    pub name: &'static str,
    /// Its pid.
    pub pid: u32,
    /// Whether it reads telemetry.
    pub reader: bool,
}

/// A process's resident memory, bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memory {
    /// Resident set size (`VmRSS`).
    pub rss: u64,
    /// Of which shared memory (`RssShmem`): the rings' pages it touched,
    /// bounded by their size.
    pub shmem: u64,
}

impl Memory {
    /// Resident memory outside shared memory: what a leak grows.
    pub fn private(&self) -> u64 {
        self.rss.saturating_sub(self.shmem)
    }
}

/// `pid`'s resident memory, from /proc/PID/status.
pub fn memory(pid: u32) -> Option<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| -> Option<u64> {
        let v = status.lines().find_map(|l| l.strip_prefix(key))?.trim().strip_suffix("kB")?.trim();
        Some(v.parse::<u64>().ok()? * 1024)
    };
    Some(Memory { rss: kib("VmRSS:")?, shmem: kib("RssShmem:")? })
}

/// Bytes of the files under `dir` (0 if it does not exist yet).
pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            Some(if meta.is_dir() { dir_bytes(&e.path()) } else { meta.len() })
        })
        .sum()
}

/// Everything read at one moment.
pub struct Snapshot {
    pub at: Instant,
    /// Each watched process's memory and CPU seconds so far, in their order.
    pub memory: Vec<Option<Memory>>,
    pub cpu: Vec<Option<f64>>,
    /// The telemetry ring.
    pub stats: RingStats,
    /// The ledger folder's size.
    pub ledger_bytes: u64,
}

impl Snapshot {
    pub fn take(watched: &[Watched], view: &RingView, ledger_dir: &Path) -> Snapshot {
        Snapshot {
            at: Instant::now(),
            memory: watched.iter().map(|w| memory(w.pid)).collect(),
            cpu: watched.iter().map(|w| cpu_seconds(w.pid)).collect(),
            stats: view.stats(),
            ledger_bytes: dir_bytes(ledger_dir),
        }
    }
}

/// One process over one report's interval.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessInterval {
    pub name: String,
    /// Its memory at the end of the interval.
    pub memory: Option<Memory>,
    /// Percent of one CPU over the interval.
    pub cpu_percent: Option<f64>,
    /// Readers: frames behind at the end, and the most seen in the interval
    /// (sampled every second).
    pub lag: Option<u64>,
    /// See `lag`.
    pub max_lag: Option<u64>,
    /// Readers: overrun events and sequences lost so far.
    pub overruns: Option<u64>,
    /// See `overruns`.
    pub lost: Option<u64>,
    /// Readers: whether it gates the writer, and whether it was demoted.
    pub gating: bool,
    /// See `gating`.
    pub demoted: bool,
}

/// One report: the interval ending `seconds` after the warm-up.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Interval {
    /// Seconds since the warm-up ended.
    pub seconds: f64,
    /// Frames helixd published in the interval, and the percent of those due.
    pub published: u64,
    /// See `published`.
    pub due_percent: f64,
    /// Times helixd waited for a gating reader in the interval.
    pub writer_waits: u64,
    /// The ledger folder's size, and the bytes free on its file system.
    pub ledger_bytes: u64,
    /// See `ledger_bytes`.
    pub free_bytes: u64,
    /// Each watched process.
    pub processes: Vec<ProcessInterval>,
}

impl Interval {
    /// The interval from `a` to `b` at `rate` samples/s due; `max_lag` is
    /// the most frames each watched process was behind in it.
    pub fn between(
        watched: &[Watched],
        a: &Snapshot,
        b: &Snapshot,
        start: Instant,
        rate: f64,
        max_lag: &[u64],
    ) -> Self {
        let secs = b.at.duration_since(a.at).as_secs_f64().max(1e-9);
        let published = b.stats.published - a.stats.published;
        let processes = watched
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let entry = b.stats.readers.iter().find(|r| r.pid == w.pid).filter(|_| w.reader);
                let cpu = a.cpu[i].zip(b.cpu[i]).map(|(x, y)| (y - x) / secs * 100.0);
                ProcessInterval {
                    name: w.name.into(),
                    memory: b.memory[i],
                    cpu_percent: cpu,
                    lag: entry.map(|r| r.lag),
                    max_lag: entry.map(|r| max_lag[i].max(r.lag)),
                    overruns: entry.map(|r| r.overruns),
                    lost: entry.map(|r| r.lost),
                    gating: entry.is_some_and(|r| r.gating || r.demoted),
                    demoted: entry.is_some_and(|r| r.demoted),
                }
            })
            .collect();
        Interval {
            seconds: b.at.duration_since(start).as_secs_f64(),
            published,
            due_percent: published as f64 * 100.0 / (rate * secs),
            writer_waits: b.stats.writer_waits - a.stats.writer_waits,
            ledger_bytes: b.ledger_bytes,
            free_bytes: 0,
            processes,
        }
    }

    /// Its lines: a head, then one per process.
    pub fn lines(&self, number: usize) -> String {
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        let mem =
            |m: Option<Memory>| m.map_or("-".into(), |m| format!("{:.1} MiB ({:.1} shared)", mib(m.rss), mib(m.shmem)));
        let mut s = format!(
            "[{number}] {:.0} s: published {} ({:.2}% of due), writer waits {}; ledger folder {:.2} GB, {:.1} GB free\n",
            self.seconds,
            group(self.published),
            self.due_percent,
            self.writer_waits,
            self.ledger_bytes as f64 / 1e9,
            self.free_bytes as f64 / 1e9
        );
        for p in &self.processes {
            let cpu = p.cpu_percent.map_or("-".into(), |c| format!("{c:.1}%"));
            s += &format!("    {:<13} RSS {:>24}  CPU {:>6}", p.name, mem(p.memory), cpu);
            if let (Some(lag), Some(max), Some(o), Some(l)) = (p.lag, p.max_lag, p.overruns, p.lost) {
                let role = if p.demoted {
                    "demoted"
                } else if p.gating {
                    "gating"
                } else {
                    "non-gating"
                };
                s +=
                    &format!("  lag {} (at most {})  overruns {o} ({} lost)  {role}", group(lag), group(max), group(l));
            }
            s.push('\n');
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_and_folder_sizes_are_read() {
        let m = memory(std::process::id()).unwrap();
        assert!(m.rss > 1 << 20 && m.shmem <= m.rss && m.private() > 0, "{m:?}");
        assert_eq!(memory(u32::MAX), None);
        let dir = std::env::temp_dir().join(format!("helix-bench-soak-test-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("a"), [0u8; 100]).unwrap();
        std::fs::write(dir.join("sub/b"), [0u8; 23]).unwrap();
        assert_eq!(dir_bytes(&dir), 123);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(dir_bytes(&dir), 0);
    }
}
