//! The fan-in ring across real processes: eight producers into one
//! consumer, producers killed mid-record and their lanes taken over, and
//! the uid and pid the consumer learns from the kernel.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{arg, child, Kid, TestNs};
use helix::fanin::{Event, FanIn, FanInOptions, Producer, Record};
use helix::Namespace;

const RING: &str = "fan";
const LONG: Duration = Duration::from_secs(60);

/// The payload of record `n` of producer `id`: the two numbers, then bytes
/// that depend on both; 16 to 64 bytes long, so records wrap at every
/// offset.
fn payload(id: u32, n: u64, buf: &mut [u8; 64]) -> usize {
    let len = 16 + (n as usize * 13) % 49;
    buf[..4].copy_from_slice(&id.to_ne_bytes());
    buf[8..16].copy_from_slice(&n.to_ne_bytes());
    for (i, b) in buf[16..len].iter_mut().enumerate() {
        *b = (id as usize * 7 + n as usize * 31 + i) as u8;
    }
    len
}

/// Checks a record against [`payload`]; returns (producer id, n).
fn check(r: &Record<'_>) -> (u32, u64) {
    let mut got = [0u8; 64];
    let len = r.copy_to(&mut got).expect("a whole record");
    let id = u32::from_ne_bytes(got[..4].try_into().unwrap());
    let n = u64::from_ne_bytes(got[8..16].try_into().unwrap());
    let mut want = [0u8; 64];
    let want_len = payload(id, n, &mut want);
    assert_eq!(&got[..len], &want[..want_len], "record {n} of producer {id} is torn");
    assert_eq!(r.kind, id);
    (id, n)
}

/// Re-executed as a child: plays the producer role named in the env.
#[test]
fn child_entry() {
    let Ok(role) = std::env::var(common::ROLE_VAR) else { return };
    let ns = Namespace::from_env().unwrap();
    let id: u32 = arg("FAN_ID");
    let mut p = Producer::attach_timeout(&ns, RING, LONG).unwrap();
    println!("attached {} {}", p.lane(), p.epoch());
    let count: u64 = if role == "forever" { u64::MAX } else { arg("FAN_COUNT") };
    let mut buf = [0u8; 64];
    for n in 0..count {
        let len = payload(id, n, &mut buf);
        p.push_timeout(id, &buf[..len], LONG).unwrap();
        // Batches of 1 to 16 records, published together.
        if n % 16 == n % 7 {
            p.publish();
        }
    }
    drop(p);
    println!("done");
}

/// Starts a producer child; it prints `attached <lane> <epoch>` once it
/// holds a lane.
fn producer(ns: &TestNs, role: &str, id: u32, count: u64) -> Kid {
    let mut cmd = child(role, ns);
    cmd.env("FAN_ID", id.to_string()).env("FAN_COUNT", count.to_string());
    Kid::spawn(&mut cmd)
}

/// Drains (at least one round) until `until` says stop, checking every record: per producer,
/// numbers in order from 0 with no gap and no repeat. Returns the count
/// per producer id.
fn consume(fan: &mut FanIn, seen: &mut HashMap<u32, u64>, mut until: impl FnMut(&HashMap<u32, u64>) -> bool) {
    loop {
        fan.drain_timeout(64, Duration::from_secs(1), |e| match e {
            Event::Record(r) => {
                let (id, n) = check(&r);
                let next = seen.entry(id).or_insert(0);
                assert_eq!(n, *next, "producer {id}: record {n} arrived when {next} was due");
                *next += 1;
            }
            Event::Dropped(report) => panic!("{report}"),
            Event::Unbindable { lane, reason } => panic!("lane {lane}: {reason}"),
        });
        if until(seen) {
            return;
        }
    }
}

#[test]
fn eight_producer_processes_a_million_records_each_arrive_exactly_once() {
    const COUNT: u64 = 1_000_000;
    let ns = TestNs::watched("8 producers x 1 M records", Duration::from_secs(300));
    let opts = FanInOptions { lanes: 8, lane_capacity: 64 << 10, max_payload: 64, ..Default::default() };
    let mut fan = FanIn::create(&ns, RING, &opts).unwrap();
    let kids: Vec<Kid> = (0..8).map(|id| producer(&ns, "count", id, COUNT)).collect();
    let mut seen = HashMap::new();
    consume(&mut fan, &mut seen, |s| s.len() == 8 && s.values().all(|&n| n == COUNT));
    for kid in kids {
        kid.finish();
    }
    // Nothing more arrives, and the lanes of the producers that left are
    // freed once drained.
    consume(&mut fan, &mut seen, |_| true);
    fan.sweep(|e| panic!("unexpected event {}", matches!(e, Event::Record(_))));
    fan.drain_timeout(64, Duration::ZERO, |_| panic!("a record after the end"));
    let stats = fan.stats();
    assert_eq!(stats.lanes.iter().map(|l| l.records).sum::<u64>(), 8 * COUNT);
    assert!(stats.lanes.iter().all(|l| !l.bound), "{stats:?}");
    assert_eq!(stats.reclaimed, 8);
}

#[test]
fn producers_killed_mid_record_never_tear_one_and_the_next_takes_the_lane() {
    const KILLS: u32 = 60;
    let ns = TestNs::watched("killed producers", Duration::from_secs(300));
    // One lane: every new producer must take over the dead one's.
    let opts = FanInOptions { lanes: 1, lane_capacity: 4096, max_payload: 64, ..Default::default() };
    let mut fan = FanIn::create(&ns, RING, &opts).unwrap();
    let mut seen = HashMap::new();
    let mut last_epoch = 0;
    for id in 0..KILLS {
        // It attaches once we have freed the lane of the one before
        // (draining what that one published first), then publishes a few
        // hundred records (its lane fills and it waits for us); then it is
        // killed wherever it is.
        let mut kid = producer(&ns, "forever", id, 0);
        consume(&mut fan, &mut seen, |s| s.get(&id).is_some_and(|&n| n >= 300 + id as u64 * 7));
        common::signal(&kid.child.0, libc::SIGKILL);
        kid.child.0.wait().unwrap();
        let line = kid.expect("attached");
        let epoch: u64 = line.split(' ').nth(2).unwrap().parse().unwrap();
        assert!(epoch > last_epoch, "epoch {epoch} after {last_epoch}");
        last_epoch = epoch;
    }
    // The last one's published records still arrive, then its lane is free.
    while fan.stats().lanes[0].bound {
        fan.sweep(|e| panic!("{}", matches!(e, Event::Dropped(_))));
        consume(&mut fan, &mut seen, |_| true);
    }
    let p = Producer::attach(&ns, RING).unwrap();
    assert_eq!(p.epoch(), last_epoch + 1);
    let stats = fan.stats();
    assert_eq!(stats.lanes[0].leases, KILLS as u64);
    assert_eq!(stats.faults, 0);
    assert_eq!(stats.lanes[0].records, seen.values().sum::<u64>());
}

#[test]
fn the_consumer_learns_each_lanes_uid_and_pid_from_the_kernel() {
    if !common::root_or_skip("needs root to start a producer as another user") {
        return;
    }
    let ns = TestNs::watched("producer as another user", Duration::from_secs(60));
    // Group and others may produce.
    let opts = FanInOptions { lanes: 2, lane_capacity: 4096, max_payload: 64, mode: 0o666, ..Default::default() };
    let mut fan = FanIn::create(&ns, RING, &opts).unwrap();
    let exe = std::env::current_exe().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let copy = dir.path().join("fanin");
    std::fs::copy(&exe, &copy).unwrap();
    // The same arguments, on a copy `nobody` may run.
    let cmd = child("forever", &ns);
    let mut as_nobody = std::process::Command::new(&copy);
    as_nobody.args(cmd.get_args()).envs(cmd.get_envs().filter_map(|(k, v)| Some((k, v?))));
    use std::os::unix::process::CommandExt;
    as_nobody.uid(65534).gid(65534).env("FAN_ID", "5");
    // It keeps producing: the kernel vouches for a pid only while it lives.
    let kid = Kid::spawn(&mut as_nobody);
    let pid = kid.child.0.pid();
    let mut who = Vec::new();
    while who.len() < 10 {
        fan.drain_timeout(64, Duration::from_secs(1), |e| match e {
            Event::Record(r) => who.push((r.uid, r.pid)),
            Event::Dropped(report) => panic!("{report}"),
            Event::Unbindable { lane, reason } => panic!("lane {lane}: {reason}"),
        });
    }
    drop(kid);
    assert!(who.iter().all(|&w| w == (65534, pid)), "{who:?} (child pid {pid})");
}

/// Only the producer's write lock keeps its lane alive: anyone who may
/// open a lane file for reading could otherwise hold a read lock on the
/// lease byte and keep a dead producer's lane from ever being freed (a
/// review found this; the fix had no test).
#[test]
fn a_read_lock_on_a_dead_producers_lane_file_does_not_keep_its_lane() {
    let ns = TestNs::watched("a read lock on a dead lane", LONG);
    let opts = FanInOptions { lanes: 1, lane_capacity: 4096, max_payload: 64, ..Default::default() };
    let mut fan = FanIn::create(&ns, RING, &opts).unwrap();
    let mut seen = HashMap::new();
    let mut kid = producer(&ns, "forever", 0, 0);
    kid.expect("attached");
    consume(&mut fan, &mut seen, |s| s.get(&0).is_some_and(|&n| n >= 100));
    common::signal(&kid.child.0, libc::SIGKILL);
    kid.child.0.wait().unwrap();
    // Taken once its producer's write lock is gone (before, it conflicts).
    let path = helix::fanin::files::dir_path(&ns, RING).join(helix::fanin::files::lane_name(0));
    let lane = std::fs::File::open(&path).unwrap();
    common::read_lock(&lane, 1);
    let mut rounds = 0;
    while fan.stats().lanes[0].bound && rounds < 20 {
        fan.sweep(|e| panic!("{}", matches!(e, Event::Dropped(_))));
        consume(&mut fan, &mut seen, |_| true);
        rounds += 1;
    }
    assert!(!fan.stats().lanes[0].bound, "a read lock kept a dead producer's lane bound");
    assert_eq!(fan.stats().reclaimed, 1);
    drop(lane);
}
