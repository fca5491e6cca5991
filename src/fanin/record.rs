//! A record as a drain hands it over: in place in its lane, read with
//! bounds-checked whole-word atomic loads.

use bytemuck::Pod;

use crate::guard::DamageFlag;
use crate::sync::AtomicU64;

use super::lane::{Ends, Found};
use super::lane_file::LaneFile;

/// Why a record's payload could not be copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The destination is smaller than the record.
    #[error("the record is {len} bytes; the buffer holds {capacity}")]
    TooSmall { len: usize, capacity: usize },
    /// A typed read asked for another size.
    #[error("the record is {len} bytes; {wanted} were asked for")]
    WrongSize { len: usize, wanted: usize },
    /// The lane file shrank under the copy: nothing valid was copied (the
    /// lane is dropped after this record's callback).
    #[error("the lane file shrank under the copy")]
    Shrunk,
}

/// A record in place in its lane, valid during the callback. Copies are
/// whole atomic word loads from bounds-checked offsets.
pub struct Record<'a> {
    /// Lane index.
    pub lane: usize,
    /// The lane file's owner, from the kernel.
    pub uid: u32,
    /// The producer's pid, from the kernel (0 if unknown).
    pub pid: u32,
    /// The producer's sequence number in its lane file (from 1).
    pub seq: u64,
    /// Application-defined kind.
    pub kind: u32,
    words: &'a [AtomicU64],
    len: usize,
    damage: DamageFlag,
}

impl Record<'_> {
    /// Payload length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies the payload into the front of `dst`; returns its length.
    #[inline]
    pub fn copy_to(&self, dst: &mut [u8]) -> Result<usize, RecordError> {
        if dst.len() < self.len {
            return Err(RecordError::TooSmall { len: self.len, capacity: dst.len() });
        }
        crate::ring::load_bytes(self.words, 0, &mut dst[..self.len]);
        // A fault repaired mid-copy left zeros in part of it.
        if self.damage.is_set() {
            return Err(RecordError::Shrunk);
        }
        Ok(self.len)
    }

    /// The payload as a new vector.
    pub fn to_vec(&self) -> Result<Vec<u8>, RecordError> {
        let mut v = vec![0; self.len];
        self.copy_to(&mut v)?;
        Ok(v)
    }

    /// The payload as a plain-old-data value of exactly its size.
    pub fn read<T: Pod>(&self) -> Result<T, RecordError> {
        let mut v = T::zeroed();
        let bytes = bytemuck::bytes_of_mut(&mut v);
        if bytes.len() != self.len {
            return Err(RecordError::WrongSize { len: self.len, wanted: bytes.len() });
        }
        self.copy_to(bytes)?;
        Ok(v)
    }
}

#[inline]
pub(super) fn record<'a>(k: usize, lf: &LaneFile, e: &Ends<'a>, found: &Found, damage: DamageFlag) -> Record<'a> {
    let len = found.len as usize;
    Record {
        lane: k,
        uid: lf.uid,
        pid: lf.pid,
        seq: found.seq,
        kind: found.kind,
        words: &e.data[found.word..found.word + len.div_ceil(8)],
        len,
        damage,
    }
}
