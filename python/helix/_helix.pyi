"""Type stubs of the extension module (python/src); ``helix`` re-exports it."""

from os import PathLike
from typing import Iterator, Literal, Optional, Union

import numpy as np
import numpy.typing as npt

#: numpy dtype of a telemetry sample (docs/abi.md §9.1): stream <u4,
#: quality <u4, seq <u8, sample_ns <u8, ingest_ns <u8, value <f8; 40 bytes.
SAMPLE_DTYPE: np.dtype
#: numpy dtype of an exported ledger record: ring_seq <u8, recv_ns <u8,
#: then the fields of SAMPLE_DTYPE; 56 bytes.
EXPORT_DTYPE: np.dtype
#: Frame kind of a telemetry sample.
KIND_SAMPLE: int
QUALITY_SUSPECT: int
QUALITY_BAD: int
QUALITY_SIMULATED: int

#: A frame that is not a telemetry sample: (sequence, kind, payload).
Frame = tuple[int, int, bytes]

class HelixError(Exception):
    """Base of every error the helix package raises."""

class AttachError(HelixError):
    """A ring could not be attached or created: no such ring, a bad ring or
    namespace name, a corrupt header (the message names the field)."""

class Overrun(HelixError):
    """The reader fell a whole ring behind. ``lost`` sequences are gone;
    the reader now stands at ``resume_at``, where the next read continues.
    Also counted in ``Reader.stats()`` (``overruns``, ``lost``)."""

    lost: int
    resume_at: int

class DamagedError(HelixError):
    """A file of the ring shrank under this process's mapping; the handle
    will never work again."""

class PublishError(HelixError):
    """Frames could not be published: none was, unless the message says
    how many were (a batch that failed part way)."""

class ReplacedError(HelixError):
    """The ring a reader waited on is no longer under its name: another
    was made there (helixd made it again), or it was removed. Nothing more
    comes to this reader; attach again. A waiting reader looks every
    second."""

class LeaseError(HelixError):
    """The ring's writer lease could not be taken (a live writer holds it)."""

class LedgerError(HelixError):
    """A ledger folder could not be read, or does not verify."""

class ControlError(HelixError):
    """A command could not be sent to helixd, or was not answered in time."""

class Reader:
    """A registered reader of one ring, with its own cursor. Waits release
    the GIL and wake for signals (Ctrl-C) every 100 ms. Not for use from
    two threads at once (the second gets RuntimeError), nor in a process
    forked after it was made (HelixError: attach again there)."""

    @staticmethod
    def attach(
        name: str,
        namespace: Optional[str] = None,
        gating: bool = False,
        start: Union[Literal["newest", "oldest"], int, None] = None,
        reader_name: Optional[str] = None,
    ) -> Reader:
        """Attaches to ring ``name`` in ``namespace`` (default:
        ``HELIX_NAMESPACE``, else ``helix``) and registers. ``gating``
        holds a ``block`` ring's writer back until this reader has read a
        slot. ``start``: ``"newest"`` (default: the first frame published
        after joining), ``"oldest"`` (the oldest still in the ring) or a
        sequence number. ``reader_name`` is what tools show (default: the
        program's name). Raises ``AttachError``."""
    def read_batch(
        self, max_frames: int, timeout: Optional[float] = None
    ) -> Union[npt.NDArray[np.void], list[Frame]]:
        """Waits (at most ``timeout`` seconds; ``None``: until a frame
        comes) and returns up to ``max_frames`` consecutive frames of one
        sort: telemetry samples as a numpy array of ``SAMPLE_DTYPE`` filled
        in Rust (no Python object per frame), or frames of other kinds as
        ``(seq, kind, bytes)`` tuples; a batch ends before the first frame
        of the other sort, and a batch of tuples once it holds 64 MiB of
        payload (a larger frame comes alone), a batch of samples once it
        holds 64 MiB of them (1,677,721). On time-out: an empty array.
        Raises ``Overrun`` (exact: see its ``lost`` and ``resume_at``),
        ``DamagedError``, and ``ReplacedError`` when, waiting, it finds its
        ring removed or made again."""
    def read(self, timeout: Optional[float] = None) -> Optional[Frame]:
        """The next frame of any kind as ``(seq, kind, bytes)``, or None
        after ``timeout`` seconds. Raises as ``read_batch`` does."""
    def __iter__(self) -> Iterator[Frame]:
        """Every frame as ``(seq, kind, bytes)``, waiting for each."""
    def __next__(self) -> Frame: ...
    @property
    def lag(self) -> int:
        """Frames published and not yet read (DamagedError if a file of
        the ring has shrunk)."""
    @property
    def cursor(self) -> int:
        """The sequence this reader reads next."""
    @property
    def name(self) -> str: ...
    @property
    def namespace(self) -> str: ...
    def replaced(self) -> bool:
        """Whether the ring under this reader's name is no longer the one
        it reads: another ring made under the name since (helixd recreated
        it), or none there. Nothing more comes to this reader then: attach
        again. Ask it every so often while nothing comes."""
    def stats(self) -> dict[str, Union[int, bool, str]]:
        """cursor, lag, frames, overruns, lost, gating, demoted,
        writer_epoch, capacity, max_payload, policy, created_ns (the
        ring's creation time: another ring under the name has another),
        owner_uid (whose the ring's data file is: who can write its frames;
        a reader reads any ring it may open, so a script that acts on what
        it reads checks it) (DamagedError if a file of the ring has
        shrunk)."""
    def close(self) -> None:
        """Unregisters the reader; later calls raise RuntimeError."""
    def __enter__(self) -> Reader: ...
    def __exit__(self, *exc: object) -> None: ...

class Writer:
    """The writer of one ring (it holds the ring's writer lease). Not for
    use in a process forked after it was made (HelixError)."""

    @staticmethod
    def create(
        name: str,
        namespace: Optional[str] = None,
        capacity: int = 4096,
        max_payload: int = 64,
        policy: Literal["overwrite", "block"] = "overwrite",
        replace: bool = False,
        stall_timeout: float = 2.0,
    ) -> Writer:
        """Creates ring ``name`` (``replace=True``: replaces whatever is
        there, unless a live writer holds it) and takes its lease.
        ``capacity``: slots, a power of two. ``stall_timeout``: seconds a
        ``block`` ring's writer waits for a gating reader before demoting
        it. Raises ``AttachError`` (``LeaseError`` if a live writer holds
        the ring it would replace)."""
    @staticmethod
    def attach(name: str, namespace: Optional[str] = None) -> Writer:
        """Takes the lease of an existing ring (continuing its sequence).
        Raises ``LeaseError`` while a live process holds it."""
    def publish(self, payload: bytes, kind: int = 0) -> int:
        """Publishes one frame; returns its sequence number. On a ``block``
        ring it waits for gating readers (at most the ring's stall
        timeout, after which a stalled one is demoted), releasing the GIL
        and waking for signals (Ctrl-C) every 100 ms; so do
        ``publish_samples`` and ``publish_many``."""
    def publish_samples(self, samples: npt.ArrayLike) -> int:
        """Publishes each sample of a one-dimensional array (converted to
        ``SAMPLE_DTYPE``) as one telemetry frame; returns the last
        sequence. An array must have ``SAMPLE_DTYPE``'s fields, by name and
        in order (their widths may differ): any other raises ``TypeError``
        and publishes nothing. A sequence of tuples is taken in field
        order."""
    def publish_many(self, payloads: list[bytes], kind: int = 0) -> int:
        """Publishes each payload as one frame of ``kind``, in as few
        claims as the ring allows; returns the last sequence. A payload
        larger than the ring takes raises ``PublishError`` before any is
        published; a failure later in a long batch (the ring damaged) says
        in its message how many were. Interrupted (Ctrl-C) while waiting
        for room, the claims before the wait went out: ``next_seq`` says
        how far."""
    @property
    def next_seq(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def namespace(self) -> str: ...
    def close(self) -> None:
        """Releases the lease (the ring stays: ``helix.unlink`` removes it)."""
    def __enter__(self) -> Writer: ...
    def __exit__(self, *exc: object) -> None: ...

class Control:
    """A connection to helixd's control path (docs/abi.md §12): a lane of
    its ``control`` fan-in ring and a reader of ``control.acks``. Not for
    use in a process forked after it was made (HelixError)."""

    def __init__(self, namespace: Optional[str] = None, service_uid: Optional[int] = None) -> None:
        """Connects, waiting up to a second for a free lane (the GIL
        released); raises ``ControlError`` if helixd's control rings are
        not there (or not permitted), are owned by a user other than root,
        this process's and ``service_uid`` (default: the packaged services'
        user ``helix``, if the host has it: ``pwd.getpwnam(name).pw_uid``
        gives another's), or every lane stays taken."""
    def send(
        self,
        op: Literal["set", "release", "pause", "resume", "rate"],
        stream: int = 0,
        value: float = 0.0,
        source: str = "",
        timeout: float = 2.0,
        request: Optional[int] = None,
    ) -> dict[str, Union[int, str, bool, None]]:
        """Sends one command and waits for its answer: ``request``,
        ``verdict`` ("accepted", "rejected", or "unknown" for a code this
        package does not know), ``reason`` (None when accepted, or a code
        it does not know), ``op``, ``repeat``, ``forwarded``, ``log_seq``,
        ``ring_seq``, ``stream_seq``. Sending a ``request`` id again is
        answered with its first verdict, never applied twice. A command
        helixd would reject as malformed (a ``source`` that is not a ring
        name, ``request=0``, a value out of range) raises ``ValueError``
        and is not sent. Raises ``ControlError`` on time-out. Waits with
        the GIL released, and Ctrl-C interrupts them (KeyboardInterrupt)."""
    @property
    def uid(self) -> int: ...
    @property
    def lane(self) -> int: ...
    @property
    def last_request(self) -> Optional[int]:
        """The request id of the last command ``send`` began (None before
        the first). ``send(..., request=c.last_request)`` sends one
        interrupted (Ctrl-C) or timed out again: answered with its first
        verdict if helixd took it, applied now if it did not."""
    @property
    def name(self) -> str: ...
    @property
    def namespace(self) -> str: ...
    def close(self) -> None:
        """Gives the lane back (and leaves ``control.acks``); later calls
        raise ``RuntimeError``."""
    def __enter__(self) -> Control: ...
    def __exit__(self, *exc: object) -> None: ...

def unlink(name: str, namespace: Optional[str] = None, force: bool = False) -> None:
    """Removes a ring's files; processes attached keep their mappings.
    Raises ``LeaseError`` if a live process holds the ring's writer lease
    (helixd, or a ``Writer`` not closed), unless ``force=True``."""

def ledger_verify(dir: Union[str, PathLike[str]]) -> dict: ...
def ledger_export(
    dir: Union[str, PathLike[str]], ring: str, from_seq: int, to_seq: int, with_others: bool = True
) -> tuple[
    npt.NDArray[np.void],
    list[tuple[str, int, int, int, bytes]],
    int,
    list[int],
    int,
    Optional[tuple[int, int]],
    dict,
]: ...
