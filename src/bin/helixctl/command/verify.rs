//! `helixctl verify`: check a helix-ledger folder, as `helix-ledger
//! verify` does (the same code), `--pubkey` included.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

/// Arguments of `helixctl verify`.
#[derive(clap::Args)]
pub struct Args {
    /// The ledger folder.
    #[arg(default_value = "/var/lib/helix/ledger")]
    dir: PathBuf,
    /// Also check every signed checkpoint against this public key (a
    /// `helix-ledger pubkey` line) and report the first bad or missing
    /// one (docs/ledger.md, "Signed checkpoints").
    #[arg(long, value_name = "FILE")]
    pubkey: Option<PathBuf>,
}

/// Verifies the ledger; exits 1 on any mismatch.
pub fn run(args: &Args, json: bool) -> Result<ExitCode> {
    use crate::ledger_command::{read_public, verify, verify_signed};
    let ok = match &args.pubkey {
        Some(p) => verify_signed(&args.dir, &read_public(p)?, json)?,
        None => verify(&args.dir, json)?,
    };
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
