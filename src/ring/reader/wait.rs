//! A reader waiting for a frame: spinning per its strategy, then parked
//! on the ring's futex (`docs/abi.md` §4.9).

use std::time::Duration;

use crate::sync::{fence, futex, host, spin_hint, Ordering};

use super::super::deadline;
use super::{ReadError, Reader, Region};

/// A parked reader wakes at least this often to look for damage (a file
/// shrunk under it: a writer whose mapping turned to zeros never wakes it)
/// and to refresh its heartbeat; it stays counted as parked meanwhile.
const PARK_RECHECK: Duration = Duration::from_millis(100);

/// A spinning reader looks for damage every 2^20 polls (a few
/// milliseconds to tens of them, by the CPU's pause).
const SPIN_PROBE_MASK: u32 = (1 << 20) - 1;

impl Reader {
    /// Waits, with the reader's strategy, until a frame is available (or an
    /// overrun is, which the next read reports). Pairs with the batch reads.
    pub fn wait(&mut self) -> Result<(), ReadError> {
        self.wait_ready(None)
    }

    /// Like [`Reader::wait`], for at most `timeout`.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<(), ReadError> {
        self.wait_ready_for(timeout)
    }

    /// Like `wait_ready` with a deadline `timeout` from now, read
    /// from the clock only if the frame is not there yet: a reader that
    /// keeps up calls this once per frame or batch.
    #[inline]
    pub(super) fn wait_ready_for(&mut self, timeout: Duration) -> Result<(), ReadError> {
        if self.core.ready(&self.region) {
            return Ok(());
        }
        self.wait_ready(Some(deadline(timeout)))
    }

    /// Waits, per the strategy, until the frame at the cursor is published
    /// (or overwritten, which the following read reports), or the ring is
    /// found damaged.
    pub(super) fn wait_ready(&mut self, deadline_ns: Option<u64>) -> Result<(), ReadError> {
        let region: &Region = &self.region;
        let mut spins = self.wait.spins();
        loop {
            if self.core.ready(region) {
                return Ok(());
            }
            if let Some(d) = region.damaged() {
                return Err(ReadError::Damaged(d));
            }
            if spins > 0 {
                spins -= 1;
                spin_hint();
                if spins & 0x3FF == 0 && deadline_ns.is_some_and(|d| host::now_ns() >= d) {
                    return Err(ReadError::Timeout);
                }
                if spins & SPIN_PROBE_MASK == 0 && spins != 0 {
                    // A spinning reader looks for damage as a parked one
                    // does: `WaitStrategy::Spin` spins for minutes before
                    // it would park. (At 0 it parks, and the park looks.)
                    region.probe();
                }
                continue;
            }
            if deadline_ns.is_some_and(|d| host::now_ns() >= d) {
                return Err(ReadError::Timeout);
            }
            self.park(deadline_ns);
        }
    }

    /// Sleeps on the ring's futex until the writer publishes, the deadline
    /// passes, or the ring is found damaged; looks for damage (and
    /// refreshes the heartbeat) every [`PARK_RECHECK`] meanwhile.
    fn park(&self, deadline_ns: Option<u64>) {
        let region: &Region = &self.region;
        let (h, rd) = (region.header(), region.readers());
        let e = region.entry(self.core.idx);
        e.heartbeat_ns.store(host::now_ns(), Ordering::Relaxed);
        // A count, Relaxed: the fence below orders it before our re-check,
        // and read-modify-writes never lose one another's changes, so the
        // writer sees at least 1 from our increment until our decrement.
        rd.waiters.fetch_add(1, Ordering::Relaxed);
        // Marked after counting and cleared before uncounting: a reader that
        // dies in between leaves one spurious waiter, never a negative count.
        e.parked.store(1, Ordering::Relaxed);
        // SYNC POINT: reader park Dekker. Pairs with the SeqCst fence in
        // `Writer::finish`: either the writer's load of `waiters` sees us and
        // it bumps `notify` and wakes, or our check below sees its stamp. A
        // store followed by a load needs SeqCst fences on both sides;
        // Acquire/Release cannot order them. The count stays up across the
        // re-checks, so the argument holds for each.
        fence(Ordering::SeqCst);
        loop {
            // SYNC POINT: readers woken. Pairs with the writer's Release bump
            // of `notify`: if we see it, the stamps it committed before are
            // visible to the check below.
            let seen = h.notify.load(Ordering::Acquire);
            if self.core.ready(region) || region.damaged().is_some() {
                break;
            }
            let now = host::now_ns();
            let timeout = match deadline_ns {
                Some(d) if now >= d => break,
                Some(d) => Duration::from_nanos(d - now).min(PARK_RECHECK),
                None => PARK_RECHECK,
            };
            // A failure here (it cannot happen for a valid mapping; a file
            // truncated under the word gives EFAULT) just means we poll.
            let _ = futex::wait(&h.notify, seen, Some(timeout));
            if h.notify.load(Ordering::Relaxed) != seen {
                break;
            }
            // Nothing published: a time-out, a signal, or a writer that can
            // no longer wake us. A sign of life, and a look for damage.
            e.heartbeat_ns.store(host::now_ns(), Ordering::Relaxed);
            region.probe();
        }
        e.parked.store(0, Ordering::Relaxed);
        // A count, Relaxed: we are awake; a writer that still sees us
        // counted only makes a spare wake-up.
        rd.waiters.fetch_sub(1, Ordering::Relaxed);
    }
}
