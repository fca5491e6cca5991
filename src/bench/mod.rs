//! The benchmark scenarios behind `helix-bench`: latency and throughput of
//! the ring measured across real processes, side by side with the
//! transports a user would otherwise pick, in the same run on the same cores.

pub mod attach;
pub mod ledger;
pub mod pingpong;
pub mod stream;
pub mod udp;

use std::fmt::Write as _;
use std::process::Command;

use hdrhistogram::Histogram;

/// Builds the command that runs a peer process: `helix-bench` re-executing
/// itself with the given arguments (the library cannot know the binary).
pub type PeerCommand<'a> = &'a dyn Fn(&[String]) -> Command;

/// Pins the calling thread (and the process's future threads) to `cpu`.
pub fn pin_to_cpu(cpu: usize) -> std::io::Result<()> {
    pin_pid(0, cpu)
}

/// Pins process (main thread) `pid` to `cpu`; 0 is the calling thread.
pub fn pin_pid(pid: u32, cpu: usize) -> std::io::Result<()> {
    // SAFETY: `set` is a plain bitmask struct, valid when zeroed; the libc
    // macros only write inside it; sched_setaffinity reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(pid as libc::pid_t, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The machine a result was measured on.
#[derive(Debug, Clone)]
pub struct Machine {
    /// CPU model name.
    pub cpu: String,
    /// Online CPUs.
    pub cores: usize,
    /// Kernel release.
    pub kernel: String,
}

impl Machine {
    /// Reads /proc for the CPU model and uname for the kernel.
    pub fn detect() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown CPU".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned();
        Machine { cpu, cores: std::thread::available_parallelism().map_or(1, |n| n.get()), kernel }
    }
}

impl std::fmt::Display for Machine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({} cores), Linux {}", self.cpu, self.cores, self.kernel)
    }
}

/// Percentiles of a latency histogram, in nanoseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Samples recorded.
    pub count: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// 99.99th percentile.
    pub p9999: u64,
    /// Largest sample.
    pub max: u64,
}

impl Summary {
    /// Summarises a histogram of nanoseconds.
    pub fn of(h: &Histogram<u64>) -> Summary {
        Summary {
            count: h.len(),
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            p9999: h.value_at_quantile(0.9999),
            max: h.max(),
        }
    }
}

/// A new histogram for latencies from 1 ns to 100 s, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid histogram bounds")
}

/// Nanoseconds as a short human string: `812 ns`, `3.41 us`, `1.20 ms`.
pub fn fmt_ns(ns: u64) -> String {
    let mut s = String::new();
    let _ = match ns {
        0..=9_999 => write!(s, "{ns} ns"),
        10_000..=9_999_999 => write!(s, "{:.2} us", ns as f64 / 1e3),
        _ => write!(s, "{:.2} ms", ns as f64 / 1e6),
    };
    s
}
