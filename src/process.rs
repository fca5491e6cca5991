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
    ProcStat::read(pid).map(|s| s.start_time)
}

/// The fields of `/proc/PID/stat` that HELIX reads: the ring, to tell a
/// live process from a recycled pid, and the tools, for CPU use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// Field 3, the state letter: `R`, `S`, `D`, `Z` (zombie), `X` (dead)...
    pub state: char,
    /// Field 14: CPU time in user mode, clock ticks, all threads.
    pub utime: u64,
    /// Field 15: CPU time in the kernel, clock ticks, all threads.
    pub stime: u64,
    /// Field 22: when the process started, clock ticks since boot.
    pub start_time: u64,
}

impl ProcStat {
    /// Reads process `pid`'s, or `None` if there is no such process.
    /// Allocates nothing: a waiting writer calls this.
    pub fn read(pid: u32) -> Option<ProcStat> {
        use std::io::{Read, Write};
        let mut path = [0u8; 32];
        let mut cursor = &mut path[..];
        write!(cursor, "/proc/{pid}/stat").ok()?;
        let len = 32 - cursor.len();
        let path = std::str::from_utf8(&path[..len]).ok()?;
        // The line is at most a few hundred bytes: the command name is at
        // most 64 and the 50-odd numeric fields are at most 20 digits each.
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
        ProcStat::parse(std::str::from_utf8(&buf[..filled]).ok()?)
    }

    /// Parses a `/proc/PID/stat` line. The command name (field 2) is in
    /// parentheses and may itself contain spaces and parentheses, so fields
    /// are counted from the last `)`.
    pub fn parse(line: &str) -> Option<ProcStat> {
        let mut fields = line[line.rfind(')')? + 1..].split_ascii_whitespace();
        // After the name come field 3 (state) onwards: field n is the
        // (n - 3)th after it.
        let state = fields.next()?.chars().next()?;
        let mut number = |skip: usize| -> Option<u64> { fields.nth(skip)?.parse().ok() };
        let utime = number(10)?;
        let stime = number(0)?;
        let start_time = number(6)?;
        Some(ProcStat { state, utime, stime, start_time })
    }

    /// CPU time in user mode and in the kernel, clock ticks, all threads.
    pub fn cpu_ticks(&self) -> u64 {
        self.utime + self.stime
    }

    /// CPU time in user mode and in the kernel, seconds, all threads.
    pub fn cpu_seconds(&self) -> f64 {
        self.cpu_ticks() as f64 / ticks_per_second() as f64
    }
}

/// Clock ticks per second, the unit of the times in `/proc/PID/stat`.
pub fn ticks_per_second() -> u64 {
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    hz.max(1) as u64
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
    match ProcStat::read(pid) {
        Some(s) => s.start_time == start_time && s.state != 'Z' && s.state != 'X',
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

/// The user a process runs as (its effective uid, as the owner of
/// `/proc/PID`), or `None` if it is gone or out of sight.
pub fn uid_of(pid: u32) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}")).ok().map(|m| m.uid())
}

/// The user this process runs as (effective uid).
pub fn my_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    // /proc/self is owned by the effective uid; without /proc, fall back to
    // the conservative answer (not root).
    std::fs::metadata("/proc/self").map_or(u32::MAX, |m| m.uid())
}

/// The group this process runs as (effective gid).
pub fn my_gid() -> u32 {
    // SAFETY: getegid takes nothing and always succeeds.
    unsafe { libc::getegid() }
}

/// The user the packaged services run as (`User=helix` in their systemd
/// units): helixd, helix-ledger, helix-twin, helix-bridge.
pub const SERVICE_USER: &str = "helix";

/// The uid of user `name` in the user database (`getpwnam_r`: files, or
/// whatever NSS is set up to ask), or `None` if it has no such user.
pub fn user_uid(name: &str) -> io::Result<Option<u32>> {
    let Ok(cname) = std::ffi::CString::new(name) else { return Ok(None) };
    let mut buf = vec![0u8; 1024];
    loop {
        // SAFETY: passwd is plain old data; getpwnam_r fills it in.
        let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call: `cname` is a C
        // string, `buf` is writable for its length, `pw` and `found` are
        // locals. The strings `pw` points to (into `buf`) are not read.
        let rc = unsafe { libc::getpwnam_r(cname.as_ptr(), &mut pw, buf.as_mut_ptr().cast(), buf.len(), &mut found) };
        match rc {
            0 if found.is_null() => return Ok(None),
            0 => return Ok(Some(pw.pw_uid)),
            libc::ERANGE if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            // "Not found" as some NSS modules say it.
            libc::ENOENT | libc::ESRCH | libc::EBADF | libc::EPERM => return Ok(None),
            e => return Err(io::Error::from_raw_os_error(e)),
        }
    }
}

/// This process's (pid, start time). The start time is cached for the
/// pid it was read for: a process forked from this one is another process,
/// with its own (had it kept its parent's, it would have registered its
/// reader entries and leases as its parent, alive for as long as the parent
/// lives, and let go of the parent's as its own).
pub fn identity() -> (u32, u64) {
    use std::sync::atomic::Ordering;
    let me = pid();
    // Acquire pairs with the Release store below: a pid seen is seen with
    // its start time. Two threads that both miss store the same values.
    if ID_PID.load(Ordering::Acquire) == me {
        return (me, ID_START.load(Ordering::Relaxed));
    }
    // The child of a fork forgets the cache (a descendant that got this
    // pid again, after this process ended, must not take its start time).
    static FORGET_IN_CHILD: std::sync::Once = std::sync::Once::new();
    // SAFETY: `forget_identity` is an `extern "C" fn()` valid for the life
    // of the process; it only stores to an atomic, which is safe in a
    // child of a multithreaded fork.
    FORGET_IN_CHILD.call_once(|| unsafe {
        libc::pthread_atfork(None, None, Some(forget_identity));
    });
    let start = start_time(me).unwrap_or(0);
    ID_START.store(start, Ordering::Relaxed);
    ID_PID.store(me, Ordering::Release);
    (me, start)
}

/// The pid [`identity`] was read for (0: none), and its start time.
static ID_PID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
static ID_START: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Run in the child of a fork (`pthread_atfork`): [`identity`] reads the
/// child's own.
extern "C" fn forget_identity() {
    ID_PID.store(0, std::sync::atomic::Ordering::Relaxed);
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
    fn parses_the_fields_past_a_hostile_command_name() {
        let line = "1234 (a) b (c) S 1 1234 1234 0 -1 4194560 100 0 0 0 17 5 0 0 20 0 1 0 987654 1000 10";
        let s = ProcStat::parse(line).unwrap();
        assert_eq!(s, ProcStat { state: 'S', utime: 17, stime: 5, start_time: 987654 });
        assert_eq!(s.cpu_ticks(), 22);
        assert_eq!(ProcStat::parse("garbage"), None);
        assert_eq!(ProcStat::parse("1 (x) S 1 2 3"), None);
    }

    #[test]
    fn looks_users_up_by_name() {
        assert_eq!(user_uid("root").unwrap(), Some(0));
        assert_eq!(user_uid("no-such-user-of-helix").unwrap(), None);
        assert_eq!(user_uid("nul\0inside").unwrap(), None);
    }

    #[test]
    fn reads_this_process() {
        let s = ProcStat::read(pid()).expect("own /proc entry");
        assert!(!['Z', 'X'].contains(&s.state), "{s:?}");
        assert_eq!(Some(s.start_time), start_time(pid()));
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
        while ProcStat::read(pid).is_some_and(|s| s.state != 'Z') {
            std::thread::yield_now();
        }
        assert!(exists(pid));
        assert!(!alive(pid, start.unwrap_or(0)));
        child.wait().unwrap();
    }
}
