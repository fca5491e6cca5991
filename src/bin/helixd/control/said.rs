//! Lines the control path says per command, a few a while: an allowed
//! sender's flood of commands must not fill journald's rate limit for the
//! service and hide its other lines (found by review: each applied,
//! forwarded or failed command was a line of its own). Every command is on
//! `control.log` (the ledger's audit trail) and in the STATUS counts,
//! whatever the log says.

use std::time::{Duration, Instant};

use tracing::{info, warn};

/// One kind of line: said one by one up to [`Said::EACH`] a
/// [`Said::WINDOW`], the rest summed up at its end.
pub struct Said {
    /// What the summary calls them ("commands applied").
    what: &'static str,
    /// A warning, or information.
    warning: bool,
    ends: Option<Instant>,
    said: u32,
    quiet: u64,
}

impl Said {
    const EACH: u32 = 10;
    const WINDOW: Duration = Duration::from_secs(10);

    pub fn info(what: &'static str) -> Said {
        Said { what, warning: false, ends: None, said: 0, quiet: 0 }
    }

    pub fn warning(what: &'static str) -> Said {
        Said { warning: true, ..Said::info(what) }
    }

    /// Whether to say the next one (else it is counted for the summary).
    pub fn one(&mut self) -> bool {
        let now = Instant::now();
        if self.ends.is_none_or(|end| now >= end) {
            self.sum_up();
            (self.ends, self.said) = (Some(now + Self::WINDOW), 0);
        }
        self.said += 1;
        self.quiet += u64::from(self.said > Self::EACH);
        self.said <= Self::EACH
    }

    /// Sums up the window's unsaid lines once it is over (each sweep).
    pub fn tick(&mut self) {
        if self.ends.is_some_and(|end| Instant::now() >= end) {
            self.sum_up();
        }
    }

    fn sum_up(&mut self) {
        let n = std::mem::take(&mut self.quiet);
        if n == 0 {
            return;
        }
        let what = self.what;
        if self.warning {
            warn!("control: {n} more {what} in ten seconds, not logged one by one (each is on control.log)");
        } else {
            info!("control: {n} more {what} in ten seconds, not logged one by one (each is on control.log)");
        }
    }
}

impl Drop for Said {
    fn drop(&mut self) {
        self.sum_up();
    }
}
