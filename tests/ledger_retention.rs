//! helix-ledger's retention end to end: the real recorder, with
//! `[retention]` in its configuration, compressing closed segments and
//! deleting the anchored ones (refusing the others), killed in the middle,
//! and the pruned folder verified and resumed.

mod common;

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{payload, payload_len, publish_payloads, signal, Env, Reaped};
use helix::ledger::anchor::{append_anchor, hash_at, Anchor};
use helix::ledger::format::{hex, segment_name, RecordType};
use helix::ledger::retention::{read_pruned, segment_infos, Pruned};
use helix::ledger::{head, verify, walk, Ledger};
use helix::*;

/// Every closed segment is past this retention at once (1 KiB in total),
/// and compressed while it waits for an anchor.
const TINY: &str = "[retention]\nmax_total_gib = 0.000001\ncompress = true\n";

struct Recorder<'a> {
    env: &'a Env,
    dir: PathBuf,
    config: PathBuf,
}

impl<'a> Recorder<'a> {
    fn new(env: &'a Env, retention: &str) -> Recorder<'a> {
        let dir = env.path("ledger");
        let config = env.file("ledger.toml", &format!("dir = {:?}\n{retention}", dir.display().to_string()));
        Recorder { env, dir, config }
    }

    fn log(&self) -> String {
        fs::read_to_string(self.env.path("ledger.log")).unwrap_or_default()
    }

    /// The recorder on ring `audit`, segments of 1 MiB, logging to `ledger.log`.
    fn start(&self) -> Reaped {
        let log = OpenOptions::new().create(true).append(true).open(self.env.path("ledger.log")).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_helix-ledger"));
        cmd.arg("--config")
            .arg(&self.config)
            .args(["--ring", "audit", "--fsync-interval-ms", "5", "--segment-size-mib", "1"])
            // Retention alone (signing: tests/ledger_signing.rs).
            .args(["--checkpoint-interval-s", "0"])
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .stdout(Stdio::null())
            .stderr(log);
        Reaped::new(cmd.spawn().unwrap())
    }

    /// Polls `cond`; a recorder that exited meanwhile fails the test with
    /// its log. The test's watchdog bounds the wait.
    fn wait_for(&self, ledger: &mut Reaped, what: &str, mut cond: impl FnMut() -> bool) {
        while !cond() {
            if let Some(status) = ledger.0.try_wait().unwrap() {
                panic!("helix-ledger exited ({status}) while waiting for {what}; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits until the ledger holds sequence `last` of ring `audit`.
    fn catch_up(&self, ledger: &mut Reaped, last: u64) {
        self.wait_for(ledger, "the ledger to catch up", || {
            head(&self.dir).ok().and_then(Result::ok).is_some_and(|h| h.rings.first().is_some_and(|r| r.1 == last + 1))
        });
    }

    fn stop(&self, mut ledger: Reaped) {
        signal(&ledger.0, libc::SIGTERM);
        let status = ledger.0.wait().unwrap();
        assert!(status.success(), "helix-ledger exited with {status}; log:\n{}", self.log());
    }

    fn segment_numbers(&self) -> Vec<u64> {
        helix::ledger::store::segments(&self.dir).unwrap().into_iter().map(|(n, _)| n).collect()
    }

    fn pruned(&self) -> Option<Pruned> {
        read_pruned(&self.dir).unwrap()
    }
}

/// A block ring `audit` and its writer.
fn ring(env: &Env) -> (RingView, Writer) {
    let opts = RingOptions {
        capacity: 1 << 16,
        max_payload: 64,
        policy: Policy::Block,
        stall_timeout: Duration::from_secs(2),
        max_readers: 8,
        ..Default::default()
    };
    let ring = Ring::create(&env.ns, "audit", &opts).unwrap();
    (RingView::attach(&env.ns, "audit").unwrap(), ring.writer().unwrap())
}

/// Checks that the folder verifies and that its frames are every sequence
/// from the first kept on to `last`, each once, with its payload. Returns
/// the first sequence kept.
fn audit(dir: &Path, last: u64) -> u64 {
    let mut expect = None;
    let mut first = None;
    let mut buf = [0u8; 64];
    walk(dir, |at| {
        let h = &at.record.header;
        match RecordType::from_u16(h.rtype).unwrap() {
            RecordType::Ring => {
                expect.get_or_insert(h.seq);
            }
            RecordType::Frame => {
                assert_eq!(Some(h.seq), expect, "frame out of order");
                first.get_or_insert(h.seq);
                let len = payload_len(h.seq, 64);
                payload(h.seq, len, &mut buf);
                assert_eq!(at.record.payload, &buf[..len], "payload of sequence {}", h.seq);
                expect = Some(h.seq + 1);
            }
            RecordType::Gap => panic!("a GAP on a block ring"),
            RecordType::Checkpoint => {}
        }
    })
    .unwrap()
    .unwrap_or_else(|f| panic!("{}: {f}", dir.display()));
    assert_eq!(expect, Some(last + 1), "the ledger ends at {:?} of {last}", expect);
    first.unwrap_or(last + 1)
}

/// `helix-ledger anchor DIR ARGS`: its standard output.
fn anchor_cli(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_helix-ledger")).arg("anchor").arg(dir).args(args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn retention_deletes_exactly_the_anchored_closed_segments_and_the_pruned_ledger_resumes() {
    let env = Env::watched("ledger retention", Duration::from_secs(180));
    let (view, mut w) = ring(&env);
    let rec = Recorder::new(&env, TINY);
    let mut ledger = rec.start();
    // Registered before the frames come: a recorder that joined late would
    // start after a GAP.
    let pid = ledger.0.id();
    rec.wait_for(&mut ledger, "the ledger to register", || {
        view.stats().readers.iter().any(|r| r.pid == pid && r.alive)
    });
    publish_payloads(&mut w, 1, 200_000);
    rec.catch_up(&mut ledger, 200_000);
    let segs = rec.segment_numbers();
    assert!(segs.len() >= 5, "segments {segs:?}");
    // Nothing anchored: every closed segment is past retention, none goes.
    rec.wait_for(&mut ledger, "the refusal", || rec.log().contains("past retention but not anchored"));
    assert_eq!(rec.segment_numbers(), segs);
    assert_eq!(rec.pruned(), None);
    // Each closed segment is compressed once the next one starts.
    rec.wait_for(&mut ledger, "the closed segments to be compressed", || {
        let files = helix::ledger::store::segments(&rec.dir).unwrap();
        files.iter().filter(|(_, p)| helix::ledger::compress::is_compressed(p)).count() == files.len() - 1
    });

    // A head exported earlier, in the middle of segment 4: segments 1 to 3
    // are covered, 4 is not.
    let infos = segment_infos(&rec.dir, None).unwrap();
    // The end of segment 4's first block (a chain hash is kept per block).
    let mut at = 0;
    walk(&rec.dir, |l| {
        if at == 0 && l.segment == infos[3].segment && l.hash.is_some() {
            at = l.index + 1;
        }
    })
    .unwrap()
    .unwrap();
    assert!(at > infos[3].header.first_record && at < infos[4].header.first_record);
    let hash = hex(&hash_at(&rec.dir, at).unwrap().unwrap());
    let out = anchor_cli(&rec.dir, &["--records", &at.to_string(), "--hash", &hash, "--note", "historian"]);
    assert_eq!(out, format!("{hash} records={at}\nanchored: {} line 1\n", rec.dir.join("anchors").display()));
    // Logged once the files are removed (the manifest comes first).
    let rec = &rec;
    let pruned = |n: usize| move || rec.log().matches("retention: the ledger now starts after").count() == n;
    rec.wait_for(&mut ledger, "segments 1 to 3 to be pruned", pruned(1));
    let p = rec.pruned().unwrap();
    assert_eq!(p, Pruned::new(3, infos[3].header.first_record, infos[3].header.prev_hash, None));
    assert_eq!(rec.segment_numbers(), segs[3..]);
    rec.wait_for(&mut ledger, "the refusal of segment 4", || {
        rec.log().contains("segment 4 (seg-0000000004.hxl) is past")
    });

    // The current head anchored: every closed segment goes, the one being
    // written stays.
    let out = anchor_cli(&rec.dir, &[]);
    assert!(out.ends_with("line 2\n"), "{out}");
    let newest = *segs.last().unwrap();
    rec.wait_for(&mut ledger, "all closed segments to be pruned", pruned(2));
    assert_eq!(rec.pruned().map(|p| p.segment), Some(newest - 1));
    assert_eq!(rec.segment_numbers(), [newest]);
    let log = rec.log();
    assert_eq!(log.matches("segment 1 (seg-0000000001.hxl) is past retention but not anchored").count(), 1, "{log}");
    assert_eq!(log.matches("is past retention but not anchored").count(), 2, "{log}");
    for n in 1..newest {
        assert_eq!(log.matches(&format!("deleted segment {n} ({},", segment_name(n))).count(), 1, "{log}");
    }

    // The pruned folder verifies and the recorder resumes it.
    rec.stop(ledger);
    let v = verify(&rec.dir).unwrap().unwrap();
    assert_eq!(v.pruned.map(|p| p.segment), Some(newest - 1));
    let mut ledger = rec.start();
    publish_payloads(&mut w, 200_001, 210_000);
    rec.catch_up(&mut ledger, 210_000);
    rec.stop(ledger);
    assert!(audit(&rec.dir, 210_000) > 1);
    let out = Command::new(env!("CARGO_BIN_EXE_helix-ledger")).arg("verify").arg(&rec.dir).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains(&format!("segments 1 to {} were pruned", newest - 1)), "{text}");
}

#[test]
fn killed_while_pruning_the_ledger_verifies_and_resumes_every_time() {
    let env = Env::watched("ledger retention kill -9", Duration::from_secs(240));
    let (view, mut w) = ring(&env);
    let rec = Recorder::new(&env, TINY);
    let mut next = common::xorshift(0x9E37_79B9_7F4A_7C15);
    let mut published = 0u64;
    let mut killed_after_pruning = 0;
    for round in 0..20 {
        let mut ledger = rec.start();
        let pid = ledger.0.id();
        rec.wait_for(&mut ledger, "the ledger to register", || {
            view.stats().readers.iter().any(|r| r.pid == pid && r.alive)
        });
        let count = 1 + next(30_000);
        publish_payloads(&mut w, published + 1, published + count);
        published += count;
        rec.catch_up(&mut ledger, published);
        // Anchor the head, then kill the recorder at a random moment while
        // its retention notices and prunes (it looks every second).
        let h = head(&rec.dir).unwrap().unwrap();
        let before = rec.pruned();
        append_anchor(&rec.dir, &Anchor { records: h.records, hash: h.hash, time_ns: 0, note: String::new() }).unwrap();
        let status = ledger.kill_after(Duration::from_millis(next(1500)));
        assert_eq!(status.code(), None, "round {round}: it exited by itself; log:\n{}", rec.log());
        if rec.pruned() != before {
            killed_after_pruning += 1;
        }
        // Whatever it was doing, the folder verifies as it is.
        if let Err(f) = verify(&rec.dir).unwrap() {
            panic!("round {round}: {f}; log:\n{}", rec.log());
        }
    }
    let mut ledger = rec.start();
    publish_payloads(&mut w, published + 1, published + 1000);
    published += 1000;
    rec.catch_up(&mut ledger, published);
    rec.stop(ledger);
    let first = audit(&rec.dir, published);
    eprintln!(
        "{published} frames; {killed_after_pruning} of 20 kills came after a pruning; the ledger starts at {first}"
    );
    assert!(rec.pruned().is_some(), "nothing was ever pruned; log:\n{}", rec.log());
}

/// `helix-ledger ARGS`: (exit code, stdout, stderr).
fn ledger_cli(args: &[&std::ffi::OsStr]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_helix-ledger")).args(args).output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap(), text(&out.stdout), text(&out.stderr))
}

/// A ledger in the scratch folder's `ledger` of 60 frames of ring "audit",
/// one a block; returns the folder.
fn sixty_frames(env: &Env) -> PathBuf {
    let dir = env.path("ledger");
    common::small_ledger(&dir, "audit", 60, 1024);
    dir
}

/// An `anchors` entry that is no regular file: a link (to a file of
/// root's, say, that an operator's `sudo helix-ledger anchor` would have
/// made, written and given to the folder's owner), or a FIFO (every
/// reader of it, the recorder's retention too, would have waited for a
/// writer for good). Both are refused naming the file, and nothing is made
/// or written through them.
#[test]
fn an_anchors_entry_that_is_a_link_or_a_fifo_is_refused_and_nothing_is_written_through_it() {
    let env = Env::watched("anchors link or fifo", Duration::from_secs(60));
    let dir = sixty_frames(&env);
    let anchors = dir.join("anchors");
    let victim = env.path("victim");
    std::os::unix::fs::symlink(&victim, &anchors).unwrap();
    let anchor = || ledger_cli(&[std::ffi::OsStr::new("anchor"), dir.as_os_str()]);
    let (code, _, err) = anchor();
    assert!(code == 2 && err.contains("anchors: a symbolic link, not a regular file: refused"), "{err}");
    assert!(!victim.exists(), "the link was followed");
    fs::write(&victim, "").unwrap();
    let (code, _, err) = anchor();
    assert!(code == 2 && err.contains("a symbolic link"), "{err}");
    assert_eq!(fs::read(&victim).unwrap(), b"", "written through the link");
    fs::remove_file(&anchors).unwrap();
    assert!(Command::new("mkfifo").arg(&anchors).status().unwrap().success());
    let (code, _, err) = anchor();
    assert!(code == 2 && err.contains("anchors: a FIFO, not a regular file: refused"), "{err}");
    let e = helix::ledger::anchor::read_anchors(&dir).unwrap_err().to_string();
    assert!(e.contains("not a regular file"), "{e}");
}

/// Whatever someone who may write the folder puts under the name of one
/// of its files: a link under `lock` (to a file of root's, say, that an
/// operator's `sudo helix-ledger` would have truncated and written its pid
/// into, or made), a FIFO under `pruned` or a segment's name (the
/// recorder's start would have waited for a writer for good, before it
/// told systemd it was ready). The lock file is made afresh in the link's
/// place; the others are refused, naming the file; nothing is made or
/// written through a link.
#[test]
fn a_link_or_a_fifo_under_a_folder_files_name_is_refused_naming_it() {
    let env = Env::watched("folder links and fifos", Duration::from_secs(60));
    let dir = sixty_frames(&env);
    let open = || Ledger::open(&dir, 1 << 20).map(|_| ()).unwrap_err().to_string();
    let (lock, victim) = (dir.join("lock"), env.path("victim"));
    let link_lock = || {
        fs::remove_file(&lock).unwrap();
        std::os::unix::fs::symlink(&victim, &lock).unwrap();
    };
    link_lock();
    drop(Ledger::open(&dir, 1 << 20).unwrap());
    assert!(!victim.exists(), "the link was followed to make its target");
    assert!(fs::symlink_metadata(&lock).unwrap().file_type().is_file(), "the lock file was not made afresh");
    fs::write(&victim, "keep").unwrap();
    link_lock();
    drop(Ledger::open(&dir, 1 << 20).unwrap());
    assert_eq!(fs::read_to_string(&victim).unwrap(), "keep", "written through the link");
    let mkfifo = |path: &Path| assert!(Command::new("mkfifo").arg(path).status().unwrap().success());
    mkfifo(&dir.join("pruned"));
    let e = open();
    assert!(e.contains("pruned: a FIFO, not a regular file: refused"), "{e}");
    fs::remove_file(dir.join("pruned")).unwrap();
    let next = dir.join(segment_name(helix::ledger::store::segments(&dir).unwrap().last().unwrap().0 + 1));
    mkfifo(&next);
    let e = open();
    assert!(e.contains(&format!("{}: a FIFO", next.display())), "{e}");
    fs::remove_file(&next).unwrap();
    // Nothing left behind that keeps the recorder from starting.
    Ledger::open(&dir, 1 << 20).unwrap();
}

#[test]
fn anchor_and_verify_refuse_bad_input_naming_the_problem() {
    let env = Env::new();
    let dir = sixty_frames(&env);
    let d = dir.as_os_str();
    let anchor = |extra: &[&str]| {
        let mut args = vec![std::ffi::OsStr::new("anchor"), d];
        args.extend(extra.iter().map(std::ffi::OsStr::new));
        ledger_cli(&args)
    };
    let h = head(&dir).unwrap().unwrap();
    // A hash that is not the chain's at that count, a count past the end,
    // a malformed hash, a count without a hash: refused, nothing recorded.
    let (code, _, err) = anchor(&["--records", "10", "--hash", &hex(&h.hash)]);
    assert!(code == 2 && err.contains("the chain's hash after 10 records is"), "{err}");
    let (code, _, err) = anchor(&["--records", &(h.records + 1).to_string(), "--hash", &hex(&h.hash)]);
    assert!(code == 2 && err.contains(&format!("holds no chain hash after {} records", h.records + 1)), "{err}");
    let (code, _, err) = anchor(&["--records", "10", "--hash", "abc"]);
    assert!(code == 2 && err.contains("--hash: \"abc\" is not a chain hash"), "{err}");
    let (code, _, err) = anchor(&["--records", "10"]);
    assert!(code == 2 && err.contains("--hash"), "{err}");
    assert!(!dir.join("anchors").exists());
    // The head, recorded; then a garbled line is named, and nothing is appended.
    let (code, out, _) = anchor(&["--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!((v["records"].as_u64(), v["line"].as_u64()), (Some(h.records), Some(1)));
    let text = fs::read_to_string(dir.join("anchors")).unwrap();
    fs::write(dir.join("anchors"), text.replacen("anchor ", "anchor 1", 1)).unwrap();
    let (code, _, err) = anchor(&[]);
    assert!(code == 2 && err.contains("anchors: line 1: checksum"), "{err}");
    // A folder whose first segment was removed by hand: verify names it.
    fs::remove_file(dir.join(segment_name(1))).unwrap();
    let (code, out, _) = ledger_cli(&[std::ffi::OsStr::new("verify"), d]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("segment 1 (seg-0000000001.hxl) is missing and no `pruned` manifest"), "{out}");
}
