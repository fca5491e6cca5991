//! Publishing, reading and waiting allocate nothing after setup, and
//! neither do helixd's HAL sources per sample nor the ledger's append path
//! per batch: a counting global allocator
//! watches the threads under test while they exchange frames in all the
//! API's ways or ingest samples (other threads, such as the test's watchdog,
//! are not ours to count).

mod common;

// helixd's HAL sources, compiled in from the program's own files.
#[path = "../src/bin/helixd/hal/mod.rs"]
#[allow(dead_code)]
mod hal;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::TestNs;
use helix::fanin::{Event, FanIn, FanInOptions, FanInView, Producer};
use helix::*;

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
/// The largest single allocation (or reallocation) counted.
static LARGEST: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Set on the threads under test.
    static WATCHED: Cell<bool> = const { Cell::new(false) };
}

fn counts() -> bool {
    COUNTING.load(Ordering::Relaxed) && WATCHED.with(Cell::get)
}

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if counts() {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
            LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if counts() {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
            LARGEST.fetch_max(new_size, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const ROUNDS: u64 = 200;

/// The counters are global: the tests of this file take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Waits for this test's turn; then its namespace, watched from then on
/// as `what`, and the counters at 0 (a test before it may have counted
/// the allocations it expected). The turn ends when the guard is dropped.
fn take_turn(what: &'static str) -> (std::sync::MutexGuard<'static, ()>, TestNs) {
    let turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    ALLOCATIONS.store(0, Ordering::SeqCst);
    LARGEST.store(0, Ordering::SeqCst);
    (turn, TestNs::watched(what, Duration::from_secs(60)))
}

/// Runs `f` with this thread not watched (what it does is not counted),
/// then watches it again.
fn unwatched<T>(f: impl FnOnce() -> T) -> T {
    WATCHED.with(|w| w.set(false));
    let t = f();
    WATCHED.with(|w| w.set(true));
    t
}

/// The exchange test's rings: `z` (8 slots, block) with its writer and a
/// gating reader that parks; `lossy` (4 slots) with its writer and a
/// reader it laps.
struct Exchange {
    ring: Ring,
    w: Writer,
    r: Reader,
    lossy: Ring,
    lw: Writer,
    lr: Reader,
}

fn exchange(ns: &TestNs) -> Exchange {
    let opts = RingOptions { capacity: 8, max_payload: 48, policy: Policy::Block, ..Default::default() };
    let ring = Ring::create(ns, "z", &opts).unwrap();
    let lossy = Ring::create(ns, "lossy", &RingOptions { capacity: 4, ..opts.clone() }).unwrap();
    let w = ring.writer().unwrap();
    let lw = lossy.writer().unwrap();
    let r =
        Reader::attach(ns, "z", &ReaderOptions { gating: true, wait: WaitStrategy::Park, ..ReaderOptions::named("z") })
            .unwrap();
    let lr = lossy.reader(&ReaderOptions::named("lossy")).unwrap();
    Exchange { ring, w, r, lossy, lw, lr }
}

/// The exchange's reader: reads `ROUNDS` x 6 frames of `ring` through `r`
/// in every way, each waiting (parking) when empty; once, it stops until
/// the writer has had to wait for space.
fn read_every_way(r: &mut Reader, ring: &Ring) {
    let mut buf = [0u8; 48];
    let mut batch = [[0u64; 2]; 4];
    let mut seen = 0u64;
    while seen < ROUNDS * 6 {
        // Every way of reading, each waiting (parking) when empty.
        let info = r.read(&mut buf).unwrap();
        assert_eq!(info.seq, seen + 1);
        let (seq, v) = r.read_pod::<[u64; 2]>().unwrap();
        assert_eq!(v, [seq, !seq]);
        {
            let f = r.peek().unwrap();
            assert_eq!(f.read::<[u64; 2]>().unwrap(), [f.seq(), !f.seq()]);
        }
        let mut got = 1 + 2;
        while got < 6 {
            match r.try_read_batch_pod(&mut batch) {
                Ok(n) => got += n as u64,
                Err(TryReadError::Empty) => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
        seen += 6;
        if seen == 60 {
            // Stop reading until the writer has had to wait for
            // space (it will: the ring holds 8), so the writer's
            // wait path is part of what is counted.
            unwatched(|| {
                while ring.stats().writer_waits == 0 {
                    std::thread::yield_now();
                }
            });
        }
    }
}

/// Round `round` of the exchange's writer: six frames published through
/// `w` in every way; every 20th round, first waits until the reader is
/// parked.
fn write_every_way(w: &mut Writer, ring: &Ring, round: u64) {
    let s = w.next_seq();
    w.publish(&[7u8; 48]).unwrap();
    w.publish_pod(&[s + 1, !(s + 1)]).unwrap();
    w.try_publish(bytemuck::bytes_of(&[s + 2, !(s + 2)]))
        .unwrap_or_else(|_| w.publish_pod(&[s + 2, !(s + 2)]).unwrap());
    let mut c = w.claim(3).unwrap();
    for i in 3..6 {
        c.push_pod(&[s + i, !(s + i)]).unwrap();
    }
    c.commit();
    if round % 20 == 19 && round + 1 < ROUNDS {
        // Hold off until the reader is parked on the futex, so parking
        // and the writer's wake-up are part of what is counted (not after
        // the last round: the reader has everything by then).
        unwatched(|| {
            while ring.stats().parked == 0 {
                std::thread::yield_now();
            }
        });
    }
}

/// The overrun path on the lossy ring: laps the reader `lr`, then reads
/// all; whether the first read was an overrun (anything else fails).
fn lap_and_read(lw: &mut Writer, lr: &mut Reader) -> bool {
    for _ in 0..5 {
        lw.publish(b"lap").unwrap();
    }
    let overrun = match lr.try_read(&mut [0u8; 48]) {
        Err(TryReadError::Overrun(_)) => true,
        other => panic!("{other:?}"),
    };
    while lr.try_read(&mut [0u8; 48]).is_ok() {}
    overrun
}

#[test]
fn publish_read_and_wait_allocate_nothing() {
    let (_turn, ns) = take_turn("zero-allocation exchange");
    let Exchange { ring, mut w, mut r, lossy: _lossy, mut lw, mut lr } = exchange(&ns);
    let start = Arc::new(Barrier::new(2));
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (start, done, ring) = (start.clone(), done.clone(), ring.clone());
        std::thread::spawn(move || {
            WATCHED.with(|w| w.set(true));
            start.wait();
            read_every_way(&mut r, &ring);
            done.store(true, Ordering::Release);
            r
        })
    };

    WATCHED.with(|w| w.set(true));
    COUNTING.store(true, Ordering::SeqCst);
    start.wait();
    let mut overruns = 0;
    for round in 0..ROUNDS {
        write_every_way(&mut w, &ring, round);
        if lap_and_read(&mut lw, &mut lr) {
            overruns += 1;
        }
    }
    while !done.load(Ordering::Acquire) {
        std::thread::yield_now();
    }
    COUNTING.store(false, Ordering::SeqCst);
    WATCHED.with(|w| w.set(false));
    let r = reader.join().unwrap();
    assert_eq!(r.frames(), ROUNDS * 6);
    assert!(ring.stats().writer_waits >= 1);
    assert_eq!(overruns, ROUNDS);
    assert_eq!(ALLOCATIONS.load(Ordering::SeqCst), 0, "allocations on the hot path");
}

/// Runs `source` (a HAL source's loop) on a watched thread; counts its
/// allocations only from the moment it has written `warm` samples until it
/// has written `total`, with `feed` called meanwhile on this thread.
fn count_source_allocations(
    ring: &Ring,
    warm: u64,
    total: u64,
    mut feed: impl FnMut(),
    source: impl FnOnce(Writer, &hal::SourceState) + Send + 'static,
) -> usize {
    let state = hal::SourceState::new();
    let writer = ring.writer().unwrap();
    let thread = {
        let state = state.clone();
        std::thread::spawn(move || {
            WATCHED.with(|w| w.set(true));
            source(writer, &state);
        })
    };
    let samples = || state.samples.load(Ordering::Relaxed);
    while samples() < warm {
        feed();
    }
    ALLOCATIONS.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    while samples() < total {
        feed();
    }
    COUNTING.store(false, Ordering::SeqCst);
    state.stop.store(true, Ordering::Relaxed);
    thread.join().unwrap();
    ALLOCATIONS.load(Ordering::SeqCst)
}

#[test]
fn the_hal_sources_allocate_nothing_per_sample() {
    use hal::{sim::Sim, udp};
    use helix::telemetry::Sample;
    let (_turn, ns) = take_turn("zero-allocation HAL");
    let opts = RingOptions { capacity: 4096, max_payload: 48, policy: Policy::Overwrite, ..Default::default() };

    // The simulator, 1,000 streams x 1 kHz, for 200,000 samples.
    let ring = Ring::create(&ns, "sim", &opts).unwrap();
    let sim = Sim { streams: 1000, rate_hz: 1000.0, seed: 3 };
    let n = count_source_allocations(
        &ring,
        10_000,
        200_000,
        || std::thread::sleep(Duration::from_millis(1)),
        move |w, state| sim.run(w, state).unwrap(),
    );
    assert_eq!(n, 0, "the simulator allocated while writing samples");

    // The UDP source, valid datagrams and rejected ones alike.
    let ring = Ring::create(&ns, "udp", &opts).unwrap();
    let socket = udp::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let to = socket.local_addr().unwrap();
    let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let samples: Vec<Sample> =
        (0..40).map(|i| Sample { stream: i, quality: 0, seq: 1, sample_ns: 1, ingest_ns: 0, value: 1.5 }).collect();
    let datagram = helix::telemetry::datagram::encode(&samples);
    let mut sent = 0u64;
    let n = count_source_allocations(
        &ring,
        4_000,
        40_000,
        || {
            tx.send_to(&datagram, to).unwrap();
            tx.send_to(b"garbage", to).unwrap();
            sent += 1;
            if sent.is_multiple_of(64) {
                std::thread::sleep(Duration::from_millis(1));
            }
        },
        move |w, state| udp::serve(socket, w, state).unwrap(),
    );
    assert_eq!(n, 0, "the UDP source allocated while receiving samples");
}

/// The ledger's recording path: frames into a block, the block sealed into
/// the chain, the buffer written out. Once the buffer has grown to a batch,
/// nothing allocates (a new segment, every `segment_size_mib`, does).
#[test]
fn the_ledger_records_batches_without_allocating() {
    use helix::ledger::format::RingDecl;
    use helix::ledger::Ledger;
    let (_turn, _ns) = take_turn("zero-allocation ledger");
    let dir = tempfile::tempdir().unwrap();
    let (mut l, _) = Ledger::open(dir.path(), u64::MAX).unwrap();
    let decl = RingDecl { created_ns: 1, capacity: 4096, max_payload: 40, policy: 1, name: "telemetry".into() };
    let (id, mut seq) = l.declare(&decl).unwrap();
    let sample = [7u8; 40];
    let mut batch = |l: &mut Ledger, frames: u64, keep: usize| {
        for s in seq..seq + frames {
            l.reserve_frame(id, s, 1, 0, 1, sample.len()).copy_from_slice(&sample);
        }
        l.stamp_unsealed(42);
        l.seal(id, keep);
        seq += keep as u64;
        l.flush().unwrap();
    };
    // Warm up: the buffer grows to the largest batch.
    for _ in 0..3 {
        batch(&mut l, 4096, 4096);
    }
    WATCHED.with(|w| w.set(true));
    ALLOCATIONS.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    for round in 0..ROUNDS {
        // Full batches, small ones, and batches cut short by the ring.
        batch(&mut l, 1 + round * 17 % 4096, (round * 7 % 3) as usize);
        batch(&mut l, 500, 500);
    }
    COUNTING.store(false, Ordering::SeqCst);
    WATCHED.with(|w| w.set(false));
    assert_eq!(ALLOCATIONS.load(Ordering::SeqCst), 0, "the ledger allocated while recording");
    drop(l);
    let s = helix::ledger::verify(dir.path()).unwrap().unwrap();
    assert_eq!(s.rings[0].next_seq, seq);
}

/// The records the fan-in test sends.
const RECORDS: u64 = 4000;

/// The length of fan-in record `n`.
fn record_len(n: u64) -> usize {
    8 + (n % 7) as usize * 8
}

/// The fan-in test's consumer: drains `RECORDS` records from `fan`,
/// checking each, waiting (parking on the doorbell) when the lane is
/// empty; once, it stops until the producer on `lane` has had to wait for
/// space (seen through `watcher`).
fn consume(fan: &mut FanIn, watcher: &FanInView, lane: usize) {
    let mut buf = [0u8; 64];
    let mut next = 1u64;
    let mut paused = false;
    while next <= RECORDS {
        // Waits (parking on the doorbell when the lane is empty).
        fan.drain_timeout(8, Duration::from_secs(10), |e| match e {
            Event::Record(r) => {
                let len = r.copy_to(&mut buf).unwrap();
                assert_eq!(u64::from_ne_bytes(buf[..8].try_into().unwrap()), next);
                assert_eq!(len, 8 + (next % 7) as usize * 8);
                next += 1;
            }
            Event::Dropped(report) => panic!("{report}"),
            Event::Unbindable { lane, reason } => panic!("lane {lane}: {reason}"),
        });
        if !paused && next > 1200 {
            paused = true;
            // Stop consuming until the producer has had to wait
            // for space (it will: the lane holds 1 KiB), so its
            // wait and our wake-up of it are counted. (Not at a
            // multiple of 500, where it waits for us to sleep.)
            unwatched(|| {
                while watcher.stats().lanes[lane].full_waits == 0 {
                    std::thread::yield_now();
                }
            });
        }
    }
}

/// Sends record `n` (or, one way in four, a batch from `n` on) through
/// `p`, in the way `n` picks, in `payload`; the next record to send.
fn send_every_way(p: &mut Producer, mut n: u64, payload: &mut [u8; 64]) -> u64 {
    payload[..8].copy_from_slice(&n.to_ne_bytes());
    let len = record_len(n);
    // Every way of producing; the 1 KiB lane fills, so the producer
    // waits for space (parking) too.
    match n % 4 {
        0 => p.send_timeout(0, &payload[..len], Duration::from_secs(10)).unwrap(),
        1 => p.claim_timeout(len, Duration::from_secs(10)).unwrap().fill(0, &payload[..len]),
        2 => p.claim_timeout(len, Duration::from_secs(10)).unwrap().commit_with(|words| {
            for (w, c) in words.iter().zip(payload[..len].chunks(8)) {
                w.store(u64::from_ne_bytes(c.try_into().unwrap()), Ordering::Relaxed);
            }
        }),
        // A batch: room for up to 5 records claimed at once, published
        // together.
        _ => {
            let want = 5.min(RECORDS + 1 - n) as usize;
            let mut b = p.claim_batch_timeout(want, 64, Duration::from_secs(10)).unwrap();
            for _ in 0..b.claimed() {
                payload[..8].copy_from_slice(&n.to_ne_bytes());
                b.push(0, &payload[..record_len(n)]).unwrap();
                n += 1;
            }
            b.commit();
            n -= 1;
        }
    }
    n + 1
}

/// The fan-in test's producer: sends `RECORDS` records through `p` in
/// every way; every 500, first lets the consumer fall asleep (seen
/// through `view`).
fn produce(p: &mut Producer, view: &FanInView) {
    let mut payload = [0u8; 64];
    let mut n = 1;
    while n <= RECORDS {
        let first = n;
        n = send_every_way(p, n, &mut payload);
        if (first..n).any(|m| m % 4 == 0) {
            p.publish();
        }
        if (first..n).any(|m| m % 500 == 0) && n <= RECORDS {
            // Let the consumer fall asleep on the doorbell, so its parking
            // and the producer's ring are counted.
            unwatched(|| {
                p.publish();
                let sleeps = view.stats().sleeps;
                while view.stats().sleeps == sleeps {
                    std::thread::yield_now();
                }
            });
        }
    }
    p.publish();
}

#[test]
fn fanin_claim_publish_consume_and_wait_allocate_nothing() {
    let (_turn, ns) = take_turn("zero-allocation fan-in");
    let opts = FanInOptions { lanes: 2, lane_capacity: 1024, max_payload: 64, ..Default::default() };
    let mut fan = FanIn::create(&ns, "fan", &opts).unwrap();
    let mut p = Producer::attach(&ns, "fan").unwrap();
    // Binding the lane (a scan of the folder) is setup, not counted.
    p.try_send(0, &0u64.to_ne_bytes()).unwrap();
    assert_eq!(fan.try_drain(1, |_| {}), 1);
    let view = FanInView::open(&ns, "fan").unwrap();
    let watcher = FanInView::open(&ns, "fan").unwrap();
    let lane = p.lane();
    let start = Arc::new(Barrier::new(2));
    let consumer = {
        let start = start.clone();
        std::thread::spawn(move || {
            WATCHED.with(|w| w.set(true));
            start.wait();
            consume(&mut fan, &watcher, lane);
            fan
        })
    };
    WATCHED.with(|w| w.set(true));
    COUNTING.store(true, Ordering::SeqCst);
    start.wait();
    produce(&mut p, &view);
    let mut fan = consumer.join().unwrap();
    // A scan of the lanes allocates nothing either while nothing changed:
    // the consumer makes one at least every second, asked or not, so a
    // run that took longer counted one (and failed, before the lanes'
    // paths were made once). Made here, whatever the run took.
    let scans = unwatched(|| fan.stats().rescans);
    fan.sweep(|_| {});
    assert_eq!(unwatched(|| fan.stats().rescans), scans + 1);
    COUNTING.store(false, Ordering::SeqCst);
    WATCHED.with(|w| w.set(false));
    let stats = fan.stats();
    assert_eq!(stats.lanes[p.lane()].records, RECORDS + 1);
    assert!(stats.lanes[p.lane()].full_waits > 0, "the producer never waited: {stats:?}");
    assert!(stats.sleeps >= RECORDS / 500 - 1, "the consumer never slept: {stats:?}");
    assert_eq!(ALLOCATIONS.load(Ordering::SeqCst), 0, "allocations on the fan-in hot path");
}

/// helix-ledger's retention thread finds an anchor's chain hash in the
/// segment that holds it at every new anchor; it reads the segment a block
/// at a time. Reading the whole segment into memory (as it once did) left a
/// freed buffer of tens of MiB in the thread's malloc arena: the recorder's
/// RSS stepped by 22 MiB in the one-hour soak.
#[test]
fn finding_an_anchors_hash_holds_a_block_in_memory_not_the_segment() {
    use helix::ledger::anchor::hash_at;

    let (_turn, _ns) = take_turn("anchor hash in bounded memory");
    let dir = tempfile::tempdir().unwrap();
    const SEGMENT: u64 = 16 << 20;
    // One segment, most of it full, so the anchor's block is near its end.
    let (records, hash) = one_segment(dir.path(), 1, SEGMENT, SEGMENT * 3 / 4, 0);

    WATCHED.with(|w| w.set(true));
    COUNTING.store(true, Ordering::Relaxed);
    let found = hash_at(dir.path(), records);
    COUNTING.store(false, Ordering::Relaxed);
    WATCHED.with(|w| w.set(false));

    assert_eq!(found.unwrap(), Some(hash), "the chain's hash after {records} records");
    let largest = LARGEST.load(Ordering::Relaxed);
    assert!(largest <= 2 << 20, "an allocation of {largest} bytes: the segment ({SEGMENT} bytes) was read whole");
}

/// A ledger in `dir` of one segment (of `segment` bytes at most) holding at
/// least `bytes` of 48-byte frames (sequences from 1) of ring `t` made at
/// `created_ns`, and then, if `big` is not 0, one frame of `big` bytes;
/// its records and chain hash.
fn one_segment(
    dir: &std::path::Path,
    created_ns: u64,
    segment: u64,
    bytes: u64,
    big: usize,
) -> (u64, helix::ledger::format::Hash) {
    use helix::ledger::format::RingDecl;
    use helix::ledger::Ledger;

    let (mut ledger, _) = Ledger::open(dir, segment).unwrap();
    let decl = RingDecl { created_ns, capacity: 64, max_payload: 16 << 20, policy: 1, name: "t".into() };
    let (id, mut seq) = ledger.declare(&decl).unwrap();
    while ledger.stats().bytes < bytes {
        for _ in 0..1024 {
            ledger.reserve_frame(id, seq, 1, 0, 7, 48).fill(seq as u8);
            ledger.seal(id, 1);
            seq += 1;
        }
        ledger.flush().unwrap();
    }
    if big > 0 {
        ledger.reserve_frame(id, seq, 1, 0, 7, big).fill(7);
        ledger.seal(id, 1);
        ledger.flush().unwrap();
    }
    assert_eq!(ledger.segment(), 1, "the frames fit one segment");
    (ledger.chain().records, ledger.chain().hash)
}

/// `verify` and `head` read a segment a piece at a time: a segment of
/// 24 MiB of frames and one frame of 12 MiB, followed by 64 MiB of zeros (a
/// file extended and never written: a torn tail by the recorder's rule, or
/// a sparse file someone put under a segment's name) is verified holding a
/// piece of 8 MiB at a time, or the 12 MiB block, with the blocks that
/// straddle the pieces checked whole. Reading whole segments, a sparse file
/// of tens of GiB exhausted memory; a block longer than a piece, read by a
/// growing vector, took twice its length.
#[test]
fn verify_and_head_hold_a_piece_of_a_segment_in_memory_not_the_segment() {
    use helix::ledger::{head, verify};

    let (_turn, _ns) = take_turn("verify in bounded memory");
    let dir = tempfile::tempdir().unwrap();
    const ZEROS: u64 = 64 << 20;
    const BIG: usize = 12 << 20;
    let (records, hash) = one_segment(dir.path(), 1, 64 << 20, 24 << 20, BIG);
    let path = dir.path().join(helix::ledger::format::segment_name(1));
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    let written = f.metadata().unwrap().len();
    f.set_len(written + ZEROS).unwrap();

    WATCHED.with(|w| w.set(true));
    COUNTING.store(true, Ordering::Relaxed);
    let (summary, head) = (verify(dir.path()), head(dir.path()));
    COUNTING.store(false, Ordering::Relaxed);
    WATCHED.with(|w| w.set(false));

    let summary = summary.unwrap().unwrap();
    assert_eq!((summary.records, summary.hash, summary.partial_tail), (records, hash, ZEROS));
    let head = head.unwrap().unwrap();
    assert_eq!((head.records, head.hash, head.torn_bytes), (records, hash, ZEROS));
    let largest = LARGEST.load(Ordering::Relaxed);
    assert!(
        largest <= BIG + (1 << 20),
        "an allocation of {largest} bytes: the segment ({} bytes) was read whole, or its 12 MiB block into a doubling vector",
        written + ZEROS
    );
}

/// A catch-up reads a compressed segment a piece at a time too: one of
/// 24 MiB of frames is caught up through holding a piece of 8 MiB, not
/// what it expands to. Before, it was decompressed whole: a file of a few
/// KiB could take up to 64 GiB (the cap) of the reader's memory.
#[test]
fn a_catch_up_holds_a_piece_of_a_compressed_segment_not_the_segment() {
    use helix::ledger::catchup::{CatchUpError, CatchUpReader};
    use helix::ledger::compress::compress_segment;

    let (_turn, ns) = take_turn("catch-up of a compressed segment in bounded memory");
    let ring = Ring::create(&ns, "t", &RingOptions { capacity: 16, max_payload: 48, ..Default::default() }).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (records, _) = one_segment(dir.path(), ring.geometry().created_ns, 64 << 20, 24 << 20, 0);
    compress_segment(dir.path(), &dir.path().join(helix::ledger::format::segment_name(1))).unwrap();
    // The ring goes on from the ledger's last frame (the declaration is a
    // record too), and holds only its last 16.
    let (last, mut w) = (records - 1, ring.writer().unwrap());
    for seq in 1..=last + 16 {
        w.publish(&[seq as u8; 48]).unwrap();
    }

    WATCHED.with(|w| w.set(true));
    COUNTING.store(true, Ordering::Relaxed);
    let mut c = CatchUpReader::open(&ns, "t", dir.path(), 1, &ReaderOptions::named("catch-up")).unwrap();
    let mut buf = [0u8; 48];
    while c.cursor() <= last + 16 {
        match c.read_timeout(&mut buf, Duration::from_millis(50)) {
            Ok(info) => assert_eq!(buf, [info.seq as u8; 48], "sequence {}", info.seq),
            Err(CatchUpError::Empty) => {}
            Err(e) => panic!("{e}"),
        }
    }
    COUNTING.store(false, Ordering::Relaxed);
    WATCHED.with(|w| w.set(false));

    assert_eq!(c.stats().from_ledger, last);
    let largest = LARGEST.load(Ordering::Relaxed);
    assert!(largest <= 9 << 20, "an allocation of {largest} bytes: the segment (over 24 MiB) was read whole");
}

/// The anchors file grows by a line at every exported head (helix-bridge's
/// head mirror appends one every few seconds: millions a year). Appending
/// checks the file's lines, and retention reads them at each pass; both
/// held every anchor in memory (found by review): now a line at a time,
/// and retention keeps the highest few.
#[test]
fn appending_an_anchor_and_retention_hold_a_line_of_the_anchors_file_not_the_file() {
    use helix::ledger::anchor::{append_anchor, read_anchors_top, Anchor, ANCHORS_FILE};

    let (_turn, _ns) = take_turn("anchors in bounded memory");
    let dir = tempfile::tempdir().unwrap();
    const LINES: u64 = 100_000;
    let anchor = |records| Anchor { records, hash: [7; 32], time_ns: records, note: "nats stream X seq 1".into() };
    let text: String = (1..=LINES).map(|r| anchor(r).encode() + "\n").collect();
    std::fs::write(dir.path().join(ANCHORS_FILE), &text).unwrap();

    WATCHED.with(|w| w.set(true));
    COUNTING.store(true, Ordering::Relaxed);
    let appended = append_anchor(dir.path(), &anchor(LINES + 1));
    // Retention's first pass: no floor yet.
    let above = read_anchors_top(dir.path(), 0, None, 6);
    COUNTING.store(false, Ordering::Relaxed);
    WATCHED.with(|w| w.set(false));

    appended.unwrap();
    let above: Vec<u64> = above.unwrap().list.iter().map(|(_, a)| a.records).collect();
    assert_eq!(above, (LINES - 4..=LINES + 1).rev().collect::<Vec<_>>());
    let largest = LARGEST.load(Ordering::Relaxed);
    assert!(largest <= 64 << 10, "an allocation of {largest} bytes: the file ({} bytes) was held whole", text.len());
}
