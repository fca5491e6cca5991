//! helix-ledger's configuration parser (`src/bin/helix-ledger/config.rs`),
//! compiled in from the program's own file: any text is a configuration
//! or an error naming the file and line.
#![no_main]

#[path = "common/config.rs"]
mod common;
use common::shared;
#[path = "../../src/bin/helix-ledger/config.rs"]
#[allow(dead_code)]
mod config;

use std::path::Path;

use config::LedgerConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(text) = common::text(data) else { return };
    let c = match LedgerConfig::parse(text, Path::new(common::PATH)) {
        Ok(c) => c,
        Err(e) => return common::check_error(text, &e),
    };
    assert!(!c.rings.is_empty() && !c.dir.as_os_str().is_empty());
    for (i, r) in c.rings.iter().enumerate() {
        assert!(helix::shm::validate_ring_name(r).is_ok() && !c.rings[..i].contains(r), "ring {r:?}");
    }
    assert!(!c.fsync_interval.is_zero() && c.segment_size > 0);
});
