//! The machine a figure was measured on, and what else it was doing: the
//! CPU, the kernel, how idle CPUs wait, the load, the hypervisor's steal,
//! and the CPU time of the processes measured.

use serde::{Deserialize, Serialize};

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

/// CPU time (user + system) of process `pid` so far, in seconds, all its
/// threads; `None` if it is gone.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    Some(helix::process::ProcStat::read(pid)?.cpu_seconds())
}

/// Bytes free for an unprivileged writer on the file system of `dir`.
pub fn free_bytes(dir: &std::path::Path) -> std::io::Result<u64> {
    let fs = nix::sys::statvfs::statvfs(dir)?;
    Ok(fs.blocks_available() as u64 * fs.fragment_size() as u64)
}
