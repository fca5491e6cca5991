//! `helix-bench udp-send`: a UDP load generator for helixd's UDP source:
//! valid telemetry datagrams (docs/abi.md, "UDP ingest") at a target rate,
//! or as fast as it can.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::Args;

use helix::telemetry::datagram::{encode, MAX_SAMPLES};
use helix::telemetry::Sample;

#[derive(Args, Debug, Clone, PartialEq)]
pub struct UdpSendArgs {
    /// Where helixd's UDP source listens.
    #[arg(long)]
    pub to: SocketAddr,
    /// Samples per datagram (1 to 2046).
    #[arg(long, default_value_t = 40)]
    pub per_datagram: usize,
    /// Number of streams the samples cycle through.
    #[arg(long, default_value_t = 10_000)]
    pub streams: u32,
    /// Samples per second (0: as fast as possible).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Seconds to send.
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
}

/// Runs `helix-bench udp-send`.
pub fn run(a: UdpSendArgs) -> Result<()> {
    if a.per_datagram == 0 || a.per_datagram > MAX_SAMPLES {
        bail!("--per-datagram must be from 1 to {MAX_SAMPLES}");
    }
    let s = send(a.to, a.per_datagram, a.streams.max(1), a.rate, Duration::from_secs_f64(a.seconds))?;
    println!(
        "sent {} samples in {} datagrams to {} in {:.2} s: {:.0} samples/s",
        s.samples,
        s.datagrams,
        a.to,
        s.seconds,
        s.samples as f64 / s.seconds
    );
    Ok(())
}

/// What was sent.
#[derive(Debug, Clone)]
pub struct Sent {
    /// Datagrams sent.
    pub datagrams: u64,
    /// Samples sent.
    pub samples: u64,
    /// Seconds spent.
    pub seconds: f64,
}

/// Sends datagrams of `per_datagram` samples to `to` for `duration`, at
/// most `rate` samples/s (0: unlimited).
pub fn send(to: SocketAddr, per_datagram: usize, streams: u32, rate: u64, duration: Duration) -> Result<Sent> {
    let sock = UdpSocket::bind(if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" })?;
    sock.connect(to)?;
    let mut samples: Vec<Sample> =
        vec![Sample { stream: 0, quality: 0, seq: 0, sample_ns: 0, ingest_ns: 0, value: 0.0 }; per_datagram];
    let start = Instant::now();
    let (mut datagrams, mut sent, mut g) = (0u64, 0u64, 0u64);
    while start.elapsed() < duration {
        if rate > 0 {
            let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
            if sent >= due {
                std::thread::sleep(Duration::from_micros(200));
                continue;
            }
        }
        for s in samples.iter_mut() {
            *s = Sample {
                stream: (g % streams as u64) as u32,
                quality: 0,
                seq: g / streams as u64,
                sample_ns: helix::process::now_ns(),
                ingest_ns: 0,
                value: g as f64,
            };
            g += 1;
        }
        match sock.send(&encode(&samples)) {
            Ok(_) => {
                datagrams += 1;
                sent += per_datagram as u64;
            }
            // The receiver's buffer is full (ECONNREFUSED from an ICMP
            // error, or ENOBUFS): count nothing, try again.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ECONNREFUSED) | Some(libc::ENOBUFS)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Sent { datagrams, samples: sent, seconds: start.elapsed().as_secs_f64() })
}
