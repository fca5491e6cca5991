//! What an exporter has counted lost of its ring (beside `export.rs`).

use crate::counters::Counters;

/// The sequences of a ring an exporter has counted (and said) as lost: a
/// publish sent again after a failure reads the same overrun again, and
/// its gap goes out again, but the loss is the ring's once. (Found by
/// review: each try counted it anew, so an exporter retrying through an
/// outage reported more sequences lost than its ring ever held. Then, a
/// high-water mark missed sequences a first try had sent as frames and a
/// retry found lost: the ranges counted are kept.)
#[derive(Debug, Default)]
pub(super) struct Lost {
    /// The ranges counted past the reader's release point, in order and
    /// apart (few: a retry's gaps, since the last acknowledgement).
    counted: Vec<(u64, u64)>,
}

impl Lost {
    /// Counts sequences `first..=last` but those counted already, and
    /// forgets those at or below `released` (acknowledged, never read
    /// again); how many are new.
    pub(super) fn count(&mut self, first: u64, last: u64, released: u64, counters: &Counters) -> u64 {
        self.counted.retain(|&(_, b)| b >= released);
        let known: u64 = self.counted.iter().map(|&(a, b)| (b.min(last) + 1).saturating_sub(a.max(first))).sum();
        let new = (last.saturating_sub(first) + 1).saturating_sub(known);
        self.counted.push((first, last));
        self.counted.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(self.counted.len());
        for &(a, b) in &self.counted {
            match merged.last_mut() {
                Some(m) if a <= m.1.saturating_add(1) => m.1 = m.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        self.counted = merged;
        Counters::add(&counters.gaps, new);
        new
    }
}

#[cfg(test)]
mod tests {
    use super::{Counters, Lost};

    /// A loss is counted once however often its gap is sent again, and a
    /// retry's gap over sequences a first try sent as frames counts them
    /// (found by review of the first version, a high-water mark: it did
    /// not); what is acknowledged is forgotten.
    #[test]
    fn a_loss_is_counted_once_and_every_sequence_of_it() {
        let (mut lost, counters) = (Lost::default(), Counters::default());
        let mut count = |first, last, released| lost.count(first, last, released, &counters);
        // A first try: frames 1..=10, then a gap of 11..=936.
        assert_eq!(count(11, 936, 1), 926);
        // Its retry from 1 finds 1..=936 overwritten: 1..=10 are new.
        assert_eq!(count(1, 936, 1), 10);
        assert_eq!(count(1, 936, 1), 0);
        assert_eq!(count(2000, 2009, 1), 10);
        assert_eq!(count(900, 2100, 1), 2100 - 900 + 1 - 37 - 10);
        // Acknowledged up to 3000: a gap there again (a ring made again,
        // its sequences anew) is new.
        assert_eq!(count(1, 5, 3000), 5);
        assert_eq!(counters.gaps.load(std::sync::atomic::Ordering::Relaxed), 926 + 10 + 10 + 1154 + 5);
    }
}
