//! A command's way after its verdict: its audit record on `control.log`,
//! the wait for the audit reader, the hand-over to its source, the answer.

use std::sync::atomic::Ordering;

use tracing::{debug, error, info, warn};

use super::journal::{Change, LogMark};
use super::{Flow, Incoming, Pending};
use crate::hal::plant::Directive;
use helix::control::{Ack, Reason, ACK_REPEAT, FORMAT_VERSION, KIND_ACK, KIND_LOG};

impl Flow {
    /// Publishes the queued audit records in order, as far as
    /// `control.log` has room now (it never waits: a full log, its gating
    /// reader behind, leaves the rest queued for the next turn). Then each
    /// rejected command and each repeat is answered; an accepted one waits
    /// for the audit reader.
    pub(super) fn publish_log(&mut self) {
        while let Some(inc) = self.unlogged.front() {
            // Never over a waiting command's record, with a gating reader
            // on the log or not (`log_room`).
            if self.audit_room() == 0 {
                return;
            }
            let log_seq = match self.log.try_claim(1) {
                Ok(mut claim) => {
                    let seq = claim.push_kind(KIND_LOG, bytemuck::bytes_of(&inc.log));
                    claim.commit();
                    match seq {
                        Ok(seq) => seq,
                        Err(e) => {
                            warn!("control: cannot publish on control.log: {e}");
                            return;
                        }
                    }
                }
                Err(_) => return,
            };
            let inc = self.unlogged.pop_front().expect("front exists");
            self.logged(inc, log_seq);
        }
    }

    /// What follows a record's publication on the log at `log_seq`.
    fn logged(&mut self, inc: Incoming, log_seq: u64) {
        let (uid, request) = (inc.log.uid, inc.command.as_ref().map_or(0, |c| c.request));
        match (inc.repeat, inc.command, inc.target) {
            // The first's answer as the window holds it now, not as it was
            // when the repeat was decided: a repeat that waited for room on
            // the log may be logged after its first was answered, and would
            // wait for an answer already given. (One the window forgot
            // since, as it had it then.)
            (Some(then), _, _) => match self.window.seen(uid, request).and_then(|now| now.ack).or(then.ack) {
                Some(first) => self.publish(Ack { flags: first.flags | ACK_REPEAT, ..first }, 0),
                None => self.window.wait(uid, request),
            },
            (None, Some(command), Some(target)) if inc.verdict.is_ok() => {
                let token = super::token();
                let (state, instrument) = (Some(target.state), target.instrument);
                self.audit.push_back(Pending { uid, command, log_seq, token, state, instrument });
            }
            (None, command, _) => {
                let reason = inc.verdict.err().unwrap_or(Reason::SourceDown);
                self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                let raw = inc.log.command();
                // The command's op, 0 for a record that is none (docs/abi.md
                // §12.4; found by review: the garbage's bytes 2..4 were
                // copied if they looked like an op).
                let op = if command.is_some() { raw.op } else { 0 };
                let request = if inc.log.len as usize >= 16 { raw.request } else { 0 };
                // Counted in STATUS; a flood of garbage must not flood the log.
                debug!("control: uid {uid} pid {} request {request}: rejected ({reason})", inc.log.pid);
                let (verdict, reason) = helix::control::wire(Err(reason));
                let ack = Ack { uid, request, verdict, reason, op, log_seq, ..ack0() };
                // Only commands are in the window (and so in the journal):
                // a record that is none must not stand for the command it
                // names the request of.
                match command {
                    Some(_) => self.answer_first(ack, None),
                    None => self.publish(ack, 0),
                }
            }
        }
    }

    /// Hands to their sources the accepted commands whose audit records the
    /// audit reader has read (all, in order, if there is none).
    pub(super) fn release_audited(&mut self) {
        let Some(front) = self.audit.front() else { return };
        let read = match &self.audit_reader {
            None => u64::MAX,
            Some(name) => self.audit_position(name),
        };
        if front.log_seq >= read {
            return;
        }
        while self.audit.front().is_some_and(|p| p.log_seq < read) {
            let p = self.audit.pop_front().expect("front exists");
            if let Some(to) = p.instrument {
                self.forward(&p, to);
                continue;
            }
            let c = &p.command;
            let d = Directive { token: p.token, op: c.op, stream: c.stream, value: c.value };
            if let Some(state) = &p.state {
                state.inbox.post(d);
            }
            self.applying.push(p);
        }
    }

    /// The next sequence the audit reader `name` will read on
    /// `control.log`: the least cursor of its live gating entries (0 if it
    /// has none: then nothing passes).
    fn audit_position(&self, name: &str) -> u64 {
        let stats = self.log_view.stats();
        let entries = stats.readers.iter().filter(|r| r.name == name && r.alive && r.gating);
        entries.map(|r| r.cursor).min().unwrap_or(0)
    }

    /// Answers the commands their sources have applied (or will never
    /// apply: the source stopped).
    pub(super) fn collect_effects(&mut self) {
        if self.applying.is_empty() {
            return;
        }
        // Whether each source had stopped, looked at before its effects
        // are taken: a source that applies a command and then stops has
        // its effect taken with them (looked at after, the command would
        // be answered `source_down` though applied).
        let mut closed: Vec<bool> =
            self.applying.iter().map(|p| p.state.as_ref().is_none_or(|s| s.inbox.is_closed())).collect();
        let mut effects = Vec::new();
        for p in &self.applying {
            if let Some(state) = &p.state {
                effects.extend(state.inbox.effects());
            }
        }
        let mut i = 0;
        while i < self.applying.len() {
            let p = &self.applying[i];
            let effect = effects.iter().find(|e| e.token == p.token);
            if effect.is_none() && !closed[i] {
                i += 1;
                continue;
            }
            // In order (not swap_remove): answers are journaled in the
            // order their commands were logged, so that a kill between two
            // journal lines leaves a prefix of what was applied.
            closed.remove(i);
            let p = self.applying.remove(i);
            let c = &p.command;
            let mut ack = Ack { uid: p.uid, request: c.request, op: c.op as u16, log_seq: p.log_seq, ..ack0() };
            let mut change = None;
            match effect {
                Some(e) => {
                    (ack.verdict, ack.reason) = helix::control::wire(Ok(()));
                    (ack.ring_seq, ack.stream_seq) = (e.ring_seq, e.stream_seq);
                    self.stats.applied.fetch_add(1, Ordering::Relaxed);
                    change = Some(Change { source: c.source.clone(), op: c.op, stream: c.stream, value: c.value });
                    self.said[0].one(format!(
                        "control: uid {} request {}: {} {} applied from sequence {}",
                        p.uid,
                        c.request,
                        c.op.as_str(),
                        c.source,
                        e.ring_seq
                    ));
                }
                None => {
                    (ack.verdict, ack.reason) = helix::control::wire(Err(Reason::SourceDown));
                    self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                    self.said[1].one(format!("control: request {}: its source stopped before applying it", c.request));
                }
            }
            self.answer_first(ack, change);
        }
    }

    /// A command's first answer: kept in the window, journaled (with the
    /// `change` an applied command made to the plant), then published, to
    /// the repeats that waited for it too. The window first: a journal
    /// rewritten on the way writes what the window holds.
    pub(super) fn answer_first(&mut self, ack: Ack, change: Option<Change>) {
        let repeats = self.window.answered(&ack);
        self.journal_answer(&ack, change);
        self.publish(ack, repeats);
    }

    /// Writes `ack` in the journal before it is published (rewriting the
    /// journal when it is due). A journal that cannot be written is
    /// logged (once until it can again); the answer goes out anyway, and
    /// a helixd restarted then may not know it.
    fn journal_answer(&mut self, ack: &Ack, change: Option<Change>) {
        let mut result = self.journal.answered(ack, change);
        // Tried whether or not the line was written: a journal full until
        // it is rewritten takes no more lines. Recovery rewrites it once
        // it has finished every record (`recover.rs`).
        if !self.recovering && self.journal.rewrite_due() {
            match self.journal.rewrite(self.log_mark(), self.window.answers()) {
                // The window holds the answer: the rewrite has it.
                Ok(()) => result = Ok(()),
                Err(e) if result.is_ok() => {
                    warn!("control: {e:#}; the journal grows meanwhile, and is rewritten in a few thousand answers")
                }
                Err(_) => {}
            }
        }
        self.journaled(result);
    }

    /// Logs a journal write that failed (once until one succeeds again),
    /// and the first that succeeds after.
    pub(super) fn journaled(&mut self, result: anyhow::Result<()>) {
        match result {
            Ok(()) if self.journal_failing => {
                info!("control: the journal is written again");
                self.journal_failing = false;
            }
            Ok(()) => {}
            Err(e) if !self.journal_failing => {
                error!(
                    "control: {e:#}; until it is written again, answers are not durable across a restart and \
                     commands for instruments are not sent"
                );
                self.journal_failing = true;
            }
            Err(_) => {}
        }
    }

    /// Where `control.log` stands: the next sequence, and the records of
    /// the commands in flight (every other record before it is answered).
    pub(super) fn log_mark(&self) -> LogMark {
        let in_flight = self.audit.iter().chain(&self.applying).map(|p| p.log_seq).collect();
        LogMark { logged_to: self.log.next_seq(), in_flight }
    }

    /// Publishes an answer (`control.acks` overwrites: this never waits),
    /// and it again, marked a repeat, for `repeats` that waited for it.
    fn publish(&mut self, ack: Ack, repeats: u32) {
        for a in std::iter::once(ack).chain((0..repeats).map(|_| Ack { flags: ack.flags | ACK_REPEAT, ..ack })) {
            if let Err(e) = self.acks.publish_kind(KIND_ACK, bytemuck::bytes_of(&a)) {
                warn!("control: cannot publish on control.acks: {e}");
            }
        }
    }
}

/// An answer with only its version set.
pub(super) fn ack0() -> Ack {
    Ack { version: FORMAT_VERSION as u32, ..bytemuck::Zeroable::zeroed() }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Arc;

    use super::super::{forward::Forwarder, judge::Judge, stall::LogStalls, window::Window, ControlStats, Journal};
    use super::*;
    use crate::config::control::ControlConfig;
    use helix::control::{Command, LogRecord, Reason, KIND_COMMAND};
    use helix::{Namespace, Policy, ReaderOptions, Ring, RingOptions, Start, TryReadError};

    /// Takes a record from uid 1000 as `Path::take` does.
    fn take(flow: &mut Flow, kind: u32, payload: &[u8]) {
        let mut log = LogRecord::new(kind, payload, Ok(()));
        (log.uid, log.len) = (1000, payload.len() as u32);
        let incoming = flow.decide(log, payload);
        flow.unlogged.push_back(incoming);
        flow.publish_log();
    }

    #[test]
    fn a_repeat_logged_after_its_first_was_answered_gets_that_answer() {
        let ns = Namespace::new(&format!("flowrepeat{}", std::process::id())).unwrap();
        let ring = |name, capacity, policy| {
            let opts = RingOptions { capacity, max_payload: 144, policy, ..Default::default() };
            let ring = Ring::create(&ns, name, &opts).unwrap();
            // The mappings stay; nothing is left in /dev/shm.
            Ring::unlink(&ns, name).unwrap();
            ring
        };
        let (log, acks) = (ring("log", 8, Policy::Block), ring("acks", 64, Policy::Overwrite));
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = Journal::open(&dir.path().join("journal")).unwrap();
        let cfg = ControlConfig {
            ring: Default::default(),
            allow_uids: Vec::new(),
            allow_gids: Vec::new(),
            audit_reader: None,
            journal: None,
        };
        let mut flow = Flow {
            log: log.writer().unwrap(),
            acks: acks.writer().unwrap(),
            log_view: (*log).clone(),
            judge: Judge::new(&cfg, Default::default()),
            audit_reader: None,
            window: Window::default(),
            unlogged: VecDeque::new(),
            audit: VecDeque::new(),
            applying: Vec::new(),
            stats: Arc::new(ControlStats::default()),
            forwarder: Forwarder::default(),
            journal,
            journal_failing: false,
            recovering: false,
            log_refused: false,
            log_stalls: LogStalls::default(),
            said: super::super::said_per_command(),
        };
        // A gating reader of the log holds it full of garbage's records.
        let mut holder = log.reader(&ReaderOptions { gating: true, ..ReaderOptions::named("holder") }).unwrap();
        for _ in 0..8 {
            take(&mut flow, 99, b"garbage");
        }
        assert!(flow.unlogged.is_empty());
        // A command (for no source: rejected) and its repeat, both decided
        // while the log has no room: the repeat waits for its first.
        let command = Command::set(7, "nowhere", 0, 1.0);
        take(&mut flow, KIND_COMMAND, bytemuck::bytes_of(&command));
        take(&mut flow, KIND_COMMAND, bytemuck::bytes_of(&command));
        assert_eq!(flow.unlogged.len(), 2);
        while holder.try_read(&mut [0; 144]).is_ok() {}
        // Room: the first is logged and answered, then the repeat is logged.
        flow.publish_log();
        assert!(flow.unlogged.is_empty());
        let opts = ReaderOptions { start: Start::Oldest, ..ReaderOptions::named("test") };
        let mut answers = acks.reader(&opts).unwrap();
        let mut of_7 = Vec::new();
        loop {
            match answers.try_read_pod::<Ack>() {
                Ok((_, a)) if a.request == 7 => of_7.push(a),
                Ok(_) => {}
                Err(TryReadError::Empty) => break,
                Err(e) => panic!("control.acks: {e}"),
            }
        }
        let flags: Vec<u16> = of_7.iter().map(|a| a.flags & ACK_REPEAT).collect();
        assert_eq!(flags, [0, ACK_REPEAT], "the first answer, then the repeat's: {of_7:?}");
        assert!(of_7.iter().all(|a| a.outcome() == Some(Err(Reason::UnknownSource))), "{of_7:?}");
    }
}
