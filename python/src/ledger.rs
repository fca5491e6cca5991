//! `helix.ledger`: verify a ledger folder and export a ring's records from
//! it, as `helix-ledger verify` and `export` do (src/bin/helix-ledger),
//! into numpy.

use std::path::PathBuf;

use bytemuck::{Pod, Zeroable};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyList};

use helix::ledger::format::{hex, GapInfo, RecordType, RingDecl};
use helix::ledger::verify::{self, Located};
use helix::telemetry::{Sample, KIND_SAMPLE};

use crate::errors::LedgerError;

/// One exported telemetry record: where it was in the ring and when the
/// ledger received it, then the §9.1 sample.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Exported {
    ring_seq: u64,
    recv_ns: u64,
    sample: Sample,
}

/// The numpy dtype of [`Exported`]: `ring_seq`, `recv_ns`, then the
/// fields of `SAMPLE_DTYPE`.
pub(crate) fn export_dtype(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    static DTYPE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let fields: Vec<_> = [("ring_seq", "<u8"), ("recv_ns", "<u8")].into_iter().chain(crate::SAMPLE_FIELDS).collect();
    DTYPE.get_or_try_init(py, || crate::dtype(py, &fields, std::mem::size_of::<Exported>())).map(|d| d.bind(py))
}

/// Checks every segment, block and hash of the ledger in `dir`; returns a
/// summary dict, or raises `helix.LedgerError` naming what is wrong.
#[pyfunction]
pub(crate) fn ledger_verify<'py>(py: Python<'py>, dir: PathBuf) -> PyResult<Bound<'py, PyDict>> {
    let summary = py
        .detach(|| verify::verify(&dir))
        .map_err(|e| LedgerError::new_err(e.to_string()))?
        .map_err(|f| LedgerError::new_err(format!("{}: {f}", dir.display())))?;
    let d = PyDict::new(py);
    d.set_item("segments", summary.segments)?;
    d.set_item("records", summary.records)?;
    d.set_item("blocks", summary.blocks)?;
    d.set_item("hash", hex(&summary.hash))?;
    d.set_item("partial_tail", summary.partial_tail)?;
    d.set_item("pruned", summary.pruned.is_some())?;
    let rings = PyList::empty(py);
    for r in &summary.rings {
        let rd = PyDict::new(py);
        rd.set_item("name", &r.decl.name)?;
        rd.set_item("frames", r.frames)?;
        rd.set_item("gaps", r.gaps)?;
        rd.set_item("lost", r.lost)?;
        rd.set_item("next_seq", r.next_seq)?;
        rings.append(rd)?;
    }
    d.set_item("rings", rings)?;
    Ok(d)
}

/// What one export walk collected.
#[derive(Default)]
struct Collected {
    samples: Vec<Exported>,
    /// Records that are not samples: (type, seq, last, kind, payload);
    /// kept only if asked for.
    others: Vec<(&'static str, u64, u64, u32, Vec<u8>)>,
    keep_others: bool,
    /// Frames of other kinds than samples, counted whether kept or not,
    /// and the first one's (seq, kind).
    frames_not_samples: u64,
    first_not_sample: Option<(u64, u32)>,
    /// The ring's incarnation (`created_ns`) as last declared.
    declared: u64,
    /// The incarnations of the frames and GAPs taken, in the ledger's
    /// order, each once: more than one means the ring was created again and
    /// its sequence started again among them.
    incarnations: Vec<u64>,
    /// The first sequence of a frame or GAP taken.
    first_seq: Option<u64>,
    /// GAP records in the range, and the sequences of the range they lost.
    gaps: u64,
    lost: u64,
}

impl Collected {
    fn visit(&mut self, at: &Located<'_>, ring: &str, from: u64, to: u64) {
        if at.ring != ring {
            return;
        }
        let h = &at.record.header;
        let rtype = RecordType::from_u16(h.rtype);
        if rtype == Some(RecordType::Ring) {
            // Decoded by the walk already, which verifies every block.
            self.declared = RingDecl::decode(at.record.payload).map_or(self.declared, |d| d.created_ns);
        }
        let last = match rtype {
            Some(RecordType::Gap) => GapInfo::decode(at.record.payload).map_or(h.seq, |g| g.last),
            _ => h.seq,
        };
        if last < from || h.seq > to {
            return;
        }
        // A frame's or a GAP's: an incarnation declared and gone before
        // anything was recorded of it holds no sequence to start again.
        let recorded = matches!(rtype, Some(RecordType::Frame | RecordType::Gap));
        if recorded && self.incarnations.last() != Some(&self.declared) {
            self.incarnations.push(self.declared);
        }
        if recorded {
            self.first_seq.get_or_insert(h.seq);
        }
        if rtype == Some(RecordType::Gap) {
            self.gaps += 1;
            self.lost = self.lost.saturating_add((last.min(to) - h.seq.max(from)).saturating_add(1));
        }
        let sample = (rtype == Some(RecordType::Frame) && h.kind == KIND_SAMPLE)
            .then(|| bytemuck::try_pod_read_unaligned::<Sample>(at.record.payload).ok())
            .flatten();
        match sample {
            Some(sample) => self.samples.push(Exported { ring_seq: h.seq, recv_ns: h.recv_ns, sample }),
            None => {
                if rtype == Some(RecordType::Frame) {
                    self.frames_not_samples += 1;
                    self.first_not_sample.get_or_insert((h.seq, h.kind));
                }
                // Not copied unless asked for: a caller that wants samples
                // only is refused once the walk is over, and the payloads
                // of a whole ledger held for that were its memory (found
                // by review).
                if self.keep_others {
                    let name = rtype.map_or("unknown", RecordType::as_str);
                    self.others.push((name, h.seq, last, h.kind, at.record.payload.to_vec()));
                }
            }
        }
    }
}

/// What [`ledger_export`] returns to Python.
type Export<'py> = (Bound<'py, PyAny>, Bound<'py, PyList>, u64, Vec<u64>, u64, Option<(u64, u32)>, Bound<'py, PyDict>);

/// The records of ring `ring` with a sequence in `from_seq..=to_seq`:
/// `(samples, others, partial_tail, incarnations, frames, first)`, the
/// telemetry samples as a numpy array of `EXPORT_DTYPE`, every other record
/// (GAP, ring declarations, frames of other kinds) as `(type, seq, last,
/// kind, bytes)` if `with_others` (else an empty list), the bytes of a torn
/// tail read past at the end of the last segment, the ring's incarnations
/// (`created_ns`) the records taken belong to, in order, and the number of
/// frames of other kinds than samples with the first one's `(seq, kind)`,
/// and what the caller says of the range: a dict of `rings` (the names the
/// ledger records), `pruned` (`(segment, records)` retention pruned, or
/// None), `first_seq` (of the first frame or GAP taken, or None), `gaps`
/// and `lost` (the GAP records in the range, and the sequences of it they
/// lost). Raises `helix.LedgerError` if the ledger does not verify.
#[pyfunction]
#[pyo3(signature = (dir, ring, from_seq, to_seq, with_others=true))]
pub(crate) fn ledger_export<'py>(
    py: Python<'py>,
    dir: PathBuf,
    ring: &str,
    from_seq: u64,
    to_seq: u64,
    with_others: bool,
) -> PyResult<Export<'py>> {
    let mut got = Collected { keep_others: with_others, ..Collected::default() };
    let summary = py
        .detach(|| verify::walk(&dir, |at| got.visit(at, ring, from_seq, to_seq)))
        .map_err(|e| LedgerError::new_err(e.to_string()))?
        .map_err(|f| LedgerError::new_err(format!("{}: {f}", dir.display())))?;
    let samples = crate::pod_array(py, &got.samples, export_dtype(py)?)?;
    let others = PyList::empty(py);
    for (rtype, seq, last, kind, payload) in got.others {
        others.append((rtype, seq, last, kind, PyBytes::new(py, &payload)))?;
    }
    let notes = PyDict::new(py);
    notes.set_item("rings", summary.rings.iter().map(|r| r.decl.name.as_str()).collect::<Vec<_>>())?;
    let next = summary.rings.iter().filter(|r| r.decl.name == ring).map(|r| r.next_seq).max();
    notes.set_item("next_seq", next)?;
    notes.set_item("pruned", summary.pruned.as_ref().map(|p| (p.segment, p.records)))?;
    notes.set_item("first_seq", got.first_seq)?;
    notes.set_item("gaps", got.gaps)?;
    notes.set_item("lost", got.lost)?;
    let (incarnations, frames, first) = (got.incarnations, got.frames_not_samples, got.first_not_sample);
    Ok((samples, others, summary.partial_tail, incarnations, frames, first, notes))
}
