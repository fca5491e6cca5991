//! `helix-bench` end to end with tiny counts: every transport and the
//! stream scenario run across real processes and report. No timing is
//! asserted, only that each measurement completes and is reported.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{watchdog, TestNs};

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
fn pingpong_measures_every_transport_and_cleans_up() {
    let _dog = watchdog("helix-bench pingpong", Duration::from_secs(120));
    let ns = TestNs::new();
    let out = bench(&ns, &["pingpong", "--iters", "200", "--warmup", "20"]);
    for t in
        ["helix-spin", "atomic", "helix-spin-then-park", "helix-park", "futex", "pipe", "unix-stream", "unix-dgram"]
    {
        assert!(out.lines().any(|l| l.starts_with(t)), "{t} missing:\n{out}");
    }
    assert!(out.contains("p50 helix-spin / atomic:") && out.contains("p50 helix-park / futex:"), "{out}");
    assert!(ns.files().is_empty(), "left behind: {:?}", ns.files());
}

#[test]
fn stream_moves_every_frame_to_every_gating_reader() {
    let _dog = watchdog("helix-bench stream", Duration::from_secs(120));
    let ns = TestNs::new();
    let out = bench(
        &ns,
        &["stream", "--frames", "50000", "--readers", "2", "--gating", "--wait", "park", "--capacity", "256"],
    );
    let readers: Vec<&str> = out.lines().filter(|l| l.trim_start().starts_with("reader ")).collect();
    assert_eq!(readers.len(), 2, "{out}");
    for r in readers {
        assert!(r.contains("50000 frames, 0 lost"), "{r}");
    }
    assert!(ns.files().is_empty(), "left behind: {:?}", ns.files());
}

#[test]
fn ledger_measures_the_real_recorder_and_removes_its_files() {
    let _dog = watchdog("helix-bench ledger", Duration::from_secs(120));
    let ns = TestNs::new();
    let dir = std::env::temp_dir().join(format!("helix-bench-ledger-test-{}", ns.as_str()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = bench(
        &ns,
        &[
            "ledger",
            "--frames",
            "20000",
            "--sizes",
            "32,1024",
            "--fsync-ms",
            "1,100",
            "--runs",
            "1",
            "--latency-rate",
            "100000",
            "--latency-secs",
            "0.2",
            "--dir",
            dir.to_str().unwrap(),
        ],
    );
    for row in ["32 B     1 ms", "32 B   100 ms", "1024 B     1 ms", "1024 B   100 ms"] {
        assert!(out.lines().any(|l| l.trim_start().starts_with(row) && l.contains(" M ")), "{row} missing:\n{out}");
    }
    assert!(out.contains("no reader") && out.contains("gating ledger") && out.contains("added by the ledger"), "{out}");
    assert!(ns.files().is_empty(), "left behind: {:?}", ns.files());
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "ledger folders left behind");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_arguments_are_one_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_helix-bench"))
        .args(["pingpong", "--transports", "carrier-pigeon"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown transport \"carrier-pigeon\""), "{err}");
}

#[test]
fn attach_reports_rate_and_ingest_latency_of_a_live_telemetry_ring() {
    use helix::telemetry::{Sample, KIND_SAMPLE};
    use helix::{Ring, RingOptions};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let _dog = watchdog("helix-bench attach", Duration::from_secs(60));
    let ns = TestNs::new();
    let ring =
        Ring::create(&ns, "telemetry", &RingOptions { capacity: 4096, max_payload: 48, ..Default::default() }).unwrap();
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
    let out = bench(&ns, &["attach", "telemetry", "--seconds", "0.5", "--warmup", "0.1"]);
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert!(out.contains("frames: ") && out.contains("ingest-to-reader latency: p50"), "{out}");
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
    assert_eq!(helix::hal::udp::validate(&buf[..n]), Ok(5));
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
