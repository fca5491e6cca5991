//! helix-ledger's `verify`, `head` and `export` on a ledger the library
//! writes: tampering is named at the exact block and records, a live tail
//! is told from damage, and exports print the requested records and
//! blocks; bad input gets clear errors.

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::{payload, payload_len, verify_json, Env};
use helix::ledger::block::{split_block, BLOCK_HEADER_LEN, ENTRY_HEADER_LEN};
use helix::ledger::format::{RecordType, RingDecl, HASH_LEN, SEGMENT_HEADER_LEN};
use helix::ledger::{walk, Ledger};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_helix-ledger");

/// `helix-ledger ARGS PATH`, its output.
fn run(args: &[&str], path: &Path) -> Output {
    Command::new(BIN).args(args).arg(path).output().unwrap()
}

/// The file name of segment `n`.
fn seg(n: u64) -> String {
    format!("seg-{n:010}.hxl")
}

/// A ledger of 1,000 frames over several segments, written by the
/// library in blocks of 10 frames (1-10, 11-20, ...), each stamped with
/// its first frame's sequence times 1000.
fn sample_ledger(dir: &Path) {
    let (mut l, _) = Ledger::open(dir, 8192).unwrap();
    let decl = RingDecl { created_ns: 1, capacity: 1024, max_payload: 64, policy: 1, name: "t".into() };
    let (id, _) = l.declare(&decl).unwrap();
    let mut buf = [0u8; 64];
    for seq in 1..=1000 {
        let len = payload_len(seq, 64);
        payload(seq, len, &mut buf);
        l.reserve_frame(id, seq, 1, seq * 1000, 0, len).copy_from_slice(&buf[..len]);
        if seq % 10 == 0 {
            l.seal(id, 10);
        }
        if seq % 50 == 0 {
            l.flush().unwrap();
        }
    }
    l.flush().unwrap();
    l.sync().unwrap();
}

/// Where each FRAME block of a ledger is: (first seq, segment, offset,
/// block index, first record index).
fn locations(dir: &Path) -> Vec<(u64, u64, u64, u64, u64)> {
    let mut v = Vec::new();
    walk(dir, |at| {
        let h = &at.record.header;
        if h.rtype == RecordType::Frame as u16 && v.last().is_none_or(|b: &(u64, u64, u64, u64, u64)| b.3 != at.block) {
            v.push((h.seq, at.segment, at.offset, at.block, at.index));
        }
    })
    .unwrap()
    .unwrap();
    v
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

fn flip(path: &Path, offset: u64) {
    let mut b = fs::read(path).unwrap();
    b[offset as usize] ^= 0x01;
    fs::write(path, b).unwrap();
}

/// One way to tamper with a copy of the sample ledger, and what `verify`
/// must then name.
struct Case {
    what: &'static str,
    tamper: Box<dyn Fn(&Path)>,
    file: u64,
    /// Offset, block, first record and first sequence named.
    block: Option<(u64, u64, u64, u64)>,
    error: &'static str,
}

/// The block the tampering cases aim at: its first sequence, segment,
/// offset, block index, first record index, and length.
#[derive(Clone, Copy)]
struct Target {
    seq: u64,
    segment: u64,
    offset: u64,
    block: u64,
    index: u64,
    len: u64,
}

/// The tampering cases, each aimed at `t` (or near it).
fn tamper_cases(t: Target) -> Vec<Case> {
    let Target { seq, segment, offset, block, index, len } = t;
    let named = Some((offset, block, index, seq));
    vec![
        Case {
            what: "a payload byte of its third frame",
            tamper: Box::new(move |d| {
                let third = offset as usize
                    + BLOCK_HEADER_LEN
                    + 2 * ENTRY_HEADER_LEN
                    + payload_len(seq, 64)
                    + payload_len(seq + 1, 64);
                flip(&d.join(seg(segment)), (third + ENTRY_HEADER_LEN) as u64)
            }),
            file: segment,
            block: named,
            error: "chain hash mismatch",
        },
        Case {
            what: "a frame's length",
            tamper: Box::new(move |d| flip(&d.join(seg(segment)), offset + BLOCK_HEADER_LEN as u64)),
            file: segment,
            block: named,
            error: "chain hash mismatch",
        },
        Case {
            what: "a hash byte",
            tamper: Box::new(move |d| flip(&d.join(seg(segment)), offset + len - HASH_LEN as u64 + 7)),
            file: segment,
            block: named,
            error: "chain hash mismatch",
        },
        Case {
            what: "a length byte",
            tamper: Box::new(move |d| flip(&d.join(seg(segment)), offset)),
            file: segment,
            block: named,
            error: "impossible block length",
        },
        Case {
            what: "a sequence number",
            tamper: Box::new(move |d| flip(&d.join(seg(segment)), offset + 8)),
            file: segment,
            block: Some((offset, block, index, seq ^ 1)),
            error: "chain hash mismatch",
        },
        Case {
            what: "a segment header byte",
            tamper: Box::new(move |d| flip(&d.join(seg(4)), 50)),
            file: 4,
            block: None,
            error: "header: segment header checksum mismatch",
        },
        Case {
            what: "a segment truncated in the middle of a block",
            tamper: Box::new(move |d| {
                OpenOptions::new().write(true).open(d.join(seg(segment))).unwrap().set_len(offset + 50).unwrap()
            }),
            file: segment,
            block: named,
            error: "runs past the end",
        },
        Case {
            what: "a deleted segment",
            tamper: Box::new(move |d| fs::remove_file(d.join(seg(segment))).unwrap()),
            file: segment + 1,
            block: None,
            error: "is missing",
        },
    ]
}

/// Tampers with a copy `d` of `pristine` as `case` says; `verify`, as JSON
/// and as text, names the place exactly and fails.
fn check_case(pristine: &Path, d: &Path, case: &Case) {
    copy_dir(pristine, d);
    (case.tamper)(d);
    let (code, v) = verify_json(BIN, d);
    assert_eq!((code, &v["ok"]), (1, &Value::Bool(false)), "{}: {v}", case.what);
    let error = v["error"].as_str().unwrap();
    assert!(error.contains(case.error), "{}: {error}", case.what);
    let file = v.get("file").or(v.get("found")).and_then(Value::as_str).unwrap();
    assert!(file.ends_with(&seg(case.file)), "{}: {file}", case.what);
    if let Some((offset, block, record, seq)) = case.block {
        // The block and the ten records and sequences it covers.
        let got = [&v["offset"], &v["block"], &v["record"], &v["last_record"], &v["seq"], &v["last_seq"]];
        let want = [offset, block, record, record + 9, seq, seq + 9];
        assert_eq!(got.map(Value::as_u64), want.map(Some), "{}: {v}", case.what);
        assert!(error.contains(&format!("block {block}, records {record} to {}", record + 9)), "{error}");
    }
    // The text form names the same place, and exits non-zero too.
    let out = run(&["verify"], d);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success() && text.starts_with("FAILED: ") && text.contains(&seg(case.file)), "{text}");
}

/// The last frame cut short, as a live ledger's file can be read or a
/// stopped one left, in a copy `d` of `pristine`: the whole records before
/// it verify, and the partial one is reported, not counted. (The sample
/// ends with a new segment's restatement of the ring: a frame is appended
/// first.) The last segment's number.
fn check_partial_tail(pristine: &Path, d: &Path) -> u64 {
    copy_dir(pristine, d);
    let (mut l, _) = Ledger::open(d, u64::MAX).unwrap();
    let decl = l.chain().rings[0].decl.clone();
    let (id, next) = l.declare(&decl).unwrap();
    assert_eq!(next, 1001);
    l.reserve_frame(id, next, 1, 0, 0, 8).copy_from_slice(b"the last");
    l.seal(id, 1);
    l.flush().unwrap();
    drop(l);
    let mut last = (0, 0);
    walk(d, |at| last = (at.segment, at.offset)).unwrap().unwrap();
    let path = d.join(seg(last.0));
    let size = fs::metadata(&path).unwrap().len();
    OpenOptions::new().write(true).open(&path).unwrap().set_len(size - 10).unwrap();
    let (code, v) = verify_json(BIN, d);
    assert_eq!((code, v["partial_tail"].as_u64()), (0, Some(size - 10 - last.1)), "{v}");
    assert_eq!(v["rings"][0]["frames"].as_u64(), Some(1000));
    last.0
}

#[test]
fn verify_names_the_first_tampered_block_and_its_records_exactly() {
    let env = Env::watched("ledger tampering", Duration::from_secs(60));
    let pristine = env.path("pristine");
    sample_ledger(&pristine);
    let at = locations(&pristine);
    let (code, v) = verify_json(BIN, &pristine);
    assert_eq!((code, v["segments"].as_u64().unwrap() >= 5), (0, true), "{v}");
    // A block in the middle of the third segment: frames seq..seq+9.
    let third = at.iter().position(|f| f.1 == 3).unwrap();
    let (seq, segment, offset, block, index) = at[third + 2];
    assert_eq!(segment, 3);
    let bytes = fs::read(pristine.join(seg(segment))).unwrap();
    let len = split_block(&bytes[offset as usize..]).unwrap().header.len as u64;
    for (i, case) in tamper_cases(Target { seq, segment, offset, block, index, len }).iter().enumerate() {
        check_case(&pristine, &env.path(format!("case{i}")), case);
    }
    let last_segment = check_partial_tail(&pristine, &env.path("live"));
    // A segment's restatement cut short is damage, not a live tail (a
    // segment is renamed into place whole): the recorder, which resumes
    // from the last segment alone, could not continue from it.
    let d = env.path("restatement");
    copy_dir(&pristine, &d);
    let path = d.join(seg(last_segment));
    OpenOptions::new().write(true).open(&path).unwrap().set_len(SEGMENT_HEADER_LEN as u64 + 50).unwrap();
    let (code, v) = verify_json(BIN, &d);
    assert_eq!((code, v["offset"].as_u64()), (1, Some(SEGMENT_HEADER_LEN as u64)), "{v}");
    assert!(v["error"].as_str().unwrap().contains("ends before it restates ring t (id 0)"), "{v}");
    // The recorder refuses it too, and cuts nothing: it took the cut
    // block for a torn tail, cut it, and resumed with ring t undeclared.
    // Cut at the block's start (the header alone), it found nothing bad.
    for cut in [50, 0] {
        OpenOptions::new().write(true).open(&path).unwrap().set_len(SEGMENT_HEADER_LEN as u64 + cut).unwrap();
        match Ledger::open(&d, 1 << 20) {
            Err(e @ helix::ledger::LedgerError::Corrupt { .. }) => {
                let want = format!("ends at offset {SEGMENT_HEADER_LEN}");
                assert!(e.to_string().contains(&want), "{e}");
                assert!(e
                    .to_string()
                    .contains("inside its restatement of the rings the segment before declared (0 of 1)"));
            }
            Err(e) => panic!("refused for another reason: {e}"),
            Ok((_, rec)) => panic!("the recorder resumed a ledger that does not verify: {:?}", rec.truncated),
        }
        assert_eq!(fs::metadata(&path).unwrap().len(), SEGMENT_HEADER_LEN as u64 + cut, "truncated");
    }
}

/// The JSON lines `helix-ledger export ARGS DIR` prints; it must succeed.
fn export(dir: &Path, args: &[&str]) -> Vec<Value> {
    let out = Command::new(BIN).arg("export").args(args).arg(dir).output().unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Exported records 10 to 12 of the sample ledger in `dir`: their
/// sequences, payload, type and time.
fn check_export_of_records(dir: &Path) {
    let lines = export(dir, &["--from", "10", "--to", "12"]);
    assert_eq!(lines.iter().map(|v| v["seq"].as_u64().unwrap()).collect::<Vec<_>>(), [10, 11, 12]);
    let mut buf = [0u8; 64];
    let len = payload_len(11, 64);
    payload(11, len, &mut buf);
    assert_eq!(lines[1]["payload"].as_str().unwrap(), helix::ledger::format::hex(&buf[..len]));
    assert_eq!((lines[1]["type"].as_str(), lines[1]["recv_ns"].as_u64()), (Some("frame"), Some(11_000)));
}

/// Anchoring, on the sample ledger in `dir`: the head's hash is the last
/// block's; --blocks lists each block with the records it covers, and the
/// records' lines agree.
fn check_export_of_blocks(dir: &Path) {
    let (head, verify) = (run(&["head"], dir), run(&["verify"], dir));
    let hash = String::from_utf8_lossy(&head.stdout).split_whitespace().next().unwrap().to_owned();
    assert!(String::from_utf8_lossy(&verify.stdout).contains(&format!("final hash {hash}")));
    let (code, v) = verify_json(BIN, dir);
    let blocks = export(dir, &["--blocks"]);
    assert_eq!((code, blocks.len() as u64), (0, v["blocks"].as_u64().unwrap()));
    let last = blocks.last().unwrap();
    assert_eq!(
        (last["hash"].as_str(), last["last_record"].as_u64()),
        (Some(hash.as_str()), Some(v["records"].as_u64().unwrap() - 1))
    );
    let some = &export(dir, &["--blocks", "--from", "15", "--to", "15"])[0];
    assert_eq!(
        (some["type"].as_str(), some["seq"].as_u64(), some["last_seq"].as_u64()),
        (Some("frame"), Some(11), Some(20))
    );
    let records = export(dir, &["--from", "11", "--to", "20"]);
    assert_eq!(records.iter().filter(|r| r.get("hash").is_some()).count(), 1);
    assert_eq!(
        (records[9]["hash"].as_str(), records[9]["block"].as_u64()),
        (some["hash"].as_str(), some["block"].as_u64())
    );
}

/// Not a ledger, no folder, a bad configuration line: each a clear error.
fn check_bad_input(env: &Env) {
    let empty = env.path("empty");
    fs::create_dir_all(&empty).unwrap();
    let out = run(&["verify"], &empty);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("no ledger segment"));
    let out = run(&["verify"], &env.path("nope"));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"));
    let cfg = env.path("bad.toml");
    File::create(&cfg).unwrap().write_all(b"rings = [\"telemetry\"]\nfsync_interval_ms = 0\n").unwrap();
    let out = run(&["--config"], &cfg);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("bad.toml:2: fsync_interval_ms must be 1 to 60000"), "{err}");
}

/// Export's own mistakes, refused as replay refuses them (before: nothing
/// printed and exit 0, which reads as "no records"), and a sample's value
/// as recorded, NaN included (before: `null`).
fn check_export_mistakes_and_values(env: &Env, dir: &Path) {
    let refused = |args: &[&str], says: &str| {
        let out = Command::new(BIN).arg("export").args(args).arg(dir).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.code() == Some(2) && out.stdout.is_empty() && err.contains(says), "{args:?}: {err}");
    };
    refused(&["--ring", "telemetri"], "ring \"telemetri\" is not in the ledger in");
    refused(&["--ring", "telemetri"], "(it records t)");
    refused(&["--from", "9", "--to", "8"], "--from 9 is after --to 8");
    let nan = env.path("nan");
    let (mut l, _) = Ledger::open(&nan, 8192).unwrap();
    let (id, _) =
        l.declare(&RingDecl { created_ns: 1, capacity: 64, max_payload: 64, policy: 1, name: "s".into() }).unwrap();
    for (seq, value) in [(1, f64::NAN), (2, f64::NEG_INFINITY), (3, 2.5)] {
        let sample = helix::telemetry::Sample { value, ..bytemuck::Zeroable::zeroed() };
        l.reserve_frame(id, seq, 1, 0, helix::telemetry::KIND_SAMPLE, 40).copy_from_slice(bytemuck::bytes_of(&sample));
        l.seal(id, 1);
    }
    l.flush().unwrap();
    drop(l);
    let values: Vec<Value> =
        export(&nan, &["--ring", "s"]).iter().filter_map(|r| r.get("sample")).map(|s| s["value"].clone()).collect();
    assert_eq!(values, [Value::from("NaN"), "-inf".into(), 2.5.into()]);
}

/// A ledger (in `dir`) whose last segment is corrupt before its end is not
/// truncated: the recorder refuses to start and says why.
fn check_corrupt_last_segment_is_kept(env: &Env, dir: &Path) {
    // (Restart checks the last segment: make sure it holds frames.)
    let (mut l, _) = Ledger::open(dir, 1 << 20).unwrap();
    let (id, next) =
        l.declare(&RingDecl { created_ns: 1, capacity: 1024, max_payload: 64, policy: 1, name: "t".into() }).unwrap();
    for seq in next..next + 20 {
        l.reserve_frame(id, seq, 1, 0, 0, 8).fill(1);
        l.seal(id, 1);
    }
    l.flush().unwrap();
    drop(l);
    let at = locations(dir);
    let (_, segment, offset, _, _) = at[at.len() - 10];
    let path = dir.join(seg(segment));
    flip(&path, offset + BLOCK_HEADER_LEN as u64);
    let size = fs::metadata(&path).unwrap().len();
    let out = Command::new(BIN)
        .args(["--ring", "t", "--key"])
        .arg(env.ledger_key())
        .arg("--dir")
        .arg(dir)
        .env("HELIX_NAMESPACE", env.ns.as_str())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("this is not a torn tail"), "{err}");
    assert_eq!(fs::metadata(&path).unwrap().len(), size);
}

#[test]
fn export_prints_the_requested_records_and_bad_input_gets_clear_errors() {
    let env = Env::watched("ledger export", Duration::from_secs(60));
    let dir = env.path("l");
    sample_ledger(&dir);
    check_export_of_records(&dir);
    check_export_of_blocks(&dir);
    check_bad_input(&env);
    check_export_mistakes_and_values(&env, &dir);
    check_corrupt_last_segment_is_kept(&env, &dir);
}

/// A RING record whose name is no ring's name, here a terminal escape,
/// written by someone who may write the folder (the chain's hashes
/// recomputed: they need no key), breaks a rule: `verify` and `export`
/// name the block and never print the name. Before, it verified, and the
/// escape reached the operator's terminal as it was.
#[test]
fn a_ring_declared_under_a_name_no_ring_has_fails_verify_and_is_never_printed() {
    let env = Env::new();
    let dir = env.path("ledger");
    common::small_ledger(&dir, "evil1", 1, 8192);
    common::rewrite(&dir, |_, block| {
        if let Some(at) = block.windows(5).position(|w| w == b"evil1") {
            block[at..at + 5].copy_from_slice(b"\x1b]0;x");
        }
        true
    });
    // The recorder's own `declare` refuses such a name, naming it (it
    // panicked once the rule was there, appending a block it broke).
    let (mut l, _) = Ledger::open(&env.path("other"), 8192).unwrap();
    let decl = RingDecl { created_ns: 1, capacity: 8, max_payload: 8, policy: 1, name: "Tele metry".into() };
    let refused = l.declare(&decl).unwrap_err().to_string();
    assert!(refused.starts_with("ring name \"Tele metry\" cannot be recorded: "), "{refused}");
    for args in [&["verify"][..], &["verify", "--json"], &["export"]] {
        let out = run(args, &dir);
        let text = [out.stdout, out.stderr].concat();
        let shown = String::from_utf8_lossy(&text);
        assert!(!text.contains(&0x1b), "{args:?} printed the escape: {shown}");
        assert!(!out.status.success() && shown.contains("RING name is not a ring's name"), "{args:?}: {shown}");
    }
}
