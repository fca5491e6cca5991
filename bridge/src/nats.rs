//! The connection to NATS and the JetStream stream the bridge uses.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use async_nats::jetstream::consumer::{pull::OrderedConfig, Consumer};
use async_nats::jetstream::context::{CreateStreamError, CreateStreamErrorKind};
use async_nats::jetstream::stream::{ConsumerError, ConsumerErrorKind};
use async_nats::jetstream::{self, stream};
use tracing::{info, warn};

use crate::counters::Counters;

/// Where and how to connect, and the stream's settings.
#[derive(Debug, Clone)]
pub struct Server {
    /// Server URLs (`nats://host:port`), tried in turn.
    pub urls: Vec<String>,
    /// A NATS credentials file (`.creds`), if the server asks for one.
    pub credentials: Option<PathBuf>,
    /// The JetStream stream's name.
    pub stream: String,
    /// Subjects the stream holds (created if missing).
    pub stream_subjects: Vec<String>,
    /// Replicas of the stream (1, 3 or 5 in a cluster).
    pub replicas: usize,
    /// Largest size of the stream in bytes (-1: unlimited); the oldest
    /// messages go first.
    pub max_bytes: i64,
    /// Largest age of a message (0: unlimited).
    pub max_age: Duration,
    /// JetStream drops a message whose `Nats-Msg-Id` it saw within this.
    pub duplicate_window: Duration,
    /// How long an acknowledgement may take before the publish counts as
    /// failed.
    pub ack_timeout: Duration,
}

/// Connects (retrying while the server is down: a bridge started before
/// its server waits for it) and counts reconnects. `queue`: the commands
/// (publishes) the client holds for its connection at most, if not its
/// default 2,048.
pub async fn connect(
    server: &Server,
    name: &str,
    counters: Arc<Counters>,
    queue: Option<usize>,
) -> Result<jetstream::Context> {
    let mut opts = async_nats::ConnectOptions::new().name(name).retry_on_initial_connect().max_reconnects(None);
    if let Some(queue) = queue {
        opts = opts.client_capacity(queue);
    }
    if let Some(path) = &server.credentials {
        opts = opts
            .credentials_file(path)
            .await
            .with_context(|| format!("reading the NATS credentials file {}", path.display()))?;
    }
    let opts = opts.event_callback(move |event| {
        let counters = counters.clone();
        async move {
            match event {
                async_nats::Event::Connected => {
                    Counters::add(&counters.reconnects, 1);
                    info!("NATS: connected");
                }
                async_nats::Event::Disconnected => warn!("NATS: disconnected; reconnecting"),
                other => warn!("NATS: {other}"),
            }
        }
    });
    let urls: Vec<async_nats::ServerAddr> = server
        .urls
        .iter()
        .map(|u| u.parse().with_context(|| format!("NATS server URL {u:?}")))
        .collect::<Result<_>>()?;
    let client = opts.connect(urls).await.context("connecting to NATS")?;
    // The exporter keeps its own flight (`max_in_flight`, up to
    // `MAX_IN_FLIGHT`); the client's limit, 5,000 by default, must not be
    // below it: a publish past it waited for a permit the exporter's own
    // unawaited acknowledgements held, for ever (found by review).
    // An acknowledgement whose future was dropped (a flight given up after
    // a failure) holds its permit no longer than an awaited one waits.
    let js = jetstream::ContextBuilder::new()
        .timeout(server.ack_timeout)
        .ack_timeout(server.ack_timeout)
        .max_ack_inflight(MAX_IN_FLIGHT);
    Ok(js.build(client))
}

/// The most messages an exporter keeps published and not yet acknowledged
/// (`max_in_flight`'s upper bound).
pub const MAX_IN_FLIGHT: usize = 65_536;

/// The stream, created with the configured settings if it does not exist
/// (an existing stream is used as it is: its owner may have tuned it).
pub async fn stream(js: &jetstream::Context, server: &Server, beats: &AtomicU64) -> Result<stream::Stream> {
    let config = stream::Config {
        name: server.stream.clone(),
        subjects: server.stream_subjects.clone(),
        num_replicas: server.replicas,
        max_bytes: server.max_bytes,
        max_age: server.max_age,
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        discard: stream::DiscardPolicy::Old,
        duplicate_window: server.duplicate_window,
        ..Default::default()
    };
    let what = format!("JetStream stream {:?}", server.stream);
    let passing = |e: &CreateStreamError| passing_stream_error(e.kind());
    let stream = patiently(&what, passing, beats, || js.get_or_create_stream(config.clone())).await?;
    // One of that name made for other subjects (another site's, sharing the
    // account and the default name): every publish of this site would fail
    // with "no stream", saying nothing of why (found by review).
    let taken = &stream.cached_info().config.subjects;
    for subject in server.stream_subjects.iter().filter(|s| !taken.iter().any(|t| covers(t, s))) {
        warn!(
            "{what} exists and takes the subjects {taken:?}, not this site's {subject:?}: its messages find no \
             stream; give this site a stream of its own ([nats] stream, --stream) or add the subject to that one"
        );
    }
    Ok(stream)
}

/// Whether every subject `pattern` matches is one `filter` matches (NATS
/// subjects: `*` one token, `>` the rest).
fn covers(filter: &str, pattern: &str) -> bool {
    let (mut f, mut p) = (filter.split('.'), pattern.split('.'));
    loop {
        match (f.next(), p.next()) {
            (Some(">"), Some(_)) => return true,
            (None, None) => return true,
            (Some(_), Some(">")) | (Some(_), None) | (None, Some(_)) => return false,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b && b != "*" => {}
            _ => return false,
        }
    }
}

/// An ordered consumer of `stream`, retried while the cluster cannot
/// answer (see [`patiently`]).
pub async fn ordered_consumer(
    stream: &stream::Stream,
    config: OrderedConfig,
    beats: &AtomicU64,
) -> Result<Consumer<OrderedConfig>> {
    let passing = |e: &ConsumerError| match e.kind() {
        ConsumerErrorKind::TimedOut | ConsumerErrorKind::Request => true,
        ConsumerErrorKind::JetStream(e) => e.code() >= 500,
        _ => false,
    };
    patiently("creating a consumer", passing, beats, || stream.create_consumer(config.clone())).await
}

/// Whether `e` (from [`stream`]) is JetStream refusing the stream (its
/// subjects overlap another's, a setting it does not take), which trying
/// again does not mend, rather than a server that does not answer yet.
pub fn stream_refused(e: &anyhow::Error) -> bool {
    e.downcast_ref::<CreateStreamError>().is_some_and(|e| !passing_stream_error(e.kind()))
}

fn passing_stream_error(kind: CreateStreamErrorKind) -> bool {
    match kind {
        CreateStreamErrorKind::TimedOut
        | CreateStreamErrorKind::JetStreamUnavailable
        | CreateStreamErrorKind::Response => true,
        CreateStreamErrorKind::JetStream(e) => e.code() >= 500,
        _ => false,
    }
}

/// How long a JetStream request that failed for a reason that passes is
/// tried again: a cluster whose node died, or that just started, has no
/// stream or meta leader for some seconds (its requests time out or answer
/// 503) and elects one.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Runs `op` until it succeeds, again every second while its error
/// `passing` and [`PATIENCE`] has not run out; a lasting or other error is
/// returned. Each try counts in `beats`: the link is waiting, not stuck,
/// and its watchdog pings go on.
async fn patiently<T, E, F, Fut>(what: &str, passing: impl Fn(&E) -> bool, beats: &AtomicU64, mut op: F) -> Result<T>
where
    E: std::error::Error + Send + Sync + 'static,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        beats.fetch_add(1, Ordering::Relaxed);
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if passing(&e) && tokio::time::Instant::now() < deadline => {
                warn!("{what}: {e}; trying again in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            // Kept whole: a caller tells a refusal from a wait by its kind.
            Err(e) => return Err(anyhow::Error::new(e).context(what.to_owned())),
        }
    }
}

/// A subject token for a host or ring name: NATS subjects split at `.`, so
/// a dot in a name is written `~` (a character neither names allow).
pub fn token(name: &str) -> String {
    name.replace('.', "~")
}

/// `helix.<site>.<host>.<ring>`.
pub fn subject(site: &str, host: &str, ring: &str) -> String {
    format!("helix.{}.{}.{}", token(site), token(host), token(ring))
}

/// Makes `server`'s stream again if `e` (a failed publish) says no stream
/// takes the subject because it was deleted; says so. (Found by review:
/// the exporter, and then the ledger head mirror, failed every publish
/// until restarted.) A stream that is there, not taking the subject, is
/// left as its owner configured it.
pub async fn make_stream_if_gone(js: &jetstream::Context, server: &Server, e: &anyhow::Error, beats: &AtomicU64) {
    use async_nats::jetstream::context::{PublishError, PublishErrorKind};
    let gone = e.downcast_ref::<PublishError>().is_some_and(|p| p.kind() == PublishErrorKind::StreamNotFound);
    if !gone || js.get_stream(&server.stream).await.is_ok() {
        return;
    }
    match stream(js, server, beats).await {
        Ok(_) => warn!("JetStream stream {:?} was gone (deleted?): made it again", server.stream),
        Err(e) => warn!("JetStream stream {:?} is gone, and cannot be made again yet: {e:#}", server.stream),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_stream_covers_a_site_only_if_it_takes_every_subject_of_it() {
        for (filter, pattern, covered) in [
            ("helix.plant.>", "helix.plant.>", true),
            ("helix.>", "helix.plant.>", true),
            ("helix.*.>", "helix.plant.>", true),
            (">", "helix.plant.>", true),
            ("helix.other.>", "helix.plant.>", false),
            ("helix.plant.*", "helix.plant.>", false),
            ("helix.plant", "helix.plant.>", false),
            ("helix.plant.a.>", "helix.plant.>", false),
            ("helix.*", "helix.*", true),
            ("helix.plant", "helix.*", false),
        ] {
            assert_eq!(super::covers(filter, pattern), covered, "{filter} {pattern}");
        }
    }

    use std::cell::Cell;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A passing error is tried again until the operation succeeds; a
    /// lasting one is returned at once, named.
    #[test]
    fn passing_errors_are_tried_again_and_lasting_ones_are_not() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let calls = Cell::new(0);
        let flaky = || {
            calls.set(calls.get() + 1);
            let n = calls.get();
            async move {
                if n < 3 {
                    Err(std::io::Error::other("timed out"))
                } else {
                    Ok(n)
                }
            }
        };
        let beats = AtomicU64::new(0);
        let passing = |e: &std::io::Error| e.to_string() == "timed out";
        let got = rt.block_on(super::patiently("op", passing, &beats, flaky));
        assert_eq!(got.unwrap(), 3);
        // Each try is a beat: a link waiting for JetStream is not stuck.
        assert_eq!(beats.load(Ordering::Relaxed), 3);
        calls.set(0);
        let lasting = || {
            calls.set(calls.get() + 1);
            async { Err::<(), _>(std::io::Error::other("invalid name")) }
        };
        let e = rt.block_on(super::patiently("creating X", passing, &beats, lasting)).unwrap_err();
        assert_eq!((format!("{e:#}"), calls.get()), ("creating X: invalid name".to_owned(), 1));
        // The error itself is kept, for a caller to judge by its kind.
        assert!(e.downcast_ref::<std::io::Error>().is_some());
    }

    #[test]
    fn subjects_keep_four_tokens() {
        assert_eq!(super::subject("plant", "gw1.lan", "control.log"), "helix.plant.gw1~lan.control~log");
    }
}
