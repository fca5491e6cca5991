//! Cross-process round trips: a frame goes to a peer process through one
//! channel and comes back through another; the round-trip time is recorded.
//! The ring runs beside the baselines a user would otherwise pick, in the
//! same run, with the same frame size and the same core pinning.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use helix::shm::{Mapping, Namespace};
use helix::{Policy, ReaderOptions, Ring, RingOptions, Start, WaitStrategy, Writer};

use super::{curve, histogram, median, CurvePoint, PeerCommand, Summary};

/// The frame sizes swept by default: 8 B to 16 KiB.
pub const DEFAULT_SIZES: [usize; 5] = [8, 64, 512, 4096, 16384];

/// The ratios reported, numerator / denominator, of the median round trip.
pub const RATIOS: [(&str, &str); 6] = [
    ("helix-spin", "atomic"),
    ("helix-park", "futex"),
    ("helix-park", "pipe"),
    ("helix-park", "unix-stream"),
    ("helix-park", "unix-dgram"),
    ("helix-spin-then-park", "futex"),
];

/// One transport's round trips in one run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Measured {
    /// Percentiles, ns.
    pub summary: Summary,
    /// The percentile curve, for plots.
    pub curve: Vec<CurvePoint>,
}

/// One transport at one frame size, over every run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TransportResult {
    /// Transport name.
    pub transport: String,
    /// Whether its waiting side sleeps in the kernel.
    pub blocking: bool,
    /// Each run's measurement, in run order.
    pub runs: Vec<Measured>,
    /// Median over the runs of the p50 round trip, ns.
    pub median_p50_ns: f64,
}

/// A ratio of median round trips, taken within each run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ratio {
    /// The transport on top.
    pub numerator: String,
    /// The baseline.
    pub denominator: String,
    /// p50 numerator / p50 denominator in each run.
    pub per_run: Vec<f64>,
    /// The median of `per_run`.
    pub median: f64,
}

/// Every transport at one frame size.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SizeResult {
    /// Frame size, bytes.
    pub size: usize,
    /// Each transport, in report order.
    pub transports: Vec<TransportResult>,
    /// The ratios of [`RATIOS`] whose transports were measured.
    pub ratios: Vec<Ratio>,
}

impl SizeResult {
    /// Fills `median_p50_ns` and `ratios` from the runs.
    pub fn finish(&mut self) {
        for t in &mut self.transports {
            t.median_p50_ns = median(t.runs.iter().map(|m| m.summary.p50 as f64).collect());
        }
        let p50 = |name: &str| -> Option<Vec<f64>> {
            self.transports
                .iter()
                .find(|t| t.transport == name)
                .map(|t| t.runs.iter().map(|m| m.summary.p50 as f64).collect())
        };
        self.ratios = RATIOS
            .iter()
            .filter_map(|&(num, den)| {
                let (n, d) = (p50(num)?, p50(den)?);
                let per_run: Vec<f64> = n.iter().zip(&d).map(|(n, d)| n / d.max(1.0)).collect();
                Some(Ratio { numerator: num.into(), denominator: den.into(), median: median(per_run.clone()), per_run })
            })
            .collect();
    }

    /// The ratio `num / den`, if measured.
    pub fn ratio(&self, num: &str, den: &str) -> Option<&Ratio> {
        self.ratios.iter().find(|r| r.numerator == num && r.denominator == den)
    }

    /// The transport named `name`, if measured.
    pub fn transport(&self, name: &str) -> Option<&TransportResult> {
        self.transports.iter().find(|t| t.transport == name)
    }
}

/// The parameters of a pingpong run, as recorded in its JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Params {
    /// Frame sizes, bytes.
    pub sizes: Vec<usize>,
    /// Measured round trips per transport, size and run.
    pub iters: u64,
    /// Round trips before measuring, not recorded.
    pub warmup: u64,
    /// (this process's CPU, the peer's), if pinned.
    pub cpus: Option<(usize, usize)>,
    /// Repetitions of the whole set.
    pub runs: usize,
    /// Transports, in report order.
    pub transports: Vec<String>,
}

impl Results {
    /// Draws the percentile plot (SVG) of every transport at frame size
    /// `size`, from the first run.
    pub fn plot(&self, size: usize, machine: &super::Machine, path: &Path) -> io::Result<()> {
        let sr = self.sizes.iter().find(|s| s.size == size).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("no measurement at {size} bytes to plot"))
        })?;
        let series: Vec<super::plot::Series<'_>> = sr
            .transports
            .iter()
            .filter_map(|t| Some(super::plot::Series { name: &t.transport, curve: &t.runs.first()?.curve }))
            .collect();
        let title = format!("HELIX cross-process round trip, {size}-byte frames ({}, run 1)", machine.cpu);
        super::plot::percentile_plot(path, &title, &series)
    }
}

/// What `helix-bench pingpong --json` writes under `results`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    /// The parameters.
    pub params: Params,
    /// Each frame size.
    pub sizes: Vec<SizeResult>,
}

/// A channel to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Two HELIX rings, readers waiting with this strategy.
    Helix(WaitStrategy),
    /// Two 64-bit atomics in shared memory, both sides spinning: the floor
    /// for a spinning ping-pong (one cache-line round trip each way).
    Atomic,
    /// Two 32-bit futex words, both sides sleeping in `FUTEX_WAIT` and
    /// woken by `FUTEX_WAKE`: the floor for a blocking ping-pong.
    Futex,
    /// Two named pipes (FIFOs).
    Pipe,
    /// A Unix stream socket.
    UnixStream,
    /// A pair of Unix datagram sockets.
    UnixDgram,
}

impl Transport {
    /// Every transport, in the order the report shows them.
    pub const ALL: [Transport; 8] = [
        Transport::Helix(WaitStrategy::Spin),
        Transport::Atomic,
        Transport::Helix(WaitStrategy::SpinThenPark { spins: 4096 }),
        Transport::Helix(WaitStrategy::Park),
        Transport::Futex,
        Transport::Pipe,
        Transport::UnixStream,
        Transport::UnixDgram,
    ];

    /// Short name, as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Helix(WaitStrategy::Spin) => "helix-spin",
            Transport::Helix(WaitStrategy::SpinThenPark { .. }) => "helix-spin-then-park",
            Transport::Helix(WaitStrategy::Park) => "helix-park",
            Transport::Atomic => "atomic",
            Transport::Futex => "futex",
            Transport::Pipe => "pipe",
            Transport::UnixStream => "unix-stream",
            Transport::UnixDgram => "unix-dgram",
        }
    }

    /// Whether the peer sleeps in the kernel while waiting.
    pub fn blocking(self) -> bool {
        !matches!(self, Transport::Atomic | Transport::Helix(WaitStrategy::Spin))
    }
}

impl std::str::FromStr for Transport {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Transport::ALL.into_iter().find(|t| t.name() == s).ok_or_else(|| {
            let names: Vec<_> = Transport::ALL.iter().map(|t| t.name()).collect();
            format!("unknown transport {s:?}: expected one of {}", names.join(", "))
        })
    }
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct Config {
    /// Frame size in bytes (at least 8: the first 8 carry the round number).
    pub size: usize,
    /// Measured round trips.
    pub iters: u64,
    /// Round trips before measuring (not recorded).
    pub warmup: u64,
    /// (this process's CPU, the peer's CPU), if pinning.
    pub cpus: Option<(usize, usize)>,
    /// Namespace for the rings and shared words.
    pub namespace: Namespace,
    /// Folder for FIFOs and socket paths.
    pub dir: PathBuf,
}

impl Config {
    fn total(&self) -> u64 {
        self.warmup + self.iters
    }

    fn peer_args(&self, t: Transport) -> Vec<String> {
        let mut a = vec![
            "peer".into(),
            "pingpong".into(),
            t.name().into(),
            "--namespace".into(),
            self.namespace.as_str().into(),
            "--size".into(),
            self.size.to_string(),
            "--rounds".into(),
            self.total().to_string(),
            "--dir".into(),
            self.dir.display().to_string(),
        ];
        if let Some((_, peer)) = self.cpus {
            a.extend(["--cpu".into(), peer.to_string()]);
        }
        a
    }
}

/// One side of a channel: send a frame, receive a frame.
trait Side {
    fn send(&mut self, buf: &[u8]) -> io::Result<()>;
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<()>;
}

const PING: &str = "pp-ping";
const PONG: &str = "pp-pong";

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
        assert!(line < 2 && self.map.len() >= 256);
        // SAFETY: the mapping is 256 bytes, page aligned and writable; each
        // word is 8-aligned at offset 0 or 128 and only ever accessed
        // atomically, by this process and the peer.
        unsafe { &*(self.map.ptr().add(line * 128) as *const AtomicU64) }
    }

    fn u32(&self, line: usize) -> &AtomicU32 {
        assert!(line < 2 && self.map.len() >= 256);
        // SAFETY: as for `u64`: aligned, in bounds, only accessed atomically.
        unsafe { &*(self.map.ptr().add(line * 128) as *const AtomicU32) }
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
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(io::Error::other)?;
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The peer process: echoes `rounds` frames back, then exits.
pub fn peer(t: Transport, ns: &Namespace, size: usize, rounds: u64, dir: &Path) -> io::Result<()> {
    let mut side: Box<dyn Side> = match t {
        Transport::Helix(wait) => {
            let reader = helix::Reader::attach(
                ns,
                PING,
                &ReaderOptions { gating: true, start: Start::Oldest, wait, name: "pp-peer".into() },
            )
            .map_err(io::Error::other)?;
            let writer = Writer::attach(ns, PONG).map_err(io::Error::other)?;
            Box::new(HelixSide { writer, reader })
        }
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

/// Runs one transport: sets it up, starts the peer, measures round trips.
pub fn run(t: Transport, cfg: &Config, peer_cmd: PeerCommand<'_>) -> io::Result<Measured> {
    if cfg.size < 8 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "frames must be at least 8 bytes"));
    }
    if let Some((mine, _)) = cfg.cpus {
        super::pin_to_cpu(mine)?;
    }
    let ns = &cfg.namespace;
    let spawn = || -> io::Result<Child> {
        let mut child = peer_cmd(&cfg.peer_args(t)).stdout(Stdio::piped()).spawn()?;
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().expect("piped stdout")).read_line(&mut line)?;
        if line.trim() != "ready" {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other(format!("{} peer failed to start", t.name())));
        }
        Ok(child)
    };
    let (mut side, mut child): (Box<dyn Side>, Child) = match t {
        Transport::Helix(wait) => {
            let opts = RingOptions {
                capacity: 64,
                max_payload: cfg.size as u32,
                policy: Policy::Block,
                max_readers: 4,
                ..Default::default()
            };
            let ping = Ring::create(ns, PING, &opts).map_err(io::Error::other)?;
            let pong = Ring::create(ns, PONG, &opts).map_err(io::Error::other)?;
            let writer = ping.writer().map_err(io::Error::other)?;
            let reader = pong
                .reader(&ReaderOptions { gating: true, start: Start::Oldest, wait, name: "pp-main".into() })
                .map_err(io::Error::other)?;
            let child = spawn()?;
            (Box::new(HelixSide { writer, reader }), child)
        }
        Transport::Atomic => {
            let words = Words::create(ns)?;
            (Box::new(AtomicSide(Rounds { words, leader: true, round: 0 })), spawn()?)
        }
        Transport::Futex => {
            let words = Words::create(ns)?;
            (Box::new(FutexSide(Rounds { words, leader: true, round: 0 })), spawn()?)
        }
        Transport::Pipe => {
            fifo(&cfg.dir.join("ping"))?;
            fifo(&cfg.dir.join("pong"))?;
            let child = spawn()?;
            let tx = std::fs::OpenOptions::new().write(true).open(cfg.dir.join("ping"))?;
            let rx = File::open(cfg.dir.join("pong"))?;
            (Box::new(StreamSide { rx, tx }), child)
        }
        Transport::UnixStream => {
            let listener = UnixListener::bind(cfg.dir.join("stream"))?;
            let child = spawn()?;
            let (s, _) = listener.accept()?;
            (Box::new(StreamSide { rx: s.try_clone()?, tx: s }), child)
        }
        Transport::UnixDgram => {
            let s = UnixDatagram::bind(cfg.dir.join("dgram-main"))?;
            let child = spawn()?;
            s.connect(cfg.dir.join("dgram-peer"))?;
            (Box::new(DgramSide(s)), child)
        }
    };
    let result = measure(&mut *side, cfg);
    drop(side);
    if result.is_err() {
        let _ = child.kill();
    }
    let status = child.wait()?;
    cleanup(t, cfg);
    let summary = result?;
    if !status.success() {
        return Err(io::Error::other(format!("{} peer exited with {status}", t.name())));
    }
    Ok(summary)
}

fn measure(side: &mut dyn Side, cfg: &Config) -> io::Result<Measured> {
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
            h.record(rtt.max(1)).map_err(io::Error::other)?;
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
