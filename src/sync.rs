//! The one door through which the ring protocol reaches atomics and futexes.
//!
//! Under `--cfg loom` every type here is loom's model of it, so the loom tests
//! in `src/ring/loom_tests.rs` check the protocol exactly as it is written
//! (tokio's `src/loom/`, crossbeam's `primitive`). Nothing in the ring
//! protocol imports `std::sync::atomic` or makes a syscall directly.

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

/// A spin-loop hint; under loom a yield, so spinning models terminate.
#[inline]
pub(crate) fn spin_hint() {
    #[cfg(not(loom))]
    std::hint::spin_loop();
    #[cfg(loom)]
    loom::thread::yield_now();
}

/// Futex wait/wake on a shared (not process-private) 32-bit word.
#[cfg(not(loom))]
pub(crate) mod futex {
    pub(crate) use crate::futex::{wait, wake_all};
}

/// A model of the futex for loom: `wait` sleeps only while the word still
/// holds `expected`, checked under the same lock that `wake_all` takes, which
/// is exactly the guarantee the kernel gives (the hash-bucket lock). A lost
/// wake-up in the protocol therefore shows up as a loom deadlock.
#[cfg(loom)]
pub(crate) mod futex {
    use super::{AtomicU32, Ordering};
    use loom::sync::{Condvar, Mutex};
    use std::time::Duration;

    loom::lazy_static! {
        static ref BUCKET: (Mutex<()>, Condvar) = (Mutex::new(()), Condvar::new());
    }

    pub(crate) fn wait(word: &AtomicU32, expected: u32, _timeout: Option<Duration>) -> std::io::Result<()> {
        let guard = BUCKET.0.lock().unwrap();
        if word.load(Ordering::SeqCst) == expected {
            drop(BUCKET.1.wait(guard).unwrap());
        }
        Ok(())
    }

    pub(crate) fn wake_all(_word: &AtomicU32) -> std::io::Result<usize> {
        let _guard = BUCKET.0.lock().unwrap();
        BUCKET.1.notify_all();
        Ok(0)
    }
}

/// The clock and process liveness as the protocol sees them. Under loom the
/// clock stands still and every process is alive, so models never depend on
/// time.
#[cfg(not(loom))]
pub(crate) mod host {
    pub(crate) use crate::process::{alive, exists, identity, my_uid, now_ns, realtime_ns, uid_of};
}

#[cfg(loom)]
pub(crate) mod host {
    pub(crate) fn now_ns() -> u64 {
        0
    }
    pub(crate) fn realtime_ns() -> u64 {
        0
    }
    pub(crate) fn alive(_pid: u32, _start_time: u64) -> bool {
        true
    }
    pub(crate) fn exists(_pid: u32) -> bool {
        true
    }
    pub(crate) fn identity() -> (u32, u64) {
        (1, 1)
    }
    pub(crate) fn uid_of(_pid: u32) -> Option<u32> {
        Some(0)
    }
    pub(crate) fn my_uid() -> u32 {
        0
    }
}
