//! Value parsers the verbs' arguments share. clap runs them while it parses
//! the command line, so a bad value is a usage error that names the flag
//! (exit 2), never a panic later on.

use std::time::Duration;

/// The longest duration a flag takes: a day.
const MAX_SECONDS: f64 = 86_400.0;

/// A duration given in seconds as a decimal (`0.5`, `2`, `1e-3`): finite,
/// not negative, at most a day. The parser of every duration-like flag
/// (`list --sample`, `top --interval`); declare it with
/// `value_parser = args::seconds, allow_hyphen_values = true` (so that
/// `-1` reaches it, and is refused with a reason, rather than being taken
/// for a flag).
pub fn seconds(text: &str) -> Result<Duration, String> {
    let s: f64 = text.trim().parse().map_err(|_| "not a number of seconds (e.g. 0.5)".to_owned())?;
    if !s.is_finite() {
        return Err("not a finite number of seconds".into());
    }
    if s < 0.0 {
        return Err("a negative number of seconds".into());
    }
    if s > MAX_SECONDS {
        return Err(format!("more than {MAX_SECONDS} seconds (a day), the most a duration may be"));
    }
    Duration::try_from_secs_f64(s).map_err(|e| format!("not a duration in seconds: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_finite_not_negative_and_at_most_a_day() {
        assert_eq!(seconds("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(seconds("0"), Ok(Duration::ZERO));
        assert_eq!(seconds("-0"), Ok(Duration::ZERO));
        assert_eq!(seconds("86400"), Ok(Duration::from_secs(86_400)));
        for bad in ["inf", "-inf", "NaN", "1e30", "1e300", "86400.5", "-1", "-1e-9", "", "soon", "1s"] {
            assert!(seconds(bad).is_err(), "{bad:?} was taken");
        }
    }
}
