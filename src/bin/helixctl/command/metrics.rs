//! `helixctl metrics`: every ring, reader and fan-in lane counter in the Prometheus text
//! exposition format (version 0.0.4), for node_exporter's textfile collector,
//! printed once or served over HTTP.

use std::io::Write as _;

use anyhow::{anyhow, Context, Result};

use super::{fanin, metrics_extra};
use crate::format;
use crate::shared::textfile::{flag, Text};
use helix::fanin::{FanInStats, LaneStats};
use helix::shm::Namespace;
use helix::{Geometry, Owners, ReaderStats, RingStats, RingView};

/// Arguments of `helixctl metrics`.
#[derive(clap::Args)]
pub struct Args {
    /// Serve them on HTTP at /metrics on this address (e.g.
    /// 127.0.0.1:9465) instead of printing them once.
    #[arg(long)]
    listen: Option<String>,
    /// Also serve the services' own counters: every *.prom file in this
    /// folder, as helixd and helix-ledger write them with --metrics-file
    /// (the package's: /run/helix/metrics). Each file is checked before it
    /// is served; a malformed one is left out (helix_textfile_up 0).
    #[arg(long, value_name = "DIR")]
    textfiles: Option<std::path::PathBuf>,
    /// The ring the digital twin publishes its state table on (its
    /// families are given if it and the alarm ring exist).
    #[arg(long, default_value = "twin.state")]
    twin_state_ring: String,
    /// The ring the digital twin publishes alarm events on.
    #[arg(long, default_value = "alarms")]
    twin_alarm_ring: String,
}

/// Prints the metrics once, or serves them with `--listen`. The twin's
/// families are given only from rings one of `owners` owns.
pub fn run(ns: &Namespace, args: &Args, owners: &Owners) -> Result<()> {
    match &args.listen {
        None => {
            print!("{}", render(ns, args, owners)?);
            Ok(())
        }
        Some(addr) => serve(ns, args, owners, addr),
    }
}

/// A metric family: its name, type and help, and how to read its value.
struct Family<F> {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    value: F,
}

/// How a ring's family reads its value.
type RingValue = fn(&RingStats, &Geometry) -> f64;
/// How a reader's family reads its value.
type ReaderValue = fn(&ReaderStats) -> f64;

const fn ring(name: &'static str, kind: &'static str, help: &'static str, value: RingValue) -> Family<RingValue> {
    Family { name, kind, help, value }
}

const fn reader(name: &'static str, kind: &'static str, help: &'static str, value: ReaderValue) -> Family<ReaderValue> {
    Family { name, kind, help, value }
}

const GAUGE: &str = "gauge";
const COUNTER: &str = "counter";

/// A gauge that says whether a ring could be read at all: written for
/// every ring file, 0 for one that does not attach or open.
const fn up(name: &'static str, help: &'static str) -> Family<()> {
    Family { name, kind: GAUGE, help, value: () }
}

/// `helix_ring_up`, also given (0) for a file that does not attach.
const UP: Family<()> =
    up("helix_ring_up", "1 if the ring attaches and validates, 0 if its files are corrupt, foreign or damaged.");

/// The families of an attached ring, in the order they are written.
const RING: [Family<RingValue>; 12] = [
    ring("helix_ring_published_total", COUNTER, "Frames published into the ring.", |s, _| s.published as f64),
    ring("helix_ring_published_bytes_total", COUNTER, "Payload bytes published into the ring.", |s, _| s.bytes as f64),
    ring("helix_ring_capacity_slots", GAUGE, "Slots in the ring.", |_, g| g.capacity as f64),
    ring("helix_ring_slot_bytes", GAUGE, "Bytes per slot.", |_, g| g.slot_size as f64),
    ring("helix_ring_writer_waits_total", COUNTER, "Times the writer waited for gating readers.", |s, _| {
        s.writer_waits as f64
    }),
    ring(
        "helix_ring_writer_wait_seconds_total",
        COUNTER,
        "Seconds the writer spent waiting for gating readers.",
        |s, _| s.writer_wait_ns as f64 / 1e9,
    ),
    ring("helix_ring_demotions_total", COUNTER, "Gating readers demoted for stalling or dying.", |s, _| {
        s.demotions as f64
    }),
    ring("helix_ring_swept_readers_total", COUNTER, "Dead readers' entries freed.", |s, _| s.swept as f64),
    ring("helix_ring_readers", GAUGE, "Registered readers.", |s, _| s.readers.len() as f64),
    ring("helix_ring_parked_readers", GAUGE, "Readers parked on the futex.", |s, _| s.parked as f64),
    ring("helix_ring_writer_up", GAUGE, "1 if a live writer holds the lease.", |s, _| flag(s.lease.alive)),
    ring("helix_ring_writer_takeovers_total", COUNTER, "Writer leases taken over from dead holders.", |s, _| {
        s.lease.takeovers as f64
    }),
];

/// The families of each reader of an attached ring.
const READER: [Family<ReaderValue>; 8] = [
    reader("helix_reader_up", GAUGE, "1 if the reader's process is alive.", |r| flag(r.alive)),
    reader("helix_reader_gating", GAUGE, "1 if the reader gates the writer.", |r| flag(r.gating)),
    reader("helix_reader_lag_frames", GAUGE, "Frames published and not yet consumed by the reader.", |r| r.lag as f64),
    reader("helix_reader_backpressure_ratio", GAUGE, "Reader lag divided by the ring's capacity.", |r| r.backpressure),
    reader("helix_reader_frames_total", COUNTER, "Frames the reader consumed.", |r| r.frames as f64),
    reader("helix_reader_overruns_total", COUNTER, "Overrun events the reader saw.", |r| r.overruns as f64),
    reader("helix_reader_lost_frames_total", COUNTER, "Frames the reader lost to overruns.", |r| r.lost as f64),
    reader("helix_reader_heartbeat_age_seconds", GAUGE, "Seconds since the reader's last heartbeat.", |r| {
        r.heartbeat_age_ns as f64 / 1e9
    }),
];

/// How a fan-in ring's family reads its value.
type FanValue = fn(&FanInStats) -> f64;
/// How a fan-in lane's family reads its value (the ring's lane capacity
/// given for the fill).
type LaneValue = fn(&LaneStats, u64) -> f64;

const fn fan(name: &'static str, kind: &'static str, help: &'static str, value: FanValue) -> Family<FanValue> {
    Family { name, kind, help, value }
}

const fn lane(name: &'static str, kind: &'static str, help: &'static str, value: LaneValue) -> Family<LaneValue> {
    Family { name, kind, help, value }
}

/// `helix_fanin_up`, also given (0) for a fan-in ring that does not open.
const FAN_UP: Family<()> =
    up("helix_fanin_up", "1 if the fan-in ring opens and validates, 0 if its files are corrupt, foreign or damaged.");

/// The families of a fan-in ring that opened.
const FAN: [Family<FanValue>; 9] = [
    fan("helix_fanin_consumer_up", GAUGE, "1 if a live process is the consumer.", |s| flag(s.consumer_alive)),
    fan("helix_fanin_lanes", GAUGE, "Lanes (producers at once).", |s| s.geometry.lanes as f64),
    fan("helix_fanin_bound_lanes", GAUGE, "Lanes a producer holds.", |s| fanin::bound(s) as f64),
    fan("helix_fanin_lane_capacity_bytes", GAUGE, "Record bytes per lane.", |s| s.geometry.lane_capacity as f64),
    fan("helix_fanin_rounds_total", COUNTER, "Drain rounds that delivered records.", |s| s.rounds as f64),
    fan("helix_fanin_sleeps_total", COUNTER, "Times the consumer slept on the doorbell.", |s| s.sleeps as f64),
    fan("helix_fanin_rescans_total", COUNTER, "Times the consumer rescanned the lane files.", |s| s.rescans as f64),
    fan("helix_fanin_faults_total", COUNTER, "Lanes dropped for breaking the protocol.", |s| s.faults as f64),
    fan("helix_fanin_reclaimed_total", COUNTER, "Lanes freed after their producer left or died.", |s| {
        s.reclaimed as f64
    }),
];

/// The families of each lane of a fan-in ring that opened.
const LANE: [Family<LaneValue>; 11] = [
    lane("helix_fanin_lane_bound", GAUGE, "1 if a producer holds the lane.", |l, _| flag(l.bound)),
    lane("helix_fanin_lane_producer_up", GAUGE, "1 if a live process holds the lane's lease.", |l, _| {
        flag(l.producer_alive)
    }),
    lane("helix_fanin_lane_epoch", GAUGE, "Lease epoch of the lane's bound (or last) file.", |l, _| l.epoch as f64),
    lane("helix_fanin_lane_leases_total", COUNTER, "Lane files the lane has had.", |l, _| l.leases as f64),
    lane("helix_fanin_lane_records_total", COUNTER, "Records consumed from the lane.", |l, _| l.records as f64),
    lane("helix_fanin_lane_bytes_total", COUNTER, "Payload bytes consumed from the lane.", |l, _| l.bytes as f64),
    lane("helix_fanin_lane_faults_total", COUNTER, "Lane files of the lane dropped.", |l, _| l.faults as f64),
    lane("helix_fanin_lane_backlog_bytes", GAUGE, "Bytes published and not yet consumed.", |l, _| l.backlog as f64),
    lane("helix_fanin_lane_fill_ratio", GAUGE, "Backlog divided by the lane's capacity.", |l, cap| {
        l.backlog as f64 / cap.max(1) as f64
    }),
    lane(
        "helix_fanin_lane_full_waits_total",
        COUNTER,
        "Times the producer found the lane full (as it reports).",
        |l, _| l.full_waits as f64,
    ),
    lane(
        "helix_fanin_lane_wait_seconds_total",
        COUNTER,
        "Seconds the producer waited for space (as it reports).",
        |l, _| l.wait_ns as f64 / 1e9,
    ),
];

/// `helix_fanin_lane_producer_info`: who holds a bound lane.
const LANE_INFO: Family<()> = Family {
    name: "helix_fanin_lane_producer_info",
    kind: GAUGE,
    help: "1 for each bound lane, labelled with its producer's pid and uid (from the kernel) and lease epoch.",
    value: (),
};

/// A label value as the format asks, `\` and `"` escaped, after what a
/// terminal acts on, a newline included ([`format::printable`]: a reader's
/// name is a peer's choice, and the text may be read on a terminal).
fn esc(v: &str) -> String {
    format::printable(v).replace('\\', "\\\\").replace('"', "\\\"")
}

/// One ring as the exposition shows it: its labels, and its figures if it
/// attached.
struct Ring {
    labels: String,
    attached: Option<(RingStats, Geometry)>,
}

/// The exposition text for every ring in `ns`, the twin's and the
/// services' files (see [`super::metrics_extra`]). A file that does not
/// attach is reported as `helix_ring_up{..} 0`, not skipped.
fn render(ns: &Namespace, args: &Args, owners: &Owners) -> Result<String> {
    let mut out = rings(ns).context("reading /dev/shm")?;
    metrics_extra::twin(ns, (&args.twin_state_ring, &args.twin_alarm_ring), owners, &mut out);
    if let Some(dir) = &args.textfiles {
        metrics_extra::textfiles(dir, &mut out).with_context(|| format!("reading {}", dir.display()))?;
    }
    Ok(out.0)
}

/// The rings' and fan-in rings' families.
fn rings(ns: &Namespace) -> std::io::Result<Text> {
    let nsl = esc(ns.as_str());
    let rings: Vec<Ring> = ns
        .list_rings()?
        .into_iter()
        .map(|name| Ring {
            labels: format!("namespace=\"{nsl}\",ring=\"{}\"", esc(&name)),
            attached: RingView::attach(ns, &name).ok().and_then(|v| {
                let stats = v.stats();
                // Figures read after a file shrank are zeros: the ring is down.
                v.damage().is_none().then(|| (stats, v.geometry().clone()))
            }),
        })
        .collect();
    let mut out = Text::default();
    head(&mut out, &UP);
    for r in &rings {
        sample(&mut out, UP.name, &r.labels, flag(r.attached.is_some()));
    }
    let attached = || rings.iter().filter_map(|r| Some((&r.labels, r.attached.as_ref()?)));
    for f in &RING {
        head(&mut out, f);
        for (labels, (s, g)) in attached() {
            sample(&mut out, f.name, labels, (f.value)(s, g));
        }
    }
    for f in &READER {
        head(&mut out, f);
        for (labels, (s, _)) in attached() {
            for r in &s.readers {
                let labels = format!("{labels},reader=\"{}\",index=\"{}\",pid=\"{}\"", esc(&r.name), r.index, r.pid);
                sample(&mut out, f.name, &labels, (f.value)(r));
            }
        }
    }
    render_fanin(ns, &nsl, &mut out)?;
    Ok(out)
}

/// The fan-in rings' part of the exposition: `helix_fanin_up` for every
/// folder, then the ring's families, then one series per lane (labels
/// ring and lane) for each ring that opened.
fn render_fanin(ns: &Namespace, nsl: &str, out: &mut Text) -> std::io::Result<()> {
    let rings: Vec<(String, Option<FanInStats>)> = helix::fanin::inspect::list(ns)?
        .into_iter()
        .map(|name| (format!("namespace=\"{nsl}\",ring=\"{}\"", esc(&name)), fanin::read(ns, &name).ok().map(|r| r.1)))
        .collect();
    if rings.is_empty() {
        return Ok(());
    }
    head(out, &FAN_UP);
    for (labels, s) in &rings {
        sample(out, FAN_UP.name, labels, flag(s.is_some()));
    }
    let opened = || rings.iter().filter_map(|(labels, s)| Some((labels, s.as_ref()?)));
    for f in &FAN {
        head(out, f);
        for (labels, s) in opened() {
            sample(out, f.name, labels, (f.value)(s));
        }
    }
    for f in &LANE {
        head(out, f);
        for (labels, s) in opened() {
            for l in &s.lanes {
                sample(out, f.name, &format!("{labels},lane=\"{}\"", l.lane), (f.value)(l, s.geometry.lane_capacity));
            }
        }
    }
    head(out, &LANE_INFO);
    for (labels, s) in opened() {
        for l in s.lanes.iter().filter(|l| l.bound) {
            let labels =
                format!("{labels},lane=\"{}\",pid=\"{}\",uid=\"{}\",epoch=\"{}\"", l.lane, l.pid, l.uid, l.epoch);
            sample(out, LANE_INFO.name, &labels, 1.0);
        }
    }
    Ok(())
}

fn head<F>(out: &mut Text, f: &Family<F>) {
    out.family(f.name, f.kind, f.help);
}

fn sample(out: &mut Text, name: &str, labels: &str, v: f64) {
    out.sample(name, labels, v);
}

/// Serves `render(ns, args, owners)` on HTTP at `/metrics` (fresh on every scrape) until
/// the process is stopped; other paths get 404. Prints the bound address.
fn serve(ns: &Namespace, args: &Args, owners: &Owners, addr: &str) -> Result<()> {
    // Before the server's threads start, so that they inherit the mask: a
    // stray SIGHUP (`pkill -HUP -u helix`, to reload every service) ended
    // it, an exit systemd counts as clean and does not restart (found by
    // review). SIGTERM and SIGINT still stop it.
    use crate::shared::signal::{Signal, Signals};
    let _ignored = Signals::block(&[Signal::SIGHUP, Signal::SIGUSR1, Signal::SIGUSR2]).context("blocking signals")?;
    let server = tiny_http::Server::http(addr).map_err(|e| anyhow!("cannot listen on {addr}: {e}"))?;
    let bound = server.server_addr().to_ip().map_or(addr.to_owned(), |a| a.to_string());
    println!("serving metrics on http://{bound}/metrics");
    std::io::stdout().flush()?;
    let text_plain =
        tiny_http::Header::from_bytes(&b"Content-Type"[..], &b"text/plain; version=0.0.4; charset=utf-8"[..])
            .expect("a valid header");
    for request in server.incoming_requests() {
        let response = if request.url() == "/metrics" || request.url().starts_with("/metrics?") {
            match render(ns, args, owners) {
                Ok(body) => tiny_http::Response::from_string(body).with_header(text_plain.clone()),
                Err(e) => tiny_http::Response::from_string(format!("{e:#}\n")).with_status_code(500),
            }
        } else {
            tiny_http::Response::from_string("not found: try /metrics\n").with_status_code(404)
        };
        // A client that hung up is its own problem, not a reason to stop.
        let _ = request.respond(response);
    }
    Ok(())
}
