//! `helixctl verify`: check a helix-ledger folder, as `helix-ledger
//! verify` does (the same code).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

/// Arguments of `helixctl verify`.
#[derive(clap::Args)]
pub struct Args {
    /// The ledger folder.
    #[arg(default_value = "/var/lib/helix/ledger")]
    dir: PathBuf,
}

/// Verifies the ledger; exits 1 on any mismatch.
pub fn run(args: &Args, json: bool) -> Result<ExitCode> {
    let ok = crate::ledger_command::verify(&args.dir, json)?;
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
