//! What a ring is made with: its overflow policy, the size presets, the
//! creation options and the memory they take.

use std::time::Duration;

use crate::layout::{self, readers_file_size, POLICY_BLOCK, POLICY_OVERWRITE, RING_HEADER_SIZE};

use super::{CreateError, Geometry, MAX_CAPACITY, MAX_PAYLOAD, MAX_READERS};
#[cfg(doc)]
use super::{Overrun, Ring};

/// What the writer does when the ring is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize), serde(rename_all = "lowercase"))]
pub enum Policy {
    /// Real time: the writer never waits; a reader that falls a whole ring
    /// behind gets an [`Overrun`] and resumes at the oldest intact frame.
    Overwrite,
    /// Lossless: the writer never overwrites a slot a gating reader has not
    /// consumed; it waits for it, bounded by the stall timeout, after which
    /// the stalled reader is demoted to non-gating (and that is counted).
    Block,
}

impl Policy {
    pub(crate) fn to_raw(self) -> u32 {
        match self {
            Policy::Overwrite => POLICY_OVERWRITE,
            Policy::Block => POLICY_BLOCK,
        }
    }

    pub(crate) fn from_raw(raw: u32) -> Option<Policy> {
        match raw {
            POLICY_OVERWRITE => Some(Policy::Overwrite),
            POLICY_BLOCK => Some(Policy::Block),
            _ => None,
        }
    }

    /// `"overwrite"` or `"block"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Overwrite => "overwrite",
            Policy::Block => "block",
        }
    }
}

impl std::str::FromStr for Policy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Policy::Overwrite, Policy::Block]
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("unknown overflow policy {s:?}: expected \"overwrite\" or \"block\""))
    }
}

/// Named ring geometries ("T-shirt sizes"), by largest payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Preset {
    /// 64-byte payloads (128-byte slots).
    Xs,
    /// 256-byte payloads.
    S,
    /// 1 KiB payloads.
    M,
    /// 4 KiB payloads.
    L,
    /// 16 KiB payloads.
    Xl,
}

impl Preset {
    /// Every preset, smallest first.
    pub const ALL: [Preset; 5] = [Preset::Xs, Preset::S, Preset::M, Preset::L, Preset::Xl];

    /// Largest payload in bytes.
    pub fn max_payload(self) -> u32 {
        match self {
            Preset::Xs => 64,
            Preset::S => 256,
            Preset::M => 1024,
            Preset::L => 4096,
            Preset::Xl => 16384,
        }
    }

    /// `"xs"`, `"s"`, `"m"`, `"l"` or `"xl"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Preset::Xs => "xs",
            Preset::S => "s",
            Preset::M => "m",
            Preset::L => "l",
            Preset::Xl => "xl",
        }
    }
}

impl std::str::FromStr for Preset {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Preset::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("unknown size preset {s:?}: expected one of xs, s, m, l, xl"))
    }
}

/// How to create a ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingOptions {
    /// Number of slots; a power of two from 2 to [`MAX_CAPACITY`].
    pub capacity: u64,
    /// Largest payload in bytes, 0 to [`MAX_PAYLOAD`]; slots are this plus a
    /// 16-byte header, rounded up to 64 bytes.
    pub max_payload: u32,
    /// Overflow policy.
    pub policy: Policy,
    /// Reader table size, 1 to [`MAX_READERS`].
    pub max_readers: u32,
    /// A gating reader that has not released what a waiting writer needs
    /// this long after the writer started waiting for it is demoted
    /// (whatever its cursor did meanwhile).
    pub stall_timeout: Duration,
    /// File mode of the control region; the data region gets the same
    /// without group and other write bits.
    pub mode: u32,
    /// Group owner of both files (default: the creator's group).
    pub group: Option<u32>,
}

impl Default for RingOptions {
    fn default() -> Self {
        RingOptions {
            capacity: 4096,
            max_payload: Preset::Xs.max_payload(),
            policy: Policy::Overwrite,
            max_readers: 16,
            stall_timeout: Duration::from_secs(2),
            mode: 0o660,
            group: None,
        }
    }
}

impl RingOptions {
    /// Options for a preset geometry with `capacity` slots.
    pub fn preset(preset: Preset, capacity: u64) -> Self {
        RingOptions { capacity, max_payload: preset.max_payload(), ..Default::default() }
    }

    /// Checks the options as [`Ring::create`] does, without touching any
    /// file; returns the slot size.
    pub fn validate(&self) -> Result<u32, CreateError> {
        let bad = |field: &'static str, reason: String| CreateError::Options { field, reason };
        if self.capacity < 2 || !self.capacity.is_power_of_two() || self.capacity > MAX_CAPACITY {
            return Err(bad("capacity", format!("{} is not a power of two from 2 to {MAX_CAPACITY}", self.capacity)));
        }
        if self.max_payload > MAX_PAYLOAD {
            return Err(bad("max_payload", format!("{} is larger than {MAX_PAYLOAD}", self.max_payload)));
        }
        if self.max_readers == 0 || self.max_readers > MAX_READERS {
            return Err(bad("max_readers", format!("{} is not from 1 to {MAX_READERS}", self.max_readers)));
        }
        if self.stall_timeout.is_zero() {
            return Err(bad("stall_timeout", "must be longer than zero".into()));
        }
        // The header holds it in nanoseconds, 64 bits: a longer one would
        // be stored as another, and every later comparison with the
        // configuration would find a difference nobody made.
        if self.stall_timeout.as_nanos() > u64::MAX.into() {
            return Err(bad(
                "stall_timeout",
                format!(
                    "{} ms is more than {} ms (584 years), the most a ring holds",
                    self.stall_timeout.as_millis(),
                    u64::MAX / 1_000_000
                ),
            ));
        }
        if self.mode & !0o777 != 0 || self.mode & 0o600 != 0o600 {
            return Err(bad(
                "mode",
                format!("{:o} must be permission bits including owner read and write (0o600)", self.mode),
            ));
        }
        let slot_size = layout::slot_size_for(self.max_payload as usize) as u64;
        if self.capacity.checked_mul(slot_size).is_none_or(|b| b > isize::MAX as u64 / 2) {
            return Err(bad("capacity", format!("{} slots of {slot_size} bytes do not fit in memory", self.capacity)));
        }
        Ok(slot_size as u32)
    }

    /// Bytes of shared memory the ring will use (both files): what
    /// [`Geometry::memory`] says once it exists.
    pub fn memory(&self) -> u64 {
        let slot = layout::slot_size_for(self.max_payload as usize) as u64;
        memory(self.capacity, slot, self.max_readers)
    }
}

impl Geometry {
    /// Bytes of shared memory the ring uses: its data region (header and
    /// slots) and its control region (reader table).
    pub fn memory(&self) -> u64 {
        memory(self.capacity, self.slot_size as u64, self.max_readers)
    }
}

/// Bytes of a ring's two files; saturating, as options may not have been
/// validated.
fn memory(capacity: u64, slot_size: u64, max_readers: u32) -> u64 {
    (RING_HEADER_SIZE as u64)
        .saturating_add(capacity.saturating_mul(slot_size))
        .saturating_add(readers_file_size(max_readers))
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::ring::Ring;
    use crate::shm::Namespace;

    #[test]
    fn a_ring_s_memory_is_its_two_files_and_what_its_options_promised() {
        let ns = Namespace::new(&format!("mem{}", std::process::id())).unwrap();
        let opts = RingOptions { capacity: 128, max_payload: 100, max_readers: 3, ..Default::default() };
        let ring = Ring::create(&ns, "m", &opts).unwrap();
        let on_disk = |p: PathBuf| std::fs::metadata(p).unwrap().len();
        let files = on_disk(ns.data_path("m")) + on_disk(ns.readers_path("m"));
        assert_eq!((ring.geometry().memory(), opts.memory()), (files, files));
        drop(ring);
        Ring::unlink(&ns, "m").unwrap();
        // Options not validated yet saturate instead of wrapping.
        assert_eq!(RingOptions { capacity: u64::MAX, ..Default::default() }.memory(), u64::MAX);
    }
}
