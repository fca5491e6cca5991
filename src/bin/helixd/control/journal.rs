//! The control path's journal (docs/design.md, "The control path across a
//! restart"): every first answer helixd gives a command, and the plant
//! state the accepted ones made (setpoints, paused sources, rates), so a
//! restarted helixd answers a repeat with its first answer and restarts
//! its sources where the commands left them.
//!
//! One JSON object a line (`{"mark": {..}}`, `{"answer": {..}}`,
//! `{"sending": {..}}`), appended and `fdatasync`ed before the answer is
//! published: `answer`s and a `mark` (the plant state, and which
//! `control.log` records were answered: all below `logged_to` but those
//! `in_flight`), which a rewrite writes after the window's answers; then
//! the `answer`s given since. Before a command goes to a UDP source's instrument, a
//! `sending` line says so: a helixd killed between it and the answer
//! does not know whether the datagram left, and does not send it again
//! (`recover.rs`). A line cut short by a crash (no newline at the end of
//! the file) was never answered (nor sent): it is ignored. Past
//! `2 x WINDOW` lines the journal is rewritten (a new file renamed over
//! it) as the window's answers and then a mark; so is it at every start.
//! What was answered is the mark and the answers after it, whatever the
//! window kept: the window forgets fairly among uids (`window.rs`), not
//! in the order `control.log` overwrites.
//!
//! A line a failed write (a full disk) left in part is cut before another
//! is written, so every line before the last is whole; an answer that
//! could not be written is kept and written before the next line. The
//! journal never grows past [`MAX_LINES`] lines or [`MAX_BYTES`] bytes,
//! what a start reads at most ([`file`]: the file is helixd's own,
//! checked before a byte of it is read).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::window::WINDOW;
use helix::control::{Ack, Op, ACK_REPEAT};

mod file;

/// Lines a journal holds at most: twice what it holds when it is due to
/// be rewritten (a rewrite that keeps failing leaves it growing).
pub const MAX_LINES: usize = 4 * WINDOW;
/// Bytes a journal holds at most: [`MAX_LINES`] lines of 512 bytes (an
/// answer's is at most about 330), and as much again for the mark's plant
/// state. 256 MiB; a start refuses a longer file, naming it.
pub const MAX_BYTES: u64 = 2 * 512 * MAX_LINES as u64;
/// Answers journaled after a rewrite failed before it is tried again: a
/// rewrite copies the window's answers (about 13 MB), too much to try
/// at every answer on a disk that has no room for it.
const REWRITE_RETRY: usize = 4096;
/// Answers that could not be written kept to write later, at most: past
/// that, only a rewrite (of the window's answers) holds them all.
const BACKLOG: usize = 4096;

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
    /// The plant state, and what was answered: every `control.log`
    /// record below `logged_to` but those `in_flight`. `unresolved_from`
    /// is the first of those that may not be (the least in flight, else
    /// `logged_to`); a mark of a helixd before `logged_to` says only it.
    Mark {
        unresolved_from: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        logged_to: Option<u64>,
        #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
        in_flight: BTreeSet<u64>,
        plant: PlantState,
    },
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

/// Where `control.log` stood at a mark: which of its records were
/// answered then.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogMark {
    /// The sequence the next record took.
    pub logged_to: u64,
    /// The records of the commands on their way then (not answered).
    pub in_flight: BTreeSet<u64>,
}

impl LogMark {
    /// The first record that may not be answered.
    pub fn unresolved_from(&self) -> u64 {
        self.in_flight.first().copied().unwrap_or(self.logged_to)
    }

    /// Whether the record at `seq` was answered (or was no command to
    /// answer) by the mark.
    fn answered(&self, seq: u64) -> bool {
        seq < self.logged_to && !self.in_flight.contains(&seq)
    }
}

/// What a start finds in the journal.
#[derive(Debug, Default)]
pub struct Recovered {
    /// The answers, oldest first.
    pub answers: Vec<Ack>,
    /// `control.log` records from this sequence on may be unanswered.
    pub unresolved_from: u64,
    /// What the last mark says was answered (`None`: a mark of a helixd
    /// before `logged_to`, or none).
    pub log_mark: Option<LogMark>,
    /// The records the answers after that mark answered.
    pub answered_since: BTreeSet<u64>,
    /// The journal holds a mark, so `unresolved_from` says where to
    /// begin on `control.log`. Without one (a journal that did not exist:
    /// removed, or another path configured) it does not say which records
    /// were answered (`recover.rs`).
    pub marked: bool,
    /// Commands (uid, request) a `sending` line names and no answer
    /// follows, with their audit records' sequences: helixd stopped while
    /// sending them, before or after the datagram left.
    pub sending: BTreeMap<(u32, u64), u64>,
}

impl Recovered {
    /// Whether the journal says the `control.log` record at `seq` was
    /// answered: by its mark, or by an answer after it. (False for a
    /// journal of a helixd before `logged_to`: the window decides then.)
    pub fn answered(&self, seq: u64) -> bool {
        self.log_mark.as_ref().is_some_and(|m| m.answered(seq) || self.answered_since.contains(&seq))
    }
}

/// The open journal.
pub struct Journal {
    path: PathBuf,
    /// Its file, written at `len` (`pwrite`, never at the descriptor's
    /// offset): the descriptor `open` made, or the one a rewrite made the
    /// new file with.
    file: File,
    /// The length of its whole lines: where the next line goes.
    len: u64,
    lines: usize,
    /// What a failed write left past `len` could not be cut then: it is
    /// cut before the next line is written.
    torn: bool,
    /// Answers' lines that could not be written, oldest first: written
    /// before the next line.
    backlog: Vec<u8>,
    backlog_lines: usize,
    /// More answers could not be written than the backlog keeps: a
    /// rewrite is due.
    lost: bool,
    /// Answers to journal before a rewrite is tried again (one failed).
    rewrite_wait: usize,
    plant: Plant,
}

impl Journal {
    /// Opens (or creates) the journal at `path`: what it holds, and the
    /// plant state (shared with the daemon, which restores its sources
    /// from it).
    pub fn open(path: &Path) -> Result<(Journal, Recovered)> {
        let (file, bytes) = file::open(path)?;
        let (plant, recovered) = file::read(path, &bytes)?;
        // A line cut short at the end is cut before the next is written.
        let whole = file::whole(&bytes);
        let lines = bytes[..whole].iter().filter(|&&b| b == b'\n').count();
        file::remove_leftovers(path);
        let journal = Journal {
            path: path.to_owned(),
            file,
            len: whole as u64,
            lines,
            torn: whole < bytes.len(),
            backlog: Vec::new(),
            backlog_lines: 0,
            lost: false,
            rewrite_wait: 0,
            plant: Arc::new(Mutex::new(plant)),
        };
        Ok((journal, recovered))
    }

    /// The plant state.
    pub fn plant(&self) -> Plant {
        self.plant.clone()
    }

    /// Where the journal is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Journals a first answer (and its change to the plant, applied to
    /// the plant state here); durable when this returns. If it cannot be,
    /// the answer is kept and written before the next line.
    pub fn answered(&mut self, ack: &Ack, change: Option<Change>) -> Result<()> {
        if let Some(c) = &change {
            apply(&mut lock(&self.plant), &c.source, c.op, c.stream, c.value);
        }
        self.rewrite_wait = self.rewrite_wait.saturating_sub(1);
        let mut text = serde_json::to_vec(&answer_line(ack, change))?;
        text.push(b'\n');
        let written = self.write(&text);
        if written.is_err() {
            if self.backlog_lines < BACKLOG {
                self.backlog.extend_from_slice(&text);
                self.backlog_lines += 1;
            } else {
                self.lost = true;
            }
        }
        written
    }

    /// Journals that the command `request` of `uid` (audit record
    /// `log_seq`) is about to be sent to its instrument; durable when this
    /// returns. Its answer is journaled next, with [`Journal::answered`].
    pub fn sending(&mut self, uid: u32, request: u64, log_seq: u64) -> Result<()> {
        let mut text = serde_json::to_vec(&Line::Sending { uid, request, log_seq })?;
        text.push(b'\n');
        self.write(&text)
    }

    /// Writes the backlog and `text` (whole lines) after the whole lines,
    /// and syncs them. A write that fails is cut: the next line must not
    /// be glued to what it left.
    fn write(&mut self, text: &[u8]) -> Result<()> {
        let lines = self.lines + self.backlog_lines + usize::from(!text.is_empty());
        let len = self.len + (self.backlog.len() + text.len()) as u64;
        if lines > MAX_LINES || len > MAX_BYTES {
            bail!("{}: full ({MAX_LINES} lines or {MAX_BYTES} bytes) until it is rewritten", self.what());
        }
        if self.torn {
            let cut = self.file.set_len(self.len);
            cut.with_context(|| format!("{}: cutting what a failed write left", self.what()))?;
            self.torn = false;
        }
        let all = [self.backlog.as_slice(), text].concat();
        if let Err(e) = self.file.write_all_at(&all, self.len).and_then(|()| self.file.sync_data()) {
            self.torn = self.file.set_len(self.len).is_err();
            return Err(e).with_context(|| self.what());
        }
        (self.len, self.lines, self.backlog_lines) = (len, lines, 0);
        self.backlog.clear();
        Ok(())
    }

    /// Writes the answers kept for want of room, if there is room now (at a
    /// stop); says how many are lost if not. (Found by review: they went
    /// unsaid, and a restart answered a forwarded one of them `send_failed`
    /// again, and took a repeat of another as a new command.)
    pub fn close(&mut self) {
        let (kept, lost) = (self.backlog_lines, self.lost);
        if kept == 0 && !lost {
            return;
        }
        let earlier = if lost { ", with others before them that could not even be kept" } else { "" };
        match self.write(&[]) {
            Ok(()) if lost => tracing::error!("{}: answers were lost while it could not be written", self.what()),
            Ok(()) => tracing::info!("{}: wrote the {kept} answers kept while it could not be written", self.what()),
            Err(e) => tracing::error!("{e:#}: the {kept} answers kept while it could not be written are lost{earlier}"),
        }
    }

    /// Whether the journal is due to be rewritten: it is long (or lost
    /// answers), and no rewrite failed in the last [`REWRITE_RETRY`]
    /// answers.
    pub fn rewrite_due(&self) -> bool {
        (self.lines > 2 * WINDOW || self.lost) && self.rewrite_wait == 0
    }

    /// Rewrites the journal as `answers` (the window's, for repeats) and
    /// then a mark of `log` (a new file, synced, renamed over the old
    /// one): the answers before the mark say nothing of what `control.log`
    /// holds now (the log may have been made again since). One that fails
    /// is tried again when [`Journal::rewrite_due`] says.
    pub fn rewrite(&mut self, log: LogMark, answers: impl Iterator<Item = Ack>) -> Result<()> {
        let done = self.write_anew(log, answers);
        self.rewrite_wait = if done.is_err() { REWRITE_RETRY } else { 0 };
        done
    }

    fn write_anew(&mut self, log: LogMark, answers: impl Iterator<Item = Ack>) -> Result<()> {
        let mut out = std::io::BufWriter::new(file::rewrite_file(&self.path)?);
        let what = format!("{}: rewriting it into {}", self.what(), out.get_ref().path().display());
        let unresolved_from = log.unresolved_from();
        let plant = lock(&self.plant).clone();
        let mark = Line::Mark { unresolved_from, logged_to: Some(log.logged_to), in_flight: log.in_flight, plant };
        let (mut len, mut lines) = (0, 0);
        for line in answers.map(|a| answer_line(&a, None)).chain(std::iter::once(mark)) {
            let mut text = serde_json::to_vec(&line)?;
            text.push(b'\n');
            (len, lines) = (len + text.len() as u64, lines + 1);
            if len > MAX_BYTES || lines > MAX_LINES {
                bail!("{what}: more than {MAX_LINES} lines or {MAX_BYTES} bytes");
            }
            out.write_all(&text).with_context(|| what.clone())?;
        }
        let tmp = out.into_inner().map_err(|e| e.into_error()).with_context(|| what.clone())?;
        tmp.as_file().sync_all().with_context(|| what.clone())?;
        file::lock(tmp.as_file()).with_context(|| what.clone())?;
        let new = tmp.persist(&self.path).with_context(|| self.what())?;
        // Lines go to the new file through this descriptor: opened again
        // by name, a failure would leave them going to the old file, gone.
        (self.file, self.len, self.lines, self.torn, self.lost) = (new, len, lines, false, false);
        (self.backlog, self.backlog_lines) = (Vec::new(), 0);
        file::sync_dir(&self.path)
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests;
