//! A fixed amount of fan-in work in one thread, for an instruction-count
//! profile (repeatable on a noisy machine, unlike a timing):
//!
//!     cargo build --release --example fanin_profile
//!     valgrind --tool=callgrind target/release/examples/fanin_profile [records] [size] [batch] [claim|push]
//!
//! One producer writes `batch` records of `size` bytes (default 64),
//! publishes, and the consumer drains them (each copied out), until
//! `records` (default 1,000,000) went through. With `claim` (the default)
//! the producer claims room for the whole batch at once
//! (`Producer::try_claim_batch`); with `push` it writes the records one by
//! one (`Producer::try_push`) and publishes after the last. Instructions
//! per record are the profile's total over `records`.

use helix::fanin::{Event, FanIn, FanInOptions, Producer};
use helix::Namespace;

fn main() {
    let arg = |i: usize, default: usize| std::env::args().nth(i).map_or(default, |a| a.parse().expect("a number"));
    let (records, size, batch) = (arg(1, 1_000_000), arg(2, 64), arg(3, 64));
    let claim = match std::env::args().nth(4).as_deref() {
        None | Some("claim") => true,
        Some("push") => false,
        Some(other) => panic!("{other}: claim or push"),
    };
    let ns = Namespace::new(&format!("fanprof{}", std::process::id())).expect("namespace");
    let opts = FanInOptions { lanes: 1, lane_capacity: 1 << 20, max_payload: size as u32, ..Default::default() };
    let mut fan = FanIn::create(&ns, "prof", &opts).expect("create");
    let mut p = Producer::attach(&ns, "prof").expect("attach");
    let record = vec![7u8; size];
    let mut out = vec![0u8; size];
    let (mut sent, mut got) = (0, 0);
    while got < records {
        let n = batch.min(records - sent);
        if claim {
            let mut b = p.try_claim_batch(n, size).expect("room");
            for _ in 0..n {
                b.push(1, &record).expect("claimed");
            }
            b.commit();
        } else {
            for _ in 0..n {
                p.try_push(1, &record).expect("room");
            }
            p.publish();
        }
        sent += n;
        while got < sent {
            got += fan.try_drain(batch, |e| match e {
                Event::Record(r) => {
                    r.copy_to(&mut out).expect("copy");
                }
                Event::Dropped(report) => panic!("{report}"),
                Event::Unbindable { lane, reason } => panic!("lane {lane}: {reason}"),
            });
        }
    }
    std::hint::black_box(&out);
    drop(p);
    drop(fan);
    FanIn::unlink(&ns, "prof").expect("unlink");
    let how = if claim { "claimed" } else { "pushed one by one" };
    println!("{records} records of {size} bytes in batches of {batch}, {how}");
}
