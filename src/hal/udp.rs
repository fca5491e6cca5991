//! The UDP source: datagrams of telemetry samples, received in batches with
//! `recvmmsg`. A datagram that is not exactly right is counted by reason
//! and dropped whole; it never reaches the ring and never stops the source.
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

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tracing::{info, warn};

use crate::telemetry::{Sample, KIND_SAMPLE};
use crate::Writer;

use super::SourceState;

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

/// Counters of one UDP source.
#[derive(Debug, Default)]
pub struct UdpStats {
    /// Datagrams accepted.
    pub datagrams: AtomicU64,
    /// Datagrams dropped, by [`Reject::ALL`] index.
    pub rejected: [AtomicU64; 5],
}

/// Datagrams received per `recvmmsg` call at most.
const BATCH: usize = 32;
/// Bytes of each receive buffer: the largest UDP payload, rounded up.
const BUF: usize = 65_536;

/// Receives batches of datagrams with `recvmmsg` into buffers allocated
/// once; returns the lengths received (0 datagrams on time-out).
struct Receiver {
    socket: UdpSocket,
    bufs: Vec<u8>,
    iovecs: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
}

impl Receiver {
    fn new(socket: UdpSocket) -> Receiver {
        let mut bufs = vec![0u8; BATCH * BUF];
        let iovecs: Vec<libc::iovec> =
            bufs.chunks_exact_mut(BUF).map(|b| libc::iovec { iov_base: b.as_mut_ptr().cast(), iov_len: BUF }).collect();
        // SAFETY: mmsghdr is a plain C struct; all-zero is a valid value
        // (null name, no control data), filled in below.
        let msgs = (0..BATCH).map(|_| unsafe { std::mem::zeroed::<libc::mmsghdr>() }).collect();
        let mut r = Receiver { socket, bufs, iovecs, msgs };
        for (m, iov) in r.msgs.iter_mut().zip(r.iovecs.iter_mut()) {
            m.msg_hdr.msg_iov = iov;
            m.msg_hdr.msg_iovlen = 1;
        }
        r
    }

    /// Receives up to BATCH datagrams, waiting (up to the socket's receive
    /// time-out) for the first; returns how many arrived.
    fn recv(&mut self) -> io::Result<usize> {
        for m in &mut self.msgs {
            m.msg_len = 0;
        }
        // SAFETY: `msgs` holds BATCH headers whose iovecs point into `bufs`
        // (BUF bytes each), all owned by `self` and alive for the call; the
        // kernel writes only within them.
        let n = unsafe {
            libc::recvmmsg(
                self.socket.as_raw_fd(),
                self.msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(e),
            };
        }
        Ok(n as usize)
    }

    fn datagram(&self, i: usize) -> &[u8] {
        let len = (self.msgs[i].msg_len as usize).min(BUF);
        &self.bufs[i * BUF..i * BUF + len]
    }
}

/// Binds the source's socket. Done before the source's thread starts, so
/// that helixd reports READY=1 only once datagrams are being received (one
/// sent before the bind would be dropped by the kernel), and a bad address
/// fails the start.
pub fn bind(addr: SocketAddr) -> Result<UdpSocket, String> {
    let socket = UdpSocket::bind(addr).map_err(|e| format!("udp source: cannot bind {addr}: {e}"))?;
    socket.set_read_timeout(Some(Duration::from_millis(100))).map_err(|e| e.to_string())?;
    info!("udp source listening on {}", socket.local_addr().map_or(addr, |a| a));
    Ok(socket)
}

/// The receive loop on an already bound socket.
pub fn serve(socket: UdpSocket, mut writer: Writer, state: &SourceState, stats: &UdpStats) -> Result<(), String> {
    let mut rx = Receiver::new(socket);
    let mut written = 0u64;
    let mut last_report = [0u64; 5];
    let mut next_report = crate::process::now_ns();
    while !state.stopping() {
        state.tick();
        let n = rx.recv().map_err(|e| format!("udp source: receive failed: {e}"))?;
        let ingest_ns = crate::process::now_ns();
        for i in 0..n {
            let d = rx.datagram(i);
            let count = match validate(d) {
                Ok(c) => c,
                Err(r) => {
                    stats.rejected[r as usize].fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            };
            stats.datagrams.fetch_add(1, Ordering::Relaxed);
            let mut done = 0;
            while done < count {
                let k = ((count - done) as u64).min(writer.geometry().capacity);
                let mut claim = writer.claim(k).map_err(|e| format!("udp source: {e}"))?;
                for j in done..done + k as usize {
                    claim
                        .push_kind(KIND_SAMPLE, bytemuck::bytes_of(&sample(d, j, ingest_ns)))
                        .map_err(|e| e.to_string())?;
                }
                claim.commit();
                done += k as usize;
            }
            written += count as u64;
            state.samples.store(written, Ordering::Relaxed);
        }
        // Dropped datagrams are logged at most once a second, with totals.
        if ingest_ns >= next_report {
            for r in Reject::ALL {
                let total = stats.rejected[r as usize].load(Ordering::Relaxed);
                if total > last_report[r as usize] {
                    warn!(
                        "udp source: dropped {} {} datagrams ({total} in all)",
                        total - last_report[r as usize],
                        r.as_str()
                    );
                    last_report[r as usize] = total;
                }
            }
            next_report = ingest_ns + 1_000_000_000;
        }
    }
    Ok(())
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
