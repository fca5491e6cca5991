//! The processes `helix-bench bridge` measures: a NATS server (one node,
//! or a three-node JetStream cluster) on loopback ports of its own with its
//! store in a scratch folder, and the `helix-bridge` programs. Found by
//! flag, environment, next to helix-bench, or on PATH; killed on drop.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::probe::{dir_bytes, healthz};
use crate::shared::child::ChildProcess;

/// How long a server gets to become healthy.
const PATIENCE: Duration = Duration::from_secs(60);

/// `given`, else `$env`, else `name` next to helix-bench (`exe`), else on
/// PATH, else the `fallback` path if it exists.
pub fn find(name: &str, given: Option<&Path>, env: &str, exe: &Path, fallback: &str) -> Result<PathBuf> {
    if let Some(p) = given {
        return Ok(p.to_owned());
    }
    if let Some(p) = std::env::var_os(env) {
        return Ok(p.into());
    }
    let sibling = exe.with_file_name(name);
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name));
    std::iter::once(sibling)
        .chain(on_path)
        .chain(std::iter::once(PathBuf::from(fallback)))
        .find(|p| p.is_file())
        .with_context(|| format!("no {name}: give its path by flag or ${env}, or put it on PATH"))
}

/// A port the kernel had free a moment ago.
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// One node or a cluster of three, each with its own store under `dir`.
pub struct Servers {
    nodes: Vec<ChildProcess>,
    ports: Vec<u16>,
    dir: PathBuf,
}

impl Servers {
    /// Starts `count` nodes (1, or 3 in a cluster) and waits until each is
    /// healthy, JetStream included.
    pub fn start(bin: &Path, count: usize, dir: &Path) -> Result<Servers> {
        let ports: Vec<[u16; 3]> =
            (0..count).map(|_| Ok([free_port()?, free_port()?, free_port()?])).collect::<Result<_>>()?;
        let mut s = Servers { nodes: vec![], ports: ports.iter().map(|p| p[0]).collect(), dir: dir.to_owned() };
        for (i, [port, route, http]) in ports.iter().enumerate() {
            let store = dir.join(format!("n{i}"));
            let mut cmd = Command::new(bin);
            cmd.args(["-a", "127.0.0.1", "-p", &port.to_string(), "-m", &http.to_string(), "-js", "-sd"])
                .arg(&store)
                .args(["-n", &format!("n{i}")])
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.join(format!("n{i}.log")))?);
            if count > 1 {
                let routes: Vec<String> =
                    (0..count).filter(|&j| j != i).map(|j| format!("nats://127.0.0.1:{}", ports[j][1])).collect();
                cmd.args(["--cluster_name", "helix-bench", "--cluster", &format!("nats://127.0.0.1:{route}")])
                    .args(["--routes", &routes.join(",")]);
            }
            s.nodes.push(ChildProcess::spawn("nats-server", &mut cmd)?);
        }
        for (i, p) in ports.iter().enumerate() {
            s.wait_healthy(i, p[2])?;
        }
        Ok(s)
    }

    fn wait_healthy(&mut self, i: usize, http: u16) -> Result<()> {
        let deadline = Instant::now() + PATIENCE;
        while healthz(http).as_deref() != Some("200") {
            if let Some(status) = self.nodes[i].try_wait()? {
                bail!("nats-server n{i} exited ({status}); see {}", self.dir.join(format!("n{i}.log")).display());
            }
            if Instant::now() > deadline {
                bail!("nats-server n{i} not healthy within {PATIENCE:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// `--server URL` for every node.
    pub fn flags(&self) -> Vec<String> {
        self.ports.iter().flat_map(|p| ["--server".to_owned(), format!("nats://127.0.0.1:{p}")]).collect()
    }

    /// An error if a node has exited.
    pub fn check(&mut self) -> Result<()> {
        for (i, n) in self.nodes.iter_mut().enumerate() {
            if let Some(status) = n.try_wait()? {
                bail!("nats-server n{i} exited ({status})");
            }
        }
        Ok(())
    }

    /// Bytes in the nodes' stores, all replicas.
    pub fn store_bytes(&self) -> u64 {
        (0..self.nodes.len()).map(|i| dir_bytes(&self.dir.join(format!("n{i}")))).sum()
    }
}
