//! Signed checkpoints (format version 3): a CHECKPOINT block states where
//! the chain is (segment, records and blocks before it, its hash there) and
//! when, and an Ed25519 signature over those fields by the recorder's key,
//! so that someone who can write the folder, and so recompute every hash,
//! still cannot rewrite what a checkpoint covers without the key
//! (`docs/ledger.md`, "Signed checkpoints"). The key files' formats are
//! here too: `helix-ledger keygen` writes a secret key, `pubkey` prints the
//! public one that `verify --pubkey` reads.

use std::fmt;

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};

use super::format::{hex, u32_at, u64_at, Hash};
use crate::layout::wire_enum;

/// Bytes of a CHECKPOINT block's body.
pub const CHECKPOINT_LEN: usize = 144;
/// The bytes of the body the signature covers: all but the signature.
pub const SIGNED_LEN: usize = 80;
/// What the signed message starts with, so that a checkpoint's signature
/// cannot be taken for the signature of anything else made with the key.
pub const DOMAIN: &[u8] = b"HELIX ledger checkpoint v1\0";
/// What a `pruned` manifest's signed message starts with (a checkpoint's
/// is [`DOMAIN`]: neither signature passes for the other).
pub const PRUNED_DOMAIN: &[u8] = b"HELIX ledger pruned v1\0";
/// Bytes of a key id: the first 8 bytes of Blake3(public key).
pub const KEY_ID_LEN: usize = 8;
/// The first word of a secret key file's line.
pub const SECRET_TAG: &str = "helix-ledger-secret-key-ed25519";
/// The first word of a public key's line (`helix-ledger pubkey`).
pub const PUBLIC_TAG: &str = "helix-ledger-public-key-ed25519";

wire_enum! {
    /// Why the recorder wrote a checkpoint; `as_str` is the name `export`
    /// and `head --signed` print.
    pub enum Reason: u32, from_u32 {
        /// The recorder opened the ledger (it signs the chain it resumes).
        Open = 1, "open";
        /// The interval passed since the last checkpoint, and blocks
        /// followed it.
        Interval = 2, "interval";
        /// The last block of a segment that is closed.
        SegmentEnd = 3, "segment-end";
        /// The recorder stopped (SIGTERM, SIGINT).
        Shutdown = 4, "shutdown";
    }
}

/// A CHECKPOINT block's body (144 bytes, docs/ledger.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// The segment the block is in.
    pub segment: u64,
    /// Records in the ledger before it.
    pub records: u64,
    /// Blocks in the ledger before it.
    pub blocks: u64,
    /// CLOCK_REALTIME (ns) when it was made (also the block's `recv_ns`).
    pub time_ns: u64,
    /// The chain hash after those blocks.
    pub hash: Hash,
    /// The signing key's id.
    pub key_id: [u8; KEY_ID_LEN],
    /// The interval the recorder writes checkpoints at, in seconds.
    pub interval_s: u32,
    /// Why it was written (a [`Reason`], raw).
    pub reason: u32,
    /// Ed25519 over [`DOMAIN`] and bytes 0..80.
    pub signature: [u8; 64],
}

impl Checkpoint {
    /// The encoded body.
    pub fn encode(&self) -> [u8; CHECKPOINT_LEN] {
        let mut b = [0u8; CHECKPOINT_LEN];
        b[0..8].copy_from_slice(&self.segment.to_le_bytes());
        b[8..16].copy_from_slice(&self.records.to_le_bytes());
        b[16..24].copy_from_slice(&self.blocks.to_le_bytes());
        b[24..32].copy_from_slice(&self.time_ns.to_le_bytes());
        b[32..64].copy_from_slice(&self.hash);
        b[64..72].copy_from_slice(&self.key_id);
        b[72..76].copy_from_slice(&self.interval_s.to_le_bytes());
        b[76..80].copy_from_slice(&self.reason.to_le_bytes());
        b[80..144].copy_from_slice(&self.signature);
        b
    }

    /// Decodes a body, or says what is wrong with it.
    pub fn decode(b: &[u8]) -> Result<Checkpoint, &'static str> {
        if b.len() != CHECKPOINT_LEN {
            return Err("CHECKPOINT body is not 144 bytes");
        }
        let c = Checkpoint {
            segment: u64_at(b, 0),
            records: u64_at(b, 8),
            blocks: u64_at(b, 16),
            time_ns: u64_at(b, 24),
            hash: b[32..64].try_into().unwrap(),
            key_id: b[64..72].try_into().unwrap(),
            interval_s: u32_at(b, 72),
            reason: u32_at(b, 76),
            signature: b[80..144].try_into().unwrap(),
        };
        if c.interval_s == 0 {
            return Err("CHECKPOINT states an interval of 0 s");
        }
        Reason::from_u32(c.reason).ok_or("CHECKPOINT with an unknown reason")?;
        Ok(c)
    }

    /// The message the signature is over: [`DOMAIN`] then bytes 0..80 of
    /// the body.
    pub fn message(&self) -> Vec<u8> {
        let mut m = Vec::with_capacity(DOMAIN.len() + SIGNED_LEN);
        m.extend_from_slice(DOMAIN);
        m.extend_from_slice(&self.encode()[..SIGNED_LEN]);
        m
    }

    /// Whether the signature is `key`'s over [`Checkpoint::message`]
    /// (strict verification: no malleable signature, no weak key).
    pub fn signed_by(&self, key: &VerifyingKey) -> bool {
        key.verify_strict(&self.message(), &Signature::from_bytes(&self.signature)).is_ok()
    }

    /// The reason, named.
    pub fn reason_str(&self) -> &'static str {
        Reason::from_u32(self.reason).map_or("unknown", Reason::as_str)
    }
}

/// The recorder's signature over a `pruned` manifest (`retention::Pruned`):
/// that retention deleted the segments `1..=segment`, which held the
/// ledger's first `records` records, ending at chain hash `hash`. Someone
/// who can write the folder but not read the key cannot delete the oldest
/// segments and write a manifest for them that `verify --pubkey` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrunedSignature {
    /// The signing key's id.
    pub key_id: [u8; KEY_ID_LEN],
    /// Ed25519 over [`pruned_message`].
    pub signature: [u8; 64],
}

/// The message a `pruned` manifest's signature is over: [`PRUNED_DOMAIN`],
/// then `segment` and `records` (u64, little-endian) and `hash`.
pub fn pruned_message(segment: u64, records: u64, hash: &Hash) -> Vec<u8> {
    let mut m = PRUNED_DOMAIN.to_vec();
    m.extend_from_slice(&segment.to_le_bytes());
    m.extend_from_slice(&records.to_le_bytes());
    m.extend_from_slice(hash);
    m
}

impl PrunedSignature {
    /// Whether it is `key`'s over the manifest's fields (strict).
    pub fn signs(&self, key: &VerifyingKey, segment: u64, records: u64, hash: &Hash) -> bool {
        let message = pruned_message(segment, records, hash);
        key.verify_strict(&message, &Signature::from_bytes(&self.signature)).is_ok()
    }
}

/// A key's id: the first 8 bytes of Blake3 of the 32-byte public key.
pub fn key_id(key: &VerifyingKey) -> [u8; KEY_ID_LEN] {
    blake3::hash(key.as_bytes()).as_bytes()[..KEY_ID_LEN].try_into().unwrap()
}

/// The recorder's signing key and the interval it signs at.
#[derive(Clone)]
pub struct Signer {
    key: SigningKey,
    key_id: [u8; KEY_ID_LEN],
    interval_s: u32,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signer {{ key_id: {}, interval_s: {} }}", hex(&self.key_id), self.interval_s)
    }
}

impl Signer {
    /// Signs with `key` every `interval_s` seconds (at least 1).
    pub fn new(key: SigningKey, interval_s: u32) -> Signer {
        assert!(interval_s > 0, "a checkpoint interval of 0 s");
        let key_id = key_id(&key.verifying_key());
        Signer { key, key_id, interval_s }
    }

    /// The interval, in seconds.
    pub fn interval_s(&self) -> u32 {
        self.interval_s
    }

    /// The public key.
    pub fn public(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// A signed checkpoint of the chain at `hash` after `records` records
    /// and `blocks` blocks, in `segment`, at `time_ns`.
    pub fn sign(&self, segment: u64, records: u64, blocks: u64, hash: Hash, time_ns: u64, why: Reason) -> Checkpoint {
        let mut c = Checkpoint {
            segment,
            records,
            blocks,
            time_ns,
            hash,
            key_id: self.key_id,
            interval_s: self.interval_s,
            reason: why as u32,
            signature: [0; 64],
        };
        c.signature = self.key.sign(&c.message()).to_bytes();
        c
    }

    /// Signs a `pruned` manifest's fields.
    pub fn sign_pruned(&self, segment: u64, records: u64, hash: &Hash) -> PrunedSignature {
        let signature = self.key.sign(&pruned_message(segment, records, hash)).to_bytes();
        PrunedSignature { key_id: self.key_id, signature }
    }
}

/// What is wrong with a key file's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not one line of the expected form.
    #[error("expected one line `{0} <64 hex digits>`")]
    Form(&'static str),
    /// Not 64 hex digits.
    #[error("the key is not 64 hex digits")]
    Hex,
    /// 32 bytes that are not an Ed25519 public key.
    #[error("not a valid Ed25519 public key")]
    Point,
}

/// The 32 bytes after `tag` on the text's one line.
fn key_bytes(text: &str, tag: &'static str) -> Result<[u8; 32], KeyError> {
    let line = text.strip_suffix('\n').unwrap_or(text);
    let digits = match line.split(' ').collect::<Vec<_>>()[..] {
        [t, d] if t == tag => d,
        // A bare key, as other tools print it.
        [d] if tag == PUBLIC_TAG && d.len() == 64 => d,
        _ => return Err(KeyError::Form(tag)),
    };
    if digits.len() != 64 || !digits.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Err(KeyError::Hex);
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&digits[2 * i..2 * i + 2], 16).map_err(|_| KeyError::Hex)?;
    }
    Ok(out)
}

/// A secret key file's text: `helix-ledger-secret-key-ed25519 <seed hex>\n`.
pub fn format_secret(key: &SigningKey) -> String {
    format!("{SECRET_TAG} {}\n", hex(key.as_bytes()))
}

/// The key in a secret key file's text.
pub fn parse_secret(text: &str) -> Result<SigningKey, KeyError> {
    Ok(SigningKey::from_bytes(&key_bytes(text, SECRET_TAG)?))
}

/// A public key's line: `helix-ledger-public-key-ed25519 <hex>` (no newline).
pub fn format_public(key: &VerifyingKey) -> String {
    format!("{PUBLIC_TAG} {}", hex(key.as_bytes()))
}

/// The key in a public key's line (or 64 bare hex digits).
pub fn parse_public(text: &str) -> Result<VerifyingKey, KeyError> {
    VerifyingKey::from_bytes(&key_bytes(text, PUBLIC_TAG)?).map_err(|_| KeyError::Point)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_round_trips_and_every_signed_byte_is_covered() {
        let s = Signer::new(SigningKey::from_bytes(&[7; 32]), 60);
        let c = s.sign(3, 1000, 90, [0xab; 32], 123_456, Reason::Interval);
        assert_eq!(Checkpoint::decode(&c.encode()), Ok(c));
        assert!(c.signed_by(&s.public()));
        assert!(c.message().starts_with(DOMAIN));
        let b = c.encode();
        for i in 0..CHECKPOINT_LEN {
            let mut bad = b;
            bad[i] ^= 1;
            if let Ok(d) = Checkpoint::decode(&bad) {
                assert!(!d.signed_by(&s.public()), "a flip at byte {i} still verifies");
            }
        }
        let other = Signer::new(SigningKey::from_bytes(&[8; 32]), 60);
        assert!(!c.signed_by(&other.public()));
        assert_ne!(key_id(&other.public()), c.key_id);
    }

    #[test]
    fn key_files_round_trip_and_malformed_ones_are_named() {
        let k = SigningKey::from_bytes(&[9; 32]);
        assert_eq!(parse_secret(&format_secret(&k)).unwrap().as_bytes(), k.as_bytes());
        let p = format_public(&k.verifying_key());
        assert_eq!(parse_public(&p), Ok(k.verifying_key()));
        assert_eq!(parse_public(p.split(' ').nth(1).unwrap()), Ok(k.verifying_key()));
        assert_eq!(parse_secret(""), Err(KeyError::Form(SECRET_TAG)));
        assert_eq!(parse_secret(&p), Err(KeyError::Form(SECRET_TAG)), "a public key is not a secret key");
        assert_eq!(parse_public(&format_secret(&k)), Err(KeyError::Form(PUBLIC_TAG)));
        assert_eq!(parse_secret(&format!("{SECRET_TAG} {}\n", "zz".repeat(32))), Err(KeyError::Hex));
        assert_eq!(parse_secret(&format!("{SECRET_TAG} abcd\n")), Err(KeyError::Hex));
    }
}
