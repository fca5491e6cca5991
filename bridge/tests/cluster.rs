//! helix-bridge across a three-node JetStream cluster (replicas 3) on
//! loopback, between two HELIX "hosts" (two ring namespaces): a million
//! frames exported on host A and imported on host B while the exporter,
//! the importer and one nats-server node (in turn) are killed with SIGKILL,
//! ten times each. The destination must hold every source frame once,
//! byte-exact, in order, with no gap at all.

mod support;

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use helix::{Namespace, Policy, Ring, RingOptions};
use support::cluster::Cluster;
use support::{await_progress, destination, joined, kind, payload, register, verify_to, watchdog};

const FRAMES: u64 = 1_000_000;
/// Source ring slots. The exporter's window (64 messages of 512 frames in
/// flight, its defaults) plus the producer's lead over the destination
/// (`LEAD`) stays below it, so the source's writer never needs a slot a
/// killed exporter still held: a dead gating reader is demoted within
/// 50 ms only when the writer waits for it (docs/abi.md §4.10), and then
/// frames could be lost (sent as a gap). Here no gap is allowed.
const SRC_CAPACITY: u64 = 131_072;
const LEAD: u64 = 65_536;
const KILLS_EACH: u64 = 10;

/// One bridge process, started again after each kill; its stderr appended
/// to a log file of its own.
struct Bridge {
    role: &'static str,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
    /// Times it ended on its own (not killed by the test).
    exits: u32,
}

impl Bridge {
    fn start(&mut self) {
        let log = File::options().create(true).append(true).open(&self.log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_helix-bridge"))
            .args(&self.args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting helix-bridge");
        register(child.id());
        self.child = Some(child);
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.start();
    }

    /// Starts it again if it ended on its own (as systemd would), counting.
    fn supervise(&mut self) {
        if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
            self.exits += 1;
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(4).collect();
            eprintln!("{} ended on its own ({status}); starting it again. Its log ends:", self.role);
            for line in tail.into_iter().rev() {
                eprintln!("    {line}");
            }
            self.start();
        }
    }

    /// SIGTERM, a bounded wait, and its log.
    fn stop(&mut self) -> String {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while c.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = c.kill();
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The two hosts' rings, unlinked on drop, and the logs' folder.
struct Hosts {
    a: Namespace,
    b: Namespace,
    dir: PathBuf,
}

impl Drop for Hosts {
    fn drop(&mut self) {
        let _ = Ring::unlink(&self.a, "src");
        let _ = Ring::unlink(&self.b, "dst");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A block ring whose live gating readers are waited for a minute (the
/// default 2 s would demote one a loaded machine holds off the CPU, and
/// lose frames); a dead one is demoted at once all the same.
fn ring(ns: &Namespace, name: &str, capacity: u64) -> Ring {
    let stall_timeout = Duration::from_secs(60);
    let opts =
        RingOptions { capacity, max_payload: 256, policy: Policy::Block, stall_timeout, ..RingOptions::default() };
    Ring::create(ns, name, &opts).unwrap()
}

fn bridge(role: &'static str, hosts: &Hosts, cluster: &Cluster, tag: &str, ns: &Namespace, args: &[&str]) -> Bridge {
    let mut all: Vec<String> = cluster.urls().into_iter().flat_map(|u| ["--server".to_owned(), u]).collect();
    all.extend(
        [
            "--stream",
            &tag.to_uppercase(),
            "--site",
            tag,
            "--replicas",
            "3",
            "--namespace",
            ns.as_str(),
            // A request to a killed node is sent again after 2 s, not the
            // default 10 s: the kills cost the test less waiting.
            "--ack-timeout-ms",
            "2000",
        ]
        .map(String::from),
    );
    all.extend(args.iter().map(|s| s.to_string()));
    let mut b = Bridge { role, args: all, log: hosts.dir.join(format!("{role}.log")), child: None, exits: 0 };
    b.start();
    b
}

/// Waits until the destination reached `target`, supervising the bridges;
/// fails with the tails of the bridges' and the nodes' logs if it does
/// not within the limit.
fn reach(progress: &AtomicU64, target: u64, bridges: &mut [&mut Bridge], cluster: &Cluster, what: &str) {
    // A node killed: the stream elects a leader among the other two, which
    // took 6 to 37 s on an idle machine (the first, with both bridges just
    // restarted, the longest) and more than 90 s in one CI run, beside a
    // build on both cores. The limit only catches a stream that never
    // recovers.
    let (limit, pause) = (Duration::from_secs(240), Duration::from_millis(5));
    let waited = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        await_progress(progress, target, limit, pause, what, || bridges.iter_mut().for_each(|b| b.supervise()))
    }));
    if let Err(failed) = waited {
        for b in bridges.iter() {
            let log = std::fs::read_to_string(&b.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            eprintln!("--- {} (last 30 lines)\n{}", b.role, tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
        }
        eprintln!("{}", cluster.logs_tail());
        std::panic::resume_unwind(failed);
    }
}

/// The two hosts of this test process (tag `tag`): `src` on host A with
/// its writer, `dst` on host B, and the logs' folder.
fn hosts(tag: &str) -> (Hosts, helix::Writer) {
    let hosts = Hosts {
        a: Namespace::new(&format!("{tag}a")).unwrap(),
        b: Namespace::new(&format!("{tag}b")).unwrap(),
        dir: std::env::temp_dir().join(format!("helix-bridge-cluster-logs-{tag}")),
    };
    std::fs::create_dir_all(&hosts.dir).unwrap();
    let writer = ring(&hosts.a, "src", SRC_CAPACITY).writer().unwrap();
    ring(&hosts.b, "dst", 65_536);
    (hosts, writer)
}

/// The producer: publishes every source frame through `writer`, up to
/// `allowed` (raised event by event, so that the kills are spread over the
/// run) and at most `LEAD` ahead of the destination's `progress`.
fn produce(mut writer: helix::Writer, progress: Arc<AtomicU64>, allowed: Arc<AtomicU64>) {
    for seq in 1..=FRAMES {
        let deadline = Instant::now() + Duration::from_secs(120);
        while seq > (progress.load(Ordering::Relaxed) + LEAD).min(allowed.load(Ordering::Relaxed)) {
            assert!(Instant::now() < deadline, "the destination did not move for 120 s");
            thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(writer.publish_kind(kind(seq), &payload(seq)).unwrap(), seq);
    }
}

/// The bridges, the cluster, and what the test waits on: the destination's
/// progress and what the producer is allowed to publish.
struct Run<'a> {
    ex: &'a mut Bridge,
    im: &'a mut Bridge,
    cluster: &'a mut Cluster,
    progress: &'a AtomicU64,
    allowed: &'a AtomicU64,
    /// The stream's name.
    stream: &'a str,
    begun: Instant,
}

impl Run<'_> {
    /// Lets frames flow `LEAD` past `target`, and waits until the
    /// destination reached `target`, supervising the bridges.
    fn reach(&mut self, target: u64, what: &str) {
        self.allowed.store(target + LEAD, Ordering::Relaxed);
        reach(self.progress, target, &mut [&mut *self.ex, &mut *self.im], self.cluster, what);
    }

    /// Event `event` of `events`: once frames reach its share of the run,
    /// kills the exporter, the importer or a node (in turn); with a node
    /// down, waits until 20,000 more frames crossed, then restarts it.
    fn event(&mut self, event: u64, events: u64) {
        // The last event well before the end, so that frames still cross
        // while its node is down.
        let target = (event + 1) * FRAMES / (events + 4);
        // Frames still flow past the target when the kill comes.
        self.reach(target, &format!("event {event}"));
        eprintln!("{:6.1} s: event {event} at source sequence {target}", self.begun.elapsed().as_secs_f64());
        match event % 3 {
            0 => self.ex.kill9(),
            1 => self.im.kill9(),
            _ => {
                let node = (event / 3 % 3) as usize;
                self.cluster.wait_current(self.stream, Duration::from_secs(120));
                eprintln!("{:6.1} s: every node current; killing node {node}", self.begun.elapsed().as_secs_f64());
                self.cluster.kill9(node);
                // With one node of three down, the stream (R3) elects a
                // leader among the other two and frames go on crossing.
                let now = self.progress.load(Ordering::Relaxed);
                self.reach(now + 20_000, &format!("node {node} down"));
                eprintln!("{:6.1} s: 20,000 frames crossed with node {node} down", self.begun.elapsed().as_secs_f64());
                self.cluster.restart(node, Duration::from_secs(60));
                eprintln!("{:6.1} s: node {node} healthy again", self.begun.elapsed().as_secs_f64());
            }
        }
    }
}

/// Prints what the kills cost the bridges (publishes sent again, consumers
/// made again, and why) and a summary of the run.
fn report(begun: Instant, ex: &Bridge, im: &Bridge, cluster: &Cluster, ex_log: &str, im_log: &str) {
    let summary = |log: &str| log.lines().rfind(|l| l.contains("stopped:")).unwrap_or("").to_owned();
    for line in ex_log.lines().filter(|l| l.contains("publishing again")) {
        eprintln!("exporter: {line}");
    }
    for line in im_log.lines().filter(|l| l.contains("consuming again") || l.contains("trying again")) {
        eprintln!("importer: {line}");
    }
    eprintln!(
        "{FRAMES} frames in {:.1} s; exporter ended on its own {} times, importer {} times; stores {} bytes (3 replicas)\n\
         exporter: {}\nimporter: {}",
        begun.elapsed().as_secs_f64(),
        ex.exits,
        im.exits,
        cluster.store_bytes(),
        summary(ex_log),
        summary(im_log)
    );
}

#[test]
fn a_million_frames_cross_a_cluster_under_kill_9() {
    let begun = Instant::now();
    watchdog("a_million_frames_cross_a_cluster_under_kill_9", Duration::from_secs(840));
    let tag = format!("c{}", std::process::id());
    let (hosts, writer) = hosts(&tag);
    let mut cluster = Cluster::start(&tag, Duration::from_secs(60));
    let mut ex = bridge("exporter", &hosts, &cluster, &tag, &hosts.a, &["export", "--ring", "src", "--host", "hosta"]);
    let import = ["import", "--source-host", "hosta", "--source-ring", "src", "--ring", "dst"];
    let mut im = bridge("importer", &hosts, &cluster, &tag, &hosts.b, &import);
    joined(&hosts.a, "src");

    let progress = Arc::new(AtomicU64::new(1));
    let (dst, p) = (destination(&hosts.b, "dst"), progress.clone());
    let verifier = thread::spawn(move || verify_to(dst, FRAMES, Duration::from_secs(780), &p));
    let allowed = Arc::new(AtomicU64::new(0));
    let (p, a) = (progress.clone(), allowed.clone());
    let producer = thread::spawn(move || produce(writer, p, a));

    let events = 3 * KILLS_EACH;
    let stream = tag.to_uppercase();
    let mut run = Run {
        ex: &mut ex,
        im: &mut im,
        cluster: &mut cluster,
        progress: &progress,
        allowed: &allowed,
        stream: &stream,
        begun,
    };
    for event in 0..events {
        run.event(event, events);
    }
    allowed.store(FRAMES, Ordering::Relaxed);
    let seen = verifier.join().unwrap_or_else(|_| {
        panic!("verifier failed\nexporter:\n{}\nimporter:\n{}\n{}", ex.stop(), im.stop(), cluster.logs_tail())
    });
    producer.join().unwrap();
    assert_eq!((seen.frames, seen.gaps), (FRAMES, vec![]), "every frame once, no gap");
    let (ex_log, im_log) = (ex.stop(), im.stop());
    report(begun, &ex, &im, &cluster, &ex_log, &im_log);
    // A bridge ends on its own only on a lasting error: a cluster electing
    // a leader is not one.
    assert_eq!((ex.exits, im.exits), (0, 0), "bridges that ended on their own (exporter, importer)");
    assert!(im_log.contains("gaps 0"), "importer: {im_log}");
    assert!(ex_log.contains("gaps 0"), "exporter: {ex_log}");
}
