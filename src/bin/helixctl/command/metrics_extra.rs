//! Not a verb: what `helixctl metrics` adds to the rings' counters. The
//! digital twin's active alarms (read from its rings, as `helixctl twin`
//! does), and the services' own counters from the text files they write
//! with `--metrics-file` (`--textfiles DIR`: helixd's HAL sources,
//! helix-ledger's recorder).
//!
//! A text file is a peer's output: each is checked line by line before a
//! byte of it is served, and one that breaks the format, names a family
//! outside `helix_`, or gives a family already given (by helixctl or an
//! earlier file) is left out whole, reported as `helix_textfile_up 0` with
//! the reason on stderr. A file that is not refreshed shows in
//! `helix_textfile_age_seconds`.

use std::collections::BTreeSet;
use std::path::Path;

use helix::shm::Namespace;
use helix::twin::{ActiveAlarms, AlarmKind, Snapshot, TwinRingError};
use helix::Owners;

use super::twin::TwinView;
use crate::format::{acts_on_terminal, printable};
use crate::shared::textfile::{flag, label, Text};

const GAUGE: &str = "gauge";

/// The name helixctl's reader has in the twin's rings while it reads.
const READER: &str = "helixctl-metrics";

/// A text file larger than this is left out.
const MAX_TEXTFILE: u64 = 1 << 20;

/// The twin's families, if its state ring `state_ring` and alarm ring
/// `alarm_ring` exist and read (a host without a twin has none; a damaged
/// ring shows as `helix_ring_up 0`). Rings none of `owners` owns are not
/// the twin's: left out, said on stderr.
pub fn twin(ns: &Namespace, rings: (&str, &str), owners: &Owners, out: &mut Text) {
    let (state_ring, alarm_ring) = rings;
    let read = || -> Result<_, TwinRingError> {
        let snapshot = Snapshot::read(ns, state_ring, READER, owners)?;
        let alarms = ActiveAlarms::read(ns, alarm_ring, READER, owners, snapshot.instance)?;
        Ok((snapshot, alarms))
    };
    let (snapshot, alarms) = match read() {
        Ok(read) => read,
        Err(e @ (TwinRingError::Foreign(_) | TwinRingError::NotTheTwins { .. })) => {
            return eprintln!("helixctl metrics: the twin's families are left out: {e}")
        }
        // No twin here, or a ring that does not read: `helix_ring_up 0`.
        Err(_) => return,
    };
    let view = TwinView::new(ns, &snapshot, alarms, None);
    let one = |out: &mut Text, name: &str, help: &str, v: f64| {
        out.family(name, GAUGE, help);
        out.sample(name, "", v);
    };
    one(out, "helix_twin_up", "1 if a live process (the twin) holds the state ring's writer lease.", flag(view.alive));
    one(out, "helix_twin_streams", "Streams in the twin's newest state table.", view.streams.len() as f64);
    if let Some(t) = &view.twin {
        one(
            out,
            "helix_twin_snapshot_age_seconds",
            "Seconds since the twin published its newest state table.",
            secs(t.age_ns),
        );
    }
    out.family("helix_twin_active_alarms", GAUGE, "Alarms raised and not cleared, by rule.");
    for rule in AlarmKind::ALL {
        let n = view.alarms.iter().filter(|a| a.rule == rule).count();
        out.sample("helix_twin_active_alarms", &format!("rule=\"{}\"", rule.as_str()), n as f64);
    }
    out.family(
        "helix_twin_oldest_alarm_age_seconds",
        GAUGE,
        "Seconds since the oldest active alarm of the rule was raised (0: none active whose raise the alarm ring still holds).",
    );
    for rule in AlarmKind::ALL {
        let age = view.alarms.iter().filter(|a| a.rule == rule).filter_map(|a| a.age_ns).max().unwrap_or(0);
        out.sample("helix_twin_oldest_alarm_age_seconds", &format!("rule=\"{}\"", rule.as_str()), secs(age));
    }
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// Appends every `*.prom` file of `dir` that passes [`check`], and for each
/// file its `helix_textfile_up` and `helix_textfile_age_seconds`. A folder
/// that cannot be read is an error (the scrape fails with it).
pub fn textfiles(dir: &Path, out: &mut Text) -> std::io::Result<()> {
    let mut names: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".prom"))
        .collect();
    names.sort();
    // The families of the scrape so far, and the two this adds after the
    // files. (Found by review: a file that gave `helix_textfile_up` was
    // served, and the scrape then declared the family twice: invalid, or
    // the file's value standing for helixctl's own.)
    let mut seen = families(&out.0);
    seen.extend([TEXTFILE_UP, TEXTFILE_AGE].map(str::to_owned));
    let mut status = Vec::new();
    for name in names {
        let path = dir.join(&name);
        if name.chars().any(acts_on_terminal) {
            // Not served either: its name would stand in a label.
            let shown = printable(&path.to_string_lossy()).into_owned();
            eprintln!("helixctl metrics: {shown} left out: its name holds a character a terminal acts on");
            continue;
        }
        let age = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .map_or(0.0, |d| d.as_secs_f64());
        let checked = read_small(&path).and_then(|text| check(&text, &mut seen).map(|()| text));
        match checked {
            Ok(text) => {
                out.0.push_str(&text);
                status.push((name, true, age));
            }
            Err(why) => {
                eprintln!("helixctl metrics: {} left out: {}", path.display(), printable(&why));
                status.push((name, false, age));
            }
        }
    }
    out.family(
        TEXTFILE_UP,
        GAUGE,
        "1 if the service's metrics file was read and served, 0 if it was left out (malformed).",
    );
    for (name, up, _) in &status {
        out.sample(TEXTFILE_UP, &format!("file=\"{}\"", label(name)), flag(*up));
    }
    out.family(TEXTFILE_AGE, GAUGE, "Seconds since the service last wrote its metrics file.");
    for (name, _, age) in &status {
        out.sample(TEXTFILE_AGE, &format!("file=\"{}\"", label(name)), *age);
    }
    Ok(())
}

/// The families [`textfiles`] adds for the files it read.
const TEXTFILE_UP: &str = "helix_textfile_up";
const TEXTFILE_AGE: &str = "helix_textfile_age_seconds";

/// A metrics file's text, if it is a regular file of at most
/// [`MAX_TEXTFILE`] bytes. Not a FIFO, a device or a link, which whoever
/// may write the folder can put there: opening a FIFO waited for a writer
/// for ever, and every scrape after with it (found by review).
fn read_small(path: &Path) -> Result<String, String> {
    use std::io::Read as _;
    let file = helix::shm::open_regular(path, std::fs::OpenOptions::new().read(true)).map_err(|e| e.to_string())?;
    let mut text = String::new();
    file.take(MAX_TEXTFILE + 1).read_to_string(&mut text).map_err(|e| e.to_string())?;
    if text.len() as u64 > MAX_TEXTFILE {
        return Err(format!("larger than {MAX_TEXTFILE} bytes"));
    }
    Ok(text)
}

/// The families an exposition text declares (its `# TYPE` lines).
fn families(text: &str) -> BTreeSet<String> {
    text.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next().map(str::to_owned)).collect()
}

/// Checks that `text` is exposition text of `helix_` families whose
/// samples follow their `# TYPE` line, none of them in `seen`; adds its
/// families to `seen`. The error names the line and what is wrong.
pub fn check(text: &str, seen: &mut BTreeSet<String>) -> Result<(), String> {
    if !text.is_empty() && !text.ends_with('\n') {
        return Err("the last line is not ended (a torn write?)".into());
    }
    let mut mine = BTreeSet::new();
    for (i, line) in text.lines().enumerate() {
        let bad = |what: &str| format!("line {}: {what}: {:?}", i + 1, line.chars().take(80).collect::<String>());
        // Anywhere: in a `# HELP` text, a comment or a label value, it
        // would reach the terminal of whoever runs `helixctl metrics`.
        if line.chars().any(acts_on_terminal) {
            return Err(bad("a character a terminal acts on"));
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut w = rest.split(' ');
            let (name, kind) = (w.next().unwrap_or(""), w.next().unwrap_or(""));
            if !metric_name(name) || !["counter", "gauge", "untyped"].contains(&kind) || w.next().is_some() {
                return Err(bad("not `# TYPE helix_NAME counter|gauge|untyped`"));
            }
            if seen.contains(name) || !mine.insert(name.to_owned()) {
                return Err(bad("a family given twice"));
            }
        } else if let Some(rest) = line.strip_prefix("# HELP ") {
            if !metric_name(rest.split(' ').next().unwrap_or("")) {
                return Err(bad("not `# HELP helix_NAME text`"));
            }
        } else if !line.starts_with('#') {
            let name = sample(line).ok_or_else(|| bad("not a sample `helix_NAME{LABELS} VALUE`"))?;
            if !mine.contains(name) {
                return Err(bad("a sample before its family's `# TYPE` line"));
            }
        }
    }
    seen.extend(mine);
    Ok(())
}

fn metric_name(n: &str) -> bool {
    n.starts_with("helix_") && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

/// The metric name of a sample line `NAME{LABELS} VALUE` (labels optional,
/// each `name="escaped value"`), if it is one.
fn sample(line: &str) -> Option<&str> {
    let end = line.find(['{', ' '])?;
    let name = &line[..end];
    let mut rest = &line[end..];
    if let Some(labels) = rest.strip_prefix('{') {
        rest = labels_end(labels)?;
    }
    let value = rest.strip_prefix(' ')?;
    let ok = ["NaN", "+Inf", "-Inf"].contains(&value) || value.parse::<f64>().is_ok_and(f64::is_finite);
    (metric_name(name) && ok).then_some(name)
}

/// What follows the `}` closing `labels` (the text after `{`), if the
/// labels are well formed.
fn labels_end(mut s: &str) -> Option<&str> {
    loop {
        if let Some(rest) = s.strip_prefix('}') {
            return Some(rest);
        }
        let eq = s.find('=')?;
        let name = &s[..eq];
        let first = name.bytes().next()?;
        if !(first.is_ascii_alphabetic() || first == b'_')
            || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return None;
        }
        let mut chars = s[eq + 1..].strip_prefix('"')?.char_indices();
        let close = loop {
            match chars.next()? {
                (_, '\\') => match chars.next()? {
                    (_, '\\' | '"' | 'n') => {}
                    _ => return None,
                },
                (j, '"') => break j,
                (_, '\n') => return None,
                _ => {}
            }
        };
        s = &s[eq + 2 + close + 1..];
        s = s.strip_prefix(',').unwrap_or(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checked(text: &str) -> Result<(), String> {
        check(text, &mut BTreeSet::from(["helix_ring_up".to_owned()]))
    }

    #[test]
    fn a_well_formed_file_passes() {
        let text = "# HELP helix_hal_x X.\n# TYPE helix_hal_x counter\nhelix_hal_x{ring=\"a\\\"b\",r=\"\"} 1.5\nhelix_hal_x 2\n";
        assert_eq!(checked(text), Ok(()));
    }

    #[test]
    fn a_bad_file_is_refused_naming_its_line() {
        let head = "# TYPE helix_a gauge\n";
        for (text, why) in [
            (format!("{head}helix_a 1"), "not ended"),
            (format!("{head}helix_a{{x=\"1\"}} 1 junk\n"), "line 2: not a sample"),
            (format!("{head}helix_a{{x=\"1}} 1\n"), "line 2: not a sample"),
            (format!("{head}helix_a{{x=\"\\q\"}} 1\n"), "line 2: not a sample"),
            (format!("{head}helix_a{{9x=\"1\"}} 1\n"), "line 2: not a sample"),
            (format!("{head}helix_a one\n"), "line 2: not a sample"),
            (format!("{head}helix_b 1\n"), "line 2: a sample before its family"),
            ("# TYPE node_a gauge\nnode_a 1\n".to_owned(), "line 1: not `# TYPE"),
            ("# TYPE helix_ring_up gauge\n".to_owned(), "line 1: a family given twice"),
            (format!("{head}{head}"), "line 2: a family given twice"),
            (format!("{head}\u{1b}[2J\n"), "line 2: a character a terminal acts on"),
            (format!("# HELP helix_a \u{1b}]0;x\u{7}\n{head}"), "line 1: a character a terminal acts on"),
            (format!("{head}# a note \u{9b}2J\n"), "line 2: a character a terminal acts on"),
            (format!("{head}helix_a{{x=\"\u{202e}\"}} 1\n"), "line 2: a character a terminal acts on"),
        ] {
            let err = checked(&text).expect_err(&text);
            assert!(err.contains(why), "{text:?}: {err}");
        }
    }
}
