//! Processes as the ring sees them: a pid plus its start time, so that a
//! recycled pid is never mistaken for the process that registered.

use std::io;

/// This process's id.
pub fn pid() -> u32 {
    std::process::id()
}

/// The start time of process `pid` in clock ticks since boot (field 22 of
/// `/proc/PID/stat`), or `None` if there is no such process.
pub fn start_time(pid: u32) -> Option<u64> {
    stat(pid).map(|(_, start)| start)
}

/// (state, start time) of `pid` from `/proc/PID/stat`. Allocates nothing:
/// a waiting writer calls this.
fn stat(pid: u32) -> Option<(char, u64)> {
    use std::io::{Read, Write};
    let mut path = [0u8; 32];
    let mut cursor = &mut path[..];
    write!(cursor, "/proc/{pid}/stat").ok()?;
    let len = 32 - cursor.len();
    let path = std::str::from_utf8(&path[..len]).ok()?;
    // The line is at most a few hundred bytes: the command name is at most
    // 64 and the 50-odd numeric fields are at most 20 digits each.
    let mut buf = [0u8; 2048];
    let mut file = std::fs::File::open(path).ok()?;
    let mut filled = 0;
    loop {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
        if filled == buf.len() {
            break;
        }
    }
    let stat = std::str::from_utf8(&buf[..filled]).ok()?;
    Some((parse_state(stat)?, parse_start_time(stat)?))
}

/// Field 3 (the state letter) of a `/proc/PID/stat` line.
fn parse_state(stat: &str) -> Option<char> {
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

/// Field 22 of a `/proc/PID/stat` line. The command name (field 2) is in
/// parentheses and may itself contain spaces and parentheses, so fields are
/// counted from the last `)`.
fn parse_start_time(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    // After the name come field 3 (state) onwards; field 22 is the 20th.
    after_comm.split_ascii_whitespace().nth(19)?.parse().ok()
}

/// Whether the process that registered as (`pid`, `start_time`) still runs.
///
/// A pid of 0 is never alive, nor is a zombie (it has exited; only its
/// parent has not reaped it yet). A process we may not signal (`EPERM`)
/// exists; its start time then decides, as it does for one we may signal.
pub fn alive(pid: u32, start_time: u64) -> bool {
    if pid == 0 || pid > i32::MAX as u32 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
    // Read errno now, before any other call can change it.
    let errno = if rc == 0 { 0 } else { io::Error::last_os_error().raw_os_error().unwrap_or(0) };
    if errno == libc::ESRCH {
        return false;
    }
    match stat(pid) {
        Some((state, t)) => t == start_time && state != 'Z' && state != 'X',
        // /proc hides it (hidepid) but kill says it exists (or that we may
        // not signal it, which also means it exists).
        None => rc == 0 || errno == libc::EPERM,
    }
}

/// Whether a process with this pid exists at all (whatever it is).
pub fn exists(pid: u32) -> bool {
    if pid == 0 || pid > i32::MAX as u32 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// This process's (pid, start time), cached after the first call.
pub fn identity() -> (u32, u64) {
    static ID: std::sync::OnceLock<(u32, u64)> = std::sync::OnceLock::new();
    *ID.get_or_init(|| {
        let me = pid();
        (me, start_time(me).unwrap_or(0))
    })
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of heartbeats, stall timeouts
/// and frame timestamps, the same in every process on the host.
pub fn now_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// CLOCK_REALTIME in nanoseconds since the Unix epoch.
pub fn realtime_ns() -> u64 {
    clock_ns(libc::CLOCK_REALTIME)
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid out-pointer; both clocks always exist on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_start_time_past_a_hostile_command_name() {
        let line = "1234 (a) b (c) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_start_time(line), Some(987654));
        assert_eq!(parse_state(line), Some('S'));
        assert_eq!(parse_start_time("garbage"), None);
    }

    #[test]
    fn this_process_is_alive_and_a_wrong_start_time_is_not() {
        let me = pid();
        let t = start_time(me).expect("own /proc entry");
        assert!(alive(me, t));
        assert!(!alive(me, t + 1));
        assert!(!alive(0, 0));
    }

    #[test]
    fn a_zombie_is_not_alive() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let start = start_time(pid);
        // Until it is reaped, an exited child is a zombie with the same pid.
        while stat(pid).is_some_and(|(s, _)| s != 'Z') {
            std::thread::yield_now();
        }
        assert!(exists(pid));
        assert!(!alive(pid, start.unwrap_or(0)));
        child.wait().unwrap();
    }
}
