//! The HAL's UDP datagram: telemetry samples as instruments (and
//! `helix-bench udp`) send them to helixd. helixd counts a datagram that is
//! not exactly right by its [`Reject`] reason and drops it whole.
//!
//! Datagram format (all little-endian; docs/abi.md, "UDP ingest"):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `b"HXU1"` |
//! | 4 | 2 | version, 1 |
//! | 6 | 2 | count of samples, 1 to [`MAX_SAMPLES`] |
//! | 8 + 32 i | 4 | sample i: stream |
//! | 12 + 32 i | 4 | sample i: quality flags |
//! | 16 + 32 i | 8 | sample i: per-stream sequence |
//! | 24 + 32 i | 8 | sample i: sample time (ns, sender's clock) |
//! | 32 + 32 i | 8 | sample i: value (IEEE 754 double) |
//!
//! The datagram's length must be exactly `8 + 32 * count`.

use super::Sample;

/// First four bytes of a datagram.
pub const MAGIC: [u8; 4] = *b"HXU1";
/// The datagram format version.
pub const VERSION: u16 = 1;
/// Header bytes before the samples.
pub const HEADER: usize = 8;
/// Bytes per sample record.
pub const RECORD: usize = 32;
/// Most samples in one datagram (the largest UDP payload is 65,507 bytes).
pub const MAX_SAMPLES: usize = (65_507 - HEADER) / RECORD;

/// Why a datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// Shorter than its header or than its count says.
    Truncated,
    /// Longer than its count says.
    Oversized,
    /// The first four bytes are not `HXU1`.
    BadMagic,
    /// A version this program does not speak.
    BadVersion,
    /// A count of 0 or more than [`MAX_SAMPLES`].
    BadCount,
}

impl Reject {
    /// Every reason, in counter order.
    pub const ALL: [Reject; 5] =
        [Reject::Truncated, Reject::Oversized, Reject::BadMagic, Reject::BadVersion, Reject::BadCount];

    /// Short name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Reject::Truncated => "truncated",
            Reject::Oversized => "oversized",
            Reject::BadMagic => "bad_magic",
            Reject::BadVersion => "bad_version",
            Reject::BadCount => "bad_count",
        }
    }
}

/// Checks a datagram; returns its number of samples.
pub fn validate(d: &[u8]) -> Result<usize, Reject> {
    if d.len() < HEADER {
        return Err(Reject::Truncated);
    }
    if d[..4] != MAGIC {
        return Err(Reject::BadMagic);
    }
    if u16::from_le_bytes([d[4], d[5]]) != VERSION {
        return Err(Reject::BadVersion);
    }
    let count = u16::from_le_bytes([d[6], d[7]]) as usize;
    if count == 0 || count > MAX_SAMPLES {
        return Err(Reject::BadCount);
    }
    let want = HEADER + RECORD * count;
    match d.len().cmp(&want) {
        std::cmp::Ordering::Less => Err(Reject::Truncated),
        std::cmp::Ordering::Greater => Err(Reject::Oversized),
        std::cmp::Ordering::Equal => Ok(count),
    }
}

/// Sample `i` of a validated datagram, stamped with `ingest_ns`.
pub fn sample(d: &[u8], i: usize, ingest_ns: u64) -> Sample {
    let r = &d[HEADER + RECORD * i..HEADER + RECORD * (i + 1)];
    let u32_at = |o: usize| u32::from_le_bytes(r[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(r[o..o + 8].try_into().unwrap());
    Sample {
        stream: u32_at(0),
        quality: u32_at(4),
        seq: u64_at(8),
        sample_ns: u64_at(16),
        ingest_ns,
        value: f64::from_bits(u64_at(24)),
    }
}

/// Encodes samples as one datagram (for senders and tests).
pub fn encode(samples: &[Sample]) -> Vec<u8> {
    assert!(!samples.is_empty() && samples.len() <= MAX_SAMPLES);
    let mut d = Vec::with_capacity(HEADER + RECORD * samples.len());
    d.extend_from_slice(&MAGIC);
    d.extend_from_slice(&VERSION.to_le_bytes());
    d.extend_from_slice(&(samples.len() as u16).to_le_bytes());
    for s in samples {
        d.extend_from_slice(&s.stream.to_le_bytes());
        d.extend_from_slice(&s.quality.to_le_bytes());
        d.extend_from_slice(&s.seq.to_le_bytes());
        d.extend_from_slice(&s.sample_ns.to_le_bytes());
        d.extend_from_slice(&s.value.to_bits().to_le_bytes());
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(i: u32) -> Sample {
        Sample { stream: i, quality: 0, seq: i as u64 * 10, sample_ns: 5, ingest_ns: 0, value: i as f64 + 0.5 }
    }

    #[test]
    fn datagrams_round_trip_and_each_defect_has_its_reason() {
        let d = encode(&[s(1), s(2)]);
        assert_eq!(validate(&d), Ok(2));
        assert_eq!(sample(&d, 1, 99), Sample { ingest_ns: 99, ..s(2) });
        assert_eq!(validate(&d[..d.len() - 1]), Err(Reject::Truncated));
        assert_eq!(validate(&d[..3]), Err(Reject::Truncated));
        assert_eq!(validate(&[&d[..], &[0]].concat()), Err(Reject::Oversized));
        let mut bad = d.clone();
        bad[0] = b'X';
        assert_eq!(validate(&bad), Err(Reject::BadMagic));
        let mut bad = d.clone();
        bad[4] = 2;
        assert_eq!(validate(&bad), Err(Reject::BadVersion));
        let mut bad = d.clone();
        bad[6] = 0;
        bad[7] = 0;
        assert_eq!(validate(&bad[..8]), Err(Reject::BadCount));
        assert_eq!(validate(b"garbage garbage garbage"), Err(Reject::BadMagic));
    }
}
