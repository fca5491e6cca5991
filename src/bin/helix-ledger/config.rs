//! helix-ledger's configuration: `/etc/helix/ledger.toml`, or the embedded
//! default. Every error names the file and line, and what is wrong.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::shared::conf::{ConfigError, Source};
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
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    namespace: Option<Spanned<String>>,
    dir: Option<Spanned<String>>,
    rings: Option<Spanned<Vec<Spanned<String>>>>,
    fsync_interval_ms: Option<Spanned<u64>>,
    segment_size_mib: Option<Spanned<u64>>,
}

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
        let dir = match &raw.dir {
            Some(d) if d.get_ref().is_empty() => return Err(src.at(d, "dir must not be empty")),
            Some(d) => PathBuf::from(d.get_ref()),
            None => PathBuf::from("/var/lib/helix/ledger"),
        };
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
        Ok(LedgerConfig { path: path.to_owned(), namespace, dir, rings, fsync_interval, segment_size })
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
            (vec!["telemetry".to_string()], Duration::from_millis(10), 64 << 20)
        );
        assert_eq!(c.dir, PathBuf::from("/var/lib/helix/ledger"));
        assert_eq!(line_err("dir = \"/x\"\nrings = []\n"), (Some(2), "rings must name at least one ring".into()));
        assert_eq!(line_err("rings = [\"a\",\n \"a\"]\n").0, Some(2));
        assert_eq!(line_err("\n\nfsync_interval_ms = 0\n").0, Some(3));
        assert_eq!(line_err("segment_size_mib = -1\n").0, Some(1));
        assert!(line_err("colour = 1\n").1.contains("unknown field `colour`"));
        assert_eq!(line_err("rings = [\"Bad Name\"]\n").0, Some(1));
    }
}
