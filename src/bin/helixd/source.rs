//! helixd's HAL sources as the daemon runs them: one thread each, holding
//! its ring's writer lease.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{Context, Result};
use tracing::{error, warn};

use helix::Ring;

use crate::config::{SourceConfig, SourceKind};
use crate::hal::{sim::Sim, SourceState};

/// A source the daemon started (or will start once its ring is repaired).
pub struct Running {
    /// What it runs.
    pub config: SourceConfig,
    /// What its thread shares with the daemon.
    pub state: Arc<SourceState>,
    /// Its thread, until stopped.
    pub thread: Option<JoinHandle<Result<()>>>,
    /// A UDP source's socket (a second handle), for the kernel's drop count.
    socket: Option<std::net::UdpSocket>,
    /// Logged that the drop count cannot be read (once).
    drops_unreadable: AtomicBool,
}

impl Running {
    /// A source not running (yet): its ring is being repaired.
    pub fn stopped(config: &SourceConfig) -> Running {
        Running {
            config: config.clone(),
            state: SourceState::new(),
            thread: None,
            socket: None,
            drops_unreadable: AtomicBool::new(false),
        }
    }

    /// Reads a UDP source's kernel drop count into its counters, and logs
    /// datagrams the kernel dropped since the last read.
    pub fn read_kernel_drops(&self) {
        let Some(socket) = &self.socket else { return };
        match crate::hal::udp::kernel_drops(socket) {
            Ok(total) => {
                let before = self.state.udp.kernel_drops.swap(total, Ordering::Relaxed);
                if total > before {
                    warn!(
                        "udp source for ring {}: the kernel dropped {} datagrams, its receive buffer full \
                         ({total} in all); raise net.core.rmem_max or lower the senders' rate",
                        self.config.ring,
                        total - before
                    );
                }
            }
            Err(e) => {
                if !self.drops_unreadable.swap(true, Ordering::Relaxed) {
                    warn!("udp source for ring {}: cannot read the kernel's drop count: {e}", self.config.ring);
                }
            }
        }
    }

    /// Asks its thread to finish and waits for it, logging how it ended.
    pub fn stop(&mut self) {
        self.state.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            match t.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => error!("source for ring {} failed: {e:#}", self.config.ring),
                Err(_) => error!("source for ring {} panicked", self.config.ring),
            }
        }
    }
}

/// Starts the source `cfg` writing `ring`: takes the ring's writer lease
/// (and binds a UDP source's socket) here, so a failure is the caller's.
pub fn start_source(cfg: &SourceConfig, ring: &Ring) -> Result<Running> {
    let writer = ring.writer().with_context(|| format!("source for ring {:?}", cfg.ring))?;
    let state = SourceState::new();
    let thread_state = state.clone();
    let kind = cfg.kind.clone();
    let name = match kind {
        SourceKind::Sim { .. } => "hal-sim",
        SourceKind::Udp { .. } => "hal-udp",
    };
    // The UDP socket is bound here, not in the thread: see `udp::bind`.
    enum Job {
        Sim(Sim),
        Udp(std::net::UdpSocket),
    }
    let job = match kind {
        SourceKind::Sim { streams, rate_hz, seed } => Job::Sim(Sim { streams, rate_hz, seed }),
        SourceKind::Udp { bind } => Job::Udp(crate::hal::udp::bind(bind)?),
    };
    let socket = match &job {
        Job::Udp(s) => Some(s.try_clone().context("udp source: cannot duplicate the socket")?),
        Job::Sim(_) => None,
    };
    let thread = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || match job {
            Job::Sim(sim) => Ok(sim.run(writer, &thread_state)?),
            Job::Udp(socket) => crate::hal::udp::serve(socket, writer, &thread_state),
        })
        .context("cannot start a thread")?;
    Ok(Running { config: cfg.clone(), state, thread: Some(thread), socket, drops_unreadable: AtomicBool::new(false) })
}

/// How a source is named in the log.
pub fn describe(kind: &SourceKind) -> String {
    match kind {
        SourceKind::Sim { streams, rate_hz, seed } => format!("sim ({streams} streams x {rate_hz} Hz, seed {seed})"),
        SourceKind::Udp { bind } => format!("udp ({bind})"),
    }
}
