//! The telemetry frame the HAL writes into the `telemetry` ring: one sample,
//! 40 bytes, frame kind [`KIND_SAMPLE`]. Documented in docs/abi.md
//! ("Telemetry frames").

use bytemuck::{Pod, Zeroable};

use crate::layout::assert_layout;

pub mod datagram;

/// Frame kind of a [`Sample`].
pub const KIND_SAMPLE: u32 = 1;

/// Quality flag: the value is suspect (out of the instrument's range).
pub const QUALITY_SUSPECT: u32 = 1 << 0;
/// Quality flag: the value is bad (instrument fault).
pub const QUALITY_BAD: u32 = 1 << 1;
/// Quality flag: the value comes from the simulator.
pub const QUALITY_SIMULATED: u32 = 1 << 2;

/// One instrument sample.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct Sample {
    /// Stream (instrument channel) id.
    pub stream: u32,
    /// Quality flags (`QUALITY_*`); 0 is good.
    pub quality: u32,
    /// Per-stream sequence number, from 0.
    pub seq: u64,
    /// When the value was sampled: CLOCK_MONOTONIC ns (simulator), or the
    /// sender's timestamp as received (UDP).
    pub sample_ns: u64,
    /// When helixd wrote it into the ring: CLOCK_MONOTONIC ns, the clock
    /// readers use for ingest-to-reader latency.
    pub ingest_ns: u64,
    /// The value.
    pub value: f64,
}

assert_layout!(Sample, 40; stream @ 0, quality @ 4, seq @ 8, sample_ns @ 16, ingest_ns @ 24, value @ 32);
