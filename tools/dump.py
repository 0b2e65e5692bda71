"""``segwal dump``: a directory's log entries as JSON lines."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Literal

from segwal.engine import WalEngine

__all__ = ["dump_lines"]

_CHUNK = 4096


def dump_lines(path: str, lo: int | None = None, hi: int | None = None,
               encoding: Literal["base64", "hex"] = "base64") -> Iterator[str]:
    """One JSON object per entry of ``path`` from ``lo`` to ``hi`` (inclusive, clipped to the log).

    Opens the directory read-only and changes nothing; every entry's checksum
    is verified as it is read.  Memory: one chunk of 4,096 entries at a time.
    """
    if encoding not in ("base64", "hex"):
        raise ValueError(f"encoding must be 'base64' or 'hex', got {encoding!r}")

    def enc(b: bytes) -> str:
        return base64.b64encode(b).decode() if encoding == "base64" else b.hex()

    with WalEngine(path, readonly=True) as eng:
        first, last = eng.first_index(), eng.last_index()
        i = first if lo is None else max(lo, first)
        end = last if hi is None else min(hi, last)
        while i <= end:
            for e in eng.get_entries_range(i, min(end, i + _CHUNK - 1)):
                yield json.dumps({"index": e.index, "term": e.term, "payload": enc(e.payload)})
            i += _CHUNK
