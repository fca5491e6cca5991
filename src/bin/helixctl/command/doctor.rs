//! `helixctl doctor`: what is wrong with this host for HELIX, and how to
//! fix it. Each check says OK, WARN or FAIL, with the fix for the last two;
//! a FAIL makes the exit status non-zero. Fan-in rings are checked in
//! `doctor_fanin.rs`.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use serde::Serialize;

use crate::format::{self, bytes};
use crate::helixd_config;
use crate::json;
use helix::ring::{self, RingEntry, RingState};
use helix::shm::{Namespace, SHM_DIR};
use helix::{AttachError, Damaged, RingStats, RingView};

/// The fan-in rings' checks.
#[path = "doctor_fanin.rs"]
mod fanin_checks;

/// Arguments of `helixctl doctor`.
#[derive(clap::Args)]
pub struct Args {
    /// helixd's configuration, to check room for its rings (default:
    /// /etc/helix/helix.toml if it exists, else the embedded default).
    #[arg(long)]
    config: Option<PathBuf>,
}

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

fn ok(check: &'static str, detail: impl Into<String>) -> Check {
    Check { check, status: Status::Ok, detail: detail.into(), fix: None }
}

fn bad(check: &'static str, status: Status, detail: impl Into<String>, fix: impl Into<String>) -> Check {
    Check { check, status, detail: detail.into(), fix: Some(fix.into()) }
}

/// The configured rings that do not exist yet: the memory they need, and
/// their names.
struct Missing {
    bytes: u64,
    names: String,
}

/// Runs every check, prints them (as a list or JSON); fails if one failed.
pub fn run(ns: &Namespace, args: &Args, json: bool) -> Result<ExitCode> {
    let (missing, config) = missing(ns, args.config.as_deref());
    let mut checks = checks(ns, missing);
    checks.extend(config);
    if json {
        json::print(&serde_json::json!({ "namespace": ns.as_str(), "checks": checks }))?;
    } else {
        for c in &checks {
            let tag = match c.status {
                Status::Ok => "ok  ",
                Status::Warn => "WARN",
                Status::Fail => "FAIL",
            };
            // A detail may name a reader, whose name a peer chose.
            println!("{tag} {}: {}", c.check, format::printable(&c.detail));
            if let Some(fix) = &c.fix {
                println!("     fix: {}", format::printable(fix));
            }
        }
    }
    let failed = checks.iter().any(|c| c.status == Status::Fail);
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// What helixd's configuration (`config`, or its default) asks for in `ns`
/// that does not exist yet; `None` if it cannot be read or is for another
/// namespace. Then also a warning: a configuration that cannot be read
/// (its error names the file and line), or one given by `--config` for
/// another namespace. (Before, both were passed over in silence, and the
/// space check said OK with nothing configured checked.)
fn missing(ns: &Namespace, config: Option<&Path>) -> (Option<Missing>, Option<Check>) {
    const CHECK: &str = "helixd configuration";
    let c = match helixd_config::load_config(config) {
        Ok(c) => c,
        Err(e) => {
            let fix = "fix what it names (`helixd --check --config FILE` says the same)";
            return (None, Some(bad(CHECK, Status::Warn, format!("{e}; its rings were not checked"), fix)));
        }
    };
    if &c.namespace != ns {
        let other = config.map(|path| {
            let detail = format!("{} is for namespace {}, not {}", path.display(), c.namespace.as_str(), ns.as_str());
            let fix = format!("helixctl --namespace {} doctor --config {}", c.namespace.as_str(), path.display());
            bad(CHECK, Status::Warn, detail, fix)
        });
        return (None, other);
    }
    let missing: Vec<&helixd_config::RingConfig> = c.rings.iter().filter(|r| !ns.data_path(&r.name).exists()).collect();
    let missing = Missing {
        bytes: missing.iter().map(|r| r.options.memory()).sum(),
        names: missing.iter().map(|r| r.name.as_str()).collect::<Vec<_>>().join(", "),
    };
    (Some(missing), None)
}

/// Runs every check for namespace `ns`; `missing` is what the configured
/// rings that do not exist yet need.
fn checks(ns: &Namespace, missing: Option<Missing>) -> Vec<Check> {
    let mut out = shm_space(missing);
    out.push(shm_permissions());
    out.push(shared_shm());
    out.push(logind_remove_ipc());
    out.push(futex());
    out.extend(rings(ns));
    out.extend(fanin_checks::checks(ns));
    out
}

/// /dev/shm: a tmpfs, with room for the configured rings.
fn shm_space(missing: Option<Missing>) -> Vec<Check> {
    const CHECK: &str = "/dev/shm space";
    let (total, free, fstype) = match space(Path::new(SHM_DIR)) {
        Ok(s) => s,
        Err(e) => {
            return vec![bad(CHECK, Status::Fail, format!("cannot stat {SHM_DIR}: {e}"), "mount a tmpfs on /dev/shm")]
        }
    };
    let mut out = Vec::new();
    if fstype != nix::sys::statfs::TMPFS_MAGIC {
        out.push(bad(
            "/dev/shm file system",
            Status::Warn,
            format!("{SHM_DIR} is not a tmpfs (type {:#x}); rings would live on disk", fstype.0),
            "mount a tmpfs on /dev/shm",
        ));
    }
    let need = missing.as_ref().map_or(0, |m| m.bytes);
    let detail = format!("{} total, {} free", bytes(total), bytes(free));
    out.push(if need > free {
        bad(
            CHECK,
            Status::Fail,
            format!(
                "{detail}; the configured rings that do not exist yet need {} ({})",
                bytes(need),
                missing.map(|m| m.names).unwrap_or_default()
            ),
            "grow /dev/shm (mount -o remount,size=... /dev/shm, or --shm-size for a container) or make the rings smaller",
        )
    } else if free < total / 10 {
        bad(
            CHECK,
            Status::Warn,
            format!("{detail}: less than 10% free"),
            "remove stale rings (helixctl list) or grow /dev/shm",
        )
    } else {
        ok(CHECK, detail)
    });
    out
}

/// (total, free) bytes of the file system holding `path`, and its type.
fn space(path: &Path) -> nix::Result<(u64, u64, nix::sys::statfs::FsType)> {
    let st = nix::sys::statvfs::statvfs(path)?;
    let fs = nix::sys::statfs::statfs(path)?;
    let frsize = st.fragment_size() as u64;
    Ok((st.blocks() as u64 * frsize, st.blocks_available() as u64 * frsize, fs.filesystem_type()))
}

/// /dev/shm: sticky and world-writable.
fn shm_permissions() -> Check {
    const CHECK: &str = "/dev/shm permissions";
    match std::fs::metadata(SHM_DIR) {
        Ok(m) if m.permissions().mode() & 0o1777 == 0o1777 => ok(CHECK, "mode 1777 (sticky, world-writable)"),
        Ok(m) => bad(
            CHECK,
            Status::Warn,
            format!("mode {:o}; expected 1777", m.permissions().mode() & 0o7777),
            "chmod 1777 /dev/shm (the sticky bit stops users removing each other's rings)",
        ),
        Err(e) => bad(CHECK, Status::Fail, e.to_string(), "mount a tmpfs on /dev/shm"),
    }
}

/// Whether this /dev/shm is the one PID 1 (the host, or the container's
/// init) sees.
fn shared_shm() -> Check {
    const CHECK: &str = "shared /dev/shm";
    match (std::fs::metadata(SHM_DIR), std::fs::metadata("/proc/1/root/dev/shm")) {
        (Ok(a), Ok(b)) if a.dev() != b.dev() => bad(
            CHECK,
            Status::Warn,
            "this process sees a different /dev/shm than PID 1 (a private mount namespace: PrivateDevices=, PrivateIPC=, or a container)",
            "run HELIX's programs in the same /dev/shm (drop PrivateDevices=/PrivateIPC=, or share /dev/shm into the container)",
        ),
        (Ok(_), Ok(_)) => ok(CHECK, "the same /dev/shm as PID 1"),
        _ => ok(CHECK, "not checked (PID 1's root is not readable; run as root to check)"),
    }
}

/// logind's RemoveIPC, which removes a user's shared memory at logout.
fn logind_remove_ipc() -> Check {
    const CHECK: &str = "logind RemoveIPC";
    match remove_ipc_setting() {
        Some((v, f)) if matches!(v.as_str(), "no" | "false" | "0") => ok(CHECK, format!("RemoveIPC={v} ({f})")),
        other => bad(
            CHECK,
            Status::Warn,
            match other {
                Some((v, f)) => format!("RemoveIPC={v} ({f})"),
                None => "RemoveIPC is not set: logind's default (yes) removes a regular user's shared memory when their last session ends".into(),
            },
            "run helixd as the helix system user (systemd/helix.service, RemoveIPC=no); rings created by a login user vanish at logout unless logind.conf says RemoveIPC=no",
        ),
    }
}

/// The last `RemoveIPC=` in logind.conf and its drop-ins (in the order
/// logind reads them): its value and the file that sets it.
fn remove_ipc_setting() -> Option<(String, String)> {
    let mut confs = vec![PathBuf::from("/etc/systemd/logind.conf")];
    if let Ok(d) = std::fs::read_dir("/etc/systemd/logind.conf.d") {
        let mut extra: Vec<_> =
            d.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "conf")).collect();
        extra.sort();
        confs.extend(extra);
    }
    let mut setting = None;
    for c in &confs {
        let Ok(text) = std::fs::read_to_string(c) else { continue };
        for v in text.lines().filter_map(|line| line.trim().strip_prefix("RemoveIPC=")) {
            setting = Some((v.trim().to_owned(), c.display().to_string()));
        }
    }
    setting
}

/// Futexes on shared memory, as the rings use them: on an unnamed file in
/// the rings' folder. (Found by review: on a file named after doctor's
/// pid, which anyone could make first for the next pids, and doctor
/// failed the check with "File exists".)
fn futex() -> Check {
    const CHECK: &str = "futex on shared memory";
    match helix::futex::probe(Path::new(SHM_DIR)) {
        Ok(()) => ok(CHECK, "FUTEX_WAIT and FUTEX_WAKE work on a shared file mapping"),
        Err(e) => bad(
            CHECK,
            Status::Fail,
            e.to_string(),
            "a kernel with futex support (Linux 2.6+), and a seccomp policy that allows futex",
        ),
    }
}

/// The check that a ring is whole, attaches and is not damaged.
const RING: &str = "ring";

/// The rings of this namespace (every name with a file, from
/// [`ring::scan`]): each is whole, attaches and is not damaged; its files'
/// modes and owners, its writer, its readers.
fn rings(ns: &Namespace) -> Vec<Check> {
    let entries = match ring::scan(ns) {
        Ok(entries) => entries,
        Err(e) => {
            return vec![bad("rings", Status::Fail, format!("cannot read {SHM_DIR}: {e}"), "mount a tmpfs on /dev/shm")]
        }
    };
    if entries.is_empty() && !helix::fanin::inspect::list(ns).is_ok_and(|f| !f.is_empty()) {
        return vec![bad(
            "rings",
            Status::Warn,
            format!("no rings in namespace {ns}"),
            "start helixd (systemctl start helix), or check --namespace / HELIX_NAMESPACE",
        )];
    }
    let mut out = Vec::new();
    for RingEntry { name, state } in entries {
        if let Some(c) = half_made(ns, &name, &state) {
            out.push(c);
            continue;
        }
        let v = match RingView::attach(ns, &name) {
            Ok(v) => v,
            Err(e) => {
                out.push(unusable(&name, &e));
                continue;
            }
        };
        let s = v.stats();
        if let Some(d) = v.damage() {
            out.push(damaged(&name, &d));
            continue;
        }
        out.extend(ring_files(ns, &name));
        out.extend(ring_writer(&name, &s));
        out.push(ring_readers(&name, &s));
    }
    out
}

/// A ring name whose files are not a whole ring (`state`), with its fix;
/// `None` for a whole one.
fn half_made(ns: &Namespace, name: &str, state: &RingState) -> Option<Check> {
    let (data, control) = (ns.data_path(name), ns.readers_path(name));
    Some(match *state {
        RingState::Complete => return None,
        RingState::MissingData { being_created: true } => {
            ok(RING, format!("{name}: being created (a live creator is publishing it)"))
        }
        RingState::MissingData { being_created: false } => bad(
            RING,
            Status::Warn,
            format!(
                "{name}: a lone control file, {} without {} (its creator died before publishing it, or the data \
                 file was removed): no ring",
                control.display(),
                data.display()
            ),
            format!("the next create replaces it, or `helixctl rm {name}`"),
        ),
        RingState::MissingReaders => {
            // What attaching says: the control file is missing, or the data
            // file does not validate either.
            let why = RingView::attach(ns, name).err().map_or("its control file is missing".into(), |e| e.to_string());
            let fix = match ring::live_writer(ns, name) {
                Some((pid, _)) => {
                    format!("`helixctl rm {name}` (refused while writer pid {pid} lives) or recreate = true")
                }
                None => format!("`helixctl rm {name}` or recreate = true"),
            };
            bad(RING, Status::Fail, format!("{name}: a lone data file, nobody can attach: {why}"), fix)
        }
        RingState::Unfinished { age_secs, abandoned: true } => bad(
            RING,
            Status::Warn,
            format!("{name}: {} was never initialised ({age_secs} s old: its creator died)", data.display()),
            format!("`helixctl rm {name}`, or let the next create replace it"),
        ),
        RingState::Unfinished { age_secs, abandoned: false } => {
            ok(RING, format!("{name}: being initialised by its creator ({age_secs} s old)"))
        }
        RingState::Unreadable { ref error } => unreadable(name, [&data, &control], error),
    })
}

/// Ring name `name` whose `files` could not be inspected (`error`): plain
/// files are a ring this user may not read (not in its group), which root
/// can judge; anything else (a link, a socket) is no ring.
fn unreadable(name: &str, files: [&Path; 2], error: &str) -> Check {
    let plain = files.iter().filter_map(|p| std::fs::symlink_metadata(p).ok()).all(|m| m.file_type().is_file());
    if plain {
        let uid = nix::unistd::geteuid();
        return bad(
            RING,
            Status::Warn,
            format!("{name}: not checked, its files cannot be read by uid {uid}: {error}"),
            "run doctor as root, or as a member of the ring's group",
        );
    }
    bad(
        RING,
        Status::Warn,
        format!("{name}: no ring, a file that is not one: {error}"),
        format!("`helixctl rm {name}` (as root, or as the file's owner)"),
    )
}

/// A whole ring that does not attach.
fn unusable(name: &str, e: &AttachError) -> Check {
    match e {
        AttachError::Damaged(d) => damaged(name, d),
        // Attaching opens the control file read-write: a member of the
        // ring's group may read a ring of mode 0640 (the packaged
        // control.log) and not attach it. (Found by review: that was a
        // FAIL, with `helixctl rm` for its fix.)
        AttachError::Permission { .. } => bad(
            RING,
            Status::Warn,
            format!("{name}: not checked, uid {} may not attach it: {e}", nix::unistd::geteuid()),
            "run doctor as root or as the ring's owner (attaching opens its control file read-write)",
        ),
        e => bad(
            RING,
            Status::Fail,
            format!("{name}: {e}"),
            format!("`helixctl rm {name}` and let helixd create it again (or recreate = true)"),
        ),
    }
}

/// A ring whose file shrank under a mapping (a peer truncated it).
fn damaged(name: &str, d: &Damaged) -> Check {
    bad(RING, Status::Fail, format!("{name}: {d}"), "helixd repairs it; or restart helixd")
}

/// A ring's two files: not world-writable, one owner.
fn ring_files(ns: &Namespace, name: &str) -> Option<Check> {
    const CHECK: &str = "ring files";
    let (d, r) = (std::fs::metadata(ns.data_path(name)).ok()?, std::fs::metadata(ns.readers_path(name)).ok()?);
    let detail = format!(
        "{name}: data {:o} {}:{}, control {:o} {}:{}",
        d.permissions().mode() & 0o777,
        d.uid(),
        d.gid(),
        r.permissions().mode() & 0o777,
        r.uid(),
        r.gid()
    );
    Some(if d.permissions().mode() & 0o002 != 0 {
        bad(
            CHECK,
            Status::Warn,
            format!("{detail}: the data region is world-writable"),
            "set mode = 0o660 in the ring's configuration and recreate it",
        )
    } else if (d.uid(), d.gid()) != (r.uid(), r.gid()) {
        bad(
            CHECK,
            Status::Warn,
            format!("{detail}: the two files have different owners"),
            "recreate the ring (recreate = true) so one user owns both files",
        )
    } else {
        ok(CHECK, detail)
    })
}

/// A ring's writer: a live process holds the lease (no news is good news).
fn ring_writer(name: &str, s: &RingStats) -> Option<Check> {
    const CHECK: &str = "ring writer";
    match (s.lease.pid, s.lease.alive) {
        (Some(pid), false) => Some(bad(
            CHECK,
            Status::Warn,
            format!("{name}: writer pid {pid} is dead (a stale ring)"),
            "restart its writer (systemctl restart helix); the next writer continues the sequence",
        )),
        (None, _) => Some(bad(
            CHECK,
            Status::Warn,
            format!("{name}: no writer holds the lease"),
            "start its writer, or remove the ring if it is no longer configured",
        )),
        (Some(_), true) => None,
    }
}

/// A ring's readers: all alive.
fn ring_readers(name: &str, s: &RingStats) -> Check {
    const CHECK: &str = "ring readers";
    let dead: Vec<String> =
        s.readers.iter().filter(|r| !r.alive).map(|r| format!("{} (pid {})", r.name, r.pid)).collect();
    if dead.is_empty() {
        ok(CHECK, format!("{name}: {} readers, all alive", s.readers.len()))
    } else {
        bad(
            CHECK,
            Status::Warn,
            format!("{name}: dead readers {}", dead.join(", ")),
            format!("helixd sweeps them within a second; without helixd: helixctl evict {name} NAME"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use helix::{RingFile, RingName};

    /// A shrink between attach and read cannot be staged from outside a
    /// process; both ways doctor learns of one say how it is repaired.
    #[test]
    fn a_damaged_ring_is_a_fail_that_helixd_repairs() {
        let d = Damaged { ring: RingName::new("telemetry"), file: RingFile::Readers };
        for c in [unusable("telemetry", &AttachError::Damaged(d)), damaged("telemetry", &d)] {
            assert_eq!(c.status, Status::Fail);
            assert!(c.detail.starts_with("telemetry: ") && c.detail.contains("control region"), "{}", c.detail);
            assert_eq!(c.fix.as_deref(), Some("helixd repairs it; or restart helixd"));
        }
    }
}
