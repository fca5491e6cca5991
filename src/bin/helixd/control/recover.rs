//! A start after a helixd that stopped (or was killed) with commands in
//! flight: the journal's answers go back into the window, and every
//! record on `control.log` the journal does not say was answered (its
//! mark names the records in flight then; every other before it was
//! answered, and each answer after it names its record) is finished, as
//! the helixd before would have: a rejected command is
//! answered, an accepted one applied (after the audit reader has read its
//! record, as always) and answered. One the journal says was being sent
//! to its instrument is not sent again (its datagram may have left: a
//! command is sent at most once): it is answered rejected `send_failed`,
//! and the log says why. Then the journal is rewritten.
//!
//! A journal with no mark (one that did not exist: removed, or another
//! path configured) does not say which records were answered: none is
//! judged again (it would be applied, or sent to its instrument, again),
//! but for one a `sending` line names (answered `send_failed`, as above);
//! a warning says how many were left. On a first start, or after a reboot
//! (`control.log` is new too), there are none.

use std::collections::{BTreeSet, HashSet};

use anyhow::{Context, Result};
use tracing::{info, warn};

use super::flow::ack0;
use super::journal::Recovered;
use super::{Flow, Pending};
use helix::control::{self, Ack, LogRecord, LOGGED_BYTES, LOG_REPEAT, LOG_RING};
use helix::{Namespace, Reader, ReaderOptions, Start, TryReadError};

impl Flow {
    /// Recovers what the journal and `control.log` say (see the module).
    pub(super) fn recover(&mut self, ns: &Namespace, mut rec: Recovered) -> Result<()> {
        // No rewrite until every record is finished: one on the way would
        // mark those not reached yet as answered, and drop the `sending`
        // lines (found by review).
        self.recovering = true;
        for a in &rec.answers {
            self.window.remember(a);
        }
        // Every request the journal answered, kept by the window or not (a
        // journal of a helixd before `logged_to` says what was answered by
        // its answers alone, and the window keeps a share of each uid's).
        let answered: HashSet<(u32, u64)> = rec.answers.iter().map(|a| (a.uid, a.request)).collect();
        if rec.log_mark.as_ref().is_some_and(|m| self.log.next_seq() < m.logged_to) {
            warn!(
                "control: control.log ends before the journal's mark (made again since the journal was written): \
                 the journal does not say which of its records were answered"
            );
            (rec.log_mark, rec.marked, rec.unresolved_from) = (None, false, 0);
        }
        let named: BTreeSet<u64> = rec.sending.values().copied().collect();
        let (mut unanswered, mut left) = (0, Vec::new());
        for (seq, log) in log_records(ns, rec.unresolved_from)? {
            // Answered, whether the window still holds the answer or not.
            if rec.answered(seq) {
                continue;
            }
            if rec.marked || named.contains(&seq) {
                unanswered += usize::from(self.finish(seq, &log, &rec, &answered));
            } else {
                left.push(seq);
            }
        }
        if unanswered > 0 {
            info!("control: {unanswered} commands on control.log were not answered before this start; finishing them");
        }
        if let (Some(first), Some(last)) = (left.first(), left.last()) {
            warn!(
                "control: the journal {} was missing or held no mark (removed, or [control] journal changed), so it \
                 does not say which commands on control.log were answered: its {} records (sequences {first} to \
                 {last}) were not judged again, so none is applied or sent to an instrument twice; one that was not \
                 answered stays so, and a repeat of one is taken as a new command",
                self.journal.path().display(),
                left.len()
            );
        }
        self.recovering = false;
        self.journal.rewrite(self.log_mark(), self.window.answers())
    }

    /// Finishes the command logged at `seq`, if it is a first request no
    /// answer covers; whether it was one. `rec.sending`: the commands the
    /// journal says were being sent to their instruments; `answered`: the
    /// requests it answered.
    fn finish(&mut self, seq: u64, log: &LogRecord, rec: &Recovered, answered: &HashSet<(u32, u64)>) -> bool {
        // A record of another length was rejected (bad_size) when it came,
        // and never windowed; its first bytes may still decode.
        if log.len as usize != LOGGED_BYTES {
            return false;
        }
        let Ok(command) = control::decode(log.kind, &log.command) else { return false };
        let (uid, request) = (log.uid, command.request);
        if log.flags & LOG_REPEAT != 0 || answered.contains(&(uid, request)) || self.window.seen(uid, request).is_some()
        {
            return false;
        }
        let Some(verdict) = log.outcome() else { return false };
        self.window.insert(uid, request, verdict);
        let op = command.op as u16;
        if rec.sending.get(&(uid, request)) == Some(&seq) {
            warn!(
                "control: uid {uid} request {request}: {} {}: helixd stopped while sending it to its instrument, \
                 before its answer; the datagram may or may not have left, and is not sent again: answered \
                 rejected (send_failed)",
                command.op.as_str(),
                command.source
            );
            let (verdict, reason) = control::wire(Err(control::Reason::SendFailed));
            self.answer_first(Ack { uid, request, verdict, reason, op, log_seq: seq, ..ack0() }, None);
            return true;
        }
        let target = verdict.and_then(|()| self.judge.judge(uid, &command));
        match target {
            Ok(target) => {
                let token = super::token();
                let (state, instrument) = (Some(target.state), target.instrument);
                self.audit.push_back(Pending { uid, command, log_seq: seq, token, state, instrument });
            }
            Err(reason) => {
                let (verdict, reason) = control::wire(Err(reason));
                self.answer_first(Ack { uid, request, verdict, reason, op, log_seq: seq, ..ack0() }, None);
            }
        }
        true
    }
}

/// The audit records on `control.log` from sequence `from` on.
fn log_records(ns: &Namespace, from: u64) -> Result<Vec<(u64, LogRecord)>> {
    let opts = ReaderOptions { name: "helixd-recovery".into(), start: Start::Oldest, ..Default::default() };
    let mut reader = Reader::attach(ns, LOG_RING, &opts).context("ring control.log")?;
    let mut out = Vec::new();
    loop {
        match reader.try_read_pod::<LogRecord>() {
            Ok((seq, log)) if seq >= from => out.push((seq, log)),
            Ok(_) | Err(TryReadError::Frame(_)) => {}
            Err(TryReadError::Empty) => return Ok(out),
            // Nobody else writes control.log while helixd starts.
            Err(e) => return Err(anyhow::anyhow!("reading control.log: {e}")),
        }
    }
}
