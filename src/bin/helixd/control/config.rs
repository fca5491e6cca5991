//! The `[control]` table of helix.toml (a child of `config`): the `control` fan-in ring, who may
//! command, and whose record of `control.log` a command waits for.

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::RingConfig;
use crate::shared::conf::{ConfigError, Source};
use helix::control::{Ack, LogRecord, ACK_RING, CONTROL_RING, LOG_RING};
use helix::fanin::{FanInOptions, MAX_LANES};
use helix::layout::MAX_READER_NAME_LEN;
use helix::Policy;

/// Records the control thread takes from a lane per round.
pub const PER_LANE: usize = 16;

/// How helixd takes commands.
#[derive(Debug, Clone, PartialEq)]
pub struct ControlConfig {
    /// The `control` fan-in ring's lanes, mode and group (who may send at
    /// all: group or other write).
    pub ring: FanInOptions,
    /// Uids allowed to command (with `allow_gids`; both empty: anyone the
    /// ring's mode lets in).
    pub allow_uids: Vec<u32>,
    /// Groups whose members may command.
    pub allow_gids: Vec<u32>,
    /// The gating reader of `control.log` whose read position a command
    /// waits for before it takes effect (the ledger); `None`: a command
    /// acts once its record is published.
    pub audit_reader: Option<String>,
    /// The control journal (`journal.rs`); `None`: beside the rings,
    /// `/dev/shm/<namespace>.control@journal`.
    pub journal: Option<PathBuf>,
}

impl ControlConfig {
    /// Where the control journal is, for namespace `ns`.
    pub fn journal_path(&self, ns: &helix::Namespace) -> PathBuf {
        self.journal.clone().unwrap_or_else(|| PathBuf::from(format!("/dev/shm/{}.control@journal", ns.as_str())))
    }
}

/// Whoever the control ring lets send (its group, or every user) must be
/// let read the answers: a sender joins `control.acks` as a reader, which
/// takes read and write on its control file. (The packaged default once
/// gave `control.acks` mode 0o644: the group's members could send, but
/// `helixctl send` and every `Control` client of theirs failed to attach.)
/// Refused at the ring's line, saying what to set.
fn senders_read_answers(ring: &FanInOptions, rings: &[RingConfig], src: &Source<'_>) -> Result<(), ConfigError> {
    let Some(acks) = rings.iter().find(|r| r.name == ACK_RING) else { return Ok(()) };
    let (m, a) = (ring.mode, acks.options.mode);
    let me = helix::process::my_gid();
    let same_group = acks.options.group.unwrap_or(me) == ring.group.unwrap_or(me);
    let group_reads = a & 0o006 == 0o006 || (same_group && a & 0o060 == 0o060);
    let short = if m & 0o020 != 0 && !group_reads {
        "the members of its group"
    } else if m & 0o002 != 0 && a & 0o006 != 0o006 {
        "every user"
    } else {
        return Ok(());
    };
    let message = format!(
        "ring {ACK_RING:?} (mode {a:#o}): [control] (mode {m:#o}) lets {short} send, but they could not read their \
         answers here (a sender joins this ring as a reader, which takes read and write): give it [control]'s mode \
         and group (the packaged default is now 0o660; it was 0o644)"
    );
    Err(ConfigError { path: src.path.to_owned(), line: Some(acks.line), message })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawControl {
    lanes: Option<Spanned<u32>>,
    mode: Option<Spanned<u32>>,
    group: Option<Spanned<String>>,
    #[serde(default)]
    allow_uids: Vec<u32>,
    #[serde(default)]
    allow_groups: Vec<Spanned<String>>,
    audit_reader: Option<Spanned<String>>,
    journal: Option<Spanned<String>>,
}

/// The `[control]` table, checked against the configured `rings`: it needs
/// `control.log` (`block`, payloads of a log record) and `control.acks`.
pub fn parse(src: &Source<'_>, raw: &Spanned<RawControl>, rings: &[RingConfig]) -> Result<ControlConfig, ConfigError> {
    let c = raw.get_ref();
    let group = |g: &Spanned<String>| {
        helix::shm::group_id(g.get_ref()).map_err(|e| src.at(g, format!("group {:?}: {e}", g.get_ref())))
    };
    let defaults = FanInOptions::default();
    let lanes = c.lanes.as_ref().map_or(Ok(defaults.lanes), |l| match *l.get_ref() {
        n @ 1..=MAX_LANES => Ok(n),
        n => Err(src.at(l, format!("lanes {n} is not between 1 and {MAX_LANES}"))),
    })?;
    let mode = c.mode.as_ref().map_or(Ok(defaults.mode), |m| match *m.get_ref() {
        n if n & !0o777 == 0 => Ok(n),
        n => Err(src.at(m, format!("mode {n:o} has bits outside 0o777"))),
    })?;
    let ring = FanInOptions {
        lanes,
        lane_capacity: 1 << 16,
        max_payload: 4096,
        mode,
        group: c.group.as_ref().map(group).transpose()?,
        ..defaults
    };
    let allow_gids = c.allow_groups.iter().map(group).collect::<Result<_, _>>()?;
    let audit_reader = match &c.audit_reader {
        Some(r) if r.get_ref().is_empty() => None,
        // No reader could register under it: every command would wait for
        // ever.
        Some(r) if r.get_ref().len() > MAX_READER_NAME_LEN => {
            let msg = format!(
                "audit_reader {:?} is longer than a reader's name may be ({MAX_READER_NAME_LEN} bytes)",
                r.get_ref()
            );
            return Err(src.at(r, msg));
        }
        Some(r) => Some(r.get_ref().clone()),
        None => Some("helix-ledger".to_owned()),
    };
    // A broadcast ring under the fan-in ring's name would be another ring
    // of the same name (other files): `helixctl stat` and `rm` would pick
    // one, and a sender that means the other would not see its mistake.
    if let Some(rc) = rings.iter().find(|r| r.name == CONTROL_RING) {
        let msg = format!("ring {CONTROL_RING:?}: the name is [control]'s fan-in ring's; name the ring otherwise");
        return Err(ConfigError { path: src.path.to_owned(), line: Some(rc.line), message: msg });
    }
    for (name, size) in [(LOG_RING, size_of::<LogRecord>()), (ACK_RING, size_of::<Ack>())] {
        let Some(rc) = rings.iter().find(|r| r.name == name) else {
            return Err(src.err(Some(raw.span()), format!("[control] needs a [[ring]] named {name:?}")));
        };
        if (rc.options.max_payload as usize) < size {
            let m = rc.options.max_payload;
            return Err(src.err(Some(raw.span()), format!("ring {name:?} holds {m} bytes; its records are {size}")));
        }
        // An overwriting log would lose the records of commands that then
        // take effect (the ledger records a GAP where they were); a
        // blocking `control.acks` would make the control thread wait on
        // readers of answers.
        let (policy, why) = match name {
            LOG_RING => (Policy::Block, "a command takes effect only once its record is kept"),
            _ => (Policy::Overwrite, "answering never waits for its readers"),
        };
        if rc.options.policy != policy {
            let want = if policy == Policy::Block { "block" } else { "overwrite" };
            let msg = format!("ring {name:?} needs policy = \"{want}\": {why}");
            return Err(src.err(Some(raw.span()), msg));
        }
        // A round of the control ring takes only what control.log has room
        // for: a log smaller than a round would never take a record.
        let round = lanes as u64 * PER_LANE as u64;
        if name == LOG_RING && rc.options.capacity < round {
            let c = rc.options.capacity;
            let msg = format!("ring {name:?} has {c} slots; {lanes} lanes need at least {round} (16 a lane)");
            return Err(src.err(Some(raw.span()), msg));
        }
    }
    senders_read_answers(&ring, rings, src)?;
    let journal = journal(src, c.journal.as_ref())?;
    Ok(ControlConfig { ring, allow_uids: c.allow_uids.clone(), allow_gids, audit_reader, journal })
}

/// `[control] journal`: an absolute path, or (none, or empty) the default.
fn journal(src: &Source<'_>, journal: Option<&Spanned<String>>) -> Result<Option<PathBuf>, ConfigError> {
    match journal {
        Some(j) if j.get_ref().is_empty() => Ok(None),
        Some(j) if !j.get_ref().starts_with('/') => {
            Err(src.at(j, format!("journal {:?} is not an absolute path", j.get_ref())))
        }
        Some(j) => Ok(Some(PathBuf::from(j.get_ref()))),
        None => Ok(None),
    }
}
