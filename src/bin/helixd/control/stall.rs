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

/// A gating reader found holding the log full: where, and since when at
/// this cursor.
#[derive(Debug, Clone, Copy)]
struct Blocker {
    index: usize,
    pid: u32,
    cursor: u64,
    since: Instant,
}

/// The log's blockers as last seen.
#[derive(Debug, Default)]
pub(super) struct LogStalls {
    blockers: Vec<Blocker>,
}

impl LogStalls {
    /// Looks at `view`'s gating readers (`log` is its writer), for a
    /// thread that takes records only while the log has room for `want`
    /// (one a lane of the control ring): each one, but `audit_reader`, that
    /// keeps that room from the log (the `want` records after the last one
    /// published reuse slots it has not read) and has not moved for the
    /// ring's stall timeout is demoted, and said. Called about once a
    /// second.
    pub(super) fn check(&mut self, log: &Writer, view: &RingView, audit_reader: Option<&str>, want: u64, now: Instant) {
        let g = view.geometry();
        let stall = Duration::from_nanos(g.stall_timeout_ns);
        let stats = view.stats();
        // Sequence `published + want` reuses the slot of that minus
        // `capacity`, which every gating cursor must be past.
        let need = (stats.published + want + 1).saturating_sub(g.capacity);
        let blocking: Vec<_> = stats
            .readers
            .iter()
            .filter(|r| r.alive && r.gating && r.cursor < need && Some(r.name.as_str()) != audit_reader)
            .collect();
        let same = |b: &Blocker, index: usize, pid: u32| b.index == index && b.pid == pid;
        // A reader that moved, left, or no longer blocks starts again.
        self.blockers.retain(|b| blocking.iter().any(|r| same(b, r.index, r.pid) && r.cursor == b.cursor));
        for r in blocking {
            match self.blockers.iter().find(|b| same(b, r.index, r.pid)) {
                None => {
                    let b = Blocker { index: r.index, pid: r.pid, cursor: r.cursor, since: now };
                    self.blockers.push(b)
                }
                Some(b) if now.saturating_duration_since(b.since) >= stall => {
                    if log.demote(r.index, r.pid) {
                        warn!(
                            "control: demoted reader {:?} (pid {}) of control.log from gating: it held the log full \
                             at sequence {} for {:.1} s without reading (the ring's stall timeout is {:.1} s), and \
                             every command waited",
                            r.name,
                            r.pid,
                            r.cursor,
                            now.saturating_duration_since(b.since).as_secs_f64(),
                            stall.as_secs_f64()
                        );
                    }
                }
                Some(_) => {}
            }
        }
    }
}
