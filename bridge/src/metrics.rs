//! The bridge's counters in the Prometheus text format, on HTTP at
//! `/metrics` (`--metrics ADDR`). Rates (frames/s, bytes/s) are
//! Prometheus's `rate()` of the totals; the acknowledgement latency is a
//! summary's sum and count.

use std::fmt::Write as _;
use std::sync::Arc;

use anyhow::{anyhow, Result};
use tracing::info;

use crate::counters::Counters;

/// Every metric: name, type, help, value.
fn samples(c: &Counters) -> Vec<(&'static str, &'static str, &'static str, f64)> {
    let g = |a: &std::sync::atomic::AtomicU64| Counters::get(a) as f64;
    vec![
        ("frames_total", "counter", "Frames acknowledged (export) or written (import)", g(&c.frames)),
        ("bytes_total", "counter", "Payload bytes of those frames", g(&c.bytes)),
        ("messages_total", "counter", "JetStream messages acknowledged (export) or taken (import)", g(&c.messages)),
        ("in_flight", "gauge", "Messages published and not yet acknowledged", g(&c.in_flight)),
        ("ack_latency_seconds_sum", "counter", "Sum of publish-to-acknowledgement times", g(&c.ack_ns_sum) / 1e9),
        ("ack_latency_seconds_count", "counter", "Acknowledgements timed", g(&c.acks)),
        ("reconnects_total", "counter", "Connections to NATS made (the first included)", g(&c.reconnects)),
        (
            "duplicates_total",
            "counter",
            "Frames already written (import), duplicate publishes (export)",
            g(&c.duplicates),
        ),
        ("gaps_total", "counter", "Source sequences lost, sent or written as gaps", g(&c.gaps)),
        ("rejected_total", "counter", "Messages refused as malformed or from another source", g(&c.rejected)),
        ("retries_total", "counter", "Publishes that failed and were sent again from the ring", g(&c.retries)),
    ]
}

/// The text a scrape gets; `direction` is `export` or `import`.
pub fn render(c: &Counters, direction: &str, ring: &str) -> String {
    let mut out = String::new();
    for (name, kind, help, v) in samples(c) {
        let _ = writeln!(out, "# HELP helix_bridge_{name} {help}.\n# TYPE helix_bridge_{name} {kind}");
        let _ = writeln!(out, "helix_bridge_{name}{{direction=\"{direction}\",ring=\"{ring}\"}} {v}");
    }
    out
}

/// Serves [`render`] on `addr` from a thread of its own.
pub fn spawn(addr: &str, counters: Arc<Counters>, direction: &'static str, ring: String) -> Result<()> {
    let server = tiny_http::Server::http(addr).map_err(|e| anyhow!("metrics: cannot listen on {addr}: {e}"))?;
    info!("metrics on http://{}/metrics", server.server_addr());
    std::thread::spawn(move || {
        for req in server.incoming_requests() {
            let found = req.url().split('?').next() == Some("/metrics");
            let body = if found { render(&counters, direction, &ring) } else { "not found: try /metrics\n".into() };
            let _ = req.respond(tiny_http::Response::from_string(body).with_status_code(if found { 200 } else { 404 }));
        }
    });
    Ok(())
}
