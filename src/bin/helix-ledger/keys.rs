//! The recorder's signing key: `keygen`, `pubkey`, and loading it for the
//! recorder and for `verify --pubkey` (formats: `helix::ledger::sign`).

use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{bail, Context, Result};
use ed25519_dalek::SigningKey;
use tracing::{info, warn};

use crate::config::LedgerConfig;
use helix::ledger::format::hex;
use helix::ledger::sign::{self, Signer};

/// `keygen PATH`: a new Ed25519 key in a file of mode 0400, created
/// atomically (written under `PATH.tmp`, synced, then hard-linked to
/// `PATH`, which fails if `PATH` exists: an existing key is never
/// overwritten, even by two keygens at once). Prints the public key.
pub fn keygen(path: &Path) -> Result<bool> {
    if path.symlink_metadata().is_ok() {
        bail!("{}: exists; a signing key is never overwritten (remove it first to replace it)", path.display());
    }
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed)
        .map_err(|e| anyhow::anyhow!("reading the kernel's random number generator: {e}"))?;
    let key = SigningKey::from_bytes(&seed);
    let tmp = path.with_file_name(format!(
        "{}.tmp",
        path.file_name().with_context(|| format!("{}: not a file name", path.display()))?.to_string_lossy()
    ));
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o400)
        .open(&tmp)
        .with_context(|| format!("{}: cannot create", tmp.display()))?;
    let written = f.write_all(sign::format_secret(&key).as_bytes()).and_then(|()| f.sync_all());
    let linked = written.and_then(|()| fs::hard_link(&tmp, path));
    let _ = fs::remove_file(&tmp);
    match linked {
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            bail!("{}: exists; a signing key is never overwritten", path.display())
        }
        r => r.with_context(|| format!("{}: cannot write the key", path.display()))?,
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::File::open(dir).and_then(|d| d.sync_all()).with_context(|| format!("{}: sync", dir.display()))?;
    }
    println!("{}", sign::format_public(&key.verifying_key()));
    Ok(true)
}

/// The secret key in `path`, or an error naming the file and what is wrong.
pub fn read_secret(path: &Path) -> Result<SigningKey> {
    let meta =
        fs::metadata(path).with_context(|| format!("{}: cannot read the ledger's signing key", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        bail!(
            "{}: the signing key is readable or writable by others (mode {:o}); make it 0400 (readable by its owner only)",
            path.display(),
            meta.permissions().mode() & 0o777
        );
    }
    let text = fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read the ledger's signing key", path.display()))?;
    sign::parse_secret(&text).with_context(|| format!("{}: not a helix-ledger signing key", path.display()))
}

/// `pubkey [--key FILE]`: the public key of the secret key in `path`.
pub fn pubkey(path: &Path) -> Result<bool> {
    let key = read_secret(path)?;
    println!("{}", sign::format_public(&key.verifying_key()));
    Ok(true)
}

/// The recorder's signer as configured: none if checkpoints are off, else
/// the key, which must be readable and well-formed. The recorder refuses
/// to start otherwise: an audit trail that silently stops signing is worse
/// than one that does not start (docs/ledger.md).
pub fn signer(cfg: &LedgerConfig) -> Result<Option<Signer>> {
    if cfg.checkpoint_interval_s == 0 {
        info!("signed checkpoints are off (checkpoint_interval_s = 0 in {})", cfg.path.display());
        return Ok(None);
    }
    let key = read_secret(&cfg.key).with_context(|| {
        format!(
            "checkpoints are signed every {} s ({}); create the key with `helix-ledger keygen {}` (owned by the \
             recorder's user, mode 0400), or set checkpoint_interval_s = 0 to record without signed checkpoints",
            cfg.checkpoint_interval_s,
            cfg.path.display(),
            cfg.key.display()
        )
    })?;
    let signer = Signer::new(key, cfg.checkpoint_interval_s);
    info!(
        "signing a checkpoint every {} s with {} (key id {})",
        cfg.checkpoint_interval_s,
        cfg.key.display(),
        hex(&sign::key_id(&signer.public()))
    );
    Ok(Some(signer))
}

/// Warns if the ledger in `dir` was signed with another key than the
/// configured one (`key`, of key id `id`) until now: its last checkpoint's
/// key id. The folder then verifies with neither public key alone
/// (`verify --pubkey` names the first checkpoint of the other), as when
/// the package made a new key because the old one was lost. Recording goes
/// on: an audit trail that stops is worse.
pub fn warn_if_signed_by_another_key(dir: &Path, key: &Path, id: [u8; sign::KEY_ID_LEN]) {
    let Ok(Ok(Some(head))) = helix::ledger::verify::latest_checkpoint(dir) else { return };
    if head.checkpoint.key_id != id {
        warn!(
            "{}: the ledger's last checkpoint ({} offset {}) was signed by key id {}, not by {} (key id {}): from \
             here on the folder verifies with neither public key alone (`verify --pubkey` names the first \
             checkpoint of the other key). If the key was lost or replaced on purpose, give the new key a new \
             ledger folder (`dir` in the configuration); otherwise put the old key back",
            dir.display(),
            head.path.display(),
            head.offset,
            hex(&head.checkpoint.key_id),
            key.display(),
            hex(&id)
        );
    }
}

/// `sign-pruned DIR [--key FILE]`: signs the folder's `pruned` manifest
/// with the key, vouching that the segments it names were pruned by this
/// ledger's retention, by a recorder that did not sign then (a signing
/// recorder signs no manifest past one that is not its key's:
/// `helix::ledger::retention::vouch`). The kept segments must continue the
/// chain from the manifest's hash; the manifest is replaced atomically.
pub fn sign_pruned(dir: &Path, key: &Path) -> Result<bool> {
    use helix::ledger::retention::{read_pruned, write_pruned, Pruned};
    let key = read_secret(key)?;
    // The recorder's retention must not prune meanwhile: the folder's lock
    // keeps it out (it is stopped), as it keeps a second recorder out.
    let _folder = helix::ledger::lock_folder(dir)?;
    let p = read_pruned(dir)?
        .with_context(|| format!("{}: there is no `pruned` manifest: nothing was pruned", dir.display()))?;
    if let Err(f) = helix::ledger::verify::verify(dir)? {
        eprintln!("{}: the folder does not verify from its manifest, so it is not signed: {f}", dir.display());
        return Ok(false);
    }
    // Nothing may have pruned more while the folder was verified (the lock
    // keeps the recorder out; a hand, not): the manifest signed is the one
    // verified from. (Found by review: the one read before was written
    // back, naming fewer segments than were gone.)
    if read_pruned(dir)?.as_ref() != Some(&p) {
        bail!("{}: the `pruned` manifest changed while the folder was verified (a recorder's retention pruned more): run sign-pruned again, with the recorder stopped", dir.display());
    }
    let signer = Signer::new(key, 60);
    write_pruned(dir, &Pruned::new(p.segment, p.records, p.hash, Some(&signer)))?;
    println!(
        "signed the manifest of segments 1..={} ({} records, chain hash {}) with key id {}",
        p.segment,
        p.records,
        hex(&p.hash),
        hex(&sign::key_id(&signer.public()))
    );
    Ok(true)
}
