//! helix-bridge as a service: `--config FILE` and `--check`, the systemd
//! unit, sd_notify, two links of one process moving frames end to end, and
//! the ledger head mirror, against a real nats-server on loopback.

mod support;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use helix::ledger::format::{hex, RingDecl};
use helix::ledger::sign::{Reason, Signer};
use helix::ledger::verify::latest_checkpoint;
use helix::ledger::Ledger;
use helix::{ReadError, Reader, ReaderOptions, Start};
use support::{free_port, kind, payload, scrape, World};

const KIND_BATCH: u32 = 0x4842_0001;
const KIND_GAP: u32 = 0x4842_0002;

fn bridge() -> Command {
    Command::new(env!("CARGO_BIN_EXE_helix-bridge"))
}

fn out(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// A scratch folder of this test, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!("helix-bridge-svc-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn check_passes_on_the_packaged_default_and_names_a_bad_line() {
    let default = Path::new(env!("CARGO_MANIFEST_DIR")).join("default.toml");
    let o = bridge().arg("--config").arg(&default).arg("--check").output().unwrap();
    assert!(o.status.success(), "{}", out(&o));
    assert!(out(&o).contains("no link configured"), "{}", out(&o));
    let printed = bridge().arg("--print-default-config").output().unwrap();
    assert_eq!(printed.stdout, std::fs::read(&default).unwrap());

    let dir = Scratch::new("check");
    let bad = dir.0.join("bridge.toml");
    std::fs::write(&bad, "site = \"plant\"\n\n[[export]]\nring = \"telemetry\"\ngateing = false\n").unwrap();
    let o = bridge().arg("--config").arg(&bad).arg("--check").output().unwrap();
    assert!(!o.status.success());
    let want = format!("{}:5: unknown field `gateing`", bad.display());
    assert!(out(&o).contains(&want), "{}\nwant {want}", out(&o));
    // Running it is refused the same way, before anything starts.
    let o = bridge().arg("--config").arg(&bad).output().unwrap();
    assert!(!o.status.success() && out(&o).contains(&want), "{}", out(&o));
    let o = bridge().arg("--config").arg(dir.0.join("missing.toml")).arg("--check").output().unwrap();
    assert!(!o.status.success() && out(&o).contains("missing.toml: cannot read"), "{}", out(&o));

    // --check reads the credentials file, as the service would at start.
    let creds = dir.0.join("bridge.creds");
    std::fs::write(&bad, format!("[nats]\ncredentials = \"{}\"\n", creds.display())).unwrap();
    let o = bridge().arg("--config").arg(&bad).arg("--check").output().unwrap();
    let want = format!("NATS credentials file {}: No such file", creds.display());
    assert!(!o.status.success() && out(&o).contains(&want), "{}", out(&o));
    std::fs::write(&creds, "").unwrap();
    let o = bridge().arg("--config").arg(&bad).arg("--check").output().unwrap();
    assert!(o.status.success(), "{}", out(&o));

    // The file is the whole configuration: the ad-hoc flags are refused
    // beside it, and a command is refused with --config or --check.
    for (flag, value) in [("--server", "nats://10.0.0.1:4222"), ("--ack-timeout-ms", "30000"), ("--site", "b")] {
        let o = bridge().arg("--config").arg(&default).args([flag, value]).output().unwrap();
        let said = format!("{flag} is a flag of the export and import");
        assert!(!o.status.success() && out(&o).contains(&said), "{}", out(&o));
    }
    let o = bridge().arg("--config").arg(&default).args(["export", "--ring", "t"]).output().unwrap();
    assert!(!o.status.success() && out(&o).contains("give no command with it"), "{}", out(&o));
    // The ad-hoc flags' names are held to what the file's are, before
    // anything connects (here to a port nobody listens on): before, a
    // wildcard host had every publish fail, retried for ever.
    let adhoc = |args: &[&str]| ended_within_20s(bridge().args(["--server", "nats://127.0.0.1:1"]).args(args));
    let said = adhoc(&["export", "--ring", "t", "--host", "*"]);
    assert!(said.contains("--host \"*\" must be 1 to 255 bytes"), "{said}");
    let long = "h".repeat(256);
    let said = adhoc(&["import", "--ring", "t", "--source-host", &long, "--source-ring", "t"]);
    assert!(said.contains("--source-host \"hhh") && said.contains("must be 1 to 255 bytes"), "{said}");
    let said = adhoc(&["--site", "a b", "import", "--ring", "t", "--source-host", "h", "--source-ring", "t"]);
    assert!(said.contains("--site \"a b\" must be"), "{said}");
    let said = adhoc(&["import", "--ring", "t", "--source-host", "h", "--source-ring", "T"]);
    assert!(said.contains("--source-ring"), "{said}");
    // Nothing configured: nothing to run, said so.
    let o = bridge().arg("--config").arg(&default).output().unwrap();
    assert!(!o.status.success() && out(&o).contains("no link configured"), "{}", out(&o));

    // An acknowledgement the links would wait for longer than the watchdog
    // allows is said (found by review: a server that slow gets the bridge
    // killed by the watchdog), by --check as the packaged unit would run it.
    let slow = "[nats]\nservers = [\"nats://127.0.0.1:1\"]\nack_timeout_ms = 20000\n[[export]]\nring = \"t\"\n";
    std::fs::write(&bad, format!("site = \"plant\"\nhost = \"a\"\n{slow}")).unwrap();
    let o = bridge().arg("--config").arg(&bad).arg("--check").env_remove("WATCHDOG_USEC").output().unwrap();
    let want = "warning: ack_timeout_ms = 20000 is more than half the systemd watchdog timeout (30s)";
    assert!(o.status.success() && out(&o).contains(want), "{}", out(&o));
    let fine = bad.with_file_name("fine.toml");
    std::fs::write(&fine, format!("site = \"plant\"\nhost = \"a\"\n{}", slow.replace("20000", "15000"))).unwrap();
    let o = bridge().arg("--config").arg(&fine).arg("--check").output().unwrap();
    assert!(o.status.success() && !out(&o).contains("warning"), "{}", out(&o));
    // Seconds written for milliseconds: every publish would time out, sent
    // again for ever, no line naming the key (found by review).
    std::fs::write(&fine, format!("site = \"plant\"\nhost = \"a\"\n{}", slow.replace("20000", "10"))).unwrap();
    let o = bridge().arg("--config").arg(&fine).arg("--check").output().unwrap();
    let want = "warning: ack_timeout_ms = 10 is shorter than a JetStream acknowledgement usually takes";
    assert!(o.status.success() && out(&o).contains(want), "{}", out(&o));
}

/// What `cmd` printed, once it ended; one still running after 20 s (as
/// one that waits for a server for ever would be) is killed and fails the
/// test.
fn ended_within_20s(cmd: &mut Command) -> String {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{cmd:?} still ran after 20 s: {}", out(&child.wait_with_output().unwrap()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let o = child.wait_with_output().unwrap();
    assert!(!o.status.success(), "{cmd:?} succeeded: {}", out(&o));
    out(&o)
}

/// The value of `key=` in a unit's text.
fn setting(unit: &str, key: &str) -> Vec<String> {
    unit.lines().filter_map(|l| l.strip_prefix(&format!("{key}="))).map(|v| v.trim().to_owned()).collect()
}

#[test]
fn the_unit_passes_systemd_analyze_verify_and_runs_the_packaged_file() {
    let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd");
    let text = std::fs::read_to_string(units.join("helix-bridge.service")).unwrap();
    let set = |k: &str| setting(&text, k);
    assert_eq!(set("ExecStart"), ["/usr/bin/helix-bridge --config /etc/helix/bridge.toml"]);
    for (k, v) in [("Type", "notify"), ("User", "helix"), ("RemoveIPC", "no"), ("Restart", "on-failure")] {
        assert_eq!(set(k), [v], "{k}");
    }
    assert_eq!(set("ProtectSystem"), ["strict"]);
    assert_eq!(set("ReadWritePaths"), ["/dev/shm /var/lib/helix/ledger"]);
    assert!(set("WatchdogSec").len() == 1 && set("PrivateNetwork").is_empty());
    // What --check holds ack_timeout_ms to (serve::UNIT_WATCHDOG).
    assert_eq!(set("WatchdogSec"), ["30s"]);
    assert!(set("RestrictAddressFamilies")[0].contains("AF_INET"));

    let dir = Scratch::new("unit");
    let bin = Path::new(env!("CARGO_BIN_EXE_helix-bridge")).parent().unwrap();
    std::fs::write(dir.0.join("helix-bridge.service"), text.replace("/usr/bin/", &format!("{}/", bin.display())))
        .unwrap();
    let o = Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.0.join("helix-bridge.service"))
        .output()
        .expect("systemd-analyze is needed (apt-get install systemd)");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && stderr.trim().is_empty(), "{stderr}");
}

/// Receives what the bridge sends to `NOTIFY_SOCKET` until `done` says it
/// has all it wants (at most 30 s); returns the datagrams.
fn notifications(sock: &UnixDatagram, done: impl Fn(&[String]) -> bool) -> Vec<String> {
    sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut got = vec![];
    let mut buf = [0u8; 4096];
    while !done(&got) {
        assert!(Instant::now() < deadline, "notifications so far: {got:?}");
        if let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    got
}

/// The configuration file of `w`'s world with `links` added.
fn config(w: &World, dir: &Path, metrics: u16, links: &str) -> PathBuf {
    let text = format!(
        "site = \"{tag}\"\nhost = \"hosta\"\nnamespace = \"{ns}\"\nmetrics = \"127.0.0.1:{metrics}\"\n\
         [nats]\nservers = [\"{url}\"]\n[stream]\nname = \"{stream}\"\n{links}",
        tag = w.tag,
        ns = w.ns.as_str(),
        url = w.url,
        stream = w.tag.to_uppercase(),
    );
    let path = dir.join("bridge.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn one_process_exports_and_imports_by_its_configuration() {
    const N: u64 = 20_000;
    let (mut w, mut writer) = World::with_rings("config links", Duration::from_secs(120), 4096, 4096);
    let dir = Scratch::new(&w.tag);
    let port = free_port();
    let links =
        "[[export]]\nring = \"src\"\n[[import]]\nsource_host = \"hosta\"\nsource_ring = \"src\"\nring = \"dst\"\n";
    let path = config(&w, &dir.0, port, links);
    let sock_path = dir.0.join("notify");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let mut cmd = bridge();
    cmd.arg("--config").arg(&path).env("NOTIFY_SOCKET", &sock_path).env("WATCHDOG_USEC", "2000000");
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let child = w.spawn(cmd);
    let ready = notifications(&sock, |g| g.iter().any(|m| m.contains("READY=1")));
    assert!(ready.last().unwrap().contains("STATUS=2 links; export src"), "{ready:?}");
    // What helixctl readers and stat show: the one process is src's gating
    // reader helix-bridge and dst's writer.
    let src = helix::RingView::attach(&w.ns, "src").unwrap().stats();
    let dst = helix::RingView::attach(&w.ns, "dst").unwrap().stats();
    let reader = src.readers.iter().find(|r| r.name == "helix-bridge").expect("no reader helix-bridge on src");
    assert!(reader.alive && reader.gating, "{reader:?}");
    assert!(dst.lease.alive && dst.lease.pid == Some(reader.pid), "{:?} {reader:?}", dst.lease);

    let mut buf = vec![0u8; 256];
    let opts = ReaderOptions { gating: true, start: Start::Oldest, ..ReaderOptions::named("check") };
    let mut r = Reader::attach(&w.ns, "dst", &opts).unwrap();
    let (mut next, mut written) = (1u64, 1u64);
    let deadline = Instant::now() + Duration::from_secs(60);
    while next <= N {
        assert!(Instant::now() < deadline, "only {} of {N} frames arrived", next - 1);
        while written <= N && written < next + 3000 {
            assert_eq!(writer.publish_kind(kind(written), &payload(written)).unwrap(), written);
            written += 1;
        }
        let info = match r.read_timeout(&mut buf, Duration::from_millis(200)) {
            Ok(i) => i,
            Err(ReadError::Timeout) => continue,
            Err(e) => panic!("reading dst: {e}"),
        };
        match info.kind {
            KIND_BATCH => continue,
            KIND_GAP => panic!("a gap mark at source sequence {next}"),
            k => {
                assert_eq!((k, &buf[..info.len]), (kind(next), &payload(next)[..]), "source sequence {next}");
                next += 1;
            }
        }
    }
    let frames = |dir: &str| link_metric(port, "helix_bridge_frames_total", dir, None);
    // The counters move after the frames do: the importer's after its
    // commit, the exporter's as JetStream acknowledges.
    until("the importer counts every frame", || frames("import") == Some(N as f64));
    until("the exporter counts what was acknowledged", || frames("export").is_some_and(|f| f >= N as f64 - 512.0));
    // Healthy links: the watchdog is pinged, and STATUS carries the rates.
    let later = notifications(&sock, |g| {
        g.iter().any(|m| m.contains("WATCHDOG=1")) && g.iter().any(|m| m.contains("frames/s; import dst"))
    });
    assert!(later.iter().all(|m| !m.contains("READY=1")), "{later:?}");
    let err = w.stop(child);
    assert!(err.contains("export src stopped") && err.contains("import dst stopped"), "{err}");
}

/// The key the test ledgers are signed with.
fn ledger_key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[9; 32])
}

/// A ledger of `frames` frames of ring "t" in `dir`, or `frames` more,
/// signed at its close as the recorder signs when it stops.
fn record(dir: &Path, frames: u64) {
    record_ring(dir, frames, 1);
}

/// [`record`] from the incarnation `created_ns` of the ring.
fn record_ring(dir: &Path, frames: u64, created_ns: u64) {
    let (mut l, _) = Ledger::open(dir, 1 << 20).unwrap();
    l.set_signer(Some(Signer::new(ledger_key(), 60)));
    let decl = RingDecl { created_ns, capacity: 1024, max_payload: 64, policy: 1, name: "t".into() };
    let (id, first) = l.declare(&decl).unwrap();
    for seq in first..first + frames {
        l.reserve_frame(id, seq, 1, seq * 1000, 0, 8).copy_from_slice(&seq.to_le_bytes());
        l.seal(id, 1);
    }
    assert!(l.checkpoint(first * 1000 + frames * 1000, Reason::Shutdown));
    l.flush().unwrap();
    l.sync().unwrap();
}

/// The head of `dir` as `helix-ledger head --json` prints it, built here
/// from the library's head, with its latest checkpoint's chain position,
/// key id and signature (the rest of it is checked by its signature).
fn head_json(dir: &Path) -> serde_json::Value {
    let h = helix::ledger::head(dir).unwrap().unwrap();
    let rings: Vec<_> = h.rings.iter().map(|(n, s)| serde_json::json!({ "name": n, "next_seq": s })).collect();
    let c = latest_checkpoint(dir).unwrap().unwrap().unwrap().checkpoint;
    assert!(c.signed_by(&ledger_key().verifying_key()));
    serde_json::json!({
        "hash": hex(&h.hash), "records": h.records, "blocks": h.blocks, "segment": h.segment,
        "torn_bytes": h.torn_bytes, "rings": rings,
        "checkpoint": {
            "records": c.records, "hash": hex(&c.hash), "key_id": hex(&c.key_id), "signature": hex(&c.signature),
        },
    })
}

/// `head` with only the checkpoint's fields that [`head_json`] holds.
fn trimmed(mut head: serde_json::Value) -> serde_json::Value {
    if let Some(c) = head["checkpoint"].as_object_mut() {
        c.retain(|k, _| ["records", "hash", "key_id", "signature"].contains(&k.as_str()));
    }
    head
}

/// The messages on `subject`: how many, and the last one's JSON.
fn heads(w: &World, subject: &str) -> (usize, Option<serde_json::Value>) {
    use futures::StreamExt;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let client = async_nats::connect(&w.url).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let Ok(stream) = js.get_stream(w.tag.to_uppercase()).await else { return (0, None) };
        let mut counts = stream.info_with_subjects(subject).await.unwrap();
        let mut n = 0;
        while let Some(c) = counts.next().await {
            n += c.unwrap().1;
        }
        let last = stream.get_last_raw_message_by_subject(subject).await.ok();
        (n, last.map(|m| serde_json::from_slice(&m.payload).unwrap()))
    })
}

/// A metric of the ledger mirror at `port` (-1 while nothing listens).
fn ledger_metric(port: u16, name: &str) -> f64 {
    if std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        return -1.0;
    }
    link_metric(port, name, "ledger", None).unwrap_or(-1.0)
}

/// Metric `name` of the link of `direction` (and of ring `ring`, if
/// given) at `port`.
fn link_metric(port: u16, name: &str, direction: &str, ring: Option<&str>) -> Option<f64> {
    let samples = scrape(&format!("127.0.0.1:{port}")).into_iter();
    samples.filter(|(n, d, r, _)| n == name && d == direction && ring.is_none_or(|ring| r == ring)).map(|s| s.3).next()
}

/// Waits (at most 30 s) until `f` holds.
fn until(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A world under a watchdog of 120 s, a scratch folder named after its
/// tag and `suffix`, and the empty ledger folder `ledger` in it.
fn ledger_world(what: &'static str, suffix: &str) -> (World, Scratch, PathBuf) {
    let w = World::new(what, Duration::from_secs(120));
    let dir = Scratch::new(&format!("{}-{suffix}", w.tag));
    let ledger = dir.0.join("ledger");
    std::fs::create_dir_all(&ledger).unwrap();
    (w, dir, ledger)
}

#[test]
fn the_ledger_head_is_mirrored_once_per_change_and_anchored() {
    let (mut w, dir, ledger) = ledger_world("ledger head", "ledger");
    record(&ledger, 100);
    let port = free_port();
    let links = format!("[ledger]\ndir = \"{}\"\ninterval_ms = 20\nanchor = true\n", ledger.display());
    let path = config(&w, &dir.0, port, &links);
    let subject = format!("helix.{}.hosta.ledger.head", w.tag);
    let start = |w: &mut World| {
        let mut cmd = bridge();
        cmd.arg("--config").arg(&path).stdout(Stdio::null()).stderr(Stdio::piped());
        w.spawn(cmd)
    };
    let first = start(&mut w);
    until("the first head", || heads(&w, &subject).0 == 1);
    let first_head = head_json(&ledger);
    assert_eq!(heads(&w, &subject).1.map(trimmed).as_ref(), Some(&first_head));
    // 100 frames and the ring's declaration, signed by the checkpoint after
    // them: the head mirror carries what another host checks with the
    // public key alone.
    assert_eq!((&first_head["records"], &first_head["checkpoint"]["records"]), (&102.into(), &101.into()));
    // The head does not change: it is read again and again, not published.
    until("heads read", || ledger_metric(port, "helix_bridge_ledger_heads_read_total") >= 20.0);
    assert_eq!(ledger_metric(port, "helix_bridge_ledger_heads_published_total"), 1.0);
    assert_eq!(heads(&w, &subject).0, 1);

    record(&ledger, 50);
    let second = head_json(&ledger);
    let last_records = || heads(&w, &subject).1.map(|h| h["records"].clone());
    until("the second head", || last_records().as_ref() == Some(&second["records"]));
    // Anchored once JetStream has acknowledged it, after the publish.
    let anchored = || helix::ledger::anchor::read_anchors(&ledger).ok()?.list.last().map(|(_, a)| a.records);
    until("the second head anchored", || anchored() == second["records"].as_u64());
    let (published, last) = heads(&w, &subject);
    assert_eq!(last.map(trimmed).as_ref(), Some(&second));
    assert_eq!(second["checkpoint"]["records"], 102 + 50);
    // Each acknowledged head is an anchor the ledger's own reader accepts:
    // the first, the last, and one for each (a head read while the 50
    // records were being written may have been published between them).
    let anchors = helix::ledger::anchor::read_anchors(&ledger).unwrap().list;
    let got: Vec<_> = anchors.iter().map(|(_, a)| (a.records, hex(&a.hash))).collect();
    let at = |h: &serde_json::Value| (h["records"].as_u64().unwrap(), h["hash"].as_str().unwrap().to_owned());
    assert_eq!(got.len(), published, "{got:?}");
    assert_eq!((got.first(), got.last()), (Some(&at(&first_head)), Some(&at(&second))));
    for (records, hash) in &got {
        assert_eq!(&hex(&helix::ledger::anchor::hash_at(&ledger, *records).unwrap().unwrap()), hash);
    }

    // A restarted bridge publishes the same head again: JetStream drops it
    // (its Nats-Msg-Id is the record count and hash), and no anchor is
    // repeated.
    w.kill9(first);
    let _again = start(&mut w);
    until("the restarted mirror's publish", || ledger_metric(port, "helix_bridge_ledger_heads_published_total") == 1.0);
    assert_eq!(heads(&w, &subject).0, published);
    assert_eq!(helix::ledger::anchor::read_anchors(&ledger).unwrap().list.len(), published);

    // Another ledger of the same length in the folder (its ring another
    // incarnation): another head, published and anchored. Before, the mirror
    // took it for the head it had published (the same record count) and
    // JetStream for a duplicate (the id held only the count).
    std::fs::remove_dir_all(&ledger).unwrap();
    std::fs::create_dir_all(&ledger).unwrap();
    record_ring(&ledger, 100, 2);
    record_ring(&ledger, 50, 2);
    let other = head_json(&ledger);
    assert_eq!((&other["records"], other["hash"] != second["hash"]), (&second["records"], true));
    until("the other head", || heads(&w, &subject).0 == published + 1);
    assert_eq!(heads(&w, &subject).1.map(trimmed).as_ref(), Some(&other));
    until("the other head anchored", || anchored() == other["records"].as_u64());
}

/// The head mirror makes a deleted stream again, as the exporter does.
/// Before, every head publish failed until a restart: no head left the
/// host and no anchor was written, while the service looked healthy.
#[test]
fn the_ledger_head_mirror_makes_a_deleted_stream_again() {
    let (mut w, dir, ledger) = ledger_world("ledger head, stream deleted", "deleted");
    record(&ledger, 10);
    let links = format!("[ledger]\ndir = \"{}\"\ninterval_ms = 20\n", ledger.display());
    let path = config(&w, &dir.0, free_port(), &links);
    let subject = format!("helix.{}.hosta.ledger.head", w.tag);
    let mut cmd = bridge();
    cmd.arg("--config").arg(&path).stdout(Stdio::null()).stderr(Stdio::piped());
    let mirror = w.spawn(cmd);
    until("the first head", || heads(&w, &subject).0 == 1);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let js = rt.block_on(async { async_nats::jetstream::new(async_nats::connect(&w.url).await.unwrap()) });
    rt.block_on(js.delete_stream(w.tag.to_uppercase())).unwrap();
    record(&ledger, 10);
    let second = head_json(&ledger);
    until("the head after the stream was deleted", || heads(&w, &subject).1.map(trimmed).as_ref() == Some(&second));
    w.stop_saying(mirror, &["was gone (deleted?): made it again"]);
}

#[test]
fn a_stuck_link_stops_the_watchdog_pings() {
    // The destination ring's gating reader never reads, and the ring waits
    // a minute before it may demote it: the importer's claim waits, as
    // behind a reader that hung, and the import link's loop stops. (The
    // test once hung the ledger head mirror on a FIFO under a segment's
    // name; the ledger's files are now opened without waiting, and a FIFO
    // there is refused at once.)
    let (mut w, mut writer) = World::with_rings("stuck link", Duration::from_secs(120), 4096, 16);
    let dir = Scratch::new(&w.tag);
    let held = ReaderOptions { gating: true, start: Start::Oldest, ..ReaderOptions::named("held") };
    let _held = Reader::attach(&w.ns, "dst", &held).unwrap();
    let links =
        "[[export]]\nring = \"src\"\n[[import]]\nsource_host = \"hosta\"\nsource_ring = \"src\"\nring = \"dst\"\n";
    let path = config(&w, &dir.0, free_port(), links);
    let sock_path = dir.0.join("notify");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let mut cmd = bridge();
    // A ping is due every 0.5 s; a loop that has not turned for 1 s is stuck.
    cmd.arg("--config").arg(&path).env("NOTIFY_SOCKET", &sock_path).env("WATCHDOG_USEC", "1000000");
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    w.spawn(cmd);
    notifications(&sock, |g| g.iter().any(|m| m.contains("READY=1")));
    for seq in 1..=100 {
        writer.publish_kind(kind(seq), &payload(seq)).unwrap();
    }
    until("the importer waiting for room in dst", || {
        helix::RingView::attach(&w.ns, "dst").unwrap().stats().writer_waits > 0
    });
    // STATUS comes every 2 s whatever the health: the second one is past
    // the 1 s the stall may last before it counts; from there to the
    // fourth, four seconds with eight pings due, none may be sent.
    let status = |g: &[String]| g.iter().filter(|m| m.starts_with("STATUS=")).count();
    notifications(&sock, |g| status(g) >= 2);
    let after = notifications(&sock, |g| status(g) >= 2);
    assert!(after.iter().all(|m| !m.contains("WATCHDOG=1")), "pinged while stuck: {after:?}");
}

/// Found by review: a link that failed ended the process, and with it
/// every link; systemd started it again every 2 s, to fail again, while
/// one ring was misnamed in the file, or a reader kept truncating a
/// bridged ring's control file. Now a failed link is said, counted and
/// started again on its own, and the others go on.
#[test]
fn a_link_that_fails_is_started_again_on_its_own_and_the_others_go_on() {
    let (mut w, mut src) = World::with_rings("failing link", Duration::from_secs(120), 4096, 4096);
    let mut other = w.ring("other", 4096).writer().unwrap();
    let dir = Scratch::new(&w.tag);
    let port = free_port();
    // `missing` is no ring (yet): its import fails at once.
    let links = "[[export]]\nring = \"src\"\n[[export]]\nring = \"other\"\n\
                 [[import]]\nsource_host = \"hosta\"\nsource_ring = \"src\"\nring = \"missing\"\n";
    let path = config(&w, &dir.0, port, links);
    let sock_path = dir.0.join("notify");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let mut cmd = bridge();
    cmd.arg("--config").arg(&path).env("NOTIFY_SOCKET", &sock_path);
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let child = w.spawn(cmd);
    let ready = notifications(&sock, |g| g.iter().any(|m| m.contains("READY=1")));
    assert!(ready.iter().any(|m| m.contains("import missing")), "{ready:?}");
    let metric = |name: &str, direction: &str, ring: &str| {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        link_metric(port, name, direction, Some(ring))
    };
    let frames = |ring: &str| metric("helix_bridge_frames_total", "export", ring).unwrap_or(0.0);
    until("the failed import is counted", || {
        metric("helix_bridge_link_restarts_total", "import", "missing").is_some_and(|n| n >= 1.0)
    });
    for seq in 1..=100 {
        other.publish_kind(kind(seq), &payload(seq)).unwrap();
        src.publish_kind(kind(seq), &payload(seq)).unwrap();
    }
    until("both exports go on beside it", || frames("other") >= 100.0 && frames("src") >= 100.0);
    // The missing ring made (soon after a failure: the waits between
    // tries double, up to a minute): its import is started again.
    w.ring("missing", 4096);
    until("the import is started again", || metric("helix_bridge_link_failing", "import", "missing") == Some(0.0));
    until("the import takes what src sent", || {
        metric("helix_bridge_frames_total", "import", "missing").is_some_and(|n| n >= 100.0)
    });
    // A reader truncates src's control file: src's export fails, and is
    // started again once the ring is repaired; `other`'s goes on meanwhile.
    drop(src);
    std::fs::OpenOptions::new().write(true).open(w.ns.readers_path("src")).unwrap().set_len(0).unwrap();
    until("the damaged ring's export fails", || {
        metric("helix_bridge_link_restarts_total", "export", "src").is_some_and(|n| n >= 1.0)
    });
    for seq in 101..=200 {
        other.publish_kind(kind(seq), &payload(seq)).unwrap();
    }
    until("the other export goes on", || frames("other") >= 200.0);
    let mut src = helix::Ring::repair_readers(&w.ns, "src").unwrap().writer().unwrap();
    for seq in 101..=150 {
        src.publish_kind(kind(seq), &payload(seq)).unwrap();
    }
    until("the repaired ring's export is started again", || {
        metric("helix_bridge_link_failing", "export", "src") == Some(0.0) && frames("src") >= 150.0
    });
    until("the import takes the rest", || {
        metric("helix_bridge_frames_total", "import", "missing").is_some_and(|n| n >= 150.0)
    });
    let log = w.stop(child);
    assert!(
        log.contains("import missing") && log.contains("starting it again in 2 s (the other links go on)"),
        "{log}"
    );
}
