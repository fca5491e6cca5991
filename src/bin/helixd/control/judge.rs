//! Who may command, and whether the command names something that exists:
//! the checks after decoding (`docs/abi.md` §12.5, codes 16 and up).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::unistd::{Gid, Group, Uid, User};

use super::Registry;
use crate::config::control::ControlConfig;
use crate::config::SourceKind;
use crate::hal::SourceState;
use helix::control::{Op, Reason, Valid};

/// How long a uid's group memberships are trusted before being looked up
/// again.
const MEMBERSHIP_TTL: Duration = Duration::from_secs(60);

/// Where an accepted command goes.
pub struct Target {
    /// The source it is for.
    pub state: Arc<SourceState>,
    /// A UDP source's instrument, which the command is forwarded to; `None`:
    /// the source (a simulator) applies it.
    pub instrument: Option<SocketAddr>,
}

/// The allow-list and the sources.
pub struct Judge {
    allow_uids: Vec<u32>,
    allow_gids: Vec<u32>,
    sources: Registry,
    /// Per uid: whether it is allowed, and when that was found.
    members: HashMap<u32, (bool, Instant)>,
}

impl Judge {
    /// The judge of `cfg`'s allow-list, over the running `sources`.
    pub fn new(cfg: &ControlConfig, sources: Registry) -> Judge {
        Judge {
            allow_uids: cfg.allow_uids.clone(),
            allow_gids: cfg.allow_gids.clone(),
            sources,
            members: HashMap::new(),
        }
    }

    /// Where `v` from `uid` goes, or why it goes nowhere. A UDP source
    /// with an instrument takes every op for any stream: the instrument
    /// decides what they mean.
    pub fn judge(&mut self, uid: u32, v: &Valid) -> Result<Target, Reason> {
        if !self.allowed(uid) {
            return Err(Reason::NotAllowed);
        }
        let sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        let (kind, state) = sources.get(&v.source).ok_or(Reason::UnknownSource)?;
        let instrument = match kind {
            SourceKind::Sim { streams, .. } if matches!(v.op, Op::Set | Op::Release) && v.stream >= *streams => {
                return Err(Reason::UnknownStream);
            }
            SourceKind::Sim { .. } => None,
            SourceKind::Udp { instrument: Some(to), .. } => Some(*to),
            SourceKind::Udp { instrument: None, .. } => return Err(Reason::NotSimulated),
        };
        if state.stopping() || state.inbox.is_closed() {
            return Err(Reason::SourceDown);
        }
        Ok(Target { state: state.clone(), instrument })
    }

    /// Whether `uid` is on the allow-list (or there is none).
    fn allowed(&mut self, uid: u32) -> bool {
        if self.allow_uids.is_empty() && self.allow_gids.is_empty() || self.allow_uids.contains(&uid) {
            return true;
        }
        let now = Instant::now();
        match self.members.get(&uid) {
            Some(&(ok, when)) if now.duration_since(when) < MEMBERSHIP_TTL => ok,
            _ => {
                let ok = in_groups(uid, &self.allow_gids);
                self.members.insert(uid, (ok, now));
                ok
            }
        }
    }
}

/// Whether `uid`'s primary group, or a group listing its user name, is one
/// of `gids` (the user database as it is now; an unknown uid is in none).
fn in_groups(uid: u32, gids: &[u32]) -> bool {
    let Ok(Some(user)) = User::from_uid(Uid::from_raw(uid)) else { return false };
    gids.iter().any(|&g| {
        user.gid.as_raw() == g
            || Group::from_gid(Gid::from_raw(g)).ok().flatten().is_some_and(|grp| grp.mem.contains(&user.name))
    })
}
