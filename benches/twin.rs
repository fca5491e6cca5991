//! In-process costs of helix-twin (criterion): the model taking in
//! simulator samples at 10,000 streams, the twin's reader draining a
//! ring full of them into the model (the frames/s it sustains when fed as
//! fast as it can take), and publishing the state table of 50,000
//! streams. Through the real binaries: tools/perf-twin.

// The programs' files compiled in below bring their unit-test modules,
// whose imports a bench does not use.
#![allow(unused_imports)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
// helix-twin's model, configuration and reader, and helixd's simulator,
// compiled in from the programs' own files.
include!("../tests/programs/twin.rs");

use config::TwinConfig;
use hal::sim::Sim;
use helix::telemetry::KIND_SAMPLE;
use helix::*;
use model::{Input, Twin};
use run::Ingest;

const STREAMS: u32 = 10_000;
const FRAMES: u64 = 1 << 20;

fn config() -> TwinConfig {
    // The embedded default: 10,000 streams, one rule (limits, rate, stale).
    let mut c = TwinConfig::embedded().unwrap();
    c.namespace = Namespace::new(&format!("critwin{}", std::process::id())).unwrap();
    c
}

fn model(c: &mut Criterion) {
    let cfg = config();
    let sim = Sim { streams: STREAMS, rate_hz: 100.0, seed: 1 };
    let inputs: Vec<Input> = (0..FRAMES)
        .map(|g| {
            let mut s = sim.sample(g, 0);
            s.ingest_ns = s.sample_ns;
            Input::Sample(s)
        })
        .collect();
    let mut g = c.benchmark_group("twin model, 10,000 streams");
    g.throughput(Throughput::Elements(FRAMES));
    g.sample_size(20);
    let mut twin = Twin::new(&cfg, 1);
    g.bench_function("input 1 Mi samples", |b| {
        b.iter(|| {
            for i in &inputs {
                twin.input(black_box(i));
            }
            twin.take_events().count()
        })
    });
    g.finish();
}

fn ring(c: &mut Criterion) {
    let cfg = config();
    let ns = cfg.namespace.clone();
    let _ = Ring::unlink(&ns, "telemetry");
    let ring = Ring::create(
        &ns,
        "telemetry",
        &RingOptions { capacity: FRAMES, max_payload: 48, policy: Policy::Overwrite, ..Default::default() },
    )
    .unwrap();
    let _ = Ring::unlink(&ns, "telemetry");
    let mut w = ring.writer().unwrap();
    let sim = Sim { streams: STREAMS, rate_hz: 100.0, seed: 1 };
    let mut next = 0u64;
    let mut g = c.benchmark_group("twin reading a ring, 10,000 streams");
    g.throughput(Throughput::Elements(FRAMES));
    g.sample_size(10);
    let mut twin = Twin::new(&cfg, 1);
    g.bench_function("poll 1 Mi sample frames", |b| {
        b.iter_batched(
            || {
                // A ring full of samples, and a fresh reader at its start.
                let mut r =
                    ring.reader(&ReaderOptions { start: Start::Newest, ..ReaderOptions::named("helix-twin") }).unwrap();
                let _ = r.try_read(&mut [0u8; 48]);
                let mut claim = w.claim(FRAMES).unwrap();
                for _ in 0..FRAMES {
                    let mut s = sim.sample(next, 0);
                    s.ingest_ns = s.sample_ns;
                    claim.push_kind(KIND_SAMPLE, bytemuck::bytes_of(&s)).unwrap();
                    next += 1;
                }
                claim.commit();
                Ingest::new(r)
            },
            |mut ingest| {
                let p = ingest.poll(&mut twin, usize::MAX);
                assert_eq!(p.frames, FRAMES);
                twin.take_events().count()
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn publishing(c: &mut Criterion) {
    // The twin's output at 50,000 streams: a full snapshot (every stream
    // has had a sample), as published every second, and an update with
    // every stream changed, as at 100 Hz every `update_interval_ms`. The
    // twin's loop reads no telemetry meanwhile.
    const MANY: u32 = 50_000;
    let mut cfg = config();
    cfg.streams = MANY;
    let ns = cfg.namespace.clone();
    let opts =
        |max_payload| RingOptions { capacity: 1 << 17, max_payload, policy: Policy::Overwrite, ..Default::default() };
    let made: Vec<Ring> = [("twin.state", 176), ("alarms", 56)]
        .into_iter()
        .map(|(name, size)| {
            let _ = Ring::unlink(&ns, name);
            let r = Ring::create(&ns, name, &opts(size)).unwrap();
            let _ = Ring::unlink(&ns, name);
            r
        })
        .collect();
    let mut publisher = publish::Publisher::new(made[0].writer().unwrap(), made[1].writer().unwrap());
    let mut twin = Twin::new(&cfg, 1);
    let sim = Sim { streams: MANY, rate_hz: 100.0, seed: 1 };
    let mut next = 0u64;
    let mut feed = |twin: &mut Twin| {
        for _ in 0..MANY {
            let mut s = sim.sample(next, 0);
            s.ingest_ns = s.sample_ns;
            twin.input(&Input::Sample(s));
            next += 1;
        }
        twin.take_events().count()
    };
    let mut g = c.benchmark_group("twin publishing, 50,000 streams");
    g.throughput(Throughput::Elements(MANY as u64));
    g.sample_size(20);
    feed(&mut twin);
    g.bench_function("snapshot", |b| b.iter(|| publisher.snapshot(&mut twin, 1)));
    g.bench_function("update, every stream changed", |b| {
        // Only the update is timed: the samples that changed every stream
        // go in before each.
        b.iter_custom(|iters| {
            let mut took = std::time::Duration::ZERO;
            for _ in 0..iters {
                feed(&mut twin);
                let t = std::time::Instant::now();
                publisher.update(&mut twin, 1);
                took += t.elapsed();
            }
            took
        })
    });
    g.finish();
}

criterion_group!(benches, model, ring, publishing);
criterion_main!(benches);
