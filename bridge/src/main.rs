//! helix-bridge: mirrors HELIX rings across hosts through NATS JetStream
//! (docs/bridge.md).
//!
//! `export` publishes a local ring's frames to `helix.<site>.<host>.<ring>`;
//! `import` writes them into a local ring on another host, exactly once.
//! A program: no `unsafe` (the ring library holds what there is).
#![forbid(unsafe_code)]

mod counters;
mod export;
mod import;
mod metrics;
mod nats;
mod wire;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use async_nats::jetstream::consumer::{pull::OrderedConfig, DeliverPolicy};
use clap::{Args, Parser, Subcommand};
use futures::StreamExt;
use helix::Namespace;
use tracing::{info, warn};

use counters::Counters;
use import::Importer;

#[derive(Parser, Debug)]
#[command(name = "helix-bridge", version, about = "Mirrors HELIX rings across hosts through NATS JetStream")]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Debug)]
struct Common {
    /// NATS server URL; repeat for a cluster.
    #[arg(long = "server", global = true, default_value = "nats://127.0.0.1:4222")]
    servers: Vec<String>,
    /// NATS credentials file.
    #[arg(long, global = true)]
    creds: Option<PathBuf>,
    /// JetStream stream (created if missing, holding `helix.<site>.>`).
    #[arg(long, global = true, default_value = "HELIX")]
    stream: String,
    /// Replicas of a stream the bridge creates.
    #[arg(long, global = true, default_value_t = 1)]
    replicas: usize,
    /// Largest size of a stream the bridge creates, bytes (-1: unlimited).
    #[arg(long, global = true, default_value_t = -1, allow_negative_numbers = true)]
    stream_max_bytes: i64,
    /// The site: the second token of the subjects.
    #[arg(long, global = true, default_value = "site")]
    site: String,
    /// HELIX namespace of the local rings (default: $HELIX_NAMESPACE or helix).
    #[arg(long, global = true)]
    namespace: Option<String>,
    /// Serve Prometheus metrics on this address (host:port) at /metrics.
    #[arg(long, global = true)]
    metrics: Option<String>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Publish a local ring's frames to JetStream.
    Export(ExportArgs),
    /// Write a JetStream subject's frames into a local ring, as its writer.
    Import(ImportArgs),
}

#[derive(Args, Debug)]
struct ExportArgs {
    /// The ring to export.
    #[arg(long)]
    ring: String,
    /// This host's name in the subject (default: the kernel's hostname).
    #[arg(long)]
    host: Option<String>,
    /// Do not gate the ring's writer; frames lost to overruns are sent as gaps.
    #[arg(long)]
    non_gating: bool,
    /// Messages published and not yet acknowledged, at most.
    #[arg(long, default_value_t = 64)]
    max_in_flight: usize,
    /// Frames packed in one message, at most.
    #[arg(long, default_value_t = 512)]
    max_frames: usize,
    /// Bytes of one message, about (NATS refuses messages over its max_payload, 1 MiB by default).
    #[arg(long, default_value_t = 256 * 1024)]
    max_message_bytes: usize,
}

#[derive(Args, Debug)]
struct ImportArgs {
    /// The exporting host, as it names itself.
    #[arg(long)]
    source_host: String,
    /// The ring exported there.
    #[arg(long)]
    source_ring: String,
    /// The local ring to write (it must exist; the importer is its only writer).
    #[arg(long)]
    ring: String,
    /// Messages ahead of a hole kept while waiting for it to fill.
    #[arg(long, default_value_t = 64)]
    max_pending: usize,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt().with_writer(std::io::stderr).with_target(false).init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("helix-bridge: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let ns = match &cli.common.namespace {
        Some(n) => Namespace::new(n),
        None => Namespace::from_env(),
    }
    .context("HELIX namespace")?;
    let server = nats::Server {
        urls: cli.common.servers.clone(),
        credentials: cli.common.creds.clone(),
        stream: cli.common.stream.clone(),
        stream_subjects: vec![format!("helix.{}.>", nats::token(&cli.common.site))],
        replicas: cli.common.replicas,
        max_bytes: cli.common.stream_max_bytes,
        max_age: Duration::ZERO,
        ack_timeout: Duration::from_secs(10),
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(Counters::default());
    rt.block_on(async {
        watch_signals(stop.clone())?;
        let r = Run { ns: &ns, common: &cli.common, server: &server, counters: counters.clone(), stop: &stop };
        match &cli.command {
            Command::Export(a) => export(r, a).await,
            Command::Import(a) => import(r, a).await,
        }
    })?;
    info!("stopped: {}", counters.summary());
    Ok(())
}

/// SIGTERM and SIGINT set `stop`; the loops see it within 200 ms.
fn watch_signals(stop: Arc<AtomicBool>) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        stop.store(true, Ordering::Relaxed);
    });
    Ok(())
}

fn hostname() -> Result<String> {
    let h = std::fs::read_to_string("/proc/sys/kernel/hostname").context("reading this host's name")?;
    Ok(h.trim().to_owned())
}

/// What both directions run with.
struct Run<'a> {
    ns: &'a Namespace,
    common: &'a Common,
    server: &'a nats::Server,
    counters: Arc<Counters>,
    stop: &'a AtomicBool,
}

async fn export(r: Run<'_>, a: &ExportArgs) -> Result<()> {
    let Run { ns, common: c, server, counters, stop } = r;
    if let Some(addr) = &c.metrics {
        metrics::spawn(addr, counters.clone(), "export", a.ring.clone())?;
    }
    let host = match &a.host {
        Some(h) => h.clone(),
        None => hostname()?,
    };
    let x = export::Export {
        subject: nats::subject(&c.site, &host, &a.ring),
        ring: a.ring.clone(),
        host,
        reader_name: "helix-bridge".into(),
        gating: !a.non_gating,
        max_in_flight: a.max_in_flight.max(1),
        max_frames: a.max_frames.max(1),
        max_bytes: a.max_message_bytes,
    };
    let js = nats::connect(server, "helix-bridge export", counters.clone()).await?;
    nats::stream(&js, server).await?;
    export::run(js, ns, &x, counters, stop).await
}

async fn import(r: Run<'_>, a: &ImportArgs) -> Result<()> {
    let Run { ns, common: c, server, counters, stop } = r;
    if let Some(addr) = &c.metrics {
        metrics::spawn(addr, counters.clone(), "import", a.ring.clone())?;
    }
    let (mut imp, place) = Importer::open(ns, &a.ring, &a.source_host, &a.source_ring, a.max_pending.max(1))?;
    imp.counters = counters.clone();
    let js = nats::connect(server, "helix-bridge import", counters).await?;
    let stream = nats::stream(&js, server).await?;
    let subject = nats::subject(&c.site, &a.source_host, &a.source_ring);
    info!("importing {subject} into ring {} from stream sequence {}", a.ring, place.resume.max(1));
    let mut next = place.resume;
    let mut last_arrival = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let config = OrderedConfig {
            filter_subject: subject.clone(),
            deliver_policy: match next {
                0 => DeliverPolicy::All,
                s => DeliverPolicy::ByStartSequence { start_sequence: s },
            },
            ..Default::default()
        };
        let consumer = nats::ordered_consumer(&stream, config).await?;
        let mut messages = consumer.messages().await.map_err(|e| anyhow::anyhow!("consuming: {e}"))?;
        while !stop.load(Ordering::Relaxed) {
            match tokio::time::timeout(Duration::from_millis(200), messages.next()).await {
                Err(_) => {
                    if imp.pending() > 0 && last_arrival.elapsed() >= import::HOLE_TIMEOUT {
                        imp.fill_hole("nothing arrived to fill it for 10 s")?;
                    }
                }
                Ok(Some(Ok(msg))) => {
                    let seq =
                        msg.info().map_err(|e| anyhow::anyhow!("a message without stream info: {e}"))?.stream_sequence;
                    imp.offer(seq, &msg.payload)?;
                    next = seq + 1;
                    last_arrival = Instant::now();
                }
                Ok(Some(Err(e))) => {
                    warn!("consuming {subject}: {e}; consuming again from stream sequence {next}");
                    break;
                }
                Ok(None) => break,
            }
        }
    }
    info!("importer stopped at source sequence {}", imp.hwm());
    Ok(())
}
