//! A signed checkpoint as JSON, one shape wherever a program prints or
//! sends one: `helix-ledger head --signed --json`, `verify --json`,
//! `export`, and the bridge's ledger head mirror.

use helix::ledger::format::hex;
use helix::ledger::sign::Checkpoint;
use serde_json::{json, Value};

/// `c`'s fields, hashes and the signature in hex.
pub fn json(c: &Checkpoint) -> Value {
    json!({
        "segment": c.segment, "records": c.records, "blocks": c.blocks, "time_ns": c.time_ns,
        "hash": hex(&c.hash), "key_id": hex(&c.key_id), "interval_s": c.interval_s, "reason": c.reason_str(),
        "signature": hex(&c.signature),
    })
}
