//! Creating, replacing and listing rings when a creator dies or an operator
//! errs: a creator killed at any stage leaves nothing that blocks the next
//! creation; a ring with one file missing is named as such and replaced by
//! the right call; `recreate` refuses a ring a live writer holds.

mod common;

use std::time::Duration;

use common::{arg, child, watchdog, AsUser, Kid, Reaped, TestNs, ROLE_VAR};
use helix::ring::{create_hook, scan, RingEntry, RingState};
use helix::shm::RingFile;
use helix::*;

fn opts(capacity: u64) -> RingOptions {
    RingOptions { capacity, ..Default::default() }
}

#[test]
fn child_entry() {
    let Ok(role) = std::env::var(ROLE_VAR) else { return };
    let ns = Namespace::from_env().unwrap();
    match role.as_str() {
        // Creates ring "r" and stops for good at stage STAGE.
        "creator" => {
            create_hook::set(|stage| {
                if format!("{stage:?}") == arg::<String>("STAGE") {
                    println!("stopped at {stage:?}");
                    std::thread::sleep(Duration::from_secs(3600));
                }
            });
            let r = Ring::create(&ns, "r", &opts(64));
            panic!("creation went past every stage: {:?}", r.map(|r| r.name().to_owned()));
        }
        // Creates ring "r", holds its writer lease and publishes.
        "writer" => {
            let ring = Ring::create(&ns, "r", &opts(64)).unwrap();
            let mut w = ring.writer().unwrap();
            for _ in 0..3 {
                w.publish(b"frame").unwrap();
            }
            println!("writing");
            std::thread::sleep(Duration::from_secs(3600));
        }
        // Not dumpable, as a process that changed its credentials is:
        // says who it is, and whether its own ring "mine" holds the name.
        "undumpable" => {
            use std::os::unix::fs::MetadataExt;
            // SAFETY: PR_SET_DUMPABLE changes only this process's flag.
            assert_eq!(unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) }, 0);
            let proc_owner = std::fs::metadata("/proc/self/status").unwrap().uid();
            let (me, pid) = (helix::process::my_uid(), std::process::id());
            println!("proc {proc_owner} my_uid {me} uid_of {:?}", helix::process::uid_of(pid));
            let _ring = Ring::create(&ns, "mine", &opts(64)).unwrap();
            let fan = fanin::FanIn::create(&ns, "mine", &fanin::FanInOptions { lanes: 1, ..Default::default() });
            println!("fan-in: {}", fan.err().map_or("made".to_owned(), |e| e.to_string()));
        }
        other => panic!("unknown role {other}"),
    }
}

/// A child process stopped where it printed `prefix`.
fn spawn_until(cmd: &mut std::process::Command, prefix: &str) -> Reaped {
    Kid::until(cmd, prefix).child
}

fn state(ns: &TestNs) -> Vec<RingEntry> {
    scan(ns).unwrap()
}

fn entry(name: &str, state: RingState) -> RingEntry {
    RingEntry { name: name.into(), state }
}

fn both_files(ns: &TestNs, ring: &str) -> Vec<String> {
    vec![format!("{}.{ring}", ns.as_str()), format!("{}.{ring}@readers", ns.as_str())]
}

/// In `ns`: ring `whole`, ring `no_data` without its data file, ring
/// `no_readers` without its control file, and `junk`, a data file that is
/// no ring.
fn whole_half_and_junk(ns: &TestNs, [whole, no_data, no_readers, junk]: [&str; 4]) {
    for name in [whole, no_data, no_readers] {
        drop(Ring::create(ns, name, &opts(64)).unwrap());
    }
    std::fs::remove_file(ns.data_path(no_data)).unwrap();
    std::fs::remove_file(ns.readers_path(no_readers)).unwrap();
    std::fs::write(ns.data_path(junk), b"not a ring at all").unwrap();
}

/// The ring works and its sequence starts at 1.
fn assert_fresh(ring: &Ring) {
    assert_eq!(ring.stats().published, 0);
    assert_eq!(ring.writer().unwrap().publish(b"first").unwrap(), 1);
}

#[test]
fn a_creator_killed_at_any_stage_leaves_nothing_that_blocks_the_next_create() {
    let _dog = watchdog("creator killed mid-creation", Duration::from_secs(60));
    for stage in ["Initialised", "ReadersPublished", "DataPublished"] {
        let ns = TestNs::new();
        let mut creator = spawn_until(child("creator", &ns).env("STAGE", stage), "stopped at");
        match stage {
            // Nothing has a name yet.
            "Initialised" => assert!(ns.files().is_empty(), "{:?}", ns.files()),
            // The control file has its name, the data file not yet: no ring,
            // and a live creator's file is not taken from it.
            "ReadersPublished" => {
                assert_eq!(state(&ns), [entry("r", RingState::MissingData { being_created: true })]);
                assert!(matches!(Ring::open(&ns, "r"), Err(AttachError::NotFound { .. })));
                match Ring::create(&ns, "r", &opts(64)) {
                    Err(CreateError::InProgress { path }) => assert_eq!(path, ns.readers_path("r")),
                    other => panic!("{stage}: {:?}", other.map(|_| ())),
                }
                assert_eq!(ns.files(), [format!("{}.r@readers", ns.as_str())]);
            }
            _ => assert_eq!(ns.files(), both_files(&ns, "r")),
        }
        creator.0.kill().unwrap();
        creator.0.wait().unwrap();
        drop(creator);
        let ring = if stage == "DataPublished" {
            // Published whole before it died: it is a ring.
            assert!(matches!(Ring::create(&ns, "r", &opts(64)), Err(CreateError::Exists { .. })));
            Ring::open(&ns, "r").unwrap()
        } else {
            Ring::create(&ns, "r", &opts(64)).unwrap_or_else(|e| panic!("{stage}: {e}"))
        };
        assert_fresh(&ring);
        assert_eq!(ns.files(), both_files(&ns, "r"), "{stage}");
        assert_eq!(state(&ns), [entry("r", RingState::Complete)], "{stage}");
    }
}

#[test]
fn a_data_file_an_older_creator_left_uninitialised_is_replaced_once_abandoned() {
    let ns = TestNs::new();
    // What a creator from before crash-atomic creation left when killed
    // between creating its files and sizing them.
    let data = std::fs::File::create(ns.data_path("r")).unwrap();
    std::fs::File::create(ns.readers_path("r")).unwrap();
    // Still young: its creator may be alive and about to finish.
    assert!(matches!(Ring::create(&ns, "r", &opts(64)), Err(CreateError::InProgress { .. })));
    assert!(matches!(state(&ns)[..], [RingEntry { state: RingState::Unfinished { abandoned: false, .. }, .. }]));
    let old = std::time::SystemTime::now() - Duration::from_secs(60);
    data.set_times(std::fs::FileTimes::new().set_modified(old)).unwrap();
    assert!(matches!(state(&ns)[..], [RingEntry { state: RingState::Unfinished { abandoned: true, .. }, .. }]));
    let e = Ring::open(&ns, "r").err().unwrap();
    assert!(matches!(e, AttachError::Abandoned { .. }) && e.is_absent(), "{e}");
    assert_fresh(&Ring::create(&ns, "r", &opts(64)).unwrap());
    assert_eq!(ns.files(), both_files(&ns, "r"));
}

#[test]
fn a_lone_control_file_is_named_with_its_missing_data_file_and_create_replaces_it() {
    let ns = TestNs::new();
    let old = Ring::create(&ns, "r", &opts(64)).unwrap();
    old.writer().unwrap().publish(b"old").unwrap();
    std::fs::remove_file(ns.data_path("r")).unwrap();
    // This process still maps the control file: it is not being created.
    assert_eq!(state(&ns), [entry("r", RingState::MissingData { being_created: false })]);
    for e in [Ring::open(&ns, "r").err().unwrap(), RingView::attach(&ns, "r").err().unwrap()] {
        match &e {
            AttachError::Incomplete { present, missing, missing_file: RingFile::Data, .. } => {
                assert_eq!((present, missing), (&ns.readers_path("r"), &ns.data_path("r")))
            }
            other => panic!("{other}"),
        }
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("{}.r@readers exists but /dev/shm/{}.r does not", ns.as_str(), ns.as_str())),
            "{msg}"
        );
        assert!(e.is_absent());
    }
    assert_fresh(&Ring::create(&ns, "r", &opts(64)).unwrap());
    assert_eq!(ns.files(), both_files(&ns, "r"));
    drop(old);
}

#[test]
fn a_lone_data_file_is_named_with_its_missing_control_file_and_only_recreate_replaces_it() {
    let ns = TestNs::new();
    let ring = Ring::create(&ns, "r", &opts(64)).unwrap();
    let mut w = ring.writer().unwrap();
    w.publish(b"still written").unwrap();
    std::fs::remove_file(ns.readers_path("r")).unwrap();
    assert_eq!(state(&ns), [entry("r", RingState::MissingReaders)]);
    let e = Ring::open(&ns, "r").err().unwrap();
    assert!(
        matches!(&e, AttachError::Incomplete { present, missing, missing_file: RingFile::Readers, .. }
            if *present == ns.data_path("r") && *missing == ns.readers_path("r")),
        "{e}"
    );
    assert!(!e.is_absent());
    // Not "already exists": create names both files, and leaves them.
    match Ring::create(&ns, "r", &opts(64)) {
        Err(e @ CreateError::Incomplete { missing_file: RingFile::Readers, .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(&ns.data_path("r").display().to_string()), "{msg}");
            assert!(msg.contains(&ns.readers_path("r").display().to_string()), "{msg}");
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
    // Its writer (this process) still holds the lease: recreate refuses.
    match Ring::recreate(&ns, "r", &opts(128)) {
        Err(CreateError::LiveWriter { pid, .. }) => assert_eq!(pid, std::process::id()),
        other => panic!("{:?}", other.map(|_| ())),
    }
    assert_eq!(ns.files(), [format!("{}.r", ns.as_str())]);
    drop((w, ring));
    let new = Ring::recreate(&ns, "r", &opts(128)).unwrap();
    assert_eq!(new.geometry().capacity, 128);
    assert_fresh(&new);
    assert_eq!(ns.files(), both_files(&ns, "r"));
}

#[test]
fn recreate_refuses_while_a_live_process_holds_the_writer_lease() {
    let ns = TestNs::watched("recreate under a live writer", Duration::from_secs(60));
    let mut writer = spawn_until(&mut child("writer", &ns), "writing");
    let pid = writer.0.id();
    let before = RingView::attach(&ns, "r").unwrap();
    let created = before.geometry().created_ns;
    match Ring::recreate(&ns, "r", &opts(1024)) {
        Err(e @ CreateError::LiveWriter { .. }) => {
            assert!(matches!(e, CreateError::LiveWriter { pid: p, .. } if p == pid));
            assert!(e.to_string().contains(&format!("live pid {pid}")), "{e}");
        }
        other => panic!("{:?}", other.map(|r| r.geometry().capacity)),
    }
    // Untouched: the same ring, its frames, its writer.
    let now = RingView::attach(&ns, "r").unwrap();
    assert_eq!((now.geometry().created_ns, now.geometry().capacity), (created, 64));
    assert_eq!((now.stats().published, now.stats().lease.pid), (3, Some(pid)));
    writer.0.kill().unwrap();
    writer.0.wait().unwrap();
    drop(writer);
    // Its writer dead, the ring may be replaced.
    let new = Ring::recreate(&ns, "r", &opts(1024)).unwrap();
    assert_eq!(new.geometry().capacity, 1024);
    assert_ne!(new.geometry().created_ns, created);
    assert_fresh(&new);
    // A process still attached to the old ring keeps its memory.
    assert_eq!(before.stats().published, 3);
}

#[test]
fn recreate_replaces_any_ring_without_a_live_writer_whole_half_or_corrupt() {
    let ns = TestNs::new();
    whole_half_and_junk(&ns, ["whole", "no-data", "no-readers", "junk"]);
    for name in ["whole", "no-data", "no-readers", "junk", "absent"] {
        let r = Ring::recreate(&ns, name, &opts(256)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(r.geometry().capacity, 256);
        assert_fresh(&r);
    }
    let names = ["absent", "junk", "no-data", "no-readers", "whole"];
    assert_eq!(state(&ns), names.map(|n| entry(n, RingState::Complete)));
    assert_eq!(ns.files(), names.iter().flat_map(|n| both_files(&ns, n)).collect::<Vec<_>>());
}

#[test]
fn scan_lists_every_ring_name_with_the_state_of_its_files() {
    let ns = TestNs::new();
    whole_half_and_junk(&ns, ["a.whole", "b", "c", "e"]);
    // And an empty data file: a creator that has not sized it yet.
    std::fs::File::create(ns.data_path("d")).unwrap();
    // Not ring files of this namespace: skipped.
    for other in ["UPPER", "x@other", "@readers", "f@readers@readers"] {
        std::fs::write(format!("/dev/shm/{}.{other}", ns.as_str()), b"").unwrap();
    }
    // The unfinished file's age is whatever the machine took since it was
    // made (not abandoned: far short of the limit); compared as 0.
    let mut got = state(&ns);
    for e in &mut got {
        if let RingState::Unfinished { age_secs, abandoned: false } = &mut e.state {
            *age_secs = 0;
        }
    }
    assert_eq!(
        got,
        [
            entry("a.whole", RingState::Complete),
            entry("b", RingState::MissingData { being_created: false }),
            entry("c", RingState::MissingReaders),
            entry("d", RingState::Unfinished { age_secs: 0, abandoned: false }),
            entry("e", RingState::MissingReaders),
        ]
    );
    // `list_rings` (data files only) is unchanged.
    assert_eq!(ns.list_rings().unwrap(), ["a.whole", "c", "d", "e"]);
}

/// The library takes the owner of /proc/self for its effective uid, and of
/// /proc/PID for a peer's. The files in /proc/PID of a process that is not
/// dumpable (one that changed its credentials) are root's, whoever it runs
/// as; the folder itself stays its own. Were it root's too, such a process's
/// own ring would not hold its name, and its readers would look root's.
#[test]
fn a_process_that_is_not_dumpable_knows_who_it_is() {
    if helix::process::my_uid() != 0 {
        eprintln!("skipped: needs root to run a child as another user");
        return;
    }
    let ns = TestNs::watched("an undumpable process's uid", Duration::from_secs(60));
    let as_user = AsUser::new();
    let mut kid = Kid::spawn(&mut as_user.command(&ns, "undumpable", 65534, 65534));
    // /proc/self/status owned by root shows the child is not dumpable:
    // what the test is about.
    assert_eq!(kid.expect("proc"), "proc 0 my_uid 65534 uid_of Some(65534)");
    let path = ns.data_path("mine");
    let refused = format!(
        "a broadcast ring named \"mine\" exists ({}); a fan-in ring may not share its name \
         (choose another, or remove that ring first)",
        path.display()
    );
    assert_eq!(kid.expect("fan-in"), format!("fan-in: {refused}"));
    assert!(kid.child.0.wait().unwrap().success());
}

#[test]
fn a_broadcast_ring_and_a_fan_in_ring_may_not_share_a_name() {
    use helix::fanin::{files::dir_path, FanIn, FanInError, FanInOptions};
    let ns = TestNs::new();
    let fan_opts = FanInOptions { lanes: 1, ..Default::default() };
    let _fan = FanIn::create(&ns, "fan", &fan_opts).unwrap();
    match Ring::create(&ns, "fan", &opts(64)) {
        Err(e @ CreateError::FanInNamed { .. }) => assert_eq!(
            e.to_string(),
            format!(
                "a fan-in ring named \"fan\" exists (/dev/shm/{}.fan@fanin); a broadcast ring may not share its name \
                 (choose another, or remove that ring first)",
                ns.as_str()
            )
        ),
        other => panic!("{:?}", other.map(|_| ())),
    }
    assert!(matches!(Ring::recreate(&ns, "fan", &opts(64)), Err(CreateError::FanInNamed { .. })));
    assert_eq!(ns.files(), [format!("{}.fan@fanin", ns.as_str())], "the refusal made nothing");
    // A repair (recreate) is refused before it takes the old ring down.
    let old = Ring::create(&ns, "both", &opts(64)).unwrap();
    old.writer().unwrap().publish(b"kept").unwrap();
    drop(old);
    std::fs::create_dir(dir_path(&ns, "both")).unwrap();
    assert!(matches!(Ring::recreate(&ns, "both", &opts(64)), Err(CreateError::FanInNamed { .. })));
    assert_eq!(RingView::attach(&ns, "both").unwrap().stats().published, 1, "the old ring is still there");
    // Another user's folder holds no name of this user's: anyone may make
    // one in /dev/shm (needs root to make it another user's).
    if helix::process::my_uid() == 0 {
        std::os::unix::fs::chown(dir_path(&ns, "both"), Some(65534), None).unwrap();
        assert_fresh(&Ring::recreate(&ns, "both", &opts(64)).unwrap());
    } else {
        eprintln!("not root: another user's fan-in folder not tried");
    }
    std::fs::remove_dir(dir_path(&ns, "both")).unwrap();

    let ring = Ring::create(&ns, "ring", &opts(64)).unwrap();
    match FanIn::create(&ns, "ring", &fan_opts) {
        Err(FanInError::BroadcastNamed { ring, path }) => {
            assert_eq!((ring.as_str(), path), ("ring", ns.data_path("ring")))
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
    // Either file of the broadcast ring holds its name: a control file a
    // dead creator left alone too.
    std::fs::remove_file(ns.data_path("ring")).unwrap();
    match FanIn::create(&ns, "ring", &fan_opts) {
        Err(FanInError::BroadcastNamed { path, .. }) => assert_eq!(path, ns.readers_path("ring")),
        other => panic!("{:?}", other.map(|_| ())),
    }
    assert!(!dir_path(&ns, "ring").exists(), "the refusal made nothing");
    drop(ring);
}
