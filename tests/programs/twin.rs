// helix-twin's model, configuration and reader, and helixd's simulator,
// compiled in from the programs' own files (they are no part of the
// library's API). One list for tests/twin.rs and benches/twin.rs, which
// `include!` it at their crate roots: the files name each other from
// there (`crate::config`, `crate::shared`).
#[path = "../../src/bin/helix-twin/config.rs"]
#[allow(dead_code)]
mod config;
#[path = "../../src/bin/helixd/hal/mod.rs"]
#[allow(dead_code)]
mod hal;
#[path = "../../src/bin/helix-twin/model.rs"]
#[allow(dead_code)]
mod model;
#[path = "../../src/bin/helix-twin/publish.rs"]
#[allow(dead_code)]
mod publish;
#[path = "../../src/bin/helix-twin/run.rs"]
#[allow(dead_code)]
mod run;
#[path = "../../src/bin/shared/mod.rs"]
mod shared;
