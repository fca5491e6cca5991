//! The channels pingpong measures, both ends of each: HELIX rings, the raw
//! atomic and futex floors, pipes and Unix sockets; and the measurement of
//! one transport against its peer process.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{bail, Result};
use nix::sys::stat::Mode;

use helix::shm::{Mapping, Namespace};
use helix::{Policy, ReaderOptions, Ring, RingOptions, Start, Writer};

use super::{fanin, Config, Measured, Transport};
use crate::command::peer::Peers;
use crate::shared::child::ChildProcess;
use crate::stats::{curve, histogram, Summary};

/// One side of a channel: send a frame, receive a frame.
pub(super) trait Side {
    fn send(&mut self, buf: &[u8]) -> io::Result<()>;
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<()>;
}

const PING: &str = "pp-ping";
/// The ring the answers come back through.
pub(super) const PONG: &str = "pp-pong";

struct HelixSide {
    writer: Writer,
    reader: helix::Reader,
}

impl Side for HelixSide {
    fn send(&mut self, buf: &[u8]) -> io::Result<()> {
        self.writer.publish(buf).map(drop).map_err(io::Error::other)
    }
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<()> {
        self.reader.read(buf).map(drop).map_err(io::Error::other)
    }
}

/// Two words in a shared file, on separate 128-byte lines.
struct Words {
    map: Mapping,
}

impl Words {
    fn path(ns: &Namespace) -> PathBuf {
        PathBuf::from(format!("{}/{}.pp-words", helix::shm::SHM_DIR, ns.as_str()))
    }

    fn create(ns: &Namespace) -> io::Result<Words> {
        let path = Words::path(ns);
        let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path)?;
        file.set_len(256)?;
        Ok(Words { map: Mapping::new(&file, true)? })
    }

    fn open(ns: &Namespace) -> io::Result<Words> {
        let file = std::fs::OpenOptions::new().read(true).write(true).open(Words::path(ns))?;
        Ok(Words { map: Mapping::new(&file, true)? })
    }

    fn u64(&self, line: usize) -> &AtomicU64 {
        self.map.atomic_u64(line * 128)
    }

    fn u32(&self, line: usize) -> &AtomicU32 {
        self.map.atomic_u32(line * 128)
    }
}

/// Round bookkeeping shared by the word baselines: the leader (this
/// process) starts round r by writing r to word 0 and waits for r in word 1;
/// the follower (the peer) waits for r in word 0 and answers in word 1.
struct Rounds {
    words: Words,
    leader: bool,
    round: u64,
}

impl Rounds {
    fn out(&self) -> usize {
        usize::from(!self.leader)
    }

    /// The value to send (a leader starts the next round).
    fn next_out(&mut self) -> u64 {
        if self.leader {
            self.round += 1;
        }
        self.round
    }

    /// The value to wait for.
    fn want_in(&self) -> u64 {
        if self.leader {
            self.round
        } else {
            self.round + 1
        }
    }
}

/// Spinning atomic ping-pong.
struct AtomicSide(Rounds);

impl Side for AtomicSide {
    fn send(&mut self, _: &[u8]) -> io::Result<()> {
        let v = self.0.next_out();
        self.0.words.u64(self.0.out()).store(v, Ordering::Release);
        Ok(())
    }
    fn recv(&mut self, _: &mut [u8]) -> io::Result<()> {
        let want = self.0.want_in();
        while self.0.words.u64(1 - self.0.out()).load(Ordering::Acquire) != want {
            std::hint::spin_loop();
        }
        self.0.round = want;
        Ok(())
    }
}

/// Futex ping-pong: sleep at once, always wake the other side.
struct FutexSide(Rounds);

impl Side for FutexSide {
    fn send(&mut self, _: &[u8]) -> io::Result<()> {
        let v = self.0.next_out() as u32;
        let w = self.0.words.u32(self.0.out());
        w.store(v, Ordering::Release);
        helix::futex::wake_all(w).map(drop)
    }
    fn recv(&mut self, _: &mut [u8]) -> io::Result<()> {
        let want = self.0.want_in();
        let w = self.0.words.u32(1 - self.0.out());
        loop {
            let seen = w.load(Ordering::Acquire);
            if seen == want as u32 {
                break;
            }
            helix::futex::wait(w, seen, None)?;
        }
        self.0.round = want;
        Ok(())
    }
}

/// Byte streams: FIFOs and Unix stream sockets.
struct StreamSide<R: Read, W: Write> {
    rx: R,
    tx: W,
}

impl<R: Read, W: Write> Side for StreamSide<R, W> {
    fn send(&mut self, buf: &[u8]) -> io::Result<()> {
        self.tx.write_all(buf)
    }
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<()> {
        self.rx.read_exact(buf)
    }
}

struct DgramSide(UnixDatagram);

impl Side for DgramSide {
    fn send(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.send(buf).map(drop)
    }
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<()> {
        let n = self.0.recv(buf)?;
        if n != buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("datagram of {n} bytes, expected {}", buf.len()),
            ));
        }
        Ok(())
    }
}

fn fifo(path: &Path) -> io::Result<()> {
    nix::unistd::mkfifo(path, Mode::S_IRUSR | Mode::S_IWUSR).map_err(io::Error::from)
}

/// The peer process: echoes `rounds` frames back, then exits.
pub fn peer(t: Transport, ns: &Namespace, size: usize, rounds: u64, dir: &Path) -> Result<()> {
    let mut side: Box<dyn Side> = match t {
        Transport::Helix(wait) => {
            let opts = ReaderOptions { gating: true, start: Start::Oldest, wait, name: "pp-peer".into() };
            let reader = helix::Reader::attach(ns, PING, &opts)?;
            let writer = Writer::attach(ns, PONG)?;
            Box::new(HelixSide { writer, reader })
        }
        Transport::FanIn(wait) => Box::new(fanin::Answerer::create(ns, size, wait)?),
        Transport::Atomic => Box::new(AtomicSide(Rounds { words: Words::open(ns)?, leader: false, round: 0 })),
        Transport::Futex => Box::new(FutexSide(Rounds { words: Words::open(ns)?, leader: false, round: 0 })),
        Transport::Pipe => {
            println!("ready");
            io::stdout().flush()?;
            let rx = File::open(dir.join("ping"))?;
            let tx = std::fs::OpenOptions::new().write(true).open(dir.join("pong"))?;
            Box::new(StreamSide { rx, tx })
        }
        Transport::UnixStream => {
            let s = UnixStream::connect(dir.join("stream"))?;
            Box::new(StreamSide { rx: s.try_clone()?, tx: s })
        }
        Transport::UnixDgram => {
            let s = UnixDatagram::bind(dir.join("dgram-peer"))?;
            s.connect(dir.join("dgram-main"))?;
            Box::new(DgramSide(s))
        }
    };
    if t != Transport::Pipe {
        println!("ready");
        io::stdout().flush()?;
    }
    let mut buf = vec![0u8; size];
    for _ in 0..rounds {
        side.recv(&mut buf)?;
        side.send(&buf)?;
    }
    Ok(())
}

/// Measures one transport: sets it up, starts the peer, times the round
/// trips, and removes what it set up.
pub fn measure(t: Transport, cfg: &Config, peers: &Peers) -> Result<Measured> {
    if cfg.size < 8 {
        bail!("frames must be at least 8 bytes");
    }
    if let Some((mine, _)) = cfg.cpus {
        crate::affinity::pin_to_cpu(mine)?;
    }
    let result = connect(t, cfg, peers).and_then(|(mut side, mut child)| {
        let result = round_trips(&mut *side, cfg);
        drop(side);
        let status = if result.is_err() { child.kill() } else { child.wait() };
        let measured = result?;
        let status = status?;
        if !status.success() {
            bail!("{} peer exited with {status}", t.name());
        }
        Ok(measured)
    });
    cleanup(t, cfg);
    result
}

/// Starts the peer for `t` and waits until it says it is ready.
fn start_peer(t: Transport, cfg: &Config, peers: &Peers) -> Result<ChildProcess> {
    let mut cmd = peers.command(&cfg.peer(t));
    let mut child = ChildProcess::spawn(&format!("the {} peer", t.name()), cmd.stdout(Stdio::piped()))?;
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().expect("piped stdout")).read_line(&mut line)?;
    if line.trim() != "ready" {
        bail!("{} peer failed to start", t.name());
    }
    Ok(child)
}

/// Sets up this process's side of `t` and starts the peer.
fn connect(t: Transport, cfg: &Config, peers: &Peers) -> Result<(Box<dyn Side>, ChildProcess)> {
    let ns = &cfg.namespace;
    Ok(match t {
        Transport::Helix(wait) => {
            let ping = Ring::create(ns, PING, &ring_options(cfg.size))?;
            let writer = ping.writer()?;
            (Box::new(HelixSide { writer, reader: answers(cfg, wait)? }), start_peer(t, cfg, peers)?)
        }
        Transport::FanIn(wait) => {
            let reader = answers(cfg, wait)?;
            // The peer creates the fan-in ring (it is its consumer).
            let child = start_peer(t, cfg, peers)?;
            (Box::new(fanin::Asker::attach(ns, reader)?), child)
        }
        Transport::Atomic => {
            let words = Words::create(ns)?;
            (Box::new(AtomicSide(Rounds { words, leader: true, round: 0 })), start_peer(t, cfg, peers)?)
        }
        Transport::Futex => {
            let words = Words::create(ns)?;
            (Box::new(FutexSide(Rounds { words, leader: true, round: 0 })), start_peer(t, cfg, peers)?)
        }
        Transport::Pipe => {
            fifo(&cfg.dir.join("ping"))?;
            fifo(&cfg.dir.join("pong"))?;
            let child = start_peer(t, cfg, peers)?;
            let tx = std::fs::OpenOptions::new().write(true).open(cfg.dir.join("ping"))?;
            let rx = File::open(cfg.dir.join("pong"))?;
            (Box::new(StreamSide { rx, tx }), child)
        }
        Transport::UnixStream => {
            let listener = UnixListener::bind(cfg.dir.join("stream"))?;
            let child = start_peer(t, cfg, peers)?;
            let (s, _) = listener.accept()?;
            (Box::new(StreamSide { rx: s.try_clone()?, tx: s }), child)
        }
        Transport::UnixDgram => {
            let s = UnixDatagram::bind(cfg.dir.join("dgram-main"))?;
            let child = start_peer(t, cfg, peers)?;
            s.connect(cfg.dir.join("dgram-peer"))?;
            (Box::new(DgramSide(s)), child)
        }
    })
}

/// The options of the HELIX rings of a round trip of `size`-byte frames.
fn ring_options(size: usize) -> RingOptions {
    RingOptions { capacity: 64, max_payload: size as u32, policy: Policy::Block, max_readers: 4, ..Default::default() }
}

/// Creates the ring the answers come back through and this process's
/// (gating) reader of it.
fn answers(cfg: &Config, wait: helix::WaitStrategy) -> Result<helix::Reader> {
    let pong = Ring::create(&cfg.namespace, PONG, &ring_options(cfg.size))?;
    Ok(pong.reader(&ReaderOptions { gating: true, start: Start::Oldest, wait, name: "pp-main".into() })?)
}

/// Times `cfg.total()` round trips, recording those after the warm-up.
fn round_trips(side: &mut dyn Side, cfg: &Config) -> Result<Measured> {
    let mut h = histogram();
    let mut out = vec![0u8; cfg.size];
    let mut back = vec![0u8; cfg.size];
    for round in 0..cfg.total() {
        out[..8].copy_from_slice(&round.to_le_bytes());
        let t0 = Instant::now();
        side.send(&out)?;
        side.recv(&mut back)?;
        let rtt = t0.elapsed().as_nanos() as u64;
        if round >= cfg.warmup {
            h.record(rtt.max(1))?;
        }
    }
    Ok(Measured { summary: Summary::of(&h), curve: curve(&h) })
}

fn cleanup(t: Transport, cfg: &Config) {
    let ns = &cfg.namespace;
    match t {
        Transport::Helix(_) => {
            let _ = Ring::unlink(ns, PING);
            let _ = Ring::unlink(ns, PONG);
        }
        Transport::FanIn(_) => {
            let _ = helix::fanin::FanIn::unlink(ns, fanin::REQUESTS);
            let _ = Ring::unlink(ns, PONG);
        }
        Transport::Atomic | Transport::Futex => {
            let _ = std::fs::remove_file(Words::path(ns));
        }
        Transport::Pipe => {
            let _ = std::fs::remove_file(cfg.dir.join("ping"));
            let _ = std::fs::remove_file(cfg.dir.join("pong"));
        }
        Transport::UnixStream => {
            let _ = std::fs::remove_file(cfg.dir.join("stream"));
        }
        Transport::UnixDgram => {
            let _ = std::fs::remove_file(cfg.dir.join("dgram-main"));
            let _ = std::fs::remove_file(cfg.dir.join("dgram-peer"));
        }
    }
}
