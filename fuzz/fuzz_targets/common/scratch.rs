//! A ledger folder of this fuzzing process's own, for the targets that
//! read ledger folders.

use std::fs;
use std::path::PathBuf;
use std::sync::OnceLock;

/// This process's ledger folder (tmpfs, so the ledger's fsyncs cost
/// nothing; `tools/fuzz` sweeps those of dead processes), for the caller
/// to empty before every input.
pub fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = if std::path::Path::new("/dev/shm").is_dir() { "/dev/shm".into() } else { std::env::temp_dir() };
        let dir = base.join(format!("helix-fuzz-ledger-{}", std::process::id()));
        // Remove it when a finding aborts the process (then libfuzzer-sys's
        // hook aborts, and libFuzzer writes the crash artifact).
        let previous = std::panic::take_hook();
        let d = dir.clone();
        std::panic::set_hook(Box::new(move |info| {
            let _ = fs::remove_dir_all(&d);
            previous(info);
        }));
        dir
    })
}
