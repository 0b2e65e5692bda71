"""The arguments of a log batch checked one by one, to name the entry that breaks the contract."""

from __future__ import annotations

from typing import Final, NoReturn

from segwal.types import Entry

__all__ = ["reject_batch", "MAX_PAYLOAD"]

#: The largest total payload of one batch: a frame must fit a 4 GiB segment.
MAX_PAYLOAD: Final = (1 << 32) - 1 - 4096


def reject_batch(batch: list[Entry]) -> NoReturn:
    """Find the first contract violation in ``batch`` and raise it, naming the entry.

    The slow path of ``WalEngine.persist_entries``: called only once its fast
    checks have failed.  O(len(batch)).
    """
    first = None
    prev_term = None
    for pos, e in enumerate(batch):
        if type(e) is not Entry:
            raise TypeError(f"entries[{pos}] is {type(e).__name__}, expected segwal Entry")
        i, t, p = e
        if type(i) is not int:
            raise TypeError(f"entries[{pos}].index must be an int, got {i!r}")
        if not 1 <= i < 1 << 64:
            raise ValueError(f"entry {i}: log indexes run from 1 to 2**64-1")
        if first is None:
            first = i
        elif i != first + pos:
            raise ValueError(
                f"entry {i}: indexes must be contiguous and ascending (expected {first + pos} at position {pos})"
            )
        if type(t) is not int:
            raise TypeError(f"entry {i}: term must be an int, got {t!r}")
        if not 0 <= t < 1 << 64:
            raise ValueError(f"entry {i}: term {t} is not in 0..2**64-1")
        if prev_term is not None and t < prev_term:
            raise ValueError(f"entry {i}: term {t} is lower than the term {prev_term} before it")
        prev_term = t
        if type(p) is not bytes:
            raise TypeError(f"entry {i}: payload must be bytes, got {type(p).__name__}")
        if len(p) > MAX_PAYLOAD:
            raise ValueError(f"entry {i}: payload of {len(p)} bytes is too large")
    raise ValueError("the batch's payloads together are too large for one segment")

