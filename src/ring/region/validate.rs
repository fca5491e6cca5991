//! Attach validation: a ring's two headers checked field by field, in the
//! order of `docs/abi.md` §3.2 (the numbers below are that table's), the
//! first bad field named in the error.

use std::path::Path;

use crate::layout::*;
use crate::shm::Mapping;
use crate::sync::Ordering;

use super::super::{check_published, AttachError, Policy, MAX_CAPACITY, MAX_PAYLOAD, MAX_READERS};
use super::Geometry;

/// A header field's check: its name, the value found, whether that is
/// valid, and what was expected (formatted only for the error).
type FieldCheck<'a> = (&'static str, u64, bool, &'a dyn Fn() -> String);

/// Reads and checks the data region's header (checks 4 to 23); names the
/// first bad field. With `name`, the stored name must match it.
pub(crate) fn validate_data(map: &Mapping, path: &Path, name: Option<&str>) -> Result<Geometry, AttachError> {
    let h = &*snapshot(published_data_header(map, path)?);
    let policy = data_fields(h, path)?;
    // Checks 18 to 20: the size the header says, then the file's own.
    let expected = ring_file_size(h.capacity, h.slot_size);
    if h.file_size != expected {
        return Err(bad(path, "file_size", h.file_size, format!("{expected} (header + capacity x slot_size)")));
    }
    whole_file(path, map.len() as u64, expected)?;
    stored_name(h, path, name)?;
    // Check 23: not an identity field, but a sequence beyond MAX_SEQ would
    // be read as a WRITING stamp: a ring that got there is refused, not
    // adopted.
    check_published(path, h.published.load(Ordering::Relaxed))?;
    Ok(Geometry {
        capacity: h.capacity,
        slot_size: h.slot_size,
        max_payload: h.slot_size - SLOT_HEADER_SIZE as u32,
        policy,
        max_readers: h.max_readers,
        stall_timeout_ns: h.stall_timeout_ns,
        created_ns: h.created_ns,
    })
}

/// A private copy of the data header, taken once its version word was
/// seen published: every check, and the geometry the attachment keeps,
/// come from the same bytes, whatever a process that may write the data
/// file stores into the shared header meanwhile. (Found by review: checked
/// in shared memory and read again for the geometry, a capacity flipped in
/// between was used unchecked, and slot indexes ran past the mapping.)
fn snapshot(h: &RingHeader) -> Box<RingHeader> {
    // SAFETY: a page-aligned mapping at least a header long (checked by
    // the caller), and RingHeader is integers and atomics of integers.
    unsafe { crate::shm::snapshot(h) }
}

/// Checks 4 to 9: the data file is sized, filled in and published (its
/// version word set), by this ABI version. Returns its header.
fn published_data_header<'m>(map: &'m Mapping, path: &Path) -> Result<&'m RingHeader, AttachError> {
    let size = map.len() as u64;
    if size == 0 {
        // Created, not yet sized: its creator is between open and fallocate.
        return Err(AttachError::Initializing { path: path.to_owned() });
    }
    if size < RING_HEADER_SIZE as u64 {
        return Err(AttachError::Truncated { path: path.to_owned(), size, needed: RING_HEADER_SIZE as u64 });
    }
    // SAFETY: the mapping is at least a header long and page aligned; the
    // identity fields are immutable after the version word is published, and
    // we read them only after an Acquire load of it. It lives as long as `map`.
    let h = unsafe { &*(map.ptr() as *const RingHeader) };
    // SAFETY: as above; a plain read of an immutable field.
    let magic = unsafe { std::ptr::read_volatile(&h.magic) };
    if magic == 0 && h.version.load(Ordering::Acquire) == 0 {
        // All zeros: sized, not yet filled in.
        return Err(AttachError::Initializing { path: path.to_owned() });
    }
    if magic != RING_MAGIC {
        return Err(bad(path, "magic", magic, format!("{RING_MAGIC:#x} (\"HELIXRNG\")")));
    }
    // SYNC POINT: region initialised (data).
    let version = h.version.load(Ordering::Acquire);
    if version == 0 {
        return Err(AttachError::Initializing { path: path.to_owned() });
    }
    if version != ABI_VERSION {
        return Err(AttachError::Version { path: path.to_owned(), found: version, expected: ABI_VERSION });
    }
    Ok(h)
}

/// Checks 10 to 17: the data header's identity fields. Returns the policy.
fn data_fields(h: &RingHeader, path: &Path) -> Result<Policy, AttachError> {
    let max_slot = slot_size_for(MAX_PAYLOAD as usize);
    let ss = h.slot_size as usize;
    let policy = Policy::from_raw(h.policy);
    first_bad(
        path,
        &[
            ("header_size", h.header_size.into(), h.header_size as usize == RING_HEADER_SIZE, &|| {
                RING_HEADER_SIZE.to_string()
            }),
            ("capacity", h.capacity, h.capacity.is_power_of_two() && (2..=MAX_CAPACITY).contains(&h.capacity), &|| {
                format!("a power of two from 2 to {MAX_CAPACITY}")
            }),
            ("slot_size", ss as u64, ss >= SLOT_ALIGN && ss.is_multiple_of(SLOT_ALIGN) && ss <= max_slot, &|| {
                format!("a multiple of {SLOT_ALIGN} up to {max_slot}")
            }),
            ("policy", h.policy.into(), policy.is_some(), &|| "0 (overwrite) or 1 (block)".into()),
            ("max_readers", h.max_readers.into(), (1..=MAX_READERS).contains(&h.max_readers), &|| {
                format!("1 to {MAX_READERS}")
            }),
            ("flags", h.flags.into(), h.flags == 0, &|| "0".into()),
            ("stall_timeout_ns", h.stall_timeout_ns, h.stall_timeout_ns != 0, &|| "more than 0".into()),
            ("data_offset", h.data_offset, h.data_offset == RING_HEADER_SIZE as u64, &|| RING_HEADER_SIZE.to_string()),
        ],
    )?;
    Ok(policy.expect("the policy was checked above"))
}

/// Checks 21 and 22: the stored name is a name, and with `name` the one
/// asked for.
fn stored_name(h: &RingHeader, path: &Path, name: Option<&str>) -> Result<(), AttachError> {
    if h.name_len as usize > MAX_NAME_LEN {
        return Err(bad(path, "name_len", h.name_len.into(), format!("at most {MAX_NAME_LEN}")));
    }
    let stored = &h.name[..h.name_len as usize];
    match name {
        Some(name) if stored != name.as_bytes() => Err(AttachError::NameMismatch {
            path: path.to_owned(),
            found: String::from_utf8_lossy(stored).into_owned(),
            expected: name.to_owned(),
        }),
        _ => Ok(()),
    }
}

/// Checks 24 to 35: the control region of the ring whose (complete) data
/// region has geometry `g`, mapped as `map`, its file `size` bytes (its
/// `fstat`: the mapping may be shorter than a file a reader grew). The
/// creator completes the control region before it publishes the data
/// region, so an empty or all-zero one here is not "initialising": it was
/// truncated or wiped.
pub(super) fn validate_readers(map: &Mapping, size: u64, path: &Path, g: &Geometry) -> Result<(), AttachError> {
    let expected = readers_file_size(g.max_readers);
    if size < READERS_HEADER_SIZE as u64 {
        return Err(AttachError::Truncated { path: path.to_owned(), size, needed: expected });
    }
    // SAFETY: the mapping is at least a header long and page aligned.
    let r = unsafe { &*(map.ptr() as *const ReadersHeader) };
    // SAFETY: a plain read of an immutable identity field.
    let magic = unsafe { std::ptr::read_volatile(&r.magic) };
    if magic != READERS_MAGIC {
        return Err(bad(path, "magic", magic, format!("{READERS_MAGIC:#x} (\"HELIXRDR\")")));
    }
    // SYNC POINT: region initialised (control).
    let version = r.version.load(Ordering::Acquire);
    if version == 0 {
        return Err(bad(path, "version", 0, format!("{ABI_VERSION} (set before the data region's)")));
    }
    if version != ABI_VERSION {
        return Err(AttachError::Version { path: path.to_owned(), found: version, expected: ABI_VERSION });
    }
    first_bad(
        path,
        &[
            ("header_size", r.header_size.into(), r.header_size as usize == READERS_HEADER_SIZE, &|| {
                READERS_HEADER_SIZE.to_string()
            }),
            ("max_readers", r.max_readers.into(), r.max_readers == g.max_readers, &|| {
                format!("{} (as in the data region)", g.max_readers)
            }),
            ("entry_size", r.entry_size.into(), r.entry_size as usize == READER_ENTRY_SIZE, &|| {
                READER_ENTRY_SIZE.to_string()
            }),
            ("created_ns", r.created_ns, r.created_ns == g.created_ns, &|| {
                format!("{} (the data region's; the files belong to different rings)", g.created_ns)
            }),
            ("file_size", r.file_size, r.file_size == expected, &|| expected.to_string()),
        ],
    )?;
    whole_file(path, size, expected)
}

/// The first failed check of `checks`, in order, as the error naming its
/// field.
fn first_bad(path: &Path, checks: &[FieldCheck<'_>]) -> Result<(), AttachError> {
    match checks.iter().find(|(_, _, ok, _)| !ok) {
        Some((field, found, _, expected)) => Err(bad(path, field, *found, expected())),
        None => Ok(()),
    }
}

/// Checks 19 and 20 (34 and 35): the file is as long as its header says,
/// `expected` bytes: a shorter one is truncated, a longer one a bad
/// `file_size`.
fn whole_file(path: &Path, size: u64, expected: u64) -> Result<(), AttachError> {
    if size < expected {
        return Err(AttachError::Truncated { path: path.to_owned(), size, needed: expected });
    }
    if size != expected {
        return Err(bad(path, "file_size", size, format!("{expected} (the file itself has a different size)")));
    }
    Ok(())
}

fn bad(path: &Path, field: &'static str, found: u64, expected: impl Into<String>) -> AttachError {
    AttachError::BadField { path: path.to_owned(), field, found, expected: expected.into() }
}
