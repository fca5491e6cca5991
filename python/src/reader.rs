//! `helix.Reader`: a registered reader of a broadcast ring. Telemetry
//! samples come out as numpy arrays filled from Rust; other frames as
//! `(seq, kind, bytes)`. Waits release the GIL.

use std::time::{Duration, Instant};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};

use helix::telemetry::{Sample, KIND_SAMPLE};
use helix::{FrameRef, ReadError, ReaderOptions, RingView, Start, TryReadError, UnderName};

use crate::errors;
use crate::SIGNAL_CHECK;

/// A reader of one ring with its own cursor (see `helix.Reader.attach`).
#[pyclass(module = "helix")]
pub struct Reader {
    inner: crate::Handle<helix::Reader>,
    /// Where samples are copied with the GIL released, before the one copy
    /// into the numpy array.
    samples: Vec<Sample>,
    /// Time spent waiting with nothing come since the ring was last
    /// looked up under its name ([`LOOK_EVERY`]).
    waited: Duration,
    name: String,
    namespace: String,
}

/// Whether `f` is a telemetry sample (docs/abi.md §9.1).
fn is_sample(f: &FrameRef<'_>) -> bool {
    f.kind() == KIND_SAMPLE && f.len() == std::mem::size_of::<Sample>()
}

fn parse_start(start: &Bound<'_, PyAny>) -> PyResult<Start> {
    if let Ok(s) = start.extract::<String>() {
        return match s.as_str() {
            "newest" => Ok(Start::Newest),
            "oldest" => Ok(Start::Oldest),
            _ => {
                Err(PyValueError::new_err(format!("start {s:?}: expected \"newest\", \"oldest\" or a sequence number")))
            }
        };
    }
    match start.extract::<u64>() {
        Ok(seq) => Ok(Start::At(seq)),
        Err(_) => Err(PyValueError::new_err("start: expected \"newest\", \"oldest\" or a sequence number (int >= 0)")),
    }
}

/// A run of up to `out.len()` telemetry samples at the cursor.
fn take_samples(reader: &mut helix::Reader, out: &mut [Sample]) -> Result<usize, TryReadError> {
    let mut i = 0;
    reader.try_read_batch_while(out.len(), |f| {
        if !is_sample(f) {
            return false;
        }
        match f.read::<Sample>() {
            Ok(s) => {
                out[i] = s;
                i += 1;
                true
            }
            Err(_) => false,
        }
    })
}

/// How long a reader waits with nothing coming, over its calls, between
/// two looks whether its ring is still the one under its name.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// Why ring `name` of `namespace`, made at `created_ns`, sends a reader of
/// it nothing more: another ring is under its name (helixd made it again),
/// or none is; `None` while it is there (or the name holds a ring that
/// cannot be judged yet: one being made). Found by review: a reader
/// iterating, or reading without a deadline, waited on a removed ring for
/// ever, deaf to the ring made again under the name.
fn gone(py: Python<'_>, namespace: &str, name: &str, created_ns: u64) -> PyResult<Option<String>> {
    let ns = crate::namespace(Some(namespace))?;
    Ok(match py.detach(|| RingView::under_name(&ns, name, created_ns)) {
        UnderName::Replaced(_) => {
            Some(format!("ring {name:?} was made again under its name since this reader attached; attach again"))
        }
        UnderName::Gone => Some(format!("ring {name:?} was removed since this reader attached")),
        UnderName::Same(_) | UnderName::Unknown(_) => None,
    })
}

/// Samples a batch takes at most (`BATCH_BYTES` of them): the buffer they
/// are copied into is kept for the next. (Found by review: `read_batch`
/// of a huge count took a buffer of the ring's capacity, up to 2^32
/// samples, 160 GiB; its allocation failing ended the process.)
const BATCH_SAMPLES: usize = BATCH_BYTES / std::mem::size_of::<Sample>();

/// Payload bytes one batch of frames copies at most (a larger frame still
/// comes, alone): a ring's maker chooses its `max_payload`, and a batch of
/// thousands of 16 MiB frames would take the process's memory.
const BATCH_BYTES: usize = 64 << 20;

/// A run of up to `max` frames at the cursor that `want` accepts, copied
/// (at most [`BATCH_BYTES`] of payload after the first).
type Copied = Vec<(u64, u32, Vec<u8>)>;
fn take_frames(
    reader: &mut helix::Reader,
    max: usize,
    want: fn(&FrameRef<'_>) -> bool,
) -> Result<Copied, TryReadError> {
    let mut out = Vec::new();
    let mut bytes = 0usize;
    let n = reader.try_read_batch_while(max, |f| {
        if !want(f) || (!out.is_empty() && bytes + f.len() > BATCH_BYTES) {
            return false;
        }
        bytes += f.len();
        let mut payload = vec![0u8; f.len()];
        let ok = f.copy_to(&mut payload).is_ok();
        out.push((f.seq(), f.kind(), payload));
        ok
    })?;
    // A frame found overwritten after it was copied is not consumed.
    out.truncate(n);
    Ok(out)
}

fn frame_tuple<'py>(py: Python<'py>, (seq, kind, payload): (u64, u32, Vec<u8>)) -> PyResult<Bound<'py, PyTuple>> {
    (seq, kind, PyBytes::new(py, &payload)).into_pyobject(py)
}

impl Reader {
    fn inner(&mut self) -> PyResult<&mut helix::Reader> {
        self.inner.get_mut("the reader")
    }

    fn get(&self) -> PyResult<&helix::Reader> {
        self.inner.get("the reader")
    }

    /// The reader, if no file of its ring has shrunk: the counters of a
    /// damaged ring are not the ring's (found by review: `lag` and
    /// `stats()` went on answering).
    fn whole(&self) -> PyResult<&helix::Reader> {
        let r = self.get()?;
        match r.damage() {
            Some(d) => Err(errors::DamagedError::new_err(d.to_string())),
            None => Ok(r),
        }
    }

    /// Waits until a frame (or an overrun) is there, at most until
    /// `deadline` (`None`: for ever), with the GIL released; looks for
    /// signals every [`SIGNAL_CHECK`]. Returns whether one is there.
    fn wait(&mut self, py: Python<'_>, deadline: Option<Instant>) -> PyResult<bool> {
        let reader = self.inner.get_mut("the reader")?;
        loop {
            let slice =
                deadline.map_or(SIGNAL_CHECK, |d| d.saturating_duration_since(Instant::now()).min(SIGNAL_CHECK));
            let began = Instant::now();
            match py.detach(|| reader.wait_timeout(slice)) {
                Ok(()) => return Ok(true),
                Err(ReadError::Timeout) => {}
                Err(ReadError::Overrun(o)) => return Err(errors::overrun(py, o)),
                Err(ReadError::Damaged(d)) => return Err(errors::DamagedError::new_err(d.to_string())),
                Err(e) => return Err(errors::HelixError::new_err(e.to_string())),
            }
            py.check_signals()?;
            // Every second of waiting, over calls (a loop of 0.5 s reads
            // looks too; one that never waits asks `replaced()`).
            self.waited += began.elapsed();
            if self.waited >= LOOK_EVERY {
                self.waited = Duration::ZERO;
                if let Some(why) = gone(py, &self.namespace, &self.name, reader.geometry().created_ns)? {
                    // What came while it looked is read first (found by
                    // review: it was left unread, the reader told nothing
                    // more would come).
                    return match py.detach(|| reader.wait_timeout(Duration::ZERO)) {
                        Ok(()) => Ok(true),
                        Err(ReadError::Overrun(o)) => Err(errors::overrun(py, o)),
                        Err(_) => Err(errors::ReplacedError::new_err(why)),
                    };
                }
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(false);
            }
        }
    }

    /// The instant `timeout` seconds from now (`None`: no deadline).
    fn deadline(timeout: Option<f64>) -> PyResult<Option<Instant>> {
        // Past what the clock can hold (1e19 s, say): for ever.
        timeout
            .map(|t| crate::timeout(t, "seconds >= 0 or None"))
            .transpose()
            .map(|d| d.and_then(|d| Instant::now().checked_add(d)))
    }

    /// The next run of samples, or of other frames, up to `max`.
    fn take<'py>(&mut self, py: Python<'py>, max: usize) -> PyResult<Bound<'py, PyAny>> {
        let reader = self.inner.get_mut("the reader")?;
        let max = max.min(reader.geometry().capacity as usize).min(BATCH_SAMPLES);
        if self.samples.len() < max {
            self.samples.resize(max, bytemuck::Zeroable::zeroed());
        }
        let out = &mut self.samples[..max];
        match py.detach(|| take_samples(reader, out)) {
            Ok(0) => {}
            Ok(n) => return crate::samples_array(py, &self.samples[..n]),
            Err(TryReadError::Empty) => return crate::samples_array(py, &[]),
            Err(e) => return Err(errors::read(py, e)),
        }
        // The frame at the cursor is of another kind.
        let frames = py.detach(|| take_frames(reader, max, |f| !is_sample(f))).map_err(|e| errors::read(py, e))?;
        let tuples = frames.into_iter().map(|f| frame_tuple(py, f)).collect::<PyResult<Vec<_>>>()?;
        Ok(PyList::new(py, tuples)?.into_any())
    }
}

#[pymethods]
impl Reader {
    /// Attaches to ring `name` and registers a reader (see the stub).
    #[staticmethod]
    #[pyo3(signature = (name, namespace=None, gating=false, start=None, reader_name=None))]
    fn attach(
        py: Python<'_>,
        name: &str,
        namespace: Option<&str>,
        gating: bool,
        start: Option<&Bound<'_, PyAny>>,
        reader_name: Option<&str>,
    ) -> PyResult<Reader> {
        let ns = crate::namespace(namespace)?;
        let start = start.map(parse_start).transpose()?.unwrap_or(Start::Newest);
        let mut opts = ReaderOptions { gating, start, ..Default::default() };
        if let Some(r) = reader_name {
            opts.name = r.to_owned();
        }
        let inner = py.detach(|| helix::Reader::attach(&ns, name, &opts)).map_err(errors::attach)?;
        Ok(Reader {
            inner: crate::Handle::new(inner),
            samples: Vec::new(),
            waited: Duration::ZERO,
            name: name.to_owned(),
            namespace: ns.to_string(),
        })
    }

    /// Up to `max_frames` frames: a numpy array of samples, or a list of
    /// `(seq, kind, bytes)`; empty if `timeout` seconds pass first.
    #[pyo3(signature = (max_frames, timeout=None))]
    fn read_batch<'py>(
        &mut self,
        py: Python<'py>,
        max_frames: usize,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        if max_frames == 0 {
            return Err(PyValueError::new_err("max_frames must be at least 1"));
        }
        if !self.wait(py, Reader::deadline(timeout)?)? {
            return crate::samples_array(py, &[]);
        }
        self.take(py, max_frames)
    }

    /// The next frame as `(seq, kind, bytes)`, or None after `timeout`
    /// seconds in all.
    #[pyo3(signature = (timeout=None))]
    fn read<'py>(&mut self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Option<Bound<'py, PyTuple>>> {
        let deadline = Reader::deadline(timeout)?;
        loop {
            if !self.wait(py, deadline)? {
                return Ok(None);
            }
            let reader = self.inner()?;
            match py.detach(|| take_frames(reader, 1, |_| true)) {
                Ok(mut f) if !f.is_empty() => return frame_tuple(py, f.swap_remove(0)).map(Some),
                // Woken for a frame still being written: wait again.
                Ok(_) | Err(TryReadError::Empty) => {}
                Err(e) => return Err(errors::read(py, e)),
            }
        }
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyTuple>>> {
        self.read(py, None)
    }

    /// Published frames not yet read.
    #[getter]
    fn lag(&self) -> PyResult<u64> {
        Ok(self.whole()?.lag())
    }

    /// The next sequence this reader will read.
    #[getter]
    fn cursor(&self) -> PyResult<u64> {
        Ok(self.get()?.cursor())
    }
    /// Whether the ring under this reader's name is no longer the one it
    /// reads: another made under the name since (helixd recreated it), or
    /// none there. Nothing more comes to this reader then; attach again.
    /// False while the name holds a ring that cannot be judged yet (one
    /// being created).
    fn replaced(&self, py: Python<'_>) -> PyResult<bool> {
        let created_ns = self.get()?.geometry().created_ns;
        Ok(gone(py, &self.namespace, &self.name, created_ns)?.is_some())
    }

    /// This reader's counters and the ring's geometry, as a dict.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let r = self.whole()?;
        let g = r.geometry();
        let d = PyDict::new(py);
        d.set_item("cursor", r.cursor())?;
        d.set_item("lag", r.lag())?;
        d.set_item("frames", r.frames())?;
        d.set_item("overruns", r.overruns())?;
        d.set_item("lost", r.lost())?;
        d.set_item("gating", r.is_gating())?;
        d.set_item("demoted", r.was_demoted())?;
        d.set_item("writer_epoch", r.writer_epoch())?;
        d.set_item("capacity", g.capacity)?;
        d.set_item("max_payload", g.max_payload)?;
        d.set_item("policy", g.policy.as_str())?;
        d.set_item("created_ns", g.created_ns)?;
        // Whose the ring is (its data file, as mapped): who can write its
        // frames. A reader reads any ring it may open, as `helixctl tail`
        // does; a script that acts on what it reads checks this.
        d.set_item("owner_uid", r.owner_uid())?;
        Ok(d)
    }
}

crate::handle_methods!(Reader, "Unregisters the reader; later calls raise RuntimeError.");
