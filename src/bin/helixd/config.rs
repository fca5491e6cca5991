//! helixd's configuration: `/etc/helix/helix.toml`, or the embedded default.
//!
//! Every error names the file and line, and what is wrong with it.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::shared::conf::line_of;
pub use crate::shared::conf::ConfigError;
use helix::shm::{validate_ring_name, Namespace};
use helix::{Policy, Preset, RingOptions};

/// The configuration used when there is no file: a `telemetry` ring fed by
/// the simulated HAL, and the twin's `twin.state` and `alarms` rings.
pub const DEFAULT_CONFIG: &str = include_str!("default.toml");

/// One ring as configured.
#[derive(Debug, Clone, PartialEq)]
pub struct RingConfig {
    /// Ring name.
    pub name: String,
    /// Geometry, policy, mode and group.
    pub options: RingOptions,
    /// Replace an existing ring whose geometry differs (or that is corrupt).
    pub recreate: bool,
    /// Remove the ring's files when helixd stops.
    pub unlink_on_stop: bool,
}

/// Where telemetry comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceKind {
    /// Deterministic simulated instruments.
    Sim {
        /// Number of streams.
        streams: u32,
        /// Samples per second per stream.
        rate_hz: f64,
        /// Seed of the simulated values.
        seed: u64,
    },
    /// Datagrams in the documented format (docs/abi.md, "UDP ingest").
    Udp {
        /// Address to bind.
        bind: SocketAddr,
    },
}

/// One HAL source: a thread writing into `ring`.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceConfig {
    /// The ring it writes (it holds that ring's writer lease).
    pub ring: String,
    /// What it reads.
    pub kind: SourceKind,
}

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Where it came from.
    pub path: PathBuf,
    /// Namespace of every ring.
    pub namespace: Namespace,
    /// How often the STATUS line is refreshed.
    pub status_interval: Duration,
    /// How often dead readers and writer leases are swept.
    pub sweep_interval: Duration,
    /// The rings, in file order.
    pub rings: Vec<RingConfig>,
    /// The sources, in file order.
    pub sources: Vec<SourceConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    namespace: Option<Spanned<String>>,
    status_interval_ms: Option<Spanned<u64>>,
    sweep_interval_ms: Option<Spanned<u64>>,
    #[serde(default)]
    ring: Vec<Spanned<RawRing>>,
    #[serde(default)]
    source: Vec<Spanned<RawSource>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRing {
    name: Spanned<String>,
    preset: Option<Spanned<String>>,
    max_payload: Option<Spanned<u32>>,
    capacity: Spanned<u64>,
    policy: Option<Spanned<String>>,
    max_readers: Option<u32>,
    stall_timeout_ms: Option<Spanned<u64>>,
    mode: Option<Spanned<u32>>,
    group: Option<Spanned<String>>,
    #[serde(default)]
    recreate: bool,
    #[serde(default)]
    unlink_on_stop: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    kind: Spanned<String>,
    ring: Spanned<String>,
    streams: Option<Spanned<u32>>,
    rate_hz: Option<Spanned<f64>>,
    seed: Option<u64>,
    bind: Option<Spanned<String>>,
}

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = crate::shared::conf::read(path)?;
        Config::parse(&text, path)
    }

    /// The embedded default configuration.
    pub fn embedded() -> Config {
        Config::parse(DEFAULT_CONFIG, Path::new("<embedded default>"))
            .expect("the embedded default configuration is valid")
    }

    /// Parses and validates configuration text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let err = |span: Option<std::ops::Range<usize>>, message: String| ConfigError {
            path: path.to_owned(),
            line: span.map(|s| line_of(text, s.start)),
            message,
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| err(e.span(), e.message().trim().replace('\n', "; ")))?;

        let namespace = match &raw.namespace {
            Some(ns) => Namespace::new(ns.get_ref()).map_err(|e| err(Some(ns.span()), e.to_string()))?,
            None => Namespace::from_env().map_err(|e| err(None, format!("HELIX_NAMESPACE: {e}")))?,
        };
        let interval = |v: &Option<Spanned<u64>>, default: u64, what: &str| -> Result<Duration, ConfigError> {
            match v {
                Some(v) if *v.get_ref() == 0 => Err(err(Some(v.span()), format!("{what} must be more than 0"))),
                Some(v) => Ok(Duration::from_millis(*v.get_ref())),
                None => Ok(Duration::from_millis(default)),
            }
        };
        let status_interval = interval(&raw.status_interval_ms, 2000, "status_interval_ms")?;
        let sweep_interval = interval(&raw.sweep_interval_ms, 1000, "sweep_interval_ms")?;

        let mut names = BTreeSet::new();
        let mut rings = Vec::new();
        for r in &raw.ring {
            let span = r.span();
            let r = r.get_ref();
            let name = r.name.get_ref();
            validate_ring_name(name).map_err(|e| err(Some(r.name.span()), e.to_string()))?;
            if !names.insert(name.clone()) {
                return Err(err(Some(r.name.span()), format!("ring {name:?} is configured twice")));
            }
            let max_payload = match (&r.preset, &r.max_payload) {
                (Some(_), Some(m)) => {
                    return Err(err(Some(m.span()), "give either preset or max_payload, not both".into()))
                }
                (Some(p), None) => p.get_ref().parse::<Preset>().map_err(|e| err(Some(p.span()), e))?.max_payload(),
                (None, Some(m)) => *m.get_ref(),
                (None, None) => return Err(err(Some(span), format!("ring {name:?} needs a preset or a max_payload"))),
            };
            let policy = match &r.policy {
                Some(p) => p.get_ref().parse::<Policy>().map_err(|e| err(Some(p.span()), e))?,
                None => Policy::Block,
            };
            let group = match &r.group {
                Some(g) => Some(
                    helix::shm::group_id(g.get_ref())
                        .map_err(|e| err(Some(g.span()), format!("group {:?}: {e}", g.get_ref())))?,
                ),
                None => None,
            };
            let defaults = RingOptions::default();
            let options = RingOptions {
                capacity: *r.capacity.get_ref(),
                max_payload,
                policy,
                max_readers: r.max_readers.unwrap_or(defaults.max_readers),
                stall_timeout: r
                    .stall_timeout_ms
                    .as_ref()
                    .map_or(defaults.stall_timeout, |t| Duration::from_millis(*t.get_ref())),
                mode: r.mode.as_ref().map_or(defaults.mode, |m| *m.get_ref()),
                group,
            };
            if let Err(e) = options.validate() {
                let at = match &e {
                    helix::CreateError::Options { field: "capacity", .. } => r.capacity.span(),
                    helix::CreateError::Options { field: "mode", .. } => {
                        r.mode.as_ref().map_or(span.clone(), |m| m.span())
                    }
                    helix::CreateError::Options { field: "stall_timeout", .. } => {
                        r.stall_timeout_ms.as_ref().map_or(span.clone(), |m| m.span())
                    }
                    _ => span.clone(),
                };
                return Err(err(Some(at), format!("ring {name:?}: {e}")));
            }
            rings.push(RingConfig {
                name: name.clone(),
                options,
                recreate: r.recreate,
                unlink_on_stop: r.unlink_on_stop,
            });
        }

        let mut sources = Vec::new();
        let mut written = BTreeSet::new();
        for s in &raw.source {
            let span = s.span();
            let s = s.get_ref();
            let ring = s.ring.get_ref();
            if !names.contains(ring) {
                return Err(err(Some(s.ring.span()), format!("source writes ring {ring:?}, which is not configured")));
            }
            if !written.insert(ring.clone()) {
                return Err(err(
                    Some(s.ring.span()),
                    format!("ring {ring:?} already has a source: a ring has one writer"),
                ));
            }
            let needs = |what: &str| err(Some(span.clone()), format!("a {} source needs {what}", s.kind.get_ref()));
            let kind = match s.kind.get_ref().as_str() {
                "sim" => {
                    let streams = s.streams.as_ref().map_or(10_000, |v| *v.get_ref());
                    let rate_hz = s.rate_hz.as_ref().map_or(100.0, |v| *v.get_ref());
                    if streams == 0 {
                        return Err(err(s.streams.as_ref().map(|v| v.span()), "streams must be at least 1".into()));
                    }
                    if !(rate_hz > 0.0 && rate_hz <= 1e6) {
                        return Err(err(
                            s.rate_hz.as_ref().map(|v| v.span()),
                            "rate_hz must be above 0 and at most 1000000".into(),
                        ));
                    }
                    SourceKind::Sim { streams, rate_hz, seed: s.seed.unwrap_or(1) }
                }
                "udp" => {
                    let bind = s.bind.as_ref().ok_or_else(|| needs("bind = \"ADDRESS:PORT\""))?;
                    let addr = bind
                        .get_ref()
                        .parse::<SocketAddr>()
                        .map_err(|e| err(Some(bind.span()), format!("bind {:?}: {e}", bind.get_ref())))?;
                    SourceKind::Udp { bind: addr }
                }
                other => {
                    return Err(err(
                        Some(s.kind.span()),
                        format!("unknown source kind {other:?}: expected \"sim\" or \"udp\""),
                    ))
                }
            };
            sources.push(SourceConfig { ring: ring.clone(), kind });
        }
        Ok(Config { path: path.to_owned(), namespace, status_interval, sweep_interval, rings, sources })
    }

    /// The configured ring called `name`.
    pub fn ring(&self, name: &str) -> Option<&RingConfig> {
        self.rings.iter().find(|r| r.name == name)
    }
}

/// Where helixd looks for its configuration by default.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/helix/helix.toml";

/// Loads the configuration helixd should run: `path` if given (it must
/// exist), else /etc/helix/helix.toml if it exists, else the embedded default.
pub fn load_config(path: Option<&Path>) -> Result<Config, ConfigError> {
    match path {
        Some(p) => Config::load(p),
        None if Path::new(DEFAULT_CONFIG_PATH).exists() => Config::load(Path::new(DEFAULT_CONFIG_PATH)),
        None => Ok(Config::embedded()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("t.toml"))
    }

    fn line_err(text: &str) -> (usize, String) {
        let e = parse(text).unwrap_err();
        (e.line.unwrap_or(0), e.message)
    }

    #[test]
    fn the_embedded_default_has_the_three_rings_and_the_simulator() {
        let c = Config::embedded();
        let names: Vec<&str> = c.rings.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["telemetry", "twin.state", "alarms"]);
        let t = c.ring("telemetry").unwrap();
        assert_eq!(t.options.policy, Policy::Block);
        // 10,000 streams x 100 Hz = 1 M samples/s; the ring holds over 4 s.
        assert!(t.options.capacity >= 4_000_000, "{}", t.options.capacity);
        assert_eq!(
            c.sources,
            [SourceConfig {
                ring: "telemetry".into(),
                kind: SourceKind::Sim { streams: 10_000, rate_hz: 100.0, seed: 1 }
            }]
        );
    }

    #[test]
    fn each_class_of_mistake_names_its_line() {
        let ring = "[[ring]]\nname = \"a\"\npreset = \"xs\"\ncapacity = 64\n";
        assert_eq!(line_err("bogus = 1\n").0, 1);
        assert!(line_err("bogus = 1\n").1.contains("unknown field `bogus`"));
        let (l, m) = line_err(&format!("{ring}colour = \"red\"\n"));
        assert!(m.contains("unknown field `colour`"), "{m}");
        assert!((1..=5).contains(&l));
        assert_eq!(line_err(&format!("{ring}{ring}")), (6, "ring \"a\" is configured twice".into()));
        let (l, m) = line_err("[[ring]]\nname = \"a\"\npreset = \"xs\"\ncapacity = 100\n");
        assert_eq!(l, 4);
        assert!(m.contains("capacity") && m.contains("power of two"), "{m}");
        let (l, m) = line_err("[[ring]]\nname = \"Bad\"\npreset = \"xs\"\ncapacity = 64\n");
        assert_eq!(l, 2);
        assert!(m.contains("'B'"), "{m}");
        assert_eq!(line_err("[[ring]]\nname = \"a\"\npreset = \"huge\"\ncapacity = 64\n").0, 3);
        assert_eq!(line_err("[[ring]]\nname = \"a\"\npreset = \"xs\"\ncapacity = 64\npolicy = \"drop\"\n").0, 5);
        assert_eq!(line_err("[[ring]]\nname = \"a\"\npreset = \"xs\"\nmax_payload = 8\ncapacity = 64\n").0, 4);
        assert_eq!(line_err(&format!("{ring}[[source]]\nkind = \"sim\"\nring = \"b\"\n")).0, 7);
        assert_eq!(line_err(&format!("{ring}[[source]]\nkind = \"tcp\"\nring = \"a\"\n")).0, 6);
        assert_eq!(line_err(&format!("{ring}[[source]]\nkind = \"udp\"\nring = \"a\"\nbind = \"nowhere\"\n")).0, 8);
        assert_eq!(
            line_err(&format!(
                "{ring}[[source]]\nkind = \"sim\"\nring = \"a\"\n[[source]]\nkind = \"sim\"\nring = \"a\"\n"
            ))
            .0,
            10
        );
        assert_eq!(line_err("[[ring]]\nname = \"a\"\npreset = \"xs\"\ncapacity = 64\nmode = 0o400\n").0, 5);
        assert_eq!(line_err("capacity = \n").0, 1);
        assert_eq!(line_err("namespace = \"a.b\"\n").0, 1);
        let e = parse("x = 1\n").unwrap_err().to_string();
        assert!(e.starts_with("t.toml:1: ") && !e.contains('\n'), "{e}");
    }
}
