//! The journal's file: opened once, checked to be helixd's own, and read
//! through the same descriptor; the files a rewrite makes beside it; its
//! lines parsed.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::{apply, Line, LogMark, PlantState, Recovered, MAX_BYTES, MAX_LINES};
use helix::control::{Ack, FORMAT_VERSION};

/// Opens (or creates, mode 0600) the journal at `path` for reading and
/// writing, and reads it: the file and its bytes. It must be helixd's:
/// a regular file, not a link, owned by its user, writable by nobody
/// else, at most [`MAX_BYTES`] long (under `/dev/shm` anyone may plant
/// something by that name first: a FIFO would block a read, a link to
/// `/dev/zero` never end one). One descriptor is opened, without
/// following a link or waiting, and checked before a byte is read.
pub(super) fn open(path: &Path) -> Result<(File, Vec<u8>)> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let what = || format!("control journal {}", path.display());
    let opened = helix::shm::open_regular(path, OpenOptions::new().read(true).write(true).create(true).mode(0o600));
    let mut file = opened.map_err(|e| match e.kind() {
        // A link, a FIFO, a device: named, as it is.
        std::io::ErrorKind::InvalidInput => {
            anyhow::anyhow!("{} is {e}: not helixd's own file: remove it, or set [control] journal", what())
        }
        _ => anyhow::Error::new(e).context(what()),
    })?;
    let meta = file.metadata().with_context(what)?;
    let me = helix::process::my_uid();
    // Another user's journal in use: most likely the service's, and this
    // helixd runs as someone else (found by review: the advice was to
    // remove the running service's journal).
    if meta.uid() != me && matches!(file.try_lock(), Err(std::fs::TryLockError::WouldBlock)) {
        bail!(
            "{} is in use by another process, and is uid {}'s: if that is the running helixd, run this one as that \
             user (it runs as uid {me}), or stop it first",
            what(),
            meta.uid()
        );
    }
    if meta.uid() != me || meta.mode() & 0o022 != 0 {
        bail!(
            "{} is not helixd's own file (a {}, owner uid {}, mode {:o}; helixd runs as uid {me}): remove it, or \
             set [control] journal",
            what(),
            helix::shm::file_kind(&meta),
            meta.uid(),
            meta.mode() & 0o7777
        );
    }
    let too_long = |len: u64| format!("{}: {len} bytes, more than a journal ever holds ({MAX_BYTES})", what());
    if meta.len() > MAX_BYTES {
        bail!(too_long(meta.len()));
    }
    lock(&file).with_context(what)?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    (&mut file).take(MAX_BYTES + 1).read_to_end(&mut bytes).with_context(what)?;
    if bytes.len() as u64 > MAX_BYTES {
        bail!(too_long(bytes.len() as u64));
    }
    Ok((file, bytes))
}

/// Takes the journal's lock (`flock`, released by the kernel when helixd
/// exits, however it exits), or says who may hold it. Two helixd given
/// the same `[control] journal` (a copied configuration) each rewrote the
/// file at start and wrote on into the one they had opened: the first's
/// answers went to a file no longer at the path. The second is refused.
/// A rewrite's new file is locked before it takes the journal's name.
pub(super) fn lock(file: &File) -> Result<()> {
    match file.try_lock() {
        Ok(()) => Ok(()),
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "in use by another process (another helixd whose [control] journal is this file?): each helixd needs a \
             journal of its own"
        ),
        Err(std::fs::TryLockError::Error(e)) => Err(anyhow::Error::new(e).context("locking it")),
    }
}

/// A new file beside the journal at `path` to rewrite it into (mode
/// 0600, made exclusively), `<name>.<random>.new`, removed if the rewrite
/// fails. Beside the rings (in /dev/shm) anyone may make files, and
/// nobody else may remove them: a name helixd could guess would let any
/// user keep every rewrite from being made, and helixd from starting (it
/// rewrites at every start).
pub(super) fn rewrite_file(path: &Path) -> Result<tempfile::NamedTempFile> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    tempfile::Builder::new()
        .prefix(&format!("{name}."))
        .suffix(".new")
        .tempfile_in(dir)
        .with_context(|| format!("control journal {}: a file beside it to rewrite it into", path.display()))
}

/// Syncs the folder of `path` (a rename in it is durable then).
pub(super) fn sync_dir(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir).and_then(|d| d.sync_all()).with_context(|| format!("{}", dir.display()))?;
    }
    Ok(())
}

/// Removes the rewrites of the journal at `path` that a helixd killed
/// while it made them left behind (this user's files only: nobody may
/// remove another's there).
pub(super) fn remove_leftovers(path: &Path) {
    use std::os::unix::fs::MetadataExt;
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else { return };
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let me = helix::process::my_uid();
    for e in entries.flatten() {
        let file = e.file_name();
        let Some(rest) = file.to_str().and_then(|f| f.strip_prefix(name)?.strip_prefix('.')) else { continue };
        let ours = e.metadata().is_ok_and(|m| m.is_file() && m.uid() == me);
        if ours
            && rest.ends_with(".new")
            && rest[..rest.len() - 4].chars().all(|c| c.is_ascii_alphanumeric() || c == '.')
        {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// The length of the whole lines of `bytes` (the journal's): what
/// follows, a line a crash or a failed write cut short, was never
/// answered (nor sent).
pub(super) fn whole(bytes: &[u8]) -> usize {
    bytes.iter().rposition(|&b| b == b'\n').map_or(0, |end| end + 1)
}

/// The journal's lines: the plant state and what it recovers. The last
/// line, if the file does not end with a newline, was cut short by a
/// crash and is ignored; any other line that is not one is an error.
pub(super) fn read(path: &Path, bytes: &[u8]) -> Result<(PlantState, Recovered)> {
    let (mut plant, mut rec) = (PlantState::new(), Recovered::default());
    for (i, text) in bytes[..whole(bytes)].split(|&b| b == b'\n').enumerate().filter(|(_, t)| !t.is_empty()) {
        let line: Line = serde_json::from_slice(text)
            .with_context(|| format!("control journal {}, line {}: not a journal line", path.display(), i + 1))?;
        match line {
            // A mark is written with no send under way.
            Line::Mark { unresolved_from, logged_to, in_flight, plant: p } => {
                (plant, rec.unresolved_from, rec.marked) = (p, unresolved_from, true);
                rec.log_mark = logged_to.map(|logged_to| LogMark { logged_to, in_flight });
                rec.sending.clear();
                rec.answered_since.clear();
            }
            Line::Sending { uid, request, log_seq } => _ = rec.sending.insert((uid, request), log_seq),
            Line::Answer { uid, request, verdict, reason, op, log_seq, ring_seq, stream_seq, flags, change } => {
                if let Some(c) = change {
                    apply(&mut plant, &c.source, c.op, c.stream, c.value);
                }
                rec.sending.remove(&(uid, request));
                rec.answered_since.insert(log_seq);
                let version = FORMAT_VERSION as u32;
                let ack = Ack { version, uid, request, verdict, reason, op, flags, log_seq, ring_seq, stream_seq };
                rec.answers.push(ack);
            }
        }
    }
    if rec.answers.len() > MAX_LINES {
        bail!("control journal {}: {} answers, more than it ever holds", path.display(), rec.answers.len());
    }
    Ok((plant, rec))
}
