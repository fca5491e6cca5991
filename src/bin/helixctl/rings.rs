//! helixctl's verbs. Everything here reads shared memory directly through
//! read-only attachments ([`RingView`]), so it works whether or not helixd
//! runs. Each listing has a JSON form with the stable schema documented in
//! `docs/helixctl.md`.

use std::time::{Duration, Instant};

use serde::Serialize;

use helix::shm::Namespace;
use helix::{AttachError, Geometry, RingStats, RingView};

/// One row of `helixctl list`: a ring, or a file that is not a usable ring.
#[derive(Debug, Clone, Serialize)]
pub struct ListRow {
    /// Ring name.
    pub name: String,
    /// Whether it attached; if not, `error` says why.
    pub ok: bool,
    /// Why it did not attach.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The rest, when it attached.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub ring: Option<RingSummary>,
}

/// The figures `list` shows for a ring.
#[derive(Debug, Clone, Serialize)]
pub struct RingSummary {
    /// `overwrite` or `block`.
    pub policy: &'static str,
    /// Slots.
    pub capacity: u64,
    /// Bytes per slot.
    pub slot_size: u32,
    /// Largest payload.
    pub max_payload: u32,
    /// Highest published sequence.
    pub published: u64,
    /// Frames per second over the sampling interval (null if not sampled).
    pub frames_per_sec: Option<f64>,
    /// Registered readers.
    pub readers: usize,
    /// The writer's pid, if a writer holds the lease.
    pub writer_pid: Option<u32>,
    /// Whether that writer is alive.
    pub writer_alive: bool,
    /// Bytes of shared memory (both files).
    pub memory_bytes: u64,
}

/// Attaches read-only to every ring in `ns`, samples rates over `sample`
/// (none if zero), and returns a row per ring, corrupt and incomplete ones
/// (one of their two files missing) included.
pub fn list(ns: &Namespace, sample: Duration) -> std::io::Result<Vec<ListRow>> {
    let names: Vec<String> = helix::ring::scan(ns)?.into_iter().map(|r| r.name).collect();
    let views: Vec<(String, Result<RingView, AttachError>)> =
        names.into_iter().map(|n| (n.clone(), RingView::attach(ns, &n))).collect();
    let first: Vec<Option<u64>> = views.iter().map(|(_, v)| v.as_ref().ok().map(|v| v.stats().published)).collect();
    let t0 = Instant::now();
    if !sample.is_zero() {
        std::thread::sleep(sample);
    }
    let secs = t0.elapsed().as_secs_f64();
    Ok(views
        .into_iter()
        .zip(first)
        .map(|((name, view), before)| match view {
            Err(e) => ListRow { name, ok: false, error: Some(e.to_string()), ring: None },
            Ok(v) => {
                let s = v.stats();
                let g = v.geometry();
                let memory_bytes = helix::layout::ring_file_size(g.capacity, g.slot_size)
                    + helix::layout::readers_file_size(g.max_readers);
                let frames_per_sec = (!sample.is_zero())
                    .then(|| s.published.saturating_sub(before.unwrap_or(s.published)) as f64 / secs);
                ListRow {
                    name,
                    ok: true,
                    error: None,
                    ring: Some(RingSummary {
                        policy: g.policy.as_str(),
                        capacity: g.capacity,
                        slot_size: g.slot_size,
                        max_payload: g.max_payload,
                        published: s.published,
                        frames_per_sec,
                        readers: s.readers.len(),
                        writer_pid: s.lease.pid,
                        writer_alive: s.lease.alive,
                        memory_bytes,
                    }),
                }
            }
        })
        .collect())
}

/// `helixctl stat`: a ring's header and every counter: the geometry and
/// the counters flattened into one object, plus two figures derived from
/// the readers.
#[derive(Debug, Clone, Serialize)]
pub struct Stat {
    /// Ring name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// Geometry and policy.
    #[serde(flatten)]
    pub geometry: Geometry,
    /// Every counter, the writer lease and the readers.
    #[serde(flatten)]
    pub stats: RingStats,
    /// Overrun events over current readers.
    pub overruns: u64,
    /// Largest backpressure ratio over current readers.
    pub max_backpressure: f64,
}

/// Reads everything `stat` shows.
pub fn stat(ns: &Namespace, ring: &str) -> Result<Stat, AttachError> {
    let v = RingView::attach(ns, ring)?;
    let stats = v.stats();
    Ok(Stat {
        name: v.name().to_owned(),
        namespace: ns.to_string(),
        geometry: v.geometry().clone(),
        overruns: stats.overruns(),
        max_backpressure: stats.readers.iter().map(|r| r.backpressure).fold(0.0, f64::max),
        stats,
    })
}

/// Bytes as `256 MiB`, `4.0 KiB`.
pub fn fmt_bytes(b: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < U.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else if v.fract() == 0.0 {
        format!("{v:.0} {}", U[i])
    } else {
        format!("{v:.1} {}", U[i])
    }
}
