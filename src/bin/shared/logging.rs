//! Logging for the daemons: plain lines with a timestamp on a terminal;
//! under systemd (`JOURNAL_STREAM` set) no timestamp, and each line prefixed
//! with its syslog priority (`<3>` error ... `<7>` debug), which journald
//! reads as the entry's level.

use std::fmt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

struct Journald;

impl<S, N> FormatEvent<S, N> for Journald
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut w: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let priority = match *event.metadata().level() {
            Level::ERROR => 3,
            Level::WARN => 4,
            Level::INFO => 6,
            _ => 7,
        };
        write!(w, "<{priority}>")?;
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

/// Installs the global subscriber at `level` (e.g. from `HELIX_LOG`).
pub fn init(level: LevelFilter) {
    let builder = tracing_subscriber::fmt().with_max_level(level).with_writer(std::io::stderr).with_target(false);
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.with_ansi(false).event_format(Journald).init();
    } else {
        use std::io::IsTerminal;
        builder.with_ansi(std::io::stderr().is_terminal()).init();
    }
}

/// The level named by `HELIX_LOG` (error, warn, info, debug, trace), else info.
pub fn level_from_env() -> LevelFilter {
    std::env::var("HELIX_LOG").ok().and_then(|v| v.parse().ok()).unwrap_or(LevelFilter::INFO)
}
