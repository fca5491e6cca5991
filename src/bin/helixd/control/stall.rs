//! A gating reader of `control.log` that holds it full. The control thread
//! never waits on the log (a full log leaves records queued), so the
//! library's stall rule, which a writer applies while it waits, never
//! runs there: a reader that joined the log as gating and stopped reading
//! held every command back for good. The thread applies the same rule
//! itself: a gating reader that has held the log full without reading for
//! the ring's stall timeout is demoted. The audit reader is spared: a
//! stalled ledger holds commands back by design (they act only once it
//! has read their records; demoted, it would never gate the log again).

use std::time::{Duration, Instant};

use helix::{RingView, Writer};
use tracing::warn;

/// A gating reader found holding the log full: where, the sequence it
/// must read past to make the room it held (`need`), and since when. As
/// the writer's own rule has it (`Stall` in the library's writer), the
/// clock runs until the reader is past that `need`, whatever its cursor
/// does meanwhile: one that reads a record now and then, or moves its
/// cursor back and forth, is demoted all the same.
#[derive(Debug, Clone, Copy)]
struct Blocker {
    index: usize,
    pid: u32,
    need: u64,
    since: Instant,
}

/// The log's blockers as last seen, and the readers demoted so far (by
/// entry and pid: a reader that sets its entry gating again is demoted
/// again, and said once).
#[derive(Debug, Default)]
pub(super) struct LogStalls {
    blockers: Vec<Blocker>,
    demoted: Vec<(usize, u32)>,
}

impl LogStalls {
    /// Looks at `view`'s gating readers (`log` is its writer), for a
    /// thread that takes records only while the log has room for `want`
    /// (one a lane of the control ring): each one, but `audit_reader`, that
    /// keeps that room from the log (the `want` records after the last one
    /// published reuse slots it has not read) and has not made it within
    /// the ring's stall timeout is demoted, and said. Called about once a
    /// second.
    pub(super) fn check(
        &mut self,
        log: &mut Writer,
        view: &RingView,
        audit_reader: Option<&str>,
        want: u64,
        now: Instant,
    ) {
        let g = view.geometry();
        let stall = Duration::from_nanos(g.stall_timeout_ns);
        let stats = view.stats();
        // Sequence `published + want` reuses the slot of that minus
        // `capacity`, which every gating cursor must be past.
        let need = stats.published.saturating_add(want + 1).saturating_sub(g.capacity);
        let blocking: Vec<_> = stats
            .readers
            .iter()
            .filter(|r| r.alive && r.gating && r.cursor < need && Some(r.name.as_str()) != audit_reader)
            .collect();
        // An entry whose reader left may be said again for its next one.
        self.demoted.retain(|&(index, pid)| stats.readers.iter().any(|r| r.index == index && r.pid == pid));
        let same = |b: &Blocker, index: usize, pid: u32| b.index == index && b.pid == pid;
        // A reader that made the room it held, left, or no longer gates
        // starts again.
        self.blockers.retain(|b| blocking.iter().any(|r| same(b, r.index, r.pid) && r.cursor < b.need));
        for r in blocking {
            match self.blockers.iter().find(|b| same(b, r.index, r.pid)) {
                None => self.blockers.push(Blocker { index: r.index, pid: r.pid, need, since: now }),
                Some(b) if now.saturating_duration_since(b.since) >= stall => {
                    if log.demote(r.index, r.pid) && !self.demoted.contains(&(r.index, r.pid)) {
                        // Bounded: one a reader entry (a pid the entry held).
                        self.demoted.retain(|&(index, _)| index != r.index);
                        self.demoted.push((r.index, r.pid));
                        warn!(
                            "control: demoted reader {:?} (pid {}) of control.log from gating: it held the log full \
                             for {:.1} s without reading through sequence {} (the ring's stall timeout is {:.1} s), and \
                             every command waited",
                            r.name,
                            r.pid,
                            now.saturating_duration_since(b.since).as_secs_f64(),
                            b.need - 1,
                            stall.as_secs_f64()
                        );
                    }
                }
                Some(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use helix::{Namespace, Policy, ReaderOptions, Ring, RingOptions};

    #[test]
    fn a_reader_that_reads_now_and_then_without_making_the_room_is_demoted_and_the_audit_reader_is_not() {
        let ns = Namespace::new(&format!("stall{}", std::process::id())).unwrap();
        let stall_timeout = Duration::from_secs(2);
        let opts =
            RingOptions { capacity: 8, max_payload: 8, policy: Policy::Block, stall_timeout, ..Default::default() };
        let ring = Ring::create(&ns, "log", &opts).unwrap();
        // The mapping stays; nothing is left in /dev/shm.
        Ring::unlink(&ns, "log").unwrap();
        let mut log = ring.writer().unwrap();
        let gating = |name| ReaderOptions { gating: true, ..ReaderOptions::named(name) };
        let mut squatter = ring.reader(&gating("squatter")).unwrap();
        let _audit = ring.reader(&gating("audit")).unwrap();
        for i in 0..8u64 {
            log.publish(&i.to_le_bytes()).unwrap();
        }
        let entry = |name: &str| ring.stats().readers.into_iter().find(|r| r.name == name).unwrap();
        let mut stalls = LogStalls::default();
        let t0 = Instant::now();
        // Room for 4 records wanted: every cursor must reach 5. The
        // squatter reads one a second; its clock runs on regardless.
        let mut check = |at: u64| stalls.check(&mut log, &ring, Some("audit"), 4, t0 + Duration::from_secs(at));
        check(0);
        squatter.try_read(&mut [0; 8]).unwrap();
        check(1);
        assert!(entry("squatter").gating, "demoted before its stall timeout");
        squatter.try_read(&mut [0; 8]).unwrap();
        check(2);
        let (squatter, audit) = (entry("squatter"), entry("audit"));
        assert!(squatter.demoted && !squatter.gating, "{squatter:?}");
        assert!(audit.gating && !audit.demoted, "{audit:?}");
    }
}
