//! A writer and three readers through one ring, each attached by name the
//! way separate processes attach: a gating reader that checks every frame,
//! a parked reader, and a deliberately slow reader that overruns.
//!
//! Run it with `cargo run --release --example demo`.

use std::time::{Duration, Instant};

use helix::*;

const FRAMES: u64 = 2_000_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ns = Namespace::new(&format!("demo{}", std::process::id()))?;
    let opts = RingOptions { capacity: 1024, max_payload: 48, policy: Policy::Block, ..Default::default() };
    let ring = Ring::create(&ns, "telemetry", &opts)?;
    println!(
        "created /dev/shm/{ns}.telemetry: {} slots of {} bytes, policy block",
        opts.capacity,
        ring.geometry().slot_size
    );

    let spawn_reader = |name: &'static str, gating: bool, wait: WaitStrategy, slow: bool| {
        let ns = ns.clone();
        let mut r =
            Reader::attach(&ns, "telemetry", &ReaderOptions { name: name.into(), gating, start: Start::Oldest, wait })
                .expect("attach reader");
        std::thread::spawn(move || {
            let (mut frames, mut lost, mut next) = (0u64, 0u64, 1u64);
            while next <= FRAMES {
                match r.read_pod_timeout::<[u64; 2]>(Duration::from_secs(5)) {
                    Ok((seq, [value, check])) => {
                        assert_eq!((seq, value, check), (next, seq, !seq), "{name}: wrong frame");
                        frames += 1;
                        next = seq + 1;
                        if slow && seq % 1000 == 0 {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    }
                    Err(ReadError::Overrun(o)) => {
                        lost += o.lost;
                        next = o.resume_at;
                    }
                    Err(e) => panic!("{name}: {e}"),
                }
            }
            (name, frames, lost)
        })
    };
    let readers = [
        spawn_reader("ledger-like (gating)", true, WaitStrategy::default(), false),
        spawn_reader("parked", false, WaitStrategy::Park, false),
        spawn_reader("slow (overruns)", false, WaitStrategy::default(), true),
    ];

    let mut writer = Writer::attach(&ns, "telemetry")?;
    let t0 = Instant::now();
    let mut seq = writer.next_seq();
    while seq <= FRAMES {
        let n = 64.min(FRAMES - seq + 1);
        let mut claim = writer.claim(n)?;
        for _ in 0..n {
            claim.push_pod(&[seq, !seq])?;
            seq += 1;
        }
    }
    let elapsed = t0.elapsed();
    println!(
        "published {FRAMES} frames in {elapsed:.2?} ({:.1} M frames/s)",
        FRAMES as f64 / elapsed.as_secs_f64() / 1e6
    );

    for r in readers {
        let (name, frames, lost) = r.join().expect("reader thread");
        println!("  {name:22} read {frames:>8}, lost {lost:>8} (reported as overruns, never silently)");
    }
    let s = ring.stats();
    println!(
        "the writer waited for the gating reader {} times ({:.1?} in all); {} demotions",
        s.writer_waits,
        Duration::from_nanos(s.writer_wait_ns),
        s.demotions
    );
    drop((writer, ring));
    Ring::unlink(&ns, "telemetry")?;
    Ok(())
}
