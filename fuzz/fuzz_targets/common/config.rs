//! What every configuration parser promises about its errors: the file it
//! was given, a line inside the text whenever the problem has a place (all
//! but a bad `HELIX_NAMESPACE`), and one line of text for the operator.

use std::path::Path;

use conf::ConfigError;

/// The programs' configuration errors (`src/bin/shared/conf.rs`).
#[path = "../../../src/bin/shared/conf.rs"]
#[allow(dead_code)]
pub mod conf;

/// What a program's `crate::shared` provides to its configuration file:
/// each target brings it to its crate root with `use common::shared;`.
pub mod shared {
    pub use super::conf;
}

/// The name the fuzzed text goes by in errors.
pub const PATH: &str = "fuzz.toml";

/// The text a parser reads: the real loaders read the file with
/// `read_to_string`, so bytes that are not UTF-8 never reach a parser.
pub fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

/// Checks an error's place and shape.
pub fn check_error(text: &str, e: &ConfigError) {
    assert_eq!(e.path, Path::new(PATH));
    let shown = e.to_string();
    assert!(!shown.contains('\n'), "an error message spans lines: {shown:?}");
    match e.line {
        Some(line) => {
            let lines = text.bytes().filter(|&b| b == b'\n').count() + 1;
            assert!((1..=lines).contains(&line), "line {line} is outside the text's {lines} lines: {shown}");
            assert!(shown.starts_with(&format!("{PATH}:{line}: ")), "{shown}");
        }
        None => assert!(e.message.starts_with("HELIX_NAMESPACE"), "an error without a line: {shown}"),
    }
}
