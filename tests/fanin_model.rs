//! The fan-in ring against a model, through the public API and real files:
//! producers come and go (lane churn) while records of random lengths wrap
//! their lanes; the consumer gets exactly what each producer published, in
//! its order, and the lanes of those that left are freed and taken again.

mod common;

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use common::TestNs;
use helix::fanin::{Event, FanIn, FanInOptions, Producer};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    /// Attach a new producer (if a lane is free).
    Attach,
    /// Producer `i` (of those attached, modulo) writes a record of `len`.
    Push(usize, usize),
    /// Producer `i` publishes.
    Publish(usize),
    /// Producer `i` claims room for up to `n` records of up to `len` bytes
    /// at once, pushes as many as it got (of lengths up to `len`) and
    /// commits (publishing them with what it had pending).
    Batch(usize, usize, usize),
    /// Producer `i` claims room for records of exactly these lengths (all
    /// or none), pushes them and commits.
    Lens(usize, Vec<usize>),
    /// Producer `i` leaves.
    Leave(usize),
    /// One fair round of at most `n` records per lane.
    Drain(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => Just(Op::Attach),
        6 => (any::<usize>(), 0..=120usize).prop_map(|(i, l)| Op::Push(i, l)),
        2 => any::<usize>().prop_map(Op::Publish),
        3 => (any::<usize>(), 0..12usize, 0..=120usize).prop_map(|(i, n, l)| Op::Batch(i, n, l)),
        1 => (any::<usize>(), proptest::collection::vec(0..=120usize, 0..6)).prop_map(|(i, v)| Op::Lens(i, v)),
        1 => any::<usize>().prop_map(Op::Leave),
        3 => (1..8usize).prop_map(Op::Drain),
    ]
}

/// A producer with its model: its id, what it wrote and did not publish.
struct Live {
    id: u32,
    p: Producer,
    pending: Vec<Vec<u8>>,
    n: u32,
}

fn record(id: u32, n: u32, len: usize) -> Vec<u8> {
    let mut v: Vec<u8> = (0..len).map(|i| (id * 13 + n * 7 + i as u32) as u8).collect();
    if len >= 8 {
        v[..4].copy_from_slice(&id.to_ne_bytes());
        v[4..8].copy_from_slice(&n.to_ne_bytes());
    }
    v
}

/// Pushes records of `lens` into `b` (as many as it has room for) for
/// producer `id`, whose next record is `n`, and commits: what was pending
/// is published, and returned.
fn push_batch(
    mut b: helix::fanin::Batch<'_>,
    id: u32,
    n: &mut u32,
    pending: &mut Vec<Vec<u8>>,
    lens: impl Iterator<Item = usize>,
) -> Vec<Vec<u8>> {
    let room = b.claimed();
    for len in lens.take(room) {
        let v = record(id, *n, len);
        b.push(0, &v).expect("room for a claimed record");
        pending.push(v);
        *n += 1;
    }
    assert_eq!((b.pushed(), b.remaining()), (room, 0), "a claimed record had no room");
    b.commit();
    std::mem::take(pending)
}

/// Drains a round into `got` (keyed by producer id; records shorter than
/// 8 bytes are identified by lane order through `lane_owner`).
fn drain(fan: &mut FanIn, per_lane: usize, owner: &HashMap<usize, u32>, got: &mut HashMap<u32, Vec<Vec<u8>>>) {
    fan.try_drain(per_lane, |e| match e {
        Event::Record(r) => {
            let v = r.to_vec().unwrap();
            let id = if v.len() >= 8 { u32::from_ne_bytes(v[..4].try_into().unwrap()) } else { owner[&r.lane] };
            got.entry(id).or_default().push(v);
        }
        Event::Dropped(report) => panic!("{report}"),
        Event::Unbindable { lane, reason } => panic!("lane {lane}: {reason}"),
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn the_fan_in_ring_matches_the_model(ops in proptest::collection::vec(op(), 1..120)) {
        let ns = TestNs::watched("fan-in model", Duration::from_secs(60));
        let opts = FanInOptions { lanes: 3, lane_capacity: 512, max_payload: 120, ..Default::default() };
        let mut fan = FanIn::create(&ns, "m", &opts).unwrap();
        let mut live: Vec<Live> = Vec::new();
        let mut next_id = 0;
        let mut published: HashMap<u32, VecDeque<Vec<u8>>> = HashMap::new();
        let mut got: HashMap<u32, Vec<Vec<u8>>> = HashMap::new();
        // Which producer a lane's records belong to, for short records: a
        // lane is taken again only after its records were all drained.
        let mut owner: HashMap<usize, u32> = HashMap::new();
        for op in ops {
            match op {
                Op::Attach => {
                    if let Ok(p) = Producer::attach(&ns, "m") {
                        owner.insert(p.lane(), next_id);
                        live.push(Live { id: next_id, p, pending: Vec::new(), n: 0 });
                        next_id += 1;
                    }
                }
                Op::Push(i, len) if !live.is_empty() => {
                    let l = { let k = i % live.len(); &mut live[k] };
                    let v = record(l.id, l.n, len);
                    if l.p.try_push(0, &v).is_ok() {
                        l.pending.push(v);
                        l.n += 1;
                    }
                }
                Op::Publish(i) if !live.is_empty() => {
                    let l = { let k = i % live.len(); &mut live[k] };
                    l.p.publish();
                    published.entry(l.id).or_default().extend(l.pending.drain(..));
                }
                Op::Batch(i, n, len) if !live.is_empty() => {
                    let Live { id, p, pending, n: next } = { let k = i % live.len(); &mut live[k] };
                    // A batch claims at least one record or none (the lane is full).
                    let Ok(b) = p.try_claim_batch(n, len) else { continue };
                    prop_assert!(b.claimed() <= n && (b.claimed() > 0 || n == 0));
                    // Lengths up to the one claimed for, varying.
                    let done = push_batch(b, *id, next, pending, (0..).map(|j: usize| len - (j * 37) % (len + 1)));
                    published.entry(*id).or_default().extend(done);
                }
                Op::Lens(i, lens) if !live.is_empty() => {
                    let Live { id, p, pending, n: next } = { let k = i % live.len(); &mut live[k] };
                    let Ok(b) = p.try_claim_lens(&lens) else { continue };
                    prop_assert_eq!(b.claimed(), lens.len());
                    let done = push_batch(b, *id, next, pending, lens.into_iter());
                    published.entry(*id).or_default().extend(done);
                }
                Op::Leave(i) if !live.is_empty() => {
                    let mut l = live.remove(i % live.len());
                    // Leaving publishes what is pending.
                    published.entry(l.id).or_default().extend(l.pending.drain(..));
                }
                Op::Drain(n) => drain(&mut fan, n, &owner, &mut got),
                _ => {}
            }
        }
        for l in &mut live {
            l.p.publish();
            published.entry(l.id).or_default().extend(l.pending.drain(..));
        }
        drop(live);
        // Everything arrives, and every lane is freed.
        drain(&mut fan, 64, &owner, &mut got);
        while fan.stats().lanes.iter().any(|l| l.bound) {
            drain(&mut fan, 64, &owner, &mut got);
        }
        for (id, want) in published {
            let want: Vec<Vec<u8>> = want.into();
            prop_assert_eq!(got.remove(&id).unwrap_or_default(), want, "producer {}", id);
        }
        prop_assert!(got.values().all(|v| v.is_empty()), "records nobody published: {:?}", got.keys());
    }
}
