//! helixctl end to end: the real binary against rings in a test namespace.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{arg, child, ctl, Env, Kid, Reaped, TestNs};
use helix::telemetry::{Sample, KIND_SAMPLE};
use helix::*;

fn ok(ns: &TestNs, args: &[&str]) -> String {
    let (success, out, err) = ctl(ns, args);
    assert!(success, "helixctl {args:?}: {err}");
    out
}

fn json(ns: &TestNs, args: &[&str]) -> serde_json::Value {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    serde_json::from_str(&ok(ns, &a)).unwrap()
}

fn sample(i: u64) -> Sample {
    Sample { stream: i as u32 % 4, quality: 0, seq: i, sample_ns: 10 + i, ingest_ns: 20 + i, value: i as f64 / 2.0 }
}

/// A telemetry ring with `n` samples, its writer, and a corrupt file.
fn setup(ns: &TestNs, n: u64) -> (Ring, Writer) {
    let ring = Ring::create(
        ns,
        "telemetry",
        &RingOptions { capacity: 64, max_payload: 48, policy: Policy::Block, ..Default::default() },
    )
    .unwrap();
    let mut w = ring.writer().unwrap();
    for i in 0..n {
        w.publish_kind(KIND_SAMPLE, bytemuck::bytes_of(&sample(i))).unwrap();
    }
    std::fs::write(ns.data_path("junk"), b"not a ring at all").unwrap();
    (ring, w)
}

#[test]
fn list_shows_every_ring_and_names_a_corrupt_one() {
    let ns = TestNs::new();
    let (_ring, _w) = setup(&ns, 5);
    let table = ok(&ns, &["list", "--sample", "0"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("telemetry") && l.contains("block") && l.contains(&std::process::id().to_string())),
        "{table}"
    );
    assert!(
        table.lines().any(|l| l.starts_with("junk") && l.contains("CORRUPT") && l.contains("truncated")),
        "{table}"
    );
    let j = json(&ns, &["list", "--sample", "0.1"]);
    assert_eq!(j["namespace"], ns.as_str());
    let rings = j["rings"].as_array().unwrap();
    assert_eq!(rings.len(), 2);
    let t = rings.iter().find(|r| r["name"] == "telemetry").unwrap();
    assert_eq!(
        (t["ok"].as_bool(), t["policy"].as_str(), t["capacity"].as_u64(), t["published"].as_u64()),
        (Some(true), Some("block"), Some(64), Some(5))
    );
    assert_eq!((t["kind"].as_str(), j["fanin"].as_array().map(Vec::len)), (Some("broadcast"), Some(0)));
    assert_eq!(t["writer_pid"].as_u64(), Some(std::process::id() as u64));
    assert!(t["frames_per_sec"].is_number() && t["memory_bytes"].as_u64().unwrap() > 64 * 64);
    let junk = rings.iter().find(|r| r["name"] == "junk").unwrap();
    assert_eq!(junk["ok"], false);
    assert!(junk["error"].as_str().unwrap().contains("truncated"));
}

#[test]
fn list_shows_a_ring_with_one_file_missing_naming_both_files() {
    let ns = TestNs::new();
    drop(Ring::create(&ns, "lost-data", &RingOptions::default()).unwrap());
    drop(Ring::create(&ns, "lost-readers", &RingOptions::default()).unwrap());
    std::fs::remove_file(ns.data_path("lost-data")).unwrap();
    std::fs::remove_file(ns.readers_path("lost-readers")).unwrap();
    let j = json(&ns, &["list", "--sample", "0"]);
    let rings = j["rings"].as_array().unwrap();
    let row =
        |name: &str| rings.iter().find(|r| r["name"] == name).unwrap_or_else(|| panic!("{name} not listed: {j:#}"));
    for (name, present, missing) in [
        ("lost-data", ns.readers_path("lost-data"), ns.data_path("lost-data")),
        ("lost-readers", ns.data_path("lost-readers"), ns.readers_path("lost-readers")),
    ] {
        let r = row(name);
        assert_eq!(r["ok"], false, "{r}");
        let e = r["error"].as_str().unwrap();
        assert!(e.contains(&present.display().to_string()) && e.contains(&missing.display().to_string()), "{e}");
    }
    let table = ok(&ns, &["list", "--sample", "0"]);
    assert!(table.lines().any(|l| l.starts_with("lost-data") && l.contains("incomplete")), "{table}");
}

#[test]
fn stat_and_readers_report_every_counter() {
    let ns = TestNs::new();
    let (ring, mut w) = setup(&ns, 0);
    let mut r =
        ring.reader(&ReaderOptions { gating: true, start: Start::Oldest, ..ReaderOptions::named("ledger") }).unwrap();
    for i in 0..10 {
        w.publish(bytemuck::bytes_of(&sample(i))).unwrap();
    }
    for _ in 0..4 {
        r.try_read(&mut [0u8; 48]).unwrap();
    }
    let s = json(&ns, &["stat", "telemetry"]);
    assert_eq!((s["published"].as_u64(), s["bytes"].as_u64(), s["capacity"].as_u64()), (Some(10), Some(400), Some(64)));
    assert_eq!(s["writer"]["pid"].as_u64(), Some(std::process::id() as u64));
    assert_eq!(s["writer"]["alive"], true);
    assert_eq!(s["readers"].as_array().unwrap().len(), 1);
    let rd = json(&ns, &["readers", "telemetry"]);
    let r0 = &rd["readers"][0];
    assert_eq!(
        (r0["name"].as_str(), r0["gating"].as_bool(), r0["cursor"].as_u64(), r0["lag"].as_u64()),
        (Some("ledger"), Some(true), Some(5), Some(6))
    );
    assert_eq!((r0["alive"].as_bool(), r0["frames"].as_u64(), r0["overruns"].as_u64()), (Some(true), Some(4), Some(0)));
    assert!((r0["backpressure"].as_f64().unwrap() - 6.0 / 64.0).abs() < 1e-9);
    let table = ok(&ns, &["readers", "telemetry"]);
    assert!(table.contains("ledger") && table.contains("yes"), "{table}");
    assert!(ok(&ns, &["stat", "telemetry"]).contains("published      10 frames"));
}

#[test]
fn tail_decodes_telemetry_and_follows() {
    let ns = TestNs::watched("helixctl tail", Duration::from_secs(60));
    let (ring, mut w) = setup(&ns, 20);
    let out = ok(&ns, &["tail", "telemetry", "-n", "3"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[0].starts_with("18 stream=1 seq=17 value=8.5"), "{out}");
    let j: Vec<serde_json::Value> = ok(&ns, &["--json", "tail", "telemetry", "--from", "2", "-n", "2"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(j[0]["type"], "sample");
    assert_eq!((j[0]["seq"].as_u64(), j[1]["stream_seq"].as_u64()), (Some(2), Some(2)));
    // Other frames as hex.
    w.publish_kind(7, &[0xde, 0xad]).unwrap();
    assert_eq!(ok(&ns, &["tail", "telemetry", "-n", "1"]).trim(), "21 kind=7 len=2 dead");
    // --follow waits for new frames.
    let child = Command::new(env!("CARGO_BIN_EXE_helixctl"))
        .args(["--namespace", ns.as_str(), "tail", "telemetry", "--follow", "-n", "3", "--from", "22"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Reaped::new(child);
    while ring.stats().readers.is_empty() {
        std::thread::sleep(Duration::from_millis(10));
    }
    for i in 100..103 {
        w.publish_kind(KIND_SAMPLE, bytemuck::bytes_of(&sample(i))).unwrap();
    }
    let mut out = String::new();
    std::io::Read::read_to_string(child.0.stdout.as_mut().unwrap(), &mut out).unwrap();
    assert!(child.0.wait().unwrap().success());
    assert_eq!(out.lines().map(|l| l.split(' ').next().unwrap()).collect::<Vec<_>>(), ["22", "23", "24"], "{out}");
    // tail is a non-gating reader and leaves: the table is empty again.
    assert!(ring.stats().readers.is_empty());
}

#[test]
fn metrics_parse_as_prometheus_text_and_agree_with_the_ring() {
    let ns = TestNs::new();
    let (ring, _w) = setup(&ns, 7);
    let _r =
        ring.reader(&ReaderOptions { gating: true, start: Start::Oldest, ..ReaderOptions::named("quote\"d") }).unwrap();
    let scrape = scrape(&ns);
    let value = |name: &str, ring: &str| metric(&scrape, name, &[("ring", ring)]);
    assert_eq!(value("helix_ring_published_total", "telemetry"), 7.0);
    assert_eq!(value("helix_ring_capacity_slots", "telemetry"), 64.0);
    assert_eq!(value("helix_ring_writer_up", "telemetry"), 1.0);
    assert_eq!(value("helix_ring_up", "telemetry"), 1.0);
    assert_eq!(value("helix_ring_up", "junk"), 0.0);
    assert_eq!(value("helix_reader_lag_frames", "telemetry"), 7.0);
    let reader = scrape.samples.iter().find(|s| s.metric == "helix_reader_gating").unwrap();
    // The exposition escapes the quote (`quote\"d`); prometheus-parse hands
    // label values back as written, escapes included.
    assert_eq!(reader.labels.get("reader"), Some(r#"quote\"d"#));
    assert!(scrape.docs.contains_key("helix_ring_published_total"));
}

#[test]
fn evict_refuses_a_live_reader_unless_forced_and_frees_a_dead_one() {
    use std::os::unix::fs::FileExt;
    let ns = TestNs::new();
    let (ring, _w) = setup(&ns, 0);
    let live = ring.reader(&ReaderOptions::named("live")).unwrap();
    // A dead reader's entry: a process that has exited, written in place.
    let mut gone = Command::new("true").spawn().unwrap();
    let pid = gone.id();
    gone.wait().unwrap();
    let dead = ring.reader(&ReaderOptions::named("dead")).unwrap();
    let entry = (layout::READERS_HEADER_SIZE + dead.index() * layout::READER_ENTRY_SIZE) as u64;
    let f = std::fs::OpenOptions::new().write(true).open(ns.readers_path("telemetry")).unwrap();
    f.write_all_at(&layout::entry_state(pid, layout::ENTRY_ACTIVE).to_ne_bytes(), entry + 128).unwrap();
    f.write_all_at(&pid.to_ne_bytes(), entry + 136).unwrap();
    std::mem::forget(dead);
    assert!(ok(&ns, &["evict", "telemetry", "dead"]).contains(&format!("evicted reader \"dead\" (entry 1, pid {pid})")));
    let (success, _, err) = ctl(&ns, &["evict", "telemetry", "live"]);
    assert!(!success && err.contains("is alive; use --force"), "{err}");
    assert_eq!(ring.stats().readers.len(), 1);
    ok(&ns, &["evict", "telemetry", "0", "--force"]);
    assert!(ring.stats().readers.is_empty());
    drop(live);
    let (success, _, err) = ctl(&ns, &["evict", "telemetry", "nobody"]);
    assert!(!success && err.trim() == "helixctl: ring \"telemetry\" has no reader named \"nobody\"", "{err}");
}

#[test]
fn mistakes_are_one_line_and_a_non_zero_exit() {
    let ns = TestNs::new();
    for (args, what) in [
        (vec!["stat", "missing"], "no ring \"missing\""),
        (vec!["readers", "Bad/Name"], "ring name \"Bad/Name\""),
        (vec!["tail", "missing"], "no ring \"missing\""),
    ] {
        let (success, _, err) = ctl(&ns, &args);
        assert!(!success, "{args:?}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(what), "{err}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_helixctl")).args(["--namespace", "UPPER", "list"]).output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("namespace \"UPPER\""));
    assert!(ok(&ns, &["list"]).contains("no rings in namespace"));
}

#[test]
fn doctor_names_what_is_wrong_and_how_to_fix_it() {
    use std::os::unix::fs::FileExt;
    let env = Env::new();
    let ns = &env.ns;
    let (_ring, w) = setup(ns, 1);
    // A second ring whose writer died: its lease names a reaped process.
    let stale = Ring::create(ns, "stale", &RingOptions::default()).unwrap();
    let mut gone = Command::new("true").spawn().unwrap();
    let pid = gone.id();
    gone.wait().unwrap();
    let d = std::fs::OpenOptions::new().write(true).open(ns.data_path("stale")).unwrap();
    d.write_all_at(&layout::lease_word(pid, 1, true).to_ne_bytes(), 256).unwrap();
    // A configuration asking for more than /dev/shm holds.
    let cfg = env.file("doctor.toml", "[[ring]]\nname = \"huge\"\nmax_payload = 65536\ncapacity = 1073741824\n");
    let out = Command::new(env!("CARGO_BIN_EXE_helixctl"))
        .args(["--namespace", ns.as_str(), "--json", "doctor", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success(), "a FAIL must give a non-zero exit");
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let checks = j["checks"].as_array().unwrap();
    let find = |check: &str, needle: &str| find_check(&j, check, needle);
    let space = find("/dev/shm space", "huge");
    assert_eq!(space["status"], "fail");
    assert!(space["fix"].as_str().unwrap().contains("/dev/shm"));
    assert_eq!(find("ring", "junk")["status"], "fail");
    let st = find("ring writer", "stale");
    assert_eq!(st["status"], "warn");
    assert!(st["detail"].as_str().unwrap().contains(&format!("writer pid {pid} is dead")));
    assert_eq!(find("ring readers", "telemetry")["status"], "ok");
    assert_eq!(find("futex on shared memory", "work")["status"], "ok");
    assert_eq!(find("ring files", "telemetry: data 640")["status"], "ok");
    // Every non-OK check carries its fix.
    assert!(checks.iter().filter(|c| c["status"] != "ok").all(|c| c["fix"].is_string()));
    // A configuration given that cannot be read, or that is for another
    // namespace, is said (before, passed over: the space check said OK
    // with nothing configured checked).
    let other = env.path("other.toml");
    std::fs::write(&other, "namespace = \"elsewhere\"\n").unwrap();
    for (cfg, said) in [(env.path("missing.toml"), "missing.toml"), (other, "is for namespace elsewhere, not")] {
        let (_, out, _) = ctl(ns, &["--json", "doctor", "--config", cfg.to_str().unwrap()]);
        let j: serde_json::Value = serde_json::from_str(&out).unwrap();
        let c = find_check(&j, "helixd configuration", said);
        assert!(c["status"] == "warn" && c["fix"].is_string(), "{c}");
    }
    drop((w, stale));
}

/// The check of `doctor --json` output `j` named `check` whose detail
/// holds `needle`.
fn find_check<'a>(j: &'a serde_json::Value, check: &str, needle: &str) -> &'a serde_json::Value {
    j["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == check && c["detail"].as_str().unwrap().contains(needle))
        .unwrap_or_else(|| panic!("{check} {needle}: {j:#}"))
}

#[test]
fn completions_and_the_man_page_come_from_the_command_definitions() {
    let ns = TestNs::new();
    for shell in ["bash", "zsh", "fish"] {
        let script = ok(&ns, &["completions", shell]);
        for verb in ["list", "stat", "readers", "tail", "metrics", "evict", "doctor"] {
            assert!(script.contains(verb), "{shell} completion lacks {verb}");
        }
    }
    let man = ok(&ns, &["man"]);
    assert!(
        man.starts_with(".ie") && man.contains(".TH helixctl 1") && man.contains("doctor"),
        "{}",
        &man[..200.min(man.len())]
    );
    let (success, _, err) = ctl(&ns, &["completions", "tcsh"]);
    assert!(!success && err.contains("invalid value 'tcsh'"), "{err}");
}

/// A plain HTTP/1.0 GET; returns (status line, body).
fn http_get(addr: &str, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

#[test]
fn metrics_listen_serves_fresh_metrics_over_http() {
    use std::io::BufRead;
    let ns = TestNs::watched("helixctl metrics --listen", Duration::from_secs(60));
    let (_ring, mut w) = setup(&ns, 3);
    let mut child = Reaped::new(
        Command::new(env!("CARGO_BIN_EXE_helixctl"))
            .args(["--namespace", ns.as_str(), "metrics", "--listen", "127.0.0.1:0"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    std::io::BufReader::new(child.0.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr =
        line.trim().strip_prefix("serving metrics on http://").unwrap().strip_suffix("/metrics").unwrap().to_owned();
    let published = |body: &str| {
        let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).unwrap();
        let s = scrape
            .samples
            .into_iter()
            .find(|s| s.metric == "helix_ring_published_total" && s.labels.get("ring") == Some("telemetry"))
            .unwrap();
        match s.value {
            prometheus_parse::Value::Counter(v) => v,
            _ => panic!("not a counter"),
        }
    };
    let (status, body) = http_get(&addr, "/metrics");
    assert!(status.contains("200"), "{status}");
    assert_eq!(published(&body), 3.0);
    // Every scrape reads the rings afresh.
    w.publish(b"more").unwrap();
    assert_eq!(published(&http_get(&addr, "/metrics").1), 4.0);
    assert!(http_get(&addr, "/elsewhere").0.contains("404"));
    // A stray SIGHUP (or USR1, USR2: `pkill -HUP -u helix` to reload every
    // service) does not end it: systemd takes an exit by SIGHUP for a clean
    // one and does not restart the unit. Every thread blocks them (found
    // by review: it died, and the endpoint stayed down).
    let pid = child.0.id();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let status = std::fs::read_to_string(task.unwrap().path().join("status")).unwrap();
        let blocked = status.lines().find_map(|l| l.strip_prefix("SigBlk:")).unwrap().trim();
        let blocked = u64::from_str_radix(blocked, 16).unwrap();
        for sig in [libc::SIGHUP, libc::SIGUSR1, libc::SIGUSR2] {
            assert!(blocked & (1 << (sig - 1)) != 0, "signal {sig} not blocked: {status}");
        }
    }
    common::signal(&child.0, libc::SIGHUP);
    assert!(http_get(&addr, "/metrics").0.contains("200"));
}

#[test]
fn top_without_a_terminal_prints_snapshots_with_rates() {
    let ns = TestNs::new();
    let (ring, _w) = setup(&ns, 3);
    let _r = ring.reader(&ReaderOptions { gating: true, ..ReaderOptions::named("watcher") }).unwrap();
    let out = ok(&ns, &["top", "--iterations", "2", "--interval", "0.2"]);
    let tables: Vec<&str> = out.split("\n\n").collect();
    assert_eq!(tables.len(), 2, "{out}");
    for t in &tables {
        assert!(t.starts_with("RING") && t.contains("telemetry") && t.contains("junk") && t.contains("CORRUPT"), "{t}");
        // Its readers as `helixctl readers` shows them: # NAME PID ALIVE GATING ...
        let watcher = |l: &str| {
            let cells: Vec<&str> = l.split_whitespace().collect();
            (cells.get(1), cells.get(4)) == (Some(&"watcher"), Some(&"yes"))
        };
        assert!(t.lines().any(watcher), "{t}");
    }
    // The first snapshot has no rate yet; the second has one (0 here).
    let rate =
        |t: &str| t.lines().find(|l| l.starts_with("telemetry")).unwrap().split_whitespace().nth(3).unwrap().to_owned();
    assert_eq!(rate(tables[0]), "-");
    assert_eq!(rate(tables[1]), "0");
}

#[test]
fn a_user_outside_the_rings_group_gets_a_permission_error_naming_the_file() {
    // Root reads any file; the check needs another user.
    let ns = TestNs::new();
    if !nobody_runs_helixctl() {
        return;
    }
    let opts = RingOptions { capacity: 64, max_payload: 16, mode: 0o600, ..Default::default() };
    let _ring = Ring::create(&ns, "private", &opts).unwrap();
    let out = as_nobody(&ns, &["stat", "private"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("permission denied opening /dev/shm/") && err.contains(".private"), "{err}");
}

/// Write access to a ring's reader table (any member of its group has it)
/// must not let one user evict another's live reader: `--force` is for the
/// reader's own user and root.
#[test]
fn evict_force_of_another_users_live_reader_is_refused() {
    let ns = TestNs::new();
    if !nobody_runs_helixctl() {
        return;
    }
    // Open to everyone, as a ring shared with a group is to its members.
    let opts = RingOptions { capacity: 64, max_payload: 16, mode: 0o666, policy: Policy::Block, ..Default::default() };
    let ring = Ring::create(&ns, "shared", &opts).unwrap();
    let ledger = ring.reader(&ReaderOptions { gating: true, ..ReaderOptions::named("root-ledger") }).unwrap();
    let out = as_nobody(&ns, &["evict", "shared", "root-ledger", "--force"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "uid 65534 evicted root's live reader: {err}");
    assert!(err.contains("belongs to uid 0, not to you (uid 65534)"), "{err}");
    assert_eq!(ring.stats().readers.len(), 1, "the entry is still there");
    assert!(ledger.is_gating());
    // Its own user may.
    ok(&ns, &["evict", "shared", "root-ledger", "--force"]);
    assert!(ring.stats().readers.is_empty());
}

/// A member of a ring's group may read a ring of mode 0640 (the packaged
/// `control.log`) and not attach it (attaching opens the control file
/// read-write): `list` shows it NO ACCESS and `doctor` says it did not
/// check it. Before, they called it CORRUPT, and doctor failed with
/// `helixctl rm` for its fix.
#[test]
fn a_ring_a_group_member_may_read_but_not_attach_is_not_called_corrupt() {
    let ns = TestNs::new();
    if !nobody_runs_helixctl() {
        return;
    }
    let opts = RingOptions { capacity: 64, max_payload: 16, mode: 0o640, group: Some(65534), ..Default::default() };
    let _ring = Ring::create(&ns, "audited", &opts).unwrap();
    let out = as_nobody(&ns, &["list", "--sample", "0"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let row = text.lines().find(|l| l.starts_with("audited")).unwrap_or_else(|| panic!("no row: {text}"));
    assert!(row.contains("NO ACCESS") && row.contains("permission denied opening"), "{row}");
    let out = as_nobody(&ns, &["doctor"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let check = text.lines().find(|l| l.contains("audited:")).unwrap_or_else(|| panic!("no check: {text}"));
    assert!(check.contains("WARN") && check.contains("not checked, uid 65534 may not attach it"), "{check}");
    assert!(!text.contains("helixctl rm audited"), "{text}");
}

/// helixctl run as uid and gid 65534 (nobody), no other group, in `ns`.
fn as_nobody(ns: &TestNs, args: &[&str]) -> std::process::Output {
    nobody_helixctl().args(["--namespace", ns.as_str()]).args(args).output().unwrap()
}

fn nobody_helixctl() -> Command {
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups"]).arg(env!("CARGO_BIN_EXE_helixctl"));
    c
}

/// Whether helixctl runs as nobody here: root reads any file, so the tests
/// of what another user may need one. Said, where it does not (setpriv
/// missing, the binary out of that user's reach): the test is skipped.
fn nobody_runs_helixctl() -> bool {
    match nobody_helixctl().arg("--version").output() {
        Ok(out) if out.status.success() => true,
        other => {
            eprintln!("skipped: cannot run helixctl as uid 65534 here: {other:?}");
            false
        }
    }
}

// ---- Trust boundary: what peers and mistakes can make helixctl print or do
// (docs/security.md, "Operator tools").

/// Another ring named as the twin's is not shown as a twin: before, `twin
/// --state-ring telemetry` printed helixd's pid as the twin's, "0 streams"
/// and "no active alarms".
#[test]
fn twin_refuses_a_ring_that_holds_none_of_the_twins_frames() {
    let ns = TestNs::new();
    let (_ring, _w) = setup(&ns, 5);
    let (success, out, err) = ctl(&ns, &["twin", "--state-ring", "telemetry"]);
    assert!(!success && out.is_empty(), "{out}");
    let said = "telemetry: none of its 5 frames is one the twin publishes there (of its kinds and sizes, and twin \
                format version 1; the first is of kind 0x00000001, 40 bytes): not the twin's ring";
    assert!(err.contains(said), "{err}");
}

/// A ring carries f64 values bit-exact: `--json` must not print NaN and the
/// infinities as `null` (item 9), in `tail` nor in `twin`, whose statistics
/// and alarm events come from frames any holder of the lease can write.
#[test]
fn json_prints_nan_and_infinities_as_strings_not_null() {
    use helix::twin::*;
    let ns = TestNs::new();
    let (_ring, mut w) = setup(&ns, 0);
    for value in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1.5] {
        w.publish_kind(KIND_SAMPLE, bytemuck::bytes_of(&Sample { value, ..sample(1) })).unwrap();
    }
    let values: Vec<serde_json::Value> = ok(&ns, &["--json", "tail", "telemetry", "-n", "4"])
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["value"].clone())
        .collect();
    assert_eq!(values, [serde_json::json!("NaN"), "inf".into(), "-inf".into(), 1.5.into()]);

    let opts = RingOptions { capacity: 64, max_payload: 256, ..Default::default() };
    let (state, alarms) =
        (Ring::create(&ns, "twin.state", &opts).unwrap(), Ring::create(&ns, "alarms", &opts).unwrap());
    let (mut sw, mut aw) = (state.writer().unwrap(), alarms.writer().unwrap());
    let marker = Marker { version: 1, instance: 1, round: 1, published_ns: 1, ..bytemuck::Zeroable::zeroed() };
    sw.publish_kind(KIND_SNAPSHOT_BEGIN, bytemuck::bytes_of(&marker)).unwrap();
    let s = StreamState {
        instance: 1,
        stream: 3,
        last: 2.0,
        min: f64::NEG_INFINITY,
        max: f64::INFINITY,
        mean: f64::NAN,
        ..bytemuck::Zeroable::zeroed()
    };
    sw.publish_kind(KIND_STREAM_STATE, bytemuck::bytes_of(&s)).unwrap();
    let raise = AlarmEvent {
        stream: 3,
        rule: AlarmKind::High.number(),
        action: ACTION_RAISE,
        instance: 1,
        event: 1,
        value: f64::NAN,
        limit: f64::INFINITY,
        ..bytemuck::Zeroable::zeroed()
    };
    aw.publish_kind(KIND_ALARM, bytemuck::bytes_of(&raise)).unwrap();
    let j = json(&ns, &["twin", "3"]);
    let st = &j["streams"][0];
    assert_eq!(
        (&st["min"], &st["max"], &st["mean"], &st["last"]),
        (&"-inf".into(), &"inf".into(), &"NaN".into(), &2.0.into()),
        "{j:#}"
    );
    let a = &j["alarms"][0];
    assert_eq!((&a["value"], &a["limit"]), (&"NaN".into(), &"inf".into()), "{j:#}");
}

/// Durations out of range are refused when the command line is parsed,
/// naming the flag, instead of panicking (exit 101) later (item 10).
#[test]
fn durations_out_of_range_are_refused_naming_the_flag() {
    let ns = TestNs::new();
    for (args, flag) in [
        (vec!["list", "--sample", "inf"], "--sample"),
        (vec!["list", "--sample", "1e30"], "--sample"),
        (vec!["list", "--sample", "-1"], "--sample"),
        (vec!["list", "--sample", "NaN"], "--sample"),
        (vec!["list", "--sample", "soon"], "--sample"),
        (vec!["top", "--interval", "1e300"], "--interval"),
        (vec!["top", "--interval", "-inf"], "--interval"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_helixctl"))
            .args(["--namespace", ns.as_str()])
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: a usage error, not a panic: {err}");
        assert!(err.contains(flag) && err.contains("seconds") && !err.contains("panicked"), "{args:?}: {err}");
    }
    ok(&ns, &["list", "--sample", "0"]);
    ok(&ns, &["top", "--iterations", "1", "--interval", "0"]);
}

/// Whether `text` holds a character a terminal would act on: a C0 or C1
/// control (ESC, BEL, CSI...), DEL, or a bidirectional override.
fn acts_on_a_terminal(text: &str) -> bool {
    text.chars()
        .any(|c| (c.is_control() && c != '\n') || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'))
}

/// A reader's name is chosen by whoever attaches: terminal control
/// sequences in it are printed escaped by every text output, never raw
/// (item 12), and JSON escapes them too.
#[test]
fn control_characters_in_reader_names_are_printed_escaped() {
    use std::os::unix::fs::FileExt;
    let ns = TestNs::new();
    let (ring, _w) = setup(&ns, 1);
    // Retitles the terminal, clears it (7-bit and 8-bit CSI), deletes,
    // reverses text.
    let evil = "x\u{1b}]0;pwned\u{7}\u{1b}[2J\u{7f}\u{9b}2J\u{202e}";
    let live = ring.reader(&ReaderOptions::named(evil)).unwrap();
    // The same name on a dead reader's entry, for doctor's dead-reader check.
    let mut gone = Command::new("true").spawn().unwrap();
    let pid = gone.id();
    gone.wait().unwrap();
    let dead = ring.reader(&ReaderOptions::named(evil)).unwrap();
    let entry = (layout::READERS_HEADER_SIZE + dead.index() * layout::READER_ENTRY_SIZE) as u64;
    let f = std::fs::OpenOptions::new().write(true).open(ns.readers_path("telemetry")).unwrap();
    f.write_all_at(&layout::entry_state(pid, layout::ENTRY_ACTIVE).to_ne_bytes(), entry + 128).unwrap();
    f.write_all_at(&pid.to_ne_bytes(), entry + 136).unwrap();
    std::mem::forget(dead);
    let escaped = r"x\u{1b}]0;pwned\u{7}\u{1b}[2J\u{7f}\u{9b}2J\u{202e}";
    // The exposition format escapes the backslashes once more.
    let in_metrics = escaped.replace('\\', r"\\");
    for (args, expected) in [
        (vec!["readers", "telemetry"], escaped),
        (vec!["top", "--iterations", "1"], escaped),
        (vec!["doctor"], escaped),
        (vec!["metrics"], in_metrics.as_str()),
        (vec!["evict", "telemetry", "1"], escaped),
    ] {
        let (_, out, err) = ctl(&ns, &args);
        assert!(!acts_on_a_terminal(&out) && !acts_on_a_terminal(&err), "{args:?} printed it raw: {out:?} {err:?}");
        assert!(out.contains(expected) || err.contains(expected), "{args:?}: {out} {err}");
    }
    let (success, _, err) = ctl(&ns, &["evict", "telemetry", "0"]);
    assert!(!success && !acts_on_a_terminal(&err) && err.contains(escaped), "{err:?}");
    let text = ok(&ns, &["--json", "readers", "telemetry"]);
    assert!(!acts_on_a_terminal(&text), "{text:?}");
    let j: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(j["readers"][0]["name"], evil, "JSON escapes, and keeps the name exact");
    drop(live);
}

/// `tail --follow` on a ring removed and created again under it (helixd's
/// `recreate`, a repair, `rm` and a new start): it follows the new ring
/// from its first frame, saying so on stderr. Before, it waited on the
/// removed ring for good, printing nothing, as if nothing flowed.
#[test]
fn tail_follow_follows_a_ring_created_again() {
    let ns = TestNs::watched("helixctl tail follows a new ring", Duration::from_secs(60));
    let opts = RingOptions { capacity: 16, max_payload: 64, ..Default::default() };
    let ring = Ring::create(&ns, "moved", &opts).unwrap();
    ring.writer().unwrap().publish_kind(7, &[1]).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_helixctl"));
    let err_path = std::env::temp_dir().join(format!("{}.tail-err", ns.as_str()));
    cmd.args(["--namespace", ns.as_str(), "tail", "moved", "--follow", "-n", "3"]);
    cmd.stderr(std::fs::File::create(&err_path).unwrap());
    let mut kid = Kid::spawn(&mut cmd);
    assert_eq!(kid.expect("1 "), "1 kind=7 len=1 01");
    drop(ring);
    Ring::unlink(&ns, "moved").unwrap();
    let ring = Ring::create(&ns, "moved", &opts).unwrap();
    ring.writer().unwrap().publish_kind(8, &[2]).unwrap();
    assert_eq!(kid.expect("1 "), "1 kind=8 len=1 02");
    // Created again with its one reader entry taken: why it cannot be
    // joined is said once, and so is the new ring, while it is tried again
    // at every wait (twice a second); then it is followed.
    drop(ring);
    Ring::unlink(&ns, "moved").unwrap();
    let ring = Ring::create(&ns, "moved", &RingOptions { max_readers: 1, ..opts }).unwrap();
    let held = ring.reader(&ReaderOptions::named("held")).unwrap();
    let stderr = || std::fs::read_to_string(&err_path).unwrap();
    common::eventually("the attach refused", || stderr().contains("cannot join it yet"));
    std::thread::sleep(Duration::from_millis(1200));
    drop(held);
    ring.writer().unwrap().publish_kind(9, &[3]).unwrap();
    assert_eq!(kid.expect("1 "), "1 kind=9 len=1 03");
    kid.finish();
    let err = stderr();
    let _ = std::fs::remove_file(&err_path);
    assert_eq!(err.matches("was created again").count(), 2, "{err}");
    assert_eq!(err.matches("cannot join it yet").count(), 1, "{err}");
}

/// `helixctl rm`: the documented way to remove a ring. It refuses a ring a
/// live process writes unless `--force`, naming the pid, and removes both
/// files.
#[test]
fn rm_refuses_a_live_writer_unless_forced_and_removes_both_files() {
    let ns = TestNs::new();
    let (ring, w) = setup(&ns, 3);
    let me = std::process::id();
    let (success, _, err) = ctl(&ns, &["rm", "telemetry"]);
    assert!(!success && err.contains(&format!("live pid {me}")) && err.contains("--force"), "{err}");
    assert!(ns.data_path("telemetry").exists() && ns.readers_path("telemetry").exists());
    let out = ok(&ns, &["rm", "telemetry", "--force"]);
    assert!(out.contains(&format!("pid {me}")), "a forced removal says who still writes: {out}");
    assert!(!ns.data_path("telemetry").exists() && !ns.readers_path("telemetry").exists());
    drop((w, ring));
    // Without a live writer, no --force is needed.
    let quiet = Ring::create(&ns, "quiet", &RingOptions::default()).unwrap();
    drop(quiet.writer().unwrap());
    let j = json(&ns, &["rm", "quiet"]);
    assert_eq!((j["ring"].as_str(), j["state"].as_str()), (Some("quiet"), Some("complete")), "{j}");
    assert_eq!(j["removed"].as_array().unwrap().len(), 2, "{j}");
    assert!(!ns.data_path("quiet").exists() && !ns.readers_path("quiet").exists());
    let (success, _, err) = ctl(&ns, &["rm", "quiet"]);
    assert!(!success && err.contains("no ring \"quiet\""), "{err}");
}

/// A fan-in ring's name held by what no fan-in ring is (a plain file, or a
/// folder whose `ring` file is a link; anyone may make either in
/// /dev/shm): `rm` cannot tell whether a consumer is live and says to use
/// `--force`, and with it the name is freed. Before, `--force` failed the
/// same way, so the fix `doctor` gives could never work.
#[test]
fn rm_force_removes_a_broken_fan_in_ring_whose_consumer_cannot_be_told() {
    let ns = TestNs::new();
    let plain = fanin::files::dir_path(&ns, "plain");
    std::fs::write(&plain, b"").unwrap();
    let linked = fanin::files::dir_path(&ns, "linked");
    std::fs::create_dir(&linked).unwrap();
    std::os::unix::fs::symlink("/nonexistent", linked.join("ring")).unwrap();
    for (name, path) in [("plain", &plain), ("linked", &linked)] {
        let (success, _, err) = ctl(&ns, &["rm", name]);
        assert!(!success && err.contains("use --force"), "{name}: {err}");
        assert!(path.symlink_metadata().is_ok(), "{name} was removed without --force");
        let (success, _, err) = ctl(&ns, &["rm", name, "--force"]);
        assert!(success && err.contains("removing it (--force)"), "{name}: {err}");
        assert!(path.symlink_metadata().is_err(), "{name} is still there");
    }
}

/// `helixctl rm` removes a lone half of an incomplete ring; a lone data
/// file a live process still writes is refused like a whole ring.
#[test]
fn rm_removes_a_lone_half_of_an_incomplete_ring() {
    let ns = TestNs::new();
    drop(Ring::create(&ns, "lost-data", &RingOptions::default()).unwrap());
    std::fs::remove_file(ns.data_path("lost-data")).unwrap();
    let written = Ring::create(&ns, "lost-readers", &RingOptions::default()).unwrap();
    let w = written.writer().unwrap();
    std::fs::remove_file(ns.readers_path("lost-readers")).unwrap();
    let j = json(&ns, &["rm", "lost-data"]);
    assert_eq!(j["state"], "missing_data", "{j}");
    assert!(!ns.readers_path("lost-data").exists());
    let (success, _, err) = ctl(&ns, &["rm", "lost-readers"]);
    assert!(!success && err.contains(&format!("live pid {}", std::process::id())), "{err}");
    assert!(ns.data_path("lost-readers").exists());
    drop((w, written));
    ok(&ns, &["rm", "lost-readers"]);
    assert!(!ns.data_path("lost-readers").exists());
    assert!(ok(&ns, &["list"]).contains("no rings in namespace"));
}

/// `helixctl doctor` reports orphaned and never-initialised rings with the
/// fix, and `list` shows them by the state of their files.
#[test]
fn doctor_and_list_report_orphaned_and_never_initialised_rings_with_the_fix() {
    let ns = TestNs::new();
    let me = std::process::id();
    drop(Ring::create(&ns, "orphan-readers", &RingOptions::default()).unwrap());
    std::fs::remove_file(ns.data_path("orphan-readers")).unwrap();
    let written = Ring::create(&ns, "orphan-data", &RingOptions::default()).unwrap();
    let _w = written.writer().unwrap();
    std::fs::remove_file(ns.readers_path("orphan-data")).unwrap();
    // A data file an older creator never initialised, a minute ago.
    let f = std::fs::File::create(ns.data_path("never-init")).unwrap();
    f.set_modified(std::time::SystemTime::now() - Duration::from_secs(60)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_helixctl"))
        .args(["--namespace", ns.as_str(), "--json", "doctor"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "a lone data file is a FAIL");
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ring = |name: &str| {
        j["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["check"] == "ring" && c["detail"].as_str().unwrap().starts_with(&format!("{name}:")))
            .unwrap_or_else(|| panic!("no ring check for {name}: {j:#}"))
            .clone()
    };
    let c = ring("orphan-readers");
    assert_eq!(c["status"], "warn", "{c}");
    assert_eq!(c["fix"], "the next create replaces it, or `helixctl rm orphan-readers`", "{c}");
    let c = ring("orphan-data");
    assert_eq!(c["status"], "fail", "{c}");
    assert_eq!(c["fix"], format!("`helixctl rm orphan-data` (refused while writer pid {me} lives) or recreate = true"));
    let c = ring("never-init");
    assert_eq!(c["status"], "warn", "{c}");
    assert!(c["fix"].as_str().unwrap().contains("`helixctl rm never-init`"), "{c}");

    let j = json(&ns, &["list", "--sample", "0"]);
    let state =
        |name: &str| j["rings"].as_array().unwrap().iter().find(|r| r["name"] == name).unwrap()["state"].clone();
    assert_eq!(
        [state("orphan-readers"), state("orphan-data"), state("never-init")],
        ["missing_data", "missing_readers", "unfinished"].map(serde_json::Value::from)
    );
    let table = ok(&ns, &["list", "--sample", "0"]);
    for (name, label) in
        [("orphan-readers", "MISSING DATA"), ("orphan-data", "MISSING @readers"), ("never-init", "NEVER INITIALISED")]
    {
        let line = table.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name}: {table}"));
        assert!(line.contains(label) && !line.contains("CORRUPT"), "{line}");
    }
}

// ---- Fan-in rings (docs/abi.md §11): list, stat, top, metrics, doctor, rm.

/// Re-executed as a child: a producer that sends `FAN_COUNT` records of 40
/// bytes into fan-in ring `FAN_RING`, prints `sent <lane>`, and waits to
/// be killed; or (`consumer`) a consumer that attaches, prints
/// `attached`, and binds lanes (reading nothing) until it is killed.
#[test]
fn child_entry() {
    let Ok(role) = std::env::var(common::ROLE_VAR) else { return };
    let ns = Namespace::from_env().unwrap();
    let ring: String = arg("FAN_RING");
    if role == "consumer" {
        // Binds lanes as producers come, and reads nothing.
        let mut fan = fanin::FanIn::attach(&ns, &ring).unwrap();
        println!("attached");
        loop {
            fan.sweep(|_| {});
            std::thread::sleep(Duration::from_millis(10));
        }
    } else {
        let mut p = fanin::Producer::attach(&ns, &ring).unwrap();
        for n in 0..arg::<u64>("FAN_COUNT") {
            p.try_send(7, &[n as u8; 40]).unwrap();
        }
        println!("sent {}", p.lane());
        // Holding the lane until killed.
        std::thread::sleep(Duration::from_secs(600));
        drop(p);
    }
}

/// A child playing `role` on fan-in ring `ring` (see `child_entry`), once it
/// printed `until`; its pid.
fn fan_child(ns: &TestNs, role: &str, ring: &str, count: u64, until: &str) -> (Kid, String) {
    let mut cmd = child(role, ns);
    cmd.env("FAN_RING", ring).env("FAN_COUNT", count.to_string());
    let mut kid = Kid::spawn(&mut cmd);
    let line = kid.expect(until);
    (kid, line)
}

/// Kills a child with SIGKILL and reaps it.
fn kill(kid: &mut Kid) {
    common::signal(&kid.child.0, libc::SIGKILL);
    kid.child.0.wait().unwrap();
}

/// A small fan-in ring: 4 lanes of 4 KiB, records up to 256 bytes.
fn fan_opts() -> fanin::FanInOptions {
    fanin::FanInOptions { lanes: 4, lane_capacity: 4096, max_payload: 256, ..Default::default() }
}

/// Drains one round of up to `per_lane` records a lane; the records.
fn drain(fan: &mut fanin::FanIn, per_lane: usize) -> usize {
    fan.try_drain(per_lane, |e| {
        if let fanin::Event::Dropped(r) = e {
            panic!("{r}");
        }
    })
}

/// `helixctl metrics` in `ns`, parsed as Prometheus text.
fn scrape(ns: &TestNs) -> prometheus_parse::Scrape {
    let text = ok(ns, &["metrics"]);
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("valid Prometheus text")
}

/// The value of `metric` with these labels in a Prometheus text scrape.
fn metric(scrape: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    let s = scrape
        .samples
        .iter()
        .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .unwrap_or_else(|| panic!("{metric} {labels:?}"));
    match s.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => v,
        _ => panic!("{metric}: not a number"),
    }
}

/// The fan-in ring `cmd` of the views test and its two bound lanes: one
/// held by a producer process killed with records in it, one by a live
/// producer (`live`) whose lane is full after a wait.
struct FanScene {
    fan: fanin::FanIn,
    live: fanin::Producer,
    dead_lane: usize,
    dead_pid: u32,
    live_lane: usize,
}

/// Sets up [`FanScene`] in `ns`, this process its consumer.
fn fan_scene(ns: &TestNs) -> FanScene {
    let mut fan = fanin::FanIn::create(ns, "cmd", &fan_opts()).unwrap();
    let (mut dead, line) = fan_child(ns, "producer", "cmd", 5, "sent ");
    let dead_lane: usize = line.strip_prefix("sent ").unwrap().parse().unwrap();
    let dead_pid = dead.child.0.pid();
    let mut live = fanin::Producer::attach(ns, "cmd").unwrap();
    live.try_send(1, &[1; 100]).unwrap();
    // Binds both lanes and takes two records of each.
    assert_eq!(drain(&mut fan, 2), 3);
    kill(&mut dead);
    // The live lane: filled until a send waits 10 ms for space and fails.
    while live.try_send(1, &[2; 200]).is_ok() {}
    assert!(live.send_timeout(1, &[3; 200], Duration::from_millis(10)).is_err());
    let live_lane = live.lane();
    FanScene { fan, live, dead_lane, dead_pid, live_lane }
}

/// The row of lane `k` in `helixctl stat` or `top` text `t`.
fn lane_row(t: &str, k: usize) -> String {
    t.lines().find(|l| l.split_whitespace().next() == Some(&k.to_string())).unwrap_or_else(|| panic!("{t}")).to_owned()
}

/// `helixctl list`, as JSON and as a table, shows the fan-in ring `cmd`
/// of the views test and its consumer, this process `me`.
fn check_fanin_list(ns: &TestNs, me: u32) {
    let j = json(ns, &["list", "--sample", "0"]);
    let f = &j["fanin"].as_array().unwrap()[0];
    assert_eq!(
        (f["name"].as_str(), f["kind"].as_str(), f["ok"].as_bool()),
        (Some("cmd"), Some("fanin"), Some(true)),
        "{j:#}"
    );
    assert_eq!((f["lanes"].as_u64(), f["bound_lanes"].as_u64(), f["records"].as_u64()), (Some(4), Some(2), Some(3)));
    assert_eq!((f["consumer_pid"].as_u64(), f["consumer_alive"].as_bool()), (Some(me as u64), Some(true)));
    assert!(f["records_per_sec"].is_null() && j["rings"].as_array().unwrap().is_empty(), "{j:#}");
    let table = ok(ns, &["list", "--sample", "0"]);
    assert!(table.starts_with("FAN-IN RING") && !table.contains("no rings"), "{table}");
    assert!(table.lines().any(|l| l.starts_with("cmd") && l.contains(&me.to_string())), "{table}");
}

/// `helixctl stat cmd`, as JSON and as text, shows every lane of `sc`.
fn check_fanin_stat(ns: &TestNs, me: u32, sc: &FanScene) {
    let (dead_lane, dead_pid, live_lane) = (sc.dead_lane, sc.dead_pid, sc.live_lane);
    let s = json(ns, &["stat", "cmd"]);
    assert_eq!((s["kind"].as_str(), s["lanes"].as_array().map(Vec::len)), (Some("fanin"), Some(4)), "{s:#}");
    assert_eq!(
        (s["consumer_alive"].as_bool(), s["records"].as_u64(), s["bytes"].as_u64()),
        (Some(true), Some(3), Some(180))
    );
    assert!(s["rescans"].as_u64().unwrap() >= 1 && s["lane_capacity"].as_u64() == Some(4096), "{s:#}");
    let d = &s["lanes"][dead_lane];
    assert_eq!(
        (d["state"].as_str(), d["pid"].as_u64(), d["producer_alive"].as_bool()),
        (Some("dead"), Some(dead_pid as u64), Some(false)),
        "{d:#}"
    );
    assert_eq!(
        (d["epoch"].as_u64(), d["records"].as_u64(), d["backlog"].as_u64()),
        (Some(1), Some(2), Some(3 * 56)),
        "{d:#}"
    );
    assert_eq!(d["uid"].as_u64(), Some(helix::process::my_uid() as u64));
    let l = &s["lanes"][live_lane];
    assert_eq!(
        (l["state"].as_str(), l["pid"].as_u64(), l["records"].as_u64()),
        (Some("bound"), Some(me as u64), Some(1)),
        "{l:#}"
    );
    assert!(l["full_waits"].as_u64().unwrap() >= 1 && l["wait_ns"].as_u64().unwrap() > 0, "{l:#}");
    assert!(l["fill"].as_f64().unwrap() > 0.9, "{l:#}");
    let free = (0..4).find(|k| ![dead_lane, live_lane].contains(k)).unwrap();
    assert_eq!(s["lanes"][free]["state"], "free");
    let text = ok(ns, &["stat", "cmd"]);
    assert!(text.starts_with("fan-in ring cmd") && text.contains(&format!("consumer       pid {me}")), "{text}");
    assert!(lane_row(&text, dead_lane).contains(&format!("dead   {:>8}", dead_pid)), "{text}");
}

/// `helixctl metrics` shows the fan-in ring and the lanes of `sc`.
fn check_fanin_metrics(ns: &TestNs, sc: &FanScene) {
    let scrape = scrape(ns);
    let (dl, ll) = (sc.dead_lane.to_string(), sc.live_lane.to_string());
    assert_eq!(metric(&scrape, "helix_fanin_up", &[("ring", "cmd")]), 1.0);
    assert_eq!(metric(&scrape, "helix_fanin_consumer_up", &[("ring", "cmd")]), 1.0);
    assert_eq!(metric(&scrape, "helix_fanin_bound_lanes", &[("ring", "cmd")]), 2.0);
    assert_eq!(metric(&scrape, "helix_fanin_lane_records_total", &[("ring", "cmd"), ("lane", &dl)]), 2.0);
    assert_eq!(metric(&scrape, "helix_fanin_lane_producer_up", &[("ring", "cmd"), ("lane", &dl)]), 0.0);
    assert_eq!(metric(&scrape, "helix_fanin_lane_producer_up", &[("ring", "cmd"), ("lane", &ll)]), 1.0);
    assert!(metric(&scrape, "helix_fanin_lane_full_waits_total", &[("ring", "cmd"), ("lane", &ll)]) >= 1.0);
    let info = [("ring", "cmd"), ("lane", dl.as_str()), ("pid", &sc.dead_pid.to_string()), ("epoch", "1")];
    assert_eq!(metric(&scrape, "helix_fanin_lane_producer_info", &info), 1.0);
}

/// A fan-in ring with a live consumer (this process), a live producer (a
/// thread's, here) whose lane is full after a wait, and a producer process
/// killed with records still in its lane: `list`, `stat`, `top` and
/// `metrics` show the ring and every lane, as text and JSON.
#[test]
fn fanin_rings_are_listed_and_their_lanes_shown_by_stat_top_and_metrics() {
    let ns = TestNs::watched("helixctl fan-in views", Duration::from_secs(120));
    let me = std::process::id();
    let sc = fan_scene(&ns);
    check_fanin_list(&ns, me);
    check_fanin_stat(&ns, me, &sc);

    let top = ok(&ns, &["top", "--iterations", "1"]);
    assert!(top.contains("FAN-IN RING") && top.lines().any(|l| l.starts_with("cmd")), "{top}");
    assert!(lane_row(&top, sc.live_lane).contains("bound"), "{top}");

    check_fanin_metrics(&ns, &sc);
    // A producer's `head` is its own to write: a hostile one is shown as a
    // full lane, not as a fill of billions.
    use std::os::unix::fs::FileExt;
    let lane = std::fs::OpenOptions::new()
        .write(true)
        .open(fanin::files::dir_path(&ns, "cmd").join(format!("lane.{}", sc.dead_lane)));
    lane.unwrap().write_all_at(&(1u64 << 62).to_ne_bytes(), 128).unwrap();
    let d = &json(&ns, &["stat", "cmd"])["lanes"][sc.dead_lane];
    assert_eq!((d["backlog"].as_u64(), d["fill"].as_f64()), (Some(4096), Some(1.0)), "{d:#}");
    drop((sc.live, sc.fan));
}

/// What the doctor test planted in its namespace, to find in the report.
struct Leftovers {
    consumer_pid: u32,
    producer_pid: u32,
    /// The lane the dead producer holds.
    lane: usize,
    /// The lane whose file is not a lane.
    planted: usize,
    /// The stray file's name, of terminal controls.
    evil: &'static str,
    /// The creation folder left behind.
    left: std::path::PathBuf,
    /// The namespace the link `link` points into.
    _other: TestNs,
}

/// Plants in `ns` what the doctor test expects the doctor to find: the
/// fan-in ring `cmd` with a dead consumer, a lane held by a dead producer,
/// a planted file that is not a lane, a stray name and a mode that is not
/// the ring's; a creation folder left behind; `link`, a link to another
/// namespace's ring; `junk`, a ring whose file is not a fan-in ring's.
fn plant_leftovers(ns: &TestNs) -> Leftovers {
    use std::os::unix::fs::PermissionsExt;
    drop(fanin::FanIn::create(ns, "cmd", &fan_opts()).unwrap());
    let (mut consumer, _) = fan_child(ns, "consumer", "cmd", 0, "attached");
    let consumer_pid = consumer.child.0.pid();
    let (mut producer, line) = fan_child(ns, "producer", "cmd", 3, "sent ");
    let lane: usize = line.strip_prefix("sent ").unwrap().parse().unwrap();
    let producer_pid = producer.child.0.pid();
    // The consumer binds the lane at its next sweep; then both die.
    let bound = || fanin::FanInView::open(ns, "cmd").unwrap().stats().lanes[lane].bound;
    while !bound() {
        std::thread::sleep(Duration::from_millis(10));
    }
    // The consumer first, so that it never frees the dead producer's lane.
    kill(&mut consumer);
    kill(&mut producer);
    let dir = fanin::files::dir_path(ns, "cmd");
    let planted = (lane + 1) % 4;
    std::fs::write(dir.join(format!("lane.{planted}")), b"not a lane").unwrap();
    let evil = "x\u{1b}]0;pwned\u{7}\u{9b}2J";
    std::fs::write(dir.join(evil), b"").unwrap();
    std::fs::set_permissions(dir.join("bell"), std::fs::Permissions::from_mode(0o666)).unwrap();
    // A creation folder its creator (a reaped process) left behind, under
    // a name anyone may choose after the pid: one the doctor's fix, pasted
    // into a shell, must not run.
    let mut gone = Command::new("true").spawn().unwrap();
    let gone_pid = gone.id();
    gone.wait().unwrap();
    let left =
        std::path::PathBuf::from(format!("/dev/shm/{}.ghost@fanin.{gone_pid}.1 $(touch pwned) '.tmp", ns.as_str()));
    std::fs::create_dir(&left).unwrap();
    // A name taken by a link to another namespace's ring of that name:
    // producers would follow it.
    let other = TestNs::new();
    drop(fanin::FanIn::create(&other, "link", &fan_opts()).unwrap());
    std::os::unix::fs::symlink(fanin::files::dir_path(&other, "link"), fanin::files::dir_path(ns, "link")).unwrap();
    // A ring whose file is not a fan-in ring's.
    let junk = fanin::files::dir_path(ns, "junk");
    std::fs::create_dir(&junk).unwrap();
    std::fs::write(junk.join("ring"), b"garbage").unwrap();
    Leftovers { consumer_pid, producer_pid, lane, planted, evil, left, _other: other }
}

/// `helixctl doctor` on fan-in rings: a dead consumer, a lane held by a
/// dead producer, a planted file that is not a lane, a stray name made of
/// terminal controls (printed escaped), modes that are not one ring's, a
/// creation folder left behind (WARN, with fixes), and a ring whose file
/// does not validate (FAIL: a non-zero exit).
#[test]
fn doctor_checks_fanin_rings_their_lanes_and_leftovers() {
    let ns = TestNs::watched("helixctl doctor fan-in", Duration::from_secs(120));
    let Leftovers { consumer_pid, producer_pid, lane, planted, evil, left, _other } = plant_leftovers(&ns);

    let (success, out, err) = ctl(&ns, &["--json", "doctor"]);
    assert!(!success, "a fan-in ring that does not open is a FAIL: {out} {err}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    let checks = j["checks"].as_array().unwrap();
    let find = |check: &str, needle: &str| find_check(&j, check, needle);
    let c = find("fan-in consumer", "cmd:");
    assert_eq!(c["status"], "warn", "{c}");
    assert!(c["detail"].as_str().unwrap().contains(&format!("consumer pid {consumer_pid} is dead")), "{c}");
    let c = find("fan-in lanes", &format!("lane {lane}: producer pid {producer_pid}"));
    assert_eq!(c["status"], "warn", "{c}");
    assert!(
        c["detail"].as_str().unwrap().contains("is dead") && c["fix"].as_str().unwrap().contains("consumer"),
        "{c}"
    );
    let c = find("fan-in lanes", &format!("lane {planted}: "));
    assert!(c["detail"].as_str().unwrap().contains("is not a lane of this ring: it is 10 bytes"), "{c}");
    assert_eq!(c["status"], "warn", "{c}");
    let c = find("fan-in files", "is not a file of this ring");
    assert_eq!(
        (c["status"].as_str(), c["detail"].as_str().map(|d| d.contains(evil))),
        (Some("warn"), Some(true)),
        "{c}"
    );
    let c = find("fan-in files", "not those of one ring");
    assert_eq!(c["status"], "warn", "{c}");
    let c = find("fan-in ring", &left.display().to_string());
    assert_eq!(c["status"], "warn", "{c}");
    // The fix, run by a shell, removes the folder and runs nothing of its
    // name (before: `rm -r` and the name as it is).
    let scratch = tempfile::tempdir().unwrap();
    let fix = c["fix"].as_str().unwrap();
    assert!(Command::new("sh").args(["-c", fix]).current_dir(&scratch).status().unwrap().success(), "{fix}");
    assert!(!scratch.path().join("pwned").exists() && !left.exists(), "{fix}");
    // The library refuses to open a folder that is a link (whose folder it
    // is cannot be judged through one): the ring check names it.
    let c = find("fan-in ring", "link: ");
    assert_eq!(c["status"], "fail", "{c}");
    assert!(c["detail"].as_str().unwrap().contains("is a symbolic link"), "{c}");
    let c = find("fan-in ring", "junk:");
    assert_eq!(c["status"], "fail", "{c}");
    assert!(c["fix"].as_str().unwrap().contains("`helixctl rm junk`"), "{c}");
    assert!(checks.iter().filter(|c| c["status"] != "ok").all(|c| c["fix"].is_string()));
    // The text output escapes the stray's name.
    let (_, text, _) = ctl(&ns, &["doctor"]);
    assert!(!acts_on_a_terminal(&text), "{text:?}");
    assert!(text.contains(r"x\u{1b}]0;pwned\u{7}\u{9b}2J"), "{text}");
}

/// `helixctl rm` on a fan-in ring: refused while its consumer lives
/// (naming it) unless `--force`; removes the folder and every file in it.
#[test]
fn rm_refuses_a_fanin_ring_whose_consumer_lives_unless_forced() {
    let ns = TestNs::new();
    let me = std::process::id();
    let fan = fanin::FanIn::create(&ns, "cmd", &fan_opts()).unwrap();
    let _p = fanin::Producer::attach(&ns, "cmd").unwrap();
    let dir = fanin::files::dir_path(&ns, "cmd");
    let (success, _, err) = ctl(&ns, &["rm", "cmd"]);
    assert!(!success && err.contains(&format!("its consumer is live pid {me}")) && err.contains("--force"), "{err}");
    assert!(dir.join("ring").exists());
    let out = ok(&ns, &["rm", "cmd", "--force"]);
    assert!(out.contains(&format!("its consumer, pid {me}, is still running")), "{out}");
    assert!(!dir.exists());
    drop((_p, fan));
    // Without a live consumer, no --force is needed.
    drop(fanin::FanIn::create(&ns, "quiet", &fan_opts()).unwrap());
    let j = json(&ns, &["rm", "quiet"]);
    assert_eq!(
        (j["ring"].as_str(), j["kind"].as_str(), j["consumer_pid"].as_u64()),
        (Some("quiet"), Some("fanin"), None),
        "{j}"
    );
    assert!(!fanin::files::dir_path(&ns, "quiet").exists());
    let (success, _, err) = ctl(&ns, &["rm", "quiet"]);
    assert!(!success && err.contains("no ring \"quiet\"") && err.contains("@fanin"), "{err}");
}

/// A ring and a fan-in ring of one name (anyone may make a ring's files, so
/// another user's may stand beside helixd's `control`): `stat` and `rm`
/// refuse to guess, naming both and `--kind`; with it each acts on the one
/// asked for. Before, both took the broadcast ring without a word.
#[test]
fn stat_and_rm_ask_which_ring_when_a_ring_and_a_fanin_ring_share_a_name() {
    let ns = TestNs::new();
    drop(fanin::FanIn::create(&ns, "cmd", &fan_opts()).unwrap());
    // The library refuses to create it beside the fan-in ring; anyone may
    // make the files by other means (here: made elsewhere and moved in).
    let elsewhere = TestNs::new();
    drop(Ring::create(&elsewhere, "cmd", &RingOptions::default()).unwrap());
    std::fs::rename(elsewhere.data_path("cmd"), ns.data_path("cmd")).unwrap();
    std::fs::rename(elsewhere.readers_path("cmd"), ns.readers_path("cmd")).unwrap();
    let dir = fanin::files::dir_path(&ns, "cmd");
    for verb in ["stat", "rm"] {
        let (success, _, err) = ctl(&ns, &[verb, "cmd"]);
        assert!(!success, "{verb}: {err}");
        assert!(err.contains(&ns.data_path("cmd").display().to_string()), "{verb}: {err}");
        assert!(err.contains(&dir.display().to_string()) && err.contains("--kind fanin"), "{verb}: {err}");
    }
    assert!(dir.exists() && ns.data_path("cmd").exists(), "a refused rm removes nothing");
    assert_eq!(json(&ns, &["stat", "cmd", "--kind", "fanin"])["kind"], "fanin");
    assert_eq!(json(&ns, &["stat", "cmd", "--kind", "broadcast"])["name"], "cmd");
    ok(&ns, &["rm", "cmd", "--kind", "broadcast"]);
    assert!(dir.exists() && !ns.data_path("cmd").exists());
    // The name is the fan-in ring's alone now; no --kind is needed.
    assert_eq!(json(&ns, &["stat", "cmd"])["kind"], "fanin");
    ok(&ns, &["rm", "cmd"]);
    assert!(!dir.exists());
    let (success, _, err) = ctl(&ns, &["rm", "cmd", "--kind", "fanin"]);
    assert!(!success && err.contains("no fan-in ring \"cmd\""), "{err}");
}

#[test]
fn a_file_no_one_can_inspect_in_dev_shm_hides_no_ring_from_list_top_doctor_or_rm() {
    // Found by review: anyone may put a link (or a file of another owner)
    // in /dev/shm under a namespace's prefix. The scan of ring files
    // stopped at the first it could not open: `list`, `rm` and `doctor`'s
    // ring checks failed, and `top` showed no rings at all.
    let ns = TestNs::new();
    let (_ring, _w) = setup(&ns, 1);
    std::os::unix::fs::symlink("elsewhere", ns.data_path("zz")).unwrap();
    let v = json(&ns, &["list"]);
    let rows = v["rings"].as_array().unwrap();
    let row = |name: &str| rows.iter().find(|r| r["name"] == name).unwrap_or_else(|| panic!("no {name}: {v}"));
    assert_eq!(row("telemetry")["ok"], true, "{v}");
    assert_eq!((&row("zz")["state"], &row("zz")["ok"]), (&"unreadable".into(), &false.into()), "{v}");
    assert!(ok(&ns, &["list"]).lines().any(|l| l.starts_with("zz") && l.contains("UNREADABLE")));
    let why = row("zz")["error"].as_str().unwrap();
    assert!(why.contains(&ns.data_path("zz").display().to_string()), "the file is named: {why}");
    let top = ok(&ns, &["top", "--iterations", "1", "--interval", "0"]);
    assert!(top.lines().any(|l| l.starts_with("telemetry ")) && top.contains("zz "), "{top}");
    let (_, doctor, _) = ctl(&ns, &["--json", "doctor"]);
    let j: serde_json::Value = serde_json::from_str(&doctor).unwrap();
    assert_eq!(find_check(&j, "ring", "zz: no ring, a file that is not one")["status"], "warn", "{j}");
    assert_eq!(find_check(&j, "ring readers", "telemetry")["status"], "ok", "{j}");
    let removed = ok(&ns, &["rm", "zz"]);
    assert!(removed.contains(&ns.data_path("zz").display().to_string()), "{removed}");
    assert!(ns.data_path("zz").symlink_metadata().is_err(), "the link is removed");
}

#[test]
fn list_shows_every_ring_of_a_namespace_of_six_hundred() {
    // Found by review: `list` held every ring attached over its sample, and
    // a process holds at most 1024 guarded mappings (two a ring): the rings
    // past about 500 showed as CORRUPT.
    let ns = TestNs::watched("list of 600 rings", Duration::from_secs(120));
    let opts = RingOptions { capacity: 16, ..RingOptions::default() };
    for i in 0..600 {
        drop(Ring::create(&ns, &format!("r{i:03}"), &opts).unwrap());
    }
    let v = json(&ns, &["list", "--sample", "0.01"]);
    let rings = v["rings"].as_array().unwrap();
    assert_eq!(rings.len(), 600);
    let bad: Vec<_> = rings.iter().filter(|r| r["ok"] != true).collect();
    assert!(bad.is_empty(), "{} of 600 not ok, the first: {}", bad.len(), bad[0]);
}
