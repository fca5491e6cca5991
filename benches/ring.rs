//! In-process costs of the ring's hot paths (criterion). Cross-process
//! latency and throughput, beside their baselines, are `helix-bench`'s job.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use helix::*;

struct Fixture {
    ns: Namespace,
    _ring: Ring,
    w: Writer,
    r: Reader,
}

impl Fixture {
    fn new(name: &str, policy: Policy, gating: bool) -> Fixture {
        let ns = Namespace::new(&format!("crit{}", std::process::id())).unwrap();
        let _ = Ring::unlink(&ns, name);
        let ring =
            Ring::create(&ns, name, &RingOptions { capacity: 4096, max_payload: 64, policy, ..Default::default() })
                .unwrap();
        let w = ring.writer().unwrap();
        let r = ring.reader(&ReaderOptions { gating, ..ReaderOptions::named("bench") }).unwrap();
        let _ = Ring::unlink(&ns, name);
        Fixture { ns, _ring: ring, w, r }
    }
}

fn single(c: &mut Criterion) {
    let mut g = c.benchmark_group("publish+read 64 B");
    g.throughput(Throughput::Elements(1));
    for (label, policy, gating) in
        [("overwrite", Policy::Overwrite, false), ("block, gating reader", Policy::Block, true)]
    {
        let mut f = Fixture::new("single", policy, gating);
        let payload = [7u8; 64];
        let mut out = [0u8; 64];
        g.bench_function(label, |b| {
            b.iter(|| {
                f.w.publish(black_box(&payload)).unwrap();
                black_box(f.r.try_read(&mut out).unwrap());
            })
        });
        let _ = &f.ns;
    }
    g.finish();
}

fn batched(c: &mut Criterion) {
    const BATCH: u64 = 64;
    let mut g = c.benchmark_group("batch of 64 x 64 B");
    g.throughput(Throughput::Elements(BATCH));
    let mut f = Fixture::new("batch", Policy::Block, true);
    let frame = [[3u64; 8]; 1];
    g.bench_function("claim/push/commit + try_read_batch", |b| {
        b.iter(|| {
            let mut claim = f.w.claim(BATCH).unwrap();
            for _ in 0..BATCH {
                claim.push_pod(black_box(&frame)).unwrap();
            }
            claim.commit();
            let mut sum = 0u64;
            f.r.try_read_batch(BATCH as usize, |fr| sum += fr.read_at::<u64>(0).unwrap()).unwrap();
            black_box(sum)
        })
    });
    g.finish();
}

fn zero_copy(c: &mut Criterion) {
    let mut g = c.benchmark_group("typed 32 B sample");
    g.throughput(Throughput::Elements(1));
    let mut f = Fixture::new("pod", Policy::Overwrite, false);
    let sample = [1u64, 2, 3, 4];
    g.bench_function("publish_pod + peek/read", |b| {
        b.iter_batched(
            || (),
            |_| {
                f.w.publish_pod(black_box(&sample)).unwrap();
                let frame = f.r.try_peek().unwrap();
                black_box(frame.read::<[u64; 4]>().unwrap())
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, single, batched, zero_copy);
criterion_main!(benches);
