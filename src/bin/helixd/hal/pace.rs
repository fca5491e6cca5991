//! Pacing a source that produces samples on a schedule (the simulator):
//! how many samples are due at a time, how late the oldest unwritten one
//! is, and when to wake next. Time comes from a [`Clock`], so the pacing
//! is tested on a clock the test moves by hand.

use std::time::Duration;

use super::plant::Inbox;

/// How much time's worth of samples a wake-up of the source publishes, at
/// least (a slower source wakes once per sample). Every wake-up costs the
/// source a sleep and a context switch, and each parked reader a wake-up;
/// a millisecond's worth keeps that a few percent of the work at 10,000
/// streams x 100 Hz while adding at most a millisecond between a sample
/// falling due and its publication (ingest-to-reader latency, measured
/// from the moment it is written, is not affected).
pub const TICK: Duration = Duration::from_millis(1);

/// The longest a source sleeps at once, so that it sees a stop request
/// promptly.
pub const MAX_SLEEP: Duration = Duration::from_millis(10);

/// Where time comes from.
pub trait Clock {
    /// CLOCK_MONOTONIC (or the test's clock), ns.
    fn now_ns(&mut self) -> u64;
    /// Returns at `t_ns` or a little later (at once if it has passed), or
    /// earlier when a directive is posted to `inbox`.
    fn sleep_until(&mut self, t_ns: u64, inbox: &Inbox);
}

/// The real clock: CLOCK_MONOTONIC and a sleeping thread.
pub struct Monotonic;

impl Clock for Monotonic {
    fn now_ns(&mut self) -> u64 {
        helix::process::now_ns()
    }

    fn sleep_until(&mut self, t_ns: u64, inbox: &Inbox) {
        inbox.sleep_until(t_ns);
    }
}

/// The schedule of a source writing `total_rate` samples/s from
/// `start_ns`: sample g is due `g / total_rate` s after the start.
#[derive(Debug, Clone, Copy)]
pub struct Pacer {
    start_ns: u64,
    total_rate: f64,
    /// Samples a wake-up waits for (at least one).
    per_wake: u64,
}

impl Pacer {
    /// The schedule from `start_ns`, waking every [`TICK`] (or per sample,
    /// if samples come slower).
    pub fn new(start_ns: u64, total_rate: f64) -> Pacer {
        Pacer::with_tick(start_ns, total_rate, TICK)
    }

    /// The schedule from `start_ns`, waking every `tick`.
    pub fn with_tick(start_ns: u64, total_rate: f64, tick: Duration) -> Pacer {
        let per_wake = (total_rate * tick.as_secs_f64()).floor().max(1.0) as u64;
        Pacer { start_ns, total_rate, per_wake }
    }

    /// When the schedule starts.
    pub fn start_ns(&self) -> u64 {
        self.start_ns
    }

    /// Samples a wake-up publishes when on time.
    #[cfg(test)]
    pub fn per_wake(&self) -> u64 {
        self.per_wake
    }

    /// How many samples are due by `now_ns` (the first `due` of them):
    /// sample `g` is due at `g / rate` from the start, its `sample_ns`, so
    /// sample 0 at once. (Found by review: sample `g` went out at
    /// `(g + 1) / rate`, a period after its `sample_ns`: a second late for
    /// a stream of 1 Hz.)
    pub fn due(&self, now_ns: u64) -> u64 {
        (now_ns.saturating_sub(self.start_ns) as f64 * self.total_rate / 1e9) as u64 + 1
    }

    /// When the first `n` samples are due ([`Pacer::due`] reaches `n`, to
    /// within a nanosecond of rounding): sample `n - 1` falls due then.
    pub fn due_at(&self, n: u64) -> u64 {
        self.start_ns.saturating_add((n.saturating_sub(1) as f64 * 1e9 / self.total_rate) as u64)
    }

    /// How late sample `next`, the oldest not yet written, is at `now_ns`:
    /// 0 if it is not due yet; about a [`TICK`] when a wake-up finds its
    /// samples; more if the source cannot keep up (or a gating reader holds
    /// it back).
    pub fn behind_ns(&self, next: u64, now_ns: u64) -> u64 {
        now_ns.saturating_sub(self.due_at(next + 1))
    }

    /// When to wake after writing every sample before `next`: once a
    /// wake-up's worth is due (sample `next + per_wake - 1` is due when
    /// `due` reaches `next + per_wake`), at once if that has passed, and
    /// at most [`MAX_SLEEP`] from `now_ns`.
    pub fn wake_at(&self, next: u64, now_ns: u64) -> u64 {
        let at = self.due_at(next.saturating_add(self.per_wake)).saturating_add(1);
        at.clamp(now_ns, now_ns.saturating_add(MAX_SLEEP.as_nanos() as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wake_up_finds_a_tick_of_samples_due() {
        // 1 M samples/s: a thousand per millisecond.
        let p = Pacer::new(1_000, 1e6);
        assert_eq!(p.per_wake(), 1000);
        assert_eq!(p.due(1_000), 1, "sample 0 is due at the start");
        let wake = p.wake_at(0, 1_000);
        assert_eq!(p.due(wake), 1000);
        assert_eq!(p.due(wake - 2), 999);
        // A slow source wakes per sample: 30 samples/s.
        let slow = Pacer::new(0, 30.0);
        assert_eq!(slow.per_wake(), 1);
        let wake = slow.wake_at(5, slow.due_at(6) - 1_000_000);
        assert_eq!((slow.due(wake), slow.due(wake - 2)), (6, 5));
        // 33 ms from one sample to the next: it wakes after MAX_SLEEP to
        // look for a stop request.
        assert_eq!(slow.wake_at(5, slow.due_at(5)), slow.due_at(5) + MAX_SLEEP.as_nanos() as u64);
        // Never longer than MAX_SLEEP, never in the past.
        assert_eq!(slow.wake_at(1000, 0), MAX_SLEEP.as_nanos() as u64);
        assert_eq!(p.wake_at(0, 5_000_000), 5_000_000);
    }

    #[test]
    fn lateness_is_the_age_of_the_oldest_unwritten_sample() {
        let p = Pacer::new(0, 1000.0);
        // Sample 9 is due (due reaches 10) at 9 ms, its sample_ns.
        assert_eq!(p.due(8_999_999), 9);
        assert_eq!(p.due(9_000_000), 10);
        assert_eq!(p.behind_ns(9, 8_000_000), 0);
        assert_eq!(p.behind_ns(9, 9_000_000), 0);
        assert_eq!(p.behind_ns(9, 10_000_000), 1_000_000);
        assert_eq!(p.behind_ns(9, 1_009_000_000), 1_000_000_000);
    }
}
