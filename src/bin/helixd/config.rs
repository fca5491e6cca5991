//! helixd's configuration: `/etc/helix/helix.toml`, or the embedded default.
//!
//! Every error names the file and line, and what is wrong with it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

pub use crate::shared::conf::ConfigError;
// The `[control]` table (a file beside the control thread it configures;
// a child of this module, so helixctl and the fuzz target, which compile
// this file in, get it too).
#[path = "control/config.rs"]
pub mod control;
use crate::shared::conf::Source;
use control::{ControlConfig, RawControl};
use helix::control::{ACK_RING, LOG_RING};
use helix::shm::{validate_ring_name, Namespace};
use helix::telemetry::Sample;
use helix::{CreateError, Policy, Preset, RingOptions};

/// The most streams a simulator source may have: a command steers a
/// stream through a table of them all (32 bytes a stream), made at the
/// first command. (Found by review: with `streams = 4294967295` the first
/// `set` asked for 128 GiB and aborted helixd.)
pub const MAX_SIM_STREAMS: u32 = 1 << 20;

/// The configuration used when there is no file: a `telemetry` ring fed by
/// the simulated HAL, and the twin's `twin.state` and `alarms` rings.
pub const DEFAULT_CONFIG: &str = include_str!("default.toml");

/// One ring as configured.
#[derive(Debug, Clone)]
pub struct RingConfig {
    /// Ring name.
    pub name: String,
    /// The line of its name in the file (for errors found later, such as
    /// `/dev/shm` being too small for it).
    pub line: usize,
    /// Geometry, policy, mode and group.
    pub options: RingOptions,
    /// Replace an existing ring whose geometry differs (or that is corrupt).
    pub recreate: bool,
    /// Remove the ring's files when helixd stops.
    pub unlink_on_stop: bool,
}

/// Two configurations of a ring are the same whatever line they stand on:
/// moving a ring in the file changes nothing.
impl PartialEq for RingConfig {
    fn eq(&self, other: &RingConfig) -> bool {
        (&self.name, &self.options, self.recreate, self.unlink_on_stop)
            == (&other.name, &other.options, other.recreate, other.unlink_on_stop)
    }
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
        /// Where commands for this source are forwarded (`instrument`,
        /// docs/abi.md §12.7); `None`: the source takes no commands.
        instrument: Option<SocketAddr>,
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

impl SourceConfig {
    /// Whether `other` reads and writes as this one does: the same but,
    /// perhaps, for where a UDP source's commands go (a change of which
    /// need not restart its ingest).
    pub fn same_ingest(&self, other: &SourceConfig) -> bool {
        let ingest = |c: &SourceConfig| match &c.kind {
            SourceKind::Udp { bind, .. } => SourceKind::Udp { bind: *bind, instrument: None },
            kind => kind.clone(),
        };
        self.ring == other.ring && ingest(self) == ingest(other)
    }
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
    /// How commands are taken (`[control]`), if at all.
    pub control: Option<ControlConfig>,
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
    control: Option<Spanned<RawControl>>,
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
    instrument: Option<Spanned<String>>,
}

impl Config {
    /// The embedded default configuration.
    #[cfg(test)]
    pub fn embedded() -> Config {
        Config::parse(DEFAULT_CONFIG, Path::new(crate::shared::conf::EMBEDDED))
            .expect("the embedded default configuration is valid")
    }

    /// Parses and validates configuration text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let src = Source::new(text, path);
        let raw: RawConfig = src.toml()?;
        let namespace = src.namespace(&raw.namespace)?;
        let status_interval =
            src.millis(&raw.status_interval_ms, "status_interval_ms")?.unwrap_or(Duration::from_millis(2000));
        let sweep_interval =
            src.millis(&raw.sweep_interval_ms, "sweep_interval_ms")?.unwrap_or(Duration::from_millis(1000));
        let mut rings = Vec::new();
        for r in &raw.ring {
            let ring = ring(&src, r, &rings)?;
            rings.push(ring);
        }
        let mut sources = Vec::new();
        for s in &raw.source {
            let source = source(&src, s.get_ref(), s.span(), &rings, &sources)?;
            sources.push(source);
        }
        let control = raw.control.as_ref().map(|c| control::parse(&src, c, &rings)).transpose()?;
        if control.is_some() {
            // The control thread writes these two: a source there would fail
            // on their writer lease at start (and, added by a reload, retry
            // for good).
            let taken = |s: &&Spanned<RawSource>| [LOG_RING, ACK_RING].contains(&s.get_ref().ring.get_ref().as_str());
            if let Some(s) = raw.source.iter().find(taken) {
                let msg = format!("source on ring {:?}: [control] writes that ring", s.get_ref().ring.get_ref());
                return Err(src.at(&s.get_ref().ring, msg));
            }
        }
        Ok(Config { path: path.to_owned(), namespace, status_interval, sweep_interval, rings, sources, control })
    }

    /// The configured ring called `name`.
    pub fn ring(&self, name: &str) -> Option<&RingConfig> {
        self.rings.iter().find(|r| r.name == name)
    }
}

/// One `[[ring]]` table, checked as `Ring::create` will check it; `before`
/// are the rings above it.
fn ring(src: &Source<'_>, r: &Spanned<RawRing>, before: &[RingConfig]) -> Result<RingConfig, ConfigError> {
    let span = r.span();
    let r = r.get_ref();
    let name = r.name.get_ref();
    validate_ring_name(name).map_err(|e| src.at(&r.name, e.to_string()))?;
    if before.iter().any(|b| &b.name == name) {
        return Err(src.at(&r.name, format!("ring {name:?} is configured twice")));
    }
    let policy = match &r.policy {
        Some(p) => p.get_ref().parse::<Policy>().map_err(|e| src.at(p, e))?,
        None => Policy::Block,
    };
    let group = match &r.group {
        Some(g) => {
            Some(helix::shm::group_id(g.get_ref()).map_err(|e| src.at(g, format!("group {:?}: {e}", g.get_ref())))?)
        }
        None => None,
    };
    let defaults = RingOptions::default();
    let options = RingOptions {
        capacity: *r.capacity.get_ref(),
        max_payload: max_payload(src, r, span.clone())?,
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
            CreateError::Options { field: "capacity", .. } => r.capacity.span(),
            CreateError::Options { field: "mode", .. } => r.mode.as_ref().map_or(span, |m| m.span()),
            CreateError::Options { field: "stall_timeout", .. } => {
                r.stall_timeout_ms.as_ref().map_or(span, |m| m.span())
            }
            _ => span,
        };
        return Err(src.err(Some(at), format!("ring {name:?}: {e}")));
    }
    Ok(RingConfig {
        name: name.clone(),
        line: src.line(r.name.span().start),
        options,
        recreate: r.recreate,
        unlink_on_stop: r.unlink_on_stop,
    })
}

/// The ring's largest payload: its preset's, or its `max_payload`, at
/// least a byte.
fn max_payload(src: &Source<'_>, r: &RawRing, span: std::ops::Range<usize>) -> Result<u32, ConfigError> {
    match (&r.preset, &r.max_payload) {
        (Some(_), Some(m)) => Err(src.at(m, "give either preset or max_payload, not both")),
        (Some(p), None) => Ok(p.get_ref().parse::<Preset>().map_err(|e| src.at(p, e))?.max_payload()),
        (None, Some(m)) if *m.get_ref() == 0 => {
            Err(src.at(m, format!("ring {:?}: max_payload must be at least 1 byte", r.name.get_ref())))
        }
        (None, Some(m)) => Ok(*m.get_ref()),
        (None, None) => {
            Err(src.err(Some(span), format!("ring {:?} needs a preset or a max_payload", r.name.get_ref())))
        }
    }
}

/// One `[[source]]` table; `rings` are the configured rings, `before` the
/// sources above it.
fn source(
    src: &Source<'_>,
    s: &RawSource,
    span: std::ops::Range<usize>,
    rings: &[RingConfig],
    before: &[SourceConfig],
) -> Result<SourceConfig, ConfigError> {
    let ring = s.ring.get_ref();
    let Some(rc) = rings.iter().find(|r| &r.name == ring) else {
        return Err(src.at(&s.ring, format!("source writes ring {ring:?}, which is not configured")));
    };
    if before.iter().any(|b| &b.ring == ring) {
        return Err(src.at(&s.ring, format!("ring {ring:?} already has a source: a ring has one writer")));
    }
    let needs = |what: &str| src.err(Some(span.clone()), format!("a {} source needs {what}", s.kind.get_ref()));
    let kind = match s.kind.get_ref().as_str() {
        "sim" => {
            let streams = s.streams.as_ref().map_or(10_000, |v| *v.get_ref());
            let rate_hz = s.rate_hz.as_ref().map_or(100.0, |v| *v.get_ref());
            if !(1..=MAX_SIM_STREAMS).contains(&streams) {
                let why = format!("streams must be from 1 to {MAX_SIM_STREAMS}");
                return Err(src.err(s.streams.as_ref().map(|v| v.span()), why));
            }
            if !(rate_hz > 0.0 && rate_hz <= 1e6) {
                return Err(
                    src.err(s.rate_hz.as_ref().map(|v| v.span()), "rate_hz must be above 0 and at most 1000000")
                );
            }
            if let Some(i) = &s.instrument {
                return Err(src.at(i, "a sim source takes commands itself: instrument is for a udp source"));
            }
            SourceKind::Sim { streams, rate_hz, seed: s.seed.unwrap_or(1) }
        }
        "udp" => {
            let bind = s.bind.as_ref().ok_or_else(|| needs("bind = \"ADDRESS:PORT\""))?;
            let bind = udp_bind(src, bind, before)?;
            SourceKind::Udp { bind, instrument: s.instrument.as_ref().map(|i| instrument(src, i)).transpose()? }
        }
        other => {
            return Err(src.at(&s.kind, format!("unknown source kind {other:?}: expected \"sim\" or \"udp\"")));
        }
    };
    let sample = std::mem::size_of::<Sample>();
    if (rc.options.max_payload as usize) < sample {
        return Err(src.at(
            &s.ring,
            format!(
                "ring {ring:?} holds payloads of at most {} bytes; a {} source writes {sample}-byte samples",
                rc.options.max_payload,
                s.kind.get_ref()
            ),
        ));
    }
    Ok(SourceConfig { ring: ring.clone(), kind })
}

/// A UDP source's `bind`: an address and port no source `before` it takes
/// too. (Two on one port passed --check, and the start failed on it
/// naming no line: found by review.)
fn udp_bind(src: &Source<'_>, bind: &Spanned<String>, before: &[SourceConfig]) -> Result<SocketAddr, ConfigError> {
    let addr =
        bind.get_ref().parse::<SocketAddr>().map_err(|e| src.at(bind, format!("bind {:?}: {e}", bind.get_ref())))?;
    let taken = |b: &&SourceConfig| matches!(b.kind, SourceKind::Udp { bind, .. } if clash(bind, addr));
    let Some(other) = before.iter().find(taken) else { return Ok(addr) };
    Err(src.at(bind, format!("bind {addr}: the udp source of ring {:?} binds that port already", other.ring)))
}

/// Whether UDP sources bound at `a` and `b` would take the same port: the
/// same address, or a wildcard beside any (port 0 is a new port each).
fn clash(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0 && a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// A UDP source's `instrument`: the address its commands are sent to, a
/// host's address and a port (not 0).
fn instrument(src: &Source<'_>, i: &Spanned<String>) -> Result<SocketAddr, ConfigError> {
    let text = i.get_ref();
    let addr = text.parse::<SocketAddr>().map_err(|e| src.at(i, format!("instrument {text:?}: {e}")))?;
    if addr.port() == 0 || addr.ip().is_unspecified() {
        return Err(src.at(i, format!("instrument {text:?}: commands need a host's address and a port, not 0")));
    }
    Ok(addr)
}

/// Where helixd looks for its configuration by default.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/helix/helix.toml";

/// Loads the configuration helixd should run: `path` if given (it must
/// exist), else /etc/helix/helix.toml if it exists, else the embedded default.
pub fn load_config(path: Option<&Path>) -> Result<Config, ConfigError> {
    crate::shared::conf::find(path, DEFAULT_CONFIG_PATH, DEFAULT_CONFIG, Config::parse)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line_err(text: &str) -> (usize, String) {
        crate::shared::conf::error_of(Config::parse, text)
    }

    #[test]
    fn the_embedded_default_has_the_three_rings_and_the_simulator() {
        let c = Config::embedded();
        let names: Vec<&str> = c.rings.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["telemetry", "twin.state", "alarms", "control.log", "control.acks"]);
        let control = c.control.as_ref().expect("the default takes commands");
        assert_eq!(control.audit_reader.as_deref(), Some("helix-ledger"));
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

    /// Two sources cannot bind one port: the same address, or a wildcard
    /// beside any. Port 0 is a new port each.
    #[test]
    fn two_udp_sources_on_one_port_are_refused_at_the_line() {
        let ring = "[[ring]]\nname = \"a\"\npreset = \"xs\"\ncapacity = 64\n";
        let two = |a: &str, b: &str| {
            let udp =
                |ring: &str, bind: &str| format!("[[source]]\nkind = \"udp\"\nring = \"{ring}\"\nbind = \"{bind}\"\n");
            let b_ring = "[[ring]]\nname = \"b\"\npreset = \"xs\"\ncapacity = 64\n";
            format!("{ring}{b_ring}{}{}", udp("a", a), udp("b", b))
        };
        for (a, b) in
            [("127.0.0.1:9400", "127.0.0.1:9400"), ("0.0.0.0:9400", "127.0.0.1:9400"), ("127.0.0.1:9400", "[::]:9400")]
        {
            let (l, m) = line_err(&two(a, b));
            assert_eq!(
                (l, m.as_str()),
                (16, format!("bind {b}: the udp source of ring \"a\" binds that port already").as_str())
            );
        }
        for (a, b) in
            [("127.0.0.1:9400", "127.0.0.2:9400"), ("127.0.0.1:9400", "127.0.0.1:9401"), ("0.0.0.0:0", "0.0.0.0:0")]
        {
            assert!(Config::parse(&two(a, b), Path::new("t")).is_ok(), "{a} {b}");
        }
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
        let udp = format!("{ring}[[source]]\nkind = \"udp\"\nring = \"a\"\nbind = \"127.0.0.1:0\"\n");
        let (l, m) = line_err(&format!("{udp}instrument = \"plc-7\"\n"));
        assert_eq!(l, 9);
        assert!(m.contains("instrument \"plc-7\"") && m.contains("invalid socket address"), "{m}");
        for zero in ["127.0.0.1:0", "0.0.0.0:7000", "[::]:7000"] {
            let (l, m) = line_err(&format!("{udp}instrument = \"{zero}\"\n"));
            assert_eq!(l, 9, "{zero}");
            assert!(m.contains("a host's address and a port"), "{m}");
        }
        let (l, m) =
            line_err(&format!("{ring}[[source]]\nkind = \"sim\"\nring = \"a\"\ninstrument = \"10.0.0.7:7000\"\n"));
        assert_eq!(l, 8);
        assert!(m.contains("instrument is for a udp source"), "{m}");
        let c = Config::parse(&format!("{udp}instrument = \"10.0.0.7:7000\"\n"), Path::new("t")).unwrap();
        assert_eq!(
            c.sources[0].kind,
            SourceKind::Udp {
                bind: "127.0.0.1:0".parse().unwrap(),
                instrument: Some("10.0.0.7:7000".parse().unwrap())
            }
        );
        assert_eq!(
            line_err(&format!(
                "{ring}[[source]]\nkind = \"sim\"\nring = \"a\"\n[[source]]\nkind = \"sim\"\nring = \"a\"\n"
            ))
            .0,
            10
        );
        assert_eq!(line_err("[[ring]]\nname = \"a\"\npreset = \"xs\"\ncapacity = 64\nmode = 0o400\n").0, 5);
        // Found by review: taken, created with the header's 64 bits of
        // nanoseconds, and then every start found the ring different.
        let (l, m) = line_err(&format!("{ring}stall_timeout_ms = 9223372036854775807\n"));
        assert_eq!(l, 5);
        assert!(m.contains("stall_timeout") && m.contains("584 years"), "{m}");
        assert!(Config::parse(&format!("{ring}stall_timeout_ms = 18446744073709\n"), Path::new("t")).is_ok());
        assert_eq!(line_err("capacity = \n").0, 1);
        assert_eq!(
            line_err("[[ring]]\nname = \"a\"\ncapacity = 64\nmax_payload = 0\n"),
            (4, "ring \"a\": max_payload must be at least 1 byte".into())
        );
        let (l, m) = line_err(
            "[[ring]]\nname = \"a\"\nmax_payload = 8\ncapacity = 64\n[[source]]\nkind = \"sim\"\nring = \"a\"\n",
        );
        assert_eq!(l, 7);
        assert!(m.contains("at most 8 bytes; a sim source writes 40-byte samples"), "{m}");
        assert_eq!(line_err("namespace = \"a.b\"\n").0, 1);
        let sim = format!("{ring}[[source]]\nkind = \"sim\"\nring = \"a\"\n");
        assert_eq!(line_err(&format!("{sim}streams = 4294967295\n")), (8, "streams must be from 1 to 1048576".into()));
        assert!(Config::parse(&format!("{sim}streams = 1048576\n"), Path::new("t")).is_ok());
        let e = Config::parse("x = 1\n", Path::new("t.toml")).unwrap_err().to_string();
        assert!(e.starts_with("t.toml:1: ") && !e.contains('\n'), "{e}");
    }

    #[test]
    fn a_control_log_smaller_than_a_round_a_relative_journal_and_a_ring_named_control_are_refused() {
        let rings = "[[ring]]\nname = \"control.log\"\nmax_payload = 144\ncapacity = 64\npolicy = \"block\"\n\
                     [[ring]]\nname = \"control.acks\"\nmax_payload = 48\ncapacity = 64\npolicy = \"overwrite\"\n";
        let (_, m) = line_err(&format!("{rings}[control]\nlanes = 8\n"));
        assert!(m.contains("\"control.log\" has 64 slots; 8 lanes need at least 128"), "{m}");
        Config::parse(&format!("{rings}[control]\nlanes = 4\n"), Path::new("t")).unwrap();
        let (l, m) = line_err(&format!("{rings}[control]\nlanes = 4\njournal = \"here\"\n"));
        assert_eq!((l, m.as_str()), (13, "journal \"here\" is not an absolute path"));
        // A broadcast ring named as the fan-in ring is, at its name's line.
        let (l, m) = line_err(&format!(
            "{rings}[[ring]]\nname = \"control\"\nmax_payload = 8\ncapacity = 64\n[control]\nlanes = 4\n"
        ));
        assert_eq!(
            (l, m.as_str()),
            (12, "ring \"control\": the name is [control]'s fan-in ring's; name the ring otherwise")
        );
        // Without [control], "control" is a name like any other.
        Config::parse(
            &format!("{rings}[[ring]]\nname = \"control\"\nmax_payload = 8\ncapacity = 64\n"),
            Path::new("t"),
        )
        .unwrap();
    }

    #[test]
    fn control_rings_of_the_wrong_policy_and_an_audit_reader_no_reader_can_be_are_refused() {
        let log = "[[ring]]\nname = \"control.log\"\nmax_payload = 144\ncapacity = 128\n";
        let bare_acks = "[[ring]]\nname = \"control.acks\"\nmax_payload = 48\ncapacity = 64\n";
        let acks = format!("{bare_acks}policy = \"overwrite\"\n");
        let (l, m) = line_err(&format!("{log}policy = \"overwrite\"\n{acks}[control]\n"));
        assert_eq!(l, 11, "the [control] table's line");
        assert!(m.contains("ring \"control.log\" needs policy = \"block\""), "{m}");
        // A ring's policy is `block` unless it says otherwise.
        let (_, m) = line_err(&format!("{log}{bare_acks}[control]\n"));
        assert!(m.contains("ring \"control.acks\" needs policy = \"overwrite\""), "{m}");
        let long = "a".repeat(33);
        let (l, m) = line_err(&format!("{log}{acks}[control]\naudit_reader = \"{long}\"\n"));
        assert_eq!(l, 11);
        assert!(m.contains("is longer than a reader's name may be (32 bytes)"), "{m}");
        let ok = format!("{log}{acks}[control]\naudit_reader = \"{}\"\n", "a".repeat(32));
        Config::parse(&ok, Path::new("t")).unwrap();
    }

    #[test]
    fn answers_those_control_lets_send_cannot_read_are_refused() {
        let log = "[[ring]]\nname = \"control.log\"\nmax_payload = 144\ncapacity = 128\npolicy = \"block\"\n";
        let acks = |mode: &str| {
            format!(
                "[[ring]]\nname = \"control.acks\"\nmax_payload = 48\ncapacity = 64\npolicy = \"overwrite\"\n{mode}"
            )
        };
        // The group may send ([control]'s default mode, 0o660), but a
        // member could not join control.acks to read the answer: named at
        // the ring's line.
        let (l, m) = line_err(&format!("{log}{}[control]\n", acks("mode = 0o644\n")));
        assert_eq!(l, 7, "control.acks's name's line");
        assert!(
            m.contains("ring \"control.acks\" (mode 0o644): [control] (mode 0o660) lets the members of its group send")
                && m.contains("the packaged default is now 0o660"),
            "{m}"
        );
        let (_, m) = line_err(&format!("{log}{}[control]\nmode = 0o662\n", acks("mode = 0o660\n")));
        assert!(m.contains("lets every user send"), "{m}");
        let (_, m) = line_err(&format!("{log}{}[control]\ngroup = \"nogroup\"\n", acks("mode = 0o660\n")));
        assert!(m.contains("the members of its group"), "{m}");
        // Only helixd's user sends: the answers are its own. Every user may
        // read them: whatever the group. The group named, or left to be
        // helixd's: the same group.
        for ok in [
            format!("{log}{}[control]\nmode = 0o600\n", acks("mode = 0o644\n")),
            format!("{log}{}[control]\n", acks("mode = 0o660\n")),
            format!("{log}{}[control]\ngroup = \"nogroup\"\n", acks("mode = 0o666\n")),
            format!("{log}{}[control]\ngroup = \"nogroup\"\n", acks("mode = 0o660\ngroup = \"nogroup\"\n")),
        ] {
            Config::parse(&ok, Path::new("t")).unwrap_or_else(|e| panic!("{e}\n{ok}"));
        }
        let own = nix::unistd::Group::from_gid(nix::unistd::getegid()).unwrap().unwrap().name;
        let named = format!("{log}{}[control]\ngroup = \"{own}\"\n", acks("mode = 0o660\n"));
        Config::parse(&named, Path::new("t")).unwrap();
    }

    #[test]
    fn a_source_on_a_ring_control_writes_is_refused_at_its_line() {
        let rings = "[[ring]]\nname = \"control.log\"\nmax_payload = 144\ncapacity = 128\npolicy = \"block\"\n\
                     [[ring]]\nname = \"control.acks\"\nmax_payload = 48\ncapacity = 64\npolicy = \"overwrite\"\n\
                     mode = 0o660\n";
        let source = "[[source]]\nkind = \"sim\"\nring = \"control.log\"\nstreams = 2\n";
        let (l, m) = line_err(&format!("{rings}{source}[control]\n"));
        assert_eq!((l, m.as_str()), (14, "source on ring \"control.log\": [control] writes that ring"));
        // Without [control], it is a ring like any other.
        Config::parse(&format!("{rings}{source}"), Path::new("t")).unwrap();
    }
}
