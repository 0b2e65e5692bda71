"""``segwal dump``: a directory's log entries as JSON lines."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Literal

from segwal.engine import StaleViewError, WalEngine

__all__ = ["dump_lines"]

_CHUNK = 4096
_PIN_TRIES = 20


def dump_lines(path: str, lo: int | None = None, hi: int | None = None,
               encoding: Literal["base64", "hex"] = "base64") -> Iterator[str]:
    """One JSON object per entry of ``path`` from ``lo`` to ``hi`` (inclusive, clipped to the log).

    Opens the directory read-only and changes nothing, without a lock: on a
    running node it dumps one consistent view (its segments held open from the
    start, so a purge cannot cut it short).  Every entry's checksum is verified
    as it is read.  Memory: one chunk of 4,096 entries at a time.
    """
    if encoding not in ("base64", "hex"):
        raise ValueError(f"encoding must be 'base64' or 'hex', got {encoding!r}")

    def enc(b: bytes) -> str:
        return base64.b64encode(b).decode() if encoding == "base64" else b.hex()

    with WalEngine(path, readonly=True) as eng:
        for _ in range(_PIN_TRIES):  # a running node may purge under the dump: hold the whole view first
            try:
                eng.pin()
                break
            except StaleViewError:
                eng.refresh()
        else:
            raise StaleViewError(f"{path}: the node purged segments under every view it was read at; try again")
        first, last = eng.first_index(), eng.last_index()
        i = first if lo is None else max(lo, first)
        end = last if hi is None else min(hi, last)
        while i <= end:
            for e in eng.get_entries_range(i, min(end, i + _CHUNK - 1)):
                yield json.dumps({"index": e.index, "term": e.term, "payload": enc(e.payload)})
            i += _CHUNK
