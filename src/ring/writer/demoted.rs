//! The gating readers a writer demoted, and those it ignores until the
//! stall that demoted them ends (docs/abi.md §4.10).

use crate::layout::ReaderEntry;
use crate::sync::Ordering;

/// The gating readers this writer demoted, by entry: the owner's `state`
/// word and its `joined_ns` when the writer demoted it.
///
/// A demoted reader never gates again (docs/abi.md §4.10), but its
/// `gating` flag is a word of its own entry, which it (or any peer that
/// may write the reader table) can set back to "gating". The writer does
/// not take that from the flag: it ignores the flag of an entry it demoted
/// for as long as the entry has the same owner and the same join. A reader
/// that leaves and joins again is a new reader.
///
/// Except within the stall that demoted it: an entry demoted past the stall
/// timeout is ignored, whatever its owner or join, until that stall ends.
/// Otherwise a peer that rewrote the entry into a new gating reader each
/// time it was demoted (its owner, or its join time, changed) kept the
/// writer demoting it for ever, at full speed, never publishing. A reader
/// that truly joins there during the stall finds its first frames
/// overwritten, and is told so by an overrun.
pub(super) struct Demoted(Vec<Option<Demotion>>);

/// What the writer saw of an entry when it demoted it.
#[derive(Clone, Copy)]
struct Demotion {
    state: u32,
    joined_ns: u64,
    /// Demoted past the timeout of the stall in progress.
    this_stall: bool,
}

impl Demoted {
    pub(super) fn new(entries: usize) -> Demoted {
        Demoted(vec![None; entries])
    }

    /// Whether entry `index`, owned as `state` says, is one this writer
    /// demoted; forgets the record of an entry that changed owner or join
    /// (unless demoted in the stall in progress).
    pub(super) fn holds(&mut self, index: usize, state: u32, e: &ReaderEntry) -> bool {
        let Some(d) = self.0[index] else { return false };
        // Relaxed: the joiner wrote `joined_ns` before its activation,
        // which the caller's Acquire load of `state` saw.
        if d.this_stall || (d.state, d.joined_ns) == (state, e.joined_ns.load(Ordering::Relaxed)) {
            return true;
        }
        self.0[index] = None;
        false
    }

    pub(super) fn record(&mut self, index: usize, state: u32, joined_ns: u64, past_timeout: bool) {
        let this_stall = past_timeout || self.0[index].is_some_and(|d| d.this_stall);
        self.0[index] = Some(Demotion { state, joined_ns, this_stall });
    }

    /// The stall is over: entries are judged by owner and join again.
    pub(super) fn stall_ended(&mut self) {
        self.0.iter_mut().flatten().for_each(|d| d.this_stall = false);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn an_entry_demoted_past_the_stall_timeout_is_ignored_whatever_it_says_until_the_stall_ends() {
        // SAFETY: an entry is integers and atomic integers, for which all
        // zeros is a valid value.
        let e: ReaderEntry = unsafe { std::mem::zeroed() };
        e.joined_ns.store(7, Ordering::Relaxed);
        let mut d = Demoted::new(2);
        d.record(0, 5, 7, true);
        d.record(1, 5, 7, false);
        // Both rewritten into a new join.
        e.joined_ns.store(8, Ordering::Relaxed);
        assert!(d.holds(0, 5, &e) && d.holds(0, 6, &e), "demoted in this stall: ignored whatever its words");
        assert!(!d.holds(1, 5, &e), "demoted by the liveness check: a new join is a new reader");
        d.stall_ended();
        assert!(!d.holds(0, 5, &e), "the stall is over: judged by owner and join again");
    }
}
