//! helix-ledger's configuration: `/etc/helix/ledger.toml`, or the embedded
//! default. Every error names the file and line, and what is wrong.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::shared::conf::{ConfigError, Source};
use helix::ledger::retention::Policy;
use helix::shm::{validate_ring_name, Namespace};

/// The configuration used when there is no file.
pub const DEFAULT_CONFIG: &str = include_str!("default.toml");

/// Where the configuration is looked for.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/helix/ledger.toml";

/// What helix-ledger records, and how.
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerConfig {
    /// The file it came from (or `<embedded default>`).
    pub path: PathBuf,
    /// The rings' namespace.
    pub namespace: Namespace,
    /// The ledger folder.
    pub dir: PathBuf,
    /// The rings recorded.
    pub rings: Vec<String>,
    /// How often written records are made durable.
    pub fsync_interval: Duration,
    /// Segment size at which the next segment starts, in bytes.
    pub segment_size: u64,
    /// Which closed segments the recorder deletes (`[retention]`; off
    /// unless a limit is set).
    pub retention: Policy,
    /// The Ed25519 key that signs checkpoints (`key`).
    pub key: PathBuf,
    /// Seconds between signed checkpoints; 0: none, and no key is read
    /// (`checkpoint_interval_s`).
    pub checkpoint_interval_s: u32,
}

/// Where the signing key is by default.
pub const DEFAULT_KEY: &str = "/etc/helix/ledger.key";
/// The default and the largest checkpoint interval, in seconds.
const DEFAULT_CHECKPOINT_S: u32 = 60;
pub const MAX_CHECKPOINT_S: u32 = 86_400;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    namespace: Option<Spanned<String>>,
    dir: Option<Spanned<String>>,
    rings: Option<Spanned<Vec<Spanned<String>>>>,
    fsync_interval_ms: Option<Spanned<u64>>,
    segment_size_mib: Option<Spanned<u64>>,
    key: Option<Spanned<String>>,
    checkpoint_interval_s: Option<Spanned<i64>>,
    retention: Option<RawRetention>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    max_age_days: Option<Spanned<f64>>,
    max_total_gib: Option<Spanned<f64>>,
    compress: Option<bool>,
}

/// The largest `max_age_days` (a century) and `max_total_gib` (1 EiB).
const MAX_AGE_DAYS: f64 = 36_500.0;
const MAX_TOTAL_GIB: f64 = (1u64 << 30) as f64;

impl LedgerConfig {
    /// `path` if given (it must exist), else /etc/helix/ledger.toml if it
    /// exists, else the embedded default.
    pub fn find(path: Option<&Path>) -> Result<LedgerConfig, ConfigError> {
        crate::shared::conf::find(path, DEFAULT_CONFIG_PATH, DEFAULT_CONFIG, LedgerConfig::parse)
    }

    /// Parses and validates configuration text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<LedgerConfig, ConfigError> {
        let src = Source::new(text, path);
        let raw: Raw = src.toml()?;
        let namespace = src.namespace(&raw.namespace)?;
        let dir = absolute(&src, raw.dir.as_ref(), "dir", "/var/lib/helix/ledger")?;
        let mut rings = Vec::new();
        match &raw.rings {
            Some(list) if list.get_ref().is_empty() => return Err(src.at(list, "rings must name at least one ring")),
            Some(list) => {
                for r in list.get_ref() {
                    validate_ring_name(r.get_ref()).map_err(|e| src.at(r, e.to_string()))?;
                    if rings.contains(r.get_ref()) {
                        return Err(src.at(r, format!("ring {:?} is listed twice", r.get_ref())));
                    }
                    rings.push(r.get_ref().clone());
                }
            }
            None => rings.push("telemetry".into()),
        }
        let fsync_interval = match &raw.fsync_interval_ms {
            Some(v) if *v.get_ref() == 0 || *v.get_ref() > 60_000 => {
                return Err(src.at(v, "fsync_interval_ms must be 1 to 60000"))
            }
            Some(v) => Duration::from_millis(*v.get_ref()),
            None => Duration::from_millis(10),
        };
        let segment_size = match &raw.segment_size_mib {
            Some(v) if *v.get_ref() == 0 || *v.get_ref() > 65536 => {
                return Err(src.at(v, "segment_size_mib must be 1 to 65536"))
            }
            Some(v) => *v.get_ref() << 20,
            None => 64 << 20,
        };
        let retention = retention(&src, raw.retention.as_ref())?;
        let key = absolute(&src, raw.key.as_ref(), "key", DEFAULT_KEY)?;
        let checkpoint_interval_s = match &raw.checkpoint_interval_s {
            Some(v) => u32::try_from(*v.get_ref()).ok().filter(|s| *s <= MAX_CHECKPOINT_S).ok_or_else(|| {
                src.at(v, format!("checkpoint_interval_s must be 0 (no signed checkpoints) to {MAX_CHECKPOINT_S}"))
            })?,
            None => DEFAULT_CHECKPOINT_S,
        };
        Ok(LedgerConfig {
            path: path.to_owned(),
            namespace,
            dir,
            rings,
            fsync_interval,
            segment_size,
            retention,
            key,
            checkpoint_interval_s,
        })
    }
}

/// `[retention]`: each limit positive, finite and at most its maximum.
fn retention(src: &Source, raw: Option<&RawRetention>) -> Result<Policy, ConfigError> {
    let Some(raw) = raw else { return Ok(Policy::default()) };
    let limit = |v: &Option<Spanned<f64>>, name: &str, max: f64| match v {
        Some(v) if !(*v.get_ref() > 0.0 && *v.get_ref() <= max) => {
            Err(src.at(v, format!("{name} must be more than 0 and at most {max}")))
        }
        Some(v) => Ok(Some(*v.get_ref())),
        None => Ok(None),
    };
    let age = limit(&raw.max_age_days, "max_age_days", MAX_AGE_DAYS)?;
    let total = limit(&raw.max_total_gib, "max_total_gib", MAX_TOTAL_GIB)?;
    Ok(Policy {
        max_age: age.map(|d| Duration::from_secs_f64(d * 86400.0)),
        max_total_bytes: total.map(|g| (g * (1u64 << 30) as f64) as u64),
        compress: raw.compress.unwrap_or(false),
    })
}

/// The path `field` gives, `default` without one. Absolute: the service
/// runs from /, and a `--check` run elsewhere would judge another folder
/// and key (found by review).
fn absolute(src: &Source<'_>, v: Option<&Spanned<String>>, field: &str, default: &str) -> Result<PathBuf, ConfigError> {
    match v {
        Some(p) if !Path::new(p.get_ref()).is_absolute() => {
            Err(src.at(p, format!("{field} must be an absolute path (the service runs from /)")))
        }
        Some(p) => Ok(PathBuf::from(p.get_ref())),
        None => Ok(PathBuf::from(default)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line_err(text: &str) -> (Option<usize>, String) {
        let e = LedgerConfig::parse(text, Path::new("l.toml")).unwrap_err();
        (e.line, e.message)
    }

    #[test]
    fn the_default_records_telemetry_and_mistakes_name_their_line() {
        let c = LedgerConfig::parse(DEFAULT_CONFIG, Path::new("d")).unwrap();
        assert_eq!(
            (c.rings, c.fsync_interval, c.segment_size),
            (
                ["telemetry", "control.log", "control.acks"].map(String::from).to_vec(),
                Duration::from_millis(10),
                64 << 20
            )
        );
        assert_eq!(c.dir, PathBuf::from("/var/lib/helix/ledger"));
        assert_eq!(line_err("dir = \"/x\"\nrings = []\n"), (Some(2), "rings must name at least one ring".into()));
        assert_eq!(line_err("rings = [\"a\",\n \"a\"]\n").0, Some(2));
        assert_eq!(line_err("\n\nfsync_interval_ms = 0\n").0, Some(3));
        assert_eq!(line_err("segment_size_mib = -1\n").0, Some(1));
        assert!(line_err("colour = 1\n").1.contains("unknown field `colour`"));
        assert_eq!(line_err("rings = [\"Bad Name\"]\n").0, Some(1));
        let relative = "dir must be an absolute path (the service runs from /)";
        assert_eq!(line_err("\ndir = \"ledger\"\n"), (Some(2), relative.into()));
        assert_eq!(line_err("dir = \"\"\n"), (Some(1), relative.into()));
        for key in ["k", ""] {
            let want = "key must be an absolute path (the service runs from /)";
            assert_eq!(line_err(&format!("key = \"{key}\"\n")), (Some(1), want.into()));
        }
    }

    #[test]
    fn checkpoints_are_signed_every_minute_by_default_and_the_interval_is_checked() {
        let c = LedgerConfig::parse(DEFAULT_CONFIG, Path::new("d")).unwrap();
        assert_eq!((c.key, c.checkpoint_interval_s), (PathBuf::from(DEFAULT_KEY), 60));
        let c = LedgerConfig::parse("key = \"/k\"\ncheckpoint_interval_s = 0\n", Path::new("l")).unwrap();
        assert_eq!((c.key, c.checkpoint_interval_s), (PathBuf::from("/k"), 0));
        let want = "checkpoint_interval_s must be 0 (no signed checkpoints) to 86400";
        assert_eq!(line_err("\ncheckpoint_interval_s = -1\n"), (Some(2), want.into()));
        assert_eq!(line_err("checkpoint_interval_s = 86401\n"), (Some(1), want.into()));
    }

    #[test]
    fn retention_is_off_by_default_and_its_limits_are_checked() {
        let c = LedgerConfig::parse(DEFAULT_CONFIG, Path::new("d")).unwrap();
        assert!(!c.retention.is_set());
        let c = LedgerConfig::parse("[retention]\nmax_age_days = 30\nmax_total_gib = 0.5\n", Path::new("l")).unwrap();
        assert_eq!(c.retention.max_age, Some(Duration::from_secs(30 * 86400)));
        assert_eq!(c.retention.max_total_bytes, Some(512 << 20));
        let c = LedgerConfig::parse("[retention]\nmax_total_gib = 2\n", Path::new("l")).unwrap();
        assert_eq!((c.retention.max_age, c.retention.max_total_bytes), (None, Some(2 << 30)));
        assert_eq!(
            line_err("[retention]\n\nmax_age_days = 0\n"),
            (Some(3), "max_age_days must be more than 0 and at most 36500".into())
        );
        assert_eq!(line_err("[retention]\nmax_total_gib = -1\n").0, Some(2));
        assert_eq!(line_err("[retention]\nmax_total_gib = nan\n").0, Some(2));
        assert!(line_err("[retention]\nmax_size = 1\n").1.contains("unknown field `max_size`"));
        let c = LedgerConfig::parse("[retention]\ncompress = true\n", Path::new("l")).unwrap();
        assert!(c.retention.compress && !c.retention.is_set());
        assert_eq!(line_err("[retention]\ncompress = \"lz4\"\n").0, Some(2));
    }
}
