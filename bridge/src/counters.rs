//! The bridge's counters: shared between the export or import loop and
//! whatever reports them (the periodic log line, the metrics endpoint).
//! Every counter is a plain number to show: Relaxed throughout, nothing is
//! read on the strength of one.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Counters of one direction.
#[derive(Debug, Default)]
pub struct Counters {
    /// Frames published (export, acknowledged) or written (import).
    pub frames: AtomicU64,
    /// Their payload bytes.
    pub bytes: AtomicU64,
    /// JetStream messages acknowledged (export) or taken (import).
    pub messages: AtomicU64,
    /// Messages published and not yet acknowledged.
    pub in_flight: AtomicU64,
    /// Sum and count of acknowledgement latencies, ns.
    pub ack_ns_sum: AtomicU64,
    pub acks: AtomicU64,
    /// Connections re-established.
    pub reconnects: AtomicU64,
    /// Frames already written, dropped (import), or publishes JetStream
    /// reported duplicate (export).
    pub duplicates: AtomicU64,
    /// Source sequences lost: sent as gap messages (export), written as
    /// gap marks (import).
    pub gaps: AtomicU64,
    /// Messages refused as malformed or from another source (import).
    pub rejected: AtomicU64,
    /// Publishes that failed and were sent again from the ring (export).
    pub retries: AtomicU64,
    /// Times the link failed and was started again (the service).
    pub restarts: AtomicU64,
    /// 1 while a link that failed waits to start again (the service).
    pub failing: AtomicU64,
    /// Turns of the link's loop: the watchdog's evidence that it is not
    /// stuck (not a metric).
    pub beats: AtomicU64,
    /// Ledger heads read (the head mirror).
    pub heads_read: AtomicU64,
    /// Records of the last head published (the head mirror).
    pub head_records: AtomicU64,
    /// Anchors recorded (the head mirror).
    pub anchors: AtomicU64,
}

impl Counters {
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Relaxed);
    }

    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Relaxed)
    }

    pub fn set(c: &AtomicU64, n: u64) {
        c.store(n, Relaxed);
    }

    /// One line for the log.
    pub fn summary(&self) -> String {
        let g = Counters::get;
        format!(
            "frames {} bytes {} messages {} in_flight {} duplicates {} gaps {} rejected {} retries {} reconnects {}",
            g(&self.frames),
            g(&self.bytes),
            g(&self.messages),
            g(&self.in_flight),
            g(&self.duplicates),
            g(&self.gaps),
            g(&self.rejected),
            g(&self.retries),
            g(&self.reconnects)
        )
    }
}
