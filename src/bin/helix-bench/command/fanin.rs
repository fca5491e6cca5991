//! `helix-bench fanin`: the fan-in ring across processes. Producer
//! processes (1 to 8) stream records of 8 B to 64 KiB into one consumer:
//! records/s and MB/s in total and per lane, and each lane's share of what
//! was delivered while every producer still had records (fairness). Then a
//! request/response round trip, a record into a fan-in ring and the answer
//! back through a broadcast ring, spinning and parked, beside the broadcast
//! ring both ways, a Unix datagram socket and a pipe, measured as pingpong
//! measures (its code).

mod flow;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::{Deserialize, Serialize};

use helix::shm::Namespace;
use helix::WaitStrategy;

use super::list;
use super::peer::Peers;
use super::pingpong::{SizeResult, Sweep, Transport};
use super::stream::{wait_by_name, wait_name};
use crate::document::{utc_now, JsonArg};
use crate::machine::{load_average, Machine};
use crate::stats::median;

pub use flow::{producer, FlowRun};

// The arguments, which are also the parameters its JSON records (`--json`
// aside). (A `//` comment: clap would make a doc comment help text.)
#[derive(Args, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaninArgs {
    /// Producer processes, comma separated (each takes a lane of its own).
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 2, 4, 8])]
    pub producers: Vec<usize>,
    /// Record payload sizes in bytes (8 to 65536), comma separated.
    #[arg(long, value_delimiter = ',', default_values_t = DEFAULT_SIZES)]
    pub sizes: Vec<usize>,
    /// Records each producer sends (fewer of large records: see --megabytes).
    #[arg(long, default_value_t = 2_000_000)]
    pub records: u64,
    /// At most this many MB (10^6 bytes) of payload per producer.
    #[arg(long, default_value_t = 256)]
    pub megabytes: u64,
    /// Records a producer claims room for at once, writes and publishes
    /// together (one batch; fewer when the lane has room for fewer).
    #[arg(long, default_value_t = 64)]
    pub batch: u64,
    /// Records the consumer takes from each lane per drain round.
    #[arg(long, default_value_t = 64)]
    pub per_lane: usize,
    /// The consumer's wait strategy: spin, spin-then-park or park.
    #[arg(long, default_value = "spin")]
    #[serde(with = "wait_by_name")]
    pub wait: WaitStrategy,
    /// Round-trip frame sizes in bytes (8 to 16384), comma separated.
    #[arg(long, value_delimiter = ',', default_values_t = [64usize])]
    pub rtt_sizes: Vec<usize>,
    /// Measured round trips per transport.
    #[arg(long, default_value_t = 20_000)]
    pub iters: u64,
    /// Round trips before measuring.
    #[arg(long, default_value_t = 2_000)]
    pub warmup: u64,
    /// CPUs: the consumer's first, producers spread over the rest; the
    /// round trip's two processes on the first two. E.g. 0,1.
    #[arg(long, value_delimiter = ',')]
    pub cpus: Vec<usize>,
    /// Repeat every measurement this many times and report medians.
    #[arg(long, default_value_t = 1)]
    pub runs: usize,
    #[command(flatten)]
    #[serde(skip)]
    pub out: JsonArg,
}

impl FaninArgs {
    /// The command-line flags that give these arguments.
    pub fn to_args(&self) -> Vec<String> {
        let mut v = vec!["--producers".to_owned(), list(&self.producers), "--sizes".into(), list(&self.sizes)];
        v.extend(["--records".into(), self.records.to_string(), "--megabytes".into(), self.megabytes.to_string()]);
        v.extend(["--batch".into(), self.batch.to_string(), "--per-lane".into(), self.per_lane.to_string()]);
        v.extend(["--wait".into(), wait_name(self.wait).into(), "--rtt-sizes".into(), list(&self.rtt_sizes)]);
        v.extend(["--iters".into(), self.iters.to_string(), "--warmup".into(), self.warmup.to_string()]);
        if !self.cpus.is_empty() {
            v.extend(["--cpus".into(), list(&self.cpus)]);
        }
        v.extend(["--runs".into(), self.runs.to_string()]);
        v.extend(self.out.to_args());
        v
    }

    /// Records each producer sends at `size` bytes.
    fn records_at(&self, size: usize) -> u64 {
        self.records.min(self.megabytes * 1_000_000 / size as u64).max(1)
    }
}

/// The record sizes swept by default: 8 B to 64 KiB.
pub const DEFAULT_SIZES: [usize; 5] = [8, 64, 1024, 16384, 65536];

/// Largest record the flow sends.
const MAX_SIZE: usize = 64 << 10;

/// The round trip's transports, in report order.
pub const TRANSPORTS: [Transport; 6] = [
    Transport::FanIn(WaitStrategy::Spin),
    Transport::Helix(WaitStrategy::Spin),
    Transport::FanIn(WaitStrategy::Park),
    Transport::Helix(WaitStrategy::Park),
    Transport::UnixDgram,
    Transport::Pipe,
];

/// The round trip's ratios, numerator / denominator, of the median.
pub const RATIOS: [(&str, &str); 4] =
    [("fanin-spin", "helix-spin"), ("fanin-park", "helix-park"), ("fanin-park", "unix-dgram"), ("fanin-park", "pipe")];

/// One flow (producers, record size) over every run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FlowCase {
    /// Producer processes (and lanes).
    pub producers: usize,
    /// Record payload, bytes.
    pub size: usize,
    /// Records each producer sent per run.
    pub records: u64,
    /// Record bytes per lane.
    pub lane_capacity: u64,
    /// Each run.
    pub runs: Vec<FlowRun>,
    /// Median over the runs of the records/s in total.
    pub records_per_sec: f64,
    /// Median over the runs of the payload MB/s in total.
    pub mb_per_sec: f64,
    /// Median over the runs and lanes of each lane's records/s.
    pub lane_records_per_sec: f64,
    /// Median over the runs of the smallest lane share.
    pub min_share: f64,
}

impl FlowCase {
    /// Fills the medians from the runs.
    fn finish(&mut self) {
        let of = |f: fn(&FlowRun) -> f64| median(self.runs.iter().map(f).collect());
        (self.records_per_sec, self.mb_per_sec, self.min_share) =
            (of(|r| r.records_per_sec), of(|r| r.mb_per_sec), of(|r| r.min_share));
        self.lane_records_per_sec =
            median(self.runs.iter().flat_map(|r| r.lanes.iter().map(|l| l.records_per_sec)).collect());
    }
}

/// The parameters of a fanin run, as recorded in its JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Params {
    /// The arguments, their fields beside `rtt_cpus`.
    #[serde(flatten)]
    pub args: FaninArgs,
    /// (this process's CPU, the peer's) for the round trip, if pinned.
    pub rtt_cpus: Option<(usize, usize)>,
}

/// What `helix-bench fanin --json` writes under `results`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    /// The parameters.
    pub params: Params,
    /// Each flow, producers by size.
    pub flows: Vec<FlowCase>,
    /// The round trip at each size, pingpong's shape.
    pub round_trip: Vec<SizeResult>,
}

impl Results {
    /// The flow of `producers` at `size` bytes, if measured.
    pub fn flow(&self, producers: usize, size: usize) -> Option<&FlowCase> {
        self.flows.iter().find(|f| f.producers == producers && f.size == size)
    }
}

/// Runs `helix-bench fanin`.
pub fn run(a: FaninArgs, namespace: Namespace, peers: &Peers) -> Result<()> {
    let (load, started) = (load_average(), utc_now());
    if let Some(&bad) = a.sizes.iter().find(|&&s| !(8..=MAX_SIZE).contains(&s)) {
        bail!("record size {bad}: sizes must be from 8 to {MAX_SIZE} bytes");
    }
    if let Some(&bad) = a.producers.iter().find(|&&p| !(1..=helix::fanin::MAX_LANES as usize).contains(&p)) {
        bail!("{bad} producers: from 1 to {} (one lane each)", helix::fanin::MAX_LANES);
    }
    if a.sizes.is_empty() || a.producers.is_empty() || a.records == 0 || a.megabytes == 0 || a.batch == 0 {
        bail!("--producers, --sizes, --records, --megabytes and --batch must not be empty or 0");
    }
    if a.per_lane == 0 {
        bail!("--per-lane must be at least 1");
    }
    // The round trip's two processes: on the first two CPUs, or both on one.
    let rtt_cpus = match a.cpus.as_slice() {
        [] => None,
        [one] => Some((*one, *one)),
        [x, y, ..] => Some((*x, *y)),
    };
    let sweep = Sweep {
        sizes: &a.rtt_sizes,
        iters: a.iters,
        warmup: a.warmup,
        cpus: rtt_cpus,
        runs: a.runs,
        transports: &TRANSPORTS,
    };
    sweep.check()?;
    println!("machine: {}", Machine::detect());
    let flows = measure_flows(&a, &namespace, peers)?;
    println!("\nround trip: a request into a fan-in ring, the answer back through a HELIX ring");
    let round_trip = sweep.run(&RATIOS, &namespace, peers)?;
    let out = a.out.clone();
    let params = Params { args: a, rtt_cpus };
    out.write("fanin", load, started, Results { params, flows, round_trip })
}

/// Every flow, producers by size, each `a.runs` times, printing each run
/// and the medians.
fn measure_flows(a: &FaninArgs, namespace: &Namespace, peers: &Peers) -> Result<Vec<FlowCase>> {
    println!(
        "fanin: producers {}, records of {} bytes, claimed and published in batches of {}, drained {} per lane \
         per round, consumer {}, {}, {} run(s)",
        list(&a.producers),
        list(&a.sizes),
        a.batch,
        a.per_lane,
        wait_name(a.wait),
        if a.cpus.is_empty() { "not pinned".to_owned() } else { format!("CPUs {}", list(&a.cpus)) },
        a.runs
    );
    let mut cases = Vec::new();
    for &producers in &a.producers {
        for &size in &a.sizes {
            let f = flow::Flow {
                producers,
                size,
                records: a.records_at(size),
                batch: a.batch,
                per_lane: a.per_lane,
                wait: a.wait,
                cpus: a.cpus.clone(),
                namespace: namespace.clone(),
            };
            cases.push(measure_flow(&f, a.runs, peers)?);
        }
    }
    Ok(cases)
}

/// One flow `runs` times.
fn measure_flow(f: &flow::Flow, runs: usize, peers: &Peers) -> Result<FlowCase> {
    println!("\n{} producer(s), {}-byte records, {} each:", f.producers, f.size, f.records);
    let mut case = FlowCase {
        producers: f.producers,
        size: f.size,
        records: f.records,
        lane_capacity: f.lane_capacity(),
        runs: vec![],
        records_per_sec: 0.0,
        mb_per_sec: 0.0,
        lane_records_per_sec: 0.0,
        min_share: 0.0,
    };
    for run in 1..=runs {
        let r = flow::measure(f, peers)
            .with_context(|| format!("{} producer(s) of {}-byte records", f.producers, f.size))?;
        let lanes: Vec<String> = r.lanes.iter().map(|l| rate(l.records_per_sec)).collect();
        let shares: Vec<String> = r.lanes.iter().map(|l| format!("{:.2}", l.share)).collect();
        println!(
            "run {run}: {} records/s ({:.0} MB/s); per lane records/s: {}; shares: {} \
             (first {:.3} s); {} rounds, {} sleeps",
            rate(r.records_per_sec),
            r.mb_per_sec,
            lanes.join(" "),
            shares.join(" "),
            r.window_seconds,
            r.rounds,
            r.sleeps
        );
        case.runs.push(r);
    }
    case.finish();
    println!(
        "median over {runs} run(s): {} records/s ({:.0} MB/s) in total, {} per lane, smallest share {:.2}",
        rate(case.records_per_sec),
        case.mb_per_sec,
        rate(case.lane_records_per_sec),
        case.min_share
    );
    Ok(case)
}

/// Records/s for people: `21.37 M`, `6.30 k`.
pub fn rate(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2} M", x / 1e6)
    } else {
        format!("{:.2} k", x / 1e3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::report::{assert_reparses, Scenario};

    fn all() -> FaninArgs {
        FaninArgs {
            producers: vec![1, 4],
            sizes: vec![8, 65536],
            records: 1000,
            megabytes: 3,
            batch: 16,
            per_lane: 8,
            wait: WaitStrategy::Park,
            rtt_sizes: vec![64, 100],
            iters: 50,
            warmup: 5,
            cpus: vec![0, 1],
            runs: 2,
            out: JsonArg { json: Some("/tmp/f.json".into()) },
        }
    }

    #[test]
    fn the_arguments_parse_back_to_themselves() {
        let all = all();
        let few = FaninArgs { cpus: vec![], wait: WaitStrategy::Spin, out: JsonArg::default(), ..all.clone() };
        assert_reparses([all, few].map(Scenario::Fanin));
    }

    #[test]
    fn the_parameters_are_the_arguments_flat_beside_rtt_cpus() {
        let params = Params { args: all(), rtt_cpus: Some((0, 1)) };
        let json = serde_json::to_value(&params).unwrap();
        let want = serde_json::json!({
            "producers": [1, 4], "sizes": [8, 65536], "records": 1000, "megabytes": 3, "batch": 16,
            "per_lane": 8, "wait": "park", "cpus": [0, 1], "runs": 2, "rtt_sizes": [64, 100], "iters": 50,
            "warmup": 5, "rtt_cpus": [0, 1]
        });
        assert_eq!(json, want);
        let back: Params = serde_json::from_value(json).unwrap();
        assert_eq!((back.args, back.rtt_cpus), (FaninArgs { out: JsonArg::default(), ..all() }, Some((0, 1))));
    }

    #[test]
    fn large_records_are_capped_by_the_megabytes() {
        let crate::Cmd::Fanin(defaults) = crate::tests::parse(["fanin".to_owned()]) else { panic!("not fanin") };
        let a = FaninArgs { records: 1000, megabytes: 1, ..defaults };
        assert_eq!(a.records_at(64), 1000);
        assert_eq!(a.records_at(65536), 15);
        assert_eq!(FaninArgs { megabytes: 0, ..a }.records_at(8), 1);
        assert_eq!((rate(21_370_000.0), rate(6_300.0)), ("21.37 M".to_owned(), "6.30 k".to_owned()));
    }
}
