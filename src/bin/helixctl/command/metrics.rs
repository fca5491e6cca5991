//! `helixctl metrics`: every ring and reader counter in the Prometheus text
//! exposition format (version 0.0.4), for node_exporter's textfile collector.

use std::fmt::Write as _;

use helix::shm::Namespace;
use helix::RingView;

/// A label value with `\`, `"` and newlines escaped.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    samples: Vec<(String, f64)>,
}

/// The exposition text for every ring in `ns`. A file that does not attach
/// is reported as `helix_ring_up{..} 0`, not skipped.
pub fn render(ns: &Namespace) -> std::io::Result<String> {
    let fam = |name, kind, help| Family { name, kind, help, samples: vec![] };
    let mut up =
        fam("helix_ring_up", "gauge", "1 if the ring attaches and validates, 0 if its files are corrupt or foreign.");
    let mut published = fam("helix_ring_published_total", "counter", "Frames published into the ring.");
    let mut bytes = fam("helix_ring_published_bytes_total", "counter", "Payload bytes published into the ring.");
    let mut capacity = fam("helix_ring_capacity_slots", "gauge", "Slots in the ring.");
    let mut slot = fam("helix_ring_slot_bytes", "gauge", "Bytes per slot.");
    let mut waits = fam("helix_ring_writer_waits_total", "counter", "Times the writer waited for gating readers.");
    let mut wait_s =
        fam("helix_ring_writer_wait_seconds_total", "counter", "Seconds the writer spent waiting for gating readers.");
    let mut demotions = fam("helix_ring_demotions_total", "counter", "Gating readers demoted for stalling or dying.");
    let mut swept = fam("helix_ring_swept_readers_total", "counter", "Dead readers' entries freed.");
    let mut readers = fam("helix_ring_readers", "gauge", "Registered readers.");
    let mut parked = fam("helix_ring_parked_readers", "gauge", "Readers parked on the futex.");
    let mut writer_up = fam("helix_ring_writer_up", "gauge", "1 if a live writer holds the lease.");
    let mut takeovers =
        fam("helix_ring_writer_takeovers_total", "counter", "Writer leases taken over from dead holders.");
    let mut r_up = fam("helix_reader_up", "gauge", "1 if the reader's process is alive.");
    let mut r_gating = fam("helix_reader_gating", "gauge", "1 if the reader gates the writer.");
    let mut r_lag = fam("helix_reader_lag_frames", "gauge", "Frames published and not yet consumed by the reader.");
    let mut r_bp = fam("helix_reader_backpressure_ratio", "gauge", "Reader lag divided by the ring's capacity.");
    let mut r_frames = fam("helix_reader_frames_total", "counter", "Frames the reader consumed.");
    let mut r_overruns = fam("helix_reader_overruns_total", "counter", "Overrun events the reader saw.");
    let mut r_lost = fam("helix_reader_lost_frames_total", "counter", "Frames the reader lost to overruns.");
    let mut r_hb = fam("helix_reader_heartbeat_age_seconds", "gauge", "Seconds since the reader's last heartbeat.");

    let nsl = esc(ns.as_str());
    for name in ns.list_rings()? {
        let ring = format!("namespace=\"{nsl}\",ring=\"{}\"", esc(&name));
        let v = match RingView::attach(ns, &name) {
            Ok(v) => v,
            Err(_) => {
                up.samples.push((ring, 0.0));
                continue;
            }
        };
        let s = v.stats();
        let g = v.geometry();
        up.samples.push((ring.clone(), 1.0));
        published.samples.push((ring.clone(), s.published as f64));
        bytes.samples.push((ring.clone(), s.bytes as f64));
        capacity.samples.push((ring.clone(), g.capacity as f64));
        slot.samples.push((ring.clone(), g.slot_size as f64));
        waits.samples.push((ring.clone(), s.writer_waits as f64));
        wait_s.samples.push((ring.clone(), s.writer_wait_ns as f64 / 1e9));
        demotions.samples.push((ring.clone(), s.demotions as f64));
        swept.samples.push((ring.clone(), s.swept as f64));
        readers.samples.push((ring.clone(), s.readers.len() as f64));
        parked.samples.push((ring.clone(), s.parked as f64));
        writer_up.samples.push((ring.clone(), if s.lease.alive { 1.0 } else { 0.0 }));
        takeovers.samples.push((ring.clone(), s.lease.takeovers as f64));
        for r in &s.readers {
            let l = format!("{ring},reader=\"{}\",index=\"{}\",pid=\"{}\"", esc(&r.name), r.index, r.pid);
            r_up.samples.push((l.clone(), if r.alive { 1.0 } else { 0.0 }));
            r_gating.samples.push((l.clone(), if r.gating { 1.0 } else { 0.0 }));
            r_lag.samples.push((l.clone(), r.lag as f64));
            r_bp.samples.push((l.clone(), r.backpressure));
            r_frames.samples.push((l.clone(), r.frames as f64));
            r_overruns.samples.push((l.clone(), r.overruns as f64));
            r_lost.samples.push((l.clone(), r.lost as f64));
            r_hb.samples.push((l, r.heartbeat_age_ns as f64 / 1e9));
        }
    }
    let mut out = String::new();
    for f in [
        up, published, bytes, capacity, slot, waits, wait_s, demotions, swept, readers, parked, writer_up, takeovers,
        r_up, r_gating, r_lag, r_bp, r_frames, r_overruns, r_lost, r_hb,
    ] {
        let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
        let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind);
        for (labels, v) in f.samples {
            let _ = writeln!(out, "{}{{{labels}}} {v}", f.name);
        }
    }
    Ok(out)
}

/// Serves `render(ns)` on HTTP at `/metrics` (fresh on every scrape) until
/// the process is stopped; other paths get 404. Prints the bound address.
pub fn serve(ns: &Namespace, addr: &str) -> std::io::Result<()> {
    let server =
        tiny_http::Server::http(addr).map_err(|e| std::io::Error::other(format!("cannot listen on {addr}: {e}")))?;
    let bound = server.server_addr().to_ip().map_or(addr.to_owned(), |a| a.to_string());
    println!("serving metrics on http://{bound}/metrics");
    use std::io::Write;
    std::io::stdout().flush()?;
    let text_plain =
        tiny_http::Header::from_bytes(&b"Content-Type"[..], &b"text/plain; version=0.0.4; charset=utf-8"[..])
            .expect("a valid header");
    for request in server.incoming_requests() {
        let response = if request.url() == "/metrics" || request.url().starts_with("/metrics?") {
            match render(ns) {
                Ok(body) => tiny_http::Response::from_string(body).with_header(text_plain.clone()),
                Err(e) => {
                    tiny_http::Response::from_string(format!("cannot read /dev/shm: {e}\n")).with_status_code(500)
                }
            }
        } else {
            tiny_http::Response::from_string("not found: try /metrics\n").with_status_code(404)
        };
        // A client that hung up is its own problem, not a reason to stop.
        let _ = request.respond(response);
    }
    Ok(())
}
