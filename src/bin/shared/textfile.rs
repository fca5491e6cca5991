//! Prometheus text files (exposition format 0.0.4): the families a service
//! writes of itself (helixd's HAL sources, helix-ledger's recorder), put in
//! place atomically at every status refresh with `--metrics-file PATH`, and
//! read back by `helixctl metrics --textfiles DIR` (or node_exporter's
//! textfile collector). docs/operations.md lists what each writes.

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::{info, warn};

/// The exposition text being built: families, each a HELP and TYPE line
/// followed by its samples.
#[derive(Debug, Default)]
pub struct Text(pub String);

impl Text {
    /// Starts the family `name` of type `kind` (counter or gauge).
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    /// One sample of the family started last; `labels` already escaped
    /// (see [`label`]), without braces, possibly empty.
    pub fn sample(&mut self, name: &str, labels: &str, v: f64) {
        let _ = writeln!(self.0, "{name}{{{labels}}} {v}");
    }
}

/// A label value as the format asks: `\`, `"` and newlines escaped.
pub fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// A flag as a sample value.
pub fn flag(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Writes `text` to `path` atomically: a reader (a scrape) sees the old
/// file or the new one whole, never a part. The temporary file beside it
/// has a name that does not end in `.prom`, so no reader takes it. The
/// file is 0644 whatever the umask: readable by all (node_exporter's
/// textfile collector runs as its own user; the counters are no secret),
/// written by its service alone.
pub fn write_atomic(path: &Path, text: &str) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = std::fs::File::create(&tmp)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o644))?;
    file.write_all(text.as_bytes())?;
    std::fs::rename(&tmp, path)
}

/// The `--metrics-file` of a service, and whether its last write failed
/// (logged once, until a write succeeds again: a full or missing folder
/// must not flood the journal, nor stop the service).
#[derive(Debug)]
pub struct Publisher {
    path: Option<PathBuf>,
    failing: bool,
}

impl Publisher {
    /// A publisher writing to `path`, or doing nothing without one.
    pub fn new(path: Option<PathBuf>) -> Publisher {
        Publisher { path, failing: false }
    }

    /// Whether it writes anywhere (the text need not be built otherwise).
    pub fn enabled(&self) -> bool {
        self.path.is_some()
    }

    /// Replaces the file with `text`.
    pub fn publish(&mut self, text: &str) {
        let Some(path) = &self.path else { return };
        match write_atomic(path, text) {
            Ok(()) if self.failing => {
                self.failing = false;
                info!("metrics file {} written again", path.display());
            }
            Ok(()) => {}
            Err(e) if !self.failing => {
                self.failing = true;
                warn!(
                    "cannot write the metrics file {}: {e} (the service runs on; its metrics are stale)",
                    path.display()
                );
            }
            Err(_) => {}
        }
    }
}

/// The `--metrics-file` flag of a service that writes its own counters.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct MetricsFlag {
    /// Write this service's own counters to this file (Prometheus text
    /// format), replaced atomically at every status refresh, for `helixctl
    /// metrics --textfiles DIR` or node_exporter's textfile collector
    /// (docs/operations.md). The package's unit writes
    /// /run/helix/metrics/PROGRAM.prom.
    #[arg(long, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_file_replaces_the_old_whole_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.prom");
        write_atomic(&path, "a 1\n").unwrap();
        write_atomic(&path, "a 2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a 2\n");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("x.prom")]);
    }

    #[test]
    fn a_written_file_is_readable_by_all_and_written_by_its_owner_alone() {
        // Found by review: the mode was the umask's (0640 or 0660 under the
        // units), which node_exporter could not read; a temporary file left
        // with another mode kept it too.
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.prom");
        let tmp = dir.path().join("x.prom.tmp");
        std::fs::write(&tmp, "").unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o660)).unwrap();
        write_atomic(&path, "a 1\n").unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777, 0o644);
    }

    #[test]
    fn a_label_value_is_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
