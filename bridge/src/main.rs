//! helix-bridge: mirrors HELIX rings across hosts through NATS JetStream
//! (docs/bridge.md).
//!
//! `export` publishes a local ring's frames to `helix.<site>.<host>.<ring>`;
//! `import` writes them into a local ring on another host, exactly once.
//! A program: no `unsafe` (the ring library holds what there is).
#![forbid(unsafe_code)]

// What the HELIX programs share (`src/bin/shared`) and the bridge uses: the
// configuration errors with file:line, the systemd service runner and its
// signals. The bridge uses part of each.
#[path = "../../src/bin/shared/checkpoint.rs"]
mod checkpoint;
#[allow(dead_code)]
#[path = "../../src/bin/shared/conf.rs"]
mod conf;
mod config;
mod counters;
mod export;
mod head;
mod import;
mod links;
mod metrics;
mod nats;
#[allow(dead_code)]
#[path = "../../src/bin/shared/said.rs"]
mod said;
mod serve;
#[allow(dead_code)]
#[path = "../../src/bin/shared/service.rs"]
mod service;
#[allow(dead_code)]
#[path = "../../src/bin/shared/signal.rs"]
mod signal;
mod wire;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use clap::parser::ValueSource;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use helix::Namespace;
use tracing::{info, warn};

use counters::Counters;
use links::Ctx;

#[derive(Parser, Debug)]
#[command(name = "helix-bridge", version, about = "Mirrors HELIX rings across hosts through NATS JetStream")]
struct Cli {
    /// Run the links of this configuration file (the service; default
    /// /etc/helix/bridge.toml when no command is given).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Check the configuration file, print what it configures, and exit.
    #[arg(long)]
    check: bool,
    /// Print the packaged default configuration (every link commented out) and exit.
    #[arg(long)]
    print_default_config: bool,
    /// Print the man page (roff) and exit.
    #[arg(long)]
    man: bool,
    /// Print a shell completion script and exit.
    #[arg(long, value_name = "SHELL")]
    completions: Option<clap_complete::Shell>,
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: Option<Command>,
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
    /// A publish or stream request not answered within this many
    /// milliseconds counts as failed and is sent again (a cluster that
    /// lost its leader answers once it elected another).
    #[arg(long, global = true, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    ack_timeout_ms: u64,
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
    /// Messages published and not yet acknowledged, at most (1 to 65536).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=nats::MAX_IN_FLIGHT as i64))]
    max_in_flight: u32,
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
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    if cli.man {
        return match clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(e.into()),
        };
    }
    if cli.print_default_config {
        print!("{}", config::DEFAULT_TEXT);
        return ExitCode::SUCCESS;
    }
    if let Some(shell) = cli.completions {
        clap_complete::generate(shell, &mut Cli::command(), "helix-bridge", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    tracing_subscriber::fmt().with_writer(std::io::stderr).with_target(false).init();
    // The flags of ad-hoc use (every one of `Common`), which a
    // configuration file replaces: those given. (Found by review: a list
    // written by hand left out --ack-timeout-ms, which was then neither
    // refused nor taken beside a file.)
    let common = <Common as clap::Args>::augment_args(clap::Command::new("common"));
    let given: Vec<&str> = common
        .get_arguments()
        .filter(|a| matches.value_source(a.get_id().as_str()) == Some(ValueSource::CommandLine))
        .filter_map(|a| a.get_long())
        .collect();
    let result = match (&cli.command, cli.check) {
        (Some(_), true) => Err(anyhow::anyhow!("--check checks a configuration file: give no command with it")),
        (Some(_), false) if cli.config.is_some() => {
            Err(anyhow::anyhow!("--config runs the file's links: give no command with it (or no --config)"))
        }
        (Some(command), false) => run(&cli.common, command),
        (None, check) => configured(cli.config, check, &given),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

fn fail(e: anyhow::Error) -> ExitCode {
    eprintln!("helix-bridge: {e:#}");
    ExitCode::FAILURE
}

/// The service: the links of `path` (default /etc/helix/bridge.toml), or
/// with `check` only what it configures. The file is the whole
/// configuration: the ad-hoc flags are refused beside it.
fn configured(path: Option<PathBuf>, check: bool, given: &[&str]) -> Result<()> {
    if let Some(flag) = given.first() {
        bail!("--{flag} is a flag of the export and import commands; with a configuration file, set it in the file");
    }
    let path = path.unwrap_or_else(|| PathBuf::from(config::DEFAULT_PATH));
    let cfg = conf::load(&path, config::parse)?;
    if check {
        // What the service would fail on at start, found now: a credentials
        // file this user cannot read.
        if let Some(creds) = &cfg.server.credentials {
            std::fs::File::open(creds).with_context(|| format!("NATS credentials file {}", creds.display()))?;
        }
        print!("{}", cfg.report());
        // As the unit would run it (its watchdog), or under this one.
        let wd = service::watchdog_interval().unwrap_or(serve::UNIT_WATCHDOG);
        if let Some(why) = serve::ack_timeout_warning(&cfg, wd) {
            println!("warning: {why}");
        }
        return Ok(());
    }
    info!("configuration {}:\n{}", path.display(), cfg.report().trim_end());
    serve::run(cfg)
}

/// The names of an ad-hoc link's flags, checked as the configuration
/// file's are (before, `--host '*'` had every publish fail for ever, and a
/// host longer than a message can name made every message malformed).
fn check_names(common: &Common, command: &Command) -> Result<()> {
    let token = |s: &str, flag: &str| config::check_token(s, flag).map_err(anyhow::Error::msg);
    let ring = |s: &str, flag: &str| helix::shm::validate_ring_name(s).with_context(|| flag.to_owned());
    token(&common.site, "--site")?;
    match command {
        Command::Export(a) => {
            ring(&a.ring, "--ring")?;
            if let Some(h) = &a.host {
                token(h, "--host")?;
            }
        }
        Command::Import(a) => {
            ring(&a.ring, "--ring")?;
            ring(&a.source_ring, "--source-ring")?;
            token(&a.source_host, "--source-host")?;
        }
    }
    Ok(())
}

/// One link from the flags (`export` or `import`).
fn run(common: &Common, command: &Command) -> Result<()> {
    check_names(common, command)?;
    let ns = match &common.namespace {
        Some(n) => Namespace::new(n),
        None => Namespace::from_env(),
    }
    .context("HELIX namespace")?;
    let server = nats::Server {
        urls: common.servers.clone(),
        credentials: common.creds.clone(),
        stream: common.stream.clone(),
        stream_subjects: vec![format!("helix.{}.>", nats::token(&common.site))],
        replicas: common.replicas,
        max_bytes: common.stream_max_bytes,
        max_age: Duration::ZERO,
        duplicate_window: Duration::from_secs(120),
        ack_timeout: Duration::from_millis(common.ack_timeout_ms),
    };
    if let Some(why) = serve::short_acks(server.ack_timeout, "--ack-timeout-ms") {
        warn!("{why}");
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(Counters::default());
    let c = Ctx { server, ns, counters: counters.clone(), stop: stop.clone(), ready: Arc::new(AtomicBool::new(false)) };
    let (direction, ring) = match command {
        Command::Export(a) => ("export", a.ring.clone()),
        Command::Import(a) => ("import", a.ring.clone()),
    };
    if let Some(addr) = &common.metrics {
        metrics::spawn(addr, vec![metrics::Link { direction, ring, counters: counters.clone() }])?;
    }
    rt.block_on(async {
        watch_signals(stop.clone())?;
        match command {
            Command::Export(a) => links::export(&c, &export_link(a, &common.site)?).await,
            Command::Import(a) => {
                let i = config::Import {
                    source_host: a.source_host.clone(),
                    source_ring: a.source_ring.clone(),
                    ring: a.ring.clone(),
                    max_pending: a.max_pending.max(1),
                };
                links::import(&c, &common.site, &i).await
            }
        }
    })?;
    info!("stopped: {}", counters.summary());
    Ok(())
}

/// The export `export --ring ...` asks for.
fn export_link(a: &ExportArgs, site: &str) -> Result<export::Export> {
    let host = match &a.host {
        Some(h) => h.clone(),
        None => hostname()?,
    };
    Ok(export::Export {
        subject: nats::subject(site, &host, &a.ring),
        ring: a.ring.clone(),
        host,
        reader_name: config::READER_NAME.into(),
        gating: !a.non_gating,
        max_in_flight: a.max_in_flight as usize,
        max_frames: a.max_frames.max(1),
        max_bytes: a.max_message_bytes,
    })
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

/// This host's name, as the kernel has it (`uname`: not from
/// `/proc/sys/kernel/hostname`, which the unit's `ProcSubset=pid` hides).
fn hostname() -> Result<String> {
    let h = nix::unistd::gethostname().context("reading this host's name")?;
    h.into_string().map_err(|h| anyhow::anyhow!("this host's name {h:?} is not UTF-8"))
}
