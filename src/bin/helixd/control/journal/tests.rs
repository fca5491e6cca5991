//! The journal's own tests: what survives a reopen, a rewrite and a
//! crash; what is refused at its name; what a failed write leaves.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use super::*;

fn ack(request: u64, log_seq: u64) -> Ack {
    Ack { version: 1, uid: 7, request, verdict: 1, op: 1, log_seq, ring_seq: 9, ..bytemuck::Zeroable::zeroed() }
}

/// A mark of `control.log` with nothing in flight.
fn at(logged_to: u64) -> LogMark {
    LogMark { logged_to, in_flight: BTreeSet::new() }
}

/// A journal in a folder of its own (kept while the value lives) with
/// one answer written: its path and the journal.
fn answered_once() -> (tempfile::TempDir, PathBuf, Journal) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("control.journal");
    let (mut j, _) = Journal::open(&path).unwrap();
    j.answered(&ack(1, 10), None).unwrap();
    (dir, path, j)
}

#[test]
fn answers_and_the_plant_survive_a_reopen_and_a_rewrite_and_a_torn_line_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("control.journal");
    let (mut j, rec) = Journal::open(&path).unwrap();
    assert!(rec.answers.is_empty());
    let set = Change { source: "telemetry".into(), op: Op::Set, stream: 2, value: 5.5 };
    j.answered(&ack(1, 10), Some(set)).unwrap();
    let pause = Change { source: "telemetry".into(), op: Op::Pause, stream: 0, value: 0.0 };
    j.answered(&ack(2, 11), Some(pause)).unwrap();
    j.answered(&Ack { verdict: 2, reason: 17, ..ack(3, 12) }, None).unwrap();
    drop(j);
    // A crash mid-append: half a line at the end.
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(br#"{"answer":{"uid":7,"req"#).unwrap();
    let (mut j, rec) = Journal::open(&path).unwrap();
    assert_eq!(rec.answers, [ack(1, 10), ack(2, 11), Ack { verdict: 2, reason: 17, ..ack(3, 12) }]);
    let want = SourceControl { paused: true, rate_hz: None, setpoints: [(2, 5.5)].into() };
    assert_eq!(lock(&j.plant()).get("telemetry"), Some(&want));
    j.rewrite(at(12), rec.answers[1..].iter().copied()).unwrap();
    drop(j);
    let (j, rec) = Journal::open(&path).unwrap();
    assert_eq!((rec.unresolved_from, rec.answers.len()), (12, 2));
    assert_eq!(lock(&j.plant()).get("telemetry"), Some(&want));
    drop(j);
    // A whole line that is not one is an error, named.
    std::fs::write(&path, "{\"mark\":{\"unresolved_from\":1,\"plant\":{}}}\nnonsense\n").unwrap();
    let e = Journal::open(&path).err().unwrap();
    assert!(format!("{e:#}").contains("line 2: not a journal line"), "{e:#}");
}

#[test]
fn the_mark_and_the_answers_after_it_say_what_was_answered_and_the_answers_before_it_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("control.journal");
    let (mut j, rec) = Journal::open(&path).unwrap();
    assert!(!rec.answered(0), "a new journal says nothing was answered");
    // The window's answers (for repeats) name records of a control.log
    // that may have been made again since: 500 here.
    let mark = LogMark { logged_to: 20, in_flight: [12, 15].into() };
    j.rewrite(mark.clone(), [ack(1, 500), ack(2, 11)].into_iter()).unwrap();
    j.answered(&ack(3, 15), None).unwrap();
    j.answered(&ack(4, 21), None).unwrap();
    drop(j);
    let (_, rec) = Journal::open(&path).unwrap();
    assert_eq!((rec.log_mark.as_ref(), rec.unresolved_from), (Some(&mark), 12));
    assert_eq!(rec.answers.iter().map(|a| a.request).collect::<Vec<_>>(), [1, 2, 3, 4], "all are the window's");
    let answered: Vec<u64> = (0..600).filter(|&seq| rec.answered(seq)).collect();
    let want: Vec<u64> = (0..20).filter(|&s| s != 12).chain([21]).collect();
    assert_eq!(answered, want, "in flight at the mark and unanswered: 12; logged since: 20, 22 on; 500 is not");
    // A mark a helixd before `logged_to` wrote says only where to begin.
    std::fs::write(&path, "{\"mark\":{\"unresolved_from\":3,\"plant\":{}}}\n").unwrap();
    let (_, rec) = Journal::open(&path).unwrap();
    assert_eq!((rec.marked, rec.unresolved_from, rec.answered(1)), (true, 3, false));
    assert_eq!(rec.log_mark, None);
}

#[test]
fn a_journal_another_helixd_has_open_is_refused_also_after_it_rewrote_it() {
    // Two helixd given one `[control] journal` (a copied configuration):
    // the second's start rewrote the file, and the first wrote on into
    // the one it had opened, no longer at the path.
    let (_dir, path, mut j) = answered_once();
    let refused = |why: &str| {
        let e = format!("{:#}", Journal::open(&path).err().unwrap_or_else(|| panic!("opened twice {why}")));
        assert!(e.contains(&path.display().to_string()) && e.contains("in use by another process"), "{e}");
    };
    refused("as it was");
    j.rewrite(at(11), [ack(1, 10)].into_iter()).unwrap();
    refused("after a rewrite");
    j.answered(&ack(2, 11), None).unwrap();
    drop(j);
    let (_j, rec) = Journal::open(&path).expect("free once its holder is gone");
    assert_eq!(rec.answers, [ack(1, 10), ack(2, 11)]);
}

#[test]
fn a_send_with_no_answer_after_it_is_recovered_and_one_answered_or_torn_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("control.journal");
    let (mut j, _) = Journal::open(&path).unwrap();
    j.sending(7, 1, 10).unwrap();
    j.answered(&ack(1, 10), None).unwrap();
    j.sending(7, 2, 11).unwrap();
    drop(j);
    let (mut j, rec) = Journal::open(&path).unwrap();
    assert_eq!(rec.sending, [((7, 2), 11)].into(), "only the send no answer follows");
    // The next start's rewrite (a mark) comes after recovery answered it.
    j.rewrite(at(12), rec.answers.into_iter()).unwrap();
    j.sending(7, 3, 12).unwrap();
    drop(j);
    // A `sending` line cut short was not synced, so nothing was sent.
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(br#"{"sending":{"uid":7,"request":4,"#).unwrap();
    let (_, rec) = Journal::open(&path).unwrap();
    assert_eq!(rec.sending, [((7, 3), 12)].into(), "the mark clears what came before it");
}

#[test]
fn a_name_taken_beside_the_journal_stops_no_rewrite_and_a_killed_rewrite_is_removed() {
    let (_dir, path, mut j) = answered_once();
    // The name the rewrite took: made first by another user (a folder
    // there, which helixd cannot remove), it failed every rewrite.
    let taken = PathBuf::from(format!("{}.{}.new", path.display(), std::process::id()));
    std::fs::create_dir(&taken).unwrap();
    j.rewrite(at(11), [ack(1, 10)].into_iter()).expect("rewritten under another name");
    drop(j);
    assert_eq!(Journal::open(&path).unwrap().1.answers, [ack(1, 10)]);
    // A rewrite a helixd killed meanwhile left is removed at the next
    // start; what is not such a file stays.
    let left = PathBuf::from(format!("{}.4242.{:016x}.new", path.display(), 7));
    std::fs::write(&left, "{").unwrap();
    Journal::open(&path).unwrap();
    assert!(!left.exists() && taken.exists());
}

#[test]
fn a_journal_others_may_write_or_a_link_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("control.journal");
    std::fs::write(&path, "").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let e = Journal::open(&path).err().unwrap();
    assert!(format!("{e:#}").contains("is not helixd's own file"), "{e:#}");
    // A link to a file that would do is refused too.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(Journal::open(&path).is_ok());
    let link = dir.path().join("link.journal");
    std::os::unix::fs::symlink(&path, &link).unwrap();
    assert!(Journal::open(&link).is_err(), "a link is followed");
}

/// `Journal::open(path)`'s error, within a watchdog: a test whose open
/// waits (a FIFO) fails with a message rather than hanging.
fn refused_within_a_watchdog(path: &Path) -> String {
    let (tx, rx) = mpsc::channel();
    let path = path.to_owned();
    std::thread::spawn(move || _ = tx.send(Journal::open(&path).err().map(|e| format!("{e:#}"))));
    let got = rx.recv_timeout(Duration::from_secs(60));
    got.expect("opening the journal still waits after 60 s").expect("refused")
}

#[test]
fn a_fifo_a_link_to_a_device_or_a_file_too_long_at_its_name_is_refused_without_waiting_or_reading_it() {
    let dir = tempfile::tempdir().unwrap();
    // A FIFO: a read of it waits for a writer that never comes.
    let fifo = dir.path().join("fifo.journal");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let e = refused_within_a_watchdog(&fifo);
    assert!(e.contains(&fifo.display().to_string()) && e.contains("a FIFO") && e.contains("not helixd's own"), "{e}");
    // A link to /dev/zero: a read of it never ends.
    let zero = dir.path().join("zero.journal");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let e = refused_within_a_watchdog(&zero);
    assert!(e.contains(&zero.display().to_string()) && e.contains("is a symbolic link"), "{e}");
    // A file of helixd's own longer than any journal (sparse: no room taken).
    let long = dir.path().join("long.journal");
    let f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&long).unwrap();
    f.set_len(MAX_BYTES + 1).unwrap();
    let e = refused_within_a_watchdog(&long);
    assert!(e.contains(&long.display().to_string()) && e.contains(&format!("({MAX_BYTES})")), "{e}");
}

#[test]
fn a_write_that_fails_is_cut_and_its_answer_written_before_the_next_line() {
    let (_dir, path, mut j) = answered_once();
    // Writes fail, and so does cutting what they left (the descriptor is
    // read only); a full disk left half a line.
    j.file = File::open(&path).unwrap();
    assert!(j.answered(&ack(2, 11), None).is_err());
    OpenOptions::new().append(true).open(&path).unwrap().write_all(br#"{"answer":{"uid":7,"req"#).unwrap();
    j.sending(7, 3, 12).expect_err("a send the journal cannot record");
    // Writable again: the half line is cut, the kept answer written first.
    j.file = OpenOptions::new().append(true).open(&path).unwrap();
    j.answered(&ack(3, 12), None).unwrap();
    drop(j);
    let text = std::fs::read_to_string(&path).unwrap();
    let (_, rec) = Journal::open(&path).unwrap_or_else(|e| panic!("{e:#}\n{text}"));
    assert_eq!(rec.answers, [ack(1, 10), ack(2, 11), ack(3, 12)], "{text}");
    assert!(rec.sending.is_empty(), "{text}");
}

#[test]
fn answers_kept_for_want_of_room_are_written_at_a_stop_if_there_is_room_then() {
    let (_dir, path, mut j) = answered_once();
    j.file = File::open(&path).unwrap();
    assert!(j.answered(&ack(2, 11), None).is_err());
    j.file = OpenOptions::new().append(true).open(&path).unwrap();
    j.close();
    drop(j);
    assert_eq!(Journal::open(&path).unwrap().1.answers, [ack(1, 10), ack(2, 11)]);
}

#[test]
fn a_rewrite_that_fails_is_tried_again_after_more_answers_and_a_full_journal_takes_no_more() {
    // On a tmpfs: thousands of synced lines cost nothing there.
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let path = dir.path().join("j/control.journal");
    std::fs::create_dir(path.parent().unwrap()).unwrap();
    let (mut j, _) = Journal::open(&path).unwrap();
    j.lines = 2 * WINDOW + 1;
    assert!(j.rewrite_due());
    // The folder gone: a rewrite cannot make its file; lines still go on.
    let away = dir.path().join("away");
    std::fs::rename(path.parent().unwrap(), &away).unwrap();
    assert!(j.rewrite(at(1), std::iter::empty()).is_err());
    for request in 0..REWRITE_RETRY as u64 {
        assert!(!j.rewrite_due(), "a failed rewrite tried again after {request} answers");
        j.answered(&ack(request + 1, request + 1), None).unwrap();
    }
    assert!(j.rewrite_due());
    std::fs::rename(&away, path.parent().unwrap()).unwrap();
    // Full: an answer is refused, kept, and in the rewrite.
    j.lines = MAX_LINES;
    let e = j.answered(&ack(9999, 9999), None).unwrap_err();
    assert!(format!("{e:#}").contains("full"), "{e:#}");
    j.rewrite(at(1), [ack(9999, 9999)].into_iter()).unwrap();
    // The rewritten file takes the next lines.
    j.answered(&ack(10_000, 10_000), None).unwrap();
    drop(j);
    assert_eq!(Journal::open(&path).unwrap().1.answers, [ack(9999, 9999), ack(10_000, 10_000)]);
}
