//! The UDP source: datagrams of telemetry samples (the format is
//! [`helix::telemetry::datagram`]), received in batches with `recvmmsg`. A
//! datagram that is not exactly right is counted by reason and dropped
//! whole; it never reaches the ring and never stops the source.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tracing::{info, warn};

use helix::telemetry::datagram::{self, Reject};
use helix::telemetry::KIND_SAMPLE;
use helix::Writer;

use super::SourceState;

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
    let mut next_report = helix::process::now_ns();
    while !state.stopping() {
        state.tick();
        let n = rx.recv().map_err(|e| format!("udp source: receive failed: {e}"))?;
        let ingest_ns = helix::process::now_ns();
        for i in 0..n {
            let d = rx.datagram(i);
            let count = match datagram::validate(d) {
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
                        .push_kind(KIND_SAMPLE, bytemuck::bytes_of(&datagram::sample(d, j, ingest_ns)))
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
