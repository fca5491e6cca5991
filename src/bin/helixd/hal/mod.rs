//! The HAL ingest: sources that write telemetry samples into a ring, one
//! thread each, each holding that ring's writer lease.

pub mod pace;
pub mod plant;
pub mod sim;
pub mod udp;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// What a source thread shares with the daemon.
#[derive(Debug, Default)]
pub struct SourceState {
    /// Set to ask the thread to finish.
    pub stop: AtomicBool,
    /// CLOCK_MONOTONIC ns of the thread's last loop iteration: the
    /// watchdog only pings while every source keeps making progress.
    pub progress_ns: AtomicU64,
    /// Samples written.
    pub samples: AtomicU64,
    /// A scheduled source's (the simulator's) lateness when it last woke:
    /// how long ago its oldest unwritten sample fell due, ns. About a
    /// wake-up period when it keeps up; growing when it cannot (the CPU is
    /// short, or gating readers hold the ring full).
    pub behind_ns: AtomicU64,
    /// A UDP source's datagram counters (zero for the simulator).
    pub udp: udp::UdpStats,
    /// Commands for the source (a simulator takes them).
    pub inbox: plant::Inbox,
}

impl SourceState {
    /// A new state, progress stamped now.
    pub fn new() -> Arc<SourceState> {
        let s = SourceState::default();
        s.progress_ns.store(helix::process::now_ns(), Ordering::Relaxed);
        Arc::new(s)
    }

    /// Whether the thread was asked to stop.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Records a loop iteration.
    pub fn tick(&self) {
        self.progress_ns.store(helix::process::now_ns(), Ordering::Relaxed);
    }
}
