//! A three-node JetStream cluster of the test's own on loopback: each node
//! its own store folder, client, route and monitoring port, routes to the
//! other two. Nodes can be killed with SIGKILL and started again on the
//! same ports and store; all are killed and their folders removed on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, nats_server_bin, register};

#[path = "../../../src/bin/helix-bench/command/bridge/probe.rs"]
mod probe;
use probe::{dir_bytes, get, healthz};

struct Node {
    name: String,
    port: u16,
    route_port: u16,
    http_port: u16,
    child: Option<Child>,
}

pub struct Cluster {
    name: String,
    dir: PathBuf,
    nodes: Vec<Node>,
}

impl Cluster {
    /// Starts three nodes and waits (at most `limit`) until each reports
    /// itself healthy, JetStream included.
    pub fn start(tag: &str, limit: Duration) -> Cluster {
        let dir = std::env::temp_dir().join(format!("helix-bridge-cluster-{tag}"));
        let nodes = (0..3)
            .map(|i| Node {
                name: format!("{tag}-n{i}"),
                port: free_port(),
                route_port: free_port(),
                http_port: free_port(),
                child: None,
            })
            .collect();
        let mut c = Cluster { name: format!("{tag}-cluster"), dir, nodes };
        for i in 0..3 {
            c.spawn(i);
        }
        for i in 0..3 {
            c.wait_healthy(i, limit);
        }
        c
    }

    fn spawn(&mut self, i: usize) {
        let routes: Vec<String> =
            (0..3).filter(|&j| j != i).map(|j| format!("nats://127.0.0.1:{}", self.nodes[j].route_port)).collect();
        let n = &self.nodes[i];
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{}.log", n.name)))
            .or_else(|_| {
                std::fs::create_dir_all(&self.dir)?;
                std::fs::File::create(self.dir.join(format!("{}.log", n.name)))
            })
            .expect("a nats-server log file");
        let child = Command::new(nats_server_bin())
            .args(["-a", "127.0.0.1", "-p", &n.port.to_string(), "-m", &n.http_port.to_string()])
            .args(["-n", &n.name, "--cluster_name", &self.name, "-js", "-sd"])
            .arg(self.dir.join(&n.name))
            .args(["--cluster", &format!("nats://127.0.0.1:{}", n.route_port), "--routes", &routes.join(",")])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting nats-server");
        register(child.id());
        self.nodes[i].child = Some(child);
    }

    /// Every node's client URL.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| format!("nats://127.0.0.1:{}", n.port)).collect()
    }

    /// SIGKILL node `i` and reap it.
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts node `i` again (same ports, same store) and waits until it is
    /// healthy, its streams caught up.
    pub fn restart(&mut self, i: usize, limit: Duration) {
        self.spawn(i);
        self.wait_healthy(i, limit);
    }

    /// Polls node `i`'s `/healthz` until it answers 200.
    pub fn wait_healthy(&self, i: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        let port = self.nodes[i].http_port;
        loop {
            let status = healthz(port);
            if status.as_deref() == Some("200") {
                return;
            }
            assert!(Instant::now() < deadline, "nats-server node {i} not healthy within {limit:?}: {status:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits (at most `limit`) until the JetStream meta group's leader and
    /// stream `stream`'s leader each see all three nodes current.
    ///
    /// A node just started answers `/healthz` 200 before it has caught up
    /// with the stream (one CI run: 0.8 s after its start, its log then
    /// saying "catchup aborted, no leader for stream"). Killing another node
    /// then leaves two of three replicas behind, and the stream had no
    /// leader for minutes. One node down at a time is what an R3 stream is
    /// made to outlive, so the test waits for this before each kill.
    pub fn wait_current(&self, stream: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let leads: Vec<(bool, bool)> = (0..3).map(|i| self.leads_current(i, stream)).collect();
            if leads.iter().any(|l| l.0) && leads.iter().any(|l| l.1) {
                return;
            }
            let jsz: Vec<String> = (0..3).map(|i| self.jsz(i).unwrap_or_default()).collect();
            assert!(Instant::now() < deadline, "stream {stream} not current on every node within {limit:?}: {jsz:#?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Whether node `i` leads the JetStream meta group, and stream
    /// `stream`, with both other nodes current in it.
    fn leads_current(&self, i: usize, stream: &str) -> (bool, bool) {
        let Some(jsz) = self.jsz(i).and_then(|j| serde_json::from_str::<serde_json::Value>(&j).ok()) else {
            return (false, false);
        };
        let name = &self.nodes[i].name;
        let current = |group: &serde_json::Value| {
            group["leader"].as_str() == Some(name)
                && group["replicas"]
                    .as_array()
                    .is_some_and(|r| r.len() == 2 && r.iter().all(|r| r["current"].as_bool() == Some(true)))
        };
        let accounts = jsz["account_details"].as_array().into_iter().flatten();
        let mut streams = accounts.filter_map(|a| a["stream_detail"].as_array()).flatten();
        let stream = streams.any(|s| s["name"].as_str() == Some(stream) && current(&s["cluster"]));
        (current(&jsz["meta_cluster"]), stream)
    }

    /// Node `i`'s `/jsz` with its accounts' streams, if it answers.
    fn jsz(&self, i: usize) -> Option<String> {
        self.nodes[i].child.as_ref()?;
        get(self.nodes[i].http_port, "/jsz?accounts=true&streams=true").map(|(_, body)| body)
    }

    /// Bytes the nodes' stores hold (the stream's files on disk).
    pub fn store_bytes(&self) -> u64 {
        self.nodes.iter().map(|n| dir_bytes(&self.dir.join(&n.name))).sum()
    }

    /// The nodes' logs, for a failure message.
    pub fn logs_tail(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            let text = std::fs::read_to_string(self.dir.join(format!("{}.log", n.name))).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            out += &format!("--- {}\n{}\n", n.name, tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill9(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
