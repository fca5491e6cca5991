//! The recorder's retention: on a thread of its own (reading a segment to
//! check an anchor takes a while, and recording must not wait), it deletes
//! the oldest closed segments past `[retention]`'s limits that an anchor
//! covers (`helix::ledger::retention`).
//!
//! It looks at the folder every second and makes a pass when a segment was
//! started, the anchors file changed, or a minute went by. Every deletion
//! is logged; a refusal (a segment past retention that no anchor covers),
//! an anchor that does not match the chain and an error are logged once,
//! not on every pass.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use tracing::{debug, error, info, warn};

use helix::ledger::anchor::{covered, read_anchors_top, ANCHORS_FILE};
use helix::ledger::compress::{compress_segment, is_compressed};
use helix::ledger::format::{hex, segment_name};
use helix::ledger::retention::{plan, prune, read_pruned, segment_infos, vouch, Plan, Policy};
use helix::ledger::sign::Signer;
use helix::ledger::store::segments;

/// How often the folder is looked at.
const LOOK_EVERY: Duration = Duration::from_secs(1);
/// A pass at least this often (segments age without anything changing).
const PASS_EVERY: Duration = Duration::from_secs(60);

/// The retention thread; stopped and joined on drop.
pub struct Retainer {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Retainer {
    /// Starts retention on `dir` if `policy` sets a limit or compresses;
    /// `signer` (the recorder's) signs the `pruned` manifest.
    pub fn spawn(dir: &Path, policy: Policy, signer: Option<Signer>) -> Result<Option<Retainer>> {
        if !policy.is_set() && !policy.compress {
            return Ok(None);
        }
        if policy.is_set() {
            info!(
                "retention: closed segments older than {} or beyond {} in total are deleted once anchored",
                policy.max_age.map_or("(no limit)".into(), |a| format!("{:.2} days", a.as_secs_f64() / 86400.0)),
                policy.max_total_bytes.map_or("(no limit)".into(), |b| format!("{b} bytes")),
            );
        }
        if policy.compress {
            info!("retention: closed segments are compressed (LZ4 frames, seg-NNNNNNNNNN.hxl.lz4)");
        }
        let (stop, rx) = mpsc::channel::<()>();
        let mut state = State { dir: dir.to_owned(), policy, signer, ..State::default() };
        let thread = std::thread::Builder::new()
            .name("ledger-retention".into())
            .spawn(move || {
                let mut seen = None;
                let mut last_pass: Option<Instant> = None;
                loop {
                    let now = state.look();
                    if seen.as_ref() != Some(&now) || last_pass.is_none_or(|t| t.elapsed() >= PASS_EVERY) {
                        // Asked to stop (the recorder is stopping, and
                        // its rings wait for that): between segments.
                        state.pass(&|| !matches!(rx.try_recv(), Err(mpsc::TryRecvError::Empty)));
                        (seen, last_pass) = (Some(now), Some(Instant::now()));
                    }
                    match rx.recv_timeout(LOOK_EVERY) {
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        _ => return,
                    }
                }
            })
            .context("starting the retention thread")?;
        Ok(Some(Retainer { stop: Some(stop), thread: Some(thread) }))
    }
}

impl Drop for Retainer {
    fn drop(&mut self) {
        self.stop = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Anchors a pass holds at once ([`State::anchored_past`]).
const ANCHORS_AT_ONCE: usize = 64;

/// What a pass keeps between passes, so that it logs a thing once.
#[derive(Default)]
struct State {
    dir: PathBuf,
    policy: Policy,
    signer: Option<Signer>,
    /// The record count an anchor was found to cover (checked once).
    anchored: u64,
    /// Lines of the anchors file logged as not matching.
    unmatched: HashSet<usize>,
    /// The segment last logged as past retention but not anchored.
    refused: Option<u64>,
    /// The error last logged.
    failed: Option<String>,
    /// Why the manifest was not vouched for, as last logged.
    unvouched: Option<String>,
}

/// What decides that a pass is due: the newest segment and the anchors
/// file's size and time.
type Look = (Option<u64>, Option<(u64, SystemTime)>);

impl State {
    fn look(&self) -> Look {
        let newest = segments(&self.dir).ok().and_then(|s| s.last().map(|(n, _)| *n));
        let anchors =
            std::fs::metadata(self.dir.join(ANCHORS_FILE)).ok().and_then(|m| Some((m.len(), m.modified().ok()?)));
        (newest, anchors)
    }

    /// One pass; an error is logged (once while it repeats) and the next
    /// pass tries again. Compression (a segment takes a while, and the
    /// first pass may have many) ends early once `stopping`.
    fn pass(&mut self, stopping: &dyn Fn() -> bool) {
        match self.try_pass(stopping) {
            Ok(()) => self.failed = None,
            Err(e) => {
                let msg = format!("{e:#}");
                if self.failed.as_ref() != Some(&msg) {
                    error!("retention: {msg}; nothing deleted, trying again later");
                    self.failed = Some(msg);
                }
            }
        }
    }

    /// A recorder that signs deletes nothing past a manifest that is not
    /// its key's (`helix::ledger::retention::vouch`): then `plan` deletes
    /// nothing, said once until that changes, and compression goes on
    /// (found by review: the refusal ended the pass before it, and a
    /// folder the recorder had pruned unsigned, or under another key,
    /// stopped being compressed too).
    fn vouch(&mut self, plan: &mut Plan) {
        let Some(signer) = self.signer.as_ref().filter(|_| !plan.delete.is_empty()) else { return };
        match vouch(&self.dir, signer) {
            Ok(()) => self.unvouched = None,
            Err(e) => {
                let why = e.to_string();
                if self.unvouched.as_ref() != Some(&why) {
                    error!("retention: {why}; closed segments are still compressed");
                    self.unvouched = Some(why);
                }
                plan.delete.clear();
            }
        }
    }

    /// The records the highest anchor above `floor` that matches the chain
    /// covers (`floor` if none does), looked for [`ANCHORS_AT_ONCE`] at a
    /// time, highest first: the file gains a line every few seconds while
    /// heads are exported, and was held whole at each pass (found by
    /// review). Anchors that do not match are logged once each.
    fn anchored_past(&mut self, dir: &Path, floor: u64) -> Result<u64> {
        let mut after = None;
        loop {
            let top = read_anchors_top(dir, floor, after, ANCHORS_AT_ONCE)?;
            let (anchored, unmatched) = covered(dir, &top, floor)?;
            for u in unmatched {
                if self.unmatched.insert(u.line) {
                    error!("{}: line {}: {}", dir.join(ANCHORS_FILE).display(), u.line, u.problem);
                }
            }
            match top.list.last() {
                Some((line, lowest)) if anchored == floor && top.list.len() == ANCHORS_AT_ONCE => {
                    after = Some((lowest.records, *line));
                }
                _ => return Ok(anchored),
            }
        }
    }

    fn try_pass(&mut self, stopping: &dyn Fn() -> bool) -> Result<()> {
        let dir = &self.dir.clone();
        let pruned = read_pruned(dir)?;
        let floor = self.anchored.max(pruned.map_or(0, |p| p.records));
        let anchored = self.anchored_past(dir, floor)?;
        self.anchored = anchored;
        let segs = segment_infos(dir, pruned.as_ref())?;
        let mut plan = plan(&segs, &self.policy, helix::process::realtime_ns(), anchored);
        self.vouch(&mut plan);
        if plan.unanchored != self.refused {
            if let Some(n) = plan.unanchored {
                let end = segs.iter().find(|s| s.segment == n + 1).map_or(0, |s| s.header.first_record);
                warn!(
                    "retention: segment {n} ({}) is past retention but not anchored: its records end at {end}, \
                     anchors cover {anchored}; kept until `helix-ledger anchor {}` records a later head",
                    segment_name(n),
                    dir.display()
                );
            }
            self.refused = plan.unanchored;
        }
        if let Some(p) = prune(dir, &segs, &plan, self.signer.as_ref())? {
            for s in &plan.delete {
                info!(
                    "retention: deleted segment {} ({}, {} bytes), past retention and anchored",
                    s.segment,
                    segment_name(s.segment),
                    s.bytes
                );
            }
            info!("retention: the ledger now starts after {} records, at hash {}", p.records, hex(&p.hash));
        }
        if self.policy.compress {
            // Closed, kept and still plain; the newest is being written.
            for s in segs[..segs.len().saturating_sub(1)]
                .iter()
                .filter(|s| !plan.delete.contains(s) && !is_compressed(&s.path))
            {
                if stopping() {
                    break;
                }
                let (plain, packed) = compress_segment(dir, &s.path)?;
                debug!("retention: compressed segment {} from {plain} to {packed} bytes", s.segment);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use helix::ledger::format::RingDecl;
    use helix::ledger::Ledger;

    /// A folder of its own (`tag`) of segments of 4 KiB holding sequences
    /// 1..=400 of ring `t` in blocks of four frames, each written at once.
    fn small_segments(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("helix-retention-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (mut l, _) = Ledger::open(&dir, 4096).unwrap();
        let decl = RingDecl { created_ns: 1, capacity: 64, max_payload: 64, policy: 1, name: "t".into() };
        let (id, _) = l.declare(&decl).unwrap();
        for first in (1..=400).step_by(4) {
            (first..first + 4).for_each(|seq| l.reserve_frame(id, seq, 1, 0, 1, 64).fill(seq as u8));
            l.seal(id, 4);
            l.flush().unwrap();
        }
        dir
    }

    /// Found by review: a pass compressed every plain closed segment before
    /// it looked whether it should stop, and the recorder joins it as it
    /// stops, its gating readers registered and reading nothing: the first
    /// pass after `compress = true` on a large folder held the rings'
    /// writers for minutes. Now it stops between two segments.
    #[test]
    fn a_stop_ends_a_pass_between_two_segments() {
        let dir = small_segments("stop");
        let plain = segments(&dir).unwrap().len();
        assert!(plain > 5, "{plain} segments");
        // Asked to stop once the first segment is compressed.
        let asked = std::cell::Cell::new(0);
        let mut state =
            State { dir: dir.clone(), policy: Policy { compress: true, ..Policy::default() }, ..State::default() };
        state.pass(&|| {
            asked.set(asked.get() + 1);
            asked.get() > 1
        });
        let packed = segments(&dir).unwrap().iter().filter(|(_, p)| is_compressed(p)).count();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(packed, 1, "{packed} of {} closed segments compressed after the stop", plain - 1);
    }

    /// Found by review: a manifest not of the recorder's key (a folder
    /// pruned while it did not sign) ended each pass before compression,
    /// and the folder filled. Nothing is deleted then; compression goes on.
    #[test]
    fn a_manifest_not_of_the_key_stops_the_deleting_not_the_compressing() {
        use helix::ledger::anchor::{append_anchor, hash_at, Anchor};
        let dir = small_segments("unvouched");
        // Segment 1 pruned unsigned; every closed segment anchored.
        let segs = segment_infos(&dir, None).unwrap();
        prune(&dir, &segs, &Plan { delete: segs[..1].to_vec(), unanchored: None }, None).unwrap();
        let records = segs.last().unwrap().header.first_record;
        let hash = hash_at(&dir, records).unwrap().unwrap();
        append_anchor(&dir, &Anchor { records, hash, time_ns: 1, note: String::new() }).unwrap();
        let signer = Signer::new(ed25519_dalek::SigningKey::from_bytes(&[1; 32]), 60);
        let policy = Policy { compress: true, max_total_bytes: Some(1), ..Policy::default() };
        let mut state = State { dir: dir.clone(), policy, signer: Some(signer), ..State::default() };
        state.pass(&|| false);
        let now = segments(&dir).unwrap();
        let packed = now.iter().filter(|(_, p)| is_compressed(p)).count();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(now.len(), segs.len() - 1, "nothing deleted past the manifest");
        assert_eq!(packed, now.len() - 1, "every closed segment compressed");
        assert!(state.unvouched.as_ref().is_some_and(|w| w.contains("is not signed")), "{:?}", state.unvouched);
        assert!(state.failed.is_none(), "{:?}", state.failed);
    }

    /// The highest anchor that matches the chain is found however many
    /// above it do not, though a pass holds only a few at a time.
    #[test]
    fn the_highest_matching_anchor_is_found_below_many_that_do_not_match() {
        use helix::ledger::anchor::{append_anchor, hash_at, Anchor};
        let dir = std::env::temp_dir().join(format!("helix-retention-anchors-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (mut l, _) = Ledger::open(&dir, 1 << 20).unwrap();
        let decl = RingDecl { created_ns: 1, capacity: 64, max_payload: 64, policy: 1, name: "t".into() };
        let (id, _) = l.declare(&decl).unwrap();
        for seq in 1..=300 {
            l.reserve_frame(id, seq, 1, 0, 1, 8).fill(1);
            l.seal(id, 1);
        }
        l.flush().unwrap();
        drop(l);
        let anchor = |records, hash| Anchor { records, hash, time_ns: 1, note: String::new() };
        let good = hash_at(&dir, 100).unwrap().unwrap();
        append_anchor(&dir, &anchor(100, good)).unwrap();
        // Three rounds' worth above it that the chain does not have, and
        // across the first round's end, two of one count: a wrong one
        // before the right one in the file.
        for records in 101..=101 + 3 * ANCHORS_AT_ONCE as u64 {
            append_anchor(&dir, &anchor(records, [9; 32])).unwrap();
        }
        let edge = 101 + 3 * ANCHORS_AT_ONCE as u64 - (ANCHORS_AT_ONCE as u64 - 1);
        let right = hash_at(&dir, edge).unwrap().unwrap();
        append_anchor(&dir, &anchor(edge, right)).unwrap();
        let mut state = State { dir: dir.clone(), ..State::default() };
        let anchored = state.anchored_past(&dir, 0).unwrap();
        let said = state.unmatched.len();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(anchored, edge, "the right anchor of the count the first round ended at");
        assert_eq!(said, ANCHORS_AT_ONCE, "each above it that does not match is said");
    }
}
