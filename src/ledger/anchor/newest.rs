//! The newest anchor of a folder, followed as the anchors file grows.

use std::io::{self, BufReader};
use std::path::Path;

use super::{next_line, open_anchors, too_long, Anchor, ANCHORS_FILE};

/// The newest anchor of a folder (the one covering the most records), kept
/// up to date by reading only what was appended to `anchors` since the
/// last look. For a caller that asks every few seconds (the recorder's
/// metrics, on its recording thread): the file only grows, a line every
/// few seconds while heads are exported, and read whole each time it cost
/// more every day.
#[derive(Debug, Default)]
pub struct NewestAnchor {
    /// The file read (its inode) and the bytes of its whole lines taken.
    file: Option<(u64, u64)>,
    newest: Option<Anchor>,
    /// A line that does not decode was found in the file as it was then
    /// (its length and time of change): no anchor counts until it changes,
    /// and then it is read from its start.
    bad: Option<(u64, Option<std::time::SystemTime>)>,
}

impl NewestAnchor {
    /// Reads what `dir/anchors` gained since the last call; returns the
    /// newest anchor, `None` if there is none, the file cannot be read or
    /// a line of it is bad (as [`read_anchors`] would refuse it). A file
    /// replaced, cut shorter, or changed since a bad line was found is read
    /// again from its start.
    pub fn refresh(&mut self, dir: &Path) -> Option<&Anchor> {
        use std::io::Seek as _;
        use std::os::unix::fs::MetadataExt;
        let Ok((mut f, _)) = open_anchors(&dir.join(ANCHORS_FILE), false) else {
            *self = NewestAnchor::default();
            return None;
        };
        let Ok(meta) = f.metadata() else { return None };
        let now = (meta.len(), meta.modified().ok());
        match self.bad {
            Some(then) if then == now => return None,
            Some(_) => *self = NewestAnchor::default(),
            None => {}
        }
        let taken = match self.file {
            Some((ino, taken)) if ino == meta.ino() && taken <= meta.len() => taken,
            _ => {
                *self = NewestAnchor { file: Some((meta.ino(), 0)), ..NewestAnchor::default() };
                0
            }
        };
        f.seek(io::SeekFrom::Start(taken)).ok()?;
        let (mut r, mut raw, mut end) = (BufReader::new(f), Vec::new(), taken);
        while next_line(&mut r, &mut raw).ok()? {
            let Some(line) = raw.strip_suffix(b"\n") else {
                if too_long(&raw).is_some() {
                    self.bad = Some(now);
                    return None;
                }
                break;
            };
            match std::str::from_utf8(line).map_err(|e| e.to_string()).and_then(Anchor::decode) {
                Ok(a) if self.newest.as_ref().is_none_or(|n| a.records >= n.records) => self.newest = Some(a),
                Ok(_) => {}
                Err(_) => {
                    self.bad = Some(now);
                    return None;
                }
            }
            end += raw.len() as u64;
        }
        self.file = Some((meta.ino(), end));
        self.newest.as_ref()
    }
}
