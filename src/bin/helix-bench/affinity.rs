//! Where processes run: pinning this thread or another process to CPUs,
//! and starting a program confined to CPUs, all through nix.

use std::io;
use std::process::Command;

use anyhow::Result;
use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::unistd::Pid;

use crate::shared::child::ChildProcess;

/// Pins the calling thread (and the threads it starts afterwards) to `cpu`.
pub fn pin_to_cpu(cpu: usize) -> Result<()> {
    confine(0, &[cpu])
}

/// Pins process `pid` (its main thread) to `cpu`.
pub fn pin_pid(pid: u32, cpu: usize) -> Result<()> {
    confine(pid, &[cpu])
}

/// Confines process `pid` (its main thread) to `cpus`; 0 is the calling
/// thread. Threads it starts afterwards inherit the set.
pub fn confine(pid: u32, cpus: &[usize]) -> Result<()> {
    let pid = Pid::from_raw(i32::try_from(pid)?);
    sched_setaffinity(pid, &cpu_set(cpus)?).map_err(io::Error::from)?;
    Ok(())
}

fn cpu_set(cpus: &[usize]) -> io::Result<CpuSet> {
    let mut set = CpuSet::new();
    for &cpu in cpus {
        set.set(cpu).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("no CPU {cpu}")))?;
    }
    Ok(set)
}

/// Starts `cmd` as `name`, confined to `cpus` (not confined if empty),
/// every thread it ever starts included. A child inherits the CPU set of
/// the thread that starts it, so this thread takes `cpus` for the moment of
/// the spawn and then gets its own set back.
pub fn spawn_confined(name: &str, cmd: &mut Command, cpus: &[usize]) -> Result<ChildProcess> {
    if cpus.is_empty() {
        return Ok(ChildProcess::spawn(name, cmd)?);
    }
    let own = sched_getaffinity(Pid::from_raw(0)).map_err(io::Error::from)?;
    confine(0, cpus)?;
    let child = ChildProcess::spawn(name, cmd);
    sched_setaffinity(Pid::from_raw(0), &own).map_err(io::Error::from)?;
    Ok(child?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Cpus_allowed_list` of `/proc/<pid>/status` (or `self`).
    fn allowed(pid: &str) -> String {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).unwrap().trim().to_owned()
    }

    #[test]
    fn a_confined_program_runs_on_its_cpus_and_the_spawner_keeps_its_own() {
        // Run on a thread of its own: the test changes its thread's set.
        std::thread::spawn(|| {
            let own = sched_getaffinity(Pid::from_raw(0)).unwrap();
            let first = (0..CpuSet::count()).find(|&c| own.is_set(c).unwrap()).unwrap();
            let tid = nix::unistd::gettid().to_string();
            let before = allowed(&format!("self/task/{tid}"));
            let mut child = spawn_confined("sleep", Command::new("sleep").arg("10"), &[first]).unwrap();
            assert_eq!(allowed(&child.pid().to_string()), first.to_string());
            assert_eq!(allowed(&format!("self/task/{tid}")), before);
            child.kill().unwrap();
            let e = spawn_confined("sleep", &mut Command::new("sleep"), &[CpuSet::count()]).err().unwrap();
            assert_eq!(e.to_string(), format!("no CPU {}", CpuSet::count()));
        })
        .join()
        .unwrap();
    }
}
