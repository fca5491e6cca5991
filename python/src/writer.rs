//! `helix.Writer`: the writer of a ring a Python program owns (or takes
//! over: the lease protocol of docs/abi.md §4.1).

use std::time::Duration;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use helix::telemetry::{Sample, KIND_SAMPLE};
use helix::{Policy, Ring, RingOptions};

use crate::errors;
use crate::SIGNAL_CHECK;

/// The writer of one ring (see `helix.Writer.create`).
#[pyclass(module = "helix")]
pub struct Writer {
    inner: crate::Handle<helix::Writer>,
    name: String,
    namespace: String,
}

impl Writer {
    fn inner(&mut self) -> PyResult<&mut helix::Writer> {
        self.inner.get_mut("the writer")
    }

    /// Publishes `records` as frames of `kind`, in as few claims as the
    /// ring allows (at most its capacity each); returns the last sequence.
    /// A frame too large for the ring is refused before any is published;
    /// a failure after some claims (the ring damaged, say) says how many
    /// were.
    fn publish_records(&mut self, py: Python<'_>, kind: u32, records: &[&[u8]]) -> PyResult<u64> {
        let w = self.inner()?;
        let max = w.geometry().max_payload as usize;
        if let Some((i, r)) = records.iter().enumerate().find(|(_, r)| r.len() > max) {
            let e = helix::PublishError::TooLarge { len: r.len(), max };
            return Err(errors::PublishError::new_err(format!("frame {i} of {}: {e}", records.len())));
        }
        let capacity = w.geometry().capacity as usize;
        let mut last = w.next_seq().saturating_sub(1);
        let mut done = 0usize;
        for chunk in records.chunks(capacity) {
            let published = waiting(py, || {
                let mut claim = w.claim_timeout(chunk.len() as u64, SIGNAL_CHECK)?;
                for r in chunk {
                    last = claim.push_kind(kind, r)?;
                    // A claim dropped on a later failure publishes this one.
                    done += 1;
                }
                claim.commit();
                Ok(())
            })?;
            published.map_err(|e| errors::publish_partial(e, done, records.len(), last))?;
        }
        Ok(last)
    }
}

/// Runs `attempt` (a claim that waits at most [`SIGNAL_CHECK`] for room,
/// and what is done with it) with the GIL released until it does not find
/// the ring full, looking for signals (Ctrl-C) between tries: a gating
/// reader that never reads held a `block` ring's `publish` for its whole
/// stall timeout (up to years), deaf to Ctrl-C. The ring's stall clock
/// runs on across tries, so such a reader is still demoted at the stall
/// timeout.
fn waiting<T: Send>(
    py: Python<'_>,
    mut attempt: impl FnMut() -> Result<T, helix::PublishError> + Send,
) -> PyResult<Result<T, helix::PublishError>> {
    loop {
        match py.detach(&mut attempt) {
            Err(helix::PublishError::Full { .. }) => py.check_signals()?,
            done => return Ok(done),
        }
    }
}

#[pymethods]
impl Writer {
    /// Creates ring `name` (or replaces it with `replace=True`) and takes
    /// its writer lease.
    #[staticmethod]
    #[pyo3(signature = (name, namespace=None, capacity=4096, max_payload=64, policy="overwrite", replace=false, stall_timeout=2.0))]
    // Each Python keyword argument is a parameter of its own (PyO3 maps
    // them one to one); a struct would not be a Python signature.
    #[allow(clippy::too_many_arguments)]
    fn create(
        py: Python<'_>,
        name: &str,
        namespace: Option<&str>,
        capacity: u64,
        max_payload: u32,
        policy: &str,
        replace: bool,
        stall_timeout: f64,
    ) -> PyResult<Writer> {
        let ns = crate::namespace(namespace)?;
        let policy: Policy = policy.parse().map_err(PyValueError::new_err)?;
        // The ring's own check names a zero or one past what it can hold.
        let stall_timeout = Duration::try_from_secs_f64(stall_timeout).map_err(|_| {
            PyValueError::new_err(format!(
                "stall_timeout {stall_timeout}: expected seconds > 0 (at most about 584 years)"
            ))
        })?;
        let opts = RingOptions { capacity, max_payload, policy, stall_timeout, ..Default::default() };
        let ring = py
            .detach(|| if replace { Ring::recreate(&ns, name, &opts) } else { Ring::create(&ns, name, &opts) })
            .map_err(errors::create)?;
        let inner = py.detach(|| ring.writer()).map_err(errors::lease)?;
        // Its lease is free from its making to `writer()`: another
        // `create(replace=True)` in between took it and replaced the ring,
        // and this writer would have written into a removed one for ever
        // (found by review). Once the lease is held, nobody replaces it.
        let created_ns = ring.geometry().created_ns;
        let under = py.detach(|| helix::RingView::under_name(&ns, name, created_ns));
        if matches!(under, helix::UnderName::Replaced(_) | helix::UnderName::Gone) {
            return Err(errors::LeaseError::new_err(format!(
                "ring {name:?} was replaced by another process between its making and this writer taking its lease; \
                 nothing was published"
            )));
        }
        Ok(Writer { inner: crate::Handle::new(inner), name: name.to_owned(), namespace: ns.to_string() })
    }

    /// Takes the writer lease of an existing ring.
    #[staticmethod]
    #[pyo3(signature = (name, namespace=None))]
    fn attach(py: Python<'_>, name: &str, namespace: Option<&str>) -> PyResult<Writer> {
        let ns = crate::namespace(namespace)?;
        let inner = py.detach(|| helix::Writer::attach(&ns, name)).map_err(errors::lease)?;
        Ok(Writer { inner: crate::Handle::new(inner), name: name.to_owned(), namespace: ns.to_string() })
    }

    /// Publishes one frame; returns its sequence number.
    #[pyo3(signature = (payload, kind=0))]
    fn publish(&mut self, py: Python<'_>, payload: &[u8], kind: u32) -> PyResult<u64> {
        let w = self.inner()?;
        let max = w.geometry().max_payload as usize;
        if payload.len() > max {
            return Err(errors::publish(helix::PublishError::TooLarge { len: payload.len(), max }));
        }
        let published = waiting(py, || {
            let mut claim = w.claim_timeout(1, SIGNAL_CHECK)?;
            let seq = claim.push_kind(kind, payload)?;
            claim.commit();
            Ok(seq)
        })?;
        published.map_err(errors::publish)
    }

    /// Publishes each sample of `samples` (anything numpy converts to the
    /// SAMPLE_DTYPE array) as one telemetry frame; returns the last
    /// sequence (the one before the first, if `samples` is empty).
    fn publish_samples(&mut self, py: Python<'_>, samples: &Bound<'_, PyAny>) -> PyResult<u64> {
        let numpy = py.import("numpy")?;
        let dtype = crate::sample_dtype(py)?;
        // Converted field by field, so it must have the fields: numpy fills
        // every field of a sample with each value of a plain array (or
        // list, or Series), and matches other fields by position, not by
        // name. A sequence of tuples is taken in field order.
        let plain = numpy.getattr("asarray")?.call1((samples,))?;
        let names = plain.getattr("dtype")?.getattr("names")?;
        // A plain number (ndim 0) is refused too: numpy would make it one
        // sample with every field that number.
        let flat = names.is_none() && plain.getattr("ndim")?.extract::<usize>()? <= 1;
        let empty = plain.getattr("size")?.extract::<usize>()? == 0;
        if !empty && (flat || !names.is_none() && !names.eq(dtype.getattr("names")?)?) {
            return Err(PyTypeError::new_err(format!(
                "publish_samples: expected samples with the fields of helix.SAMPLE_DTYPE {} (an array of it, or \
                 tuples in its order), got dtype {}",
                dtype.getattr("names")?.repr()?,
                plain.getattr("dtype")?.repr()?
            )));
        }
        let array = numpy.getattr("ascontiguousarray")?.call1((samples, &dtype))?;
        if array.getattr("ndim")?.extract::<usize>()? != 1 {
            return Err(PyValueError::new_err("publish_samples: expected a one-dimensional array of samples"));
        }
        if !names.is_none() {
            // Its fields are SAMPLE_DTYPE's, in order (checked above).
            check_cast(&numpy, &array, names.try_iter()?.map(|name| plain.get_item(name?)))?;
        } else if plain.getattr("ndim")?.extract::<usize>()? == 2 {
            // Tuples in field order: column i was field i (numpy cast 1.5
            // in a tuple's stream to 1 without a word; found by review).
            let all = pyo3::types::PySlice::full(py);
            check_cast(&numpy, &array, (0..crate::SAMPLE_FIELDS.len()).map(|i| plain.get_item((&all, i))))?;
        }
        let bytes = array.call_method0("tobytes")?;
        let bytes = bytes.cast::<PyBytes>()?.as_bytes();
        let samples: Vec<&[u8]> = bytes.chunks_exact(std::mem::size_of::<Sample>()).collect();
        self.publish_records(py, KIND_SAMPLE, &samples)
    }

    /// Publishes each of `payloads` as one frame of `kind`, in as few
    /// claims as the ring allows; returns the last sequence.
    #[pyo3(signature = (payloads, kind=0))]
    fn publish_many(&mut self, py: Python<'_>, payloads: Vec<Vec<u8>>, kind: u32) -> PyResult<u64> {
        let payloads: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
        self.publish_records(py, kind, &payloads)
    }

    /// The sequence the next frame will get.
    #[getter]
    fn next_seq(&mut self) -> PyResult<u64> {
        Ok(self.inner()?.next_seq())
    }
}

/// `Err` naming the first field whose values the cast to SAMPLE_DTYPE
/// (`cast`) changed: one out of the field's range, negative in an
/// unsigned field, a fraction or NaN in an integer one. numpy casts them
/// without a word (a stream 2^32 + 5 went out as stream 5). `given` holds
/// each field's values as given, in SAMPLE_DTYPE's order (a structured
/// array's fields, or the columns of tuples). Cast back, an unchanged value
/// is what was given.
fn check_cast<'py>(
    numpy: &Bound<'py, PyModule>,
    cast: &Bound<'py, PyAny>,
    given: impl Iterator<Item = PyResult<Bound<'py, PyAny>>>,
) -> PyResult<()> {
    let py = cast.py();
    let names = cast.getattr("dtype")?.getattr("names")?;
    for (k, was) in given.enumerate() {
        let was = was?;
        let name = names.get_item(k)?;
        let now = cast.get_item(&name)?;
        let kind = was.getattr("dtype")?;
        let back = now.call_method1("astype", (&kind,))?;
        let floats = kind.getattr("kind")?.extract::<String>()? == "f";
        let kwargs = pyo3::types::PyDict::new(py);
        kwargs.set_item("equal_nan", floats)?;
        if !numpy.getattr("array_equal")?.call((&back, &was), Some(&kwargs))?.extract::<bool>()? {
            return Err(PyValueError::new_err(format!(
                "publish_samples: field {name} holds a value helix.SAMPLE_DTYPE's {} cannot (out of range, \
                 negative in an unsigned field, or not a whole number); nothing was published",
                now.getattr("dtype")?.str()?
            )));
        }
    }
    Ok(())
}

crate::handle_methods!(Writer, "Releases the writer lease (the ring stays; `helix.unlink` removes it).");
