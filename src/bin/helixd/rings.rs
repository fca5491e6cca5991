//! Taking a configured ring into service: created, adopted (only a
//! compatible one of helixd's own), or recreated when the configuration
//! says so.

use anyhow::{bail, Context, Result};
use tracing::warn;

use helix::Ring;

use crate::config::RingConfig;
use crate::preflight::differences;

/// How an existing ring was taken into service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    /// It did not exist.
    Created,
    /// It existed, compatible: its sequence continues.
    Adopted,
    /// It existed, incompatible or corrupt, and `recreate = true`.
    Recreated,
}

/// Creates the ring, or adopts a compatible existing one; an incompatible or
/// corrupt one is an error naming the difference unless `recreate` is set.
pub fn open_or_create(ns: &helix::Namespace, rc: &RingConfig) -> Result<(Ring, Opened)> {
    let name = &rc.name;
    match found(ns, rc)? {
        Found::Adoptable(ring) => Ok((ring, Opened::Adopted)),
        Found::Absent => {
            let ring = Ring::create(ns, name, &rc.options).with_context(|| format!("ring {name:?}"))?;
            Ok((ring, Opened::Created))
        }
        Found::Unusable(why) => {
            warn!("ring {name}: {why}; recreating it (recreate = true)");
            let ring =
                Ring::recreate(ns, name, &rc.options).with_context(|| format!("ring {name:?}: cannot recreate it"))?;
            Ok((ring, Opened::Recreated))
        }
    }
}

/// Fails as [`open_or_create`] would refuse ring `rc`, changing nothing:
/// a reload checks every ring it adds before it makes or recreates any, so
/// that one refused leaves the others as they were. (Found by review: a
/// ring recreated for a reload that a later ring then refused was
/// removed, its frames gone.)
pub fn check(ns: &helix::Namespace, rc: &RingConfig) -> Result<()> {
    found(ns, rc).map(drop)
}

/// What is under a configured ring's name, judged without changing it.
enum Found {
    /// A compatible ring of helixd's own.
    Adoptable(Ring),
    /// Nothing.
    Absent,
    /// A ring that differs from the configuration or cannot be used (why),
    /// and `recreate` is set.
    Unusable(String),
}

/// Judges what is under ring `rc`'s name; an error for what is not
/// helixd's to take, and for an unusable ring without `recreate`.
fn found(ns: &helix::Namespace, rc: &RingConfig) -> Result<Found> {
    let name = &rc.name;
    let unusable = |why: String| -> Result<Found> {
        if !rc.recreate {
            bail!("ring {name:?}: {why}; set recreate = true to replace it");
        }
        Ok(Found::Unusable(why))
    };
    // Before opening: another user's file under the name cannot become
    // helixd's afterwards (nobody else can make a file of helixd's uid,
    // and the sticky /dev/shm keeps helixd's from being replaced).
    if let Some(why) = foreign(ns, name) {
        bail!("ring {name:?}: {why}; {}", foreign_fix(ns, name));
    }
    match Ring::open(ns, name) {
        // The data file as opened, too: between the look above and the
        // open, another user could have made the files that were not there
        // (found by review; a race, which no test stages).
        Ok(ring) if ring.owner_uid() != nix::unistd::geteuid().as_raw() => bail!(
            "ring {name:?}: {} is owned by uid {}, not helixd's: another user made it as helixd opened it; remove \
             it as root (`helixctl rm --force {name}`), then start helixd again",
            ns.data_path(name).display(),
            ring.owner_uid()
        ),
        Ok(ring) => {
            let diffs = differences(ring.geometry(), &rc.options);
            if diffs.is_empty() {
                // (Its mode and group are the caller's to give, with
                // `permit`, once it holds what it writes.)
                Ok(Found::Adoptable(ring))
            } else {
                drop(ring);
                unusable(format!("the existing ring differs from the configuration: {}", diffs.join("; ")))
            }
        }
        Err(e) if e.is_absent() => Ok(Found::Absent),
        Err(e) => unusable(format!("the existing ring cannot be used: {e}")),
    }
}

/// Why ring `name`'s files are not helixd's to adopt, if they are not:
/// a file another user owns, or one whose owner cannot be read. Anyone
/// may create files in /dev/shm, and a ring made under a configured name
/// before helixd (at boot, or after a SIGHUP retired it) would be written
/// by helixd and read by every program while its maker rewrites it.
pub fn foreign(ns: &helix::Namespace, name: &str) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let me = nix::unistd::geteuid().as_raw();
    [ns.data_path(name), ns.readers_path(name)].into_iter().find_map(|path| match std::fs::symlink_metadata(&path) {
        Ok(m) if m.uid() != me => {
            Some(format!("{} is owned by uid {}, not helixd's uid {me}: another user made it", path.display(), m.uid()))
        }
        Ok(_) => None,
        // Absent: created, or its lone partner judged by `Ring::open`.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        // Not known to be helixd's: not adopted.
        Err(e) => Some(format!("{}: cannot tell whose it is: {e}", path.display())),
    })
}

/// What to do about ring `name`, whose files another user owns: remove
/// them as root, unless a live process writes the ring. Then it is most
/// likely the service, run as another user than this helixd (a `sudo
/// helixd --check`, a second helixd started as oneself), and removing
/// them would take the running service's ring away. (Found by review:
/// that was the advice given.)
pub fn foreign_fix(ns: &helix::Namespace, name: &str) -> String {
    use std::os::unix::fs::MetadataExt;
    // The lease word is the files' maker's to write: believed only of a
    // live process of the files' own user (found by review of the fix: a
    // squatter could name pid 1, and steer the advice away from removing
    // its ring).
    let owner = std::fs::symlink_metadata(ns.data_path(name)).map(|m| m.uid()).ok();
    let of_owner = |pid: u32| std::fs::metadata(format!("/proc/{pid}")).ok().map(|m| m.uid()) == owner;
    match helix::ring::live_writer(ns, name).filter(|&(pid, _)| of_owner(pid)) {
        Some((pid, _)) => format!(
            "live pid {pid} writes it: if that is the service, run this helixd as the user that owns the files (it \
             runs as uid {}), or stop pid {pid} first",
            nix::unistd::geteuid()
        ),
        None => format!("remove it as root (`helixctl rm --force {name}`), then start helixd again"),
    }
}

/// Gives an adopted ring's files the `mode` and `group` the configuration
/// gives now, if they differ (the control file `mode`, the data file
/// `mode` without group and other write, as at creation; no `group`:
/// helixd's own, as at creation), and says so. Only the access of
/// processes that open the files from now on changes: one attached before
/// keeps its mapping. (Found by review: mode and group were applied only
/// at creation, so an operator who tightened them and restarted helixd to
/// take access away changed nothing, silently.)
pub fn permit(ns: &helix::Namespace, rc: &RingConfig) -> Result<()> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
    let mode = rc.options.mode;
    let gid = rc.options.group.unwrap_or_else(|| nix::unistd::getegid().as_raw());
    for (path, want) in [(ns.data_path(&rc.name), mode & !0o022), (ns.readers_path(&rc.name), mode)] {
        let what = |doing: &str| format!("ring {:?}: {}: {doing}", rc.name, path.display());
        // O_NOFOLLOW: the file the ring was opened from, not a link.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .with_context(|| what("open to set its mode"))?;
        let meta = file.metadata().with_context(|| what("stat"))?;
        let had = meta.mode() & 0o7777;
        let chmod =
            |m: u32| file.set_permissions(std::fs::Permissions::from_mode(m)).with_context(|| what("set its mode"));
        if meta.gid() != gid {
            // Neither the old group nor the new one may have more than
            // both modes give, while the group changes.
            chmod(had & want)?;
            std::os::unix::fs::fchown(&file, None, Some(gid)).with_context(|| what(&format!("give it group {gid}")))?;
            warn!("ring {}: {} had group {}, configured {gid}: changed", rc.name, path.display(), meta.gid());
        }
        if had != want || meta.gid() != gid {
            chmod(want)?;
        }
        if had != want {
            warn!(
                "ring {}: {} had mode {had:o}, configured {want:o}: changed (processes attached before keep their access)",
                rc.name,
                path.display(),
            );
        }
    }
    Ok(())
}
