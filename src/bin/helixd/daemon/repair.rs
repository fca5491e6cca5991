//! Rings a peer damaged, taken out of service and repaired while helixd
//! runs; the control path stopped while its own rings are repaired.

use tracing::{error, info, warn};

use helix::control::{ACK_RING, LOG_RING};
use helix::{RepairError, Ring, RingFile};

use super::Daemon;
use crate::control::{ControlThread, Journal};
use crate::source::describe;

/// A ring a peer damaged (one of its files shrank under helixd's
/// mapping, or its control file is one a process attaching would refuse),
/// waiting for its repair: its sources are stopped and helixd's attachment
/// dropped.
pub(super) struct Repair {
    /// The file to repair.
    pub(super) file: RingFile,
    /// The shape the ring keeps through the repair: its control file's
    /// repair keeps the data region (`None`: the data region is made
    /// again, of the configured shape). A reload judges a change of shape
    /// against it, as against a running ring's.
    pub(super) kept: Option<helix::Geometry>,
    /// Logged why the repair has to wait (once per damage).
    waiting_logged: bool,
}

/// What is wrong with `ring` (named `name`), if anything: a file that
/// shrank under helixd's mapping, or a control file a process attaching
/// now would refuse (a reader grew it or wrote over its header; helixd's
/// own attachment works on, but no reader could join again: before, that
/// went unseen until helixd restarted). The file, and what to log.
fn broken(name: &str, ring: &Ring) -> Option<(RingFile, String)> {
    if let Some(d) = ring.damage() {
        return Some((d.file, format!("{d}; stopping its sources to repair it")));
    }
    let e = ring.control_refusal()?;
    Some((RingFile::Readers, format!("ring {name}: a reader attaching now would refuse its control file ({e}); stopping its sources to repair it")))
}

/// The control thread, stopped because `control.log` or `control.acks`
/// was damaged: it holds their writers, and a repair needs the writer
/// lease. It starts again, as at a start of helixd (`recover.rs`), once
/// both are repaired.
pub(super) struct Halted {
    /// Why starting it again failed last (logged once per cause).
    failing: Option<String>,
}

/// Whether `name` is one of the rings the control thread writes.
fn is_control_ring(name: &str) -> bool {
    name == LOG_RING || name == ACK_RING
}

impl Daemon {
    /// Takes every ring a peer damaged out of service and repairs it; run
    /// on each sweep tick. A ring found damaged has its writers stopped
    /// (its sources, or the control thread) and helixd's attachment
    /// dropped; then, on this tick or a later one, it is repaired and its
    /// writers start again. Other rings run on throughout.
    pub fn heal(&mut self) {
        let found: Vec<(String, RingFile, String)> = self
            .rings
            .iter()
            .filter_map(|(name, ring)| broken(name, ring).map(|(file, why)| (name.clone(), file, why)))
            .collect();
        for (name, file, why) in found {
            error!("{why}");
            for r in self.sources.iter_mut().filter(|r| r.config.ring == name) {
                r.stop();
            }
            if is_control_ring(&name) {
                self.halt_control(&name, file);
            }
            let kept = self.rings.remove(&name).filter(|_| file == RingFile::Readers).map(|r| r.geometry().clone());
            self.repairs.insert(name, Repair { file, kept, waiting_logged: false });
        }
        let pending: Vec<String> = self.repairs.keys().cloned().collect();
        for name in pending {
            if let Some(ring) = self.repair(&name) {
                self.repairs.remove(&name);
                self.rings.insert(name.clone(), ring);
                let of_ring: Vec<usize> =
                    (0..self.sources.len()).filter(|&i| self.sources[i].config.ring == name).collect();
                for i in of_ring {
                    let cfg = self.sources[i].config.clone();
                    match self.sources[i].restarted(&self.rings[&name], &self.plant) {
                        Ok(r) => {
                            info!("source {} writing ring {name} again", describe(&cfg.kind));
                            self.sources[i] = r;
                            self.share_sources();
                        }
                        Err(e) => match &mut self.sources[i].never_started {
                            // Tried again at each health check, as at a start.
                            Some(why) => {
                                *why = format!("{e:#}");
                                error!("source for ring {name} cannot start: {why}; retrying");
                            }
                            None => error!("source for ring {name} cannot restart: {e:#}"),
                        },
                    }
                }
            }
        }
        self.resume_control();
    }

    /// Repairs the damaged ring `name`: a destroyed control region is
    /// replaced (`Ring::repair_readers`: the frames and the sequence
    /// survive); a damaged data region, or a ring the repair cannot attach,
    /// is recreated (its sequence starts again at 1). `None` to try again
    /// on the next tick: a live process holds the writer lease, a system
    /// call failed, or the new control region was broken again at once.
    fn repair(&mut self, name: &str) -> Option<Ring> {
        let ns = &self.config.namespace;
        let repair = self.repairs.get_mut(name)?;
        let why = match repair.file {
            RingFile::Readers => match Ring::repair_readers(ns, name) {
                Ok(ring) => {
                    warn!(
                        "ring {name} repaired: a new control region (@readers), its frames and sequence kept \
                         (next sequence {}); its readers must attach again",
                        ring.stats().published + 1
                    );
                    return Some(ring);
                }
                Err(e @ (RepairError::Lease(_) | RepairError::Io { .. } | RepairError::BrokenAgain(_))) => {
                    if !std::mem::replace(&mut repair.waiting_logged, true) {
                        warn!("ring {name}: cannot repair it yet: {e}; trying again on every sweep");
                    }
                    return None;
                }
                Err(RepairError::Attach(e)) => format!("it cannot be repaired ({e})"),
            },
            RingFile::Data => "its data region is damaged, which cannot be repaired".to_owned(),
        };
        let rc = self.config.ring(name).expect("a damaged ring is a configured one");
        match Ring::recreate(ns, name, &rc.options) {
            Ok(ring) => {
                error!(
                    "ring {name}: {why}; recreated it (/dev/shm/{ns}.{name}): its frames are lost and its \
                     sequence starts again at 1"
                );
                Some(ring)
            }
            Err(e) => {
                if !std::mem::replace(&mut repair.waiting_logged, true) {
                    error!("ring {name}: {why}, and cannot be recreated yet: {e}; trying again on every sweep");
                }
                None
            }
        }
    }

    /// Stops the control thread for the repair of `name` (one of its
    /// rings), saying what becomes of the commands it had taken.
    fn halt_control(&mut self, name: &str, file: RingFile) {
        let Some(mut control) = self.control.take() else { return };
        let left = control.stop();
        self.halted = Some(Halted { failing: None });
        warn!("control: {name} is damaged; commands wait in their lanes until it is repaired");
        // A record whose audit record never reached the log, or went with
        // its data region, is known to nobody now: no answer is given, and
        // the window that would have answered a repeat is gone with the
        // thread.
        let log_lost = name == LOG_RING && file == RingFile::Data;
        let lost = left.unlogged + if log_lost { left.unanswered } else { 0 };
        if lost > 0 {
            error!(
                "control: commands taken from their lanes whose audit records did not reach control.log or went \
                 with it: {lost}; their senders get no answer, and a repeat of one is taken as a new command"
            );
        }
        if left.unanswered > 0 && !log_lost {
            warn!(
                "control: commands audited and not answered yet: {}; they are finished once the control path \
                 runs again",
                left.unanswered
            );
        }
    }

    /// Starts the control thread again once none of its rings awaits a
    /// repair: the journal is read again and what `control.log` holds
    /// unanswered is finished, as at a start of helixd.
    fn resume_control(&mut self) {
        if self.halted.is_none() || self.repairs.keys().any(|name| is_control_ring(name)) {
            return;
        }
        // A reload cannot change `[control]`: it is still configured.
        let Some(cfg) = &self.config.control else { return };
        let ns = &self.config.namespace;
        let started = Journal::open(&cfg.journal_path(ns)).and_then(|(journal, recovered)| {
            let plant = journal.plant();
            let control = ControlThread::start(ns, cfg, &self.rings, self.registry.clone(), (journal, recovered))?;
            Ok((control, plant))
        });
        match started {
            Ok((control, plant)) => {
                // The reopened journal's plant state is the one commands
                // change from now on; sources restore from it.
                self.plant = plant;
                self.control = Some(control);
                self.halted = None;
                info!("control: control.log and control.acks repaired; taking commands again");
            }
            Err(e) => {
                let why = format!("{e:#}");
                let halted = self.halted.as_mut().expect("checked above");
                if halted.failing.as_ref() != Some(&why) {
                    error!("control: cannot take commands again yet: {why}; trying again on every sweep");
                }
                halted.failing = Some(why);
            }
        }
    }
}
