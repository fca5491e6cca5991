//! Writes the committed seed corpus (`fuzz/corpus/<target>/`) from the real
//! encoders: ring files made by `Ring::create`, datagrams by
//! `datagram::encode`, the programs' embedded default configurations, and
//! ledger segments written by `Ledger`. Run it again when a format changes:
//!
//!     cargo run --manifest-path fuzz/Cargo.toml --example seeds [TARGET...]

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use helix::ledger::block::{split, BLOCK_HEADER_LEN};
use helix::ledger::format::{RecordType, RingDecl, SEGMENT_HEADER_LEN, VERSION};
use helix::ledger::Ledger;
use helix::telemetry::{datagram, Sample};
use helix::{Namespace, Policy, ReaderOptions, Ring, RingOptions};

fn corpus(target: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// A ring's two files as one `ring_attach` input, with `flags`.
fn ring_input(ns: &Namespace, name: &str, flags: u8) -> Vec<u8> {
    let data = fs::read(ns.data_path(name)).unwrap();
    let readers = fs::read(ns.readers_path(name)).unwrap();
    let mut input = vec![flags];
    input.extend_from_slice(&u16::try_from(data.len()).unwrap().to_le_bytes());
    input.extend_from_slice(&data);
    input.extend_from_slice(&readers);
    input
}

fn ring_seeds() {
    let dir = corpus("ring_attach");
    let ns = Namespace::new(&format!("seeds{}", std::process::id())).unwrap();
    // The ring's name must be the harness's, "r"; the smallest geometry.
    for (tag, policy) in [("overwrite", Policy::Overwrite), ("block", Policy::Block)] {
        let _ = Ring::unlink(&ns, "r");
        let opts = RingOptions {
            capacity: 2,
            max_payload: 48,
            policy,
            max_readers: 2,
            stall_timeout: Duration::from_millis(100),
            ..Default::default()
        };
        let ring = Ring::create(&ns, "r", &opts).unwrap();
        let mut w = ring.writer().unwrap();
        // A registered reader (dead once this program exits, so a sweep
        // frees it), frames published and one overrun's worth behind it.
        let gating = ReaderOptions { gating: true, ..ReaderOptions::named("seed") };
        let reader = ring.reader(&gating).unwrap();
        for p in [&b"one"[..], b"two"] {
            let _ = w.try_publish(p);
        }
        std::mem::forget(reader);
        std::mem::forget(w);
        // Open (writer), attach (reader), view, all three.
        for mode in 0..4u8 {
            fs::write(dir.join(format!("{tag}-mode{mode}")), ring_input(&ns, "r", mode << 2)).unwrap();
        }
        drop(ring);
        Ring::unlink(&ns, "r").unwrap();
    }
}

fn datagram_seeds() {
    let dir = corpus("datagram");
    let s =
        |i: u32| Sample { stream: i, quality: 0, seq: i.into(), sample_ns: 5, ingest_ns: 0, value: f64::from(i) / 3.0 };
    fs::write(dir.join("one"), datagram::encode(&[s(1)])).unwrap();
    fs::write(dir.join("three"), datagram::encode(&[s(1), s(2), s(3)])).unwrap();
}

/// The `config` target's seeds: each program's embedded default and a
/// variant, behind the byte that picks its parser.
fn config_seeds() {
    let dir = corpus("config");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../src/bin");
    for (parser, program, variants) in [
        (
            b'0',
            "helixd",
            &[
                "namespace = \"lab\"\n[[ring]]\nname = \"udp\"\nmax_payload = 48\ncapacity = 1024\npolicy = \"overwrite\"\n\
                 [[source]]\nkind = \"udp\"\nring = \"udp\"\nbind = \"127.0.0.1:7000\"\n",
            ][..],
        ),
        (b'1', "helix-ledger", &["dir = \"/tmp/l\"\nrings = [\"telemetry\", \"alarms\"]\nsegment_size_mib = 1\n"]),
        (
            b'2',
            "helix-twin",
            &[
                "streams = 100\n[[rule]]\nstreams = 7\nhigh = 1.0\n[[rule]]\nstreams = \"8-9\"\nlow = -1.5\nhigh = 2.0\n\
                 hysteresis = 0.5\nrate_limit = 3.0\nstale_after_ms = 500\nperiod_ms = 10\n",
                // A finding: a snapshot interval under the default update
                // interval, the error had no line.
                "snapshot_interval_ms = 100\n",
            ],
        ),
    ] {
        let default = fs::read(root.join(program).join("default.toml")).unwrap();
        fs::write(dir.join(format!("{program}-default.toml")), [&[parser][..], &default].concat()).unwrap();
        for (i, text) in variants.iter().enumerate() {
            fs::write(dir.join(format!("{program}-variant{i}.toml")), [&[parser], text.as_bytes()].concat()).unwrap();
        }
    }
}

fn ledger_seeds() {
    let dir = corpus("ledger");
    let tmp = std::env::temp_dir().join(format!("helix-seeds-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    // Small segments, so the ledger rotates: two segment files of version-2
    // blocks, one of them holding three frames.
    let (mut l, _) = Ledger::open(&tmp, 400).unwrap();
    let decl = RingDecl { created_ns: 7, capacity: 2, max_payload: 48, policy: 1, name: "telemetry".into() };
    let (id, mut seq) = l.declare(&decl).unwrap();
    for payload in [&b"first"[..], b"second", b"third"] {
        l.reserve_frame(id, seq, 1, 100, 1, payload.len()).copy_from_slice(payload);
        seq += 1;
    }
    l.seal(id, 3);
    l.append_gap(id, seq, seq + 2, 1);
    seq += 3;
    l.flush().unwrap();
    l.reserve_frame(id, seq, 2, 200, 1, 4).copy_from_slice(b"last");
    l.seal(id, 1);
    l.flush().unwrap();
    drop(l);
    let mut segments: Vec<_> = fs::read_dir(&tmp).unwrap().map(|e| e.unwrap().path()).collect();
    segments.retain(|p| p.extension().is_some_and(|e| e == "hxl"));
    segments.sort();
    let bytes: Vec<Vec<u8>> = segments.iter().map(|p| fs::read(p).unwrap()).collect();
    assert!(bytes.len() >= 2 && bytes.iter().all(|b| b.len() > SEGMENT_HEADER_LEN));
    // Version 1: the first segment of the committed fixture, and the mixed
    // folder a recorder makes of it (version-1 segments, then version 2).
    let v1 = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/ledger-v1");
    let v1_first = fs::read(v1.join("seg-0000000001.hxl")).unwrap();
    let mixed: Vec<Vec<u8>> = std::iter::once(v1_first).chain(bytes.iter().cloned()).collect();
    for (name, flags, segs) in [
        ("one-segment", 0u8, &bytes[..1]),
        ("two-segments", 0, &bytes[..2]),
        ("fixed", 3, &bytes[..2]),
        ("v1-segment", 0, &mixed[..1]),
        ("v1-then-v2-fixed", 3, &mixed[..]),
    ] {
        let mut input = vec![flags];
        for s in segs {
            input.extend_from_slice(s);
        }
        fs::write(dir.join(name), input).unwrap();
    }
    // A finding: the GAP ending at u64::MAX (re-hashed by the harness).
    let mut seg = bytes[0].clone();
    let mut at = SEGMENT_HEADER_LEN;
    while let Ok(block) = split(VERSION, &seg[at..]) {
        let len = block.header.len as usize;
        if block.header.rtype == RecordType::Gap as u16 {
            seg[at + BLOCK_HEADER_LEN..at + BLOCK_HEADER_LEN + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        }
        at += len;
    }
    fs::write(dir.join("gap-to-u64-max"), [&[3u8][..], &seg].concat()).unwrap();
    fs::remove_dir_all(&tmp).unwrap();
}

/// Every target's seeds, or only the targets named as arguments.
fn main() {
    let only: Vec<String> = std::env::args().skip(1).collect();
    let seeds: [(&str, fn()); 5] = [
        ("ring_attach", ring_seeds),
        ("datagram", datagram_seeds),
        ("config", config_seeds),
        ("ledger", ledger_seeds),
        ("ledger_files", ledger_file_seeds),
    ];
    for name in &only {
        assert!(seeds.iter().any(|(n, _)| n == name), "no target {name:?}");
    }
    for (name, write) in seeds {
        if only.is_empty() || only.iter().any(|n| n == name) {
            write();
        }
    }
}

/// `ledger_files`: an anchors file, a manifest, and a compressed segment,
/// each as the ledger writes it, after its selector byte.
fn ledger_file_seeds() {
    use helix::ledger::anchor::{append_anchor, Anchor};
    use helix::ledger::compress::compress_segment;
    use helix::ledger::retention::{write_pruned, Pruned};
    let out = corpus("ledger_files");
    let scratch = std::env::temp_dir().join(format!("helix-seeds-files-{}", std::process::id()));
    let _ = fs::remove_dir_all(&scratch);
    let (mut l, _) = Ledger::open(&scratch, 1 << 20).unwrap();
    let decl = RingDecl { created_ns: 7, capacity: 8, max_payload: 40, policy: 1, name: "telemetry".into() };
    let (id, _) = l.declare(&decl).unwrap();
    for seq in 1..=20u64 {
        l.reserve_frame(id, seq, 1, seq * 1000, 1, 40).fill(seq as u8);
        l.seal(id, 1);
    }
    l.flush().unwrap();
    let chain = l.chain().clone();
    drop(l);
    for (i, note) in ["", "copied to the historian"].iter().enumerate() {
        let a = Anchor { records: chain.records - i as u64, hash: chain.hash, time_ns: 1, note: note.to_string() };
        append_anchor(&scratch, &a).unwrap();
    }
    write_pruned(&scratch, &Pruned::new(3, 1234, chain.hash, None)).unwrap();
    let seg = scratch.join(helix::ledger::format::segment_name(1));
    compress_segment(&scratch, &seg).unwrap();
    let packed = scratch.join(helix::ledger::compress::compressed_name(1));
    for (name, which, file) in
        [("anchors", 0u8, scratch.join("anchors")), ("pruned", 1, scratch.join("pruned")), ("segment-lz4", 2, packed)]
    {
        let mut input = vec![which];
        input.extend_from_slice(&fs::read(file).unwrap());
        fs::write(out.join(name), input).unwrap();
    }
    fs::remove_dir_all(&scratch).unwrap();
}
