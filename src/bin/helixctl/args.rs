//! Value parsers the verbs' arguments share. clap runs them while it parses
//! the command line, so a bad value is a usage error that names the flag
//! (exit 2), never a panic later on.

use std::time::Duration;

use helix::Owners;

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

/// Whose rings the services' are believed to be (`--service-user`): root,
/// this process's uid and the user given, by uid or by name. Without one,
/// the packaged user (`helix`) if this host has it; a user given that the
/// host does not have is an error.
pub fn service_owners(user: Option<&str>) -> anyhow::Result<Owners> {
    let Some(user) = user else { return Ok(Owners::packaged()) };
    if let Ok(uid) = user.parse::<u32>() {
        return Ok(Owners::with_service(uid));
    }
    match helix::process::user_uid(user) {
        Ok(Some(uid)) => Ok(Owners::with_service(uid)),
        Ok(None) => anyhow::bail!("--service-user {user:?}: this host has no such user"),
        Err(e) => anyhow::bail!("--service-user {user:?}: cannot look the user up: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_user_is_a_uid_or_a_known_name() {
        assert_eq!(service_owners(Some("998")).unwrap(), Owners::with_service(998));
        assert_eq!(service_owners(Some("root")).unwrap(), Owners::with_service(0));
        let e = service_owners(Some("no-such-user-of-helix")).unwrap_err().to_string();
        assert_eq!(e, "--service-user \"no-such-user-of-helix\": this host has no such user");
    }

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
