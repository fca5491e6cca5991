//! The child-process type the programs and the tests share
//! (`src/bin/shared/child.rs`), on real processes.

#[path = "../src/bin/shared/child.rs"]
#[allow(dead_code)]
mod child;

use std::process::Command;
use std::time::Duration;

use child::{ChildProcess, Signal};

#[test]
fn stops_waits_with_a_deadline_and_kills_on_drop() {
    let mut sleeper = ChildProcess::spawn("sleep", Command::new("sleep").arg("30")).unwrap();
    assert_eq!(sleeper.wait_timeout(Duration::from_millis(20)).unwrap(), None);
    // `sleep` dies of SIGTERM: stopped, but not successfully.
    let e = sleeper.stop(Duration::from_secs(10)).unwrap_err();
    assert!(e.to_string().starts_with("sleep exited"), "{e}");
    // Reaped: signalling it again does nothing.
    sleeper.signal(Signal::SIGKILL).unwrap();

    let pid = {
        let other = ChildProcess::spawn("sleep", Command::new("sleep").arg("30")).unwrap();
        other.pid()
    };
    // Dropped: killed and reaped, so no such process remains.
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());

    let e = ChildProcess::spawn("nothing", &mut Command::new("/nonexistent/program")).err().unwrap();
    assert!(e.to_string().starts_with("cannot start nothing (/nonexistent/program)"), "{e}");
}

#[test]
fn stop_is_sigterm_then_a_deadline() {
    let dir = tempfile::tempdir().unwrap();
    // A shell running `script` once it has set its trap: it says so in a
    // file, and the test waits for that (a signal before the trap would
    // kill it).
    let shell = |name: &str, trap: &str| {
        let ready = dir.path().join(name);
        let script = format!("trap {trap} TERM; : > '{}'; while :; do sleep 0.01; done", ready.display());
        let child = ChildProcess::spawn("sh", Command::new("sh").args(["-c", &script])).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !ready.exists() {
            assert!(std::time::Instant::now() < deadline, "the shell did not set its trap within 20 s");
            std::thread::sleep(Duration::from_millis(5));
        }
        child
    };
    let mut polite = shell("polite", "'exit 0'");
    assert!(polite.stop(Duration::from_secs(10)).unwrap().success());

    let mut deaf = shell("deaf", "''");
    let e = deaf.stop(Duration::from_millis(100)).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
    assert!(e.to_string().contains("did not stop within 100ms of SIGTERM"), "{e}");
    // Killed and reaped by stop.
    assert!(deaf.try_wait().unwrap().is_some());
}
