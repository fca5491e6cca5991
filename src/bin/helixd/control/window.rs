//! The window of recent requests: each (uid, request id) helixd decided,
//! its verdict and, once sent, its answer, so that a request seen again is
//! answered with the first answer and never applied twice.

use std::collections::{HashMap, VecDeque};

use helix::control::{Ack, Reason};

/// Requests remembered, at most (the oldest are forgotten first): as many
/// as `control.log` holds in the default configuration.
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
    order: VecDeque<(u32, u64)>,
}

impl Window {
    /// The request, if seen before.
    pub fn seen(&self, uid: u32, request: u64) -> Option<Seen> {
        self.entries.get(&(uid, request)).map(|e| e.seen)
    }

    /// Remembers a first request and its verdict.
    pub fn insert(&mut self, uid: u32, request: u64, verdict: Result<(), Reason>) {
        if self.order.len() >= WINDOW {
            if let Some(old) = self.order.pop_front() {
                self.entries.remove(&old);
            }
        }
        self.order.push_back((uid, request));
        self.entries.insert((uid, request), Entry { seen: Seen { verdict, ack: None }, waiting: 0 });
    }

    /// Remembers a request answered before (by a helixd before this one).
    pub fn remember(&mut self, ack: &Ack) {
        let verdict = ack.outcome().unwrap_or(Err(Reason::SourceDown));
        self.insert(ack.uid, ack.request, verdict);
        self.answered(ack);
    }

    /// The answers given, oldest first (what the journal keeps).
    pub fn answers(&self) -> impl Iterator<Item = Ack> + '_ {
        self.order.iter().filter_map(|k| self.entries.get(k)?.seen.ack)
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
                e.seen.ack = Some(*ack);
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
        }
        assert_eq!(w.seen(1000, 7), None);
        assert!(w.seen(2, 100).is_some());
    }
}
