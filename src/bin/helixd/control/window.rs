//! The window of recent requests: each (uid, request id) helixd decided,
//! its verdict and, once sent, its answer, so that a request seen again is
//! answered with the first answer and never applied twice.
//!
//! Room is shared fairly among the uids that send: when [`WINDOW`]
//! answers are held, the uid holding the most forgets its first answered.
//! A sender's flood of cheap (rejected) commands pushes out its own
//! answers, never another user's while it holds more than they do, so
//! that user's retry of an answered request is still known for a repeat.
//! (Found by review: one window, first answered first forgotten for all
//! uids, let 65,536 rejected commands of one user make another's retry
//! apply a second time.) Recovery does not rely on the window to know
//! what was answered: the journal's mark says (`journal.rs`).

use std::collections::{BTreeSet, HashMap, VecDeque};

use helix::control::{Ack, Reason};

/// Answered requests remembered, at most, over all uids (the uid holding
/// most forgets first; see the module). A request not answered yet is
/// never forgotten, however many others come meanwhile (a repeat of it
/// must wait for its answer, not be taken for a new request); those are
/// at most the commands on their way, which `control.log`'s room bounds.
pub const WINDOW: usize = 65_536;

/// What is known of a request seen before.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Seen {
    verdict: Result<(), Reason>,
    /// Its answer, once published.
    pub ack: Option<Ack>,
}

impl Seen {
    /// The first verdict.
    pub fn verdict(&self) -> Result<(), Reason> {
        self.verdict
    }
}

#[derive(Debug)]
struct Entry {
    seen: Seen,
    /// Repeats that came before the answer: each gets it once it exists.
    waiting: u32,
    /// When it was answered, counted in answers (what orders
    /// [`Window::answers`]).
    answered_at: u64,
}

/// Recent requests by (uid, request id).
#[derive(Debug, Default)]
pub struct Window {
    entries: HashMap<(u32, u64), Entry>,
    /// Each uid's answered requests, in the order they were answered.
    answered: HashMap<u32, VecDeque<u64>>,
    /// (answered requests held, uid) for each uid holding any: the last is
    /// the one to forget from.
    holding: BTreeSet<(usize, u32)>,
    /// Answered requests held, over all uids.
    held: usize,
    /// Answers given so far (the next one's `answered_at`).
    answers_given: u64,
}

impl Window {
    /// The request, if seen before.
    pub fn seen(&self, uid: u32, request: u64) -> Option<Seen> {
        self.entries.get(&(uid, request)).map(|e| e.seen)
    }

    /// Remembers a first request and its verdict (forgetting an answered
    /// request of the uid holding the most if [`WINDOW`] are held). One
    /// held already is forgotten first.
    pub fn insert(&mut self, uid: u32, request: u64, verdict: Result<(), Reason>) {
        self.forget(uid, request);
        if self.held >= WINDOW {
            self.forget_one();
        }
        let entry = Entry { seen: Seen { verdict, ack: None }, waiting: 0, answered_at: 0 };
        self.entries.insert((uid, request), entry);
    }

    /// Forgets the first answered request of the uid holding the most.
    fn forget_one(&mut self) {
        let Some(&(count, uid)) = self.holding.last() else { return };
        let queue = self.answered.get_mut(&uid).expect("a uid holding answers has a queue");
        let request = queue.pop_front().expect("a uid holding answers has one");
        if queue.is_empty() {
            self.answered.remove(&uid);
        }
        self.entries.remove(&(uid, request));
        self.recount(uid, count, count - 1);
        self.held -= 1;
    }

    /// Forgets the request, if it is held.
    fn forget(&mut self, uid: u32, request: u64) {
        let Some(e) = self.entries.remove(&(uid, request)) else { return };
        if e.seen.ack.is_none() {
            return;
        }
        let queue = self.answered.get_mut(&uid).expect("a uid holding answers has a queue");
        let at = queue.iter().position(|&r| r == request).expect("an answered request is in its uid's queue");
        queue.remove(at);
        let count = queue.len();
        if count == 0 {
            self.answered.remove(&uid);
        }
        self.recount(uid, count + 1, count);
        self.held -= 1;
    }

    /// Moves `uid` from `old` answers held to `new` in the index.
    fn recount(&mut self, uid: u32, old: usize, new: usize) {
        if old > 0 {
            self.holding.remove(&(old, uid));
        }
        if new > 0 {
            self.holding.insert((new, uid));
        }
    }

    /// Remembers a request answered before (by a helixd before this one).
    /// The journal holds a request's answer once, unless a helixd that
    /// had forgotten it took it for a new one: the later answer is kept.
    pub fn remember(&mut self, ack: &Ack) {
        let verdict = ack.outcome().unwrap_or(Err(Reason::SourceDown));
        self.insert(ack.uid, ack.request, verdict);
        self.answered(ack);
    }

    /// The answers held, first answered first (what the journal keeps).
    pub fn answers(&self) -> impl Iterator<Item = Ack> + '_ {
        let mut held: Vec<(u64, Ack)> =
            self.entries.values().filter_map(|e| Some((e.answered_at, e.seen.ack?))).collect();
        held.sort_unstable_by_key(|&(at, _)| at);
        held.into_iter().map(|(_, ack)| ack)
    }

    /// A repeat came before the first answer: it gets the answer when the
    /// first does.
    pub fn wait(&mut self, uid: u32, request: u64) {
        if let Some(e) = self.entries.get_mut(&(uid, request)) {
            e.waiting += 1;
        }
    }

    /// The first answer; returns how many repeats were waiting for it.
    pub fn answered(&mut self, ack: &Ack) -> u32 {
        let Some(e) = self.entries.get_mut(&(ack.uid, ack.request)) else { return 0 };
        let waiting = std::mem::take(&mut e.waiting);
        // The first answer stays the answer.
        if e.seen.ack.is_none() {
            e.seen.ack = Some(*ack);
            e.answered_at = self.answers_given;
            self.answers_given += 1;
            let queue = self.answered.entry(ack.uid).or_default();
            queue.push_back(ack.request);
            let count = queue.len();
            self.recount(ack.uid, count - 1, count);
            self.held += 1;
        }
        waiting
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(w: &mut Window, uid: u32, request: u64) {
        w.insert(uid, request, Err(Reason::NotAllowed));
        w.answered(&Ack { uid, request, ..bytemuck::Zeroable::zeroed() });
    }

    #[test]
    fn a_repeat_is_known_by_uid_and_request_and_the_oldest_of_one_sender_are_forgotten() {
        let mut w = Window::default();
        w.insert(1000, 7, Ok(()));
        assert_eq!(w.seen(1000, 7).map(|s| s.verdict()), Some(Ok(())));
        assert_eq!(w.seen(1001, 7), None, "another uid's request 7 is another request");
        w.wait(1000, 7);
        w.wait(1000, 7);
        let ack = Ack { uid: 1000, request: 7, verdict: 1, ..bytemuck::Zeroable::zeroed() };
        assert_eq!(w.answered(&ack), 2);
        assert_eq!(w.answered(&ack), 0);
        assert_eq!(w.seen(1000, 7).and_then(|s| s.ack), Some(ack));
        for r in 0..WINDOW as u64 + 1 {
            rejected(&mut w, 1000, r + 100);
        }
        assert_eq!(w.seen(1000, 7), None, "its first answered is forgotten first");
        assert_eq!(w.seen(1000, 100), None);
        assert!(w.seen(1000, 101).is_some());
        assert_eq!(w.answers().count(), WINDOW);
    }

    #[test]
    fn one_senders_flood_forgets_its_own_answers_not_anothers() {
        let mut w = Window::default();
        let acks: Vec<Ack> =
            (1..=3).map(|uid| Ack { uid, request: 7, verdict: 1, ..bytemuck::Zeroable::zeroed() }).collect();
        for a in &acks {
            w.insert(a.uid, a.request, Ok(()));
            w.answered(a);
        }
        // Uid 2 floods: twice the window of cheap rejected commands.
        for r in 0..2 * WINDOW as u64 {
            rejected(&mut w, 2, r + 100);
        }
        assert_eq!(w.seen(1, 7).and_then(|s| s.ack), Some(acks[0]), "uid 1's answer outlives uid 2's flood");
        assert_eq!(w.seen(3, 7).and_then(|s| s.ack), Some(acks[2]));
        assert_eq!(w.seen(2, 7), None, "the flooding uid forgets its own first");
        assert!(w.seen(2, 100 + 2 * WINDOW as u64 - 1).is_some());
        assert_eq!(w.answers().count(), WINDOW, "the window holds no more than its room");
        // Two floods share the room: each keeps about half.
        for r in 0..WINDOW as u64 {
            rejected(&mut w, 3, r + 100);
        }
        let of = |uid| w.answers().filter(|a| a.uid == uid).count();
        assert_eq!((of(1), of(2) + of(3)), (1, WINDOW - 1));
        assert!(of(2).abs_diff(of(3)) <= 1, "{} and {}", of(2), of(3));
        // The journal is written first answered first.
        let at: Vec<(u32, u64)> = w.answers().map(|a| (a.uid, a.request)).collect();
        assert_eq!(at[0], (1, 7));
        assert_eq!(at.last(), Some(&(3, 99 + WINDOW as u64)));
    }

    #[test]
    fn a_request_not_answered_yet_is_not_forgotten_however_many_come_meanwhile() {
        let mut w = Window::default();
        w.insert(1000, 7, Ok(()));
        // A flood of other requests, each answered at once (rejected).
        for r in 0..2 * WINDOW as u64 {
            rejected(&mut w, 2, r);
        }
        assert_eq!(w.seen(1000, 7).map(|s| s.verdict()), Some(Ok(())), "still on its way: a repeat must wait");
        w.wait(1000, 7);
        let ack = Ack { uid: 1000, request: 7, verdict: 1, ..bytemuck::Zeroable::zeroed() };
        assert_eq!(w.answered(&ack), 1, "the repeat gets the first answer");
        assert_eq!(w.answers().count(), WINDOW + 1);
        assert_eq!(w.answers().last(), Some(ack), "answered last");
        w.insert(3, 1, Ok(()));
        assert_eq!(w.answers().count(), WINDOW, "one is forgotten");
        assert_eq!(w.seen(1000, 7).and_then(|s| s.ack), Some(ack), "from the uid holding the most");
    }
}
