//! `helix-bench bridge`: helix-bridge between two HELIX "hosts" (two ring
//! namespaces on this machine) through NATS JetStream on loopback, one
//! server (replicas 1) or a three-node cluster (replicas 3). A writer on
//! host A fills a ring that `helix-bridge export` publishes; `helix-bridge
//! import` writes host B's ring, which a reader here reads. Per replica
//! count and frame size: frames/s flat out (the writer as fast as the
//! gating exporter lets it), the stream's bytes on disk per frame, and the
//! latency from the frame's publish on A to its receipt on B at a paced
//! rate. The bridge's async client stays in helix-bridge: this program only
//! starts the processes.

mod probe;
mod servers;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::{Deserialize, Serialize};

use helix::{Namespace, Policy, ReadError, Reader, ReaderOptions, Ring, RingOptions, RingView, Start};

use super::e2e::programs::Scratch;
use super::list;
use crate::document::{utc_now, JsonArg};
use crate::machine::load_average;
use crate::shared::child::ChildProcess;
use crate::stats::{fmt_ns, histogram, Summary};
use servers::{find, Servers};

/// The bridge's marks in the destination ring (docs/bridge.md): skipped.
const MARK_KINDS: [u32; 2] = [0x4842_0001, 0x4842_0002];

#[derive(Args, Debug, Clone, PartialEq)]
pub struct BridgeArgs {
    /// Frame sizes, bytes (at least 8: the first 8 carry the publish time).
    #[arg(long, value_delimiter = ',', default_values_t = [64usize, 1024])]
    pub sizes: Vec<usize>,
    /// Stream replicas: 1 (one server) and/or 3 (a three-node cluster).
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 3])]
    pub replicas: Vec<usize>,
    /// Frames of the flat-out run, per case.
    #[arg(long, default_value_t = 2_000_000)]
    pub frames: u64,
    /// Frames/s of the paced run the latency is taken from.
    #[arg(long, default_value_t = 100_000)]
    pub rate: u64,
    /// Seconds of the paced run.
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// The helix-bridge program (default: $HELIX_BRIDGE, else next to
    /// helix-bench, else on PATH).
    #[arg(long)]
    pub bridge_bin: Option<PathBuf>,
    /// The nats-server program (default: $HELIX_NATS_SERVER, else next to
    /// helix-bench, else on PATH, else /tmp/natsvenv/bin/nats-server).
    #[arg(long)]
    pub nats_server: Option<PathBuf>,
    #[command(flatten)]
    pub out: JsonArg,
}

impl BridgeArgs {
    /// The command-line flags that give these arguments.
    pub fn to_args(&self) -> Vec<String> {
        let mut v = vec!["--sizes".into(), list(&self.sizes), "--replicas".into(), list(&self.replicas)];
        v.extend(["--frames".into(), self.frames.to_string(), "--rate".into(), self.rate.to_string()]);
        v.extend(["--seconds".into(), self.seconds.to_string()]);
        for (flag, p) in [("--bridge-bin", &self.bridge_bin), ("--nats-server", &self.nats_server)] {
            v.extend(p.iter().flat_map(|p| [flag.to_owned(), p.display().to_string()]));
        }
        v.extend(self.out.to_args());
        v
    }
}

/// One replica count and frame size.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Case {
    pub replicas: usize,
    pub size: usize,
    /// Frames of the flat-out run and its seconds, first publish on A to
    /// last receipt on B.
    pub frames: u64,
    pub seconds: f64,
    pub frames_per_sec: f64,
    /// Payload MB/s (10^6 bytes).
    pub mb_per_sec: f64,
    /// The stream's files on disk after the flat-out run, all replicas.
    pub store_bytes: u64,
    /// `store_bytes` per frame (the warm-up's included) and replica.
    pub store_bytes_per_frame: f64,
    /// The paced run: its rate and publish-to-receipt latency (ns).
    pub rate: u64,
    pub latency: Summary,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    pub cases: Vec<Case>,
}

/// Runs `helix-bench bridge`.
pub fn run(a: BridgeArgs, namespace: Namespace, exe: &Path) -> Result<()> {
    if let Some(bad) = a.sizes.iter().find(|&&s| !(8..=65_536).contains(&s)) {
        bail!("--sizes: {bad} is not from 8 to 65536 bytes");
    }
    if let Some(bad) = a.replicas.iter().find(|&&r| r != 1 && r != 3) {
        bail!("--replicas: {bad} is neither 1 nor 3");
    }
    if a.frames == 0 || a.rate == 0 || a.seconds <= 0.0 {
        bail!("--frames, --rate and --seconds must be positive");
    }
    let bridge = find("helix-bridge", a.bridge_bin.as_deref(), "HELIX_BRIDGE", exe, "")?;
    let nats =
        find("nats-server", a.nats_server.as_deref(), "HELIX_NATS_SERVER", exe, "/tmp/natsvenv/bin/nats-server")?;
    let (started, load_before) = (utc_now(), load_average());
    let mut cases = vec![];
    println!(
        "{:>8} {:>6} {:>12} {:>9} {:>10} {:>9} {:>10} {:>10} {:>10}",
        "replicas", "size", "frames/s", "MB/s", "disk B/fr", "paced/s", "p50", "p99", "max"
    );
    for &replicas in &a.replicas {
        for &size in &a.sizes {
            let tools = Tools { bridge: &bridge, nats: &nats };
            let c = case(&a, &namespace, tools, replicas, size).with_context(|| format!("R{replicas}, {size} B"))?;
            println!(
                "{:>8} {:>6} {:>12.0} {:>9.1} {:>10.1} {:>9} {:>10} {:>10} {:>10}",
                c.replicas,
                c.size,
                c.frames_per_sec,
                c.mb_per_sec,
                c.store_bytes_per_frame,
                c.rate,
                fmt_ns(c.latency.p50),
                fmt_ns(c.latency.p99),
                fmt_ns(c.latency.max)
            );
            cases.push(c);
        }
    }
    a.out.write("bridge", load_before, started, Results { cases })
}

#[derive(Clone, Copy)]
struct Tools<'a> {
    bridge: &'a Path,
    nats: &'a Path,
}

/// One case: servers, rings, bridges, the two runs; all removed after.
fn case(a: &BridgeArgs, ns: &Namespace, tools: Tools, replicas: usize, size: usize) -> Result<Case> {
    let tag = format!("{}r{replicas}s{size}", ns.as_str());
    let host_a = Scratch {
        dir: std::env::temp_dir().join(format!("helix-bench-bridge-{tag}")),
        ns: Namespace::new(&format!("{tag}a"))?,
    };
    let host_b = Scratch { dir: host_a.dir.join("b"), ns: Namespace::new(&format!("{tag}b"))? };
    std::fs::create_dir_all(&host_b.dir)?;
    let mut servers = Servers::start(tools.nats, replicas, &host_a.dir)?;
    let ring = |ns: &Namespace, name: &str, payload: usize| {
        let opts = RingOptions {
            capacity: 65_536,
            max_payload: payload as u32,
            policy: Policy::Block,
            ..RingOptions::default()
        };
        Ring::create(ns, name, &opts).with_context(|| format!("creating ring {name}"))
    };
    let src = ring(&host_a.ns, "src", size)?;
    ring(&host_b.ns, "dst", size.max(64))?;
    let bridge = |ns: &Namespace, role: &str, args: &[&str]| -> Result<ChildProcess> {
        let mut cmd = Command::new(tools.bridge);
        cmd.args(servers.flags())
            .args([
                "--stream",
                "BENCH",
                "--site",
                "bench",
                "--replicas",
                &replicas.to_string(),
                "--namespace",
                ns.as_str(),
            ])
            .args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(host_a.dir.join(format!("{role}.log")))?);
        Ok(ChildProcess::spawn(&format!("helix-bridge {role}"), &mut cmd)?)
    };
    let mut exporter = bridge(&host_a.ns, "export", &["export", "--ring", "src", "--host", "hosta"])?;
    let mut importer =
        bridge(&host_b.ns, "import", &["import", "--source-host", "hosta", "--source-ring", "src", "--ring", "dst"])?;
    let view = RingView::attach(&host_a.ns, "src")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !view.stats().readers.iter().any(|r| r.name == "helix-bridge" && r.alive) {
        for p in [&mut exporter, &mut importer] {
            if let Some(status) = p.try_wait()? {
                bail!("{} exited ({status}); see its log in {}", p.name(), host_a.dir.display());
            }
        }
        if Instant::now() > deadline {
            bail!("the exporter did not join its ring within 60 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let paced = (a.rate as f64 * a.seconds) as u64;
    let received = Arc::new(AtomicU64::new(0));
    let r = received.clone();
    let (frames, rate, seconds) = (a.frames, a.rate, a.seconds);
    let writer = src.writer()?;
    let plan = Plan { size, frames, paced, rate, seconds };
    let producer = std::thread::spawn(move || produce(writer, plan, &r));
    // On an error the writer is left behind: it ends within its bounds.
    let (last_flat, latency) =
        receive(&host_b.ns, frames, paced, &received, &mut [&mut exporter, &mut importer], &mut servers)?;
    let t0 = producer.join().map_err(|_| anyhow::anyhow!("the writer panicked"))??;
    let seconds = (last_flat.0 - t0) as f64 / 1e9;
    Ok(Case {
        replicas,
        size,
        frames,
        seconds,
        frames_per_sec: frames as f64 / seconds,
        mb_per_sec: (frames * size as u64) as f64 / seconds / 1e6,
        store_bytes: last_flat.1,
        store_bytes_per_frame: last_flat.1 as f64 / ((WARM_UP + frames) * replicas as u64) as f64,
        rate,
        latency,
    })
}

/// What host A's writer sends.
#[derive(Clone, Copy)]
struct Plan {
    size: usize,
    frames: u64,
    paced: u64,
    rate: u64,
    seconds: f64,
}

/// Host A's writer: the warm-up, the flat-out frames, then the paced ones,
/// each frame's first 8 bytes its publish time; returns the time the
/// flat-out run began.
fn produce(mut writer: helix::Writer, p: Plan, r: &AtomicU64) -> Result<u64> {
    let Plan { size, frames, paced, rate, seconds } = p;
    let mut buf = vec![0u8; size];
    let mut burst = |from: u64, to: u64| -> Result<()> {
        for i in from..to {
            buf[8..].fill(i as u8);
            buf[..8].copy_from_slice(&helix::process::now_ns().to_le_bytes());
            writer.publish(&buf)?;
        }
        until(r, to)
    };
    // Warm-up: the clock starts once the importer's consumer delivers.
    burst(0, WARM_UP)?;
    let t0 = helix::process::now_ns();
    // The paced run starts on an empty pipeline.
    burst(WARM_UP, WARM_UP + frames)?;
    let mut buf = vec![0u8; size];
    let start = Instant::now();
    let mut sent = 0;
    while sent < paced {
        let due = ((start.elapsed().as_secs_f64() * rate as f64) as u64).min(paced);
        while sent < due {
            buf[..8].copy_from_slice(&helix::process::now_ns().to_le_bytes());
            writer.publish(&buf)?;
            sent += 1;
        }
        if start.elapsed().as_secs_f64() > seconds * 10.0 + 60.0 {
            bail!("the paced run fell behind by more than 10x");
        }
        std::thread::sleep(Duration::from_micros(50));
    }
    Ok(t0)
}

/// Frames sent and received before the clock starts.
const WARM_UP: u64 = 1000;

/// Waits (at most 300 s) until `received` reaches `n`.
fn until(received: &AtomicU64, n: u64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    while received.load(Ordering::Relaxed) < n {
        if Instant::now() > deadline {
            bail!("frames up to {n} did not all arrive within 300 s");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// Reads host B's ring: the warm-up and flat-out frames (returns when the last arrived,
/// and the servers' store size then), then the paced ones (their latency).
fn receive(
    ns: &Namespace,
    frames: u64,
    paced: u64,
    received: &AtomicU64,
    bridges: &mut [&mut ChildProcess],
    servers: &mut Servers,
) -> Result<((u64, u64), Summary)> {
    let opts = ReaderOptions { gating: true, start: Start::Oldest, ..ReaderOptions::named("helix-bench") };
    let mut reader = Reader::attach(ns, "dst", &opts)?;
    let mut buf = vec![0u8; 65_536];
    let mut h = histogram();
    let (mut n, mut flat_end) = (0u64, (0, 0));
    let mut quiet = Instant::now();
    let flat = WARM_UP + frames;
    while n < flat + paced {
        let info = match reader.read_timeout(&mut buf, Duration::from_millis(200)) {
            Ok(info) => info,
            Err(ReadError::Timeout) => {
                for b in bridges.iter_mut() {
                    if let Some(status) = b.try_wait()? {
                        bail!("{} exited ({status})", b.name());
                    }
                }
                servers.check()?;
                if quiet.elapsed() > Duration::from_secs(60) {
                    bail!("nothing arrived for 60 s ({n} of {} frames)", flat + paced);
                }
                continue;
            }
            Err(e) => bail!("reading the destination ring: {e}"),
        };
        quiet = Instant::now();
        if MARK_KINDS.contains(&info.kind) {
            continue;
        }
        let now = helix::process::now_ns();
        let sent = u64::from_le_bytes(buf[..8].try_into().expect("8 bytes"));
        n += 1;
        if n == flat {
            flat_end = (now, servers.store_bytes());
        } else if n > flat {
            h.record(now.saturating_sub(sent).max(1))?;
        }
        received.store(n, Ordering::Relaxed);
    }
    Ok((flat_end, Summary::of(&h)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(f: impl FnOnce(&mut BridgeArgs)) -> BridgeArgs {
        let mut a = BridgeArgs {
            sizes: vec![64],
            replicas: vec![1],
            frames: 10,
            rate: 10,
            seconds: 1.0,
            bridge_bin: Some("/nonexistent/helix-bridge".into()),
            nats_server: Some("/nonexistent/nats-server".into()),
            out: JsonArg::default(),
        };
        f(&mut a);
        a
    }

    /// Sizes, replica counts and counts it cannot run are refused before
    /// anything starts, naming the flag.
    #[test]
    fn impossible_arguments_are_refused_by_name() {
        let ns = Namespace::new("benchbridgeargs").unwrap();
        let exe = Path::new("/nonexistent/helix-bench");
        for (a, flag) in [
            (args(|a| a.sizes = vec![4]), "--sizes: 4"),
            (args(|a| a.sizes = vec![100_000]), "--sizes: 100000"),
            (args(|a| a.replicas = vec![2]), "--replicas: 2"),
            (args(|a| a.frames = 0), "--frames"),
            (args(|a| a.seconds = 0.0), "--seconds"),
        ] {
            let e = run(a, ns.clone(), exe).unwrap_err().to_string();
            assert!(e.contains(flag), "{e}");
        }
    }
}
