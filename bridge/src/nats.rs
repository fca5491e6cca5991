//! The connection to NATS and the JetStream stream the bridge uses.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
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
/// its server waits for it) and counts reconnects.
pub async fn connect(server: &Server, name: &str, counters: Arc<Counters>) -> Result<jetstream::Context> {
    let mut opts = async_nats::ConnectOptions::new().name(name).retry_on_initial_connect().max_reconnects(None);
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
    Ok(jetstream::ContextBuilder::new().timeout(server.ack_timeout).build(client))
}

/// The stream, created with the configured settings if it does not exist
/// (an existing stream is used as it is: its owner may have tuned it).
pub async fn stream(js: &jetstream::Context, server: &Server) -> Result<stream::Stream> {
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
    js.get_or_create_stream(config).await.map_err(|e| anyhow::anyhow!("JetStream stream {:?}: {e}", server.stream))
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

#[cfg(test)]
mod tests {
    #[test]
    fn subjects_keep_four_tokens() {
        assert_eq!(super::subject("plant", "gw1.lan", "control.log"), "helix.plant.gw1~lan.control~log");
    }
}
