//! The fan-in round trip's two ends: a request goes into a fan-in ring
//! (this process its producer, the peer its consumer) and the answer comes
//! back through a HELIX ring, the way a command and its acknowledgement
//! travel on the control path.

use std::io;
use std::time::{Duration, Instant};

use anyhow::Result;

use helix::fanin::{Event, FanIn, FanInOptions, Producer};
use helix::shm::Namespace;
use helix::{Reader, WaitStrategy, Writer};

use super::channel::{Side, PONG};

/// The fan-in ring the requests go into.
pub const REQUESTS: &str = "pp-requests";

/// The longest either end waits for the other.
const PATIENCE: Duration = Duration::from_secs(30);

/// This process's end: the producer of the requests, a reader of the
/// answers.
pub struct Asker {
    producer: Producer,
    answers: Reader,
}

impl Asker {
    /// Takes a lane of the peer's fan-in ring; `answers` reads the ring the
    /// answers come back through.
    pub fn attach(ns: &Namespace, answers: Reader) -> Result<Asker> {
        Ok(Asker { producer: Producer::attach(ns, REQUESTS)?, answers })
    }
}

impl Side for Asker {
    fn send(&mut self, buf: &[u8]) -> io::Result<()> {
        self.producer.send_timeout(1, buf, PATIENCE).map_err(io::Error::other)
    }
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<()> {
        self.answers.read(buf).map(drop).map_err(io::Error::other)
    }
}

/// The peer's end: the consumer of the requests, the writer of the answers.
pub struct Answerer {
    requests: FanIn,
    answers: Writer,
}

impl Answerer {
    /// Creates the fan-in ring for one lane of `size`-byte records, its
    /// consumer waiting with `wait`, and attaches to the answers' ring.
    pub fn create(ns: &Namespace, size: usize, wait: WaitStrategy) -> Result<Answerer> {
        let record = helix::fanin::layout::record_size(size) as u64;
        let opts = FanInOptions {
            lanes: 1,
            lane_capacity: (64 * record).next_power_of_two(),
            max_payload: size as u32,
            ..Default::default()
        };
        let mut requests = FanIn::create(ns, REQUESTS, &opts)?;
        requests.set_wait(wait);
        Ok(Answerer { requests, answers: Writer::attach(ns, PONG)? })
    }
}

impl Side for Answerer {
    fn send(&mut self, buf: &[u8]) -> io::Result<()> {
        self.answers.publish(buf).map(drop).map_err(io::Error::other)
    }
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<()> {
        let deadline = Instant::now() + PATIENCE;
        let mut got = None;
        while got.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "no request for 30 s"));
            }
            self.requests.drain_timeout(1, left, |event| {
                got = Some(match event {
                    Event::Record(r) if r.len() != buf.len() => Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("a request of {} bytes, expected {}", r.len(), buf.len()),
                    )),
                    Event::Record(r) => r.copy_to(buf).map(drop).map_err(io::Error::other),
                    Event::Dropped(report) => Err(io::Error::other(report.to_string())),
                    Event::Unbindable { lane, reason } => Err(io::Error::other(format!("lane {lane}: {reason}"))),
                })
            });
        }
        got.expect("set by the loop")
    }
}
