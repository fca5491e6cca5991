//! The three programs e2e runs: their configurations, starting each in
//! turn until it is attached, watching them, and stopping them in order.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use helix::shm::{Namespace, SHM_DIR};
use helix::RingView;

use super::{Config, ALARMS, TELEMETRY};
use crate::affinity::spawn_confined;
use crate::shared::child::ChildProcess;
use crate::shared::service::PARENT_PID_ENV;

/// How long each program gets to start, attach or stop.
const PATIENCE: Duration = Duration::from_secs(30);

/// The scratch folder and the namespace's shared-memory files, removed on
/// drop.
pub struct Scratch {
    pub dir: PathBuf,
    pub ns: Namespace,
}

impl Scratch {
    /// Removes the namespace's files from /dev/shm, and its fan-in rings'
    /// folders (helixd's `control` ring).
    pub fn remove_rings(&self) {
        let prefix = format!("{}.", self.ns.as_str());
        if let Ok(d) = std::fs::read_dir(SHM_DIR) {
            for e in d.flatten() {
                if e.file_name().to_string_lossy().starts_with(&prefix) {
                    // Not following a link: a folder is only removed as one.
                    let _ = match e.file_type() {
                        Ok(t) if t.is_dir() => std::fs::remove_dir_all(e.path()),
                        _ => std::fs::remove_file(e.path()),
                    };
                }
            }
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        self.remove_rings();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A started program logging to a file in the scratch folder; killed and
/// reaped on drop unless stopped.
pub struct Program {
    child: ChildProcess,
    log: PathBuf,
}

impl Program {
    fn start(name: &str, mut cmd: Command, scratch: &Path, cpus: &[usize]) -> Result<Program> {
        let log = scratch.join(format!("{name}.log"));
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(File::create(&log)?).env_remove("NOTIFY_SOCKET");
        // Stopped if this program dies, even by SIGKILL.
        cmd.env(PARENT_PID_ENV, std::process::id().to_string());
        Ok(Program { child: spawn_confined(name, &mut cmd, cpus)?, log })
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// Its log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// The last lines of its log.
    fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = File::open(&self.log) {
            let len = f.metadata().map_or(0, |m| m.len());
            let _ = f.seek(SeekFrom::Start(len.saturating_sub(2000)));
            let _ = f.read_to_string(&mut text);
        }
        let lines: Vec<&str> = text.lines().rev().take(5).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join(" / ")
    }

    /// An error if it has exited.
    pub fn check(&mut self) -> Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => bail!("{} exited ({status}): {}", self.child.name(), self.log_tail()),
        }
    }

    /// SIGTERM, then waits (SIGKILL after `PATIENCE`); an error unless it
    /// exited successfully.
    fn stop(&mut self) -> Result<()> {
        match self.child.stop(PATIENCE) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => Err(e.into()),
            Err(e) => bail!("{e}: {}", self.log_tail()),
        }
    }
}

/// Waits until `ready` holds, failing if one of `programs` exits or
/// `PATIENCE` passes.
pub fn wait_for(what: &str, programs: &mut [&mut Program], mut ready: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + PATIENCE;
    while !ready() {
        for p in programs.iter_mut() {
            p.check()?;
        }
        if Instant::now() > deadline {
            bail!("{what} within {PATIENCE:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// helixd, helix-ledger and helix-twin, running and attached.
pub struct Running {
    pub helixd: Program,
    pub ledger: Program,
    pub twin: Program,
    /// The telemetry ring, seen from outside.
    pub view: RingView,
    /// Where the ledger writes.
    pub ledger_dir: PathBuf,
    /// The twin's `poll_interval_ms`.
    pub twin_poll: Duration,
}

impl Running {
    /// Starts helixd, then the ledger and the twin once it writes, each
    /// waited for until it is attached; configurations and logs go in `dir`.
    pub fn start(cfg: &Config, dir: &Path, progress: &mut dyn FnMut(&str)) -> Result<Running> {
        let ns = &cfg.namespace;
        let helixd_toml = dir.join("helix.toml");
        std::fs::write(&helixd_toml, helixd_config(cfg))?;
        let twin_toml = dir.join("twin.toml");
        let twin_text = twin_config(cfg)?;
        let twin_poll = crate::twin_config::TwinConfig::parse(&twin_text, &twin_toml)?.poll_interval;
        std::fs::write(&twin_toml, twin_text)?;
        let ledger_dir = dir.join("ledger");

        progress(&format!("starting helixd ({} streams x {} Hz)", cfg.streams, cfg.rate_hz));
        let mut helixd = {
            let mut c = Command::new(&cfg.programs.helixd);
            c.arg("--config").arg(&helixd_toml);
            Program::start("helixd", c, dir, &cfg.placement.helixd)?
        };
        let view = wait_for_rings(ns, &mut helixd)?;
        let attached = |pid: u32| view.stats().readers.iter().any(|r| r.pid == pid && r.alive);

        progress("starting helix-ledger");
        let key = signing_key(&cfg.programs.ledger, dir)?;
        let mut ledger = {
            let mut c = Command::new(&cfg.programs.ledger);
            // Signed checkpoints, as installed: a key of this run's own.
            c.arg("--key").arg(&key);
            if cfg.control {
                c.args(["--ring", helix::control::LOG_RING]);
            }
            c.args(["--ring", TELEMETRY, "--fsync-interval-ms", &cfg.fsync_ms.to_string(), "--dir"])
                .arg(&ledger_dir)
                .env("HELIX_NAMESPACE", ns.as_str());
            if let Some(gib) = cfg.ledger_keep_gib {
                // Retention deletes the oldest anchored segments past the limit.
                let toml = dir.join("ledger.toml");
                std::fs::write(&toml, format!("[retention]\nmax_total_gib = {gib:?}\n"))?;
                c.arg("--config").arg(toml);
            }
            Program::start("helix-ledger", c, dir, &cfg.placement.ledger)?
        };
        let ledger_pid = ledger.pid();
        wait_for("helix-ledger did not attach", &mut [&mut helixd, &mut ledger], || attached(ledger_pid))?;

        progress("starting helix-twin");
        let mut twin = {
            let mut c = Command::new(&cfg.programs.twin);
            c.arg("--config").arg(&twin_toml);
            Program::start("helix-twin", c, dir, &cfg.placement.twin)?
        };
        let twin_pid = twin.pid();
        wait_for("helix-twin did not attach", &mut [&mut helixd, &mut ledger, &mut twin], || attached(twin_pid))?;
        Ok(Running { helixd, ledger, twin, view, ledger_dir, twin_poll })
    }

    /// An error if one of them has exited.
    pub fn check(&mut self) -> Result<()> {
        for p in [&mut self.helixd, &mut self.ledger, &mut self.twin] {
            p.check()?;
        }
        Ok(())
    }

    /// Stops helixd, lets the ledger record its last frame, then stops the
    /// twin and the ledger; returns the frames helixd published in all.
    pub fn stop(&mut self) -> Result<u64> {
        self.helixd.stop()?;
        let published = self.view.stats().published;
        let (view, ledger_pid) = (&self.view, self.ledger.pid());
        wait_for(
            "helix-ledger did not catch up with helixd's last frame",
            &mut [&mut self.ledger, &mut self.twin],
            || view.stats().readers.iter().any(|r| r.pid == ledger_pid && r.cursor > published),
        )?;
        self.twin.stop()?;
        self.ledger.stop()?;
        Ok(published)
    }
}

/// Waits until helixd writes telemetry and has created the twin's rings;
/// the telemetry ring's view.
fn wait_for_rings(ns: &Namespace, helixd: &mut Program) -> Result<RingView> {
    let mut view = None;
    wait_for("helixd did not start writing telemetry", &mut [helixd], || {
        if view.is_none() {
            view = RingView::attach(ns, TELEMETRY).ok();
        }
        view.as_ref().is_some_and(|v| v.stats().published > 0)
            && RingView::attach(ns, ALARMS).is_ok()
            && RingView::attach(ns, "twin.state").is_ok()
    })?;
    Ok(view.expect("attached above"))
}

fn helixd_config(cfg: &Config) -> String {
    let control = if cfg.control { CONTROL } else { "" };
    format!(
        r#"# helix-bench e2e: a private namespace, helixd's default rings and simulator.
namespace = "{ns}"
status_interval_ms = 2000
sweep_interval_ms = 1000

[[ring]]
name = "telemetry"
max_payload = 48
capacity = {cap}
policy = "block"
stall_timeout_ms = 2000
max_readers = 32
mode = 0o600

[[ring]]
name = "twin.state"
preset = "s"
capacity = 65536
policy = "overwrite"
mode = 0o600

[[ring]]
name = "alarms"
preset = "s"
capacity = 16384
policy = "block"
stall_timeout_ms = 2000
mode = 0o600

[[source]]
kind = "sim"
ring = "telemetry"
streams = {streams}
rate_hz = {rate:?}
seed = 1
{control}"#,
        ns = cfg.namespace.as_str(),
        cap = cfg.capacity(),
        streams = cfg.streams,
        rate = cfg.rate_hz,
    )
}

/// helixd's control rings and `[control]`, as its embedded default has them.
const CONTROL: &str = r#"
[[ring]]
name = "control.log"
max_payload = 144
capacity = 65536
policy = "block"
stall_timeout_ms = 2000
mode = 0o600

[[ring]]
name = "control.acks"
max_payload = 48
capacity = 65536
policy = "overwrite"
mode = 0o600

[control]
lanes = 16
mode = 0o600
audit_reader = "helix-ledger"
"#;

/// The twin's embedded default with this run's namespace and stream count.
fn twin_config(cfg: &Config) -> Result<String> {
    let default = crate::twin_config::DEFAULT_CONFIG;
    if !default.contains("\nstreams = 10000\n") {
        bail!("the twin's default configuration no longer says `streams = 10000`");
    }
    Ok(format!(
        "namespace = \"{}\"\n{}",
        cfg.namespace.as_str(),
        default.replace("\nstreams = 10000\n", &format!("\nstreams = {}\n", cfg.streams))
    ))
}

/// A new signing key for the ledger in `dir` (`helix-ledger keygen`),
/// replacing one a previous run left.
pub fn signing_key(ledger: &Path, dir: &Path) -> Result<PathBuf> {
    let key = dir.join("ledger.key");
    let _ = std::fs::remove_file(&key);
    let out = Command::new(ledger).arg("keygen").arg(&key).output()?;
    anyhow::ensure!(out.status.success(), "helix-ledger keygen: {}", String::from_utf8_lossy(&out.stderr));
    Ok(key)
}
