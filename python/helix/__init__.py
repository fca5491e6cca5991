"""HELIX rings from Python: read telemetry into numpy at ring speed.

``helix.Reader.attach("telemetry")`` joins a ring as a reader with its own
cursor; ``read_batch(n)`` returns up to ``n`` telemetry samples as one numpy
structured array (``SAMPLE_DTYPE``, docs/abi.md §9.1) filled in Rust, or
``(seq, kind, bytes)`` tuples for frames of other kinds. A reader that falls
a whole ring behind gets ``helix.Overrun`` carrying ``lost`` and
``resume_at``; the next read continues at ``resume_at``. Waits release the
GIL. ``helix.Writer`` publishes into rings a Python program owns;
``helix.Control`` sends commands to helixd; ``helix.ledger`` verifies and
exports ledgers.
"""

from ._helix import (
    KIND_SAMPLE,
    QUALITY_BAD,
    QUALITY_SIMULATED,
    QUALITY_SUSPECT,
    SAMPLE_DTYPE,
    AttachError,
    Control,
    ControlError,
    DamagedError,
    HelixError,
    LeaseError,
    LedgerError,
    Overrun,
    PublishError,
    Reader,
    ReplacedError,
    Writer,
    unlink,
)
from . import ledger

__all__ = [
    "KIND_SAMPLE",
    "QUALITY_BAD",
    "QUALITY_SIMULATED",
    "QUALITY_SUSPECT",
    "SAMPLE_DTYPE",
    "AttachError",
    "Control",
    "ControlError",
    "DamagedError",
    "HelixError",
    "LeaseError",
    "LedgerError",
    "Overrun",
    "PublishError",
    "Reader",
    "ReplacedError",
    "Writer",
    "ledger",
    "unlink",
]
