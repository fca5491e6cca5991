//! The ledger's reading verbs as both `helix-ledger` and `helixctl` print
//! them: `verify`, `head` and `export`.

use std::io::{self, Write};
use std::path::Path;

use ed25519_dalek::VerifyingKey;
use helix::ledger::format::{hex, GapInfo, RecordType, RingDecl};
use helix::ledger::retention::Pruned;
use helix::ledger::sign::{parse_public, Checkpoint};
use helix::ledger::verify::{self, Located, Signed, Summary, VerifyFailure};
use helix::telemetry::{Sample, KIND_SAMPLE};
use serde_json::{json, Value};

use crate::shared::checkpoint;

fn failure_json(f: &VerifyFailure) -> Value {
    let mut v = json!({ "ok": false, "error": f.to_string() });
    match f {
        VerifyFailure::Empty => {}
        VerifyFailure::MissingSegment { expected, found } => {
            v["segment"] = json!(expected);
            v["found"] = json!(found);
        }
        VerifyFailure::Header { path, .. }
        | VerifyFailure::Pruned { path, .. }
        | VerifyFailure::Unreadable { path, .. } => v["file"] = json!(path),
        VerifyFailure::PrunedMeanwhile { segment } => v["segment"] = json!(segment),
        VerifyFailure::Checkpoint { path, offset, block, .. } => {
            v["file"] = json!(path);
            v["offset"] = json!(offset);
            v["block"] = json!(block);
            v["checkpoint"] = json!(true);
        }
        VerifyFailure::Record { path, bad } => {
            v["file"] = json!(path);
            v["offset"] = json!(bad.offset);
            v["block"] = json!(bad.block);
            v["record"] = json!(bad.index);
            v["last_record"] = json!(bad.last_record());
            if let Some((ring, seq, last)) = &bad.ring_seq {
                v["ring"] = json!(ring);
                v["seq"] = json!(seq);
                v["last_seq"] = json!(last);
            }
        }
    }
    v
}

/// The public key in `path` (a `pubkey` line), or an error naming it.
pub fn read_public(path: &Path) -> anyhow::Result<VerifyingKey> {
    use anyhow::Context;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("{}: cannot read the public key", path.display()))?;
    parse_public(&text).with_context(|| format!("{}: not a helix-ledger public key", path.display()))
}

/// `verify DIR --pubkey FILE`: [`verify`], and every signed checkpoint
/// checked against `key`; the first bad or missing one is the failure.
pub fn verify_signed(dir: &Path, key: &VerifyingKey, json: bool) -> anyhow::Result<bool> {
    let signed = match verify::verify_signed(dir, key)? {
        Ok(s) => s,
        Err(f) => return print_verdict(Err(f), None, json),
    };
    print_verdict(Ok(signed.summary.clone()), Some(&signed), json)
}

/// `verify DIR`: recomputes every chain hash and checks every rule.
/// Prints the first bad block (and the records it covers), or the counts
/// and the final hash; returns whether the ledger verified.
pub fn verify(dir: &Path, json: bool) -> anyhow::Result<bool> {
    print_verdict(verify::verify(dir)?, None, json)
}

/// The signatures' part of a verdict, as JSON.
fn signed_json(s: &Summary, signed: Option<&Signed>) -> Value {
    match signed {
        None => json!({ "checkpoints": s.checkpoints, "signatures_checked": false }),
        Some(g) => json!({
            "checkpoints": s.checkpoints, "signatures_checked": true,
            "last_checkpoint": checkpoint::json(&g.last), "unsigned_records": g.unsigned_records,
        }),
    }
}

/// The signatures' part of a verdict, as a line.
fn signed_line(s: &Summary, signed: Option<&Signed>) -> String {
    match signed {
        None => format!("{} checkpoints, signatures not checked (--pubkey FILE checks them)", s.checkpoints),
        Some(g) => format!(
            "{} checkpoints, every signature good (key id {}); the last signs {} records at {} ns; \
             {} records follow it, not signed yet",
            s.checkpoints,
            hex(&g.last.key_id),
            g.last.records,
            g.last.time_ns,
            g.unsigned_records
        ),
    }
}

fn print_verdict(verdict: Result<Summary, VerifyFailure>, signed: Option<&Signed>, json: bool) -> anyhow::Result<bool> {
    let mut out = io::stdout().lock();
    match verdict {
        Ok(s) => {
            if json {
                let rings: Vec<Value> = s
                    .rings
                    .iter()
                    .map(|r| {
                        json!({
                            "name": r.decl.name, "created_ns": r.decl.created_ns, "frames": r.frames,
                            "gaps": r.gaps, "lost": r.lost, "next_seq": r.next_seq,
                        })
                    })
                    .collect();
                let v = json!({
                    "ok": true, "segments": s.segments, "records": s.records, "blocks": s.blocks,
                    "hash": hex(&s.hash), "rings": rings, "partial_tail": s.partial_tail,
                    "pruned": s.pruned.map(|p| json!({ "segment": p.segment, "records": p.records, "hash": hex(&p.hash) })),
                    "signed": signed_json(&s, signed),
                });
                writeln!(out, "{v}")?;
            } else {
                writeln!(
                    out,
                    "ok: {} records ({} blocks) in {} segments, final hash {}",
                    s.records,
                    s.blocks,
                    s.segments,
                    hex(&s.hash)
                )?;
                writeln!(out, "  {}", signed_line(&s, signed))?;
                if let Some(p) = s.pruned {
                    writeln!(
                        out,
                        "  segments 1 to {} were pruned (records 0 to {}); verified from there, hash {}",
                        p.segment,
                        p.records.saturating_sub(1),
                        hex(&p.hash)
                    )?;
                }
                if s.partial_tail > 0 {
                    writeln!(
                        out,
                        "  the last segment ends in {} bytes of a torn tail (a block not whole or whose hash does \
                         not match, or zeros: a ledger still writing, or stopped mid-write; it cuts them off when it \
                         starts)",
                        s.partial_tail
                    )?;
                }
                for r in &s.rings {
                    writeln!(
                        out,
                        "  ring {}: {} frames, {} gaps ({} sequences lost), next sequence {}",
                        r.decl.name, r.frames, r.gaps, r.lost, r.next_seq
                    )?;
                }
            }
            Ok(true)
        }
        Err(f) => {
            if json {
                writeln!(out, "{}", failure_json(&f))?;
            } else {
                writeln!(out, "FAILED: {f}")?;
            }
            Ok(false)
        }
    }
}

/// `head DIR`: the latest chain hash, for anchoring it elsewhere.
pub fn head(dir: &Path, json: bool) -> anyhow::Result<bool> {
    let mut out = io::stdout().lock();
    match verify::head(dir)? {
        Ok(h) => {
            if json {
                let rings: Vec<Value> = h.rings.iter().map(|(n, s)| json!({ "name": n, "next_seq": s })).collect();
                let v = json!({
                    "hash": hex(&h.hash), "records": h.records, "blocks": h.blocks, "segment": h.segment,
                    "torn_bytes": h.torn_bytes, "rings": rings,
                });
                writeln!(out, "{v}")?;
            } else {
                writeln!(out, "{} records={} blocks={} segment={}", hex(&h.hash), h.records, h.blocks, h.segment)?;
                if h.torn_bytes > 0 {
                    writeln!(
                        out,
                        "note: {} bytes of torn tail follow; the ledger cuts them off when it starts",
                        h.torn_bytes
                    )?;
                }
            }
            Ok(true)
        }
        Err(f) => {
            eprintln!("FAILED: {f}");
            Ok(false)
        }
    }
}

/// `head --signed DIR`: the latest signed checkpoint, for anchoring it
/// elsewhere; false if the ledger has none.
pub fn head_signed(dir: &Path, json: bool) -> anyhow::Result<bool> {
    let mut out = io::stdout().lock();
    match verify::latest_checkpoint(dir)? {
        Ok(Some(h)) => {
            let c = &h.checkpoint;
            if json {
                let mut v = checkpoint::json(c);
                v["file"] = json!(h.path);
                v["offset"] = json!(h.offset);
                v["block"] = json!(h.block);
                writeln!(out, "{v}")?;
            } else {
                writeln!(
                    out,
                    "checkpoint {} records={} blocks={} segment={} time_ns={} key_id={} interval_s={} reason={} \
                     signature={}",
                    hex(&c.hash),
                    c.records,
                    c.blocks,
                    c.segment,
                    c.time_ns,
                    hex(&c.key_id),
                    c.interval_s,
                    c.reason_str(),
                    hex(&c.signature)
                )?;
            }
            Ok(true)
        }
        Ok(None) => {
            eprintln!("FAILED: no signed checkpoint in the last two segments of {}", dir.display());
            Ok(false)
        }
        Err(f) => {
            eprintln!("FAILED: {f}");
            Ok(false)
        }
    }
}

/// One record as a JSON object: `offset` is its block's, and the last
/// record of a block carries the block's chain hash.
pub fn record_json(at: &Located<'_>) -> Value {
    let r = at.record;
    let h = &r.header;
    let rtype = RecordType::from_u16(h.rtype);
    let mut v = json!({
        "index": at.index, "segment": at.segment, "offset": at.offset, "block": at.block,
        "type": rtype.map_or("unknown", RecordType::as_str), "ring": at.ring, "seq": h.seq,
        "epoch": h.epoch, "recv_ns": h.recv_ns, "kind": h.kind, "len": h.payload_len,
    });
    if let Some(hash) = at.hash {
        v["hash"] = json!(hex(hash));
    }
    match rtype {
        Some(RecordType::Frame) => {
            v["payload"] = json!(hex(r.payload));
            if h.kind == KIND_SAMPLE {
                if let Ok(s) = bytemuck::try_pod_read_unaligned::<Sample>(r.payload) {
                    v["sample"] = json!({
                        "stream": s.stream, "quality": s.quality, "seq": s.seq,
                        "sample_ns": s.sample_ns, "ingest_ns": s.ingest_ns,
                        // As recorded: NaN as "NaN" (found by review: `null`).
                        "value": crate::shared::finite::json(s.value),
                    });
                }
            }
        }
        Some(RecordType::Gap) => {
            if let Ok(g) = GapInfo::decode(r.payload) {
                v["last"] = json!(g.last);
                v["lost"] = json!(g.last - h.seq + 1);
            }
        }
        Some(RecordType::Ring) => {
            if let Ok(d) = RingDecl::decode(r.payload) {
                v["created_ns"] = json!(d.created_ns);
                v["capacity"] = json!(d.capacity);
                v["max_payload"] = json!(d.max_payload);
                v["policy"] = json!(if d.policy == 1 { "block" } else { "overwrite" });
            }
        }
        Some(RecordType::Checkpoint) => {
            if let Ok(c) = Checkpoint::decode(r.payload) {
                v["checkpoint"] = checkpoint::json(&c);
            }
        }
        None => {}
    }
    v
}

/// The first record of the block being walked: (block, index, sequence).
type BlockStart = (u64, u64, u64);

/// One block as a JSON object, given its last record and its first.
fn block_json(at: &Located<'_>, first: BlockStart, last_seq: u64, hash: &[u8]) -> Value {
    let rtype = RecordType::from_u16(at.record.header.rtype);
    json!({
        "block": at.block, "segment": at.segment, "offset": at.offset,
        "type": rtype.map_or("unknown", RecordType::as_str), "ring": at.ring,
        "first_record": first.1, "last_record": at.index, "seq": first.2, "last_seq": last_seq,
        "hash": hex(hash),
    })
}

/// `export DIR`: the records with a sequence in `from..=to` (a GAP
/// overlapping it; of ring `ring` only, if given) as JSON lines, or with
/// `blocks` one line per block overlapping it (its records and its chain
/// hash), checking the chain as it goes. Returns false, after printing the
/// good records, if the ledger does not verify.
pub fn export(dir: &Path, ring: Option<&str>, from: u64, to: u64, blocks: bool) -> anyhow::Result<bool> {
    refuse_export_mistakes(dir, ring, from, to)?;
    let mut out = io::BufWriter::new(io::stdout().lock());
    let mut write_err = None;
    let mut start: BlockStart = (u64::MAX, 0, 0);
    // The first frame or gap in the range, in the ledger's order.
    let mut first = None;
    let result = verify::walk(dir, |at| {
        if write_err.is_some() || ring.is_some_and(|r| r != at.ring) {
            return;
        }
        let h = &at.record.header;
        let last = match RecordType::from_u16(h.rtype) {
            Some(RecordType::Gap) => GapInfo::decode(at.record.payload).map_or(h.seq, |g| g.last),
            _ => h.seq,
        };
        if start.0 != at.block {
            start = (at.block, at.index, h.seq);
        }
        if matches!(RecordType::from_u16(h.rtype), Some(RecordType::Frame | RecordType::Gap))
            && last >= from
            && h.seq <= to
        {
            first.get_or_insert(h.seq.max(from));
        }
        let line = match (blocks, at.hash) {
            (false, _) if last >= from && h.seq <= to => record_json(at),
            (true, Some(hash)) if last >= from && start.2 <= to => block_json(at, start, last, hash),
            _ => return,
        };
        if let Err(e) = writeln!(out, "{line}") {
            write_err = Some(e);
        }
    })?;
    // A reader that stopped reading (`| head`) is not an error.
    match write_err.map_or_else(|| out.flush(), Err) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(true),
        r => r?,
    }
    match result {
        Ok(s) => {
            let of = ring.map_or_else(|| "the range".to_owned(), |r| format!("ring {r}"));
            pruned_note(s.pruned.as_ref(), &of, from, first, "exported");
            torn_tail_note(s.partial_tail, "exported");
            Ok(true)
        }
        Err(f) => {
            eprintln!("FAILED: {f}");
            Ok(false)
        }
    }
}

/// Refuses what `export` would otherwise answer with nothing, as replay
/// refuses it: before, both printed nothing and exited 0, which reads as
/// "no records" (found by review).
fn refuse_export_mistakes(dir: &Path, ring: Option<&str>, from: u64, to: u64) -> anyhow::Result<()> {
    if from > to {
        anyhow::bail!("--from {from} is after --to {to}");
    }
    // The last segment declares every ring of the chain.
    if let (Some(ring), Ok(Ok(head))) = (ring, verify::head(dir)) {
        if !head.rings.iter().any(|(name, _)| name == ring) {
            let known: Vec<&str> = head.rings.iter().map(|(name, _)| name.as_str()).collect();
            anyhow::bail!("ring {ring:?} is not in the ledger in {} (it records {})", dir.display(), known.join(", "));
        }
    }
    Ok(())
}

/// Says on stderr that retention pruned the ledger's oldest segments (as
/// `pruned` says, if it did) and that the range from `from` may have begun
/// in them: `of` names what (ring NAME, the range), `first` is the first
/// recorded sequence of it `what` (exported, replayed): past `from`, or
/// None. Returns whether it said so. (Found by review: a replay or an
/// export of a pruned ledger began at its oldest record without a word,
/// and one of a range wholly pruned said only "nothing recorded".)
pub fn pruned_note(pruned: Option<&Pruned>, of: &str, from: u64, first: Option<u64>, what: &str) -> bool {
    // Sequences count from 1: a range that begins there lost nothing.
    let from = from.max(1);
    let Some(p) = pruned.filter(|_| first.is_none_or(|seq| seq > from)) else { return false };
    let begins = first.map_or_else(|| "none of it is left".to_owned(), |seq| format!("what is left begins at {seq}"));
    eprintln!(
        "note: retention pruned this ledger's segments 1 to {} ({} records): what they held of {of} from sequence \
         {from} was not {what}; {begins}",
        p.segment, p.records
    );
    true
}

/// Says on stderr that `bytes` of a torn tail end the last segment and
/// were not `what` (read past by `export` and `replay`), if any.
pub fn torn_tail_note(bytes: u64, what: &str) {
    if bytes > 0 {
        eprintln!(
            "note: the last segment ends in {bytes} bytes of a torn tail (a ledger still writing, or stopped \
             mid-write), not {what}: the recorder cuts them off when it starts"
        );
    }
}
