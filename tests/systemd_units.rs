//! The systemd files are checked with systemd's own tools, without a booted
//! systemd: `systemd-analyze verify` on each unit (with the binary at the
//! path the unit names replaced by the one just built), and sysusers and
//! tmpfiles applied to a scratch root. The proof under a real systemd is
//! the container test of the packaging issue.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::Env;

fn tool(name: &str) -> Command {
    assert!(
        Command::new(name).arg("--version").stdout(Stdio::null()).status().is_ok_and(|s| s.success()),
        "{name} is needed to check the systemd files (apt-get install systemd)"
    );
    Command::new(name)
}

/// A scratch folder (the test's `Env`; its namespace goes unused) with an
/// empty `etc` in it.
fn scratch() -> Env {
    let env = Env::new();
    std::fs::create_dir_all(env.path("etc")).unwrap();
    env
}

fn unit_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd")
}

#[test]
fn every_service_unit_passes_systemd_analyze_verify() {
    let env = scratch();
    // Copy every unit first: helix-twin.service names helix.service, which
    // verify looks for beside it.
    let mut copies = vec![];
    for entry in std::fs::read_dir(unit_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "service") {
            continue;
        }
        // The bridge is a package of its own, whose binary this package's
        // tests do not build: bridge/tests/service.rs verifies its unit
        // with it.
        if path.file_name().is_some_and(|n| n == "helix-bridge.service") {
            continue;
        }
        // The unit names /usr/bin/<program>; verify checks that it exists.
        let text = std::fs::read_to_string(&path).unwrap();
        let bin_dir = Path::new(env!("CARGO_BIN_EXE_helixd")).parent().unwrap();
        let text = text.replace("/usr/bin/", &format!("{}/", bin_dir.display()));
        let copy = env.dir.join(path.file_name().unwrap());
        std::fs::write(&copy, text).unwrap();
        copies.push((path, copy));
    }
    for (path, copy) in &copies {
        let out = tool("systemd-analyze").arg("verify").arg(copy).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && stderr.trim().is_empty(), "{}: {stderr}", path.display());
    }
    assert!(copies.len() >= 3, "helix, helix-ledger and helix-twin");
}

fn apply(tool_name: &str, args: &[&str], root: &Path, file: &str) {
    let mut child = tool(tool_name)
        .arg(format!("--root={}", root.display()))
        .args(args)
        .arg("-")
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::copy(&mut std::fs::File::open(unit_dir().join(file)).unwrap(), child.stdin.as_mut().unwrap()).unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{tool_name} {file}: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn sysusers_creates_the_helix_user_and_tmpfiles_its_folders() {
    let env = scratch();
    let root = &env.dir;
    apply("systemd-sysusers", &[], root, "helix.sysusers");
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    let group = std::fs::read_to_string(root.join("etc/group")).unwrap();
    let user: Vec<&str> = passwd.lines().find(|l| l.starts_with("helix:")).expect("helix user").split(':').collect();
    assert!(group.lines().any(|l| l.starts_with(&format!("helix:x:{}:", user[3]))), "{group}");
    assert_eq!(user[5], "/var/lib/helix");
    let (uid, gid): (u32, u32) = (user[2].parse().unwrap(), user[3].parse().unwrap());

    apply("systemd-tmpfiles", &["--create"], root, "helix.tmpfiles");
    for dir in ["var/lib/helix", "var/lib/helix/ledger", "var/lib/helix/helixd", "var/log/helix"] {
        let m = std::fs::metadata(root.join(dir)).unwrap_or_else(|e| panic!("{dir}: {e}"));
        assert!(m.is_dir());
        assert_eq!((m.mode() & 0o777, m.uid(), m.gid()), (0o750, uid, gid), "{dir}");
    }
    // The services' metrics files: written by helix, read by anyone.
    for dir in ["run/helix", "run/helix/metrics"] {
        let m = std::fs::metadata(root.join(dir)).unwrap_or_else(|e| panic!("{dir}: {e}"));
        assert_eq!((m.mode() & 0o777, m.uid(), m.gid()), (0o755, uid, gid), "{dir}");
    }
}

/// The value of `key=` in a unit's text.
fn setting(unit: &str, key: &str) -> Option<String> {
    unit.lines().find(|l| l.starts_with(&format!("{key}="))).map(|l| l[key.len() + 1..].trim().to_owned())
}

#[test]
fn the_service_keeps_dev_shm_shared_and_its_ipc_alive() {
    for file in ["helix.service", "helix-ledger.service", "helix-twin.service"] {
        let unit = std::fs::read_to_string(unit_dir().join(file)).unwrap();
        let set = |key: &str| setting(&unit, key);
        assert_eq!(set("Type").as_deref(), Some("notify"), "{file}");
        assert_eq!(set("RemoveIPC").as_deref(), Some("no"), "{file}");
        assert_eq!(set("Restart").as_deref(), Some("on-failure"), "{file}");
        assert!(set("WatchdogSec").is_some(), "{file}");
        assert!(set("ReadWritePaths").is_some_and(|p| p.split_whitespace().any(|p| p == "/dev/shm")), "{file}");
        for forbidden in ["PrivateDevices", "PrivateIPC", "ProtectProc"] {
            assert!(set(forbidden).is_none(), "{file}: {forbidden}= would hide the rings or the readers");
        }
        // ProcSubset=pid hides only what is not a process: /proc/PID/stat stays.
        assert!(set("ProcSubset").is_none_or(|v| v == "pid"), "{file}: ProcSubset= would hide the readers");
    }
}

#[test]
fn the_ledger_is_bound_to_the_daemon_and_may_write_only_its_folder() {
    let unit = std::fs::read_to_string(unit_dir().join("helix-ledger.service")).unwrap();
    let set = |key: &str| setting(&unit, key);
    // Before=, not After=: it stops after helixd, and records helixd's last
    // frames (an After= ledger stopped first, and they were lost with
    // /dev/shm at a reboot; tools/systemd-proof's stop check counts them).
    for key in ["BindsTo", "Before", "PartOf", "WantedBy"] {
        assert_eq!(set(key).as_deref(), Some("helix.service"), "{key}");
    }
    assert_eq!(set("After"), None, "After= would stop it before helixd");
    // Restarted for as long as it fails (a full disk outlasts systemd's
    // default five starts in ten seconds; found by review).
    assert_eq!(set("StartLimitIntervalSec").as_deref(), Some("0"));
    let writable: Vec<&str> =
        unit.lines().filter_map(|l| l.strip_prefix("ReadWritePaths=")).flat_map(str::split_whitespace).collect();
    assert_eq!(writable, ["/dev/shm", "/var/lib/helix/ledger", "/run/helix/metrics"]);
    // The folder the unit may write is the one the ledger writes by default.
    assert!(include_str!("../src/bin/helix-ledger/default.toml").contains("dir = \"/var/lib/helix/ledger\""));
}

#[test]
fn the_twin_service_is_bound_to_helix_and_shares_its_ipc() {
    let unit = std::fs::read_to_string(unit_dir().join("helix-twin.service")).unwrap();
    let main = std::fs::read_to_string(unit_dir().join("helix.service")).unwrap();
    let set = setting;
    assert_eq!(set(&unit, "Type").as_deref(), Some("notify"));
    assert!(set(&unit, "WatchdogSec").is_some());
    assert!(set(&unit, "ExecStart").is_some_and(|e| e.ends_with("/helix-twin")));
    for key in ["BindsTo", "After", "PartOf", "WantedBy"] {
        assert_eq!(set(&unit, key).as_deref(), Some("helix.service"), "{key}");
    }
    for key in ["User", "Group", "RemoveIPC", "UMask", "ReadWritePaths"] {
        assert_eq!(set(&unit, key), set(&main, key), "{key} as in helix.service");
    }
}
