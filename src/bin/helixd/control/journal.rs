//! The control path's journal (docs/design.md, "The control path across a
//! restart"): every first answer helixd gives a command, and the plant
//! state the accepted ones made (setpoints, paused sources, rates), so a
//! restarted helixd answers a repeat with its first answer and restarts
//! its sources where the commands left them.
//!
//! One JSON object a line (`{"mark": {..}}`, `{"answer": {..}}`,
//! `{"sending": {..}}`), appended and `fdatasync`ed before the answer is
//! published: a `mark` (the plant state and the `control.log` sequence
//! below which every record was answered), then `answer`s. Before a
//! command goes to a UDP source's instrument, a `sending` line says so: a
//! helixd killed between it and the answer does not know whether the
//! datagram left, and does not send it again (`recover.rs`). A line cut
//! short by a crash (no newline at the end of the file) was never
//! answered (nor sent): it is ignored. Past `2 x WINDOW` lines the journal is
//! rewritten (a new file renamed over it) as one mark and the window's
//! answers; so is it at every start.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::window::WINDOW;
use helix::control::{Ack, Op, ACK_REPEAT, FORMAT_VERSION};

/// What the accepted commands made of one source.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceControl {
    /// Paused by a `pause` (until a `resume`).
    #[serde(default)]
    pub paused: bool,
    /// The rate a `rate` set, Hz per stream (none: the configured one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_hz: Option<f64>,
    /// Streams following a setpoint, and the setpoint.
    #[serde(default)]
    pub setpoints: BTreeMap<u32, f64>,
}

/// The plant state by source (the ring it writes).
pub type PlantState = BTreeMap<String, SourceControl>;

/// The plant state as the daemon and the control thread share it.
pub type Plant = Arc<Mutex<PlantState>>;

/// Records an applied command in `plant`.
pub fn apply(plant: &mut PlantState, source: &str, op: Op, stream: u32, value: f64) {
    let s = plant.entry(source.to_owned()).or_default();
    match op {
        Op::Set => _ = s.setpoints.insert(stream, value),
        Op::Release => _ = s.setpoints.remove(&stream),
        Op::Pause => s.paused = true,
        Op::Resume => s.paused = false,
        Op::Rate => s.rate_hz = Some(value),
    }
}

/// An accepted command's effect on the plant, as journaled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub source: String,
    pub op: Op,
    #[serde(default)]
    pub stream: u32,
    #[serde(default)]
    pub value: f64,
}

/// One line of the journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Line {
    /// Everything before: the plant state, and the first `control.log`
    /// sequence that may hold a record not answered yet.
    Mark { unresolved_from: u64, plant: PlantState },
    /// A first answer; an applied command's change.
    Answer {
        uid: u32,
        request: u64,
        verdict: u16,
        reason: u16,
        op: u16,
        log_seq: u64,
        ring_seq: u64,
        stream_seq: u64,
        /// The answer's flags (`ACK_FORWARDED`); a repeat's answer carries
        /// them as the first one did.
        #[serde(default)]
        flags: u16,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        change: Option<Change>,
    },
    /// A command about to be sent to its instrument; its answer follows.
    Sending { uid: u32, request: u64, log_seq: u64 },
}

/// What a start finds in the journal.
#[derive(Debug, Default)]
pub struct Recovered {
    /// The answers, oldest first.
    pub answers: Vec<Ack>,
    /// `control.log` records from this sequence on may be unanswered.
    pub unresolved_from: u64,
    /// Commands (uid, request) a `sending` line names and no answer
    /// follows, with their audit records' sequences: helixd stopped while
    /// sending them, before or after the datagram left.
    pub sending: BTreeMap<(u32, u64), u64>,
}

/// The open journal.
pub struct Journal {
    path: PathBuf,
    file: File,
    lines: usize,
    plant: Plant,
}

impl Journal {
    /// Opens (or creates) the journal at `path`: what it holds, and the
    /// plant state (shared with the daemon, which restores its sources
    /// from it).
    pub fn open(path: &Path) -> Result<(Journal, Recovered)> {
        let (plant, recovered, lines) = match std::fs::read(path) {
            Ok(bytes) => {
                let (plant, recovered) = read(path, &bytes)?;
                (plant, recovered, bytes.iter().filter(|&&b| b == b'\n').count())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (PlantState::new(), Recovered::default(), 0),
            Err(e) => return Err(e).with_context(|| format!("control journal {}", path.display())),
        };
        let file = append_to(path)?;
        remove_leftovers(path);
        Ok((Journal { path: path.to_owned(), file, lines, plant: Arc::new(Mutex::new(plant)) }, recovered))
    }

    /// The plant state.
    pub fn plant(&self) -> Plant {
        self.plant.clone()
    }

    /// Journals a first answer (and its change to the plant, applied to
    /// the plant state here); durable when this returns.
    pub fn answered(&mut self, ack: &Ack, change: Option<Change>) -> Result<()> {
        if let Some(c) = &change {
            apply(&mut lock(&self.plant), &c.source, c.op, c.stream, c.value);
        }
        self.append(&answer_line(ack, change))
    }

    /// Journals that the command `request` of `uid` (audit record
    /// `log_seq`) is about to be sent to its instrument; durable when this
    /// returns. Its answer is journaled next, with [`Journal::answered`].
    pub fn sending(&mut self, uid: u32, request: u64, log_seq: u64) -> Result<()> {
        self.append(&Line::Sending { uid, request, log_seq })
    }

    /// Appends `line` and syncs it.
    fn append(&mut self, line: &Line) -> Result<()> {
        let mut text = serde_json::to_string(line)?;
        text.push('\n');
        self.file.write_all(text.as_bytes()).and_then(|()| self.file.sync_data()).with_context(|| self.what())?;
        self.lines += 1;
        Ok(())
    }

    /// Whether the journal is due to be rewritten.
    pub fn is_long(&self) -> bool {
        self.lines > 2 * WINDOW
    }

    /// Rewrites the journal as a mark and `answers` (a new file, synced,
    /// renamed over the old one).
    pub fn rewrite(&mut self, unresolved_from: u64, answers: impl Iterator<Item = Ack>) -> Result<()> {
        let mut out = std::io::BufWriter::new(rewrite_file(&self.path)?);
        let mark = Line::Mark { unresolved_from, plant: lock(&self.plant).clone() };
        let mut lines = 1;
        serde_json::to_writer(&mut out, &mark)?;
        out.write_all(b"\n")?;
        for a in answers {
            serde_json::to_writer(&mut out, &answer_line(&a, None))?;
            out.write_all(b"\n")?;
            lines += 1;
        }
        let tmp = out.into_inner().map_err(|e| e.into_error())?;
        tmp.as_file().sync_all().with_context(|| format!("{}", tmp.path().display()))?;
        tmp.persist(&self.path).with_context(|| self.what())?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir).and_then(|d| d.sync_all()).with_context(|| format!("{}", dir.display()))?;
        }
        self.file = append_to(&self.path)?;
        self.lines = lines;
        Ok(())
    }

    fn what(&self) -> String {
        format!("control journal {}", self.path.display())
    }
}

/// The journal line of a first answer.
fn answer_line(a: &Ack, change: Option<Change>) -> Line {
    let (uid, request, verdict, reason, op) = (a.uid, a.request, a.verdict, a.reason, a.op);
    let (log_seq, ring_seq, stream_seq) = (a.log_seq, a.ring_seq, a.stream_seq);
    // A first answer's own flags: never the repeat bit.
    let flags = a.flags & !ACK_REPEAT;
    Line::Answer { uid, request, verdict, reason, op, log_seq, ring_seq, stream_seq, flags, change }
}

/// Opens `path` for appending (created mode 0600). It must be helixd's:
/// not a link, owned by its user, writable by nobody else (under
/// `/dev/shm` anyone may plant a file by that name first).
fn append_to(path: &Path) -> Result<File> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let what = || format!("control journal {}", path.display());
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .with_context(what)?;
    let meta = file.metadata().with_context(what)?;
    let me = helix::process::my_uid();
    if !meta.is_file() || meta.uid() != me || meta.mode() & 0o022 != 0 {
        bail!(
            "{} is not helixd's own file (owner uid {}, mode {:o}; helixd runs as uid {me}): remove it, or set \
             [control] journal",
            what(),
            meta.uid(),
            meta.mode() & 0o7777
        );
    }
    Ok(file)
}

/// A new file beside the journal at `path` to rewrite it into (mode
/// 0600, made exclusively), `<name>.<random>.new`, removed if the rewrite
/// fails. Beside the rings (in /dev/shm) anyone may make files, and
/// nobody else may remove them: a name helixd could guess would let any
/// user keep every rewrite from being made, and helixd from starting (it
/// rewrites at every start).
fn rewrite_file(path: &Path) -> Result<tempfile::NamedTempFile> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    tempfile::Builder::new()
        .prefix(&format!("{name}."))
        .suffix(".new")
        .tempfile_in(dir)
        .with_context(|| format!("control journal {}: a file beside it to rewrite it into", path.display()))
}

/// Removes the rewrites of the journal at `path` that a helixd killed
/// while it made them left behind (this user's files only: nobody may
/// remove another's there).
fn remove_leftovers(path: &Path) {
    use std::os::unix::fs::MetadataExt;
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else { return };
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let me = helix::process::my_uid();
    for e in entries.flatten() {
        let file = e.file_name();
        let Some(rest) = file.to_str().and_then(|f| f.strip_prefix(name)?.strip_prefix('.')) else { continue };
        let ours = e.metadata().is_ok_and(|m| m.is_file() && m.uid() == me);
        if ours
            && rest.ends_with(".new")
            && rest[..rest.len() - 4].chars().all(|c| c.is_ascii_alphanumeric() || c == '.')
        {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// The journal's lines: the plant state and what it recovers. The last
/// line, if the file does not end with a newline, was cut short by a
/// crash and is ignored; any other line that is not one is an error.
fn read(path: &Path, bytes: &[u8]) -> Result<(PlantState, Recovered)> {
    let whole = match bytes.iter().rposition(|&b| b == b'\n') {
        Some(end) => &bytes[..=end],
        None => &bytes[..0],
    };
    let (mut plant, mut rec) = (PlantState::new(), Recovered::default());
    for (i, text) in whole.split(|&b| b == b'\n').enumerate().filter(|(_, t)| !t.is_empty()) {
        let line: Line = serde_json::from_slice(text)
            .with_context(|| format!("control journal {}, line {}: not a journal line", path.display(), i + 1))?;
        match line {
            // A mark is written with no send under way.
            Line::Mark { unresolved_from, plant: p } => {
                (plant, rec.unresolved_from) = (p, unresolved_from);
                rec.sending.clear();
            }
            Line::Sending { uid, request, log_seq } => _ = rec.sending.insert((uid, request), log_seq),
            Line::Answer { uid, request, verdict, reason, op, log_seq, ring_seq, stream_seq, flags, change } => {
                if let Some(c) = change {
                    apply(&mut plant, &c.source, c.op, c.stream, c.value);
                }
                rec.sending.remove(&(uid, request));
                let version = FORMAT_VERSION as u32;
                let ack = Ack { version, uid, request, verdict, reason, op, flags, log_seq, ring_seq, stream_seq };
                rec.answers.push(ack);
            }
        }
    }
    if rec.answers.len() > 4 * WINDOW {
        bail!("control journal {}: {} answers, more than it ever holds", path.display(), rec.answers.len());
    }
    Ok((plant, rec))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(request: u64, log_seq: u64) -> Ack {
        Ack { version: 1, uid: 7, request, verdict: 1, op: 1, log_seq, ring_seq: 9, ..bytemuck::Zeroable::zeroed() }
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
        j.rewrite(12, rec.answers[1..].iter().copied()).unwrap();
        let (j, rec) = Journal::open(&path).unwrap();
        assert_eq!((rec.unresolved_from, rec.answers.len()), (12, 2));
        assert_eq!(lock(&j.plant()).get("telemetry"), Some(&want));
        // A whole line that is not one is an error, named.
        std::fs::write(&path, "{\"mark\":{\"unresolved_from\":1,\"plant\":{}}}\nnonsense\n").unwrap();
        let e = Journal::open(&path).err().unwrap();
        assert!(format!("{e:#}").contains("line 2: not a journal line"), "{e:#}");
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
        j.rewrite(12, rec.answers.into_iter()).unwrap();
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
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.journal");
        let (mut j, _) = Journal::open(&path).unwrap();
        j.answered(&ack(1, 10), None).unwrap();
        // The name the rewrite took: made first by another user (a folder
        // there, which helixd cannot remove), it failed every rewrite.
        let taken = PathBuf::from(format!("{}.{}.new", path.display(), std::process::id()));
        std::fs::create_dir(&taken).unwrap();
        j.rewrite(11, [ack(1, 10)].into_iter()).expect("rewritten under another name");
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
}
