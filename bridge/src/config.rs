//! `/etc/helix/bridge.toml`: the links one helix-bridge process runs, the
//! NATS servers and stream, and the ledger head mirror (docs/bridge.md,
//! "Configuration"). Errors name the file, the line and the problem, as
//! helixd's and helix-ledger's do: the file is parsed with the programs'
//! shared `conf` module (`src/bin/shared/conf.rs`), compiled in here.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::conf::{ConfigError, Source};
use crate::export::Export;
use crate::nats::{self, Server};
use helix::Namespace;

/// Where the service reads its configuration.
pub const DEFAULT_PATH: &str = "/etc/helix/bridge.toml";

/// The packaged default: every link commented out.
pub const DEFAULT_TEXT: &str = include_str!("../default.toml");

/// The reader name an exporter registers in its ring.
pub const READER_NAME: &str = "helix-bridge";

/// A parsed, checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub namespace: Namespace,
    pub site: String,
    pub host: String,
    pub metrics: Option<SocketAddr>,
    pub server: Server,
    pub exports: Vec<Export>,
    pub imports: Vec<Import>,
    pub ledger: Option<LedgerMirror>,
}

/// One `[[import]]`.
#[derive(Debug, Clone)]
pub struct Import {
    pub source_host: String,
    pub source_ring: String,
    pub ring: String,
    pub max_pending: usize,
}

/// `[ledger]`: the ledger head mirror.
#[derive(Debug, Clone)]
pub struct LedgerMirror {
    pub dir: PathBuf,
    pub interval: Duration,
    /// Record each acknowledged head in the folder's `anchors` file.
    pub anchor: bool,
    /// `helix.<site>.<host>.ledger.head`.
    pub subject: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    namespace: Option<Spanned<String>>,
    site: Option<Spanned<String>>,
    host: Option<Spanned<String>>,
    metrics: Option<Spanned<String>>,
    nats: Option<RawNats>,
    stream: Option<RawStream>,
    ledger: Option<RawLedger>,
    #[serde(default)]
    export: Vec<RawExport>,
    #[serde(default)]
    import: Vec<RawImport>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawNats {
    servers: Option<Spanned<Vec<Spanned<String>>>>,
    credentials: Option<Spanned<String>>,
    ack_timeout_ms: Option<Spanned<i64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStream {
    name: Option<Spanned<String>>,
    replicas: Option<Spanned<i64>>,
    max_mib: Option<Spanned<i64>>,
    max_age_s: Option<Spanned<i64>>,
    duplicate_window_s: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLedger {
    dir: Spanned<String>,
    interval_ms: Option<Spanned<i64>>,
    anchor: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExport {
    ring: Spanned<String>,
    gating: Option<bool>,
    max_in_flight: Option<Spanned<i64>>,
    max_frames: Option<Spanned<i64>>,
    max_message_bytes: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawImport {
    source_host: Spanned<String>,
    source_ring: Spanned<String>,
    ring: Spanned<String>,
    max_pending: Option<Spanned<i64>>,
}

/// A whole number `what` from `min` to `max`, `default` if absent.
fn int(
    src: &Source,
    v: &Option<Spanned<i64>>,
    what: &str,
    range: (i64, i64),
    default: i64,
) -> Result<i64, ConfigError> {
    match v {
        None => Ok(default),
        Some(v) if (range.0..=range.1).contains(v.get_ref()) => Ok(*v.get_ref()),
        Some(v) => Err(src.at(v, format!("{what} must be from {} to {}, not {}", range.0, range.1, v.get_ref()))),
    }
}

/// A site or host name: one subject token once dots are written `~`.
fn token(src: &Source, v: &Spanned<String>, what: &str) -> Result<String, ConfigError> {
    check_token(v.get_ref(), what).map_err(|e| src.at(v, e))?;
    Ok(v.get_ref().clone())
}

/// The longest site or host name: a message carries its host's name after
/// its length in one byte (`wire::header`), and a site is held to the same.
pub const MAX_TOKEN: usize = u8::MAX as usize;

/// Whether `s` may be the `what` token of a subject (a site or a host):
/// 1 to [`MAX_TOKEN`] bytes, none a space, a control, `*`, `>` or `~`
/// (NATS's wildcards, and the bridge's escape for dots). The ad-hoc flags
/// are held to it as the file is.
pub fn check_token(s: &str, what: &str) -> Result<(), String> {
    let bad = s.chars().find(|c| c.is_whitespace() || c.is_control() || matches!(c, '*' | '>' | '~'));
    if s.is_empty() || s.len() > MAX_TOKEN || bad.is_some() {
        return Err(format!("{what} {s:?} must be 1 to {MAX_TOKEN} bytes without spaces, `*`, `>` or `~`"));
    }
    Ok(())
}

fn ring_name(src: &Source, v: &Spanned<String>) -> Result<String, ConfigError> {
    helix::shm::validate_ring_name(v.get_ref()).map_err(|e| src.at(v, e.to_string()))?;
    Ok(v.get_ref().clone())
}

/// Parses configuration `text`, read from `path`.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let src = Source::new(text, path);
    let raw: Raw = src.toml()?;
    let namespace = src.namespace(&raw.namespace)?;
    let site = match &raw.site {
        Some(s) => token(&src, s, "site")?,
        None => "site".to_owned(),
    };
    let host = match &raw.host {
        Some(h) => token(&src, h, "host")?,
        None => crate::hostname().map_err(|e| src.err(None, format!("host is not set and {e:#}")))?,
    };
    let metrics = match &raw.metrics {
        Some(m) => Some(m.get_ref().parse().map_err(|_| {
            src.at(m, format!("metrics {:?} is not an IP address and port, e.g. \"127.0.0.1:9466\"", m.get_ref()))
        })?),
        None => None,
    };
    let server = server(&src, raw.nats.unwrap_or_default(), raw.stream.unwrap_or_default(), &site)?;
    let exports = exports(&src, &raw.export, &site, &host)?;
    let imports = imports(&src, &raw.import)?;
    let ledger = match &raw.ledger {
        Some(l) => Some(ledger(&src, l, &site, &host)?),
        None => None,
    };
    Ok(Config { namespace, site, host, metrics, server, exports, imports, ledger })
}

fn server(src: &Source, n: RawNats, s: RawStream, site: &str) -> Result<Server, ConfigError> {
    let mut urls = vec![];
    match &n.servers {
        Some(list) if list.get_ref().is_empty() => return Err(src.at(list, "servers must list at least one URL")),
        Some(list) => {
            for u in list.get_ref() {
                u.get_ref()
                    .parse::<async_nats::ServerAddr>()
                    .map_err(|e| src.at(u, format!("server {:?} is not a NATS URL: {e}", u.get_ref())))?;
                urls.push(u.get_ref().clone());
            }
        }
        None => urls.push("nats://127.0.0.1:4222".to_owned()),
    }
    let credentials = match &n.credentials {
        Some(c) if c.get_ref().is_empty() => return Err(src.at(c, "credentials must name a file")),
        Some(c) => Some(PathBuf::from(c.get_ref())),
        None => None,
    };
    let stream = match &s.name {
        Some(v) => {
            let ok = v.get_ref().bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if v.get_ref().is_empty() || v.get_ref().len() > 64 || !ok {
                return Err(src.at(v, format!("stream name {:?} must be 1 to 64 of A-Z a-z 0-9 _ -", v.get_ref())));
            }
            v.get_ref().clone()
        }
        None => "HELIX".to_owned(),
    };
    let replicas = int(src, &s.replicas, "replicas", (1, 5), 1)? as usize;
    let max_mib = int(src, &s.max_mib, "max_mib", (-1, i64::MAX >> 20), -1)?;
    let max_age = int(src, &s.max_age_s, "max_age_s", (0, i64::from(u32::MAX)), 0)? as u64;
    let window = int(src, &s.duplicate_window_s, "duplicate_window_s", (1, 86_400), 120)? as u64;
    // JetStream refuses a stream that forgets messages before their ids
    // (found by review: `--check` passed, and the bridge asked again every
    // 2 s for ever, never ready).
    if let (1.., Some(at)) = (max_age, s.duplicate_window_s.as_ref().or(s.max_age_s.as_ref())) {
        if window > max_age {
            return Err(src.at(
                at,
                format!(
                    "duplicate_window_s {window} is longer than max_age_s {max_age}: JetStream refuses such a \
                     stream (make the window at most max_age_s)"
                ),
            ));
        }
    }
    let ack_ms = int(src, &n.ack_timeout_ms, "ack_timeout_ms", (1, 600_000), 10_000)? as u64;
    Ok(Server {
        urls,
        credentials,
        stream,
        stream_subjects: vec![format!("helix.{}.>", nats::token(site))],
        replicas,
        max_bytes: if max_mib < 0 { -1 } else { max_mib << 20 },
        max_age: Duration::from_secs(max_age),
        duplicate_window: Duration::from_secs(window),
        ack_timeout: Duration::from_millis(ack_ms),
    })
}

fn exports(src: &Source, list: &[RawExport], site: &str, host: &str) -> Result<Vec<Export>, ConfigError> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = vec![];
    for e in list {
        let ring = ring_name(src, &e.ring)?;
        let line = src.line(e.ring.span().start);
        if let Some(first) = seen.insert(ring.clone(), line) {
            return Err(src.at(&e.ring, format!("ring {ring} is exported already (line {first})")));
        }
        out.push(Export {
            subject: nats::subject(site, host, &ring),
            ring,
            host: host.to_owned(),
            reader_name: READER_NAME.into(),
            gating: e.gating.unwrap_or(true),
            max_in_flight: int(src, &e.max_in_flight, "max_in_flight", (1, crate::nats::MAX_IN_FLIGHT as i64), 64)?
                as usize,
            max_frames: int(src, &e.max_frames, "max_frames", (1, 1 << 20), 512)? as usize,
            max_bytes: int(src, &e.max_message_bytes, "max_message_bytes", (1, 64 << 20), 256 << 10)? as usize,
        });
    }
    Ok(out)
}

fn imports(src: &Source, list: &[RawImport]) -> Result<Vec<Import>, ConfigError> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = vec![];
    for i in list {
        let ring = ring_name(src, &i.ring)?;
        let line = src.line(i.ring.span().start);
        if let Some(first) = seen.insert(ring.clone(), line) {
            return Err(
                src.at(&i.ring, format!("ring {ring} is imported into already (line {first}): it has one writer"))
            );
        }
        out.push(Import {
            source_host: token(src, &i.source_host, "source_host")?,
            source_ring: ring_name(src, &i.source_ring)?,
            ring,
            max_pending: int(src, &i.max_pending, "max_pending", (1, 65_536), 64)? as usize,
        });
    }
    Ok(out)
}

fn ledger(src: &Source, l: &RawLedger, site: &str, host: &str) -> Result<LedgerMirror, ConfigError> {
    if l.dir.get_ref().is_empty() {
        return Err(src.at(&l.dir, "dir must name the ledger's folder"));
    }
    Ok(LedgerMirror {
        dir: PathBuf::from(l.dir.get_ref()),
        interval: src.millis(&l.interval_ms, "interval_ms")?.unwrap_or(Duration::from_secs(10)),
        anchor: l.anchor.unwrap_or(false),
        subject: format!("helix.{}.{}.ledger.head", nats::token(site), nats::token(host)),
    })
}

impl Config {
    /// Links configured, the ledger mirror counted as one.
    pub fn links(&self) -> usize {
        self.exports.len() + self.imports.len() + usize::from(self.ledger.is_some())
    }

    /// What `--check` prints.
    pub fn report(&self) -> String {
        let s = &self.server;
        let mut out = format!(
            "site {} host {} namespace {}\nnats {} stream {} (replicas {})\n",
            self.site,
            self.host,
            self.namespace.as_str(),
            s.urls.join(","),
            s.stream,
            s.replicas
        );
        for e in &self.exports {
            let gating = if e.gating { "gating" } else { "non-gating" };
            out += &format!("export ring {} -> {} ({gating})\n", e.ring, e.subject);
        }
        for i in &self.imports {
            out +=
                &format!("import {} -> ring {}\n", nats::subject(&self.site, &i.source_host, &i.source_ring), i.ring);
        }
        if let Some(l) = &self.ledger {
            let anchor = if l.anchor { ", anchors recorded" } else { "" };
            out += &format!("ledger head {} -> {} every {:?}{anchor}\n", l.dir.display(), l.subject, l.interval);
        }
        if let Some(m) = self.metrics {
            out += &format!("metrics http://{m}/metrics\n");
        }
        if self.links() == 0 {
            out += "no link configured: the service has nothing to run\n";
        }
        out
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
