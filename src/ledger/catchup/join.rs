//! The decision at the heart of a catch-up: given the sequence a reader
//! needs next, what the ledger has made visible and what the ring still
//! holds, where that sequence comes from. Pure, so that it is tested
//! against a model (below) apart from files and shared memory.

use std::ops::Range;

/// Where the next sequence comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The ledger has it: read on from the ledger.
    Ledger,
    /// The ledger has nothing more yet and the ring still holds it (or it
    /// is the next one the writer publishes): join the ring there.
    Ring,
    /// Neither has it yet, but the ledger will: it records every sequence
    /// of the ring (as a frame, or a GAP), and its visible end is behind.
    Wait,
    /// No source will ever have it: the ledger starts after it (pruned or
    /// never recorded) and the ring no longer holds it. The first sequence
    /// a source does hold is `resume_at`.
    Lost {
        /// The first sequence the ledger or the ring holds after it.
        resume_at: u64,
    },
    /// The writer has not published the sequence before it: it is in the
    /// future.
    Future {
        /// The next sequence the writer will publish.
        head: u64,
    },
}

/// Where sequence `next` comes from, given the ledger's visible sequences
/// `ledger` (`first..end`: every one of them recorded as a frame or a GAP;
/// empty if it has recorded none of this ring incarnation yet) and the
/// ring's `oldest..=head` (`head`: the next sequence the writer publishes;
/// `oldest`: the oldest frame it still holds).
///
/// The ledger is preferred while it has the sequence: the join then
/// happens at the ledger's visible end, which trails the writer by about
/// one of its batches (it gates the writer), as far from the ring's oldest
/// frame as it can be.
pub fn decide(next: u64, ledger: Range<u64>, oldest: u64, head: u64) -> Source {
    if ledger.contains(&next) {
        Source::Ledger
    } else if next > head {
        Source::Future { head }
    } else if next >= oldest {
        Source::Ring
    } else if ledger.is_empty() || next >= ledger.end {
        // The ledger records every sequence after its end; one that has
        // recorded nothing yet records from where it joins (a GAP first if
        // it joined late).
        Source::Wait
    } else {
        Source::Lost { resume_at: ledger.start.min(oldest) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A world: the writer published `1..head`, the ring holds the last
    /// `capacity` of them, the ledger recorded `first..end` of them.
    fn world() -> impl Strategy<Value = (u64, u64, u64, u64, u64)> {
        (1u64..200, 1u64..64).prop_flat_map(|(head, capacity)| {
            let oldest = head.saturating_sub(capacity).max(1);
            (Just(head), Just(oldest), 1..=head, 0..=head + 1).prop_flat_map(move |(head, oldest, first, next)| {
                (Just(head), Just(oldest), Just(first), first..=head, Just(next))
            })
        })
    }

    proptest! {
        /// Each answer is one a model of the two sources allows: a source
        /// named holds the sequence, `Wait` only while the ledger will
        /// still record it, `Lost` only when nothing ever will hold it,
        /// and its `resume_at` is the first sequence a source holds.
        #[test]
        fn the_decision_agrees_with_the_sources((head, oldest, first, end, next) in world()) {
            let in_ledger = (first..end).contains(&next);
            let in_ring = (oldest..=head).contains(&next);
            match decide(next, first..end, oldest, head) {
                Source::Ledger => prop_assert!(in_ledger),
                Source::Ring => prop_assert!(in_ring && !in_ledger),
                Source::Wait => prop_assert!(!in_ledger && !in_ring && (first >= end || next >= end)),
                Source::Lost { resume_at } => {
                    prop_assert!(!in_ledger && !in_ring && next < first && first < end);
                    prop_assert!(resume_at > next);
                    prop_assert!((first..end).contains(&resume_at) || (oldest..=head).contains(&resume_at));
                    prop_assert!((next..resume_at).all(|s| !(first..end).contains(&s) && !(oldest..=head).contains(&s)));
                }
                Source::Future { head: h } => prop_assert!(next > head && h == head),
            }
        }

        /// A catch-up driven by the decision, against a model: a writer
        /// publishes into a ring of `capacity` slots, a ledger records
        /// behind it (losing what the ring overwrote first, as a GAP), the
        /// reader reads from `from`. Whatever the interleaving, the reader
        /// gets every sequence from `from` on exactly once, in order, each
        /// either as a frame or inside a gap the ledger recorded, and a gap
        /// only where the ledger recorded one.
        #[test]
        fn a_modelled_catch_up_is_contiguous_and_loses_only_what_the_ledger_lost(
            capacity in 1u64..16,
            steps in proptest::collection::vec((0u8..3, 1u64..8), 1..200),
            from in 1u64..20,
        ) {
            check_model(capacity, &steps, from)?;
        }
    }

    /// What the model reader got for one sequence.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Got {
        Frame,
        Gap,
    }

    fn check_model(capacity: u64, steps: &[(u8, u64)], from: u64) -> Result<(), TestCaseError> {
        // Writer: published 1..head. Ledger: recorded[s] for s in 1..end.
        let (mut head, mut end) = (1u64, 1u64);
        let mut recorded: Vec<Got> = vec![Got::Frame]; // index 0 unused
                                                       // The reader: the next sequence, joined to the ring or not.
        let (mut next, mut live) = (from, false);
        let mut got: Vec<(u64, Got)> = Vec::new();
        for &(what, n) in steps {
            match what {
                0 => head += n,
                1 => {
                    // The ledger reads up to n frames; what the ring
                    // overwrote before it read them is a GAP.
                    let oldest = head.saturating_sub(capacity).max(1);
                    while end < oldest {
                        recorded.push(Got::Gap);
                        end += 1;
                    }
                    for _ in 0..n.min(head - end) {
                        recorded.push(Got::Frame);
                        end += 1;
                    }
                }
                _ => {
                    for _ in 0..n {
                        let oldest = head.saturating_sub(capacity).max(1);
                        if live && next < oldest {
                            // Overrun while live: back to the ledger.
                            live = false;
                        }
                        if live {
                            if next == head {
                                break;
                            }
                            got.push((next, Got::Frame));
                            next += 1;
                            continue;
                        }
                        match decide(next, 1..end, oldest, head) {
                            Source::Ledger => {
                                got.push((next, recorded[next as usize]));
                                next += 1;
                            }
                            Source::Ring => live = true,
                            Source::Wait => break,
                            Source::Lost { .. } => prop_assert!(false, "the model's ledger starts at 1"),
                            Source::Future { .. } => break,
                        }
                    }
                }
            }
        }
        for (i, &(seq, g)) in got.iter().enumerate() {
            prop_assert_eq!(seq, from + i as u64, "contiguous, no duplicate");
            if g == Got::Gap {
                prop_assert_eq!(recorded[seq as usize], Got::Gap, "a gap only where the ledger has one");
            }
        }
        Ok(())
    }
}
