//! The verbs of `helix-bench`, one file each holding its arguments and its
//! run: the scenarios (latency and throughput of the ring measured across
//! real processes, beside the transports a user would otherwise pick, in
//! the same run on the same cores), `report` and `render`, which run them
//! all and write docs/PERFORMANCE.md, and `peer`, the other end of a
//! measurement.

pub mod attach;
pub mod bridge;
pub mod capacity;
pub mod control;
pub mod e2e;
pub mod fanin;
pub mod ledger;
pub mod peer;
pub mod pingpong;
pub mod render;
pub mod report;
pub mod soak;
pub mod stream;
pub mod udp;

/// `1,2,3`: a list as the value of a flag, as the scenarios' `to_args`
/// write it and clap reads it back (`value_delimiter = ','`).
pub fn list<T: ToString>(v: &[T]) -> String {
    v.iter().map(T::to_string).collect::<Vec<_>>().join(",")
}

/// `--cpus` and the list, or nothing when `cpus` is empty (no pinning).
pub fn cpus_flag(cpus: &[usize]) -> Vec<String> {
    if cpus.is_empty() {
        Vec::new()
    } else {
        vec!["--cpus".into(), list(cpus)]
    }
}
