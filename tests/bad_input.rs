//! Corrupt, truncated and foreign regions, and bad names: each gives a
//! typed error that names the problem; nothing panics or hangs.

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use common::TestNs;
use helix::layout::*;
use helix::*;

fn make(ns: &TestNs) {
    Ring::create(ns, "r", &RingOptions { capacity: 8, max_readers: 4, ..Default::default() }).unwrap();
}

/// Overwrites `bytes` at `offset` of `path`; returns what was there.
fn patch(path: &Path, offset: u64, bytes: &[u8]) -> Vec<u8> {
    let f = OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut old = vec![0u8; bytes.len()];
    f.read_exact_at(&mut old, offset).unwrap();
    f.write_all_at(bytes, offset).unwrap();
    old
}

fn attach(ns: &TestNs) -> AttachError {
    // Both read-only (reader) and read-write (writer) attaches validate.
    let w = Ring::open(ns, "r").err().expect("read-write attach accepted a bad region");
    let r = Reader::attach(ns, "r", &ReaderOptions::named("t")).err().expect("reader attach accepted a bad region");
    assert_eq!(w.to_string(), r.to_string());
    r
}

/// Writes each case's bytes at its offset of `path`, one case at a time:
/// every attach must fail naming the case's field and `path`. The old bytes
/// are put back after each case.
fn each_field_is_named(ns: &TestNs, path: &Path, cases: &[(&str, u64, Vec<u8>)]) {
    for (field, offset, bytes) in cases {
        let old = patch(path, *offset, bytes);
        match attach(ns) {
            AttachError::BadField { field: f, path: p, .. } => {
                assert_eq!((f, p.as_path()), (*field, path), "corrupting offset {offset}")
            }
            other => panic!("corrupting {field}: {other}"),
        }
        patch(path, *offset, &old);
    }
}

#[test]
fn each_corrupted_data_header_field_is_named() {
    let ns = TestNs::watched("header corruption", Duration::from_secs(60));
    make(&ns);
    let path = ns.data_path("r");
    let u32b = |v: u32| v.to_ne_bytes().to_vec();
    let u64b = |v: u64| v.to_ne_bytes().to_vec();
    let cases: Vec<(&str, u64, Vec<u8>)> = vec![
        ("magic", 0, u64b(0x1234)),
        ("header_size", 12, u32b(512)),
        ("capacity", 16, u64b(6)),
        ("capacity", 16, u64b(0)),
        ("slot_size", 24, u32b(100)),
        ("slot_size", 24, u32b(0)),
        ("policy", 28, u32b(7)),
        ("max_readers", 32, u32b(0)),
        ("flags", 36, u32b(1)),
        ("stall_timeout_ns", 40, u64b(0)),
        ("data_offset", 48, u64b(4096)),
        ("file_size", 56, u64b(1)),
        ("name_len", 128, u32b(200)),
    ];
    each_field_is_named(&ns, &path, &cases);
    // A capacity that disagrees with the file's size.
    let old = patch(&path, 16, &16u64.to_ne_bytes());
    assert!(matches!(attach(&ns), AttachError::BadField { field: "file_size", .. }));
    patch(&path, 16, &old);
    // A header naming another ring.
    let old = patch(&path, 136, b"x");
    assert!(matches!(attach(&ns), AttachError::NameMismatch { .. }), "{}", attach(&ns));
    patch(&path, 136, &old);
    // Version 0: still initialising; another version: refused by number.
    let old = patch(&path, 8, &0u32.to_ne_bytes());
    assert!(matches!(attach(&ns), AttachError::Initializing { .. }));
    patch(&path, 8, &(ABI_VERSION + 1).to_ne_bytes());
    match attach(&ns) {
        AttachError::Version { found, expected, .. } => assert_eq!((found, expected), (ABI_VERSION + 1, ABI_VERSION)),
        other => panic!("{other}"),
    }
    patch(&path, 8, &old);
    // Restored: attaches again.
    Reader::attach(&ns, "r", &ReaderOptions::named("ok")).unwrap();
}

#[test]
fn each_corrupted_control_header_field_is_named() {
    let ns = TestNs::new();
    make(&ns);
    let path = ns.readers_path("r");
    let cases: Vec<(&str, u64, Vec<u8>)> = vec![
        ("magic", 0, 7u64.to_ne_bytes().to_vec()),
        ("header_size", 12, 64u32.to_ne_bytes().to_vec()),
        ("max_readers", 16, 5u32.to_ne_bytes().to_vec()),
        ("entry_size", 20, 128u32.to_ne_bytes().to_vec()),
        ("created_ns", 24, 1u64.to_ne_bytes().to_vec()),
        ("file_size", 32, 3u64.to_ne_bytes().to_vec()),
    ];
    // A control file longer than its header says.
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    let len = f.metadata().unwrap().len();
    f.set_len(len + 256).unwrap();
    assert!(matches!(attach(&ns), AttachError::BadField { field: "file_size", .. }));
    f.set_len(len).unwrap();
    each_field_is_named(&ns, &path, &cases);
}

#[test]
fn truncated_empty_and_foreign_files_are_refused() {
    let ns = TestNs::new();
    make(&ns);
    let data = ns.data_path("r");
    let full = std::fs::metadata(&data).unwrap().len();
    let f = OpenOptions::new().write(true).open(&data).unwrap();
    f.set_len(full - 64).unwrap();
    assert!(matches!(attach(&ns), AttachError::Truncated { size, needed, .. } if size == full - 64 && needed == full));
    f.set_len(100).unwrap();
    assert!(matches!(attach(&ns), AttachError::Truncated { size: 100, .. }));
    // Empty, or sized but all zeros: what an attacher racing the creator
    // sees. Reported as "not initialised yet", so callers know to retry.
    f.set_len(0).unwrap();
    assert!(matches!(attach(&ns), AttachError::Initializing { .. }));
    f.set_len(full).unwrap();
    assert!(matches!(attach(&ns), AttachError::Initializing { .. }));
    // Left like that by a creator that died long ago: abandoned, not
    // "wait and retry".
    let old = std::time::SystemTime::now() - Duration::from_secs(60);
    f.set_times(std::fs::FileTimes::new().set_modified(old)).unwrap();
    match attach(&ns) {
        AttachError::Abandoned { age_secs, .. } => assert!(age_secs >= 59, "{age_secs}"),
        other => panic!("{other}"),
    }
    // A foreign file of the right size: the magic says so.
    f.set_len(full).unwrap();
    f.write_all_at(&[0xAB; 4096], 0).unwrap();
    match attach(&ns) {
        AttachError::BadField { field: "magic", found, .. } => assert_eq!(found, u64::from_ne_bytes([0xAB; 8])),
        other => panic!("{other}"),
    }
    // A missing control region: named, with the data file that is there.
    Ring::unlink(&ns, "r").unwrap();
    make(&ns);
    std::fs::remove_file(ns.readers_path("r")).unwrap();
    assert!(matches!(attach(&ns), AttachError::Incomplete { missing_file: helix::shm::RingFile::Readers, .. }));
}

#[test]
fn errors_read_as_one_clear_line() {
    let ns = TestNs::new();
    make(&ns);
    patch(&ns.data_path("r"), 16, &6u64.to_ne_bytes());
    let msg = attach(&ns).to_string();
    assert!(!msg.contains('\n'));
    assert!(
        msg.contains("capacity") && msg.contains("is 6") && msg.contains(&ns.data_path("r").display().to_string()),
        "{msg}"
    );
    let msg = Reader::attach(&ns, "Bad/Name", &ReaderOptions::default()).err().unwrap().to_string();
    assert_eq!(msg, "ring name \"Bad/Name\" has 'B' at byte 0; allowed are a-z 0-9 . _ - (starting with a-z or 0-9)");
    let msg = Reader::attach(&ns, "missing", &ReaderOptions::default()).err().unwrap().to_string();
    assert!(msg.contains("no ring \"missing\" in namespace"), "{msg}");
}

#[test]
fn a_name_is_refused_before_any_file_is_touched() {
    let ns = TestNs::new();
    for name in ["../etc", "a/b", "", "UPPER", "with space", &"x".repeat(64), "-lead", ".hidden"] {
        assert!(matches!(Ring::create(&ns, name, &RingOptions::default()), Err(CreateError::Name(_))), "{name:?}");
        assert!(matches!(Ring::unlink(&ns, name), Err(AttachError::Name(_))), "{name:?}");
    }
    assert!(ns.files().is_empty(), "{:?}", ns.files());
    assert!(Namespace::new("a.b").is_err() && Namespace::new("").is_err() && Namespace::new("UP").is_err());
}

#[test]
fn a_full_dev_shm_is_a_creation_error_not_a_sigbus() {
    let ns = TestNs::new();
    // Far more than /dev/shm holds on any machine this runs on; reserved at
    // creation, so the failure is immediate and leaves no file behind.
    let huge = RingOptions { capacity: 1 << 32, max_payload: 1 << 16, ..Default::default() };
    match Ring::create(&ns, "huge", &huge) {
        Err(CreateError::NoSpace { path, .. }) => assert_eq!(path, ns.data_path("huge")),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a ring of 256 TiB was created"),
    }
    assert!(ns.files().is_empty(), "{:?}", ns.files());
}

/// `e` and each of its sources, as a program prints it (`{:#}`), and the
/// innermost cause's text.
fn chain_and_cause(e: &(dyn std::error::Error + 'static)) -> (String, String) {
    let (mut chain, mut cause) = (e.to_string(), e.to_string());
    let mut next = e.source();
    while let Some(s) = next {
        cause = s.to_string();
        chain = format!("{chain}: {cause}");
        next = s.source();
    }
    (chain, cause)
}

#[test]
fn an_error_says_its_cause_once() {
    use helix::control::ControlError;
    use helix::fanin::{FanInError, SendError};
    use helix::ledger::{anchor::LineError, catchup::CatchUpError, LedgerError};
    use helix::ring::{ForeignRing, RepairError};
    use helix::twin::TwinRingError;
    let io = || std::io::Error::from_raw_os_error(libc::EACCES);
    let path = || Path::new("/dev/shm/helix.r").to_owned();
    let foreign = ForeignRing { ring: "r".into(), path: path(), owner: 7, me: 8, service: None };
    let errors: Vec<Box<dyn std::error::Error>> = vec![
        Box::new(CreateError::NoSpace { path: path(), error: io() }),
        Box::new(CreateError::Io { path: path(), op: "open", error: io() }),
        Box::new(AttachError::Io { path: path(), error: io() }),
        Box::new(RepairError::Io { path: path(), op: "open", error: io() }),
        Box::new(FanInError::Io { path: path(), op: "open", error: io() }),
        Box::new(LineError::Io { path: path(), error: io() }),
        Box::new(CatchUpError::Io { path: path(), error: io() }),
        Box::new(LedgerError::Io { path: path(), error: io() }),
        Box::new(TwinRingError::Attach { ring: "r".into(), error: AttachError::Io { path: path(), error: io() } }),
        Box::new(ControlError::Attach(FanInError::Io { path: path(), op: "open", error: io() })),
        Box::new(ControlError::Acks(AttachError::Io { path: path(), error: io() })),
        Box::new(ControlError::Foreign(foreign)),
        Box::new(ControlError::Send(SendError::Full { lane: 3 })),
    ];
    for e in &errors {
        let (chain, cause) = chain_and_cause(e.as_ref());
        assert_eq!(chain.matches(&cause).count(), 1, "{chain:?} says {cause:?} more than once");
    }
    // The innermost cause of each I/O error is the system's.
    let denied = errors.iter().filter(|e| chain_and_cause(e.as_ref()).1.contains("(os error 13)")).count();
    assert_eq!(denied, errors.len() - 2);
}

/// A program prints an I/O error's cause once (`helix-ledger: /x: No such
/// file or directory (os error 2)`, not the cause again after it).
#[test]
fn a_program_says_an_io_errors_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-ledger-here");
    for program in [env!("CARGO_BIN_EXE_helix-ledger"), env!("CARGO_BIN_EXE_helixctl")] {
        let out = std::process::Command::new(program).arg("verify").arg(&missing).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{program}: {err}");
        assert_eq!(err.matches("(os error 2)").count(), 1, "{program}: {err}");
        assert!(err.contains(&missing.display().to_string()), "{program}: {err}");
    }
}
