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
fn bad_arguments_are_one_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_helix-bench"))
        .args(["pingpong", "--transports", "carrier-pigeon"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown transport \"carrier-pigeon\""), "{err}");
}
