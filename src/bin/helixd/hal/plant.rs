//! Commands as a source takes them (`docs/abi.md` §12.6): helixd's control
//! thread leaves [`Directive`]s in the source's [`Inbox`]; the source
//! applies them between two commits and hands back an [`Effect`] naming
//! the first frame written under them. And the plant's answer to a
//! setpoint: a first-order lag ([`Lag`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use helix::control::Op;

/// The fraction of the remaining distance to the setpoint a stream's level
/// moves with each of its samples.
pub const LAG_ALPHA: f64 = 0.1;

/// A command for a source, decided and audited.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Directive {
    /// The control thread's number for it, echoed in the [`Effect`].
    pub token: u64,
    /// What to do.
    pub op: Op,
    /// The stream (`set`, `release`).
    pub stream: u32,
    /// The setpoint or the rate.
    pub value: f64,
}

/// A directive applied: the first frame written under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Effect {
    /// The directive's token.
    pub token: u64,
    /// The ring sequence of the first frame written after it took effect.
    pub ring_seq: u64,
    /// `set`/`release`: the stream's first per-stream sequence under it.
    pub stream_seq: u64,
}

/// Directives waiting for a source, and the effects it reports. The source
/// looks at one flag per loop turn; the locks are taken only when it is set.
/// A source sleeping between its wake-ups sleeps here
/// ([`Inbox::sleep_until`]), so a directive wakes it at once rather than
/// at its next tick: that wait was most of a command's time to effect.
#[derive(Debug, Default)]
pub struct Inbox {
    waiting: AtomicBool,
    queue: Mutex<Vec<Directive>>,
    /// Signalled by [`Inbox::post`] (with `queue` held when the flag rose).
    posted: Condvar,
    done: Mutex<Vec<Effect>>,
    /// The source has stopped taking directives (its thread ended).
    closed: AtomicBool,
}

impl Inbox {
    /// Leaves `d` for the source.
    pub fn post(&self, d: Directive) {
        let mut queue = lock(&self.queue);
        queue.push(d);
        // Raised with the lock held: a sleeper checks it under the lock, so
        // it either sees it or is already waiting for the signal below.
        self.waiting.store(true, Ordering::Release);
        drop(queue);
        self.posted.notify_all();
    }

    /// The source's sleep: returns at `deadline_ns` (CLOCK_MONOTONIC) or
    /// as soon as a directive waits, whichever comes first.
    pub fn sleep_until(&self, deadline_ns: u64) {
        let mut queue = lock(&self.queue);
        loop {
            let now = helix::process::now_ns();
            if self.waiting.load(Ordering::Relaxed) || now >= deadline_ns {
                return;
            }
            let timeout = Duration::from_nanos(deadline_ns - now);
            queue = self.posted.wait_timeout(queue, timeout).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// Whether directives wait (the source's side: one load).
    pub fn is_waiting(&self) -> bool {
        self.waiting.load(Ordering::Relaxed)
    }

    /// The directives left since the last call (the source's side).
    pub fn take(&self) -> Option<Vec<Directive>> {
        if !self.waiting.load(Ordering::Acquire) {
            return None;
        }
        self.waiting.store(false, Ordering::Relaxed);
        Some(std::mem::take(&mut *lock(&self.queue)))
    }

    /// Reports applied directives (the source's side).
    pub fn report(&self, effects: impl IntoIterator<Item = Effect>) {
        lock(&self.done).extend(effects);
    }

    /// The effects reported since the last call.
    pub fn effects(&self) -> Vec<Effect> {
        std::mem::take(&mut *lock(&self.done))
    }

    /// Marks the inbox closed: the source takes nothing more.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Whether the source has stopped taking directives.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic elsewhere poisons nothing this data depends on.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A stream's level after a setpoint: from `from_level` at per-stream
/// sequence `from_seq`, `level(seq) = target + (from_level - target) ×
/// (1 - LAG_ALPHA)^(seq - from_seq)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lag {
    /// The setpoint.
    pub target: f64,
    /// The first per-stream sequence under it.
    pub from_seq: u64,
    /// The level at `from_seq`.
    pub from_level: f64,
}

impl Lag {
    /// The level at per-stream sequence `seq` (at or after `from_seq`).
    pub fn level(&self, seq: u64) -> f64 {
        let n = seq.saturating_sub(self.from_seq).min(i32::MAX as u64) as i32;
        let decay = (1.0 - LAG_ALPHA).powi(n);
        let level = self.target + (self.from_level - self.target) * decay;
        if level.is_finite() {
            level
        } else {
            // Two setpoints of opposite sign near f64::MAX: their distance
            // overflows (and infinity times a decay of 0 is NaN). The same
            // level, weighed without the distance.
            self.from_level * decay + self.target * (1.0 - decay)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setpoints_far_apart_give_finite_levels() {
        // 1e308 to -1e308: the distance overflowed to infinity, and a
        // stream stayed infinite, then NaN, for good.
        let lag = Lag { target: -1e308, from_seq: 0, from_level: 1e308 };
        assert_eq!(lag.level(0), 1e308);
        for n in [1, 10, 1000, 100_000] {
            assert!(lag.level(n).is_finite(), "level {n}: {}", lag.level(n));
        }
        assert_eq!(lag.level(100_000), -1e308);
    }

    #[test]
    fn the_level_moves_a_tenth_of_the_way_per_sample() {
        let lag = Lag { target: 50.0, from_seq: 10, from_level: 30.0 };
        assert_eq!(lag.level(10), 30.0);
        assert!((lag.level(11) - 32.0).abs() < 1e-12);
        assert!((lag.level(12) - 33.8).abs() < 1e-12);
        assert_eq!(lag.level(u64::MAX), 50.0);
    }

    /// A source asleep until its next tick wakes for a directive: the
    /// sleep is ten minutes, the watchdog one; only the post can end it.
    #[test]
    fn a_directive_wakes_a_sleeping_source() {
        let inbox = std::sync::Arc::new(Inbox::default());
        let (done, woke) = std::sync::mpsc::channel();
        let sleeper = {
            let inbox = inbox.clone();
            std::thread::spawn(move || {
                inbox.sleep_until(helix::process::now_ns() + 600_000_000_000);
                done.send(inbox.take()).unwrap();
            })
        };
        let d = Directive { token: 7, op: Op::Set, stream: 3, value: 1.5 };
        inbox.post(d);
        let taken = woke.recv_timeout(Duration::from_secs(60)).expect("the sleeping source was not woken by the post");
        assert_eq!(taken, Some(vec![d]));
        sleeper.join().unwrap();
        // Nothing posted: the sleep ends at its deadline.
        inbox.sleep_until(helix::process::now_ns() + 1_000_000);
        assert_eq!(inbox.take(), None);
    }

    #[test]
    fn an_inbox_hands_over_each_directive_once() {
        let inbox = Inbox::default();
        assert_eq!(inbox.take(), None);
        let d = Directive { token: 1, op: Op::Pause, stream: 0, value: 0.0 };
        inbox.post(d);
        assert_eq!(inbox.take(), Some(vec![d]));
        assert_eq!(inbox.take(), None);
        inbox.report([Effect { token: 1, ring_seq: 5, stream_seq: 0 }]);
        assert_eq!(inbox.effects().len(), 1);
        assert!(inbox.effects().is_empty());
    }
}
