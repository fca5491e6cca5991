//! The JSON documents helix-bench writes: one per scenario run
//! ([`Document`], `--json FILE`), and the index of a report run
//! ([`Index`], `report.json`). Their shape is in docs/helix-bench.md.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use serde::{Deserialize, Serialize};

use crate::machine::{load_average, Machine};

// The `--json FILE` every scenario takes. (A `//` comment: clap would make
// a doc comment the help text of every command that flattens this.)
#[derive(Args, Debug, Clone, Default, PartialEq)]
pub struct JsonArg {
    /// Also write the parameters and results as one JSON document here
    /// (shape: docs/helix-bench.md).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

impl JsonArg {
    /// The command-line flags that give this value.
    pub fn to_args(&self) -> Vec<String> {
        self.json.iter().flat_map(|p| ["--json".to_owned(), p.display().to_string()]).collect()
    }

    /// Writes `results` as the document of `scenario`, if asked to;
    /// `load_before` and `started` were taken when the run began.
    pub fn write<R: Serialize>(
        &self,
        scenario: &str,
        load_before: Option<[f64; 3]>,
        started: String,
        results: R,
    ) -> Result<()> {
        if let Some(path) = &self.json {
            Document::new(scenario, load_before, started, results).write(path)?;
            println!("wrote {}", path.display());
        }
        Ok(())
    }
}

/// The head of every JSON document `helix-bench --json` writes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Document<R> {
    /// Which scenario: pingpong, stream, attach, ledger, e2e.
    pub scenario: String,
    /// The machine.
    pub machine: Machine,
    /// The command line, program name first.
    pub command: Vec<String>,
    /// When the run started, UTC.
    pub started: String,
    /// The load averages when the run started and ended (other work on the
    /// machine shows here).
    pub load_before: Option<[f64; 3]>,
    /// See `load_before`.
    pub load_after: Option<[f64; 3]>,
    /// The scenario's parameters and results.
    pub results: R,
}

impl<R: Serialize> Document<R> {
    /// A document for `scenario`, stamped now, with this process's command
    /// line; `load_before` should be sampled when the run began.
    pub fn new(scenario: &str, load_before: Option<[f64; 3]>, started: String, results: R) -> Document<R> {
        Document {
            scenario: scenario.into(),
            machine: Machine::detect(),
            command: std::env::args().collect(),
            started,
            load_before,
            load_after: load_average(),
            results,
        }
    }

    /// Writes it, pretty-printed, to `path`.
    pub fn write(&self, path: &Path) -> Result<()> {
        write_pretty(path, self)
    }
}

/// Reads a JSON document `helix-bench --json` wrote.
pub fn read_document<R: serde::de::DeserializeOwned>(path: &Path) -> Result<Document<R>> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    serde_json::from_str(&text).with_context(|| path.display().to_string())
}

/// Writes `value` to `path` as pretty-printed JSON and a newline.
pub fn write_pretty<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value)? + "\n";
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// What `helix-bench report` writes to `report.json` in its folder: the run
/// and each scenario it ran.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Index {
    /// The report command, program name first.
    pub command: Vec<String>,
    /// The machine.
    pub machine: Machine,
    /// Start, UTC.
    pub started: String,
    /// End, UTC.
    pub finished: String,
    /// Seconds the whole run took.
    pub seconds: f64,
    /// The load averages before the first scenario (other work on the
    /// machine shows here).
    pub load_before: Option<[f64; 3]>,
    /// Percent of all CPU time over the run that the hypervisor gave to
    /// others while a virtual CPU wanted it (`/proc/stat` steal), if known.
    pub steal_percent: Option<f64>,
    /// Each scenario, in the order run.
    pub steps: Vec<Step>,
}

/// One scenario of a report run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Step {
    /// The scenario.
    pub scenario: String,
    /// Its command, program name first.
    pub command: Vec<String>,
    /// Its JSON document, relative to the report folder.
    pub json: String,
    /// Seconds it took.
    pub seconds: f64,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// The current UTC time as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC", rem / 3600, rem / 60 % 60, rem % 60)
}
