//! Looking at a nats-server from outside, std only: its monitoring port
//! (`/healthz`, `/jsz`) and the size of its store. Shared with
//! helix-bridge's cluster test (bridge/tests/support/cluster.rs includes
//! this file).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

/// The HTTP status of the monitoring port's `GET /healthz` (`"200"` when
/// the node and its JetStream are healthy), if the node answers.
pub fn healthz(port: u16) -> Option<String> {
    get(port, "/healthz").map(|(status, _)| status)
}

/// `GET path` on the monitoring port: the HTTP status and the body, if the
/// node answers.
pub fn get(port: u16, path: &str) -> Option<(String, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.to_owned();
    let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body).to_owned();
    Some((status, body))
}

/// Bytes of the files under `dir`, all the way down (links not followed).
pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            _ => e.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}
