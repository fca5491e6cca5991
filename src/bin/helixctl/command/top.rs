//! `helixctl top`: a live view of every ring and reader, refreshed every
//! interval, for a plain terminal (over ssh too). `q` or Ctrl-C quits and
//! the terminal is restored. Without a terminal (or with `--iterations`) it
//! prints that many snapshots and exits.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::shared::signal::Signals;
use helix::shm::Namespace;
use helix::RingView;

/// Arguments of `helixctl top`.
#[derive(clap::Args)]
pub struct Args {
    /// Seconds between refreshes.
    #[arg(long, default_value_t = 1.0)]
    interval: f64,
    /// Print this many snapshots and exit (the default without a
    /// terminal is one).
    #[arg(long)]
    iterations: Option<u64>,
}

/// Runs the live view, or prints snapshots when not on a terminal.
pub fn run(ns: &Namespace, args: &Args) -> Result<()> {
    Ok(live(ns, Duration::from_secs_f64(args.interval.max(0.1)), args.iterations)?)
}

/// Terminal mode that echoes nothing and delivers keys at once; restored
/// on drop.
struct RawTerminal {
    saved: libc::termios,
}

impl RawTerminal {
    fn enter() -> io::Result<RawTerminal> {
        // SAFETY: tcgetattr/tcsetattr on fd 0 with a termios struct we own.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return Err(io::Error::last_os_error());
            }
            let saved = t;
            // No line buffering, no echo; keep ISIG so Ctrl-C is a signal.
            t.c_lflag &= !(libc::ICANON | libc::ECHO);
            t.c_cc[libc::VMIN] = 0;
            t.c_cc[libc::VTIME] = 0;
            if libc::tcsetattr(0, libc::TCSANOW, &t) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(RawTerminal { saved })
        }
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        // SAFETY: restores the settings read in `enter` on the same fd.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &self.saved) };
        print!("\x1b[?25h");
        let _ = io::stdout().flush();
    }
}

/// Waits up to `timeout` for a key on stdin; returns it, if any.
fn key(timeout: Duration) -> io::Result<Option<u8>> {
    let mut fds = libc::pollfd { fd: 0, events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd for the duration of the call.
    let n = unsafe { libc::poll(&mut fds, 1, timeout.as_millis().min(i32::MAX as u128) as i32) };
    if n <= 0 {
        return Ok(None);
    }
    let mut b = [0u8; 1];
    // SAFETY: reads at most one byte into `b`.
    let r = unsafe { libc::read(0, b.as_mut_ptr().cast(), 1) };
    Ok((r == 1).then_some(b[0]))
}

fn is_tty(fd: i32) -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(fd) == 1 }
}

/// One snapshot of every ring, with rates against the previous snapshot.
fn render(ns: &Namespace, prev: &mut BTreeMap<String, (Instant, u64)>, out: &mut String) {
    use std::fmt::Write as _;
    let names = ns.list_rings().unwrap_or_default();
    let _ = writeln!(
        out,
        "{:<20} {:<9} {:>14} {:>12} {:>7} {:>10} {:>8} {:>9} {:>9}",
        "RING", "POLICY", "PUBLISHED", "FRAMES/S", "READERS", "WRITER", "WAITS", "OVERRUNS", "DEMOTED"
    );
    if names.is_empty() {
        let _ = writeln!(out, "(no rings in namespace {ns})");
    }
    for name in names {
        let v = match RingView::attach(ns, &name) {
            Ok(v) => v,
            Err(e) => {
                let _ = writeln!(out, "{name:<20} CORRUPT: {e}");
                continue;
            }
        };
        let s = v.stats();
        let now = Instant::now();
        let rate = prev
            .get(&name)
            .map(|(t, p)| s.published.saturating_sub(*p) as f64 / now.duration_since(*t).as_secs_f64().max(1e-9));
        prev.insert(name.clone(), (now, s.published));
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
            rate.map_or("-".into(), |r| format!("{r:.0}")),
            s.readers.len(),
            writer,
            s.writer_waits,
            s.overruns(),
            s.demotions
        );
        for r in &s.readers {
            let _ = writeln!(
                out,
                "  {:<18} pid {:<8} {:<8} lag {:>10}  bp {:>5.3}  overruns {:>6}  lost {:>8}  heartbeat {:>6.1}s{}",
                r.name,
                r.pid,
                if r.gating {
                    "gating"
                } else if r.demoted {
                    "demoted"
                } else {
                    ""
                },
                r.lag,
                r.backpressure,
                r.overruns,
                r.lost,
                r.heartbeat_age_ns as f64 / 1e9,
                if r.alive { "" } else { "  DEAD" }
            );
        }
    }
}

/// Runs the live view (`iterations`: print that many snapshots and exit).
fn live(ns: &Namespace, interval: Duration, iterations: Option<u64>) -> io::Result<()> {
    let mut prev = BTreeMap::new();
    let interactive = iterations.is_none() && is_tty(0) && is_tty(1);
    let mut stdout = io::stdout();
    if !interactive {
        for i in 0..iterations.unwrap_or(1) {
            if i > 0 {
                std::thread::sleep(interval);
                writeln!(stdout)?;
            }
            let mut frame = String::new();
            render(ns, &mut prev, &mut frame);
            stdout.write_all(frame.as_bytes())?;
        }
        return Ok(());
    }
    // Ctrl-C and SIGTERM are taken synchronously, so the terminal is always
    // restored on the way out.
    let signals = Signals::block(&[libc::SIGINT, libc::SIGTERM])?;
    let _raw = RawTerminal::enter()?;
    print!("\x1b[?25l");
    loop {
        let mut frame = format!("\x1b[H\x1b[2Jhelixctl top: namespace {ns}, every {interval:?}; q quits\n\n");
        render(ns, &mut prev, &mut frame);
        stdout.write_all(frame.as_bytes())?;
        stdout.flush()?;
        let until = Instant::now() + interval;
        loop {
            if signals.wait(Duration::ZERO)?.is_some() {
                println!();
                return Ok(());
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            if let Some(b'q' | b'Q') = key(left.min(Duration::from_millis(100)))? {
                println!();
                return Ok(());
            }
        }
    }
}
