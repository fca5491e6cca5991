//! helix-twin's configuration parser and alarm rules
//! (`src/bin/helix-twin/config.rs`), compiled in from the program's own
//! file: any text is a consistent set of rules or an error naming the file
//! and line.
#![no_main]

#[path = "common/config.rs"]
mod common;
use common::shared;
#[path = "../../src/bin/helix-twin/config.rs"]
#[allow(dead_code)]
mod config;

use std::path::Path;

use config::TwinConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(text) = common::text(data) else { return };
    let c = match TwinConfig::parse(text, Path::new(common::PATH)) {
        Ok(c) => c,
        Err(e) => return common::check_error(text, &e),
    };
    assert!(c.streams >= 1 && c.streams <= config::MAX_STREAMS);
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
});
