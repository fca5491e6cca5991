//! The operations kit (issue 21, docs/operations.md): the alert rules
//! pass `promtool check rules` and their `promtool test rules` unit tests;
//! the Grafana dashboard is valid JSON and every metric its queries (and
//! the rules) name is in a live scrape of helixd, helix-ledger and
//! helix-twin through `helixctl metrics --textfiles`; and a real Prometheus
//! on loopback scrapes that endpoint, has the series, and fires
//! HelixGatingReaderDemoted when a gating reader stalls.
//!
//! Needs Debian's `prometheus` package (promtool and the server); without
//! it these tests fail, saying so. Every wait polls against a generous
//! deadline; nothing is decided by timing.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Env, Kid, Notify, Reaped};

fn kit(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging").join(path)
}

/// A program of Debian's `prometheus` package; fails the test if absent.
fn prometheus_tool(name: &str) -> Command {
    let found = Command::new(name).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status();
    assert!(
        found.is_ok_and(|s| s.success()),
        "{name} is needed (apt-get install prometheus: Debian's package has promtool and the server)"
    );
    Command::new(name)
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

/// The alert names of the rules file.
fn alerts() -> Vec<String> {
    let rules = std::fs::read_to_string(kit("prometheus/helix-alerts.yml")).unwrap();
    rules.lines().filter_map(|l| l.trim().strip_prefix("- alert: ")).map(|a| a.trim().to_owned()).collect()
}

#[test]
fn the_alert_rules_pass_promtool_check_and_each_fires_in_a_unit_test() {
    let rules = kit("prometheus/helix-alerts.yml");
    let tests = kit("prometheus/helix-alerts.test.yml");
    run_ok(prometheus_tool("promtool").args(["check", "rules"]).arg(&rules));
    run_ok(prometheus_tool("promtool").args(["test", "rules"]).arg(&tests));
    // Each alert has a test case in which it fires: an `alertname:` line
    // whose `exp_alerts:` is followed by an expected alert.
    let text = std::fs::read_to_string(&tests).unwrap();
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let fired: BTreeSet<&str> = lines
        .iter()
        .enumerate()
        .filter_map(|(i, l)| {
            let name = l.strip_prefix("- alertname: ")?;
            let rest = &lines[i + 1..];
            let exp = rest.iter().position(|l| l.starts_with("exp_alerts:"))?;
            (rest[exp] == "exp_alerts:" && rest.get(exp + 1)?.starts_with("- exp_labels:")).then_some(name)
        })
        .collect();
    let all = alerts();
    assert!(all.len() >= 10, "{all:?}");
    for a in &all {
        assert!(fired.contains(a.as_str()), "no unit test in which {a} fires");
    }
}

/// helixd (a simulator and a UDP source, the control path), helix-ledger
/// and helix-twin in a namespace of their own, the first two writing their
/// metrics files, and `helixctl metrics --listen` serving it all.
struct Stack {
    /// The programs, first, so dropped (stopped) before the namespace is
    /// removed: a helixd still sweeping makes its control ring's doorbell
    /// again in a folder removed under it, and the folder is left.
    _children: Vec<Reaped>,
    _metrics: Kid,
    env: Env,
    /// Where `helixctl metrics` serves, `127.0.0.1:PORT`.
    addr: String,
}

/// helixd's configuration: `telemetry` small, gating, demoting a reader
/// stalled for three seconds (four seconds of samples in the ring before
/// that: the ledger and the twin, slow for a while on a loaded machine,
/// are not demoted).
const HELIXD: &str = r#"status_interval_ms = 500
sweep_interval_ms = 500
[[ring]]
name = "telemetry"
max_payload = 48
capacity = 4096
policy = "block"
stall_timeout_ms = 3000
[[ring]]
name = "lab"
max_payload = 48
capacity = 1024
policy = "overwrite"
[[ring]]
name = "twin.state"
preset = "s"
capacity = 4096
policy = "overwrite"
[[ring]]
name = "alarms"
preset = "s"
capacity = 1024
policy = "block"
stall_timeout_ms = 1000
[[ring]]
name = "control.log"
max_payload = 144
capacity = 1024
policy = "block"
[[ring]]
name = "control.acks"
max_payload = 48
capacity = 1024
policy = "overwrite"
[control]
lanes = 2
audit_reader = ""
[[source]]
kind = "sim"
ring = "telemetry"
streams = 10
rate_hz = 100.0
[[source]]
kind = "udp"
ring = "lab"
bind = "127.0.0.1:0"
"#;

impl Stack {
    fn start(what: &'static str) -> Stack {
        let env = Env::watched(what, Duration::from_secs(150));
        let files = env.path("metrics");
        std::fs::create_dir(&files).unwrap();
        let notify = Notify::new(&env.dir);
        let mut children = Vec::new();
        let mut helixd = env.helixd(&env.file("helix.toml", HELIXD));
        helixd.arg("--metrics-file").arg(files.join("helixd.prom"));
        children.push(notify.ready(helixd));
        let mut ledger = Command::new(env!("CARGO_BIN_EXE_helix-ledger"));
        // Signing is tests/ledger_signing.rs's: no key here.
        ledger.args(["--ring", "telemetry", "--checkpoint-interval-s", "0", "--dir"]).arg(env.path("ledger"));
        ledger.arg("--metrics-file").arg(files.join("helix-ledger.prom"));
        ledger.env("HELIX_NAMESPACE", env.ns.as_str()).env_remove("WATCHDOG_USEC").stderr(Stdio::null());
        children.push(notify.ready(ledger));
        let twin = env.program(env!("CARGO_BIN_EXE_helix-twin"), &env.file("twin.toml", "streams = 16\n"));
        children.push(notify.ready(twin));
        let mut ctl = Command::new(env!("CARGO_BIN_EXE_helixctl"));
        ctl.args(["--namespace", env.ns.as_str(), "metrics", "--listen", "127.0.0.1:0", "--textfiles"]).arg(&files);
        let mut metrics = Kid::spawn(&mut ctl);
        let line = metrics.expect("serving metrics on http://");
        let addr = line.trim_start_matches("serving metrics on http://").trim_end_matches("/metrics").to_owned();
        Stack { env, addr, _children: children, _metrics: metrics }
    }

    fn scrape(&self) -> String {
        let (status, body) = http_get(&self.addr, "/metrics");
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Scrapes until every name of `want` has a sample (the services write
    /// their files at their status refresh), or fails naming those missing.
    fn scrape_until(&self, want: &BTreeSet<String>) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = self.scrape();
            let have = sampled(&text);
            let missing: Vec<&String> = want.iter().filter(|n| !have.contains(n.as_str())).collect();
            if missing.is_empty() {
                return text;
            }
            assert!(Instant::now() < deadline, "the scrape has no sample of {missing:?}:\n{text}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The metric names with a sample in exposition text.
fn sampled(text: &str) -> BTreeSet<&str> {
    text.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.split(['{', ' ']).next()).collect()
}

/// The `helix_` metric names a PromQL expression uses.
fn names_in(expr: &str) -> impl Iterator<Item = String> + '_ {
    expr.match_indices("helix_").filter_map(move |(i, _)| {
        let before = expr[..i].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            return None;
        }
        let end = expr[i..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).map_or(expr.len(), |e| i + e);
        Some(expr[i..end].to_owned())
    })
}

/// Every `expr` of the dashboard's panels.
fn dashboard_queries() -> Vec<String> {
    let text = std::fs::read_to_string(kit("grafana/helix-dashboard.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is valid JSON");
    assert!(dash["title"].is_string() && dash["uid"].is_string(), "a dashboard has a title and a uid");
    let panels = dash["panels"].as_array().expect("panels");
    let queries: Vec<String> = panels
        .iter()
        .filter_map(|p| p["targets"].as_array())
        .flatten()
        .map(|t| t["expr"].as_str().expect("each target has an expr").to_owned())
        .collect();
    assert!(queries.len() >= 20, "{} queries", queries.len());
    queries
}

#[test]
fn the_dashboard_and_the_rules_name_only_metrics_of_a_live_scrape() {
    let stack = Stack::start("ops kit: dashboard names");
    let queries = dashboard_queries();
    let rules = std::fs::read_to_string(kit("prometheus/helix-alerts.yml")).unwrap();
    let exprs = rules.lines().filter_map(|l| l.trim().strip_prefix("expr: ")).map(str::to_owned);
    let want: BTreeSet<String> =
        queries.into_iter().chain(exprs).flat_map(|q| names_in(&q).collect::<Vec<_>>()).collect();
    assert!(want.contains("helix_ledger_anchored_head_timestamp_seconds"), "{want:?}");
    // The newest anchor's time is given once there is an anchor.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !stack.scrape().contains("helix_ledger_records_total{} ") {
        assert!(Instant::now() < deadline, "the ledger wrote no metrics file");
        std::thread::sleep(Duration::from_millis(200));
    }
    run_ok(Command::new(env!("CARGO_BIN_EXE_helix-ledger")).arg("anchor").arg(stack.env.path("ledger")));
    let text = stack.scrape_until(&want);
    // And the scrape is one Prometheus' own parser takes (promtool).
    let mut check = prometheus_tool("promtool").args(["check", "metrics"]).stdin(Stdio::piped()).spawn().unwrap();
    check.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let status = check.wait().unwrap();
    assert!(status.success(), "promtool check metrics refused the scrape:\n{text}");
}

/// A GET on `addr` (HTTP/1.0, the whole answer): its status and body.
fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, body.to_owned())
}

/// A real Prometheus on loopback (a free port, its own data folder in the
/// test's scratch folder), scraping `target` and evaluating the rules every
/// second.
fn prometheus(env: &Env, target: &str) -> (Reaped, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = env.path("prometheus.yml");
    let rules = kit("prometheus/helix-alerts.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nrule_files: [\"{}\"]\n\
             scrape_configs:\n  - job_name: helix\n    static_configs: [{{targets: [\"{target}\"]}}]\n",
            rules.display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(env.path("prometheus.log")).unwrap();
    let child = prometheus_tool("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", env.path("tsdb").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    (Reaped::new(child), format!("127.0.0.1:{port}"))
}

/// Polls Prometheus' API at `path` until `done` holds of its `data`, or
/// fails with `what` and the last answer (and Prometheus' log).
fn poll_api(env: &Env, addr: &str, path: &str, what: &str, done: impl Fn(&serde_json::Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut last = String::new();
    loop {
        if let Ok(mut s) = TcpStream::connect(addr) {
            drop(s.flush());
            let (status, body) = http_get(addr, path);
            if status == 200 {
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                if done(&v["data"]) {
                    return;
                }
            }
            last = body;
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(env.path("prometheus.log")).unwrap_or_default();
            panic!("{what}: not within 90 s; last answer of {path}:\n{last}\nPrometheus' log:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `/api/v1/query` of `promql` (only `{}"=,_` and word characters need
/// no escaping beyond these).
fn query_path(promql: &str) -> String {
    let mut q = String::new();
    for b in promql.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' {
            q.push(b as char);
        } else {
            q.push_str(&format!("%{b:02X}"));
        }
    }
    format!("/api/v1/query?query={q}")
}

#[test]
fn a_real_prometheus_has_the_series_and_fires_the_alert_of_a_stalled_gating_reader() {
    let stack = Stack::start("ops kit: live prometheus");
    let (_prom, addr) = prometheus(&stack.env, &stack.addr);
    let ns = stack.env.ns.as_str();
    for series in [
        format!("helix_ring_demotions_total{{namespace=\"{ns}\",ring=\"telemetry\"}}"),
        format!("helix_reader_lag_frames{{namespace=\"{ns}\",ring=\"telemetry\",reader=\"helix-ledger\"}}"),
        "helix_hal_samples_total{ring=\"telemetry\",source=\"sim\"}".to_owned(),
        "helix_hal_bad_datagrams_total{ring=\"lab\",reason=\"bad_magic\"}".to_owned(),
        "helix_ledger_records_total".to_owned(),
        "helix_twin_active_alarms{rule=\"high\"}".to_owned(),
        "helix_textfile_up{file=\"helix-ledger.prom\"}".to_owned(),
    ] {
        let what = format!("the series {series} in Prometheus");
        poll_api(&stack.env, &addr, &query_path(&series), &what, |d| {
            d["result"].as_array().is_some_and(|r| !r.is_empty())
        });
    }
    // Nothing demoted yet (the ledger keeps up)...
    let demoted = "ALERTS{alertname=\"HelixGatingReaderDemoted\",alertstate=\"firing\"}";
    let (_, body) = http_get(&addr, &query_path(demoted));
    assert!(body.contains("\"result\":[]"), "fired before any stall: {body}");
    // ... until a gating reader joins and never reads: the ring fills in
    // about four seconds, the writer waits for it, and after the stall
    // timeout (3 s) demotes it.
    let opts = helix::ReaderOptions {
        name: "stalled".into(),
        gating: true,
        start: helix::Start::Newest,
        wait: helix::WaitStrategy::Park,
    };
    let _stalled = helix::Reader::attach(&stack.env.ns, "telemetry", &opts).unwrap();
    poll_api(&stack.env, &addr, &query_path(demoted), "HelixGatingReaderDemoted firing", |d| {
        d["result"].as_array().is_some_and(|r| r.iter().any(|s| s["metric"]["ring"] == "telemetry"))
    });
    let stat = stack.scrape();
    let line = format!("helix_ring_demotions_total{{namespace=\"{ns}\",ring=\"telemetry\"}} ");
    let demotions: f64 = stat.lines().find_map(|l| l.strip_prefix(&line)).unwrap().parse().unwrap();
    assert!(demotions >= 1.0, "{stat}");
}

/// A metrics file is a peer's output: one that breaks the format, or
/// passes itself off as helixctl's own family, is left out whole (and
/// reported), the rest served, and the scrape stays one Prometheus takes.
#[test]
fn a_malformed_or_impostor_metrics_file_is_left_out_and_the_scrape_stays_valid() {
    // Watched: a FIFO in the folder held the scrape for ever.
    let env = Env::watched("metrics files", Duration::from_secs(60));
    let dir = env.path("metrics");
    std::fs::create_dir(&dir).unwrap();
    let write = |name: &str, text: &str| std::fs::write(dir.join(name), text).unwrap();
    write("good.prom", "# HELP helix_x_total X.\n# TYPE helix_x_total counter\nhelix_x_total{a=\"b\"} 3\n");
    write("bad.prom", "# TYPE helix_y gauge\nhelix_y{a=\"1\"} 1\nhelix_y 1 junk\n");
    write("impostor.prom", "# TYPE helix_ring_up gauge\nhelix_ring_up{ring=\"telemetry\"} 1\n");
    write("torn.prom", "# TYPE helix_z gauge\nhelix_z 1");
    // A family helixctl adds itself, after the files.
    write("up.prom", "# TYPE helix_textfile_up gauge\nhelix_textfile_up{file=\"helixd.prom\"} 1\n");
    // Whoever may write the folder may put a FIFO there.
    assert!(Command::new("mkfifo").arg(dir.join("fifo.prom")).status().unwrap().success());
    write("notes.txt", "not a metrics file\n");
    // A name a terminal acts on is left out, and said escaped.
    write("\u{1b}]0;x.prom", "# TYPE helix_w gauge\nhelix_w 1\n");
    let (ok, out, err) = env.ctl(&["metrics", "--textfiles", dir.to_str().unwrap()]);
    assert!(!out.contains("helix_w") && !(out.clone() + &err).contains('\u{1b}'), "{out}{err}");
    assert!(err.contains(r"\u{1b}]0;x.prom left out: its name holds a character a terminal acts on"), "{err}");
    assert!(ok, "{err}");
    assert!(out.lines().any(|l| l == "helix_x_total{a=\"b\"} 3"), "{out}");
    for gone in ["helix_y", "helix_ring_up{ring=\"telemetry\"}", "helix_z", "not a metrics"] {
        assert!(!out.contains(gone), "{gone} was served:\n{out}");
    }
    let files =
        [("good.prom", 1), ("bad.prom", 0), ("impostor.prom", 0), ("torn.prom", 0), ("up.prom", 0), ("fifo.prom", 0)];
    for (file, up) in files {
        let line = format!("helix_textfile_up{{file=\"{file}\"}} {up}");
        assert!(out.lines().any(|l| l == line), "no {line:?} in:\n{out}");
    }
    assert!(!out.contains("notes.txt"), "{out}");
    assert_eq!(out.matches("# TYPE helix_textfile_up ").count(), 1, "{out}");
    for why in [
        "bad.prom left out: line 3: not a sample",
        "impostor.prom left out: line 1: a family given twice",
        "up.prom left out: line 1: a family given twice",
        "fifo.prom left out: a FIFO, not a regular file: refused",
    ] {
        assert!(err.contains(why), "stderr does not say {why:?}: {err}");
    }
    let mut check = prometheus_tool("promtool").args(["check", "metrics"]).stdin(Stdio::piped()).spawn().unwrap();
    check.stdin.take().unwrap().write_all(out.as_bytes()).unwrap();
    assert!(check.wait().unwrap().success(), "promtool check metrics refused:\n{out}");
}
