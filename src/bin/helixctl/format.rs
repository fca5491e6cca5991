//! How helixctl writes what it found in its tables: the figures several of
//! them show the same way, and strings a peer chose, escaped. (JSON is
//! [`crate::json`].)

use std::borrow::Cow;

/// Whether a terminal may act on `c`: a C0 or C1 control (ESC, BEL, CSI
/// U+009B...), DEL, a bidirectional control, or a line or paragraph
/// separator.
pub fn acts_on_terminal(c: char) -> bool {
    c.is_control() || matches!(c, '\u{200e}' | '\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `s` with every character a terminal acts on ([`acts_on_terminal`])
/// written as Rust escapes it, `\u{1b}`: what text output prints of any
/// string a peer chose (reader names, and errors, which may quote them),
/// so that it cannot retitle, clear or reorder the operator's terminal.
/// JSON output escapes these characters itself ([`crate::json`]).
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(acts_on_terminal) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if acts_on_terminal(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Bytes as `256 MiB`, `4.0 KiB`.
pub fn bytes(b: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < U.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else if v.fract() == 0.0 {
        format!("{v:.0} {}", U[i])
    } else {
        format!("{v:.1} {}", U[i])
    }
}

/// A process column: its pid, "PID (dead)", or "-" when there is none.
pub fn process(pid: Option<u32>, alive: bool) -> String {
    match (pid, alive) {
        (Some(p), true) => p.to_string(),
        (Some(p), false) => format!("{p} (dead)"),
        (None, _) => "-".into(),
    }
}

/// A frame rate rounded to a whole number, `-` if there is none (yet).
pub fn rate(r: Option<f64>) -> String {
    r.map_or("-".into(), |r| format!("{r:.0}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_take_the_largest_unit_and_a_decimal_only_when_needed() {
        for (n, text) in [(512, "512 B"), (4096, "4 KiB"), (1536, "1.5 KiB"), (256 << 20, "256 MiB")] {
            assert_eq!(bytes(n), text);
        }
    }

    #[test]
    fn a_process_column_says_when_the_process_is_dead_or_missing() {
        assert_eq!(process(Some(42), true), "42");
        assert_eq!(process(Some(42), false), "42 (dead)");
        assert_eq!(process(None, false), "-");
    }

    #[test]
    fn what_a_terminal_acts_on_is_escaped_and_the_rest_kept() {
        assert!(matches!(printable("helix-ledger é 日本"), Cow::Borrowed(_)));
        assert_eq!(
            printable("a\u{1b}]0;t\u{7}\n\u{7f}\u{9b}2J\u{202e}b"),
            r"a\u{1b}]0;t\u{7}\u{a}\u{7f}\u{9b}2J\u{202e}b"
        );
    }

    #[test]
    fn a_missing_rate_is_a_dash() {
        assert_eq!((rate(None), rate(Some(1234.6))), ("-".to_owned(), "1235".to_owned()));
    }
}
