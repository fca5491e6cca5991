//! `helix._helix`: the extension module behind the Python package `helix`
//! (python/helix/__init__.py re-exports it). Rings are read and written
//! through the `helix` library itself, so every guarantee of docs/abi.md
//! (seqlocked copies, exact overruns, futex waits) holds here too; errors
//! become Python exceptions carrying the library's messages.

mod control;
mod errors;
mod ledger;
mod reader;
mod writer;

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyByteArray;

use helix::telemetry::Sample;
use helix::Namespace;

/// A wait (a reader's, a command's) wakes at least this often to let
/// Python handle signals (Ctrl-C), however long it may last.
const SIGNAL_CHECK: std::time::Duration = std::time::Duration::from_millis(100);

/// A timeout of `t` seconds, as a Reader's and a command's take it: NaN or
/// below 0 refused (`what`: how the message says what is expected), past
/// what a Duration holds (infinity, 1e20 s) for ever.
fn timeout(t: f64, what: &str) -> PyResult<std::time::Duration> {
    if t.is_nan() || t < 0.0 {
        return Err(pyo3::exceptions::PyValueError::new_err(format!("timeout {t}: expected {what}")));
    }
    Ok(std::time::Duration::try_from_secs_f64(t).unwrap_or(std::time::Duration::MAX))
}

/// The namespace `namespace` names, or `HELIX_NAMESPACE` (else `helix`).
fn namespace(namespace: Option<&str>) -> PyResult<Namespace> {
    match namespace {
        Some(ns) => Namespace::new(ns),
        None => Namespace::from_env(),
    }
    .map_err(|e| errors::AttachError::new_err(e.to_string()))
}

/// A numpy structured dtype of `fields`, checked to be `size` bytes.
fn dtype(py: Python<'_>, fields: &[(&str, &str)], size: usize) -> PyResult<Py<PyAny>> {
    let dtype = py.import("numpy")?.getattr("dtype")?.call1((fields.to_vec(),))?;
    let itemsize: usize = dtype.getattr("itemsize")?.extract()?;
    assert_eq!(itemsize, size, "the dtype {fields:?} matches its Rust struct");
    Ok(dtype.unbind())
}

/// The fields of [`sample_dtype`], in order.
const SAMPLE_FIELDS: [(&str, &str); 6] = [
    ("stream", "<u4"),
    ("quality", "<u4"),
    ("seq", "<u8"),
    ("sample_ns", "<u8"),
    ("ingest_ns", "<u8"),
    ("value", "<f8"),
];

/// numpy's structured dtype of a telemetry sample (docs/abi.md §9.1):
/// stream, quality, seq, sample_ns, ingest_ns, value; 40 bytes,
/// little-endian, the offsets of `helix::telemetry::Sample`.
fn sample_dtype(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    static DTYPE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    DTYPE.get_or_try_init(py, || dtype(py, &SAMPLE_FIELDS, std::mem::size_of::<Sample>())).map(|d| d.bind(py))
}

/// A writable numpy array of `items` (one copy, into a bytearray numpy
/// then views: no Python object per item).
fn pod_array<'py, T: bytemuck::Pod>(
    py: Python<'py>,
    items: &[T],
    dtype: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    static FROMBUFFER: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let frombuffer = FROMBUFFER.get_or_try_init(py, || py.import("numpy")?.getattr("frombuffer").map(Bound::unbind))?;
    let bytes = PyByteArray::new(py, bytemuck::cast_slice(items));
    frombuffer.bind(py).call1((bytes, dtype))
}

/// [`pod_array`] of telemetry samples.
fn samples_array<'py>(py: Python<'py>, samples: &[Sample]) -> PyResult<Bound<'py, PyAny>> {
    pod_array(py, samples, sample_dtype(py)?)
}

/// A library handle a Python object holds (a ring's `Reader` or `Writer`,
/// a `Control` connection) until it is closed, with the process that made
/// it: a child forked after that (`multiprocessing`'s default on Linux
/// before Python 3.14, `os.fork`) is refused its use. (Found by review: a
/// `Writer` used in the child published the same sequences as its parent
/// into the same slots, and readers took frames made of both; a `Reader`
/// moved its parent's cursor.) The check is a `getpid`, a system call:
/// nothing next to a Python call.
pub(crate) struct Handle<T> {
    value: Option<T>,
    pid: u32,
}

impl<T> Handle<T> {
    /// `value`, made by this process.
    pub(crate) fn new(value: T) -> Handle<T> {
        Handle { value: Some(value), pid: std::process::id() }
    }

    /// The handle, unless it is closed or this is a child forked after it
    /// was made (`what`: how messages name it, "the reader").
    pub(crate) fn get(&self, what: &str) -> PyResult<&T> {
        let value = self.value.as_ref().ok_or_else(|| closed(what))?;
        self.made_here(what)?;
        Ok(value)
    }

    /// [`Handle::get`], mutably.
    pub(crate) fn get_mut(&mut self, what: &str) -> PyResult<&mut T> {
        self.made_here(what)?;
        self.value.as_mut().ok_or_else(|| closed(what))
    }

    fn made_here(&self, what: &str) -> PyResult<()> {
        let me = std::process::id();
        if self.value.is_some() && me != self.pid {
            return Err(errors::HelixError::new_err(format!(
                "{what} was made by process {} and this is process {me}, forked from it: a handle is its maker's \
                 alone (another process using it would write what its maker writes); attach again here",
                self.pid
            )));
        }
        Ok(())
    }

    /// Closes it (in a forked child: drops the child's copy, leaving the
    /// parent's lease, entry or lane alone).
    pub(crate) fn close(&mut self) {
        self.value = None;
    }

    pub(crate) fn is_open(&self) -> bool {
        self.value.is_some()
    }
}

fn closed(what: &str) -> PyErr {
    pyo3::exceptions::PyRuntimeError::new_err(format!("{what} is closed"))
}

/// The methods a handle class (`Reader`, `Writer`) shares, from its
/// fields `inner: Handle<_>`, `name` and `namespace`: `close` (with the
/// doc `$close`), the context manager, `name`, `namespace` and `repr`. A
/// `#[pymethods]` block of its own (PyO3's `multiple-pymethods`).
#[macro_export]
macro_rules! handle_methods {
    ($class:ident, $close:literal) => {
        #[pymethods]
        impl $class {
            #[doc = $close]
            fn close(&mut self) {
                self.inner.close();
            }

            fn __enter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
                slf
            }

            fn __exit__(&mut self, _ty: &Bound<'_, PyAny>, _value: &Bound<'_, PyAny>, _tb: &Bound<'_, PyAny>) {
                self.close();
            }

            #[getter]
            fn name(&self) -> &str {
                &self.name
            }

            #[getter]
            fn namespace(&self) -> &str {
                &self.namespace
            }

            fn __repr__(&self) -> String {
                let state = if self.inner.is_open() { "open" } else { "closed" };
                format!("<helix.{} {:?} namespace={:?} {state}>", stringify!($class), self.name, self.namespace)
            }
        }
    };
}

/// Removes a ring's files (processes attached keep their mappings);
/// refuses a ring a live process writes unless `force`, as `helixctl rm`
/// does (found by review: it removed helixd's rings without a word, and
/// their readers waited on the removed ring for ever).
#[pyfunction]
#[pyo3(signature = (name, namespace=None, force=false))]
fn unlink(name: &str, namespace: Option<&str>, force: bool) -> PyResult<()> {
    let ns = self::namespace(namespace)?;
    if let (Some((pid, epoch)), false) = (helix::ring::live_writer(&ns, name), force) {
        return Err(errors::LeaseError::new_err(format!(
            "ring {name:?} is in use: its writer lease is held by live pid {pid} (epoch {epoch}); stop that \
             process (or close its Writer) first, or pass force=True (it then writes into the removed ring until \
             it exits)"
        )));
    }
    helix::Ring::unlink(&ns, name).map_err(errors::attach)
}

#[pymodule]
fn _helix(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<reader::Reader>()?;
    m.add_class::<writer::Writer>()?;
    m.add_class::<control::Control>()?;
    m.add_function(wrap_pyfunction!(ledger::ledger_verify, m)?)?;
    m.add_function(wrap_pyfunction!(ledger::ledger_export, m)?)?;
    m.add("EXPORT_DTYPE", ledger::export_dtype(py)?)?;
    m.add_function(wrap_pyfunction!(unlink, m)?)?;
    m.add("SAMPLE_DTYPE", sample_dtype(py)?)?;
    m.add("KIND_SAMPLE", helix::telemetry::KIND_SAMPLE)?;
    m.add("QUALITY_SUSPECT", helix::telemetry::QUALITY_SUSPECT)?;
    m.add("QUALITY_BAD", helix::telemetry::QUALITY_BAD)?;
    m.add("QUALITY_SIMULATED", helix::telemetry::QUALITY_SIMULATED)?;
    errors::register(m)
}
