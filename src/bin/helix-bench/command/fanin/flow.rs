//! The flow half of `helix-bench fanin`: producer processes stream
//! records into one fan-in ring that this process consumes, checking each
//! record's length, sequence and first bytes; rates in total and per lane,
//! and each lane's share of what was delivered while no producer had run
//! dry.

use std::io::{self, Write};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use helix::fanin::{Event, FanIn, FanInOptions, Producer, Record};
use helix::shm::Namespace;
use helix::WaitStrategy;

use crate::affinity::pin_to_cpu;
use crate::command::peer::{PeerCmd, PeerFaninArgs, PeerProcess, Peers};

/// The fan-in ring of the flow.
pub const RING: &str = "fanin";

/// The longest anything waits for the other side.
const PATIENCE: Duration = Duration::from_secs(30);

/// One flow to measure.
#[derive(Debug, Clone)]
pub struct Flow {
    /// Producer processes (and lanes).
    pub producers: usize,
    /// Record payload, bytes (at least 8: the first 8 carry the sequence).
    pub size: usize,
    /// Records each producer sends.
    pub records: u64,
    /// Records a producer claims room for at once (and publishes together).
    pub batch: u64,
    /// Records the consumer takes from each lane per round.
    pub per_lane: usize,
    /// How the consumer waits.
    pub wait: WaitStrategy,
    /// The consumer's CPU first, producers spread over the rest.
    pub cpus: Vec<usize>,
    /// Namespace for the ring.
    pub namespace: Namespace,
}

impl Flow {
    /// Record bytes per lane: 1 MiB, or room for 16 records if more.
    pub fn lane_capacity(&self) -> u64 {
        let record = helix::fanin::layout::record_size(self.size) as u64;
        (16 * record).next_power_of_two().max(1 << 20)
    }
}

/// One lane in one run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LaneRun {
    /// Lane index.
    pub lane: usize,
    /// Records delivered.
    pub records: u64,
    /// The first record delivered (any lane) to this lane's last, seconds.
    pub seconds: f64,
    /// `records / seconds`.
    pub records_per_sec: f64,
    /// Payload MB/s (10^6 bytes).
    pub mb_per_sec: f64,
    /// Records delivered in the fairness window: from the drain round in
    /// which the last lane delivered its first record to the one in which
    /// the first lane delivered its last (every producer sending).
    pub window_records: u64,
    /// `window_records` over the mean of every lane's.
    pub share: f64,
}

/// One run of a flow.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FlowRun {
    /// The first record delivered to the last, seconds.
    pub seconds: f64,
    /// Records delivered per second, every lane.
    pub records_per_sec: f64,
    /// Payload MB/s, every lane.
    pub mb_per_sec: f64,
    /// Length of the fairness window (see [`LaneRun::window_records`]);
    /// 0 if no time had every producer sending (one finished before
    /// another began): then every share is 0.
    pub window_seconds: f64,
    /// The smallest lane share.
    pub min_share: f64,
    /// Drain rounds that delivered records.
    pub rounds: u64,
    /// Times the consumer slept on the doorbell.
    pub sleeps: u64,
    /// Each lane.
    pub lanes: Vec<LaneRun>,
}

/// Runs a flow once: creates the ring, starts the producers, consumes.
pub fn measure(flow: &Flow, peers: &Peers) -> Result<FlowRun> {
    let ns = &flow.namespace;
    let opts = FanInOptions {
        lanes: flow.producers as u32,
        lane_capacity: flow.lane_capacity(),
        max_payload: flow.size as u32,
        ..Default::default()
    };
    let mut fan = FanIn::create(ns, RING, &opts)?;
    fan.set_wait(flow.wait);
    let result = measure_on(&mut fan, flow, peers);
    drop(fan);
    let _ = FanIn::unlink(ns, RING);
    result
}

/// A producer process and its output.
type ProducerProcess = PeerProcess;

fn measure_on(fan: &mut FanIn, flow: &Flow, peers: &Peers) -> Result<FlowRun> {
    let mut kids = (0..flow.producers).map(|i| start_producer(flow, i, peers)).collect::<Result<Vec<_>>>()?;
    if let Some(&cpu) = flow.cpus.first() {
        pin_to_cpu(cpu)?;
    }
    let before = fan.stats();
    // All at once: one line each, a few microseconds apart.
    for (kid, _) in &mut kids {
        let stdin = kid.stdin.as_mut().expect("piped stdin");
        stdin.write_all(b"go\n").and_then(|()| stdin.flush()).context("starting a producer")?;
    }
    let mut run = consume(fan, flow)?;
    let after = fan.stats();
    (run.rounds, run.sleeps) = (after.rounds - before.rounds, after.sleeps - before.sleeps);
    for (mut kid, _) in kids {
        let status = kid.wait()?;
        if !status.success() {
            bail!("a producer exited with {status}");
        }
    }
    Ok(run)
}

/// Starts producer process `i` and waits until it holds a lane.
fn start_producer(flow: &Flow, i: usize, peers: &Peers) -> Result<ProducerProcess> {
    // Producers share the CPUs after the consumer's, round robin.
    let pool = if flow.cpus.len() > 1 { &flow.cpus[1..] } else { &flow.cpus[..] };
    let what = PeerCmd::Fanin(PeerFaninArgs {
        records: flow.records,
        size: flow.size,
        batch: flow.batch,
        cpu: (!pool.is_empty()).then(|| pool[i % pool.len()]),
    });
    peers.start("a fan-in producer", &what, true)
}

/// What the consumer has seen so far.
struct Tally {
    /// Records delivered, per lane.
    counts: Vec<u64>,
    /// When each lane delivered its last, from the first record.
    ends: Vec<Option<Duration>>,
    /// The counts once every lane had delivered a record, and when.
    opened: Option<(Duration, Vec<u64>)>,
    /// The counts when the first lane delivered its last, and when.
    closed: Option<(Duration, Vec<u64>)>,
    /// The first problem with a record.
    bad: Option<String>,
}

impl Tally {
    /// Checks and counts one record; `buf` is a record's size.
    fn record(&mut self, r: &Record<'_>, buf: &mut [u8]) {
        let due = self.counts[r.lane] + 1;
        self.counts[r.lane] = due;
        if self.bad.is_some() {
            return;
        }
        let problem = if r.len() != buf.len() {
            Some(format!("{} bytes, expected {}", r.len(), buf.len()))
        } else if r.seq != due {
            Some(format!("sequence {}, expected {due}", r.seq))
        } else if let Err(e) = r.copy_to(buf) {
            Some(e.to_string())
        } else if buf[..8] != r.seq.to_le_bytes() {
            Some(format!("its payload does not start with its sequence {}", r.seq))
        } else {
            None
        };
        self.bad = problem.map(|p| format!("lane {}: a record of {p}", r.lane));
    }

    /// After a drain round that ended `at`: opens the fairness window once
    /// every lane has delivered a record; notes the lanes that delivered
    /// their last of `records`, the first such closing the window.
    fn round_done(&mut self, records: u64, at: Duration) {
        if self.opened.is_none() && self.counts.iter().all(|&c| c > 0) {
            self.opened = Some((at, self.counts.clone()));
        }
        for k in 0..self.counts.len() {
            if self.counts[k] >= records && self.ends[k].is_none() {
                self.ends[k] = Some(at);
                self.closed.get_or_insert_with(|| (at, self.counts.clone()));
            }
        }
    }

    /// The fairness window's length and each lane's records in it (none
    /// if it never opened before it closed).
    fn window(&self) -> (Duration, Vec<u64>) {
        match (&self.opened, &self.closed) {
            (Some((from, first)), Some((to, last))) if from < to => {
                (*to - *from, last.iter().zip(first).map(|(l, f)| l - f).collect())
            }
            _ => (Duration::ZERO, vec![0; self.counts.len()]),
        }
    }
}

/// Drains until every lane delivered all its records.
fn consume(fan: &mut FanIn, flow: &Flow) -> Result<FlowRun> {
    let lanes = flow.producers;
    let mut t = Tally { counts: vec![0; lanes], ends: vec![None; lanes], opened: None, closed: None, bad: None };
    let mut buf = vec![0u8; flow.size];
    let mut start = None;
    let mut progress = Instant::now();
    while t.ends.iter().any(Option::is_none) {
        let before = Instant::now();
        let got = fan.drain_timeout(flow.per_lane, PATIENCE, |event| match event {
            Event::Record(r) => t.record(&r, &mut buf),
            Event::Dropped(report) => t.bad = Some(report.to_string()),
            Event::Unbindable { lane, reason } => t.bad = Some(format!("lane {lane}: {reason}")),
        });
        if let Some(bad) = t.bad.take() {
            bail!(bad);
        }
        let now = Instant::now();
        if got == 0 {
            if now - progress > PATIENCE {
                bail!("no record for {} s; delivered per lane: {:?}", PATIENCE.as_secs(), t.counts);
            }
            continue;
        }
        progress = now;
        let start = *start.get_or_insert(before);
        t.round_done(flow.records, now - start);
    }
    Ok(tally_run(&t, flow))
}

/// The rates and shares of a finished tally.
fn tally_run(t: &Tally, flow: &Flow) -> FlowRun {
    let secs = |d: Duration| d.as_secs_f64().max(1e-9);
    let mbs = |rate: f64| rate * flow.size as f64 / 1e6;
    let (window, in_window) = t.window();
    let mean = in_window.iter().sum::<u64>() as f64 / in_window.len() as f64;
    let lanes: Vec<LaneRun> = (0..t.counts.len())
        .map(|k| {
            let seconds = secs(t.ends[k].expect("every lane finished"));
            let rate = t.counts[k] as f64 / seconds;
            LaneRun {
                lane: k,
                records: t.counts[k],
                seconds,
                records_per_sec: rate,
                mb_per_sec: mbs(rate),
                window_records: in_window[k],
                share: in_window[k] as f64 / mean.max(1e-9),
            }
        })
        .collect();
    let seconds = lanes.iter().map(|l| l.seconds).fold(0.0, f64::max);
    let rate = t.counts.iter().sum::<u64>() as f64 / seconds;
    FlowRun {
        seconds,
        records_per_sec: rate,
        mb_per_sec: mbs(rate),
        window_seconds: window.as_secs_f64(),
        min_share: lanes.iter().map(|l| l.share).fold(f64::INFINITY, f64::min),
        rounds: 0,
        sleeps: 0,
        lanes,
    }
}

/// The producer process: takes a lane, says `ready`, waits for `go` on its
/// standard input, then sends `records` records of `size` bytes (each
/// starting with its sequence number, from 1) in batches: room for up to
/// `batch` records claimed at once, the records pushed, then published
/// together.
pub fn producer(ns: &Namespace, records: u64, size: usize, batch: u64) -> Result<()> {
    let mut p = Producer::attach_timeout(ns, RING, Duration::from_secs(10))?;
    println!("ready");
    io::stdout().flush()?;
    let mut line = String::new();
    io::stdin().read_line(&mut line)?;
    if line.trim() != "go" {
        bail!("expected `go` on standard input, got {line:?}");
    }
    let mut record = vec![0u8; size];
    let mut seq = 1;
    while seq <= records {
        let want = batch.min(records + 1 - seq) as usize;
        let mut b = p.claim_batch_timeout(want, size, PATIENCE)?;
        for _ in 0..b.claimed() {
            record[..8].copy_from_slice(&seq.to_le_bytes());
            b.push(1, &record)?;
            seq += 1;
        }
        b.commit();
    }
    Ok(())
}
