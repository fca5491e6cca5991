//! The window of recent requests: each (uid, request id) helixd decided,
//! its verdict and, once sent, its answer, so that a request seen again is
//! answered with the first answer and never applied twice.

use std::collections::{HashMap, VecDeque};

use helix::control::{Ack, Reason};

/// Answered requests remembered, at most (the first answered are
/// forgotten first): as many as `control.log` holds in the default
/// configuration. A request not answered yet is never forgotten, however
/// many others come meanwhile (a repeat of it must wait for its answer,
/// not be taken for a new request); those are at most the commands on
/// their way, which `control.log`'s room bounds.
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
}

/// Recent requests by (uid, request id).
#[derive(Debug, Default)]
pub struct Window {
    entries: HashMap<(u32, u64), Entry>,
    /// The answered ones, in the order they were answered.
    answered: VecDeque<(u32, u64)>,
}

impl Window {
    /// The request, if seen before.
    pub fn seen(&self, uid: u32, request: u64) -> Option<Seen> {
        self.entries.get(&(uid, request)).map(|e| e.seen)
    }

    /// Remembers a first request and its verdict (forgetting the first
    /// answered request if [`WINDOW`] are).
    pub fn insert(&mut self, uid: u32, request: u64, verdict: Result<(), Reason>) {
        if self.answered.len() >= WINDOW {
            if let Some(old) = self.answered.pop_front() {
                self.entries.remove(&old);
            }
        }
        self.entries.insert((uid, request), Entry { seen: Seen { verdict, ack: None }, waiting: 0 });
    }

    /// Remembers a request answered before (by a helixd before this one).
    pub fn remember(&mut self, ack: &Ack) {
        let verdict = ack.outcome().unwrap_or(Err(Reason::SourceDown));
        self.insert(ack.uid, ack.request, verdict);
        self.answered(ack);
    }

    /// The answers given, first answered first (what the journal keeps).
    pub fn answers(&self) -> impl Iterator<Item = Ack> + '_ {
        self.answered.iter().filter_map(|k| self.entries.get(k)?.seen.ack)
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
        match self.entries.get_mut(&(ack.uid, ack.request)) {
            Some(e) => {
                if e.seen.ack.replace(*ack).is_none() {
                    self.answered.push_back((ack.uid, ack.request));
                }
                std::mem::take(&mut e.waiting)
            }
            None => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeat_is_known_by_uid_and_request_and_the_oldest_are_forgotten() {
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
        for r in 0..WINDOW as u64 {
            w.insert(2, r + 100, Err(Reason::UnknownStream));
            w.answered(&Ack { uid: 2, request: r + 100, ..bytemuck::Zeroable::zeroed() });
        }
        assert_eq!(w.seen(1000, 7), None);
        assert!(w.seen(2, 100).is_some());
    }

    #[test]
    fn a_request_not_answered_yet_is_not_forgotten_however_many_come_meanwhile() {
        let mut w = Window::default();
        w.insert(1000, 7, Ok(()));
        // A flood of other requests, each answered at once (rejected).
        for r in 0..2 * WINDOW as u64 {
            w.insert(2, r, Err(Reason::NotAllowed));
            w.answered(&Ack { uid: 2, request: r, ..bytemuck::Zeroable::zeroed() });
        }
        assert_eq!(w.seen(1000, 7).map(|s| s.verdict()), Some(Ok(())), "still on its way: a repeat must wait");
        w.wait(1000, 7);
        let ack = Ack { uid: 1000, request: 7, verdict: 1, ..bytemuck::Zeroable::zeroed() };
        assert_eq!(w.answered(&ack), 1, "the repeat gets the first answer");
        assert_eq!(w.answers().count(), WINDOW + 1);
        assert_eq!(w.answers().last(), Some(ack), "answered last, so kept longest");
        w.insert(3, 1, Ok(()));
        assert_eq!(w.answers().count(), WINDOW, "the first answered is forgotten");
    }
}
