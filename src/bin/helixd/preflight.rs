//! What a start of helixd would refuse, found without creating anything,
//! each named with the file and line of its ring: rings that do not fit in
//! `/dev/shm` ([`memory`]), and existing rings helixd may not adopt or a
//! group it may not give ([`existing`]). `helixd --check` runs both; a start and a reload check
//! the memory before they create a ring (the existing rings are judged as
//! each is opened).

use std::os::unix::fs::MetadataExt;

use helix::layout::slot_size_for;
use helix::shm::SHM_DIR;
use helix::{Namespace, RingOptions, RingView};

use crate::config::{Config, ConfigError, RingConfig};

/// Checks that the configured rings fit in `/dev/shm`: the memory of all
/// of them, in file order, against its free space plus what their own
/// files there hold now (an adopted ring keeps its files, a recreated one
/// frees them). The error names the first ring that does not fit.
pub fn memory(config: &Config) -> Result<(), ConfigError> {
    let stat = nix::sys::statvfs::statvfs(SHM_DIR).map_err(|e| ConfigError {
        path: config.path.clone(),
        line: None,
        message: format!("cannot read the free space of {SHM_DIR}: {e}"),
    })?;
    let free = (stat.blocks_available() as u64).saturating_mul(stat.fragment_size() as u64);
    let held: u64 = config.rings.iter().map(|r| held(&config.namespace, &r.name)).sum();
    fits(config, free, held)
}

/// The decision of [`memory`], given `free` bytes in `/dev/shm` and `held`
/// bytes in the configured rings' files.
fn fits(config: &Config, free: u64, held: u64) -> Result<(), ConfigError> {
    let room = free.saturating_add(held);
    let mut before = 0u64;
    for r in &config.rings {
        let need = r.options.memory();
        if before.saturating_add(need) > room {
            let others =
                if before > 0 { format!(", after the {} of the rings above it", size(before)) } else { "".into() };
            let held = if held > 0 { format!(" (and {} in these rings' files)", size(held)) } else { "".into() };
            return Err(at(
                config,
                r,
                format!(
                    "ring {:?} does not fit in {SHM_DIR}: it needs {}{others}, and {SHM_DIR} has {} free{held} \
                     (make the ring smaller, or {SHM_DIR} larger)",
                    r.name,
                    size(need),
                    size(free)
                ),
            ));
        }
        before += need;
    }
    Ok(())
}

/// Bytes of memory ring `name`'s files in `/dev/shm` hold now.
fn held(ns: &Namespace, name: &str) -> u64 {
    [ns.data_path(name), ns.readers_path(name)]
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.blocks() * 512)
        .sum()
}

/// Checks that every configured ring that exists already can be adopted
/// (or is to be recreated), and that helixd may give the rings' files
/// their configured group: what `rings::open_or_create` and
/// `rings::permit` refuse at a start.
pub fn existing(config: &Config) -> Result<(), ConfigError> {
    for r in &config.rings {
        // Refused whether or not `recreate` is set: helixd, not root,
        // cannot remove another user's file.
        if let Some(why) = crate::rings::foreign(&config.namespace, &r.name) {
            let fix = crate::rings::foreign_fix(&config.namespace, &r.name);
            return Err(at(config, r, format!("ring {:?}: {why}; {fix}", r.name)));
        }
        if let Some(gid) = r.options.group.filter(|&gid| !may_give_group(gid)) {
            let me = nix::unistd::geteuid();
            let why = format!("helixd (uid {me}) is not in group {gid}, so it cannot give the ring's files that group");
            return Err(at(
                config,
                r,
                format!("ring {:?}: {why}; add its user to the group, or change `group`", r.name),
            ));
        }
    }
    for r in config.rings.iter().filter(|r| !r.recreate) {
        let why = match RingView::attach(&config.namespace, &r.name) {
            Ok(view) => match differences(view.geometry(), &r.options) {
                d if d.is_empty() => continue,
                d => format!("the existing ring differs from the configuration: {}", d.join("; ")),
            },
            Err(e) if e.is_absent() => continue,
            Err(e) => format!("the existing ring cannot be used: {e}"),
        };
        return Err(at(config, r, format!("ring {:?}: {why}; set recreate = true to replace it", r.name)));
    }
    Ok(())
}

/// Whether this process may give the files it owns group `gid`: it is
/// root, or `gid` is its effective or a supplementary group.
fn may_give_group(gid: u32) -> bool {
    use nix::unistd::{getegid, geteuid, getgroups};
    geteuid().is_root() || getegid().as_raw() == gid || getgroups().is_ok_and(|g| g.iter().any(|x| x.as_raw() == gid))
}

/// What differs between an existing ring and its configuration; empty if
/// it can be adopted.
pub fn differences(existing: &helix::Geometry, wanted: &RingOptions) -> Vec<String> {
    let mut d = Vec::new();
    let slot = slot_size_for(wanted.max_payload as usize) as u32;
    if existing.capacity != wanted.capacity {
        d.push(format!("capacity is {}, configured {}", existing.capacity, wanted.capacity));
    }
    if existing.slot_size != slot {
        d.push(format!(
            "slot size is {} bytes, configured max_payload {} needs {slot}",
            existing.slot_size, wanted.max_payload
        ));
    }
    if existing.policy != wanted.policy {
        d.push(format!("policy is {}, configured {}", existing.policy.as_str(), wanted.policy.as_str()));
    }
    if existing.max_readers != wanted.max_readers {
        d.push(format!("max_readers is {}, configured {}", existing.max_readers, wanted.max_readers));
    }
    let stall = wanted.stall_timeout.as_nanos() as u64;
    if existing.stall_timeout_ns != stall {
        d.push(format!(
            "stall timeout is {} ms, configured {} ms",
            existing.stall_timeout_ns / 1_000_000,
            stall / 1_000_000
        ));
    }
    d
}

/// An error at ring `r`'s line.
pub fn at(config: &Config, r: &RingConfig, message: String) -> ConfigError {
    ConfigError { path: config.path.clone(), line: Some(r.line), message }
}

/// `bytes` for a human: `512 B`, `261.5 KiB`, `4.0 TiB`.
fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn the_first_ring_past_the_room_is_named_at_its_line() {
        let text = "[[ring]]\nname = \"a\"\npreset = \"xs\"\ncapacity = 1024\n\
                    [[ring]]\nname = \"b\"\npreset = \"xs\"\ncapacity = 1024\n";
        let c = Config::parse(text, Path::new("m.toml")).unwrap();
        let one = c.rings[0].options.memory();
        assert_eq!(fits(&c, 2 * one, 0), Ok(()));
        // What the rings' own files hold counts as room: they are adopted.
        assert_eq!(fits(&c, one, one), Ok(()));
        let e = fits(&c, 2 * one - 1, 0).unwrap_err();
        assert_eq!(e.line, Some(6));
        assert!(
            e.message.starts_with(&format!("ring \"b\" does not fit in /dev/shm: it needs {}, after the", size(one))),
            "{e}"
        );
        assert_eq!(fits(&c, 0, 0).unwrap_err().line, Some(2));
        assert_eq!((size(512), size(267_776), size(1 << 42)), ("512 B".into(), "261.5 KiB".into(), "4.0 TiB".into()));
    }
}
