//! The benchmark scenarios behind `helix-bench`: latency and throughput of
//! the ring measured across real processes, side by side with the
//! transports a user would otherwise pick, in the same run on the same cores.

pub mod attach;
pub mod e2e;
pub mod ledger;
pub mod pingpong;
pub mod plot;
pub mod render;
pub mod stream;
pub mod udp;

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Builds the command that runs a peer process: `helix-bench` re-executing
/// itself with the given arguments (the library cannot know the binary).
pub type PeerCommand<'a> = &'a dyn Fn(&[String]) -> Command;

/// Pins the calling thread (and the process's future threads) to `cpu`.
pub fn pin_to_cpu(cpu: usize) -> std::io::Result<()> {
    pin_pid(0, cpu)
}

/// Pins process (main thread) `pid` to `cpu`; 0 is the calling thread.
pub fn pin_pid(pid: u32, cpu: usize) -> std::io::Result<()> {
    pin_pid_set(pid, &[cpu])
}

/// Confines process (main thread) `pid` to the CPUs `cpus`; 0 is the
/// calling thread. Threads it starts afterwards inherit the set.
pub fn pin_pid_set(pid: u32, cpus: &[usize]) -> std::io::Result<()> {
    if let Some(&bad) = cpus.iter().find(|&&c| c >= libc::CPU_SETSIZE as usize) {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("no CPU {bad}")));
    }
    // SAFETY: `set` is a plain bitmask struct, valid when zeroed; the libc
    // macros only write inside it (every index was checked against
    // CPU_SETSIZE above); sched_setaffinity reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &cpu in cpus {
            libc::CPU_SET(cpu, &mut set);
        }
        if libc::sched_setaffinity(pid as libc::pid_t, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Makes `cmd`'s process start confined to `cpus` (set between fork and
/// exec, so every thread the program starts is confined too).
pub fn confine_command(cmd: &mut Command, cpus: &[usize]) {
    use std::os::unix::process::CommandExt;
    if cpus.is_empty() {
        return;
    }
    let cpus = cpus.to_vec();
    // SAFETY: the closure runs in the child between fork and exec; it only
    // calls sched_setaffinity (a plain system call, async-signal-safe) on a
    // stack-allocated set and allocates nothing.
    unsafe {
        cmd.pre_exec(move || pin_pid_set(0, &cpus));
    }
}

/// CPU time (user + system) of process `pid` so far, in seconds, from
/// `/proc/PID/stat` (all its threads); `None` if it is gone.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = after.split_ascii_whitespace().collect();
    // Fields 14 (utime) and 15 (stime); field 3 is f[0].
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
    Some(ticks as f64 / hz as f64)
}

/// The 1-, 5- and 15-minute load averages, from `/proc/loadavg`.
pub fn load_average() -> Option<[f64; 3]> {
    let s = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut f = s.split_ascii_whitespace().map(|x| x.parse::<f64>().ok());
    Some([f.next()??, f.next()??, f.next()??])
}

/// (steal, total) CPU ticks of all CPUs so far, from `/proc/stat`: steal is
/// time the hypervisor ran something else while a virtual CPU wanted to run.
pub fn cpu_steal_ticks() -> Option<(u64, u64)> {
    let s = std::fs::read_to_string("/proc/stat").ok()?;
    let line = s.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line.split_ascii_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal [guest guest_nice,
    // already counted in user and nice]
    let total = v.iter().take(8).sum();
    Some((*v.get(7)?, total))
}

/// The current UTC time as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC", rem / 3600, rem / 60 % 60, rem % 60)
}

/// The machine a result was measured on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    /// CPU model name.
    pub cpu: String,
    /// Online CPUs.
    pub cores: usize,
    /// Kernel release.
    pub kernel: String,
    /// How an idle CPU waits (the cpuidle driver, and a virtual machine's
    /// halt polling), which sets what waking a thread on it costs; `None`
    /// where /sys does not say.
    #[serde(default)]
    pub idle: Option<String>,
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
        Machine { cpu, cores: std::thread::available_parallelism().map_or(1, |n| n.get()), kernel, idle: idle() }
    }
}

/// "cpuidle haltpoll, guest_halt_poll_ns 0": the cpuidle driver and, on a
/// KVM guest with the haltpoll driver, how long an idle virtual CPU polls
/// before it halts (0: it halts at once, and waking it goes through the
/// hypervisor).
fn idle() -> Option<String> {
    let read = |p: &str| std::fs::read_to_string(p).ok().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
    let driver = read("/sys/devices/system/cpu/cpuidle/current_driver")?;
    Some(match read("/sys/module/haltpoll/parameters/guest_halt_poll_ns") {
        Some(ns) => format!("cpuidle {driver}, guest_halt_poll_ns {ns}"),
        None => format!("cpuidle {driver}"),
    })
}

impl std::fmt::Display for Machine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({} cores), Linux {}", self.cpu, self.cores, self.kernel)?;
        match &self.idle {
            Some(idle) => write!(f, ", {idle}"),
            None => Ok(()),
        }
    }
}

/// Percentiles of a latency histogram, in nanoseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

/// One point of a percentile curve: the latency at `percentile`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    /// Percentile, 0 to 100.
    pub percentile: f64,
    /// Latency at that percentile, ns.
    pub ns: u64,
}

/// The HDR percentile curve of a histogram: points evenly spaced in
/// `log10(1 / (1 - p))` (ten per decade: 0%, 20.6%, ..., 90%, ..., 99%,
/// ...) up to where the samples run out, then the maximum (plotted at the
/// last sample's percentile).
pub fn curve(h: &Histogram<u64>) -> Vec<CurvePoint> {
    let mut v = Vec::new();
    if h.is_empty() {
        return v;
    }
    let n = h.len() as f64;
    let mut i = 0u32;
    loop {
        let x = f64::from(i) / 10.0;
        let p = 1.0 - 10f64.powf(-x);
        // Stop where fewer than one sample lies beyond the percentile.
        if (1.0 - p) * n < 1.0 {
            break;
        }
        v.push(CurvePoint { percentile: p * 100.0, ns: h.value_at_quantile(p) });
        i += 1;
    }
    v.push(CurvePoint { percentile: (1.0 - 1.0 / n) * 100.0, ns: h.max() });
    v
}

/// The head of every JSON document `helix-bench --json` writes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Document<R> {
    /// Which scenario: pingpong, stream, attach, ledger, e2e.
    pub scenario: String,
    /// The machine.
    pub machine: Machine,
    /// The command line, program name first.
    pub command: Vec<String>,
    /// When the run started, UTC.
    pub started: String,
    /// The load averages when the run started and ended (other work on the
    /// machine shows here).
    pub load_before: Option<[f64; 3]>,
    /// See `load_before`.
    pub load_after: Option<[f64; 3]>,
    /// The scenario's parameters and results.
    pub results: R,
}

impl<R: Serialize> Document<R> {
    /// A document for `scenario`, stamped now, with this process's command
    /// line; `load_before` should be sampled when the run began.
    pub fn new(scenario: &str, load_before: Option<[f64; 3]>, started: String, results: R) -> Document<R> {
        Document {
            scenario: scenario.into(),
            machine: Machine::detect(),
            command: std::env::args().collect(),
            started,
            load_before,
            load_after: load_average(),
            results,
        }
    }

    /// Writes it, pretty-printed, to `path`.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let mut text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        text.push('\n');
        std::fs::write(path, text).map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))
    }
}

/// Reads a JSON document `helix-bench --json` wrote.
pub fn read_document<R: serde::de::DeserializeOwned>(path: &Path) -> std::io::Result<Document<R>> {
    let text =
        std::fs::read_to_string(path).map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    serde_json::from_str(&text)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {e}", path.display())))
}

/// The median of `v` (the mean of the middle two for an even count); 0 for
/// none.
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
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
        10_000..=999_999 => write!(s, "{:.2} us", ns as f64 / 1e3),
        _ => write!(s, "{:.2} ms", ns as f64 / 1e6),
    };
    s
}
