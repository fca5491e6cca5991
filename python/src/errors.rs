//! The exceptions: one base, `helix.HelixError`, and a subclass per kind of
//! failure; each carries the library's message (its `Display`).

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

create_exception!(helix, HelixError, PyException, "Base of every error the helix package raises.");
create_exception!(
    helix,
    AttachError,
    HelixError,
    "A ring could not be attached or created (no such ring, a bad name, a corrupt header, ...)."
);
create_exception!(
    helix,
    Overrun,
    HelixError,
    "The reader fell a whole ring behind: `lost` frames are gone, and the reader now resumes at \
     sequence `resume_at` (the next read continues there). Counted in `stats()` too."
);
create_exception!(
    helix,
    DamagedError,
    HelixError,
    "A file of the ring shrank under this process's mapping: the handle will never work again."
);
create_exception!(
    helix,
    PublishError,
    HelixError,
    "Frames could not be published: none was, unless the message says how many were (a batch that failed part way)."
);
create_exception!(
    helix,
    ReplacedError,
    HelixError,
    "The ring a reader waited on is no longer under its name (made again, or removed): nothing more comes to \
     this reader; attach again."
);
create_exception!(helix, LeaseError, HelixError, "The ring's writer lease could not be taken.");
create_exception!(
    helix,
    LedgerError,
    HelixError,
    "A ledger folder could not be read, or does not verify (the message names the segment and record)."
);
create_exception!(helix, ControlError, HelixError, "A command could not be sent to helixd, or was not answered.");

/// Adds the exception classes to the module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("HelixError", py.get_type::<HelixError>())?;
    m.add("AttachError", py.get_type::<AttachError>())?;
    m.add("Overrun", py.get_type::<Overrun>())?;
    m.add("DamagedError", py.get_type::<DamagedError>())?;
    m.add("PublishError", py.get_type::<PublishError>())?;
    m.add("ReplacedError", py.get_type::<ReplacedError>())?;
    m.add("LeaseError", py.get_type::<LeaseError>())?;
    m.add("LedgerError", py.get_type::<LedgerError>())?;
    m.add("ControlError", py.get_type::<ControlError>())?;
    Ok(())
}

pub(crate) fn attach(e: helix::AttachError) -> PyErr {
    match e {
        helix::AttachError::Damaged(d) => DamagedError::new_err(d.to_string()),
        e => AttachError::new_err(e.to_string()),
    }
}

pub(crate) fn create(e: helix::CreateError) -> PyErr {
    match e {
        // `replace=True` refused: the stub promises LeaseError (found by
        // review: it raised AttachError, which `except LeaseError` missed).
        e @ helix::CreateError::LiveWriter { .. } => LeaseError::new_err(e.to_string()),
        e => AttachError::new_err(e.to_string()),
    }
}

pub(crate) fn lease(e: helix::LeaseError) -> PyErr {
    match e {
        helix::LeaseError::Attach(e) => attach(e),
        helix::LeaseError::Damaged(d) => DamagedError::new_err(d.to_string()),
        e => LeaseError::new_err(e.to_string()),
    }
}

pub(crate) fn publish(e: helix::PublishError) -> PyErr {
    match e {
        helix::PublishError::Damaged(d) => DamagedError::new_err(d.to_string()),
        e => PublishError::new_err(e.to_string()),
    }
}

/// A batch's failure after `done` of its `total` frames were published,
/// the last as sequence `last`: said in the message (none: as [`publish`]).
pub(crate) fn publish_partial(e: helix::PublishError, done: usize, total: usize, last: u64) -> PyErr {
    if done == 0 {
        return publish(e);
    }
    let msg = format!("{e}, after the first {done} of {total} frames were published (through sequence {last})");
    match e {
        helix::PublishError::Damaged(_) => DamagedError::new_err(msg),
        _ => PublishError::new_err(msg),
    }
}

/// An [`Overrun`] exception with `lost` and `resume_at` set.
pub(crate) fn overrun(py: Python<'_>, o: helix::Overrun) -> PyErr {
    let msg = format!("overrun: {} frames lost, resuming at {}", o.lost, o.resume_at);
    let err = Overrun::new_err(msg);
    let value = err.value(py);
    // Setting attributes on a fresh exception instance cannot fail short of
    // memory exhaustion; that error is the one to raise then.
    if let Err(e) = value.setattr("lost", o.lost).and_then(|_| value.setattr("resume_at", o.resume_at)) {
        return e;
    }
    err
}

/// A read error other than "nothing yet" (which callers handle).
pub(crate) fn read(py: Python<'_>, e: helix::TryReadError) -> PyErr {
    match e {
        helix::TryReadError::Overrun(o) => overrun(py, o),
        helix::TryReadError::Damaged(d) => DamagedError::new_err(d.to_string()),
        e => HelixError::new_err(e.to_string()),
    }
}
