"""Reading entries out of a segment buffer: pure functions, checksums always verified.

A slot offset comes from the index; everything else comes from the buffer.
A slot whose check value does not match its payload, index and term means the
segment is damaged or the index disagrees with it: :class:`CorruptionError`
with the file, the offset and the log index.
"""

from __future__ import annotations

from itertools import repeat
from typing import cast

import numpy as np
import xxhash

from segwal.errors import CorruptionError
from segwal.types import Entry
from segwal.wal.format import SLOT, SLOT_DTYPE, SLOT_SIZE, Buf

__all__ = ["read_entry", "read_entries", "read_batch_entries", "read_term"]

_xxh3 = xxhash.xxh3_64_intdigest
_unpack_slot = SLOT.unpack_from
_new = tuple.__new__
_MAX_RUNS = 8
_SLOT_BYTES = np.arange(SLOT_SIZE, dtype=np.int64)


def read_term(buf: Buf, slot_off: int, index: int, path: str) -> int:
    """The term stored in the slot at ``slot_off`` (not verified against the payload). O(1)."""
    if slot_off + SLOT_SIZE > len(buf):
        raise CorruptionError("index points past the end of the segment", path=path, offset=slot_off, index=index)
    return _unpack_slot(buf, slot_off)[0]  # type: ignore[no-any-return]


def read_entry(buf: Buf, slot_off: int, index: int, path: str) -> Entry:
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
    if _xxh3(payload, index) ^ term != check:
        raise CorruptionError("entry checksum mismatch", path=path, offset=slot_off, index=index)
    return _new(Entry, (index, term, bytes(payload)))


def read_entries(buf: Buf, slot_offsets: np.ndarray, first_index: int, path: str) -> list[Entry]:
    """Decode and verify consecutive entries ``first_index ..`` whose slots are at
    ``slot_offsets``.  Runs of adjacent slots (one batch) are decoded with one
    numpy view; every payload is checked.  O(total payload bytes).
    """
    n = len(slot_offsets)
    if n == 0:
        return []
    size = len(buf)
    o0 = int(slot_offsets[0])
    if int(slot_offsets[-1]) - o0 == SLOT_SIZE * (n - 1) and o0 + SLOT_SIZE * n <= size:
        # One batch (the common case): a single structured view, no run analysis.
        t = np.frombuffer(buf, dtype=SLOT_DTYPE, count=n, offset=o0)
    else:
        t = _gather_slots(buf, slot_offsets.astype(np.int64), first_index, path)
    terms = t["term"]
    pstart = t["pstart"]
    ps = pstart.tolist()
    pe = (pstart.astype(np.int64) + t["plen"]).tolist()
    # A payload that runs past the end comes back short and fails its check.
    payloads = cast("list[bytes]", list(map(buf.__getitem__, map(slice, ps, pe))))
    if payloads and not isinstance(payloads[0], bytes):
        payloads = list(map(bytes, payloads))
    expect = (t["check"] ^ terms).tolist()
    if list(map(_xxh3, payloads, range(first_index, first_index + n))) != expect:
        for i, p in enumerate(payloads):
            if _xxh3(p, first_index + i) != expect[i]:
                off = int(slot_offsets[i])
                if ps[i] + len(p) != pe[i]:
                    raise CorruptionError(
                        "entry payload runs past the end of the segment", path=path, offset=off, index=first_index + i
                    )
                raise CorruptionError("entry checksum mismatch", path=path, offset=off, index=first_index + i)
    return list(map(_new, repeat(Entry), zip(range(first_index, first_index + n), terms.tolist(), payloads)))


def _gather_slots(buf: Buf, offs: np.ndarray, first_index: int, path: str) -> np.ndarray:
    """The slots at ``offs`` (several batches) as one structured array.

    Runs of adjacent slots are one batch each: a structured view per run; many
    short runs (small batches) are gathered in one fancy-indexing pass instead.
    """
    n = len(offs)
    size = len(buf)
    if int(offs.max()) + SLOT_SIZE > size or int(offs.min()) < 0:
        bad = int(np.flatnonzero((offs + SLOT_SIZE > size) | (offs < 0))[0])
        raise CorruptionError(
            "index points past the end of the segment", path=path, offset=int(offs[bad]), index=first_index + bad
        )
    breaks = np.flatnonzero(np.diff(offs) != SLOT_SIZE) + 1
    if len(breaks) >= _MAX_RUNS:
        rows = np.frombuffer(buf, dtype=np.uint8)[offs[:, None] + _SLOT_BYTES]
        return rows.view(SLOT_DTYPE).reshape(n)
    bounds = [0, *breaks.tolist(), n]
    parts = [
        np.frombuffer(buf, dtype=SLOT_DTYPE, count=b - a, offset=int(offs[a])) for a, b in zip(bounds, bounds[1:])
    ]
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def read_batch_entries(
    buf: Buf, hdr_off: int, pos: int, n: int, first_index: int, path: str
) -> list[Entry] | None:
    """Entries ``pos .. pos+n-1`` of the ENTRIES frame at ``hdr_off``, verified by one
    CRC32C over the frame's body instead of a hash per entry.

    The cheaper check for a range covering at least a quarter of a batch (``None``
    otherwise): the body CRC covers
    every slot and payload.  Returns ``None`` (the caller then checks entry by
    entry, which names the exact damaged entry) when there is no valid frame
    header at ``hdr_off`` holding ``first_index`` at ``pos``, or when the body CRC
    fails.  O(frame bytes) for the CRC, O(n) Python work.
    """
    from segwal.wal.format import FRAME_HEADER_SIZE, KIND_ENTRIES, crc32c, decode_frame_header

    h = decode_frame_header(buf, hdr_off)
    end = hdr_off + h.frame_len if h is not None else 0
    if (
        h is None
        or h.kind != KIND_ENTRIES
        or h.first_index + pos != first_index
        or pos + n > h.count
        or 4 * n < h.count  # a small part of a big batch: hashing the entries is cheaper
        or end > len(buf)
    ):
        return None
    body = memoryview(buf)[hdr_off + FRAME_HEADER_SIZE : end]
    if crc32c(body) != h.body_crc:
        return None
    t = np.frombuffer(buf, dtype=SLOT_DTYPE, count=n, offset=hdr_off + FRAME_HEADER_SIZE + SLOT_SIZE * pos)
    pstart = t["pstart"]
    pend = (pstart.astype(np.int64) + t["plen"]).tolist()
    payloads = list(map(buf.__getitem__, map(slice, pstart.tolist(), pend)))
    if payloads and not isinstance(payloads[0], bytes):
        payloads = list(map(bytes, payloads))
    return list(map(_new, repeat(Entry), zip(range(first_index, first_index + n), t["term"].tolist(), payloads)))
