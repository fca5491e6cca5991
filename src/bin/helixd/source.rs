//! helixd's HAL sources as the daemon runs them: one thread each, holding
//! its ring's writer lease.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{Context, Result};
use tracing::{error, info, warn};

use helix::Ring;

use crate::config::{SourceConfig, SourceKind};
use crate::control::Plant;
use crate::hal::{sim::Sim, SourceState};

/// A source the daemon started (or will start once its ring is repaired).
pub struct Running {
    /// What it runs.
    pub config: SourceConfig,
    /// What its thread shares with the daemon.
    pub state: Arc<SourceState>,
    /// Its thread, until stopped.
    pub thread: Option<JoinHandle<Result<()>>>,
    /// A UDP source's socket (a second handle): for the kernel's drop
    /// count, and kept while the source is stopped for a restart, so what
    /// arrives meanwhile waits in it for the restarted source
    /// ([`Running::restarted`]); closed by [`Running::retire`].
    socket: Option<std::net::UdpSocket>,
    /// Logged that the drop count cannot be read (once).
    drops_unreadable: AtomicBool,
    /// Logged that a simulator is behind its schedule (until it catches up).
    late_logged: AtomicBool,
    /// Why a source a reload added could not start, while it has never
    /// run: it is tried again at each health check, said when the reason
    /// changes, and not held against the watchdog (a restart would refuse
    /// the configuration, taking every ring down with it).
    pub never_started: Option<String>,
}

/// A simulator this far behind its schedule is reported (status and log).
pub const LATE: std::time::Duration = std::time::Duration::from_millis(100);

impl Running {
    /// A source not running (yet): its ring is being repaired, or it
    /// cannot start. Its inbox is closed: a command for it is answered
    /// `source_down`. (Found by review: it was accepted into an inbox no
    /// thread read, and never answered; 1,024 of them stopped the control
    /// path for every sender.)
    pub fn stopped(config: &SourceConfig) -> Running {
        let state = SourceState::new();
        state.inbox.close();
        Running {
            config: config.clone(),
            state,
            thread: None,
            socket: None,
            drops_unreadable: AtomicBool::new(false),
            late_logged: AtomicBool::new(false),
            never_started: None,
        }
    }

    /// A simulator's lateness for the status line, if it is [`LATE`] or
    /// more behind its schedule; logs when it falls behind and when it has
    /// caught up.
    pub fn lateness(&self) -> Option<String> {
        if !matches!(self.config.kind, SourceKind::Sim { .. }) {
            return None;
        }
        let behind = std::time::Duration::from_nanos(self.state.behind_ns.load(Ordering::Relaxed));
        let late = behind >= LATE;
        if late != self.late_logged.swap(late, Ordering::Relaxed) {
            if late {
                warn!(
                    "sim source for ring {}: {:.3} s behind its schedule (the CPU is short, or gating readers \
                     hold the ring full); its samples are late, not dropped",
                    self.config.ring,
                    behind.as_secs_f64()
                );
            } else {
                info!("sim source for ring {}: back on schedule", self.config.ring);
            }
        }
        late.then(|| format!("sim {}: {:.3} s behind schedule", self.config.ring, behind.as_secs_f64()))
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
    /// A UDP source keeps its socket bound: datagrams that arrive wait in
    /// it for [`Running::restarted`] (or are counted by
    /// [`Running::retire`]).
    pub fn stop(&mut self) {
        self.state.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            match t.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => error!("source for ring {} failed: {e:#}", self.config.ring),
                Err(_) => error!("source for ring {} panicked", self.config.ring),
            }
        }
        // Its thread takes nothing more, however it ended (a panic skips
        // the simulator's own close): the commands waiting are answered.
        self.state.inbox.close();
        self.read_kernel_drops();
    }

    /// Stops it for good: a UDP source's socket is closed (its port free
    /// to be bound again, by the source a reload puts in its place, say),
    /// and the datagrams waiting in it are counted and said, not dropped
    /// silently.
    pub fn retire(&mut self) {
        self.stop();
        let Some(socket) = self.socket.take() else { return };
        let (waiting, all) = crate::hal::udp::discard_waiting(&socket);
        self.state.udp.unwritten.fetch_add(waiting, Ordering::Relaxed);
        if waiting > 0 {
            warn!(
                "udp source for ring {}: {waiting} datagrams waiting in its socket are not written (the source \
                 stopped for good){}",
                self.config.ring,
                if all { "" } else { ", and more that kept arriving" }
            );
        }
    }

    /// The same source started again on `ring` (after its thread ended,
    /// or its ring was repaired): a UDP source on the socket it had, so
    /// nothing that arrived in between is lost.
    pub fn restarted(&self, ring: &Ring, plant: &Plant) -> Result<Running> {
        let bound = self.socket.as_ref().map(|s| s.try_clone()).transpose().context("udp source: the socket")?;
        start(&self.config, ring, plant, bound, Some(&self.state))
    }
}

/// Starts the source `cfg` writing `ring`: takes the ring's writer lease
/// (and binds a UDP source's socket) here, so a failure is the caller's.
pub fn start_source(cfg: &SourceConfig, ring: &Ring, plant: &Plant) -> Result<Running> {
    start(cfg, ring, plant, None, None)
}

/// [`start_source`], a UDP source on `bound` if given, going on from the
/// counts of `previous`, the source it was (the samples written, a UDP
/// source's datagram counts: taken before the thread starts, so none of
/// its reports misses them, and the totals never go back).
fn start(
    cfg: &SourceConfig,
    ring: &Ring,
    plant: &Plant,
    bound: Option<std::net::UdpSocket>,
    previous: Option<&SourceState>,
) -> Result<Running> {
    let writer = ring.writer().with_context(|| format!("source for ring {:?}", cfg.ring))?;
    let state = SourceState::new();
    if let Some(old) = previous {
        state.samples.store(old.samples.load(Ordering::Relaxed), Ordering::Relaxed);
        state.udp.carry(&old.udp);
    }
    // What commands made of it, taken before its first sample.
    crate::control::restore(&state, cfg, plant);
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
        SourceKind::Udp { bind, .. } => Job::Udp(match bound {
            Some(socket) => socket,
            None => crate::hal::udp::bind(bind)?,
        }),
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
    Ok(Running {
        config: cfg.clone(),
        state,
        thread: Some(thread),
        socket,
        drops_unreadable: AtomicBool::new(false),
        late_logged: AtomicBool::new(false),
        never_started: None,
    })
}

/// How a source is named in the log.
pub fn describe(kind: &SourceKind) -> String {
    match kind {
        SourceKind::Sim { streams, rate_hz, seed } => format!("sim ({streams} streams x {rate_hz} Hz, seed {seed})"),
        SourceKind::Udp { bind, instrument: None } => format!("udp ({bind})"),
        SourceKind::Udp { bind, instrument: Some(to) } => format!("udp ({bind}, commands to {to})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use helix::{Namespace, Policy, RingOptions};

    /// Found by review: a source restarted after a repair counted its
    /// samples from 0 again, while its datagram counts went on. The totals
    /// helixd reports never go back.
    #[test]
    fn a_restarted_source_goes_on_counting_from_the_one_it_replaces() {
        let ns = Namespace::new(&format!("srcrestart{}", std::process::id())).unwrap();
        let opts = RingOptions { capacity: 64, max_payload: 48, policy: Policy::Overwrite, ..Default::default() };
        let ring = Ring::create(&ns, "t", &opts).unwrap();
        Ring::unlink(&ns, "t").unwrap();
        let sim = SourceKind::Sim { streams: 1, rate_hz: 1.0, seed: 1 };
        let old = Running::stopped(&SourceConfig { kind: sim, ring: "t".into() });
        old.state.samples.store(1000, Ordering::Relaxed);
        old.state.udp.datagrams.store(5, Ordering::Relaxed);
        let mut new = old.restarted(&ring, &Plant::default()).unwrap();
        new.stop();
        let written = ring.published();
        assert_eq!(new.state.samples.load(Ordering::Relaxed), 1000 + written);
        assert_eq!(new.state.udp.datagrams.load(Ordering::Relaxed), 5);
    }

    #[test]
    fn a_simulator_late_by_more_than_late_is_reported_until_it_catches_up() {
        let sim = SourceKind::Sim { streams: 10, rate_hz: 1.0, seed: 1 };
        let r = Running::stopped(&SourceConfig { kind: sim, ring: "telemetry".into() });
        assert_eq!(r.lateness(), None);
        r.state.behind_ns.store(LATE.as_nanos() as u64 * 25, Ordering::Relaxed);
        assert_eq!(r.lateness().as_deref(), Some("sim telemetry: 2.500 s behind schedule"));
        r.state.behind_ns.store(1_000_000, Ordering::Relaxed);
        assert_eq!(r.lateness(), None);
        // A UDP source has no schedule.
        let udp = SourceKind::Udp { bind: "127.0.0.1:1".parse().unwrap(), instrument: None };
        let r = Running::stopped(&SourceConfig { kind: udp, ring: "telemetry".into() });
        r.state.behind_ns.store(u64::MAX, Ordering::Relaxed);
        assert_eq!(r.lateness(), None);
    }
}
