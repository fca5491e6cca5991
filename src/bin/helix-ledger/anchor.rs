//! `helix-ledger anchor DIR`: records that a head of the ledger was
//! exported off the host, in the folder's `anchors` file.
//!
//! `head` itself stays read-only: it runs with read access alone (an
//! auditor, a read-only mount) and takes no lock, and printing a hash is not
//! yet keeping it elsewhere. The step that knows the hash left the host is
//! the one that records it: an operator who copies the printed head, or a
//! mirroring tool once its copy is acknowledged (`--records N --hash H`,
//! for a head it exported earlier).

use std::io::{self, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::json;

use helix::ledger::anchor::{append_anchor, hash_at, parse_hash, read_anchors, Anchor, ANCHORS_FILE};
use helix::ledger::format::hex;
use helix::ledger::retention::read_pruned;
use helix::ledger::verify;

/// Appends an anchor of the current head, or of `given` (a record count
/// and hash exported earlier, checked against the chain), and prints it.
/// Returns false if the ledger's head cannot be read.
pub fn anchor(dir: &Path, note: &str, given: Option<(u64, &str)>, json: bool) -> Result<bool> {
    let (records, hash, segment) = match given {
        Some((records, hash)) => {
            let hash = parse_hash(hash).map_err(anyhow::Error::msg).context("--hash")?;
            check_given(dir, records, &hash)?;
            (records, hash, None)
        }
        None => match verify::head(dir)? {
            Ok(h) if h.records == 0 => bail!("{}: the ledger holds no record yet: nothing to anchor", dir.display()),
            Ok(h) => (h.records, h.hash, Some(h.segment)),
            Err(f) => {
                eprintln!("FAILED: {f}");
                return Ok(false);
            }
        },
    };
    let anchor = Anchor { records, hash, time_ns: helix::process::realtime_ns(), note: note.to_owned() };
    append_anchor(dir, &anchor)?;
    let line = read_anchors(dir)?.list.iter().rev().find(|(_, a)| *a == anchor).map_or(0, |(l, _)| *l);
    let file = dir.join(ANCHORS_FILE);
    let mut out = io::stdout().lock();
    if json {
        let v = json!({
            "hash": hex(&hash), "records": records, "segment": segment, "anchors": file, "line": line,
        });
        writeln!(out, "{v}")?;
    } else {
        let seg = segment.map_or(String::new(), |s| format!(" segment={s}"));
        writeln!(out, "{} records={records}{seg}", hex(&hash))?;
        writeln!(out, "anchored: {} line {line}", file.display())?;
    }
    Ok(true)
}

/// A head exported earlier must be the chain's hash at its record count.
fn check_given(dir: &Path, records: u64, hash: &[u8; 32]) -> Result<()> {
    if records == 0 {
        bail!("--records 0 anchors nothing");
    }
    if let Some(p) = read_pruned(dir)?.filter(|p| p.records >= records) {
        if p.records == records && p.hash == *hash {
            return Ok(());
        }
        bail!(
            "{}: records up to {} were pruned already: record {} cannot be checked",
            dir.display(),
            p.records,
            records - 1
        );
    }
    match hash_at(dir, records)? {
        Some(h) if h == *hash => Ok(()),
        Some(h) => bail!(
            "{}: the chain's hash after {records} records is {}, not {}: not anchored",
            dir.display(),
            hex(&h),
            hex(hash)
        ),
        None => bail!(
            "{}: the ledger holds no chain hash after {records} records (no block ends there, or the ledger is \
             shorter; `export --blocks` lists them): not anchored",
            dir.display()
        ),
    }
}
