//! In-process costs of the fan-in ring's hot paths (criterion): one record
//! through a lane and back, a batch pushed one by one and one claimed at
//! once, and producer threads into a consumer thread. Cross-process
//! figures, fairness and round trips beside their baselines are for
//! `helix-bench fanin`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use helix::fanin::{Event, FanIn, FanInOptions, Producer};
use helix::Namespace;

fn ring(name: &str, lanes: u32) -> (Namespace, FanIn) {
    let ns = Namespace::new(&format!("critfan{}", std::process::id())).unwrap();
    let _ = FanIn::unlink(&ns, name);
    let opts = FanInOptions { lanes, lane_capacity: 1 << 20, max_payload: 64, ..Default::default() };
    (ns.clone(), FanIn::create(&ns, name, &opts).unwrap())
}

fn count(e: Event<'_>) {
    match e {
        Event::Record(r) => {
            black_box(r.read::<[u64; 8]>().unwrap());
        }
        Event::Dropped(report) => panic!("{report}"),
        Event::Unbindable { lane, reason } => panic!("lane {lane}: {reason}"),
    }
}

fn single_thread(c: &mut Criterion) {
    let (ns, mut fan) = ring("one", 1);
    let mut p = Producer::attach(&ns, "one").unwrap();
    let record = [7u64; 8];
    let mut g = c.benchmark_group("fan-in, one thread, 64 B");
    g.throughput(Throughput::Elements(1));
    g.bench_function("try_send + try_drain", |b| {
        b.iter(|| {
            p.try_send(1, bytemuck::bytes_of(black_box(&record))).unwrap();
            assert_eq!(fan.try_drain(1, count), 1);
        })
    });
    const BATCH: usize = 64;
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("64 x try_push, publish, try_drain(64)", |b| {
        b.iter(|| {
            for _ in 0..BATCH {
                p.try_push(1, bytemuck::bytes_of(black_box(&record))).unwrap();
            }
            p.publish();
            assert_eq!(fan.try_drain(BATCH, count), BATCH);
        })
    });
    g.bench_function("try_claim_batch(64), 64 x push, commit, try_drain(64)", |b| {
        b.iter(|| {
            let mut batch = p.try_claim_batch(BATCH, 64).unwrap();
            for _ in 0..BATCH {
                batch.push(1, bytemuck::bytes_of(black_box(&record))).unwrap();
            }
            batch.commit();
            assert_eq!(fan.try_drain(BATCH, count), BATCH);
        })
    });
    g.finish();
    drop(p);
    let _ = FanIn::unlink(&ns, "one");
}

/// `producers` threads each send `n` records (publishing every 16) while
/// this thread drains; returns the time for all of them.
fn threads(fan: &mut FanIn, ns: &Namespace, name: &str, producers: usize, n: u64) -> Duration {
    let start = Instant::now();
    let handles: Vec<_> = (0..producers)
        .map(|_| {
            let mut p = Producer::attach(ns, name).unwrap();
            std::thread::spawn(move || {
                let record = [9u64; 8];
                for i in 0..n {
                    p.push_timeout(1, bytemuck::bytes_of(&record), Duration::from_secs(10)).unwrap();
                    if i % 16 == 15 {
                        p.publish();
                    }
                }
            })
        })
        .collect();
    let mut got = 0;
    while got < producers as u64 * n {
        got += fan.drain_timeout(256, Duration::from_secs(10), count) as u64;
    }
    for h in handles {
        h.join().unwrap();
    }
    // Let the lanes of the producers that left be freed.
    while fan.stats().lanes.iter().any(|l| l.bound) {
        fan.drain_timeout(256, Duration::from_millis(1), count);
    }
    start.elapsed()
}

fn producer_threads(c: &mut Criterion) {
    let (ns, mut fan) = ring("threads", 4);
    let mut g = c.benchmark_group("fan-in, producer threads into a consumer thread, 64 B");
    for producers in [1, 4] {
        g.throughput(Throughput::Elements(producers as u64 * 100_000));
        g.bench_function(format!("{producers} producer(s)"), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| threads(&mut fan, &ns, "threads", producers, 100_000)).sum())
        });
    }
    g.finish();
    let _ = FanIn::unlink(&ns, "threads");
}

criterion_group!(benches, single_thread, producer_threads);
criterion_main!(benches);
