//! `helix-bench` end to end with tiny counts: every scenario runs across
//! real processes, reports, and writes valid JSON of the documented shape.
//! No timing is asserted, only that each measurement completes, is
//! reported, and counts what it should.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{signal, stderr_of, Env, Kid, TestNs};
use serde_json::Value;

const TRANSPORTS: [&str; 8] =
    ["helix-spin", "atomic", "helix-spin-then-park", "helix-park", "futex", "pipe", "unix-stream", "unix-dgram"];

/// The CPUs this process may run on (from `Cpus_allowed_list`, e.g. "0-1"
/// or "2,4-5"), in order: the tests pin to these, not to assumed ids.
fn allowed_cpus() -> Vec<usize> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let list = status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).unwrap().trim();
    list.split(',')
        .flat_map(|part| match part.split_once('-') {
            Some((a, b)) => (a.parse().unwrap()..=b.parse().unwrap()).collect::<Vec<usize>>(),
            None => vec![part.parse().unwrap()],
        })
        .collect()
}

/// Reads a `--json` document and checks the common head.
fn document(path: &Path, scenario: &str) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}\n{text}", path.display()));
    assert_eq!(v["scenario"], scenario, "{text}");
    for key in ["cpu", "cores", "kernel"] {
        assert!(!v["machine"][key].is_null(), "machine.{key} missing: {text}");
    }
    assert!(v["command"].as_array().is_some_and(|c| c.len() > 1), "{text}");
    assert!(v["started"].as_str().is_some_and(|s| s.ends_with("UTC")), "{text}");
    v
}

fn summary_ok(s: &Value) {
    for key in ["count", "p50", "p90", "p99", "p999", "p9999", "max"] {
        assert!(s[key].is_u64(), "{key} missing in {s}");
    }
}

/// A test's namespace and scratch folder, for helix-bench.
impl Env {
    /// `name` in the scratch folder, as an argument.
    fn arg(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    /// Runs helix-bench in the test's namespace with the arguments in
    /// `line`, separated by white space; a word `{name}` stands for `name`
    /// in the scratch folder, `{}` for the folder. Its standard output.
    fn run(&self, line: &str) -> String {
        let args: Vec<String> = line
            .split_whitespace()
            .map(|word| match word.strip_prefix('{').and_then(|w| w.strip_suffix('}')) {
                Some("") => self.dir.display().to_string(),
                Some(name) => self.arg(name),
                None => word.to_owned(),
            })
            .collect();
        bench(&self.ns, &args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// Fails unless the scratch folder holds exactly `files` (what the test
    /// asked to be written: nothing else left behind).
    fn assert_only(&self, files: &[&str]) {
        let left: Vec<_> = std::fs::read_dir(&self.dir).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(left, files, "left behind in the scratch folder");
    }

    /// Fails if the test's namespace has ring files left, or the scratch
    /// folder holds other than exactly `files` ([`Env::assert_only`]).
    fn assert_clean(&self, files: &[&str]) {
        self.assert_no_rings_left();
        self.assert_only(files);
    }

    /// Fails if the test's namespace has ring files left.
    fn assert_no_rings_left(&self) {
        let files = self.ns.files();
        assert!(files.is_empty(), "left behind: {files:?}");
    }
}

fn bench(ns: &TestNs, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_helix-bench"))
        .arg("--namespace")
        .arg(ns.as_str())
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{}\n{stdout}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    stdout
}

#[test]
fn pingpong_measures_every_transport_at_every_size_writes_json_and_a_plot() {
    let t = Env::watched("helix-bench pingpong", Duration::from_secs(120));
    let out = t.run("pingpong --sizes 8,64 --iters 200 --warmup 20 --runs 2 --json {pp.json} --plot {pp.svg}");
    for name in TRANSPORTS {
        assert!(out.lines().any(|l| l.starts_with(name)), "{name} missing:\n{out}");
    }
    assert!(out.contains("p50 helix-spin / atomic:") && out.contains("p50 helix-park / futex:"), "{out}");
    t.assert_no_rings_left();

    let v = document(&t.path("pp.json"), "pingpong");
    let r = &v["results"];
    assert_eq!(r["params"]["iters"], 200);
    let sizes = r["sizes"].as_array().unwrap();
    assert_eq!(sizes.iter().map(|s| s["size"].as_u64().unwrap()).collect::<Vec<_>>(), [8, 64]);
    for s in sizes {
        let ts = s["transports"].as_array().unwrap();
        assert_eq!(ts.iter().map(|tr| tr["transport"].as_str().unwrap()).collect::<Vec<_>>(), TRANSPORTS);
        for tr in ts {
            let runs = tr["runs"].as_array().unwrap();
            assert_eq!(runs.len(), 2);
            for m in runs {
                summary_ok(&m["summary"]);
                assert_eq!(m["summary"]["count"], 200);
                assert!(m["curve"].as_array().is_some_and(|c| c.len() > 2 && c[0]["percentile"] == 0.0), "{m}");
            }
            assert!(tr["median_p50_ns"].is_f64());
        }
        let ratios = s["ratios"].as_array().unwrap();
        assert_eq!(ratios.len(), 6);
        assert!(ratios.iter().all(|r| r["per_run"].as_array().unwrap().len() == 2 && r["median"].is_f64()));
    }

    let svg = std::fs::read_to_string(t.path("pp.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{}", &svg[..svg.len().min(200)]);
    for name in TRANSPORTS {
        assert!(
            svg.contains(&format!(">\n{name}\n</text>")) || svg.contains(&format!(">{name}</text>")),
            "{name} not in the plot"
        );
    }
    assert!(svg.contains("percentile") && svg.contains("99%"), "axis labels missing");
}

#[test]
fn stream_sweeps_sizes_batches_and_modes_into_json() {
    let t = Env::watched("helix-bench stream sweep", Duration::from_secs(120));
    t.run(
        "stream --frames 5000 --sizes 8,100 --batches 1,16 --mode gating,non-gating --wait park --capacity 256 \
         --json {s.json}",
    );
    let v = document(&t.path("s.json"), "stream");
    let cases = v["results"]["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 8);
    for c in cases {
        let runs = c["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 1);
        let readers = runs[0]["readers"].as_array().unwrap();
        assert_eq!(readers.len(), 1);
        let r = &readers[0];
        // Every sequence is either read or reported lost.
        assert_eq!(r["frames"].as_u64().unwrap() + r["lost"].as_u64().unwrap(), 5000, "{c}");
        if c["gating"] == true {
            assert_eq!(r["lost"], 0, "{c}");
        }
        assert!(runs[0]["writer_waits"].is_u64() && c["writer_fps"].is_f64() && c["reader_fps"].is_f64());
    }
    t.assert_no_rings_left();
}

#[test]
fn stream_moves_every_frame_to_every_gating_reader() {
    let t = Env::watched("helix-bench stream", Duration::from_secs(120));
    let out = t.run("stream --frames 50000 --readers 2 --gating --wait park --capacity 256 --json {s.json}");
    let v = document(&t.path("s.json"), "stream");
    let readers = v["results"]["cases"][0]["runs"][0]["readers"].as_array().unwrap();
    assert!(readers.len() == 2 && readers.iter().all(|r| r["frames"] == 50000 && r["lost"] == 0), "{v}");
    let readers: Vec<&str> = out.lines().filter(|l| l.trim_start().starts_with("reader ")).collect();
    assert_eq!(readers.len(), 2, "{out}");
    for r in readers {
        assert!(r.contains("50000 frames, 0 lost"), "{r}");
    }
    t.assert_no_rings_left();
}

#[test]
fn fanin_moves_every_record_of_every_producer_process_and_measures_the_round_trip() {
    let t = Env::watched("helix-bench fanin", Duration::from_secs(120));
    let out = t.run(
        "fanin --producers 1,3 --sizes 8,65536 --records 3000 --megabytes 1 --batch 7 --per-lane 5 --wait park \
         --rtt-sizes 64 --iters 100 --warmup 10 --json {f.json}",
    );
    assert!(out.contains("p50 fanin-spin / helix-spin:") && out.contains("p50 fanin-park / pipe:"), "{out}");
    let r = &document(&t.path("f.json"), "fanin")["results"];
    let flows = r["flows"].as_array().unwrap();
    let cases: Vec<(u64, u64, u64)> = flows
        .iter()
        .map(|f| (f["producers"].as_u64().unwrap(), f["size"].as_u64().unwrap(), f["records"].as_u64().unwrap()))
        .collect();
    // 1 MB of 64 KiB records is 15 of them.
    assert_eq!(cases, [(1, 8, 3000), (1, 65536, 15), (3, 8, 3000), (3, 65536, 15)]);
    for f in flows {
        let run = &f["runs"][0];
        let lanes = run["lanes"].as_array().unwrap();
        assert_eq!(lanes.len() as u64, f["producers"].as_u64().unwrap(), "{f}");
        // Every lane delivered exactly its producer's records (each one
        // checked for its length, sequence and first bytes on the way).
        // The fairness window may be empty with so few records (a producer
        // may finish before another starts); its shares are then all 0.
        assert!(lanes.iter().all(|l| l["records"] == f["records"] && l["share"].as_f64().unwrap() >= 0.0), "{f}");
        assert!(lanes.iter().all(|l| l["window_records"].as_u64().unwrap() < l["records"].as_u64().unwrap()), "{f}");
        if f["producers"] == 1 {
            assert!(lanes[0]["share"] == 1.0 || run["window_seconds"] == 0.0, "{f}");
        }
        assert!(f["records_per_sec"].is_f64() && f["mb_per_sec"].is_f64() && f["min_share"].as_f64().unwrap() <= 1.0);
        assert!(run["rounds"].as_u64().unwrap() > 0, "{f}");
    }
    let rt = r["round_trip"].as_array().unwrap();
    let names: Vec<&str> =
        rt[0]["transports"].as_array().unwrap().iter().map(|x| x["transport"].as_str().unwrap()).collect();
    assert_eq!(names, ["fanin-spin", "helix-spin", "fanin-park", "helix-park", "unix-dgram", "pipe"]);
    for x in rt[0]["transports"].as_array().unwrap() {
        assert_eq!(x["runs"][0]["summary"]["count"], 100, "{x}");
    }
    assert_eq!(rt[0]["ratios"].as_array().unwrap().len(), 4);
    t.assert_clean(&["f.json"]);
}

#[test]
fn ledger_measures_the_real_recorder_and_removes_its_files() {
    let t = Env::watched("helix-bench ledger", Duration::from_secs(120));
    let out = t.run(
        "ledger --frames 20000 --sizes 32,1024 --fsync-ms 1,100 --runs 1 --latency-rate 100000 --latency-secs 0.2 \
         --replay-frames 20000 --dir {} --json {ledger.json}",
    );
    let v = document(&t.path("ledger.json"), "ledger");
    std::fs::remove_file(t.path("ledger.json")).unwrap();
    let tp = v["results"]["throughput"].as_array().unwrap();
    assert_eq!(tp.len(), 4);
    for c in tp {
        assert_eq!(c["median"]["frames"], 20000);
        assert!(c["frames_per_sec"].is_f64() && c["mb_per_sec"].is_f64() && c["runs"].as_array().unwrap().len() == 1);
    }
    let s = &v["results"]["signing"];
    assert!(s["ns_per_checkpoint"].as_f64().unwrap() > 0.0 && s["percent"].as_f64().unwrap() > 0.0, "{s}");
    let wl = v["results"]["writer_latency"].as_array().unwrap();
    assert_eq!(wl.iter().map(|w| w["with_ledger"].as_bool().unwrap()).collect::<Vec<_>>(), [false, true]);
    wl.iter().for_each(|w| summary_ok(&w["publish"]));
    for row in ["32 B     1 ms", "32 B   100 ms", "1024 B     1 ms", "1024 B   100 ms"] {
        assert!(out.lines().any(|l| l.trim_start().starts_with(row) && l.contains(" M ")), "{row} missing:\n{out}");
    }
    assert!(out.contains("no reader") && out.contains("gating ledger") && out.contains("added by the ledger"), "{out}");
    let replay = &v["results"]["replay"];
    assert_eq!(replay["runs"][0]["frames"], 20000, "{replay}");
    assert!(replay["frames_per_sec"].as_f64().unwrap() > 0.0, "{replay}");
    let factors: Vec<_> = replay["paced"].as_array().unwrap().iter().map(|p| p["factor"].as_f64().unwrap()).collect();
    assert_eq!(factors, [1.0, 10.0]);
    assert!(out.contains("replay --pace max: ") && out.contains("replay --pace x10: "), "{out}");
    t.assert_no_rings_left();
    assert_eq!(std::fs::read_dir(&t.dir).unwrap().count(), 0, "ledger folders left behind");
}

#[test]
fn bad_arguments_are_one_clear_error() {
    for (args, expected) in [
        (&["pingpong", "--transports", "carrier-pigeon"][..], "unknown transport \"carrier-pigeon\""),
        (&["pingpong", "--sizes", "4"][..], "sizes must be from 8 to 16384 bytes"),
        (&["pingpong", "--sizes", "8", "--plot", "/tmp/x.svg", "--plot-size", "64"][..], "not among --sizes"),
        (&["stream", "--batches", "0"][..], "must be at least 1"),
        (&["fanin", "--sizes", "65537"][..], "sizes must be from 8 to 65536 bytes"),
        (&["fanin", "--producers", "0"][..], "0 producers: from 1 to 256"),
        (&["fanin", "--rtt-sizes", "4"][..], "sizes must be from 8 to 16384 bytes"),
        (&["e2e", "--seconds", "0"][..], "--seconds must be positive"),
        (&["e2e", "--namespace", "helix"][..], "namespace of its own"),
        (&["control", "--commands", "0"][..], "--commands must be at least 1"),
        (&["control", "--namespace", "helix"][..], "namespace of its own"),
        (&["render", "--dir", "/nonexistent-helix", "--out", "/tmp/x.md"][..], "run `helix-bench report` first"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_helix-bench")).args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{args:?}: {err}");
        assert!(err.trim().lines().count() <= 3 && !err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn e2e_runs_helixd_ledger_and_twin_and_verifies_the_ledger() {
    let t = Env::watched("helix-bench e2e", Duration::from_secs(120));
    let cpu = allowed_cpus()[0].to_string();
    let out = t.run(&format!(
        "e2e --streams 100 --rate 100 --seconds 1 --warmup 0.3 --ledger-cpus {cpu} --reader-cpus {cpu} \
         --dir {{}} --json {{e2e.json}}"
    ));
    assert!(out.contains(&format!("helix-ledger, helix-bench on CPU {cpu}")), "{out}");
    assert!(out.contains("ledger: verified"), "{out}");
    let v = document(&t.path("e2e.json"), "e2e");
    let r = &v["results"];
    assert_eq!(r["streams"], 100);
    let c: usize = cpu.parse().unwrap();
    assert_eq!(r["placement"], serde_json::json!({"helixd": [], "ledger": [c], "twin": [], "reader": [c]}));
    assert_eq!(r["twin_poll_ms"], 0, "the twin reads as telemetry comes");
    let readers = r["readers"].as_array().unwrap();
    assert_eq!(
        readers.iter().map(|x| x["name"].as_str().unwrap()).collect::<Vec<_>>(),
        ["helix-bench", "helix-ledger", "helix-twin"]
    );
    for x in readers {
        assert!(x["frames"].is_u64() && x["overruns"].is_u64() && x["lost"].is_u64() && x["frames_per_sec"].is_f64());
        assert!(x["latency_method"].as_str().is_some_and(|m| !m.is_empty()));
    }
    summary_ok(&readers[0]["latency"]);
    summary_ok(&readers[1]["latency"]);
    let cpu: Vec<&str> = r["cpu"].as_array().unwrap().iter().map(|c| c["process"].as_str().unwrap()).collect();
    assert_eq!(cpu, ["helixd", "helix-ledger", "helix-twin", "helix-bench"]);
    // A block ring with a gating ledger is lossless by design.
    let l = &r["ledger"];
    assert_eq!(l["verified"], true, "{l}");
    assert_eq!(l["gaps"], 0, "{l}");
    assert_eq!(l["frames"], l["published"], "{l}");
    assert!(l["hash"].as_str().is_some_and(|h| h.len() == 64), "{l}");
    t.assert_clean(&["e2e.json"]);
}

#[test]
fn control_sends_commands_through_helixd_with_the_ledger_and_twin_and_times_them() {
    let t = Env::watched("helix-bench control", Duration::from_secs(180));
    let out = t.run("control --streams 100 --rate 100 --commands 15 --warmup 0.2 --dir {} --json {c.json}");
    for line in ["round trip, send to answer, waiting spin:", "waiting park:", "send to the first frame under it"] {
        assert!(out.contains(line), "{line} missing: {out}");
    }
    let v = document(&t.path("c.json"), "control");
    let r = &v["results"];
    assert_eq!((r["params"]["streams"].as_u64(), r["params"]["commands"].as_u64()), (Some(100), Some(15)));
    let rt = r["round_trip"].as_array().unwrap();
    assert_eq!(rt.iter().map(|x| x["wait"].as_str().unwrap()).collect::<Vec<_>>(), ["spin", "park"]);
    for x in rt {
        assert_eq!(x["commands"], 15, "{x}");
        summary_ok(&x["latency"]);
        assert_eq!(x["latency"]["count"], 15, "{x}");
    }
    let e = &r["effect"];
    let (measured, skipped) = (e["commands"].as_u64().unwrap(), e["skipped"].as_u64().unwrap());
    assert_eq!(measured + skipped, 15, "{e}");
    assert!(measured > 0, "{e}");
    for key in ["applied", "answered", "steered"] {
        summary_ok(&e[key]);
        assert_eq!(e[key]["count"].as_u64(), Some(measured), "{key}: {e}");
    }
    // Its helixd took commands: the control ring (a folder) is removed too.
    t.assert_clean(&["c.json"]);
}

#[test]
fn report_runs_every_scenario_and_render_writes_the_document() {
    let t = Env::watched("helix-bench report", Duration::from_secs(300));
    // Pinned to two CPUs this process may use: the report then also runs
    // the one-CPU pingpong and the e2e with the ledger apart.
    let cpus = allowed_cpus();
    assert!(cpus.len() >= 2, "the report's pinned scenarios need two CPUs; allowed: {cpus:?}");
    let (a, b) = (cpus[0], cpus[1]);
    let out = Command::new(env!("CARGO_BIN_EXE_helix-bench"))
        .args([
            "report",
            "--quick",
            "--runs",
            "1",
            "--cpus",
            &format!("{a},{b}"),
            "--dir",
            &t.arg("run"),
            "--ledger-dir",
            &t.dir.display().to_string(),
            // helix-bridge is another package, not built for these tests;
            // tools/perf-report builds it and runs the report's bridge step.
            "--without-bridge",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let index: Value = serde_json::from_str(&std::fs::read_to_string(t.path("run/report.json")).unwrap()).unwrap();
    let steps = index["steps"].as_array().unwrap();
    assert_eq!(
        steps.iter().map(|s| s["scenario"].as_str().unwrap()).collect::<Vec<_>>(),
        ["pingpong", "pingpong", "stream", "stream", "fanin", "ledger", "e2e", "e2e", "control", "capacity"]
    );
    let has = |step: &Value, flag: &str, value: &str| {
        step["command"].as_array().unwrap().windows(2).any(|w| w[0] == flag && w[1] == value)
    };
    // The blocking transports again with both processes on the first CPU;
    // the second e2e with the ledger on the last CPU, the rest on the others.
    assert!(has(&steps[1], "--cpus", &format!("{a},{a}")), "{index}");
    assert!(has(&steps[7], "--ledger-cpus", &b.to_string()), "{index}");
    assert!(steps.iter().all(|s| s["error"].is_null()), "{index}");
    t.assert_no_rings_left();
    std::fs::write(t.path("notes.md"), "## Notes\n\nHand-written.\n").unwrap();
    t.run("render --dir {run} --out {PERF.md} --plot {latency.svg} --capacity-plot {capacity.svg} --notes {notes.md}");
    let md = std::fs::read_to_string(t.path("PERF.md")).unwrap();
    for heading in [
        "# HELIX performance",
        "## Targets",
        "## Cross-process round trip",
        "## One-way streaming",
        "## Fan-in: many producer processes into one consumer",
        "## helix-ledger",
        "## End to end",
        "## Capacity",
        "## Commands: the control path",
        "## Notes",
    ] {
        assert!(md.contains(heading), "{heading} missing:\n{md}");
    }
    assert!(md.contains("](latency.svg)") && md.contains("tens of microseconds"), "{md}");
    for placement in [
        "### The blocking transports with both processes on one CPU",
        &format!("### Placement: every process on CPUs {a},{b}"),
        &format!("### Placement: helixd, helix-twin, helix-bench on CPU {a}; helix-ledger on CPU {b}"),
        "**Why the placement matters.**",
    ] {
        assert!(md.contains(placement), "{placement} missing:\n{md}");
    }
    assert!(!md.contains("not measured"), "{md}");
    assert!(md.contains("](capacity.svg)") && md.contains("| streams | published of due |"), "{md}");
    for plot in ["latency.svg", "capacity.svg"] {
        assert!(std::fs::read_to_string(t.path(plot)).unwrap().starts_with("<svg"), "{plot}");
    }
}

#[test]
fn attach_reports_rate_and_ingest_latency_of_a_live_telemetry_ring() {
    use helix::telemetry::{Sample, KIND_SAMPLE};
    use helix::{Ring, RingOptions};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let t = Env::watched("helix-bench attach", Duration::from_secs(60));
    let ring = Ring::create(&t.ns, "telemetry", &RingOptions { capacity: 4096, max_payload: 48, ..Default::default() })
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (ring, stop) = (ring.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut w = ring.writer().unwrap();
            while !stop.load(Ordering::Relaxed) {
                let s = Sample {
                    stream: 1,
                    quality: 0,
                    seq: 0,
                    sample_ns: 0,
                    ingest_ns: helix::process::now_ns(),
                    value: 1.0,
                };
                w.publish_kind(KIND_SAMPLE, bytemuck::bytes_of(&s)).unwrap();
                std::thread::sleep(Duration::from_micros(100));
            }
        })
    };
    let out = t.run("attach telemetry --seconds 0.5 --warmup 0.1 --json {a.json}");
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert!(out.contains("frames: ") && out.contains("ingest-to-reader latency: p50"), "{out}");
    let v = document(&t.path("a.json"), "attach");
    let r = &v["results"];
    assert_eq!(r["ring"], "telemetry");
    assert!(r["frames"].as_u64().unwrap() > 0 && r["frames_per_sec"].is_f64() && r["overruns"].is_u64(), "{v}");
    summary_ok(&r["latency"]);
    assert_eq!(r["latency"]["count"], r["frames"]);
    // It left the ring as it found it: no reader registered.
    assert!(ring.stats().readers.is_empty());
}

#[test]
fn udp_send_sends_valid_datagrams() {
    let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let to = rx.local_addr().unwrap().to_string();
    let ns = TestNs::new();
    let out = bench(&ns, &["udp-send", "--to", &to, "--per-datagram", "5", "--rate", "1000", "--seconds", "0.2"]);
    assert!(out.starts_with("sent "), "{out}");
    let mut buf = [0u8; 65536];
    let n = rx.recv(&mut buf).unwrap();
    assert_eq!(helix::telemetry::datagram::validate(&buf[..n]), Ok(5));
}

#[test]
fn completions_and_the_man_page_come_from_the_command_definitions() {
    let ns = TestNs::new();
    for shell in ["bash", "zsh", "fish"] {
        let script = bench(&ns, &["completions", shell]);
        for verb in ["pingpong", "stream", "attach", "udp-send"] {
            assert!(script.contains(verb), "{shell} completion lacks {verb}");
        }
    }
    let man = bench(&ns, &["man"]);
    assert!(man.starts_with(".ie") && man.contains(".TH helix-bench 1") && man.contains("pingpong"), "{man}");
}

#[test]
fn capacity_runs_e2e_per_stream_count_and_judges_each() {
    let t = Env::watched("helix-bench capacity", Duration::from_secs(180));
    let out = t.run("capacity --streams 200,100 --seconds 1 --warmup 0.3 --ledger-dir {} --json {c.json}");
    assert!(out.contains("## 100 streams") && out.contains("## 200 streams"), "{out}");
    assert!(out.contains("| streams | published of due |"), "{out}");
    let r = &document(&t.path("c.json"), "capacity")["results"];
    let counts = r["counts"].as_array().unwrap();
    // Measured in increasing order, each judged: it meets the targets
    // exactly when no reason says otherwise.
    assert_eq!(counts.iter().map(|c| c["streams"].as_u64().unwrap()).collect::<Vec<_>>(), [100, 200]);
    let mut meeting = vec![];
    for c in counts {
        assert!(c["error"].is_null(), "{c}");
        let (v, f) = (&c["verdict"], &c["figures"]);
        let meets = v["meets"].as_bool().unwrap();
        assert_eq!(meets, v["reasons"].as_array().unwrap().is_empty(), "{v}");
        if meets {
            meeting.push(c["streams"].as_u64().unwrap());
        }
        // The block ring and the gating ledger lose nothing, whatever the timing.
        assert_eq!((f["verified"].as_bool(), f["gaps"].as_u64()), (Some(true), Some(0)), "{f}");
        assert_eq!(f["recorded"], f["published_total"], "{f}");
        assert!(f["published"].as_u64().unwrap() > 0 && f["bytes_per_frame"].as_f64().unwrap() > 40.0, "{f}");
        assert!(f["cpu_ns"]["helixd"].is_f64() && f["reader_p99_ns"].is_u64(), "{f}");
        assert_eq!(c["e2e"]["streams"], c["streams"]);
    }
    assert_eq!(r["largest"].as_u64(), meeting.iter().max().copied(), "{r}");
    assert!(out.contains(r["conclusion"].as_str().unwrap()), "{out}");
    t.assert_clean(&["c.json"]);
}

#[test]
fn soak_reports_each_interval_verifies_the_ledger_and_passes_when_nothing_leaks_or_is_lost() {
    let t = Env::watched("helix-bench soak", Duration::from_secs(120));
    let out = t.run("soak --minutes 0.05 --every 1 --warmup 0.5 --streams 100 --dir {} --json {s.json}");
    for process in ["helixd", "helix-ledger", "helix-twin", "helix-bench"] {
        assert!(out.lines().any(|l| l.trim_start().starts_with(process) && l.contains("RSS")), "{process}:\n{out}");
    }
    let r = &document(&t.path("s.json"), "soak")["results"];
    // Three one-second reports in three seconds, on time; a report more
    // than a second late on a loaded machine leaves two.
    let intervals = r["intervals"].as_array().unwrap().len();
    assert!((2..=3).contains(&intervals), "{r}");
    assert!(out.lines().any(|l| l.starts_with(&format!("[{intervals}] "))) && out.contains("PASS"), "{out}");
    assert_eq!(r["verified"]["ok"], true, "{r}");
    assert_eq!(r["verified"]["frames"], r["published"], "{r}");
    assert_eq!(r["failures"].as_array().unwrap().len(), 0, "{r}");
    let ledger = r["processes"].as_array().unwrap().iter().find(|p| p["name"] == "helix-ledger").unwrap().clone();
    assert_eq!((ledger["gating"].as_bool(), ledger["overruns"].as_u64()), (Some(true), Some(0)), "{ledger}");
    t.assert_clean(&["s.json"]);
}

#[test]
fn an_interrupted_soak_stops_its_programs_and_removes_its_namespace_and_folder() {
    // No anchoring (`helix-ledger anchor` at each report): four processes.
    let args = "soak --minutes 10 --every 0.5 --warmup 0.2 --streams 100 --keep-gib 0 --dir";
    interrupt("helix-bench soak interrupted", args, "[1] ");
}

#[test]
fn programs_started_by_a_helix_bench_killed_with_sigkill_stop_too() {
    let t = Env::watched("helix-bench killed", Duration::from_secs(120));
    let mut kid = Kid::until(
        Command::new(env!("CARGO_BIN_EXE_helix-bench"))
            .args(["--namespace", t.ns.as_str(), "e2e", "--streams", "100", "--seconds", "600", "--warmup", "0.2"])
            .arg("--dir")
            .arg(&t.dir),
        "  all attached",
    );
    let before = programs_in(&t.dir);
    signal(&kid.child.0, libc::SIGKILL);
    kid.child.0.wait().unwrap();
    // helixd, helix-ledger and helix-twin get SIGTERM from the kernel and
    // stop; the watchdog ends the test if they do not.
    let mut left = programs_in(&t.dir);
    while !left.is_empty() {
        std::thread::sleep(Duration::from_millis(20));
        left = programs_in(&t.dir);
    }
    assert_eq!(before.len(), 4, "{before:?}");
}

/// In a test `what` of its own (a watchdog of 120 s), runs `helix-bench
/// ARGS DIR` (DIR the test's folder) until its line that starts with
/// `ready`, interrupts it with SIGINT, and checks that four processes ran
/// in the folder (helix-bench and its three programs), that it said so,
/// stopped every program it started and removed its rings and files; the
/// rest of its output.
fn interrupt(what: &'static str, args: &str, ready: &str) -> String {
    let t = Env::watched(what, Duration::from_secs(120));
    let mut kid = Kid::until(
        Command::new(env!("CARGO_BIN_EXE_helix-bench"))
            .args(["--namespace", t.ns.as_str()])
            .args(args.split_whitespace())
            .arg(&t.dir)
            .stderr(std::process::Stdio::piped()),
        ready,
    );
    // helix-bench and its programs, each named with the scratch folder.
    // Interrupted before anything is asserted: a failing assertion would
    // SIGKILL helix-bench and leave its programs running.
    let before = programs_in(&t.dir);
    signal(&kid.child.0, libc::SIGINT);
    let status = kid.child.0.wait().unwrap();
    let rest = std::io::read_to_string(&mut kid.out).unwrap();
    assert!(!status.success(), "{status}");
    let err = stderr_of(&mut kid.child.0);
    assert!(err.contains("interrupted by SIGINT"), "{err}");
    assert_eq!(programs_in(&t.dir), Vec::<u32>::new(), "programs left running");
    t.assert_clean(&[]);
    assert_eq!(before.len(), 4, "{before:?}");
    rest
}

/// The processes whose command line names something in `dir`.
fn programs_in(dir: &Path) -> Vec<u32> {
    let dir = dir.display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            String::from_utf8_lossy(&cmdline).contains(&dir).then_some(pid)
        })
        .collect()
}

#[test]
fn an_interrupted_e2e_run_stops_its_programs_and_removes_its_namespace_and_folder() {
    let args = "e2e --streams 100 --seconds 600 --warmup 0.2 --dir";
    interrupt("helix-bench e2e interrupted", args, "  all attached");
}

#[test]
fn an_interrupted_capacity_run_ends_its_count_removes_its_files_and_runs_no_more() {
    let args = "capacity --streams 100,200 --seconds 600 --warmup 0.3 --ledger-dir";
    let rest = interrupt("helix-bench capacity interrupted", args, "  all attached");
    assert!(!rest.contains("## 200 streams"), "{rest}");
}
