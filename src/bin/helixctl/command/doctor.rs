//! `helixctl doctor`: what is wrong with this host for HELIX, and how to
//! fix it. Each check says OK, WARN or FAIL, with the fix for the last two.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use serde::Serialize;

use helix::shm::{Namespace, SHM_DIR};
use helix::RingView;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Fine.
    Ok,
    /// Works, but something deserves attention.
    Warn,
    /// HELIX will not work properly until fixed.
    Fail,
}

/// One check's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked.
    pub check: &'static str,
    /// The outcome.
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// How to fix it (WARN and FAIL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

fn ok(check: &'static str, detail: String) -> Check {
    Check { check, status: Status::Ok, detail, fix: None }
}

fn bad(check: &'static str, status: Status, detail: String, fix: impl Into<String>) -> Check {
    Check { check, status, detail, fix: Some(fix.into()) }
}

/// (total, free) bytes of the file system holding `path`.
fn space(path: &Path) -> std::io::Result<(u64, u64, i64)> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: `st` is a plain struct the calls fill in; `c` is a valid path.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut st) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut fs: libc::statfs = std::mem::zeroed();
        if libc::statfs(c.as_ptr(), &mut fs) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok((st.f_blocks as u64 * st.f_frsize as u64, st.f_bavail as u64 * st.f_frsize as u64, fs.f_type as i64))
    }
}

/// Runs every check for namespace `ns`; `configured` is the memory the
/// configured rings need that do not exist yet (from helixd's configuration).
pub fn run(ns: &Namespace, configured: Option<(u64, String)>) -> Vec<Check> {
    let mut out = Vec::new();
    let shm = Path::new(SHM_DIR);

    // /dev/shm: tmpfs, room, sticky bit.
    match space(shm) {
        Ok((total, free, fstype)) => {
            const TMPFS_MAGIC: i64 = 0x0102_1994;
            if fstype != TMPFS_MAGIC {
                out.push(bad(
                    "/dev/shm file system",
                    Status::Warn,
                    format!("{SHM_DIR} is not a tmpfs (type {fstype:#x}); rings would live on disk"),
                    "mount a tmpfs on /dev/shm",
                ));
            }
            let need = configured.as_ref().map_or(0, |(b, _)| *b);
            let detail = format!("{} total, {} free", crate::rings::fmt_bytes(total), crate::rings::fmt_bytes(free));
            if need > free {
                out.push(bad(
                    "/dev/shm space",
                    Status::Fail,
                    format!("{detail}; the configured rings that do not exist yet need {} ({})", crate::rings::fmt_bytes(need), configured.map(|c| c.1).unwrap_or_default()),
                    "grow /dev/shm (mount -o remount,size=... /dev/shm, or --shm-size for a container) or make the rings smaller",
                ));
            } else if free < total / 10 {
                out.push(bad(
                    "/dev/shm space",
                    Status::Warn,
                    format!("{detail}: less than 10% free"),
                    "remove stale rings (helixctl list) or grow /dev/shm",
                ));
            } else {
                out.push(ok("/dev/shm space", detail));
            }
        }
        Err(e) => out.push(bad(
            "/dev/shm space",
            Status::Fail,
            format!("cannot stat {SHM_DIR}: {e}"),
            "mount a tmpfs on /dev/shm",
        )),
    }
    match std::fs::metadata(shm) {
        Ok(m) if m.permissions().mode() & 0o1777 == 0o1777 => {
            out.push(ok("/dev/shm permissions", "mode 1777 (sticky, world-writable)".into()))
        }
        Ok(m) => out.push(bad(
            "/dev/shm permissions",
            Status::Warn,
            format!("mode {:o}; expected 1777", m.permissions().mode() & 0o7777),
            "chmod 1777 /dev/shm (the sticky bit stops users removing each other's rings)",
        )),
        Err(e) => out.push(bad("/dev/shm permissions", Status::Fail, e.to_string(), "mount a tmpfs on /dev/shm")),
    }

    // Is this /dev/shm the one PID 1 (the host, or the container's init) sees?
    match (std::fs::metadata(shm), std::fs::metadata("/proc/1/root/dev/shm")) {
        (Ok(a), Ok(b)) if a.dev() != b.dev() => out.push(bad(
            "shared /dev/shm",
            Status::Warn,
            "this process sees a different /dev/shm than PID 1 (a private mount namespace: PrivateDevices=, PrivateIPC=, or a container)".into(),
            "run HELIX's programs in the same /dev/shm (drop PrivateDevices=/PrivateIPC=, or share /dev/shm into the container)",
        )),
        (Ok(_), Ok(_)) => out.push(ok("shared /dev/shm", "the same /dev/shm as PID 1".into())),
        _ => out.push(ok("shared /dev/shm", "not checked (PID 1's root is not readable; run as root to check)".into())),
    }

    // logind's RemoveIPC removes a user's shared memory at logout.
    let mut remove_ipc = None;
    let mut confs = vec![std::path::PathBuf::from("/etc/systemd/logind.conf")];
    if let Ok(d) = std::fs::read_dir("/etc/systemd/logind.conf.d") {
        let mut extra: Vec<_> =
            d.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "conf")).collect();
        extra.sort();
        confs.extend(extra);
    }
    for c in &confs {
        if let Ok(text) = std::fs::read_to_string(c) {
            for line in text.lines().map(str::trim) {
                if let Some(v) = line.strip_prefix("RemoveIPC=") {
                    remove_ipc = Some((v.trim().to_owned(), c.display().to_string()));
                }
            }
        }
    }
    match remove_ipc {
        Some((v, f)) if matches!(v.as_str(), "no" | "false" | "0") => out.push(ok("logind RemoveIPC", format!("RemoveIPC={v} ({f})"))),
        other => out.push(bad(
            "logind RemoveIPC",
            Status::Warn,
            match other {
                Some((v, f)) => format!("RemoveIPC={v} ({f})"),
                None => "RemoveIPC is not set: logind's default (yes) removes a regular user's shared memory when their last session ends".into(),
            },
            "run helixd as the helix system user (systemd/helix.service, RemoveIPC=no); rings created by a login user vanish at logout unless logind.conf says RemoveIPC=no",
        )),
    }

    // Futexes on shared memory.
    let futex = (|| -> std::io::Result<()> {
        let path = ns.data_path(&format!("doctor-{}", std::process::id()));
        let f = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&path)?;
        let _ = std::fs::remove_file(&path);
        f.set_len(4096)?;
        let map = helix::shm::Mapping::new(&f, true)?;
        // SAFETY: the mapping is 4096 bytes, page aligned and writable; the
        // word is only accessed atomically, by this process alone.
        let word = unsafe { &*(map.ptr() as *const std::sync::atomic::AtomicU32) };
        helix::futex::wake_all(word)?;
        helix::futex::wait(word, 1, Some(std::time::Duration::from_millis(1)))
    })();
    match futex {
        Ok(()) => {
            out.push(ok("futex on shared memory", "FUTEX_WAIT and FUTEX_WAKE work on a shared file mapping".into()))
        }
        Err(e) => out.push(bad(
            "futex on shared memory",
            Status::Fail,
            e.to_string(),
            "a kernel with futex support (Linux 2.6+), and a seccomp policy that allows futex",
        )),
    }

    // The rings of this namespace.
    let names = ns.list_rings().unwrap_or_default();
    if names.is_empty() {
        out.push(bad(
            "rings",
            Status::Warn,
            format!("no rings in namespace {ns}"),
            "start helixd (systemctl start helix), or check --namespace / HELIX_NAMESPACE",
        ));
    }
    for name in names {
        let path = ns.data_path(&name);
        let v = match RingView::attach(ns, &name) {
            Ok(v) => v,
            Err(e) => {
                out.push(bad(
                    "ring",
                    Status::Fail,
                    format!("{name}: {e}"),
                    format!(
                        "unlink it (rm {} {}) and let helixd recreate it",
                        path.display(),
                        ns.readers_path(&name).display()
                    ),
                ));
                continue;
            }
        };
        let s = v.stats();
        if let (Ok(d), Ok(r)) = (std::fs::metadata(&path), std::fs::metadata(ns.readers_path(&name))) {
            let detail = format!(
                "{name}: data {:o} {}:{}, control {:o} {}:{}",
                d.permissions().mode() & 0o777,
                d.uid(),
                d.gid(),
                r.permissions().mode() & 0o777,
                r.uid(),
                r.gid()
            );
            if d.permissions().mode() & 0o002 != 0 {
                out.push(bad(
                    "ring files",
                    Status::Warn,
                    format!("{detail}: the data region is world-writable"),
                    "set mode = 0o660 in the ring's configuration and recreate it",
                ));
            } else if (d.uid(), d.gid()) != (r.uid(), r.gid()) {
                out.push(bad(
                    "ring files",
                    Status::Warn,
                    format!("{detail}: the two files have different owners"),
                    "recreate the ring (recreate = true) so one user owns both files",
                ));
            } else {
                out.push(ok("ring files", detail));
            }
        }
        match (s.lease.pid, s.lease.alive) {
            (Some(pid), false) => out.push(bad(
                "ring writer",
                Status::Warn,
                format!("{name}: writer pid {pid} is dead (a stale ring)"),
                "restart its writer (systemctl restart helix); the next writer continues the sequence",
            )),
            (None, _) => out.push(bad(
                "ring writer",
                Status::Warn,
                format!("{name}: no writer holds the lease"),
                "start its writer, or remove the ring if it is no longer configured",
            )),
            _ => {}
        }
        let dead: Vec<String> =
            s.readers.iter().filter(|r| !r.alive).map(|r| format!("{} (pid {})", r.name, r.pid)).collect();
        if dead.is_empty() {
            out.push(ok("ring readers", format!("{name}: {} readers, all alive", s.readers.len())));
        } else {
            out.push(bad(
                "ring readers",
                Status::Warn,
                format!("{name}: dead readers {}", dead.join(", ")),
                format!("helixd sweeps them within a second; without helixd: helixctl evict {name} NAME"),
            ));
        }
    }
    out
}
