//! The UDP source: datagrams of telemetry samples (the format is
//! [`helix::telemetry::datagram`]), received in batches with `recvmmsg`. A
//! datagram that is not exactly right is counted by reason and dropped
//! whole; it never reaches the ring and never stops the source.

use std::io;
use std::io::IoSliceMut;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::sys::socket::{recvmmsg, MsgFlags, MultiHeaders};
use tracing::{info, warn};

use helix::telemetry::datagram::{self, Reject};
use helix::telemetry::KIND_SAMPLE;
use helix::Writer;

use super::SourceState;

/// Counters of one UDP source.
#[derive(Debug, Default)]
pub struct UdpStats {
    /// Datagrams accepted and written whole (one a stop or a failure cuts
    /// short counts its samples written, in `SourceState::samples`, not
    /// itself).
    pub datagrams: AtomicU64,
    /// Datagrams dropped, by [`Reject::ALL`] index.
    pub rejected: [AtomicU64; 5],
    /// `rejected` as last logged ([`report_rejects`]).
    reported: [AtomicU64; 5],
    /// Datagrams the kernel dropped before helixd could read them (the
    /// socket's receive buffer was full), as the kernel counts them
    /// ([`kernel_drops`]), as helixd's control thread last read it.
    pub kernel_drops: AtomicU64,
    /// Datagrams taken from the socket and not written whole: the source
    /// stopped, or its ring failed, in the middle of a batch (the one cut
    /// short and those after it), or it stopped for good with them
    /// waiting in its socket. (Found by review: said, and counted in no
    /// metric.)
    pub unwritten: AtomicU64,
}

impl UdpStats {
    /// Takes on what `old` (the state of the source this one restarts)
    /// counted, so the totals go on: the datagrams taken, the kernel's
    /// drops (counted since the bind), those not written, the datagrams
    /// rejected, and how many of those were logged. Before the new
    /// source's thread starts.
    pub fn carry(&self, old: &UdpStats) {
        let pairs = self.rejected.iter().zip(&old.rejected).chain(self.reported.iter().zip(&old.reported));
        let totals = [
            (&self.datagrams, &old.datagrams),
            (&self.kernel_drops, &old.kernel_drops),
            (&self.unwritten, &old.unwritten),
        ];
        for (new, old) in pairs.chain(totals) {
            new.store(old.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }
}

/// Datagrams received per `recvmmsg` call at most.
const BATCH: usize = 32;
/// Bytes of each receive buffer: the largest UDP payload, rounded up.
const BUF: usize = 65_536;

/// Receives batches of datagrams with `recvmmsg` into buffers allocated
/// once.
struct Receiver {
    socket: UdpSocket,
    bufs: Vec<u8>,
    headers: MultiHeaders<()>,
    lens: [usize; BATCH],
}

impl Receiver {
    fn new(socket: UdpSocket) -> Receiver {
        Receiver {
            socket,
            bufs: vec![0u8; BATCH * BUF],
            headers: MultiHeaders::preallocate(BATCH, None),
            lens: [0; BATCH],
        }
    }

    /// Receives up to BATCH datagrams, waiting (up to the socket's receive
    /// time-out) for the first; returns how many arrived.
    fn recv(&mut self) -> io::Result<usize> {
        let mut chunks = self.bufs.chunks_exact_mut(BUF);
        let mut slices: [[IoSliceMut<'_>; 1]; BATCH] =
            std::array::from_fn(|_| [IoSliceMut::new(chunks.next().expect("BATCH buffers"))]);
        let received = match recvmmsg(
            self.socket.as_raw_fd(),
            &mut self.headers,
            slices.iter_mut(),
            MsgFlags::MSG_WAITFORONE,
            None,
        ) {
            Ok(r) => r,
            Err(Errno::EAGAIN | Errno::EINTR) => return Ok(0),
            Err(e) => return Err(e.into()),
        };
        let mut n = 0;
        for msg in received {
            self.lens[n] = msg.bytes.min(BUF);
            n += 1;
        }
        Ok(n)
    }

    fn datagram(&self, i: usize) -> &[u8] {
        &self.bufs[i * BUF..i * BUF + self.lens[i]]
    }
}

/// How many datagrams the kernel dropped on `socket` since it was bound,
/// for want of room in its receive buffer: the socket's `drops` column in
/// `/proc/self/net/udp` (or `udp6`), found by the socket's inode. It
/// allocates: helixd's control thread reads it, not the receive loop.
pub fn kernel_drops(socket: &UdpSocket) -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let inode = std::fs::metadata(format!("/proc/self/fd/{}", socket.as_raw_fd()))?.ino();
    let table = if socket.local_addr()?.is_ipv6() { "/proc/self/net/udp6" } else { "/proc/self/net/udp" };
    let text = std::fs::read_to_string(table)?;
    // sl local rem st tx:rx tr:when retrnsmt uid timeout inode ref pointer drops
    text.lines()
        .skip(1)
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() >= 13 && f[9].parse::<u64>() == Ok(inode))
        .and_then(|f| f[12].parse().ok())
        .ok_or_else(|| io::Error::other(format!("socket inode {inode} is not in {table}")))
}

/// Takes the datagrams waiting in `socket` (its source stopped for good),
/// without waiting: how many there were, and whether it took them all.
/// Bounded in time, as a sender may go on sending (helixd's main loop
/// runs this): past [`DISCARD_FOR`], the rest is left to the close.
pub fn discard_waiting(socket: &UdpSocket) -> (u64, bool) {
    if socket.set_nonblocking(true).is_err() {
        return (0, false);
    }
    let until = std::time::Instant::now() + DISCARD_FOR;
    let mut n = 0u64;
    // A zero-length read takes a whole datagram.
    while socket.recv(&mut []).is_ok() {
        n += 1;
        if n.is_multiple_of(1024) && std::time::Instant::now() >= until {
            return (n, false);
        }
    }
    (n, true)
}

/// How long [`discard_waiting`] takes datagrams at most.
const DISCARD_FOR: Duration = Duration::from_millis(50);

/// An address not on this host (yet) is bound all the same, with a
/// warning: the plant network may come up after helixd (at boot, say), and
/// a refusal would fail the start (and under systemd, end in a failed unit
/// once the restarts run out). Its datagrams arrive once it is there.
pub fn bind(addr: SocketAddr) -> Result<UdpSocket> {
    let socket = match UdpSocket::bind(addr) {
        Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => {
            let socket = bind_nonlocal(addr).with_context(|| format!("udp source: cannot bind {addr}"))?;
            warn!(
                "udp source: {} is not an address of this host (yet); bound anyway: its datagrams arrive once \
                 it is (if it is a mistake, nothing ever will)",
                addr.ip()
            );
            socket
        }
        r => r.with_context(|| format!("udp source: cannot bind {addr}"))?,
    };
    socket.set_read_timeout(Some(Duration::from_millis(100)))?;
    info!("udp source listening on {}", socket.local_addr().map_or(addr, |a| a));
    Ok(socket)
}

/// Binds `addr` with `IP_FREEBIND` (the address need not be on the host).
fn bind_nonlocal(addr: SocketAddr) -> nix::Result<UdpSocket> {
    use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrStorage};
    let family = if addr.is_ipv6() { AddressFamily::Inet6 } else { AddressFamily::Inet };
    let fd = socket::socket(family, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)?;
    socket::setsockopt(&fd, sockopt::IpFreebind, &true)?;
    socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    Ok(UdpSocket::from(fd))
}

/// The receive loop on an already bound socket. Whatever ends it, the
/// datagrams dropped since the last report are logged.
pub fn serve(socket: UdpSocket, writer: Writer, state: &SourceState) -> Result<()> {
    let served = receive(socket, writer, state);
    report_rejects(&state.udp);
    served
}

/// Logs the datagrams dropped since the last report, by reason, with
/// totals (across restarts of the source: the counters are its state's).
fn report_rejects(stats: &UdpStats) {
    for r in Reject::ALL {
        let total = stats.rejected[r as usize].load(Ordering::Relaxed);
        let last = stats.reported[r as usize].swap(total, Ordering::Relaxed);
        if total > last {
            warn!("udp source: dropped {} {} datagrams ({total} in all)", total - last, r.as_str());
        }
    }
}

fn receive(socket: UdpSocket, mut writer: Writer, state: &SourceState) -> Result<()> {
    let stats = &state.udp;
    let mut rx = Receiver::new(socket);
    let mut next_report = helix::process::now_ns();
    while !state.stopping() {
        state.tick();
        let n = rx.recv().context("udp source: receive failed")?;
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
            let mut done = 0;
            while done < count {
                let k = ((count - done) as u64).min(writer.geometry().capacity);
                // Counted as pushed: a claim that fails midway still
                // publishes what it took (found by review).
                let mut pushed = 0;
                let fill = |claim: &mut helix::Claim<'_>| {
                    for j in done..done + k as usize {
                        claim.push_kind(KIND_SAMPLE, bytemuck::bytes_of(&datagram::sample(d, j, ingest_ns)))?;
                        pushed += 1;
                    }
                    Ok(())
                };
                // Given up only to stop (gating readers holding the ring
                // full may take their whole stall timeout), or on an error
                // (the ring damaged, say): what this batch took from the
                // socket and did not write is said, not dropped silently.
                let wrote = super::write_batch(&mut writer, k, state, || state.stopping(), fill);
                state.samples.fetch_add(pushed, Ordering::Relaxed);
                if !matches!(wrote, Ok(true)) {
                    stats.unwritten.fetch_add((n - i) as u64, Ordering::Relaxed);
                    warn!(
                        "udp source: {} samples of this datagram and the {} datagrams received after it are not \
                         written ({})",
                        count - done - pushed as usize,
                        n - i - 1,
                        if wrote.is_ok() { "stopped while the ring was held full" } else { "the ring failed" }
                    );
                    return wrote.map(drop).context("udp source");
                }
                done += k as usize;
            }
            stats.datagrams.fetch_add(1, Ordering::Relaxed);
        }
        // Dropped datagrams are logged at most once a second, with totals.
        if ingest_ns >= next_report {
            report_rejects(stats);
            next_report = ingest_ns + 1_000_000_000;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_not_on_this_host_yet_is_bound_and_a_taken_port_is_refused() {
        // Found by review: a source on an address of a network that comes
        // up after helixd (at boot) failed the start, and systemd's restarts
        // ran out with the unit failed. 192.0.2.0/24 is no host's (RFC 5737).
        let socket = bind("192.0.2.10:0".parse().unwrap()).unwrap();
        assert_eq!(socket.local_addr().unwrap().ip(), "192.0.2.10".parse::<std::net::IpAddr>().unwrap());
        let held = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let taken = held.local_addr().unwrap();
        let e = format!("{:#}", bind(taken).unwrap_err());
        assert!(e.contains(&format!("cannot bind {taken}")) && e.contains("in use"), "{e}");
    }

    /// Datagrams the kernel drops because the receive buffer is full are
    /// counted (they used to vanish without a trace): fill a tiny buffer
    /// with nobody reading; what did not fit is the kernel's count.
    #[test]
    fn datagrams_the_kernel_drops_are_counted() {
        let socket = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        // The kernel's minimum receive buffer.
        nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::RcvBuf, &1).unwrap();
        let to = socket.local_addr().unwrap();
        let mut rx = Receiver::new(socket);
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let datagram = [7u8; 1024];
        // Loopback delivers within send_to: the queue is full long before 200.
        for _ in 0..200 {
            tx.send_to(&datagram, to).unwrap();
        }
        let mut queued = 0;
        loop {
            match rx.recv().unwrap() {
                0 => break,
                n => queued += n,
            }
        }
        assert!(queued > 0 && queued < 200, "{queued} of 200 datagrams queued");
        assert_eq!(kernel_drops(&rx.socket).unwrap() as usize, 200 - queued, "the kernel's drop count");
    }
}
