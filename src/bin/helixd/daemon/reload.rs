//! helixd's reload (SIGHUP): the new configuration taken as far as a
//! running daemon can take it, or refused with the old one kept.

use anyhow::{bail, Context, Result};
use tracing::{error, info, warn};

use helix::Ring;

use super::{log_opened, Daemon};
use crate::config::{Config, RingConfig};
use crate::rings::{open_or_create, Opened};
use crate::source::{describe, start_source, Running};

impl Daemon {
    /// Applies a new configuration: adds rings, retires removed ones, and
    /// restarts changed sources. On error the old configuration stays.
    pub fn reload(&mut self, new: Config) -> Result<()> {
        refuse_lost_file(&self.config.path, &new.path)?;
        let ns = self.config.namespace.clone();
        if new.namespace != ns {
            bail!("the namespace cannot change while running ({} → {}); restart helixd", ns, new.namespace);
        }
        // Its thread holds control.log and control.acks for its life: a
        // reload that dropped them would retire (unlink) the rings it
        // writes, and commands would be audited on rings nobody can open.
        if new.control != self.config.control {
            bail!("[control] cannot change while running (the control thread writes control.log and control.acks); restart helixd");
        }
        crate::preflight::memory(&new)?;
        self.refuse_shape_changes(&new)?;
        // Create the new rings first: if one fails, keep the old.
        let added = self.open_added(&new)?;
        // Then who may open a ring, given to its files: last of what can
        // fail, so that a reload refused changes nobody's access. One that
        // cannot be given refuses the reload, since the next start would
        // fail on it.
        if let Err(e) = self.permit_changed(&new) {
            self.abandon_added(added);
            return Err(e);
        }
        for rc in &new.rings {
            if let Some(old) = self.config.ring(&rc.name) {
                say_changed(old, rc);
            }
        }
        self.stop_changed_sources(&new);
        for (name, ring, how) in added {
            log_opened(&ns, &ring, how);
            self.rings.insert(name, ring);
        }
        let retired: Vec<String> =
            self.rings.keys().chain(self.repairs.keys()).filter(|n| new.ring(n).is_none()).cloned().collect();
        for name in retired {
            self.rings.remove(&name);
            self.repairs.remove(&name);
            match Ring::unlink(&ns, &name) {
                Ok(()) => info!(
                    "ring {name} retired (removed from the configuration); attached processes keep their mappings"
                ),
                Err(e) => error!("ring {name}: cannot remove: {e}"),
            }
        }
        self.start_new_sources(&new);
        self.config = new;
        self.share_sources();
        Ok(())
    }

    /// Gives the running rings whose mode or group `new` changes their new
    /// access; if one cannot be given, gives those already changed their
    /// old access back and fails.
    fn permit_changed(&self, new: &Config) -> Result<()> {
        let ns = &self.config.namespace;
        let mut changed = Vec::new();
        for rc in &new.rings {
            let Some(old) = self.config.ring(&rc.name) else { continue };
            if (old.options.mode, old.options.group) == (rc.options.mode, rc.options.group) {
                continue;
            }
            if let Err(e) = crate::rings::permit(ns, rc) {
                // It may have given one of its files the new access.
                for old in changed.into_iter().chain([old]) {
                    if let Err(e) = crate::rings::permit(ns, old) {
                        error!("{e:#}; its new access stays");
                    }
                }
                return Err(e);
            }
            changed.push(old);
        }
        Ok(())
    }

    /// Undoes [`open_added`](Self::open_added) for a reload refused after
    /// it: removes the rings it created (those it adopted stay).
    fn abandon_added(&self, added: Vec<(String, Ring, Opened)>) {
        for (name, ring, how) in added {
            drop(ring);
            if how != Opened::Adopted {
                let _ = Ring::unlink(&self.config.namespace, &name);
            }
        }
    }

    /// A running ring's shape changes only when it is recreated, and a
    /// start refuses a ring that differs unless `recreate = true`: a reload
    /// that said nothing would have the next (unattended) restart fail.
    /// A ring awaiting the repair of its control file keeps its shape too.
    /// (Found by review: one was not judged, and the next start refused
    /// it.)
    fn refuse_shape_changes(&self, new: &Config) -> Result<()> {
        for rc in &new.rings {
            let kept = self.repairs.get(&rc.name).and_then(|r| r.kept.as_ref());
            let Some(geometry) = self.rings.get(&rc.name).map(|r| r.geometry()).or(kept) else { continue };
            let diffs = crate::preflight::differences(geometry, &rc.options);
            if !diffs.is_empty() && !rc.recreate {
                bail!(
                    "ring {}: the configuration differs from the running ring ({}), which a start would refuse; \
                     set recreate = true to have the next start recreate it, or keep its shape",
                    rc.name,
                    diffs.join("; ")
                );
            }
        }
        Ok(())
    }

    /// Stops the sources `new` drops or changes (a source whose ring is
    /// retired is dropped with it); one whose commands only go elsewhere
    /// now keeps running.
    fn stop_changed_sources(&mut self, new: &Config) {
        let mut keep = Vec::new();
        for mut r in std::mem::take(&mut self.sources) {
            if new.sources.contains(&r.config) {
                keep.push(r);
            } else if let Some(sc) = new.sources.iter().find(|sc| sc.same_ingest(&r.config)) {
                // A restart would drop what its socket holds.
                info!("source {} for ring {}: its ingest goes on", describe(&sc.kind), sc.ring);
                r.config = sc.clone();
                keep.push(r);
            } else {
                r.retire();
                info!("source {} for ring {} stopped", describe(&r.config.kind), r.config.ring);
            }
        }
        self.sources = keep;
    }

    /// Starts the sources `new` adds or changed. One that cannot start is
    /// kept, not running: it is tried again at each health check
    /// ([`Running::never_started`]).
    fn start_new_sources(&mut self, new: &Config) {
        for sc in &new.sources {
            if self.sources.iter().any(|r| &r.config == sc) {
                continue;
            }
            let Some(ring) = self.rings.get(&sc.ring) else {
                // Its ring is being repaired: it starts with it, and, never
                // started, is not held against the watchdog if it cannot
                // (found by review: it was, and a port taken meanwhile had
                // systemd kill helixd, whose restart refused the
                // configuration, taking every ring down).
                let mut r = Running::stopped(sc);
                r.never_started = Some("its ring awaits repair".into());
                self.sources.push(r);
                continue;
            };
            match start_source(sc, ring, &self.plant) {
                Ok(r) => {
                    info!("source {} writing ring {}", describe(&sc.kind), sc.ring);
                    self.sources.push(r);
                }
                Err(e) => {
                    error!("source {} for ring {} cannot start: {e:#}; retrying", describe(&sc.kind), sc.ring);
                    let mut r = Running::stopped(sc);
                    r.never_started = Some(format!("{e:#}"));
                    self.sources.push(r);
                }
            }
        }
    }

    /// Creates or adopts the rings `new` adds; if one fails, removes those
    /// it created and fails.
    fn open_added(&self, new: &Config) -> Result<Vec<(String, Ring, Opened)>> {
        let ns = &self.config.namespace;
        let mut added = Vec::new();
        let present = |name: &str| self.rings.contains_key(name) || self.repairs.contains_key(name);
        // Each one judged first, changing nothing (`rings::check`).
        for rc in new.rings.iter().filter(|rc| !present(&rc.name)) {
            crate::rings::check(ns, rc).with_context(|| format!("{}:{}", new.path.display(), rc.line))?;
        }
        for rc in new.rings.iter().filter(|rc| !present(&rc.name)) {
            let opened = open_or_create(ns, rc).and_then(|(ring, how)| match how {
                Opened::Adopted => crate::rings::permit(ns, rc).map(|()| (ring, how)),
                _ => Ok((ring, how)),
            });
            match opened.with_context(|| format!("{}:{}", new.path.display(), rc.line)) {
                Ok((ring, how)) => added.push((rc.name.clone(), ring, how)),
                Err(e) => {
                    self.abandon_added(added);
                    return Err(e);
                }
            }
        }
        Ok(added)
    }
}

/// Says what a reload changed of a running ring `old`, and when it takes
/// effect. (Found by review: every change was said to wait for the ring's
/// recreation, `unlink_on_stop` too, which the next stop follows.)
fn say_changed(old: &RingConfig, new: &RingConfig) {
    let name = &new.name;
    // (Its mode and group were given to its files.)
    let mut rest = new.options.clone();
    (rest.mode, rest.group) = (old.options.mode, old.options.group);
    if old.options != rest {
        warn!("ring {name}: changed in the configuration; the change takes effect when the ring is recreated");
    }
    if old.unlink_on_stop != new.unlink_on_stop {
        let does = if new.unlink_on_stop { "removes its files" } else { "keeps its files" };
        info!("ring {name}: unlink_on_stop = {}: helixd's stop {does} from now on", new.unlink_on_stop);
    }
    if old.recreate != new.recreate {
        info!("ring {name}: recreate = {}: read at helixd's next start", new.recreate);
    }
}

/// Refuses the embedded default (a simulator) that the lookup of the
/// default file falls back on when there is none, while the configuration
/// running came from a file: that file was moved or deleted. (Found by
/// review: taken, it retired every configured ring, stopped the UDP
/// sources and fed the simulator's values into `telemetry`, which the
/// ledger recorded and the twin judged as the plant's, with no word of
/// why.)
fn refuse_lost_file(running: &std::path::Path, new: &std::path::Path) -> Result<()> {
    let embedded = std::path::Path::new(crate::shared::conf::EMBEDDED);
    if new == embedded && running != embedded {
        bail!(
            "{} is gone, and the embedded default (a simulator) is all there is in its place; put the file back, \
             or restart helixd to run the embedded default",
            running.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn a_configuration_file_gone_is_no_reason_to_run_the_embedded_default() {
        let (file, embedded) = (Path::new("/etc/helix/helix.toml"), Path::new(crate::shared::conf::EMBEDDED));
        let e = refuse_lost_file(file, embedded).unwrap_err().to_string();
        assert!(e.starts_with("/etc/helix/helix.toml is gone") && e.contains("put the file back"), "{e}");
        assert!(refuse_lost_file(file, file).is_ok());
        assert!(refuse_lost_file(embedded, embedded).is_ok(), "running the embedded default, it reloads it");
    }
}
