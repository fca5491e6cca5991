//! The files a ledger folder holds beside its segments, and compressed
//! segments (`helix::ledger::{anchor, retention, compress}`): any bytes are
//! an `anchors` file, a `pruned` manifest or a `seg-N.hxl.lz4` that reads,
//! or an error naming the file (and the line); never a panic. What reads
//! encodes back to the same line.
//!
//! Input: a selector byte (`0`: anchors, `1`: pruned, `2`: a compressed
//! first segment, read by `verify`), then the file's bytes.
#![no_main]

use std::fs;

use helix::ledger::anchor::{read_anchors, Anchor, ANCHORS_FILE};
use helix::ledger::compress::{compressed_name, read_segment};
use helix::ledger::retention::{read_pruned, Pruned, PRUNED_FILE};
use libfuzzer_sys::fuzz_target;

#[path = "common/scratch.rs"]
mod scratch;
use scratch::dir;

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else { return };
    let dir = dir();
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir).unwrap();
    match which % 3 {
        0 => {
            fs::write(dir.join(ANCHORS_FILE), body).unwrap();
            match read_anchors(dir) {
                Ok(a) => {
                    for (_, anchor) in &a.list {
                        assert_eq!(Anchor::decode(&anchor.encode()).as_ref(), Ok(anchor));
                    }
                }
                Err(e) => assert!(e.to_string().contains(": line "), "{e}"),
            }
        }
        1 => {
            fs::write(dir.join(PRUNED_FILE), body).unwrap();
            match read_pruned(dir) {
                Ok(p) => {
                    let p = p.expect("the file exists");
                    assert_eq!(Pruned::decode(&p.encode()), Ok(p));
                }
                Err(e) => assert!(e.to_string().contains(": line 1: "), "{e}"),
            }
        }
        _ => {
            let path = dir.join(compressed_name(1));
            fs::write(&path, body).unwrap();
            let _ = read_segment(&path);
            // A verdict, never a panic: a segment that decodes is checked
            // as any segment; one that does not is named.
            if let Ok(Err(f)) = helix::ledger::verify(dir) {
                let _ = f.to_string();
            }
        }
    }
    let _ = fs::remove_dir_all(dir);
});
