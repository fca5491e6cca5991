use super::*;
use crate::ledger::chain::Problem;
use crate::ledger::verify::{verify, VerifyFailure};

/// A folder removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("helix-ledger-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn decl() -> RingDecl {
    RingDecl { created_ns: 42, capacity: 64, max_payload: 32, policy: 1, name: "t".into() }
}

/// Appends frames `from..from+n` of ring `t` with 20-byte payloads,
/// then flushes them.
pub(in crate::ledger) fn append(l: &mut Ledger, from: u64, n: u64) {
    let (id, next) = l.declare(&decl()).unwrap();
    assert_eq!(next, from);
    for seq in from..from + n {
        l.reserve_frame(id, seq, 1, 0, 7, 20).fill(seq as u8);
        l.seal(id, 1);
    }
    l.flush().unwrap();
}

/// A child process being started holds every open file of its parent
/// between its fork and its exec, the ledger folder's handle with its lock
/// among them. A Ledger closed and opened again meanwhile (here: a child
/// forked while the first was open, that exits 50 ms later) waits that
/// out; before, it was refused as locked, in its own process's name.
#[test]
fn a_lock_a_starting_child_still_holds_is_waited_out() {
    let d = TempDir::new("forked-lock");
    let (l, _) = Ledger::open(&d.0, 1 << 20).unwrap();
    // SAFETY: the child calls only async-signal-safe functions (usleep,
    // _exit) before it ends.
    let child = unsafe { libc::fork() };
    if child == 0 {
        // SAFETY: as above.
        unsafe {
            libc::usleep(50_000);
            libc::_exit(0);
        }
    }
    assert!(child > 0, "fork failed");
    drop(l);
    let reopened = Ledger::open(&d.0, 1 << 20).map(drop);
    let mut status = 0;
    // SAFETY: `child` is this process's child; `status` is a valid int.
    assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
    reopened.unwrap();
    // Another process's lock is refused at once, naming it (tests/ledger.rs).
}

#[test]
fn a_sync_handed_off_covers_what_was_written_and_only_new_writes_need_another() {
    let d = TempDir::new("handoff");
    let (mut l, _) = Ledger::open(&d.0, 1 << 20).unwrap();
    // A new ledger's first segment was synced when it was created.
    assert!(l.begin_sync().unwrap().is_none());
    append(&mut l, 1, 10);
    let syncs = l.stats().syncs;
    assert!(l.sync_due_in(Duration::from_secs(3600)).is_some(), "written data waits for a sync");
    let job = l.begin_sync().unwrap().expect("written data to sync");
    assert_eq!(job.path, d.0.join(segment_name(1)));
    // The handle is the segment file itself: its length is what was written.
    assert_eq!(job.file.metadata().unwrap().len(), fs::metadata(&job.path).unwrap().len());
    job.run().unwrap();
    assert_eq!(l.stats().syncs, syncs + 1);
    assert_eq!(l.sync_due_in(Duration::ZERO), None, "nothing new since");
    assert!(l.begin_sync().unwrap().is_none());
    append(&mut l, 11, 1);
    assert!(l.begin_sync().unwrap().is_some());
}

/// Found by review: a write cut short (no room, a file-size limit) was
/// retried whole, after its part already in the file, breaking the
/// chain mid-file. In a process of its own (the limit is per process).
#[test]
fn a_write_cut_short_by_an_error_goes_on_where_it_stopped_when_retried() {
    const CHILD: &str = "HELIX_TEST_CUT_SHORT_DIR";
    let Some(dir) = std::env::var_os(CHILD) else {
        let d = TempDir::new("cut-short");
        let name = "ledger::store::tests::a_write_cut_short_by_an_error_goes_on_where_it_stopped_when_retried";
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", name, "--test-threads=1", "--nocapture"])
            .env(CHILD, &d.0)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && said.contains("1 passed"), "{said}");
        let s = verify(&d.0).unwrap().unwrap();
        assert_eq!((s.rings[0].frames, s.rings[0].next_seq), (40, 41));
        Ledger::open(&d.0, 1 << 20).unwrap();
        return;
    };
    let (mut l, _) = Ledger::open(std::path::Path::new(&dir), 1 << 20).unwrap();
    append(&mut l, 1, 10);
    let path = std::path::Path::new(&dir).join(segment_name(1));
    let len = fs::metadata(&path).unwrap().len();
    let limit = |cur: u64| libc::rlimit { rlim_cur: cur, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: ignoring SIGXFSZ (a write past the limit then fails with
    // EFBIG instead of killing the process); `limit` gives valid rlimits.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit(len + 100)), 0);
    }
    let (id, _) = l.declare(&decl()).unwrap();
    for seq in 11..41 {
        l.reserve_frame(id, seq, 1, 0, 7, 20).fill(seq as u8);
        l.seal(id, 1);
    }
    let written = l.written();
    assert!(l.flush().is_err(), "the limit is 100 bytes on");
    assert_eq!(fs::metadata(&path).unwrap().len(), len + 100, "cut short, part written");
    // A flush cut short is not counted written (its frames stay held).
    assert_eq!(l.written(), written);
    // SAFETY: as above.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_FSIZE, &limit(libc::RLIM_INFINITY)) }, 0);
    l.flush().unwrap();
    assert_eq!(l.written(), written + 1);
}

#[test]
fn a_torn_tail_is_cut_off_and_the_chain_resumes() {
    let d = TempDir::new("torn");
    let (mut l, rec) = Ledger::open(&d.0, 1 << 20).unwrap();
    assert!(rec.created);
    append(&mut l, 1, 10);
    let head = l.chain().clone();
    // Half a record, as a write cut short would leave.
    let (id, _) = l.declare(&decl()).unwrap();
    l.reserve_frame(id, 11, 1, 0, 7, 20);
    l.seal(id, 1);
    let half = &l.buf[..30].to_vec();
    l.buf.clear();
    l.sealed = 0;
    drop(l);
    let path = d.0.join(segment_name(1));
    let len = fs::metadata(&path).unwrap().len();
    OpenOptions::new().append(true).open(&path).unwrap().write_all(half).unwrap();

    let (mut l, rec) = Ledger::open(&d.0, 1 << 20).unwrap();
    let (p, offset, cut, _) = rec.truncated.unwrap();
    assert_eq!((p, offset, cut), (path.clone(), len, 30));
    assert_eq!((l.chain().hash, l.chain().records), (head.hash, head.records));
    append(&mut l, 11, 5);
    drop(l);
    let s = verify(&d.0).unwrap().unwrap();
    assert_eq!((s.rings[0].frames, s.rings[0].next_seq), (15, 16));
}

#[test]
fn a_bad_record_with_data_after_it_is_refused_not_truncated() {
    let d = TempDir::new("corrupt");
    let (mut l, _) = Ledger::open(&d.0, 1 << 20).unwrap();
    append(&mut l, 1, 10);
    drop(l);
    let path = d.0.join(segment_name(1));
    let mut bytes = fs::read(&path).unwrap();
    let len = bytes.len();
    // A byte of the fifth frame's length (after the header and the RING
    // block; each frame sealed alone is a block of its own).
    let ring_len = MIN_BLOCK_LEN + decl().encode().len();
    let frame_len = MIN_BLOCK_LEN + ENTRY_HEADER_LEN + 20;
    let fifth = SEGMENT_HEADER_LEN + ring_len + 4 * frame_len;
    bytes[fifth + BLOCK_HEADER_LEN + 3] ^= 1;
    fs::write(&path, &bytes).unwrap();
    match Ledger::open(&d.0, 1 << 20) {
        Err(LedgerError::Corrupt { bad, follow, .. }) => {
            assert_eq!((bad.offset, bad.index, bad.problem), (fifth as u64, 5, Problem::Hash));
            assert_eq!(follow, (len - fifth - frame_len) as u64);
        }
        other => panic!("expected Corrupt, got {:?}", other.map(|_| ())),
    }
    assert_eq!(fs::metadata(&path).unwrap().len(), len as u64, "nothing truncated");
}

#[test]
fn segments_rotate_and_each_restates_its_rings() {
    let d = TempDir::new("rotate");
    let (mut l, _) = Ledger::open(&d.0, 4096).unwrap();
    for i in 0..20 {
        append(&mut l, 1 + i * 10, 10);
    }
    assert!(l.segment() >= 4, "segment {}", l.segment());
    drop(l);
    let s = verify(&d.0).unwrap().unwrap();
    assert_eq!((s.segments >= 4, s.rings.len(), s.rings[0].frames, s.rings[0].next_seq), (true, 1, 200, 201));
    // Reopening resumes from the last segment alone.
    let (l, rec) = Ledger::open(&d.0, 4096).unwrap();
    assert_eq!((rec.truncated, l.chain().rings[0].next_seq), (None, 201));
    // A leftover of an interrupted rotation is removed on open.
    drop(l);
    let tmp = d.0.join(format!("{}.tmp", segment_name(99)));
    fs::write(&tmp, b"partial").unwrap();
    let (_, rec) = Ledger::open(&d.0, 4096).unwrap();
    assert_eq!(rec.removed, vec![tmp]);
    // A new incarnation of the ring starts again at 1.
    let (mut l, _) = Ledger::open(&d.0, 4096).unwrap();
    assert_eq!(l.declare(&RingDecl { created_ns: 43, ..decl() }).unwrap(), (0, 1));
    l.flush().unwrap();
    drop(l);
    fs::remove_file(d.0.join(segment_name(2))).unwrap();
    assert!(matches!(verify(&d.0).unwrap(), Err(VerifyFailure::MissingSegment { expected: 2, .. })));
}

/// Appends frames `from..from+n` of ring `t` in one flush: past
/// `WRITE_HERE_MAX` from 2,400 frames on, so a writing thread takes it.
fn append_flush(l: &mut Ledger, from: u64, n: u64) {
    let (id, _) = l.declare(&decl()).unwrap();
    for seq in from..from + n {
        l.reserve_frame(id, seq, 1, 0, 7, 20).fill(seq as u8);
        l.seal(id, 1);
    }
    l.flush().unwrap();
}

/// Flushes of 7 frames (written on the caller's thread when nothing is in
/// flight) and of 3,000 (handed to the thread), in turn.
fn append_mixed(l: &mut Ledger, n: u64) {
    let mut seq = 1;
    for i in 0.. {
        let k = if i % 2 == 0 { 7 } else { 3000 }.min(1 + n - seq);
        if k == 0 {
            break;
        }
        append_flush(l, seq, k);
        seq += k;
    }
}

#[test]
fn writing_behind_leaves_the_folder_a_synchronous_ledger_leaves_across_rotations() {
    let (sync, behind) = (TempDir::new("behind-sync"), TempDir::new("behind"));
    let (mut a, _) = Ledger::open(&sync.0, 200 << 10).unwrap();
    let (mut b, _) = Ledger::open(&behind.0, 200 << 10).unwrap();
    b.write_behind().unwrap();
    append_mixed(&mut a, 40_000);
    append_mixed(&mut b, 40_000);
    b.sync().unwrap();
    assert_eq!(b.written(), b.flushed(), "a sync waits for every write");
    assert_eq!((a.segment(), a.chain().hash), (b.segment(), b.chain().hash));
    assert!(b.segment() >= 5, "rotated: segment {}", b.segment());
    drop((a, b));
    let (va, vb) = (verify(&sync.0).unwrap().unwrap(), verify(&behind.0).unwrap().unwrap());
    assert_eq!((vb.segments, vb.rings[0].frames, vb.rings[0].next_seq), (va.segments, 40_000, 40_001));
    // Every segment holds the same records; only the headers' creation
    // times differ.
    for n in 1..=va.segments {
        let (x, y) =
            (fs::read(sync.0.join(segment_name(n))).unwrap(), fs::read(behind.0.join(segment_name(n))).unwrap());
        assert_eq!(x.len(), y.len(), "segment {n}");
        assert_eq!(x[SEGMENT_HEADER_LEN..], y[SEGMENT_HEADER_LEN..], "segment {n}");
    }
}

/// A new ledger in a folder of its own, writing behind, and its writing
/// thread's progress and test hooks.
fn behind_ledger(tag: &str) -> (TempDir, Ledger, std::sync::Arc<behind::Shared>) {
    let d = TempDir::new(tag);
    let (mut l, _) = Ledger::open(&d.0, 64 << 20).unwrap();
    l.write_behind().unwrap();
    let shared = l.behind.as_ref().unwrap().sync_after().0;
    (d, l, shared)
}

/// Makes the next write fail, as a full disk's would.
fn fail_next_write(shared: &behind::Shared) {
    shared.test.fail.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// The recorder releases a batch's frames only once its flush is written:
/// `written` must not run ahead of the file.
#[test]
fn a_flush_handed_behind_is_counted_written_only_once_it_is_in_the_file() {
    let (d, mut l, shared) = behind_ledger("behind-count");
    let path = d.0.join(segment_name(1));
    let (before, bytes) = (fs::metadata(&path).unwrap().len(), l.stats().bytes);
    // Counted on from the flushes before (the new segment's header).
    let f = l.flushed();
    assert_eq!(l.written(), f);
    let held = shared.test.gate.lock().unwrap();
    append_flush(&mut l, 1, 3000);
    // Small, but one is in flight: it goes behind it, not ahead.
    append_flush(&mut l, 3001, 10);
    assert_eq!((l.flushed(), l.written()), (f + 2, f));
    assert_eq!(fs::metadata(&path).unwrap().len(), before, "nothing is written while the thread is held");
    drop(held);
    l.wait_written().unwrap();
    assert_eq!(l.written(), f + 2);
    assert_eq!(fs::metadata(&path).unwrap().len(), before + l.stats().bytes - bytes);
    // Small with nothing in flight: written at once.
    append_flush(&mut l, 3011, 10);
    assert_eq!((l.flushed(), l.written()), (f + 3, f + 3));
    // A sync job handed out now waits for the writes it covers.
    let held = shared.test.gate.lock().unwrap();
    append_flush(&mut l, 3021, 3000);
    let job = l.begin_sync().unwrap().expect("written data to sync");
    let syncing = std::thread::spawn(move || job.run());
    assert_eq!(l.written(), f + 3);
    assert!(!syncing.is_finished(), "the sync waits for the write it covers");
    drop(held);
    syncing.join().unwrap().unwrap();
    assert_eq!(l.written(), f + 4);
    assert_eq!(verify(&d.0).unwrap().unwrap().rings[0].next_seq, 6021);
}

/// A write that fails stops the writing: nothing after it reaches the
/// file (the chain would break mid-file), not even a buffer already
/// handed over, and every later flush, sync and wait says why, naming the
/// segment.
#[test]
fn a_failed_write_behind_fails_every_later_flush_and_writes_nothing_after_it() {
    let (d, mut l, shared) = behind_ledger("behind-fail");
    append_flush(&mut l, 1, 3000);
    l.wait_written().unwrap();
    let path = d.0.join(segment_name(1));
    let len = fs::metadata(&path).unwrap().len();
    // Two buffers in flight; the first fails.
    let held = shared.test.gate.lock().unwrap();
    fail_next_write(&shared);
    append_flush(&mut l, 3001, 3000);
    append_flush(&mut l, 6001, 3000);
    drop(held);
    let err = l.wait_written().unwrap_err().to_string();
    assert!(err.starts_with(&format!("{}: write: no space left", path.display())), "{err}");
    assert!(append_flush_err(&mut l, 9001).contains("write: no space left"));
    assert!(l.sync().unwrap_err().to_string().contains("write: no space left"));
    assert_eq!(l.written(), l.flushed() - 2, "the two after the failure are not written");
    drop(l);
    assert_eq!(fs::metadata(&path).unwrap().len(), len, "nothing after the failed write");
    // What was written before it is whole.
    assert_eq!(verify(&d.0).unwrap().unwrap().rings[0].next_seq, 3001);
}

/// The same for a small flush written on the recorder's own thread.
#[test]
fn a_failed_write_on_the_recorders_thread_fails_it_and_every_later_flush() {
    let (d, mut l, shared) = behind_ledger("behind-fail-here");
    append_flush(&mut l, 1, 10);
    let path = d.0.join(segment_name(1));
    let len = fs::metadata(&path).unwrap().len();
    fail_next_write(&shared);
    let err = append_flush_err(&mut l, 11);
    assert!(err.starts_with(&format!("{}: write: no space left", path.display())), "{err}");
    assert_eq!(l.buffered(), 0);
    assert!(append_flush_err(&mut l, 12).contains("write: no space left"));
    assert!(l.wait_written().is_err());
    drop(l);
    assert_eq!(fs::metadata(&path).unwrap().len(), len);
}

/// Appends frame `seq`; its flush must fail: why.
fn append_flush_err(l: &mut Ledger, seq: u64) -> String {
    let (id, _) = l.declare(&decl()).unwrap();
    l.reserve_frame(id, seq, 1, 0, 7, 20);
    l.seal(id, 1);
    l.flush().unwrap_err().to_string()
}

/// Found by review: the folder's lock went with the ledger before its
/// writing thread had finished, so a second recorder could take the
/// folder (cutting what it took for a torn tail) while the first still
/// appended to it.
#[test]
fn a_ledger_keeps_its_folder_locked_until_its_writing_thread_has_finished() {
    let (d, mut l, shared) = behind_ledger("behind-lock");
    let held = shared.test.gate.lock().unwrap();
    append_flush(&mut l, 1, 3000);
    let dropping = std::thread::spawn(move || drop(l));
    assert!(matches!(Ledger::open(&d.0, 64 << 20), Err(LedgerError::Locked { .. })));
    drop(held);
    dropping.join().unwrap();
    let (l, _) = Ledger::open(&d.0, 64 << 20).unwrap();
    assert_eq!(l.chain().rings[0].next_seq, 3001);
}

/// Found by review: a panic of the writing thread left everyone who waits
/// for it (the next flush, a sync, the recorder's stop) waiting for ever.
#[test]
fn a_panic_of_the_writing_thread_fails_the_waits_instead_of_hanging_them() {
    let (_d, mut l, shared) = behind_ledger("behind-panic");
    shared.test.panic.store(true, std::sync::atomic::Ordering::Relaxed);
    append_flush(&mut l, 1, 3000);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let waited = l.wait_written().map_err(|e| e.to_string());
        let _ = tx.send(waited);
    });
    // A watchdog, not a timing: the wait returns at once with the fix.
    let waited = rx.recv_timeout(Duration::from_secs(60)).expect("the wait for a panicked thread hung");
    assert!(waited.unwrap_err().ends_with("the ledger's writing thread panicked"));
}

/// Opening a folder counts the records after its last checkpoint: what a
/// recorder killed between checkpoints left unsigned, which the next one
/// signs as it finds them (helix-ledger says so).
#[test]
fn opening_counts_the_records_after_the_last_checkpoint() {
    use crate::ledger::sign::Signer;
    let d = TempDir::new("unsigned");
    let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    // Opens the folder, checks what it found unsigned, signs a checkpoint
    // for `reason` (if any), appends `frames` frames (from `first`), and
    // closes it without a checkpoint, as a recorder killed would.
    let session = |unsigned: u64, reason: Option<Reason>, first: u64, frames: u64| {
        let (mut l, rec) = Ledger::open(&d.0, 1 << 20).unwrap();
        assert_eq!(rec.unsigned, unsigned, "{reason:?}");
        if let Some(reason) = reason {
            l.set_signer(Some(Signer::new(key.clone(), 60)));
            assert!(l.checkpoint(first, reason));
        }
        append(&mut l, first, frames);
    };
    // Never signed: every record of the segment (the declaration, 3 frames).
    session(0, None, 1, 3);
    // Signed, then 2 frames, then killed.
    session(4, Some(Reason::Open), 4, 2);
    // Closed with a checkpoint: nothing after it.
    session(2, Some(Reason::Shutdown), 6, 0);
    assert_eq!(Ledger::open(&d.0, 1 << 20).unwrap().1.unsigned, 0);
}
