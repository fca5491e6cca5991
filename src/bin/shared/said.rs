//! Log lines of one kind said a few a while, the rest summed up: a peer's
//! flood (a publisher's garbage, an allowed sender's commands) must not
//! fill journald's rate limit for the service and hide its other lines.
//! (Found by review: helix-bridge's importer said each refused message,
//! helixd each command, as a line of its own.) What is not said one by one
//! is counted where it always was (metrics, STATUS, an audit ring).

use std::time::{Duration, Instant};

use tracing::{info, warn};

/// Lines of one kind: up to [`Said::EACH`] a [`Said::WINDOW`] said one by
/// one, the rest counted, with the last of them, for a line summing them
/// up once the window is over (at the next line, [`Said::tick`], or the
/// drop).
pub struct Said {
    /// What the summary calls them ("stream messages refused").
    what: &'static str,
    /// Said as warnings, or as information.
    warning: bool,
    /// When the current window ends (`None`: none begun).
    ends: Option<Instant>,
    said: u32,
    /// Not said in the window, and the last of them.
    quiet: u64,
    last: String,
}

impl Said {
    pub const EACH: u32 = 10;
    pub const WINDOW: Duration = Duration::from_secs(10);

    pub fn info(what: &'static str) -> Said {
        Said::new(what, false)
    }

    pub fn warning(what: &'static str) -> Said {
        Said::new(what, true)
    }

    fn new(what: &'static str, warning: bool) -> Said {
        Said { what, warning, ends: None, said: 0, quiet: 0, last: String::new() }
    }

    /// Says `line`, or counts it for the summary if the window has had its
    /// share.
    pub fn one(&mut self, line: String) {
        let now = Instant::now();
        if self.ends.is_none_or(|end| now >= end) {
            self.sum_up();
            (self.ends, self.said) = (Some(now + Self::WINDOW), 0);
        }
        if self.said < Self::EACH {
            self.said += 1;
            self.say(&line);
        } else {
            self.quiet += 1;
            self.last = line;
        }
    }

    /// Sums up the lines not said once their window is over (call it now
    /// and then: a flood that stopped is said then, not at the next line).
    pub fn tick(&mut self) {
        if self.ends.is_some_and(|end| Instant::now() >= end) {
            self.sum_up();
        }
    }

    /// Sums up the lines not said, if any.
    pub fn sum_up(&mut self) {
        let n = std::mem::take(&mut self.quiet);
        if n > 0 {
            let line = format!("{n} more {}, not logged one by one (the last: {})", self.what, self.last);
            self.say(&line);
        }
    }

    fn say(&self, line: &str) {
        if self.warning {
            warn!("{line}");
        } else {
            info!("{line}");
        }
    }
}

/// What was not said one by one is summed up however its owner ends.
impl Drop for Said {
    fn drop(&mut self) {
        self.sum_up();
    }
}
