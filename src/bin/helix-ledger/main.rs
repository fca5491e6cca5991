//! helix-ledger: the Blake3 hash-chained audit ledger. See `helix-ledger --help`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};

#[path = "../shared/mod.rs"]
mod shared;

mod anchor;
mod command;
mod config;
mod keys;
mod metrics;
mod replay;
mod retention;
mod run;
mod syncer;
mod tap;

use config::LedgerConfig;
use shared::cli::ServiceFlags;

#[derive(Parser)]
#[command(
    name = "helix-ledger",
    version,
    about = "Records every frame of HELIX rings in a Blake3 hash-chained, append-only ledger",
    long_about = "Records every frame of HELIX rings in a Blake3 hash-chained, append-only ledger.\n\n\
                  Without a subcommand it runs the recorder: it attaches to the configured rings as a gating \
                  reader and appends each frame to segment files in the ledger folder (format: docs/ledger.md)."
)]
struct Cli {
    /// Configuration file (default: /etc/helix/ledger.toml if it exists,
    /// else the embedded default: record `telemetry` and `control.log` in /var/lib/helix/ledger).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Ledger folder (overrides the configuration's `dir`).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Ring to record (repeatable; overrides the configuration's `rings`).
    #[arg(long = "ring", value_name = "NAME")]
    rings: Vec<String>,
    /// fdatasync interval in milliseconds (overrides `fsync_interval_ms`).
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..=60000))]
    fsync_interval_ms: Option<u64>,
    /// Segment size in MiB (overrides `segment_size_mib`).
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u64).range(1..=65536))]
    segment_size_mib: Option<u64>,
    /// The key that signs checkpoints (overrides the configuration's `key`).
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// Seconds between signed checkpoints, 0 for none (overrides
    /// `checkpoint_interval_s`).
    #[arg(long, value_name = "S", value_parser = clap::value_parser!(u32).range(0..=config::MAX_CHECKPOINT_S as i64))]
    checkpoint_interval_s: Option<u32>,
    #[command(flatten)]
    service: ServiceFlags,
    #[command(flatten)]
    metrics: shared::textfile::MetricsFlag,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Recompute every chain hash and check every record; print the first
    /// bad block (segment, offset, block, the records and sequences it
    /// covers) or the record count and the final hash. Exits 1 on any
    /// mismatch.
    Verify {
        /// Ledger folder.
        dir: PathBuf,
        /// Also check every signed checkpoint against this public key (a
        /// `helix-ledger pubkey` line) and report the first bad or missing
        /// one (docs/ledger.md, "Signed checkpoints").
        #[arg(long, value_name = "FILE")]
        pubkey: Option<PathBuf>,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print the latest chain hash (for anchoring it elsewhere), checking
    /// the last segment.
    Head {
        /// Ledger folder.
        dir: PathBuf,
        /// The latest signed checkpoint instead: its fields, key id and
        /// signature (exits 1 if there is none).
        #[arg(long)]
        signed: bool,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Create a new Ed25519 signing key for checkpoints in FILE (mode
    /// 0400; an existing file is never overwritten) and print its public key.
    Keygen {
        /// The key file to create.
        path: PathBuf,
    },
    /// Print the public key of a signing key, as `verify --pubkey` reads it.
    Pubkey {
        /// The signing key (default: the configuration's `key`).
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
    },
    /// Sign the folder's `pruned` manifest with the signing key, vouching
    /// that the segments it names were pruned by this ledger's retention
    /// (by a recorder that did not sign then): a signing recorder prunes
    /// nothing past a manifest that is not its key's. The kept segments
    /// must verify from it.
    SignPruned {
        /// Ledger folder.
        dir: PathBuf,
        /// The signing key (default: the configuration's `key`).
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
    },
    /// Record that the ledger's head was exported off the host: print it
    /// (as `head` does) and append it to the folder's `anchors` file, or
    /// record a head exported earlier (--records and --hash). Retention
    /// deletes only segments an anchor covers.
    Anchor {
        /// Ledger folder.
        dir: PathBuf,
        /// Where the hash was exported to (free text, kept in the line).
        #[arg(long, default_value = "")]
        note: String,
        /// The record count of a head exported earlier (with --hash).
        #[arg(long, requires = "hash")]
        records: Option<u64>,
        /// The chain hash of a head exported earlier (with --records).
        #[arg(long, requires = "records")]
        hash: Option<String>,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print records as JSON lines, for audits: those with a sequence in
    /// FROM..=TO (GAPs overlapping it); the last record of each block
    /// carries the block's chain hash. The chain is checked on the way.
    Export {
        /// Ledger folder.
        dir: PathBuf,
        /// First sequence.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Last sequence.
        #[arg(long, default_value_t = u64::MAX)]
        to: u64,
        /// Only this ring's records.
        #[arg(long)]
        ring: Option<String>,
        /// One line per block instead of per record: its first and last
        /// record and sequence, and its chain hash (for anchoring).
        #[arg(long)]
        blocks: bool,
    },
    /// Publish the recorded frames of a ring's range into a new ring
    /// (replay.RING by default), with their kind and payload as recorded,
    /// at the recorded pace, as fast as possible or N times faster; a GAP
    /// arrives as a frame of kind 0x484C0001 (docs/ledger.md, "Replay").
    /// The chain is checked on the way. Any reader runs on the ring
    /// unchanged, e.g. helix-twin with telemetry_ring = "replay.telemetry".
    Replay(replay::ReplayArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // --check also reads the signing key, as the recorder would at start.
    let checked = || load(&cli).and_then(|c| keys::signer(&c).map(|_| c));
    if let Some(code) = cli.service.act(Cli::command(), crate::config::DEFAULT_CONFIG, checked, report) {
        return code;
    }
    let verdict = match &cli.command {
        Some(Command::Verify { dir, pubkey, json }) => match pubkey {
            Some(p) => command::read_public(p).and_then(|k| command::verify_signed(dir, &k, *json)),
            None => command::verify(dir, *json),
        },
        Some(Command::Head { dir, signed: true, json }) => command::head_signed(dir, *json),
        Some(Command::Head { dir, json, .. }) => command::head(dir, *json),
        Some(Command::Keygen { path }) => keys::keygen(path),
        Some(Command::Pubkey { key: Some(k) }) => keys::pubkey(k),
        Some(Command::Pubkey { key: None }) => load(&cli).and_then(|c| keys::pubkey(&c.key)),
        Some(Command::SignPruned { dir, key: Some(k) }) => keys::sign_pruned(dir, k),
        Some(Command::SignPruned { dir, key: None }) => load(&cli).and_then(|c| keys::sign_pruned(dir, &c.key)),
        Some(Command::Export { dir, from, to, ring, blocks }) => {
            command::export(dir, ring.as_deref(), *from, *to, *blocks)
        }
        Some(Command::Anchor { dir, note, records, hash, json }) => {
            anchor::anchor(dir, note, records.zip(hash.as_deref()), *json)
        }
        Some(Command::Replay(args)) => load(&cli).and_then(|c| replay::replay(&c.namespace, args)),
        None => return record(&cli),
    };
    match verdict {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("helix-ledger: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The configuration, with the command line's overrides.
fn load(cli: &Cli) -> anyhow::Result<LedgerConfig> {
    let mut cfg = LedgerConfig::find(cli.config.as_deref())?;
    if let Some(dir) = &cli.dir {
        cfg.dir = dir.clone();
    }
    if !cli.rings.is_empty() {
        for (k, r) in cli.rings.iter().enumerate() {
            helix::shm::validate_ring_name(r).with_context(|| format!("--ring {r}"))?;
            // Two recorders of one ring would record its frames twice.
            if cli.rings[..k].contains(r) {
                anyhow::bail!("--ring {r}: the ring is given twice");
            }
        }
        cfg.rings = cli.rings.clone();
    }
    if let Some(ms) = cli.fsync_interval_ms {
        cfg.fsync_interval = std::time::Duration::from_millis(ms);
    }
    if let Some(mib) = cli.segment_size_mib {
        cfg.segment_size = mib << 20;
    }
    if let Some(key) = &cli.key {
        cfg.key = key.clone();
    }
    if let Some(s) = cli.checkpoint_interval_s {
        cfg.checkpoint_interval_s = s;
    }
    Ok(cfg)
}

/// What `--check` prints of a valid configuration.
fn report(c: &LedgerConfig) -> String {
    format!(
        "{}: ok, namespace {}; records {} in {}; fsync every {:?}, segments of {} MiB; {}; {}\n",
        c.path.display(),
        c.namespace,
        c.rings.join(", "),
        c.dir.display(),
        c.fsync_interval,
        c.segment_size >> 20,
        match c.checkpoint_interval_s {
            0 => "no signed checkpoints".to_string(),
            s => format!("checkpoints signed every {s} s with {}", c.key.display()),
        },
        match (c.retention.max_age, c.retention.max_total_bytes) {
            _ if c.retention.compress && !c.retention.is_set() => "closed segments compressed, all kept".to_string(),
            (None, None) => "no retention (segments are kept)".to_string(),
            (age, total) => format!(
                "retention: anchored closed segments deleted past {}{}{}{}",
                age.map_or(String::new(), |a| format!("{} days", round3(a.as_secs_f64() / 86400.0))),
                if age.is_some() && total.is_some() { " or " } else { "" },
                total.map_or(String::new(), |b| format!("{} GiB in total", round3(b as f64 / (1u64 << 30) as f64))),
                if c.retention.compress { "; closed segments compressed" } else { "" },
            ),
        }
    )
}

/// `x` to three decimals, as a configuration would say it.
fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Runs the recorder.
fn record(cli: &Cli) -> ExitCode {
    let cfg = match load(cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("helix-ledger: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    crate::shared::cli::run(|| {
        tracing::info!(
            "configuration {}; namespace {}; ledger {}; rings {}; fsync every {:?}",
            cfg.path.display(),
            cfg.namespace,
            cfg.dir.display(),
            cfg.rings.join(", "),
            cfg.fsync_interval
        );
        crate::run::run(&cfg, cli.metrics.metrics_file.clone())
    })
}
