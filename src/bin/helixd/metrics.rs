//! helixd's own counters for `--metrics-file`: its HAL sources' samples,
//! lateness, and a UDP source's datagrams, rejections by reason, the
//! kernel's drops and those it did not write. The rings' counters are in
//! shared memory and need no file: `helixctl metrics` reads them there.

use std::sync::atomic::{AtomicU64, Ordering};

use helix::telemetry::datagram::Reject;

use crate::config::SourceKind;
use crate::hal::udp::UdpStats;
use crate::shared::textfile::{flag, label, Text};
use crate::source::Running;

const COUNTER: &str = "counter";
const GAUGE: &str = "gauge";

/// The exposition text of `sources` (read the kernel's drop counts
/// first: [`Running::read_kernel_drops`]).
pub fn render(sources: &[Running]) -> String {
    let mut t = Text::default();
    let labelled = |s: &Running| {
        let kind = match s.config.kind {
            SourceKind::Sim { .. } => "sim",
            SourceKind::Udp { .. } => "udp",
        };
        format!("ring=\"{}\",source=\"{kind}\"", label(&s.config.ring))
    };
    t.family("helix_hal_source_up", GAUGE, "1 if the HAL source's thread runs (0: stopped, its ring awaiting repair).");
    for s in sources {
        t.sample("helix_hal_source_up", &labelled(s), flag(s.thread.as_ref().is_some_and(|t| !t.is_finished())));
    }
    t.family("helix_hal_samples_total", COUNTER, "Samples the HAL source wrote into its ring since helixd started it.");
    for s in sources {
        t.sample("helix_hal_samples_total", &labelled(s), s.state.samples.load(Ordering::Relaxed) as f64);
    }
    let sims: Vec<&Running> = sources.iter().filter(|s| matches!(s.config.kind, SourceKind::Sim { .. })).collect();
    if !sims.is_empty() {
        t.family(
            "helix_hal_behind_seconds",
            GAUGE,
            "How late a scheduled source (the simulator) was when it last woke: about a wake-up period when it keeps up.",
        );
        for s in sims {
            t.sample("helix_hal_behind_seconds", &labelled(s), s.state.behind_ns.load(Ordering::Relaxed) as f64 / 1e9);
        }
    }
    udp(&mut t, sources);
    t.0
}

/// The UDP sources' families (none without a UDP source).
fn udp(t: &mut Text, sources: &[Running]) {
    let udp: Vec<(String, &Running)> = sources
        .iter()
        .filter(|s| matches!(s.config.kind, SourceKind::Udp { .. }))
        .map(|s| (format!("ring=\"{}\"", label(&s.config.ring)), s))
        .collect();
    if udp.is_empty() {
        return;
    }
    let counter = |t: &mut Text, name: &str, help: &str, of: fn(&UdpStats) -> &AtomicU64| {
        t.family(name, COUNTER, help);
        for (l, s) in &udp {
            t.sample(name, l, of(&s.state.udp).load(Ordering::Relaxed) as f64);
        }
    };
    counter(t, "helix_hal_datagrams_total", "Datagrams the UDP source accepted and wrote whole.", |u| &u.datagrams);
    t.family("helix_hal_bad_datagrams_total", COUNTER, "Datagrams the UDP source dropped as malformed, by reason.");
    for (l, s) in &udp {
        for r in Reject::ALL {
            let n = s.state.udp.rejected[r as usize].load(Ordering::Relaxed);
            t.sample("helix_hal_bad_datagrams_total", &format!("{l},reason=\"{}\"", r.as_str()), n as f64);
        }
    }
    let drops = "Datagrams the kernel dropped on the UDP source's socket, its receive buffer full.";
    counter(t, "helix_hal_kernel_drops_total", drops, |u| &u.kernel_drops);
    let unwritten =
        "Datagrams the UDP source took from its socket and did not write whole (it stopped, or its ring failed).";
    counter(t, "helix_hal_datagrams_unwritten_total", unwritten, |u| &u.unwritten);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SourceConfig;

    #[test]
    fn every_udp_counter_is_written_with_its_reason() {
        let udp = SourceKind::Udp { bind: "127.0.0.1:1".parse().unwrap(), instrument: None };
        let r = Running::stopped(&SourceConfig { kind: udp, ring: "tele\"metry".into() });
        r.state.samples.store(70, Ordering::Relaxed);
        r.state.udp.datagrams.store(7, Ordering::Relaxed);
        r.state.udp.rejected[Reject::BadMagic as usize].store(3, Ordering::Relaxed);
        r.state.udp.kernel_drops.store(5, Ordering::Relaxed);
        r.state.udp.unwritten.store(2, Ordering::Relaxed);
        let text = render(&[r]);
        for line in [
            "helix_hal_source_up{ring=\"tele\\\"metry\",source=\"udp\"} 0",
            "helix_hal_samples_total{ring=\"tele\\\"metry\",source=\"udp\"} 70",
            "helix_hal_datagrams_total{ring=\"tele\\\"metry\"} 7",
            "helix_hal_bad_datagrams_total{ring=\"tele\\\"metry\",reason=\"bad_magic\"} 3",
            "helix_hal_bad_datagrams_total{ring=\"tele\\\"metry\",reason=\"truncated\"} 0",
            "helix_hal_kernel_drops_total{ring=\"tele\\\"metry\"} 5",
            "helix_hal_datagrams_unwritten_total{ring=\"tele\\\"metry\"} 2",
        ] {
            assert!(text.lines().any(|l| l == line), "no line {line:?} in:\n{text}");
        }
        assert!(!text.contains("helix_hal_behind_seconds"), "a UDP source has no schedule:\n{text}");
    }
}
