//! What the programs' TOML configurations share: finding the file, an
//! error that names the file, the line and the problem, and the fields
//! every program reads the same way (the namespace, intervals).

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use toml::Spanned;

use helix::shm::Namespace;

/// What an error in the embedded default configuration names as its file.
pub const EMBEDDED: &str = "<embedded default>";

/// A configuration error: the file, the line (when known) and the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file (or `<embedded default>`).
    pub path: PathBuf,
    /// 1-based line number.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.path.display(), self.message),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// 1-based line of byte `offset` in `text`.
pub fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].bytes().filter(|&b| b == b'\n').count() + 1
}

/// The text of configuration file `path`.
pub fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError {
        path: path.to_owned(),
        line: None,
        message: format!("cannot read: {e}"),
    })
}

/// Reads `path` and parses it with `parse`.
pub fn load<C>(path: &Path, parse: impl Fn(&str, &Path) -> Result<C, ConfigError>) -> Result<C, ConfigError> {
    parse(&read(path)?, path)
}

/// The configuration a program runs: `path` if given (it must exist), else
/// `default_path` if there is anything under that name, else the
/// `embedded` default text. A default file that cannot be read (a link to
/// nowhere, a folder it may not enter) is an error naming it, not the
/// embedded default. (Found by review: `Path::exists` is false for both,
/// and helixd reloaded into the embedded simulator, retiring the rings
/// the file configured, with no word of why.)
pub fn find<C>(
    path: Option<&Path>,
    default_path: &str,
    embedded: &str,
    parse: impl Fn(&str, &Path) -> Result<C, ConfigError>,
) -> Result<C, ConfigError> {
    let default = Path::new(default_path);
    match path {
        Some(p) => load(p, parse),
        None => match default.symlink_metadata() {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => parse(embedded, Path::new(EMBEDDED)),
            Err(e) => Err(ConfigError { path: default.to_owned(), line: None, message: format!("cannot read: {e}") }),
            Ok(_) => load(default, parse),
        },
    }
}

/// Configuration text being parsed, and the file it came from: what an
/// error needs to name its line.
#[derive(Clone, Copy)]
pub struct Source<'a> {
    /// The text.
    pub text: &'a str,
    /// Its file (named in errors).
    pub path: &'a Path,
}

impl<'a> Source<'a> {
    /// `text`, read from `path`.
    pub fn new(text: &'a str, path: &'a Path) -> Source<'a> {
        Source { text, path }
    }

    /// An error at the line of `span` (a byte range of the text), or at no
    /// line.
    pub fn err(&self, span: Option<Range<usize>>, message: impl Into<String>) -> ConfigError {
        ConfigError { path: self.path.to_owned(), line: span.map(|s| self.line(s.start)), message: message.into() }
    }

    /// An error at the line of `v`.
    pub fn at<T>(&self, v: &Spanned<T>, message: impl Into<String>) -> ConfigError {
        self.err(Some(v.span()), message)
    }

    /// 1-based line of byte `offset`.
    pub fn line(&self, offset: usize) -> usize {
        line_of(self.text, offset)
    }

    /// The text as TOML of shape `T`: a syntax error, an unknown field or a
    /// value of the wrong type names its line.
    pub fn toml<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        toml::from_str(self.text).map_err(|e| self.err(e.span(), e.message().trim().replace('\n', "; ")))
    }

    /// The rings' namespace: `namespace` if the file sets it, else
    /// `HELIX_NAMESPACE`, else "helix".
    pub fn namespace(&self, namespace: &Option<Spanned<String>>) -> Result<Namespace, ConfigError> {
        match namespace {
            Some(ns) => Namespace::new(ns.get_ref()).map_err(|e| self.at(ns, e.to_string())),
            None => Namespace::from_env().map_err(|e| self.err(None, format!("HELIX_NAMESPACE: {e}"))),
        }
    }

    /// A number of milliseconds `what`, if given: more than 0.
    pub fn millis<T: Copy + Into<i128>>(
        &self,
        v: &Option<Spanned<T>>,
        what: &str,
    ) -> Result<Option<Duration>, ConfigError> {
        // At most what a u64 of nanoseconds holds (584 years): the
        // programs count time in nanoseconds.
        const MAX_MS: u64 = u64::MAX / 1_000_000;
        match v {
            None => Ok(None),
            Some(v) => {
                match u64::try_from((*v.get_ref()).into()) {
                    Ok(ms) if ms > MAX_MS => Err(self
                        .at(v, format!("{what} = {ms} is more than {MAX_MS} (584 years), the most that can be timed"))),
                    Ok(ms) if ms > 0 => Ok(Some(Duration::from_millis(ms))),
                    _ => Err(self.at(v, format!("{what} must be more than 0"))),
                }
            }
        }
    }
}

/// The line (0 if none) and the message of the error `parse` finds in
/// `text`, read from `t.toml`: for the configurations' tests.
#[cfg(test)]
pub fn error_of<C: fmt::Debug>(parse: impl Fn(&str, &Path) -> Result<C, ConfigError>, text: &str) -> (usize, String) {
    let e = parse(text, Path::new("t.toml")).unwrap_err();
    (e.line.unwrap_or(0), e.message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Raw {
        a: Option<Spanned<i64>>,
        b: Option<Spanned<u64>>,
    }

    #[test]
    fn a_default_file_that_cannot_be_read_is_an_error_not_the_embedded_default() {
        let dir = tempfile::tempdir().unwrap();
        let default = dir.path().join("helix.toml");
        let parse = |text: &str, path: &Path| Ok::<_, ConfigError>((text.to_owned(), path.to_owned()));
        let found = || find(None, default.to_str().unwrap(), "embedded", parse);
        assert_eq!(found().unwrap(), ("embedded".to_owned(), PathBuf::from(EMBEDDED)));
        std::os::unix::fs::symlink(dir.path().join("gone.toml"), &default).unwrap();
        let e = found().unwrap_err().to_string();
        assert!(e.starts_with(&format!("{}: cannot read: No such file", default.display())), "{e}");
        std::fs::remove_file(&default).unwrap();
        std::fs::write(&default, "mine").unwrap();
        assert_eq!(found().unwrap(), ("mine".to_owned(), default.clone()));
    }

    #[test]
    fn errors_name_the_line_and_intervals_must_be_positive() {
        let path = Path::new("c.toml");
        let src = Source::new("\na = -3\nb = 0\n", path);
        let raw: Raw = src.toml().unwrap();
        assert_eq!(src.millis(&raw.a, "a").unwrap_err().to_string(), "c.toml:2: a must be more than 0");
        assert_eq!(src.millis(&raw.b, "b").unwrap_err().to_string(), "c.toml:3: b must be more than 0");
        let src = Source::new("a = 5\n\nc = 1\n", path);
        assert!(src.toml::<Raw>().unwrap_err().to_string().starts_with("c.toml:3: unknown field `c`"));
        let raw: Raw = Source::new("a = 5\n", path).toml().unwrap();
        assert_eq!(src.millis(&raw.a, "a"), Ok(Some(Duration::from_millis(5))));
        assert_eq!(src.millis(&raw.b, "b"), Ok(None));
    }
}
