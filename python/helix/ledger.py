"""The ledger from Python: ``verify(dir)`` checks a ledger folder as
``helix-ledger verify`` does, ``export(dir, ring, from_seq, to_seq)``
returns a ring's telemetry records as a numpy array (``export_dataframe``:
a pandas DataFrame, if pandas is installed)."""

import os
import warnings
from typing import Union

import numpy as np

from ._helix import EXPORT_DTYPE, HelixError, LedgerError, ledger_export, ledger_verify

__all__ = [
    "EXPORT_DTYPE",
    "IncarnationWarning",
    "LedgerError",
    "LossWarning",
    "PrunedWarning",
    "TornTailWarning",
    "verify",
    "export",
    "export_dataframe",
]

_LAST = 2**63 - 1


class TornTailWarning(UserWarning):
    """``export`` read past a torn tail at the end of the last segment:
    bytes of a ledger still writing, or stopped mid-write, which the
    recorder cuts off when it starts (``verify`` gives their count as
    ``partial_tail``). What they held is not in what ``export`` returns."""


class IncarnationWarning(UserWarning):
    """``export`` took records of more than one incarnation of the ring:
    it was removed and created again in the range, and its sequence
    started again, so ``ring_seq`` goes back (and may repeat) where one
    ends and the next begins. The warning names each incarnation's
    ``created_ns``. ``with_others=True`` also returns the RING records in
    the range (their payload begins with the incarnation's ``created_ns``,
    little-endian); a declaration's sequence is the ring's next one when
    it was declared, so from ``from_seq=1`` each incarnation's declaration
    is among them, and a range that starts later may hold none."""


class LossWarning(UserWarning):
    """``export`` (without ``with_others``) took a range in which the ledger
    recorded losses: GAP records, sequences overwritten before they were
    read (or a frame too large for a record). The warning says how many
    sequences of the range were lost; they are missing from ``ring_seq``,
    and ``with_others=True`` returns the GAP records themselves."""


class PrunedWarning(UserWarning):
    """``export`` took a range that may have begun in segments retention
    pruned (deleted) from the ledger: what they held was not exported. The
    warning says which segments, and where what is left of the range
    begins."""


def verify(dir: Union[str, "os.PathLike[str]"]) -> dict:
    """Checks every segment, block and chain hash of the ledger in ``dir``.

    Returns a dict: ``segments``, ``records``, ``blocks``, ``hash`` (hex),
    ``partial_tail``, ``pruned`` and ``rings`` (per ring: ``name``,
    ``frames``, ``gaps``, ``lost``, ``next_seq``). Raises ``LedgerError``
    with the library's message (the segment and record) if it does not
    verify."""
    return ledger_verify(os.fspath(dir))


def export(
    dir: Union[str, "os.PathLike[str]"], ring: str, from_seq: int = 1, to_seq: int = _LAST, *, with_others: bool = False
) -> Union[np.ndarray, tuple]:
    """Ring ``ring``'s records with a sequence in ``from_seq..=to_seq``.

    Returns a numpy array of ``EXPORT_DTYPE``: ``ring_seq`` and ``recv_ns``
    (the ring sequence and when the ledger received the frame), then the
    telemetry fields of ``SAMPLE_DTYPE``. Losses the ledger recorded (GAP
    records) show as missing ``ring_seq`` values. Records that are not
    telemetry samples (GAPs, ring declarations, frames of other kinds) are
    returned beside the array, as ``(array, [(type, seq, last, kind,
    bytes)])``, with ``with_others=True``; without it, a frame of another
    kind in the range raises ``HelixError`` rather than being left out.
    The whole ledger is verified on the way: ``LedgerError`` if it fails;
    a torn tail read past at its end is said with a ``TornTailWarning``,
    records of more than one incarnation of the ring (created again in the
    range: its sequence started again) with an ``IncarnationWarning``,
    losses in the range (without ``with_others``) with a ``LossWarning``,
    and a range that may have begun in segments retention pruned with a
    ``PrunedWarning``. A ring the ledger does not record raises
    ``LedgerError`` naming those it does; ``from_seq`` after ``to_seq``,
    ``ValueError``."""
    if from_seq > to_seq:
        raise ValueError(f"from_seq {from_seq} is after to_seq {to_seq}")
    samples, others, torn, incarnations, frames, first, notes = ledger_export(
        os.fspath(dir), ring, from_seq, to_seq, with_others
    )
    # Found by review: a misspelt ring, a range wholly lost or pruned,
    # gave an empty array, which reads as "nothing recorded there".
    if ring not in notes["rings"]:
        raise LedgerError(
            f"ring {ring!r} is not in the ledger in {os.fspath(dir)} (it records {', '.join(notes['rings'])})"
        )
    start = max(from_seq, 1)
    # (A range past anything recorded lost nothing to pruning.)
    past_the_end = notes["next_seq"] is not None and start >= notes["next_seq"]
    if notes["pruned"] and not past_the_end and (notes["first_seq"] is None or notes["first_seq"] > start):
        segment, records = notes["pruned"]
        left = "none of it is left" if notes["first_seq"] is None else f"what is left begins at {notes['first_seq']}"
        warnings.warn(
            f"retention pruned this ledger's segments 1 to {segment} ({records} records): what they held of ring "
            f"{ring!r} from sequence {start} was not exported; {left}",
            PrunedWarning,
            stacklevel=2,
        )
    if notes["gaps"] and not with_others:
        gaps = f"{notes['gaps']} GAP record" + ("s" if notes["gaps"] != 1 else "")
        warnings.warn(
            f"ring {ring!r} lost {notes['lost']} sequences of {from_seq}..={to_seq} ({gaps}): "
            "they are missing from ring_seq (with_others=True returns the GAP records)",
            LossWarning,
            stacklevel=2,
        )
    if len(incarnations) > 1:
        warnings.warn(
            f"ring {ring!r} was created again: the records exported are of {len(incarnations)} incarnations "
            f"(created_ns {', '.join(map(str, incarnations))}), and ring_seq starts again at each",
            IncarnationWarning,
            stacklevel=2,
        )
    if torn:
        warnings.warn(
            f"{os.fspath(dir)}: the last segment ends in {torn} bytes of a torn tail (a ledger still writing, "
            "or stopped mid-write), not exported: the recorder cuts them off when it starts",
            TornTailWarning,
            stacklevel=2,
        )
    if with_others:
        return samples, others
    if frames:
        raise HelixError(
            f"ring {ring!r} has {frames} frames of other kinds than telemetry samples in "
            f"{from_seq}..={to_seq} (the first: seq {first[0]}, kind {first[1]}); "
            "export(..., with_others=True) returns them"
        )
    return samples


def export_dataframe(dir: Union[str, "os.PathLike[str]"], ring: str, from_seq: int = 1, to_seq: int = _LAST):
    """``export`` as a pandas DataFrame (one column per field). Needs
    pandas; the rest of the package does not."""
    try:
        import pandas
    except ImportError as e:
        raise ImportError("helix.ledger.export_dataframe needs pandas (pip install pandas)") from e
    return pandas.DataFrame(export(dir, ring, from_seq, to_seq))
