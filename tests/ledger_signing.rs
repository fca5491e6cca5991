//! Signed checkpoints (docs/ledger.md, "Signed checkpoints"): the
//! recorder signs the chain every interval and at each segment's close;
//! `verify --pubkey` names a chain rewritten after a checkpoint, a segment
//! swapped, a checkpoint forged or deleted, and another key; keys are
//! created once, never overwritten, and a bad one stops the recorder.

mod common;

use std::fs;
use std::ops::ControlFlow;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::{publish_payloads, rewrite, signal, Env, Reaped};
use ed25519_dalek::SigningKey;
use helix::ledger::block::{BlockHeader, BLOCK_HEADER_LEN, ENTRY_HEADER_LEN};
use helix::ledger::format::*;
use helix::ledger::sign::{format_public, format_secret, key_id, Checkpoint, Reason, Signer};
use helix::ledger::verify::{latest_checkpoint, verify_signed, walk_segments};
use helix::ledger::{verify, Ledger, VerifyFailure};
use helix::*;
use serde_json::Value;

const SEC: u64 = 1_000_000_000;
const BIN: &str = env!("CARGO_BIN_EXE_helix-ledger");

fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

/// A ledger of ring `t` written through the library with `key` at an
/// interval of 60 s, in segments of `segment_limit` bytes: a checkpoint
/// when opened, then `batches` blocks of 5 frames read 10 s apart (the
/// recorder's clock driven by the test), a checkpoint when due before
/// each, and one at the end. Returns the times the batches were read at.
fn signed_ledger(dir: &Path, key: SigningKey, segment_limit: u64, batches: u64) -> Vec<u64> {
    signed_ledger_every(dir, key, segment_limit, batches, 10)
}

/// [`signed_ledger`] with batches read `step_s` seconds apart.
fn signed_ledger_every(dir: &Path, key: SigningKey, segment_limit: u64, batches: u64, step_s: u64) -> Vec<u64> {
    let (mut l, _) = Ledger::open(dir, segment_limit).unwrap();
    l.set_signer(Some(Signer::new(key, 60)));
    let decl = RingDecl { created_ns: 1, capacity: 64, max_payload: 64, policy: 1, name: "t".into() };
    let (id, _) = l.declare(&decl).unwrap();
    let t0 = helix::process::realtime_ns();
    assert!(l.checkpoint(t0, Reason::Open));
    let mut times = Vec::new();
    for b in 0..batches {
        let now = t0 + b * step_s * SEC;
        l.checkpoint_if_due(now);
        for s in 1 + b * 5..1 + (b + 1) * 5 {
            l.reserve_frame(id, s, 1, now, 1, 24).fill(s as u8);
        }
        l.seal(id, 5);
        l.flush().unwrap();
        times.push(now);
    }
    l.checkpoint(t0 + batches * step_s * SEC, Reason::Shutdown);
    l.flush().unwrap();
    l.sync().unwrap();
    times
}

/// Every checkpoint of the ledger: (segment, block index, checkpoint).
fn checkpoints(dir: &Path) -> Vec<(u64, u64, Checkpoint)> {
    let mut out = Vec::new();
    let walked = walk_segments(
        dir,
        |_, _| ControlFlow::Continue(()),
        |c, b, seg, _| {
            if b.rtype() == Some(RecordType::Checkpoint) {
                out.push((seg, c.blocks - 1, Checkpoint::decode(b.body).unwrap()));
            }
            ControlFlow::Continue(())
        },
    );
    walked.unwrap().unwrap();
    out
}

/// The ledger's FRAME blocks' times read and its checkpoints, in order.
fn events(dir: &Path) -> Vec<(u64, Option<Checkpoint>)> {
    let mut out = Vec::new();
    let walked = walk_segments(
        dir,
        |_, _| ControlFlow::Continue(()),
        |_, b, _, _| {
            match b.rtype() {
                Some(RecordType::Checkpoint) => out.push((0, Some(Checkpoint::decode(b.body).unwrap()))),
                Some(RecordType::Frame) => out.push((b.header.recv_ns, None)),
                _ => {}
            }
            ControlFlow::Continue(())
        },
    );
    walked.unwrap().unwrap();
    out
}

/// The failure `verify --pubkey` (the library) reports, as text.
fn signed_failure(dir: &Path, key: &SigningKey) -> String {
    match verify_signed(dir, &key.verifying_key()).unwrap() {
        Ok(s) => panic!("verified: {s:?}"),
        Err(f) => f.to_string(),
    }
}

#[test]
fn checkpoints_come_every_interval_and_at_each_segment_close_and_verify() {
    let env = Env::new();
    let dir = env.path("ledger");
    let times = signed_ledger(&dir, key(1), 4096, 40);
    let signed = verify_signed(&dir, &key(1).verifying_key()).unwrap().unwrap();
    let cps = checkpoints(&dir);
    assert_eq!(signed.summary.checkpoints, cps.len() as u64);
    assert_eq!((signed.last, signed.unsigned_records), (cps.last().unwrap().2, 0));
    // Every interval: just before the first batch read 60 s or more after
    // the checkpoint before it (a segment's close signs at the real time),
    // and at no other batch.
    let mut intervals = 0;
    let (mut due, mut prev_interval) = (0, false);
    for (frame_ns, cp) in events(&dir) {
        if let Some(c) = cp {
            prev_interval = c.reason == Reason::Interval as u32;
            if prev_interval {
                assert!(c.time_ns >= due, "{c:?} before {due}");
                intervals += 1;
            }
            due = c.time_ns + 60 * SEC;
        } else if prev_interval {
            prev_interval = false;
            assert!(times.contains(&frame_ns));
        } else {
            assert!(frame_ns < due, "a batch read at {frame_ns} without the checkpoint due at {due}");
        }
    }
    assert!(intervals >= 5, "{intervals} interval checkpoints in 400 s");
    // At each segment close: the last block of every segment but the last.
    assert!(signed.summary.segments >= 3, "{} segments", signed.summary.segments);
    for n in 1..signed.summary.segments {
        let next = SegmentHeader::decode(&fs::read(dir.join(segment_name(n + 1))).unwrap()).unwrap();
        let last = cps.iter().find(|c| c.1 + 1 == next.first_block);
        assert!(last.is_some_and(|c| c.0 == n && c.2.reason == Reason::SegmentEnd as u32), "segment {n}");
    }
    for (seg, _, c) in &cps {
        assert_eq!((c.segment, c.key_id, c.interval_s), (*seg, key_id(&key(1).verifying_key()), 60));
    }
    // The latest, as `head --signed` finds it.
    let head = latest_checkpoint(&dir).unwrap().unwrap().unwrap();
    assert_eq!((head.checkpoint, head.block), (cps.last().unwrap().2, cps.last().unwrap().1));
}

#[test]
fn a_chain_rewritten_after_a_checkpoint_verifies_but_its_next_checkpoint_does_not() {
    let env = Env::new();
    let dir = env.path("ledger");
    signed_ledger(&dir, key(1), 1 << 20, 30);
    let cps = checkpoints(&dir);
    // A frame's byte between the second and the third checkpoint.
    let target = cps[1].1 + 2;
    rewrite(&dir, |i, b| {
        if i == target {
            b[BLOCK_HEADER_LEN + ENTRY_HEADER_LEN] ^= 0xff;
        }
        true
    });
    // The chain alone cannot tell: the attacker recomputed it.
    let s = verify(&dir).unwrap().unwrap();
    assert_eq!(s.checkpoints, cps.len() as u64);
    let f = signed_failure(&dir, &key(1));
    assert!(f.contains(&format!("block {}: a checkpoint", cps[2].1)) && f.contains("does not verify: forged"), "{f}");
}

/// `replay --pubkey` verifies the folder with the key first: a chain
/// rewritten after a checkpoint (which the chain alone cannot tell) is
/// replayed without it, and refused with it, nothing published; an
/// untouched one replays with it. (Found by audit: replay could not check
/// signatures, and published the rewritten frames.)
#[test]
fn replay_with_the_public_key_refuses_a_rewritten_chain_and_publishes_nothing() {
    let env = Env::new();
    let dir = env.path("ledger");
    signed_ledger(&dir, key(1), 1 << 20, 30);
    let pubfile = env.path("ledger.pub");
    fs::write(&pubfile, format_public(&key(1).verifying_key())).unwrap();
    let replay = |into: &str, pubkey: bool| {
        let mut cmd = Command::new(BIN);
        cmd.arg("replay").arg(&dir).args(["--ring", "t", "--pace", "max", "--into", into]);
        if pubkey {
            cmd.arg("--pubkey").arg(&pubfile);
        }
        cmd.env("HELIX_NAMESPACE", env.ns.as_str()).output().unwrap()
    };
    let o = replay("whole", true);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(RingView::attach(&env.ns, "whole").unwrap().stats().published, 150);
    let target = checkpoints(&dir)[1].1 + 2;
    rewrite(&dir, |i, b| {
        if i == target {
            b[BLOCK_HEADER_LEN + ENTRY_HEADER_LEN] ^= 0xff;
        }
        true
    });
    assert!(replay("unchecked", false).status.success(), "the chain alone cannot tell");
    let o = replay("checked", true);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("does not verify with the key") && text(&o).contains("forged"), "{}", text(&o));
    assert!(!env.ns.data_path("checked").exists(), "{}", text(&o));
}

#[test]
fn a_forged_a_deleted_and_a_foreign_checkpoint_are_named() {
    let env = Env::new();
    let make = |name: &str| {
        let dir = env.path(name);
        signed_ledger(&dir, key(1), 4096, 40);
        (dir.clone(), checkpoints(&dir))
    };
    // Forged: a signature byte changed, the chain recomputed.
    let (dir, cps) = make("forged");
    let at = cps[3].1;
    rewrite(&dir, |i, b| {
        if i == at {
            *b.last_mut().unwrap() ^= 1;
        }
        true
    });
    let f = signed_failure(&dir, &key(1));
    assert!(f.contains(&format!("block {at}: a checkpoint")) && f.contains("forged"), "{f}");

    // Deleted at a segment's close.
    let (dir, cps) = make("deleted-close");
    let end = cps.iter().find(|c| c.2.reason == Reason::SegmentEnd as u32).unwrap();
    let (seg, at) = (end.0, end.1);
    rewrite(&dir, |i, _| i != at);
    let f = signed_failure(&dir, &key(1));
    assert!(f.contains(&format!("segment {seg} was closed without a checkpoint as its last block")), "{f}");
    // Named where that block is, not at the segment's header.
    let mut last = None;
    let walked = walk_segments(
        &dir,
        |_, _| ControlFlow::Continue(()),
        |c, _, s, offset| {
            if s == seg {
                last = Some((c.blocks - 1, offset));
            }
            ControlFlow::Continue(())
        },
    );
    walked.unwrap().unwrap();
    let (block, offset) = last.unwrap();
    assert!(offset > 0 && f.contains(&format!("offset {offset}, block {block}: segment {seg} was closed")), "{f}");

    // Deleted within a segment: the next one signed the chain with it.
    let (dir, cps) = make("deleted-interval");
    let at = cps.iter().find(|c| c.2.reason == Reason::Interval as u32).unwrap().1;
    rewrite(&dir, |i, _| i != at);
    let f = signed_failure(&dir, &key(1));
    let next = cps.iter().find(|c| c.1 > at).unwrap().1 - 1;
    assert!(f.contains(&format!("block {next}: a checkpoint")) && f.contains("forged"), "{f}");

    // Deleted with every later one, as rewriting the records after a
    // checkpoint needs: more than two intervals of records unsigned.
    let dir = env.path("deleted-tail");
    signed_ledger(&dir, key(1), 1 << 20, 40);
    let from = checkpoints(&dir)[2].1;
    rewrite(&dir, |i, b| i < from || BlockHeader::decode(b).rtype != RecordType::Checkpoint as u16);
    let f = signed_failure(&dir, &key(1));
    assert!(f.contains("no checkpoint within twice the interval (60 s)"), "{f}");

    // All of them: nothing signed.
    let (dir, _) = make("none");
    rewrite(&dir, |_, b| BlockHeader::decode(b).rtype != RecordType::Checkpoint as u16);
    let f = signed_failure(&dir, &key(1));
    assert!(f.contains("before any checkpoint"), "{f}");

    // Another key: its id is named.
    let (dir, _) = make("other-key");
    let f = signed_failure(&dir, &key(2));
    assert!(f.contains(&format!("signed by key id {}", hex(&key_id(&key(1).verifying_key())))), "{f}");
}

#[test]
fn a_segment_swapped_for_another_ledgers_is_named() {
    let env = Env::new();
    let (a, b) = (env.path("a"), env.path("b"));
    signed_ledger(&a, key(1), 4096, 30);
    // The same key, the same ring: only the time read differs.
    std::thread::sleep(Duration::from_millis(2));
    signed_ledger(&b, key(1), 4096, 30);
    fs::copy(b.join(segment_name(2)), a.join(segment_name(2))).unwrap();
    match verify_signed(&a, &key(1).verifying_key()).unwrap() {
        Err(VerifyFailure::Header { path, problem }) => {
            assert_eq!(path, a.join(segment_name(2)));
            assert!(problem.contains("continues from hash"), "{problem}");
        }
        other => panic!("{other:?}"),
    }
    // Rewritten to fit the chain, its checkpoints are another chain's.
    rewrite(&a, |_, _| true);
    let f = signed_failure(&a, &key(1));
    assert!(f.contains("seg-0000000002.hxl") && f.contains("forged"), "{f}");
}

#[test]
fn a_checkpoint_in_a_version_2_segment_is_refused() {
    let env = Env::new();
    let dir = env.path("ledger");
    signed_ledger(&dir, key(1), 1 << 20, 3);
    let f = verify_as_version_2(&dir, 1);
    assert!(f.contains("a CHECKPOINT in a segment of format version 2"), "{f}");
}

/// Rewrites the header of segment `n` in `dir` to say format version 2;
/// what `verify` then says of the folder (it must fail).
fn verify_as_version_2(dir: &Path, n: u64) -> String {
    let path = dir.join(segment_name(n));
    let bytes = fs::read(&path).unwrap();
    let h = SegmentHeader { version: VERSION_2, ..SegmentHeader::decode(&bytes).unwrap() };
    fs::write(&path, [&h.encode()[..], &bytes[SEGMENT_HEADER_LEN..]].concat()).unwrap();
    verify(dir).unwrap().unwrap_err().to_string()
}

fn run(args: &[&str], paths: &[&Path]) -> Output {
    Command::new(BIN).args(args).args(paths).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn keygen_creates_a_0400_key_once_and_pubkey_prints_what_verify_reads() {
    let env = Env::new();
    let k = env.path("ledger.key");
    let out = run(&["keygen"], &[&k]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(fs::metadata(&k).unwrap().permissions().mode() & 0o777, 0o400);
    let before = fs::read(&k).unwrap();
    let again = run(&["keygen"], &[&k]);
    assert_eq!(again.status.code(), Some(2));
    assert!(text(&again).contains("exists; a signing key is never overwritten"), "{}", text(&again));
    assert_eq!(fs::read(&k).unwrap(), before, "the key is unchanged");
    let pubkey = run(&["pubkey", "--key"], &[&k]);
    assert!(pubkey.status.success());
    let line = String::from_utf8(pubkey.stdout).unwrap();
    assert_eq!(line, String::from_utf8_lossy(&out.stdout), "keygen printed the same public key");
    let secret = helix::ledger::sign::parse_secret(&String::from_utf8(before).unwrap()).unwrap();
    assert_eq!(line.trim_end(), format_public(&secret.verifying_key()));
    // No temporary file is left.
    assert_eq!(fs::read_dir(&env.dir).unwrap().count(), 1);
}

/// A key file's bytes and mode.
type KeyFile<'a> = (&'a [u8], u32);

/// The recorder on ring `t` with `args`, logging to `ledger.log`.
fn recorder(env: &Env, args: &[&str]) -> Command {
    let mut cmd = env.helix_ledger(fs::File::create(env.path("ledger.log")).unwrap());
    cmd.args(["--ring", "t", "--fsync-interval-ms", "5", "--dir"]).arg(env.path("ledger")).args(args);
    cmd
}

#[test]
fn a_missing_malformed_or_open_key_stops_the_recorder_with_its_name() {
    let env = Env::watched("ledger key errors", Duration::from_secs(60));
    let k = env.path("ledger.key");
    let ks = k.to_str().unwrap();
    let good = format_secret(&key(1));
    // (what the error says, the key file's bytes and mode if any)
    let cases: [(&str, Option<KeyFile>); 4] = [
        ("cannot read the ledger's signing key: No such file", None),
        ("not a helix-ledger signing key: expected one line", Some((b"hello\n", 0o400))),
        (
            "not a helix-ledger signing key: the key is not 64 hex digits",
            Some((b"helix-ledger-secret-key-ed25519 12\n", 0o400)),
        ),
        ("readable or writable by others (mode 644)", Some((good.as_bytes(), 0o644))),
    ];
    for (want, file) in cases {
        let _ = fs::remove_file(&k);
        if let Some((bytes, mode)) = file {
            fs::write(&k, bytes).unwrap();
            fs::set_permissions(&k, fs::Permissions::from_mode(mode)).unwrap();
        }
        let out = recorder(&env, &["--key", ks]).output().unwrap();
        let log = fs::read_to_string(env.path("ledger.log")).unwrap();
        assert!(!out.status.success(), "{log}");
        assert!(log.contains(ks) && log.contains(want), "want {want:?} in:\n{log}");
        assert!(log.contains("checkpoint_interval_s = 0"), "the way out is named:\n{log}");
        assert!(!env.path("ledger").exists(), "the folder was not touched");
    }
}

/// Runs the recorder with `args` until its log says `what`, then stops
/// it; its log.
fn run_until(env: &Env, args: &[&str], what: &str) -> String {
    let mut ledger = Reaped::new(recorder(env, args).spawn().unwrap());
    let log = || fs::read_to_string(env.path("ledger.log")).unwrap();
    while !log().contains(what) {
        assert!(ledger.0.try_wait().unwrap().is_none(), "{}", log());
        std::thread::sleep(Duration::from_millis(5));
    }
    signal(&ledger.0, libc::SIGTERM);
    assert!(ledger.0.wait().unwrap().success(), "{}", log());
    log()
}

/// A new key made by `keygen` at `ledger.key`, and its public key as
/// `pubkey` prints it, at `ledger.pub`.
fn keyed(env: &Env) -> (std::path::PathBuf, std::path::PathBuf) {
    let k = env.path("ledger.key");
    assert!(run(&["keygen"], &[&k]).status.success());
    let pubfile = env.path("ledger.pub");
    fs::write(&pubfile, run(&["pubkey", "--key"], &[&k]).stdout).unwrap();
    (k, pubfile)
}

/// Found by review: a recorder started with another key than the one its
/// folder was signed with (the package makes a new key when the old one
/// is lost) signed on without a word, and the folder then failed
/// `verify --pubkey` with either key. It still records, and says so once,
/// naming both key ids; with the folder's own key it says nothing.
#[test]
fn a_recorder_started_with_another_key_than_its_folders_says_so() {
    let env = Env::watched("ledger key changed", Duration::from_secs(60));
    signed_ledger(&env.path("ledger"), key(1), 1 << 20, 3);
    let started = |n: u8| {
        let k = env.path(format!("key{n}"));
        if !k.exists() {
            fs::write(&k, format_secret(&key(n))).unwrap();
            fs::set_permissions(&k, fs::Permissions::from_mode(0o400)).unwrap();
        }
        run_until(&env, &["--key", k.to_str().unwrap()], "chain tail verified")
    };
    let (one, two) = (hex(&key_id(&key(1).verifying_key())), hex(&key_id(&key(2).verifying_key())));
    let log = started(1);
    assert!(!log.contains("was signed by key id"), "{log}");
    let log = started(2);
    let want = format!("was signed by key id {one}, not by {} (key id {two})", env.path("key2").display());
    assert!(log.contains(&want) && log.contains("give the new key a new ledger folder"), "{log}");
    // Its own shutdown checkpoint is the last now: said once.
    assert!(!started(2).contains("was signed by key id"));
}

/// A recorder started on a folder whose last records follow its last
/// checkpoint (its recorder killed between two) signs them as it finds
/// them, and says how many they are; after its own shutdown checkpoint,
/// the next says nothing.
#[test]
fn a_recorder_says_how_many_records_it_found_after_the_last_checkpoint() {
    let env = Env::watched("ledger unsigned tail", Duration::from_secs(60));
    let (mut l, _) = Ledger::open(&env.path("ledger"), 1 << 20).unwrap();
    l.set_signer(Some(Signer::new(key(1), 60)));
    let decl = RingDecl { created_ns: 1, capacity: 64, max_payload: 64, policy: 1, name: "t".into() };
    let (id, _) = l.declare(&decl).unwrap();
    let now = helix::process::realtime_ns();
    assert!(l.checkpoint(now, Reason::Open));
    for s in 1..=5 {
        l.reserve_frame(id, s, 1, now, 1, 24).fill(s as u8);
    }
    l.seal(id, 5);
    l.flush().unwrap();
    drop(l);
    let k = env.path("ledger.key");
    fs::write(&k, format_secret(&key(1))).unwrap();
    fs::set_permissions(&k, fs::Permissions::from_mode(0o400)).unwrap();
    let said = "records that no checkpoint in it signs (the recorder before this one stopped before it signed them";
    let log = run_until(&env, &["--key", k.to_str().unwrap()], "chain tail verified");
    assert!(log.contains(&format!("the ledger's last segment ends in 5 {said}")), "{log}");
    let log = run_until(&env, &["--key", k.to_str().unwrap()], "chain tail verified");
    assert!(!log.contains(said), "{log}");
}

/// Runs the recorder, signing with the key `k`, on a new ring `t` while
/// 30,000 frames are published, then stops it; its folder.
fn record_signed(env: &Env, k: &Path) -> std::path::PathBuf {
    let opts = RingOptions { capacity: 1024, max_payload: 64, policy: Policy::Block, ..Default::default() };
    let ring = Ring::create(&env.ns, "t", &opts).unwrap();
    let view = RingView::attach(&env.ns, "t").unwrap();
    let mut w = ring.writer().unwrap();
    // A tiny segment size is 1 MiB: 3000 frames of up to 64 bytes fill two.
    let mut ledger =
        Reaped::new(recorder(env, &["--key", k.to_str().unwrap(), "--segment-size-mib", "1"]).spawn().unwrap());
    let recorded = |n: u64| view.stats().readers.iter().any(|r| r.name == "helix-ledger" && r.cursor > n);
    while !view.stats().readers.iter().any(|r| r.name == "helix-ledger") {
        assert!(ledger.0.try_wait().unwrap().is_none(), "{}", fs::read_to_string(env.path("ledger.log")).unwrap());
        std::thread::sleep(Duration::from_millis(5));
    }
    for chunk in 0..30u64 {
        publish_payloads(&mut w, chunk * 1000 + 1, (chunk + 1) * 1000);
    }
    while !recorded(30_000) {
        std::thread::sleep(Duration::from_millis(5));
    }
    signal(&ledger.0, libc::SIGTERM);
    assert!(ledger.0.wait().unwrap().success());
    env.path("ledger")
}

/// The recorder's retention signs the `pruned` manifest with the key it
/// signs checkpoints with: a folder it pruned verifies with `--pubkey`.
#[test]
fn the_recorders_retention_signs_what_it_prunes() {
    use helix::ledger::retention::read_pruned;
    let env = Env::watched("ledger retention signs", Duration::from_secs(120));
    let (k, pubfile) = keyed(&env);
    let dir = record_signed(&env, &k);
    assert!(run(&["anchor"], &[&dir]).status.success(), "the head anchored");
    // Every closed segment is past this retention, and anchored.
    let cfg = env.path("ledger.toml");
    fs::write(&cfg, "[retention]\nmax_total_gib = 0.000001\n").unwrap();
    let args = ["--key", k.to_str().unwrap(), "--config", cfg.to_str().unwrap()];
    run_until(&env, &args, "retention: the ledger now starts after");
    let p = read_pruned(&dir).unwrap().expect("a manifest");
    let public = helix::ledger::sign::parse_public(&fs::read_to_string(&pubfile).unwrap()).unwrap();
    assert_eq!(p.signed.map(|s| s.key_id), Some(key_id(&public)));
    let out = run(&["verify", "--pubkey"], &[&pubfile, &dir]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

/// `helixctl verify --pubkey` on `dir` says what `helix-ledger verify` said
/// (`v`, with the right key `pubfile`), and names another key (`other`)
/// and a malformed one (`k`, the secret key).
fn check_helixctl_verify(dir: &Path, v: &Value, pubfile: &Path, other: &Path, k: &Path) {
    let helixctl = |key: &Path, json: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_helixctl"));
        cmd.args(json.then_some("--json")).arg("verify").arg("--pubkey").arg(key).arg(dir);
        cmd.output().unwrap()
    };
    let out = helixctl(pubfile, true);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let ctl: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(&ctl, v);
    let out = helixctl(other, false);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("signed by key id"), "{}", text(&out));
    let out = helixctl(k, false);
    assert!(!out.status.success() && text(&out).contains("not a helix-ledger public key"), "{}", text(&out));
}

#[test]
fn the_recorder_signs_its_ledger_and_verify_head_and_export_show_it() {
    let env = Env::watched("ledger signing end to end", Duration::from_secs(120));
    let (k, pubfile) = keyed(&env);
    let dir = record_signed(&env, &k);

    let out = run(&["verify", "--json", "--pubkey"], &[&pubfile, &dir]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{v}");
    let s = &v["signed"];
    assert_eq!((s["signatures_checked"].as_bool(), s["unsigned_records"].as_u64()), (Some(true), Some(0)));
    assert_eq!(s["last_checkpoint"]["reason"], "shutdown");
    let cps = checkpoints(&dir);
    let segments = v["segments"].as_u64().unwrap();
    assert!(segments >= 2, "{v}");
    // Opened, each segment closed, stopped.
    let reasons: Vec<&str> = cps.iter().map(|c| c.2.reason_str()).collect();
    let mut want = vec!["open"];
    want.extend(std::iter::repeat_n("segment-end", segments as usize - 1));
    want.push("shutdown");
    assert_eq!(reasons, want);
    // Without the key: counted, not checked.
    let plain = run(&["verify"], &[&dir]);
    assert!(text(&plain).contains(&format!("{} checkpoints, signatures not checked", cps.len())), "{}", text(&plain));

    let head = run(&["head", "--signed", "--json"], &[&dir]);
    let h: Value = serde_json::from_slice(&head.stdout).unwrap();
    let last = cps.last().unwrap().2;
    assert_eq!(h["hash"], hex(&last.hash));
    assert_eq!(h["signature"], hex(&last.signature));
    assert_eq!(h["key_id"], hex(&last.key_id));
    let export = run(&["export"], &[&dir]);
    let lines: Vec<Value> =
        String::from_utf8(export.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let exported: Vec<&Value> = lines.iter().filter(|l| l["type"] == "checkpoint").collect();
    assert_eq!(exported.len(), cps.len());
    assert_eq!(exported.last().unwrap()["checkpoint"]["signature"], hex(&last.signature));

    // Verified with another key: named, exit 1.
    let other = env.path("other.pub");
    fs::write(&other, format_public(&key(9).verifying_key())).unwrap();
    let out = run(&["verify", "--pubkey"], &[&other, &dir]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("signed by key id"), "{}", text(&out));
    // A malformed public key file: named, exit 2.
    let out = run(&["verify", "--pubkey"], &[&k, &dir]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("not a helix-ledger public key"), "{}", text(&out));

    // helixctl verify --pubkey is the same check.
    check_helixctl_verify(&dir, &v, &pubfile, &other, &k);
}

/// A ledger signed with key 1 in segments of 4 KiB, its first `n`
/// segments pruned as the recorder's retention does (the manifest signed
/// by key 1); its folder and the segments it had.
fn pruned_ledger(env: &Env, n: usize) -> (std::path::PathBuf, Vec<helix::ledger::retention::SegmentInfo>) {
    use helix::ledger::retention::{prune, segment_infos, Plan};
    let dir = env.path("ledger");
    // A batch a second: a segment (17 batches) closes well within the
    // interval, so the next one holds records before its first checkpoint.
    signed_ledger_every(&dir, key(1), 4096, 60, 1);
    let segs = segment_infos(&dir, None).unwrap();
    assert!(segs.len() >= 4);
    let plan = Plan { delete: segs[..n].to_vec(), unanchored: None };
    prune(&dir, &segs, &plan, Some(&Signer::new(key(1), 60))).unwrap();
    (dir, segs)
}

#[test]
fn a_pruned_folder_verifies_with_its_key_from_its_first_kept_segment() {
    let env = Env::new();
    let (dir, _) = pruned_ledger(&env, 2);
    // The first kept segment's records precede its first checkpoint: the
    // one that closed the segment before it was pruned with it.
    let signed = verify_signed(&dir, &key(1).verifying_key()).unwrap().unwrap();
    assert_eq!((signed.summary.pruned.unwrap().segment, signed.unsigned_records), (2, 0));
    let f = signed_failure(&dir, &key(2));
    assert!(f.contains("signed by key id"), "{f}");
}

/// Found by review: the `pruned` manifest's checksum is no seal, so
/// someone who can write the folder deleted the oldest segments, wrote
/// the manifest retention would have (the hash is the next segment's
/// `prev_hash`), and `verify --pubkey` passed: rule 2 spares a pruned
/// start. The recorder signs the manifest now, and `verify --pubkey`
/// refuses one unsigned, of another key, or whose signature is not over
/// its fields.
#[test]
fn a_pruned_manifest_written_by_hand_fails_verify_with_the_key() {
    use helix::ledger::retention::{read_pruned, write_pruned, Pruned};
    use helix::ledger::sign::PrunedSignature;
    let env = Env::new();
    let (dir, segs) = pruned_ledger(&env, 1);
    let ours = read_pruned(&dir).unwrap().unwrap();
    assert!(verify_signed(&dir, &key(1).verifying_key()).unwrap().is_ok());
    // Segment 2 deleted by hand, and a manifest for it written.
    fs::remove_file(&segs[1].path).unwrap();
    let next = &segs[2].header;
    let write = |signed: Option<PrunedSignature>| {
        write_pruned(&dir, &Pruned { signed, ..Pruned::new(2, next.first_record, next.prev_hash, None) }).unwrap();
        assert!(verify(&dir).unwrap().is_ok(), "the chain alone verifies");
    };
    let by_hand = |signed| {
        write(signed);
        signed_failure(&dir, &key(1))
    };
    let f = by_hand(None);
    assert!(f.contains("the manifest of segments 1..=2") && f.contains("is not signed"), "{f}");
    assert!(f.contains("pruned"), "the manifest is named: {f}");
    let f = by_hand(ours.signed);
    assert!(f.contains("its signature does not verify: forged"), "{f}");
    let f = by_hand(Some(Signer::new(key(2), 60).sign_pruned(2, next.first_record, &next.prev_hash)));
    assert!(f.contains("the manifest is signed by key id"), "{f}");
    // Signed by the key, as the recorder's retention would have: verifies.
    write(Some(Signer::new(key(1), 60).sign_pruned(2, next.first_record, &next.prev_hash)));
    assert!(verify_signed(&dir, &key(1).verifying_key()).unwrap().is_ok());
}

#[test]
fn an_idle_ledger_signs_nothing_new_and_a_busy_one_signs_when_the_interval_is_due() {
    let env = Env::new();
    let (mut l, _) = Ledger::open(&env.path("ledger"), 1 << 20).unwrap();
    assert!(!l.checkpoint(1, Reason::Open), "no signer, no checkpoint");
    l.set_signer(Some(Signer::new(key(1), 60)));
    let decl = RingDecl { created_ns: 1, capacity: 64, max_payload: 64, policy: 1, name: "t".into() };
    let (id, _) = l.declare(&decl).unwrap();
    let t = helix::process::realtime_ns();
    assert!(l.checkpoint(t, Reason::Open));
    assert!(!l.checkpoint_if_due(t + 3600 * SEC), "idle: nothing new to sign");
    l.reserve_frame(id, 1, 1, t, 1, 8).fill(1);
    l.seal(id, 1);
    assert!(!l.checkpoint_if_due(t + 59 * SEC), "not due");
    assert!(l.checkpoint_if_due(t + 60 * SEC));
    assert!(!l.checkpoint_if_due(t + 200 * SEC), "signed: nothing new since");
    assert_eq!(l.stats().checkpoints, 2);
}

/// A ledger in `dir` signing with key 1 every 60 s, ring `t` declared and
/// a checkpoint signed now: the ledger, the ring's id, and now.
fn opened_signing(dir: &Path) -> (Ledger, u16, u64) {
    let (mut l, _) = Ledger::open(dir, 1 << 20).unwrap();
    l.set_signer(Some(Signer::new(key(1), 60)));
    let decl = RingDecl { created_ns: 1, capacity: 64, max_payload: 64, policy: 1, name: "t".into() };
    let (id, _) = l.declare(&decl).unwrap();
    let t = helix::process::realtime_ns();
    assert!(l.checkpoint(t, Reason::Open));
    (l, id, t)
}

#[test]
fn a_clock_set_back_past_the_last_checkpoint_has_the_next_batch_signed() {
    // Found by review: the next checkpoint fell due an interval after the
    // last one's time, and `verify` measures from the blocks' own times.
    // With the clock set back 100 s (an NTP step, a restored VM), blocks
    // were read for 160 s without a checkpoint among them, and an honest
    // recorder's ledger failed `verify --pubkey`.
    let env = Env::new();
    let dir = env.path("ledger");
    let (mut l, id, t) = opened_signing(&dir);
    for b in 0..17 {
        let now = t - 100 * SEC + b * 10 * SEC;
        l.checkpoint_if_due(now);
        l.reserve_frame(id, b + 1, 1, now, 1, 8).fill(1);
        l.seal(id, 1);
    }
    l.flush().unwrap();
    drop(l);
    let signed = verify_signed(&dir, &key(1).verifying_key()).unwrap();
    assert!(signed.is_ok(), "{:?}", signed.err());
}

#[test]
fn a_segment_of_a_lower_version_after_a_higher_one_is_refused() {
    let env = Env::new();
    let dir = env.path("ledger");
    // Unsigned (no CHECKPOINT), two segments.
    let (mut l, _) = Ledger::open(&dir, 512).unwrap();
    let decl = RingDecl { created_ns: 1, capacity: 64, max_payload: 64, policy: 1, name: "t".into() };
    let (id, _) = l.declare(&decl).unwrap();
    for s in 1..=20 {
        l.reserve_frame(id, s, 1, s, 1, 24).fill(1);
        l.seal(id, 1);
        l.flush().unwrap();
    }
    drop(l);
    verify(&dir).unwrap().unwrap();
    let f = verify_as_version_2(&dir, 2);
    assert!(f.contains("seg-0000000002.hxl: header: is of format version 2 after a segment of version 3"), "{f}");
}

/// docs/ledger.md's CHECKPOINT table and signed message, written out by
/// hand as a reader without our code would: our decoder and verifier agree.
#[test]
fn a_checkpoint_laid_out_as_the_documentation_says_verifies() {
    use ed25519_dalek::Signer as _;
    let k = key(3);
    let mut body = Vec::new();
    body.extend_from_slice(&7u64.to_le_bytes()); // segment
    body.extend_from_slice(&1000u64.to_le_bytes()); // records
    body.extend_from_slice(&90u64.to_le_bytes()); // blocks
    body.extend_from_slice(&123_456u64.to_le_bytes()); // time_ns
    body.extend_from_slice(&[0xcd; 32]); // hash
    let id = blake3::hash(k.verifying_key().as_bytes());
    body.extend_from_slice(&id.as_bytes()[..8]); // key_id
    body.extend_from_slice(&60u32.to_le_bytes()); // interval_s
    body.extend_from_slice(&3u32.to_le_bytes()); // reason: segment-end
    let message = [&b"HELIX ledger checkpoint v1\0"[..], &body].concat();
    assert_eq!(message.len(), 27 + 80);
    body.extend_from_slice(&k.sign(&message).to_bytes());
    let c = Checkpoint::decode(&body).unwrap();
    assert_eq!((c.segment, c.records, c.blocks, c.time_ns, c.reason_str()), (7, 1000, 90, 123_456, "segment-end"));
    assert_eq!(c.key_id, key_id(&k.verifying_key()));
    assert!(c.signed_by(&k.verifying_key()));
    assert_eq!(c.encode().to_vec(), body);
}

/// Found by review: a manifest written by hand (the oldest segments
/// deleted) failed `verify --pubkey`, until the recorder's retention pruned
/// the next segment and signed a manifest past it: then it passed. A
/// signing recorder prunes nothing past a manifest that is not its key's;
/// `helix-ledger sign-pruned` is the operator's word that it was the
/// ledger's own pruning.
#[test]
fn retention_signs_no_manifest_past_one_written_by_hand_until_an_operator_vouches_for_it() {
    use helix::ledger::retention::{prune, read_pruned, segment_infos, write_pruned, Plan, Pruned};
    let env = Env::new();
    let dir = env.path("ledger");
    signed_ledger_every(&dir, key(1), 4096, 60, 1);
    let segs = segment_infos(&dir, None).unwrap();
    assert!(segs.len() >= 4);
    // Segments 1 and 2 deleted by hand, a manifest for them written.
    for s in &segs[..2] {
        fs::remove_file(&s.path).unwrap();
    }
    let next = &segs[2].header;
    let signer = Signer::new(key(1), 60);
    let prune_next = || {
        let kept = segment_infos(&dir, read_pruned(&dir).unwrap().as_ref()).unwrap();
        prune(&dir, &kept, &Plan { delete: kept[..1].to_vec(), unanchored: None }, Some(&signer))
    };
    let by_other = Signer::new(key(2), 60).sign_pruned(2, next.first_record, &next.prev_hash);
    for (signed, why) in [(None, "is not signed"), (Some(by_other), "is signed by another key")] {
        write_pruned(&dir, &Pruned { signed, ..Pruned::new(2, next.first_record, next.prev_hash, None) }).unwrap();
        let e = prune_next().unwrap_err().to_string();
        assert!(e.contains(&format!("the manifest of segments 1..=2 {why}")) && e.contains("sign-pruned"), "{e}");
        assert!(segs[2].path.exists(), "nothing deleted");
        assert_eq!(read_pruned(&dir).unwrap().unwrap().segment, 2, "the manifest is as it was");
        assert!(signed_failure(&dir, &key(1)).contains("the manifest"), "verify --pubkey still refuses it");
    }
    // The operator vouches for it: it verifies, and retention goes on.
    let k = env.path("ledger.key");
    fs::write(&k, format_secret(&key(1))).unwrap();
    fs::set_permissions(&k, fs::Permissions::from_mode(0o400)).unwrap();
    // Not while a recorder holds the folder: its retention could prune
    // meanwhile (found by review of the command).
    let held = helix::ledger::lock_folder(&dir).unwrap();
    let out = run(&["sign-pruned", "--key"], &[&k, &dir]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("another helix-ledger records into this folder"), "{}", text(&out));
    drop(held);
    let out = run(&["sign-pruned", "--key"], &[&k, &dir]);
    assert!(out.status.success() && text(&out).contains("signed the manifest of segments 1..=2"), "{}", text(&out));
    assert!(verify_signed(&dir, &key(1).verifying_key()).unwrap().is_ok());
    assert_eq!(prune_next().unwrap().map(|p| p.segment), Some(3));
    assert!(verify_signed(&dir, &key(1).verifying_key()).unwrap().is_ok());
    // A folder whose chain does not continue from its manifest is not signed.
    write_pruned(&dir, &Pruned::new(3, segs[3].header.first_record, [7; 32], None)).unwrap();
    let out = run(&["sign-pruned", "--key"], &[&k, &dir]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(read_pruned(&dir).unwrap().unwrap().signed.is_none());
}

/// Found by review: the recorder asks whether a checkpoint is due before
/// each batch and stamps the batch after reading it; stopped between the
/// two for more than an interval (a VM paused, SIGSTOP, a slow read), it
/// stamped a block more than two intervals after the first unsigned one,
/// and `verify --pubkey` failed the untouched ledger for good ("a
/// checkpoint deleted?"). The ledger asks again at each block's own time.
#[test]
fn a_recorder_stopped_between_its_due_check_and_its_stamp_still_signs_in_time() {
    let env = Env::new();
    let dir = env.path("ledger");
    let (mut l, id, t0) = opened_signing(&dir);
    let batch = |l: &mut Ledger, seq: u64, at: u64| {
        l.reserve_frame(id, seq, 1, at, 1, 8).fill(seq as u8);
        l.seal(id, 1);
    };
    assert!(!l.checkpoint_if_due(t0 + SEC));
    batch(&mut l, 1, t0 + SEC);
    // Asked at 55 s: not due. Stopped for ten minutes, then stamped.
    assert!(!l.checkpoint_if_due(t0 + 55 * SEC));
    batch(&mut l, 2, t0 + 655 * SEC);
    l.checkpoint_if_due(t0 + 656 * SEC);
    batch(&mut l, 3, t0 + 657 * SEC);
    assert!(l.checkpoint(t0 + 700 * SEC, Reason::Shutdown));
    l.flush().unwrap();
    l.sync().unwrap();
    drop(l);
    let signed = verify_signed(&dir, &key(1).verifying_key()).unwrap();
    assert!(signed.is_ok(), "{}", signed.unwrap_err());
    assert_eq!(checkpoints(&dir).len(), 3, "at the start, before frame 2, at the end");
}
