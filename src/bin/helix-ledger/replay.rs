//! `helix-ledger replay`: a recorded range of a ring published into a new
//! ring, for any reader (helix-twin, helixctl tail) to run on unchanged.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde_json::json;

use helix::ledger::format::RingDecl;
use helix::ledger::replay::{self, Pace, Pacing, Range, ReplayError, Replayed};
use helix::ledger::VerifyFailure;
use helix::shm::{validate_ring_name, Namespace};
use helix::{Policy, Ring, RingOptions, RingView, Writer};

#[derive(Args)]
pub struct ReplayArgs {
    /// Ledger folder.
    dir: PathBuf,
    /// The recorded ring to replay.
    #[arg(long)]
    ring: String,
    /// First recorded sequence.
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// Last recorded sequence (inclusive).
    #[arg(long, default_value_t = u64::MAX)]
    to: u64,
    /// The ring to publish into, created with the recorded ring's geometry
    /// (default: replay.RING); refused if it exists.
    #[arg(long, value_name = "RING")]
    into: Option<String>,
    /// recorded (the recorded pace, from the blocks' recv_ns), max (as fast
    /// as the ring takes them) or xN (N times the recorded pace, e.g. x10).
    #[arg(long, default_value = "recorded")]
    pace: Pace,
    /// At a paced replay, cut a pause in the recording (the plant stopped,
    /// the recorder was down) longer than this many seconds at the pace to
    /// it (default: every pause is waited out whole).
    #[arg(long, value_name = "SECONDS", value_parser = seconds)]
    max_pause: Option<Duration>,
    /// Also create replay.NAME with the geometry of the live ring NAME
    /// (repeatable): rings for a program's output, e.g. helix-twin's
    /// twin.state and alarms. Refused if replay.NAME exists.
    #[arg(long = "also", value_name = "NAME")]
    also: Vec<String>,
    /// Verify the folder with this public key (a `helix-ledger pubkey`
    /// line) first, as `verify --pubkey` does, and replay nothing if a
    /// signature is bad or missing.
    #[arg(long, value_name = "FILE")]
    pubkey: Option<PathBuf>,
    /// Wait until this many readers have joined the ring before publishing
    /// the first frame (start them on the ring meanwhile).
    #[arg(long, default_value_t = 0, value_name = "N")]
    wait_readers: usize,
    /// One JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// A paced replay says so on stderr before a wait this long or longer:
/// nothing moves meanwhile.
const SAY_WAIT: Duration = Duration::from_secs(10);

/// Replays; returns false (after printing what was replayed) if the ledger
/// stopped verifying on the way.
pub fn replay(ns: &Namespace, a: &ReplayArgs) -> anyhow::Result<bool> {
    let into = checked(a)?;
    refuse_a_recorded_name(&a.dir, &into)?;
    if let Some(path) = &a.pubkey {
        if !signed(&a.dir, path)? {
            return Ok(false);
        }
    }
    // Ctrl-C or SIGTERM stops it between blocks, saying what it published.
    let stop = stop_on_signal()?;
    // What this call made for --also: removed again if the replay fails
    // before its ring is made (a typo in --ring, an --into that exists), so
    // that the same command, corrected, is not refused for them.
    let made = also_create_all(ns, &a.also)?;
    let into_made = std::cell::Cell::new(false);
    let range = Range { ring: a.ring.clone(), from: a.from, to: a.to };
    let open = |decl: &RingDecl| -> Result<Writer, ReplayError> {
        let opts = RingOptions {
            capacity: decl.capacity,
            // A ring's slots hold up to 48 bytes more than it may be
            // configured with; no recorded frame is larger than that.
            max_payload: decl.max_payload.min(helix::ring::MAX_PAYLOAD),
            policy: if decl.policy == 1 { Policy::Block } else { Policy::Overwrite },
            ..Default::default()
        };
        let ring = Ring::create(ns, &into, &opts)?;
        into_made.set(true);
        let w = ring.writer()?;
        wait_readers(&ring, &into, a.wait_readers, &stop);
        Ok(w)
    };
    let pacing = Pacing { pace: a.pace, max_pause: a.max_pause };
    let say_wait = |wait: Duration, seq: u64| {
        if wait >= SAY_WAIT {
            let cut = if a.max_pause.is_some() { "" } else { "; --max-pause cuts such pauses" };
            eprintln!(
                "waiting {:.1} s before recorded sequence {seq}: the recording pauses here{cut}",
                wait.as_secs_f64()
            );
        }
    };
    let stopped = match replay::replay_until(&a.dir, &range, pacing, open, say_wait, &stop) {
        Ok(done) => {
            // Nothing in the range: no ring was made, and the --also rings
            // are not left for a program that would wait on them for ever.
            // (Found by review: it said "into replay.NAME" of a ring never
            // made, and left the others.)
            if !into_made.get() {
                unmake(ns, &made);
            }
            print_done(a, &into, into_made.get(), &done, true, start_pruned(a, &done))?;
            crate::command::torn_tail_note(done.partial_tail, "replayed");
            return Ok(true);
        }
        Err(stopped) => *stopped,
    };
    if !into_made.get() {
        unmake(ns, &made);
    } else {
        // What was published before it stopped is in the ring: say what.
        print_done(a, &into, true, &stopped.done, false, start_pruned(a, &stopped.done))?;
    }
    match stopped.error {
        ReplayError::Verify(f @ VerifyFailure::PrunedMeanwhile { .. }) => {
            eprintln!("FAILED: {f}");
            Ok(false)
        }
        ReplayError::Verify(f) => {
            eprintln!("FAILED: the ledger does not verify (what precedes the bad block was replayed): {f}");
            Ok(false)
        }
        ReplayError::Interrupted => {
            eprintln!("helix-ledger: replay interrupted (by a signal)");
            Ok(false)
        }
        e => Err(e).with_context(|| format!("replaying {} from {}", a.ring, a.dir.display())),
    }
}

/// The arguments checked before anything is read or made; the ring to
/// replay into.
fn checked(a: &ReplayArgs) -> anyhow::Result<String> {
    validate_ring_name(&a.ring).with_context(|| format!("--ring {}", a.ring))?;
    let into = match &a.into {
        Some(into) => {
            validate_ring_name(into).with_context(|| format!("--into {into}"))?;
            into.clone()
        }
        // (Found by review: a ring name of 57 bytes or more failed as
        // "--into replay.…", an option never given.)
        None => {
            let into = format!("replay.{}", a.ring);
            validate_ring_name(&into).map_err(|e| {
                anyhow::anyhow!("--ring {}: the ring to replay into would be {into}: {e}; name one with --into", a.ring)
            })?;
            into
        }
    };
    if a.from > a.to {
        anyhow::bail!("--from {} is after --to {}", a.from, a.to);
    }
    // (Found by review: `--ring t --also t` made replay.t for --also, and
    // the replay then failed on it as "already exists".)
    if let Some(name) = a.also.iter().find(|n| format!("replay.{n}") == into) {
        anyhow::bail!("--also {name} would make replay.{name}, the ring this replay publishes into");
    }
    if a.max_pause.is_some() && a.pace == Pace::Max {
        anyhow::bail!("--max-pause has no pause to cut at --pace max");
    }
    // The ring is made with the default reader table: more would never join.
    let max_readers = RingOptions::default().max_readers;
    if a.wait_readers > max_readers as usize {
        anyhow::bail!("--wait-readers {}: the replay ring takes at most {max_readers} readers", a.wait_readers);
    }
    Ok(into)
}

/// Refuses to replay into a ring the ledger records (its last segment
/// declares every ring of the chain). While the live ring is away (helixd
/// stopped, or the ring retired by a reload) the name is free, and a
/// replay made it: the recorder, following the name, recorded the old
/// frames as a live incarnation, and helixd adopted the ring at its next
/// start (found by review). In a folder whose last segment does not read
/// (the replay then names the damage), the rings of the records before
/// the damage count: the replay publishes no frame after it. (Found by
/// review: the check was skipped, and frames went into a recorded name.)
fn refuse_a_recorded_name(dir: &Path, into: &str) -> anyhow::Result<()> {
    let recorded = match helix::ledger::verify::head(dir) {
        Ok(Ok(head)) => head.rings.iter().any(|(name, _)| name == into),
        _ => {
            let mut seen = false;
            // Walked to the damage (or an unreadable folder: the replay says).
            let _ = helix::ledger::verify::walk(dir, |at| seen |= at.ring == into);
            seen
        }
    };
    if recorded {
        anyhow::bail!(
            "--into {into}: this ledger records a ring of that name, and so would take frames replayed into it for \
             live ones (as would helixd, adopting the ring): replay into another name (without --into: replay.RING)"
        );
    }
    Ok(())
}

/// Whether the ledger in `dir` verifies with the public key in `path`,
/// every checkpoint signed by it: says why not, or how much of its end is
/// not signed yet (replayed as found).
fn signed(dir: &Path, path: &Path) -> anyhow::Result<bool> {
    let key = crate::command::read_public(path)?;
    match helix::ledger::verify::verify_signed(dir, &key)? {
        Ok(s) => {
            if s.unsigned_records > 0 {
                eprintln!(
                    "helix-ledger: every checkpoint is signed by the key; the last {} records follow the last \
                     checkpoint, not signed yet, and are replayed as found",
                    s.unsigned_records
                );
            }
            Ok(true)
        }
        Err(f) => {
            eprintln!("FAILED: the ledger does not verify with the key {}; nothing replayed: {f}", path.display());
            Ok(false)
        }
    }
}

/// Whether retention pruned the ledger's oldest segments and the range
/// may have begun in them (said on stderr).
fn start_pruned(a: &ReplayArgs, done: &Replayed) -> bool {
    let pruned = helix::ledger::retention::read_pruned(&a.dir).ok().flatten();
    let first = done.spans.first().map(|s| s.0);
    crate::command::pruned_note(pruned.as_ref(), &format!("ring {}", a.ring), a.from, first, "replayed")
}

/// What a replay of `a` into `into` (`made`, or not: nothing was recorded
/// in the range) did, on standard output; `start_pruned`: the range may
/// have begun in segments retention pruned.
fn print_done(
    a: &ReplayArgs,
    into: &str,
    made: bool,
    done: &Replayed,
    verified: bool,
    start_pruned: bool,
) -> io::Result<()> {
    let mut out = io::stdout().lock();
    // (Found by review: a range across two incarnations of the ring said
    // "sequences 500 to 20".)
    let spans: Vec<String> = done.spans.iter().map(|(f, l)| format!("{f} to {l}")).collect();
    let span = match spans.len() {
        0 => "nothing recorded in the range".to_owned(),
        1 => format!("sequences {}", spans[0]),
        n => format!("sequences {}, across {n} incarnations of the ring", spans.join(", then ")),
    };
    let target = if made { format!("into {into}") } else { format!("so no ring {into} was made") };
    if a.json {
        let v = json!({
            "ok": verified, "ring": a.ring, "into": into, "made": made, "frames": done.frames, "gaps": done.gaps,
            "lost": done.lost, "first_seq": done.span.map(|s| s.0), "last_seq": done.span.map(|s| s.1),
            "spans": done.spans, "start_pruned": start_pruned,
            "partial_tail": done.partial_tail, "pauses_cut": done.pauses_cut, "cut_s": done.cut.as_secs_f64(),
        });
        writeln!(out, "{v}")?;
    } else {
        writeln!(
            out,
            "replayed {} frames and {} gaps ({} sequences lost) of {}, {span}, {target}",
            done.frames, done.gaps, done.lost, a.ring
        )?;
        if done.pauses_cut > 0 {
            let (n, cut) = (done.pauses_cut, done.cut.as_secs_f64());
            let pauses = if n == 1 { "pause" } else { "pauses" };
            writeln!(out, "{n} {pauses} longer than --max-pause cut to it: {cut:.3} s off the recorded schedule")?;
        }
    }
    Ok(())
}

/// Creates `replay.NAME` for each NAME of `--also`; returns their names.
/// If one cannot be made, those made before it are removed again.
fn also_create_all(ns: &Namespace, also: &[String]) -> anyhow::Result<Vec<String>> {
    let mut made = Vec::new();
    for name in also {
        match also_create(ns, name) {
            Ok(copy) => made.push(copy),
            Err(e) => {
                unmake(ns, &made);
                return Err(e);
            }
        }
    }
    Ok(made)
}

/// Removes the rings `made` for `--also` (best effort).
fn unmake(ns: &Namespace, made: &[String]) {
    made.iter().for_each(|r| drop(Ring::unlink(ns, r)));
}

/// Creates `replay.NAME` with the geometry of the live ring `NAME`;
/// returns its name.
fn also_create(ns: &Namespace, name: &str) -> anyhow::Result<String> {
    let live = RingView::attach(ns, name).with_context(|| format!("--also {name}: the live ring"))?;
    let g = live.geometry();
    let opts = RingOptions {
        capacity: g.capacity,
        max_payload: g.max_payload,
        policy: g.policy,
        max_readers: g.max_readers,
        ..Default::default()
    };
    let copy = format!("replay.{name}");
    validate_ring_name(&copy).with_context(|| format!("--also {name}"))?;
    Ring::create(ns, &copy, &opts).with_context(|| format!("--also {name}: creating {copy}"))?;
    Ok(copy)
}

/// Waits until `n` readers have joined `ring` (named `name`), saying so on
/// stderr. (Or until `stop` is set: the replay then stops before its first
/// block.) Counted on the ring made, not on whatever the name means by now
/// (found by review: a view that could not be attached by the name skipped
/// the wait, silently).
fn wait_readers(ring: &Ring, name: &str, n: usize, stop: &AtomicBool) {
    let joined = || ring.stats().readers.iter().filter(|r| r.alive).count();
    if joined() < n {
        eprintln!("helix-ledger: waiting for {n} reader(s) on {name} before replaying");
    }
    while joined() < n && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A flag set on SIGINT or SIGTERM, by a thread of its own that reads them
/// (blocked from here on, in every thread started after).
fn stop_on_signal() -> anyhow::Result<Arc<AtomicBool>> {
    use crate::shared::signal::{Signal, Signals};
    let signals = Signals::block(&[Signal::SIGINT, Signal::SIGTERM]).context("blocking SIGINT and SIGTERM")?;
    let stop = Arc::new(AtomicBool::new(false));
    let set = stop.clone();
    std::thread::spawn(move || loop {
        match signals.wait(Duration::from_secs(3600)) {
            Ok(None) => {}
            Ok(Some(_)) => break set.store(true, Ordering::Relaxed),
            Err(e) => {
                // Ctrl-C would be lost: stop now rather than run on deaf.
                eprintln!("helix-ledger: cannot read signals ({e}); stopping the replay");
                break set.store(true, Ordering::Relaxed);
            }
        }
    });
    Ok(stop)
}

/// `--max-pause`: seconds, 0 or more.
fn seconds(s: &str) -> Result<Duration, String> {
    s.parse::<f64>()
        .ok()
        .and_then(|v| Duration::try_from_secs_f64(v).ok())
        .ok_or_else(|| format!("{s:?}: expected seconds, 0 or more (0.5: half a second)"))
}
