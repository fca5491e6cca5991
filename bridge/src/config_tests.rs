use super::*;

fn parsed(text: &str) -> Config {
    parse(text, Path::new("t.toml")).unwrap_or_else(|e| panic!("{e}"))
}

/// "t.toml:LINE: message" of the error `text` holds.
fn error(text: &str) -> String {
    parse(text, Path::new("t.toml")).unwrap_err().to_string()
}

const GOOD: &str = r#"
site = "plant"
host = "gw1.lan"
namespace = "bx"
metrics = "127.0.0.1:9466"

[nats]
servers = ["nats://10.0.0.1:4222", "nats://10.0.0.2:4222"]
credentials = "/etc/helix/bridge.creds"
ack_timeout_ms = 5000

[stream]
name = "PLANT"
replicas = 3
max_mib = 1024
max_age_s = 86400
duplicate_window_s = 60

[[export]]
ring = "telemetry"

[[export]]
ring = "control.log"
gating = false
max_in_flight = 8

[[import]]
source_host = "gw2"
source_ring = "telemetry"
ring = "gw2.telemetry"

[ledger]
dir = "/var/lib/helix/ledger"
interval_ms = 2000
anchor = true
"#;

#[test]
fn a_full_file_configures_every_link() {
    let c = parsed(GOOD);
    assert_eq!((c.site.as_str(), c.host.as_str(), c.namespace.as_str()), ("plant", "gw1.lan", "bx"));
    assert_eq!(c.metrics, Some("127.0.0.1:9466".parse().unwrap()));
    let s = &c.server;
    assert_eq!(s.urls, ["nats://10.0.0.1:4222", "nats://10.0.0.2:4222"]);
    assert_eq!(s.credentials.as_deref(), Some(Path::new("/etc/helix/bridge.creds")));
    assert_eq!((s.stream.as_str(), s.replicas, s.max_bytes), ("PLANT", 3, 1 << 30));
    assert_eq!((s.max_age, s.duplicate_window, s.ack_timeout), (86400, 60, 5000).into_durations());
    assert_eq!(s.stream_subjects, ["helix.plant.>"]);
    let e: Vec<_> =
        c.exports.iter().map(|e| (e.ring.as_str(), e.subject.as_str(), e.gating, e.max_in_flight)).collect();
    assert_eq!(
        e,
        [
            ("telemetry", "helix.plant.gw1~lan.telemetry", true, 64),
            ("control.log", "helix.plant.gw1~lan.control~log", false, 8)
        ]
    );
    let i = &c.imports[0];
    assert_eq!(
        (i.source_host.as_str(), i.source_ring.as_str(), i.ring.as_str()),
        ("gw2", "telemetry", "gw2.telemetry")
    );
    let l = c.ledger.as_ref().unwrap();
    assert_eq!(
        (l.dir.as_path(), l.interval, l.anchor),
        (Path::new("/var/lib/helix/ledger"), Duration::from_secs(2), true)
    );
    assert_eq!(l.subject, "helix.plant.gw1~lan.ledger.head");
    assert_eq!(c.links(), 4);
}

trait Durations {
    fn into_durations(self) -> (Duration, Duration, Duration);
}

impl Durations for (u64, u64, u64) {
    fn into_durations(self) -> (Duration, Duration, Duration) {
        (Duration::from_secs(self.0), Duration::from_secs(self.1), Duration::from_millis(self.2))
    }
}

#[test]
fn the_packaged_default_parses_and_configures_no_link() {
    let c = parse(DEFAULT_TEXT, Path::new("/etc/helix/bridge.toml")).unwrap();
    assert_eq!(c.links(), 0);
    assert!(c.report().contains("no link configured"));
    // Every commented line of it, uncommented, is a key the parser takes.
    let uncommented: String = DEFAULT_TEXT
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest) if rest.starts_with('[') || rest.contains(" = ") => rest,
            _ => l,
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let c = parse(&uncommented, Path::new("t.toml")).unwrap_or_else(|e| panic!("{e}\n{uncommented}"));
    assert_eq!((c.exports.len(), c.imports.len(), c.ledger.is_some()), (1, 1, true));
    assert_eq!(c.metrics, Some("127.0.0.1:9466".parse().unwrap()));
}

#[test]
fn each_bad_line_is_an_error_naming_its_line() {
    let cases: &[(&str, &str)] = &[
        ("site = \"a\"\nsiet = \"b\"\n", "t.toml:2: unknown field `siet`"),
        ("[[export]]\nring = \"t\"\ngateing = true\n", "t.toml:3: unknown field `gateing`"),
        ("[stream]\n\nreplicas = 7\n", "t.toml:3: replicas must be from 1 to 5, not 7"),
        ("[stream]\nreplicas = \"three\"\n", "t.toml:2: invalid type"),
        ("[nats]\nservers = [\"nats://a:4222\",\n  \"nats://b:notaport\"]\n", "t.toml:3: server \"nats://b:notaport\""),
        ("[nats]\nservers = []\n", "t.toml:2: servers must list at least one URL"),
        ("\n[[export]]\nring = \"Bad Ring\"\n", "t.toml:3: "),
        ("[[export]]\nring = \"t\"\n[[export]]\nring = \"t\"\n", "t.toml:4: ring t is exported already (line 2)"),
        ("[[import]]\nsource_host = \"h\"\nsource_ring = \"t\"\nring = \"d\"\n[[import]]\nsource_host = \"g\"\nsource_ring = \"t\"\nring = \"d\"\n", "t.toml:8: ring d is imported into already (line 4)"),
        ("[[import]]\nsource_host = \"h\"\nring = \"d\"\n", "t.toml:1: missing field `source_ring`"),
        ("[[import]]\nsource_host = \"a b\"\nsource_ring = \"t\"\nring = \"d\"\n", "t.toml:2: source_host \"a b\""),
        ("site = \"pl*nt\"\n", "t.toml:1: site \"pl*nt\""),
        ("metrics = \"localhost\"\n", "t.toml:1: metrics \"localhost\" is not an IP address and port"),
        ("[ledger]\ndir = \"/l\"\ninterval_ms = 0\n", "t.toml:3: interval_ms must be more than 0"),
        ("[ledger]\ninterval_ms = 10\n", "t.toml:1: missing field `dir`"),
        ("[stream]\nname = \"a.b\"\n", "t.toml:2: stream name \"a.b\""),
        ("[[export]]\nring = \"t\"\nmax_in_flight = 0\n", "t.toml:3: max_in_flight must be from 1"),
        ("namespace = \"no.dots\"\n", "t.toml:1: "),
        ("[nats]\nservers = \"nats://a:4222\"\n", "t.toml:2: invalid type"),
        ("[[export]\nring = \"t\"\n", "t.toml:1: "),
        // The window defaults to 120 s.
        ("[stream]\nmax_age_s = 60\n", "t.toml:2: duplicate_window_s 120 is longer than max_age_s 60"),
        ("[stream]\nmax_age_s = 60\nduplicate_window_s = 61\n", "t.toml:3: duplicate_window_s 61 is longer"),
    ];
    for (text, want) in cases {
        let got = error(text);
        assert!(got.starts_with(want), "{text:?}:\n  got  {got}\n  want {want}...");
    }
}

#[test]
fn defaults_without_a_file_section() {
    let c = parsed("host = \"h\"\n[[export]]\nring = \"t\"\n");
    assert_eq!(c.server.urls, ["nats://127.0.0.1:4222"]);
    assert_eq!((c.server.stream.as_str(), c.server.replicas, c.server.max_bytes), ("HELIX", 1, -1));
    assert_eq!(c.server.duplicate_window, Duration::from_secs(120));
    assert_eq!(c.exports[0].subject, "helix.site.h.t");
    assert!(c.exports[0].gating);
    assert!(c.ledger.is_none() && c.metrics.is_none());
}
