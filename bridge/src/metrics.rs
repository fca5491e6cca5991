//! The bridge's counters in the Prometheus text format, on HTTP at
//! `/metrics` (`--metrics ADDR`). Rates (frames/s, bytes/s) are
//! Prometheus's `rate()` of the totals; the acknowledgement latency is a
//! summary's sum and count.

use std::fmt::Write as _;
use std::sync::Arc;

use anyhow::{anyhow, Result};
use tracing::info;

use crate::counters::Counters;

/// A metric: name, type, help, value.
type Sample = (&'static str, &'static str, &'static str, f64);

/// Every metric of a ring link (export or import).
fn samples(c: &Counters) -> Vec<Sample> {
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
        ("link_restarts_total", "counter", "Times the link failed and was started again", g(&c.restarts)),
        ("link_failing", "gauge", "1 while the link waits to start again after a failure", g(&c.failing)),
    ]
}

/// Every metric of the ledger head mirror.
fn ledger_samples(c: &Counters) -> Vec<Sample> {
    let g = |a: &std::sync::atomic::AtomicU64| Counters::get(a) as f64;
    vec![
        ("ledger_heads_read_total", "counter", "Ledger heads read", g(&c.heads_read)),
        ("ledger_heads_published_total", "counter", "Ledger heads acknowledged by JetStream", g(&c.messages)),
        ("ledger_head_records", "gauge", "Records of the last ledger head acknowledged", g(&c.head_records)),
        ("ledger_anchors_total", "counter", "Acknowledged heads recorded as anchors", g(&c.anchors)),
        ("reconnects_total", "counter", "Connections to NATS made (the first included)", g(&c.reconnects)),
        ("link_restarts_total", "counter", "Times the link failed and was started again", g(&c.restarts)),
        ("link_failing", "gauge", "1 while the link waits to start again after a failure", g(&c.failing)),
    ]
}

/// A link as the metrics show it: `direction` (`export`, `import` or
/// `ledger`), its ring (for the ledger: its folder) and its counters.
#[derive(Clone)]
pub struct Link {
    pub direction: &'static str,
    pub ring: String,
    pub counters: Arc<Counters>,
}

/// The text a scrape gets: each metric once, with a sample per link.
pub fn render(links: &[Link]) -> String {
    let mut families: Vec<(&str, &str, &str, String)> = vec![];
    for l in links {
        let list = if l.direction == "ledger" { ledger_samples(&l.counters) } else { samples(&l.counters) };
        for (name, kind, help, v) in list {
            let i = match families.iter().position(|f| f.0 == name) {
                Some(i) => i,
                None => {
                    families.push((name, kind, help, String::new()));
                    families.len() - 1
                }
            };
            let ring = l.ring.replace('\\', "\\\\").replace('"', "\\\"");
            let _ = writeln!(families[i].3, "helix_bridge_{name}{{direction=\"{}\",ring=\"{ring}\"}} {v}", l.direction);
        }
    }
    let mut out = String::new();
    for (name, kind, help, lines) in families {
        let _ = write!(out, "# HELP helix_bridge_{name} {help}.\n# TYPE helix_bridge_{name} {kind}\n{lines}");
    }
    out
}

/// Serves [`render`] on `addr` from a thread of its own.
pub fn spawn(addr: &str, links: Vec<Link>) -> Result<()> {
    let server = tiny_http::Server::http(addr).map_err(|e| anyhow!("metrics: cannot listen on {addr}: {e}"))?;
    info!("metrics on http://{}/metrics", server.server_addr());
    std::thread::spawn(move || {
        for req in server.incoming_requests() {
            let found = req.url().split('?').next() == Some("/metrics");
            let body = if found { render(&links) } else { "not found: try /metrics\n".into() };
            let _ = req.respond(tiny_http::Response::from_string(body).with_status_code(if found { 200 } else { 404 }));
        }
    });
    Ok(())
}
