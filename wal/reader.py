"""Reading entries out of a segment buffer: pure functions, checksums always verified.

A slot offset comes from the index; everything else comes from the buffer.
A slot whose check value does not match its payload, index and term means the
segment is damaged or the index disagrees with it: :class:`CorruptionError`
with the file, the offset and the log index.
"""

from __future__ import annotations

from itertools import repeat
from typing import Final

import numpy as np
import xxhash

from segwal.errors import CorruptionError
from segwal.wal.format import _M64, K_INDEX, K_TERM, SLOT, SLOT_DTYPE, SLOT_SIZE
from segwal.wal.types import Entry

__all__ = ["read_entry", "read_entries", "read_term"]

_xxh3 = xxhash.xxh3_64_intdigest
_unpack_slot = SLOT.unpack_from
_new = tuple.__new__
_U64_INDEX: Final = np.uint64(K_INDEX)
_U64_TERM: Final = np.uint64(K_TERM)


def read_term(buf: bytes | memoryview, slot_off: int, index: int, path: str) -> int:
    """The term stored in the slot at ``slot_off`` (not verified against the payload). O(1)."""
    if slot_off + SLOT_SIZE > len(buf):
        raise CorruptionError("index points past the end of the segment", path=path, offset=slot_off, index=index)
    return _unpack_slot(buf, slot_off)[0]  # type: ignore[no-any-return]


def read_entry(buf: bytes | memoryview, slot_off: int, index: int, path: str) -> Entry:
    """Decode and verify the entry whose slot is at ``slot_off``.  O(len(payload)).

    Raises:
        CorruptionError: the slot or payload fails its check, or points past the file.
    """
    try:
        term, pstart, plen, check = _unpack_slot(buf, slot_off)
    except Exception:  # struct.error: slot past the end of the buffer
        raise CorruptionError(
            "index points past the end of the segment", path=path, offset=slot_off, index=index
        ) from None
    end = pstart + plen
    if end > len(buf):
        raise CorruptionError("entry payload runs past the end of the segment", path=path, offset=slot_off, index=index)
    payload = buf[pstart:end]
    if _xxh3(payload) ^ ((index * K_INDEX) & _M64) ^ ((term * K_TERM) & _M64) != check:
        raise CorruptionError("entry checksum mismatch", path=path, offset=slot_off, index=index)
    return _new(Entry, (index, term, bytes(payload)))  # type: ignore[no-any-return]


def read_entries(buf: bytes | memoryview, slot_offsets: np.ndarray, first_index: int, path: str) -> list[Entry]:
    """Decode and verify consecutive entries ``first_index ..`` whose slots are at
    ``slot_offsets``.  Runs of adjacent slots (one batch) are decoded with one
    numpy view; every payload is checked.  O(total payload bytes).
    """
    n = len(slot_offsets)
    if n == 0:
        return []
    offs = slot_offsets.astype(np.int64)
    size = len(buf)
    if int(offs.max()) + SLOT_SIZE > size:
        bad = int(np.flatnonzero(offs + SLOT_SIZE > size)[0])
        raise CorruptionError(
            "index points past the end of the segment", path=path, offset=int(offs[bad]), index=first_index + bad
        )
    # Split into runs of adjacent slots: one structured view per run.
    breaks = np.flatnonzero(np.diff(offs) != SLOT_SIZE) + 1
    starts = [0, *breaks.tolist()]
    ends = [*breaks.tolist(), n]
    terms_l: list[np.ndarray] = []
    pstart_l: list[np.ndarray] = []
    plen_l: list[np.ndarray] = []
    check_l: list[np.ndarray] = []
    for a, b in zip(starts, ends):
        t = np.frombuffer(buf, dtype=SLOT_DTYPE, count=b - a, offset=int(offs[a]))
        terms_l.append(t["term"])
        pstart_l.append(t["pstart"])
        plen_l.append(t["plen"])
        check_l.append(t["check"])
    if len(terms_l) == 1:
        terms, pstart, plen, check = terms_l[0], pstart_l[0], plen_l[0], check_l[0]
    else:
        terms = np.concatenate(terms_l)
        pstart = np.concatenate(pstart_l)
        plen = np.concatenate(plen_l)
        check = np.concatenate(check_l)
    pend = pstart.astype(np.int64) + plen
    if n and int(pend.max()) > size:
        bad = int(np.flatnonzero(pend > size)[0])
        raise CorruptionError(
            "entry payload runs past the end of the segment",
            path=path,
            offset=int(offs[bad]),
            index=first_index + bad,
        )
    payloads = list(map(buf.__getitem__, map(slice, pstart.tolist(), pend.tolist())))
    if not isinstance(payloads[0], bytes):
        payloads = list(map(bytes, payloads))
    hashes = np.fromiter(map(_xxh3, payloads), dtype=np.uint64, count=n)
    idx = np.arange(first_index, first_index + n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        expect = hashes ^ (idx * _U64_INDEX) ^ (terms * _U64_TERM)
    bad_mask = expect != check
    if bad_mask.any():
        bad = int(np.flatnonzero(bad_mask)[0])
        raise CorruptionError("entry checksum mismatch", path=path, offset=int(offs[bad]), index=first_index + bad)
    return list(map(_new, repeat(Entry), zip(range(first_index, first_index + n), terms.tolist(), payloads)))
