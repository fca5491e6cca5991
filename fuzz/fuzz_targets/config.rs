//! The three programs' configuration parsers (`src/bin/<program>/config.rs`),
//! compiled in from the programs' own files. The input's first byte picks
//! the parser (`b'0'` helixd, `b'1'` helix-ledger, `b'2'` helix-twin; any
//! byte, modulo 3), the rest is the text: any text is a configuration whose
//! promises hold, or an error naming the file and line.
#![no_main]

#[path = "common/config.rs"]
mod common;
use common::shared;

#[path = "../../src/bin/helixd/config.rs"]
#[allow(dead_code)]
mod helixd;
#[path = "../../src/bin/helix-ledger/config.rs"]
#[allow(dead_code)]
mod ledger;
#[path = "../../src/bin/helix-twin/config.rs"]
#[allow(dead_code)]
mod twin;

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&parser, text)) = data.split_first() else { return };
    let Some(text) = common::text(text) else { return };
    let checked = match parser % 3 {
        0 => helixd::Config::parse(text, Path::new(common::PATH)).map(|c| check_helixd(&c)),
        1 => ledger::LedgerConfig::parse(text, Path::new(common::PATH)).map(|c| check_ledger(&c)),
        _ => twin::TwinConfig::parse(text, Path::new(common::PATH)).map(|c| check_twin(&c)),
    };
    if let Err(e) = checked {
        common::check_error(text, &e);
    }
});

/// helixd can create every ring it accepted; each source writes one
/// configured ring, alone.
fn check_helixd(c: &helixd::Config) {
    for r in &c.rings {
        assert!(r.options.validate().is_ok(), "ring {:?} was accepted with invalid options", r.name);
    }
    for (i, s) in c.sources.iter().enumerate() {
        assert!(c.ring(&s.ring).is_some(), "source {i} writes an unconfigured ring");
        assert!(c.sources[..i].iter().all(|o| o.ring != s.ring), "ring {:?} has two writers", s.ring);
        if let helixd::SourceKind::Sim { streams, rate_hz, .. } = s.kind {
            assert!(streams > 0 && rate_hz > 0.0 && rate_hz <= 1e6);
        }
    }
    assert!(!c.status_interval.is_zero() && !c.sweep_interval.is_zero());
}

/// helix-ledger records distinct, valid ring names into a named folder.
fn check_ledger(c: &ledger::LedgerConfig) {
    assert!(!c.rings.is_empty() && !c.dir.as_os_str().is_empty());
    for (i, r) in c.rings.iter().enumerate() {
        assert!(helix::shm::validate_ring_name(r).is_ok() && !c.rings[..i].contains(r), "ring {r:?}");
    }
    assert!(!c.fsync_interval.is_zero() && c.segment_size > 0);
}

/// helix-twin's rules are consistent: three distinct rings, stream ranges
/// inside the stream count and apart, limits that do not contradict.
fn check_twin(c: &twin::TwinConfig) {
    assert!(c.streams >= 1 && c.streams <= twin::MAX_STREAMS);
    assert!(c.telemetry_ring != c.state_ring && c.telemetry_ring != c.alarm_ring && c.state_ring != c.alarm_ring);
    for (i, r) in c.rules.iter().enumerate() {
        assert!(r.streams.first <= r.streams.last && r.streams.last < c.streams, "rule {i}: {}", r.streams);
        assert!(c.rules[..i].iter().all(|o| !o.streams.overlaps(&r.streams)), "rule {i} overlaps another");
        if let (Some(low), Some(high)) = (r.low, r.high) {
            assert!(low < high && r.hysteresis < high - low, "rule {i}: limits contradict");
        }
    }
    // The state table the twin builds from the rules (kept small: the
    // largest is 16 M entries).
    if c.streams <= 1 << 16 {
        assert_eq!(c.rule_index().len(), c.streams as usize);
    }
}
