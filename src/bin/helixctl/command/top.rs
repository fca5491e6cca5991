//! `helixctl top`: a live view of every ring and reader, refreshed every
//! interval, for a plain terminal (over ssh too). It takes the terminal
//! (raw mode, the alternate screen, the cursor hidden) and redraws when the
//! terminal is resized; `q`, Ctrl-C, SIGINT or SIGTERM quits and the
//! terminal is restored, as it is on an error. Without a terminal (or with
//! `--iterations`) it prints that many snapshots, a blank line apart, and
//! exits.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use crossterm::terminal::{self, Clear, ClearType, EnterAlternateScreen, LeaveAlternateScreen};
use crossterm::{cursor, execute, queue, style::Print};

use super::{list, readers};
use crate::shared::signal::{Signal, Signals};
use crate::{args, format};
use helix::shm::Namespace;
use helix::RingView;

/// Arguments of `helixctl top`.
#[derive(clap::Args)]
pub struct Args {
    /// Seconds between refreshes (at least 0.1, at most a day).
    #[arg(long, value_name = "SECONDS", default_value = "1", value_parser = args::seconds, allow_hyphen_values = true)]
    interval: Duration,
    /// Print this many snapshots and exit (the default without a
    /// terminal is one).
    #[arg(long)]
    iterations: Option<u64>,
}

/// Each ring's published count when last shown, for its rate.
pub type Seen = BTreeMap<String, (Instant, u64)>;

/// Runs the live view, or prints snapshots when not on a terminal.
pub fn run(ns: &Namespace, args: &Args) -> Result<()> {
    let interval = args.interval.max(Duration::from_millis(100));
    let interactive = args.iterations.is_none() && io::stdin().is_terminal() && io::stdout().is_terminal();
    if interactive {
        live(ns, interval)
    } else {
        print_snapshots(ns, interval, args.iterations.unwrap_or(1))
    }
}

/// Prints `n` snapshots `interval` apart, separated by a blank line.
fn print_snapshots(ns: &Namespace, interval: Duration, n: u64) -> Result<()> {
    let mut seen = Seen::new();
    let mut stdout = io::stdout();
    for i in 0..n {
        if i > 0 {
            std::thread::sleep(interval);
            writeln!(stdout)?;
        }
        stdout.write_all(snapshot(ns, &mut seen).as_bytes())?;
    }
    Ok(())
}

/// The live view, until a quit key or signal.
fn live(ns: &Namespace, interval: Duration) -> Result<()> {
    // SIGINT and SIGTERM are taken synchronously (Ctrl-C is a key in raw
    // mode), so the terminal is always restored on the way out.
    let signals = Signals::block(&[Signal::SIGINT, Signal::SIGTERM])
        .context("cannot block SIGINT and SIGTERM for the live view")?;
    let mut screen = Screen::enter().context("cannot set up the terminal for the live view")?;
    let mut seen = Seen::new();
    loop {
        let mut frame = format!("helixctl top: namespace {ns}, every {interval:?}; q quits\n\n");
        frame.push_str(&snapshot(ns, &mut seen));
        let next = Instant::now() + interval;
        loop {
            screen.draw(&frame).context("cannot draw on the terminal")?;
            match wait(&signals, next)? {
                Wake::Refresh => break,
                Wake::Resized => continue,
                Wake::Quit => return Ok(()),
            }
        }
    }
}

/// Why [`wait`] returned.
enum Wake {
    /// The interval passed.
    Refresh,
    /// The terminal changed size: draw again.
    Resized,
    /// A quit key or signal.
    Quit,
}

/// Waits until `until` for a key, a resize or a signal.
fn wait(signals: &Signals, until: Instant) -> Result<Wake> {
    loop {
        if signals.wait(Duration::ZERO).context("cannot take signals")?.is_some() {
            return Ok(Wake::Quit);
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Wake::Refresh);
        }
        // At most 100 ms, so a signal is taken promptly.
        if !event::poll(left.min(Duration::from_millis(100))).context("cannot read the terminal")? {
            continue;
        }
        match event::read().context("cannot read the terminal")? {
            Event::Key(key) if quits(&key) => return Ok(Wake::Quit),
            Event::Resize(..) => return Ok(Wake::Resized),
            _ => {}
        }
    }
}

/// `q`, or Ctrl-C (a key, not a signal, in raw mode).
fn quits(key: &KeyEvent) -> bool {
    let ctrl_c = key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL);
    key.kind == KeyEventKind::Press && (ctrl_c || matches!(key.code, KeyCode::Char('q' | 'Q')))
}

/// The terminal, taken for the live view: raw mode, the alternate screen,
/// no cursor. Dropping it (on any way out, a panic included) gives the
/// terminal back as it was.
struct Screen {
    out: io::Stdout,
}

impl Screen {
    fn enter() -> io::Result<Screen> {
        terminal::enable_raw_mode()?;
        // From here on, `drop` undoes whatever of the rest succeeded.
        let mut screen = Screen { out: io::stdout() };
        execute!(screen.out, EnterAlternateScreen, cursor::Hide)?;
        Ok(screen)
    }

    /// Draws `text` from the top left, cut to the terminal's size.
    fn draw(&mut self, text: &str) -> io::Result<()> {
        let (cols, rows) = terminal::size()?;
        queue!(self.out, cursor::MoveTo(0, 0))?;
        for (i, line) in text.lines().take(rows as usize).enumerate() {
            if i > 0 {
                // Raw mode: a newline does not return the carriage.
                queue!(self.out, Print("\r\n"))?;
            }
            let line: String = line.chars().take(cols as usize).collect();
            queue!(self.out, Print(line), Clear(ClearType::UntilNewLine))?;
        }
        queue!(self.out, Clear(ClearType::FromCursorDown))?;
        self.out.flush()
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let _ = execute!(self.out, cursor::Show, LeaveAlternateScreen);
        let _ = terminal::disable_raw_mode();
    }
}

/// One snapshot of every ring, with rates against the previous one.
fn snapshot(ns: &Namespace, seen: &mut Seen) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<20} {:<9} {:>14} {:>12} {:>7} {:>10} {:>8} {:>9} {:>9}",
        "RING", "POLICY", "PUBLISHED", "FRAMES/S", "READERS", "WRITER", "WAITS", "OVERRUNS", "DEMOTED"
    );
    let entries = helix::ring::scan(ns).unwrap_or_else(|e| {
        let _ = writeln!(out, "(cannot read {}: {e})", helix::shm::SHM_DIR);
        Vec::new()
    });
    if entries.is_empty() && helix::fanin::inspect::list(ns).unwrap_or_default().is_empty() {
        let _ = writeln!(out, "(no rings in namespace {ns})");
    }
    for entry in entries {
        match RingView::attach(ns, &entry.name) {
            Ok(v) => ring(&mut out, &entry.name, &v, seen),
            Err(e) => {
                let (word, why) = list::problem(&entry.state, &e);
                let _ = writeln!(out, "{}", list::problem_line(&entry.name, word, &why));
            }
        }
    }
    out.push_str(&super::fanin::top(ns, seen));
    out
}

/// A ring's line and its readers' lines (or that it is damaged).
fn ring(out: &mut String, name: &str, v: &RingView, seen: &mut Seen) {
    let s = v.stats();
    // Figures read after a file shrank are zeros, not the ring's.
    if let Some(d) = v.damage() {
        seen.remove(name);
        let _ = writeln!(out, "{}", list::problem_line(name, "DAMAGED", &d.to_string()));
        return;
    }
    let now = Instant::now();
    let rate = seen
        .get(name)
        .map(|(t, p)| s.published.saturating_sub(*p) as f64 / now.duration_since(*t).as_secs_f64().max(1e-9));
    seen.insert(name.to_owned(), (now, s.published));
    let writer = match (s.lease.pid, s.lease.alive) {
        (Some(p), true) => p.to_string(),
        (Some(p), false) => format!("{p}!dead"),
        (None, _) => "-".into(),
    };
    let _ = writeln!(
        out,
        "{:<20} {:<9} {:>14} {:>12} {:>7} {:>10} {:>8} {:>9} {:>9}",
        name,
        v.geometry().policy.as_str(),
        s.published,
        format::rate(rate),
        s.readers.len(),
        writer,
        s.writer_waits,
        s.overruns(),
        s.demotions
    );
    // Its readers as `helixctl readers` shows them, indented.
    if !s.readers.is_empty() {
        let _ = writeln!(out, "  {}", readers::header());
    }
    for r in &s.readers {
        let _ = writeln!(out, "  {}", readers::row(r));
    }
}
