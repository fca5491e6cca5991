//! proptest: random sequences of operations on a real ring, checked step by
//! step against a simple model of what the ring promises.

mod common;

use common::{payload, TestNs};
use helix::*;
use proptest::prelude::*;

const MAX_READERS: usize = 4;

#[derive(Debug, Clone)]
enum Op {
    /// Publish a frame of this length (try_publish on block rings).
    Publish(usize),
    /// Publish a batch of this many frames (try_claim).
    Batch(u64),
    /// Reader i (mod the number of readers) reads one frame.
    Read(usize),
    /// Reader i reads up to n frames in one batch.
    ReadBatch(usize, usize),
    /// A reader joins, gating or not, at the newest or the oldest frame.
    Join { gating: bool, oldest: bool },
    /// Reader i leaves.
    Leave(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0usize..=40).prop_map(Op::Publish),
        1 => (1u64..=5).prop_map(Op::Batch),
        4 => (0usize..8).prop_map(Op::Read),
        1 => (0usize..8, 1usize..6).prop_map(|(i, n)| Op::ReadBatch(i, n)),
        1 => (any::<bool>(), any::<bool>()).prop_map(|(gating, oldest)| Op::Join { gating, oldest }),
        1 => (0usize..8).prop_map(Op::Leave),
    ]
}

/// What a reader is in the model.
#[derive(Debug)]
struct MReader {
    cursor: u64,
    gating: bool,
    lost: u64,
}

struct Model {
    capacity: u64,
    block: bool,
    published: u64,
    lens: Vec<usize>, // lens[seq - 1]
    readers: Vec<MReader>,
}

impl Model {
    /// The first sequence gating readers do not allow yet.
    fn gate(&self) -> u64 {
        self.readers.iter().filter(|r| r.gating).map(|r| r.cursor + self.capacity).min().unwrap_or(u64::MAX)
    }

    fn can_publish(&self, n: u64) -> bool {
        !self.block || self.published + n < self.gate()
    }

    /// What reader `i` reads next: Ok(seq) or the error.
    fn read(&mut self, i: usize) -> Result<u64, TryReadError> {
        let cap = self.capacity;
        let r = &mut self.readers[i];
        if r.cursor > self.published {
            return Err(TryReadError::Empty);
        }
        let oldest = (self.published + 1).saturating_sub(cap).max(1);
        if r.cursor < oldest {
            let lost = oldest - r.cursor;
            r.lost += lost;
            r.cursor = oldest;
            return Err(TryReadError::Overrun(Overrun { lost, resume_at: oldest }));
        }
        r.cursor += 1;
        Ok(r.cursor - 1)
    }
}

fn check_frame(seq: u64, got: &[u8], model: &Model) -> Result<(), TestCaseError> {
    let len = model.lens[(seq - 1) as usize];
    let mut want = [0u8; 64];
    payload(seq, len, &mut want);
    prop_assert_eq!(got, &want[..len], "content of frame {}", seq);
    Ok(())
}

/// `Op::Publish(len)`: the writer publishes when the model has room,
/// and is refused as full when it has none.
fn publish(w: &mut Writer, m: &mut Model, len: usize, buf: &mut [u8; 64]) -> Result<(), TestCaseError> {
    let seq = m.published + 1;
    payload(seq, len, buf);
    let res = w.try_publish(&buf[..len]);
    if m.can_publish(1) {
        prop_assert_eq!(res, Ok(seq));
        m.published = seq;
        m.lens.push(len);
    } else {
        let full = matches!(res, Err(PublishError::Full { needed: 1, .. }));
        prop_assert!(full, "{:?}", res);
    }
    Ok(())
}

/// `Op::Batch(n)`: a claim of `n` slots (at most the ring's capacity)
/// succeeds exactly when the model has room for them.
fn batch(w: &mut Writer, m: &mut Model, n: u64, buf: &mut [u8; 64]) -> Result<(), TestCaseError> {
    let n = n.min(m.capacity);
    match w.try_claim(n) {
        Ok(mut claim) => {
            prop_assert!(m.can_publish(n), "claimed {} slots the model does not have", n);
            for k in 0..n {
                let seq = m.published + 1 + k;
                let len = (seq as usize * 3) % 41;
                payload(seq, len, buf);
                prop_assert_eq!(claim.push(&buf[..len]), Ok(seq));
                m.lens.push(len);
            }
            prop_assert_eq!(claim.commit(), Some(m.published + n));
            m.published += n;
        }
        Err(e) => {
            prop_assert!(!m.can_publish(n), "claim of {} refused: {}", n, e);
            prop_assert!(matches!(e, PublishError::Full { .. }), "{}", e);
        }
    }
    Ok(())
}

/// `Op::Read(i)`: reader `i` reads what the model says, or fails as it says.
fn read(r: &mut Reader, m: &mut Model, i: usize, buf: &mut [u8; 64]) -> Result<(), TestCaseError> {
    let got = r.try_read(buf);
    match m.read(i) {
        Ok(seq) => {
            let info = got.map_err(|e| TestCaseError::fail(format!("reader {i}: expected {seq}, got {e}")))?;
            prop_assert_eq!(info.seq, seq);
            check_frame(seq, &buf[..info.len], m)?;
        }
        Err(e) => prop_assert_eq!(got, Err(e)),
    }
    Ok(())
}

/// `Op::ReadBatch(i, n)`: reader `i` reads a batch of up to `n` frames,
/// as `n` single reads of the model would, stopping at the first miss.
fn read_batch(r: &mut Reader, m: &mut Model, i: usize, n: usize) -> Result<(), TestCaseError> {
    let mut frames = Vec::new();
    let got = r.try_read_batch(n, |f| {
        let mut b = [0u8; 64];
        let len = f.copy_to(&mut b).unwrap();
        frames.push((f.seq(), b[..len].to_vec()));
    });
    // The model: like n single reads, stopping at the first miss.
    let mut want = Vec::new();
    let mut first_err = None;
    for _ in 0..n {
        match m.read(i) {
            Ok(seq) => want.push(seq),
            Err(e) => {
                if want.is_empty() {
                    first_err = Some(e);
                } else if let TryReadError::Overrun(_) = e {
                    // A batch stops before an overrun; the model
                    // took it already, so undo: the ring reports it
                    // on the next call. (Cannot happen in one
                    // thread: nothing is overwritten mid-batch.)
                    prop_assert!(false, "overrun inside a batch");
                }
                break;
            }
        }
    }
    match first_err {
        Some(e) => prop_assert_eq!(got, Err(e)),
        None => {
            prop_assert_eq!(got, Ok(want.len()));
            prop_assert_eq!(frames.iter().map(|f| f.0).collect::<Vec<_>>(), want);
            for (seq, bytes) in &frames {
                check_frame(*seq, bytes, m)?;
            }
        }
    }
    Ok(())
}

/// After every step: the shared counters agree with the model.
fn counters_agree(ring: &Ring, readers: &[Reader], m: &Model) -> Result<(), TestCaseError> {
    let stats = ring.stats();
    prop_assert_eq!(stats.published, m.published);
    prop_assert_eq!(stats.readers.len(), m.readers.len());
    for (r, mr) in readers.iter().zip(&m.readers) {
        prop_assert_eq!(r.cursor(), mr.cursor);
        prop_assert_eq!(r.lost(), mr.lost);
        prop_assert_eq!(r.lag(), m.published + 1 - mr.cursor);
    }
    Ok(())
}

fn run(capacity: u64, block: bool, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let ns = TestNs::new();
    let policy = if block { Policy::Block } else { Policy::Overwrite };
    let opts = RingOptions { capacity, max_payload: 40, policy, max_readers: MAX_READERS as u32, ..Default::default() };
    let ring = Ring::create(&ns, "m", &opts).unwrap();
    let mut w = ring.writer().unwrap();
    let mut readers: Vec<Reader> = Vec::new();
    let mut m = Model { capacity, block, published: 0, lens: vec![], readers: vec![] };
    let mut buf = [0u8; 64];
    for op in ops {
        match op {
            Op::Publish(len) => publish(&mut w, &mut m, len, &mut buf)?,
            Op::Batch(n) => batch(&mut w, &mut m, n, &mut buf)?,
            Op::Read(i) if !readers.is_empty() => {
                let i = i % readers.len();
                read(&mut readers[i], &mut m, i, &mut buf)?;
            }
            Op::ReadBatch(i, n) if !readers.is_empty() => {
                let i = i % readers.len();
                read_batch(&mut readers[i], &mut m, i, n)?;
            }
            Op::Join { gating, oldest } if readers.len() < MAX_READERS => {
                let start = if oldest { Start::Oldest } else { Start::Newest };
                let r = ring.reader(&ReaderOptions { gating, start, ..ReaderOptions::named("p") }).unwrap();
                let cursor = if oldest { (m.published + 1).saturating_sub(capacity).max(1) } else { m.published + 1 };
                prop_assert_eq!(r.cursor(), cursor);
                prop_assert_eq!(r.is_gating(), gating && block);
                readers.push(r);
                m.readers.push(MReader { cursor, gating: gating && block, lost: 0 });
            }
            Op::Leave(i) if !readers.is_empty() => {
                let i = i % readers.len();
                drop(readers.remove(i));
                m.readers.remove(i);
            }
            _ => {}
        }
        counters_agree(&ring, &readers, &m)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn overwrite_ring_matches_the_model(cap_log in 1u32..4, ops in prop::collection::vec(op(), 1..120)) {
        run(1 << cap_log, false, ops)?;
    }

    #[test]
    fn block_ring_matches_the_model(cap_log in 1u32..4, ops in prop::collection::vec(op(), 1..120)) {
        run(1 << cap_log, true, ops)?;
    }
}
