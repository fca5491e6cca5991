//! helixd's configuration parser (`src/bin/helixd/config.rs`), compiled in
//! from the program's own file: any text is a configuration that helixd
//! can create every ring of, or an error naming the file and line.
#![no_main]

#[path = "common/config.rs"]
mod common;
use common::shared;
#[path = "../../src/bin/helixd/config.rs"]
#[allow(dead_code)]
mod config;

use std::path::Path;

use config::{Config, SourceKind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(text) = common::text(data) else { return };
    let c = match Config::parse(text, Path::new(common::PATH)) {
        Ok(c) => c,
        Err(e) => return common::check_error(text, &e),
    };
    for r in &c.rings {
        assert!(r.options.validate().is_ok(), "ring {:?} was accepted with invalid options", r.name);
    }
    for (i, s) in c.sources.iter().enumerate() {
        assert!(c.ring(&s.ring).is_some(), "source {i} writes an unconfigured ring");
        assert!(c.sources[..i].iter().all(|o| o.ring != s.ring), "ring {:?} has two writers", s.ring);
        if let SourceKind::Sim { streams, rate_hz, .. } = s.kind {
            assert!(streams > 0 && rate_hz > 0.0 && rate_hz <= 1e6);
        }
    }
    assert!(!c.status_interval.is_zero() && !c.sweep_interval.is_zero());
});
