"""Offset indexes: log index -> slot offset, in O(1).

Two kinds, one per segment state:

* :class:`TailIndex` for the segment being written: an in-memory u32 array that
  grows by slices, checkpointed to the segment's index file now and then, so a
  reopen reads the checkpoint and scans only the frames written after it.
* :class:`SealedIndex` for a sealed segment: the index file mapped read-only
  with ``mmap``; nothing is read until the segment is first used, and then only
  the pages touched (plus one pass to verify the checksum, once).

Both expose ``offset(pos)`` (``pos = index - base``) through a ``memoryview``
cast to ``'I'``, which returns a plain ``int`` without numpy scalar overhead.
"""

from __future__ import annotations

import mmap
from collections.abc import Sequence

import numpy as np

from segwal.errors import CorruptionError
from segwal.fs import File, FileSystem
from segwal.index.format import (
    INDEX_HEADER_SIZE,
    OFFSETS_START,
    SLOT_B_OFFSET,
    IndexHeader,
    decode_index_header,
    encode_index_header,
    offsets_hash,
)

__all__ = ["TailIndex", "SealedIndex", "read_index_header", "write_sealed_index"]


def read_index_headers(f: File) -> list[IndexHeader]:
    """The valid header slots of an index file, newest first.  Reads 2 x 80 bytes."""
    found = []
    for off in (0, SLOT_B_OFFSET):
        h = decode_index_header(f.pread(INDEX_HEADER_SIZE, off), f.path)
        if h is not None:
            found.append(h)
    return sorted(found, key=lambda h: h.ckpt_seq, reverse=True)


def read_index_header(f: File) -> IndexHeader | None:
    """The newer valid header slot of an index file, or ``None``.  Reads 2 x 80 bytes."""
    hs = read_index_headers(f)
    return hs[0] if hs else None


class TailIndex:
    """The growing offset array of the tail segment.

    Not thread-safe for writers; readers may call :meth:`offset` concurrently
    with appends (each element store is atomic under the GIL, and readers only
    ask for positions already published).
    """

    __slots__ = ("base", "count", "_arr", "view", "_disk_count", "_dirty_from", "_ckpt_seq", "_slot")

    def __init__(self, base: int, offsets: np.ndarray | None = None, ckpt_seq: int = 0) -> None:
        self.base = base
        n = 0 if offsets is None else len(offsets)
        self._arr = np.zeros(max(1024, 2 * n), dtype=np.uint32)
        if offsets is not None and n:
            self._arr[:n] = offsets
        self.view = self._arr.data.cast("B").cast("I")
        self.count = n
        self._disk_count = n  # offsets[0:_disk_count] are on disk as checkpointed
        self._dirty_from = n
        self._ckpt_seq = ckpt_seq
        self._slot = ckpt_seq & 1  # slot holding the latest checkpoint

    def offset(self, pos: int) -> int:
        """Slot offset of entry ``base + pos``.  O(1)."""
        return self.view[pos]

    def array(self) -> np.ndarray:
        """The valid offsets (a view; do not keep across writes)."""
        return self._arr[: self.count]

    def set_from(self, pos: int, slot_offsets: Sequence[int] | np.ndarray) -> None:
        """Entries from ``base + pos`` on now live at ``slot_offsets``; later ones are dropped.

        O(len(slot_offsets)) amortised.
        """
        end = pos + len(slot_offsets)
        if end > len(self._arr):
            grown = np.zeros(max(end, 2 * len(self._arr)), dtype=np.uint32)
            grown[: self.count] = self._arr[: self.count]
            self._arr = grown
            self.view = grown.data.cast("B").cast("I")
        self._arr[pos:end] = slot_offsets
        self.count = end
        if pos < self._dirty_from:
            self._dirty_from = pos

    def set_one(self, pos: int, slot_offset: int) -> None:
        """Entry ``base + pos`` now lives at ``slot_offset``; later ones are dropped.

        :meth:`set_from` for one entry, without the slice.  O(1) amortised.
        """
        if pos >= len(self._arr):
            grown = np.zeros(max(pos + 1, 2 * len(self._arr)), dtype=np.uint32)
            grown[: self.count] = self._arr[: self.count]
            self._arr = grown
            self.view = grown.data.cast("B").cast("I")
        self._arr[pos] = slot_offset
        self.count = pos + 1
        if pos < self._dirty_from:
            self._dirty_from = pos

    def truncate(self, count: int) -> None:
        """Keep only the first ``count`` entries.  O(1)."""
        if count < self.count:
            self.count = count
            if count < self._dirty_from:
                self._dirty_from = count

    def checkpoint(self, f: File, *, seq: int, uid: int, covered_end: int, chain_crc: int, sealed: bool) -> None:
        """Write the offsets changed since the last checkpoint and a new header
        into the other header slot, then fdatasync.  Durable on return.

        A crash in the middle leaves the previous slot valid; if the offsets it
        covers were rewritten meanwhile, its checksum fails and the index is
        rebuilt from the segment (slower, never wrong).
        """
        lo = min(self._dirty_from, self.count)
        if self.count > lo:
            f.pwrite(self._arr[lo : self.count].data.cast("B"), OFFSETS_START + 4 * lo)
        data = self._arr[: self.count].data.cast("B")
        self._ckpt_seq += 1
        h = IndexHeader(
            sealed, seq, uid, self.base, self.count, self._ckpt_seq, covered_end, chain_crc, offsets_hash(data)
        )
        slot = self._ckpt_seq & 1
        f.pwrite(encode_index_header(h), SLOT_B_OFFSET if slot else 0)
        f.fdatasync()
        self._slot = slot
        self._disk_count = self.count
        self._dirty_from = self.count

    @classmethod
    def load(cls, f: File, *, seq: int, uid: int, base: int) -> tuple[TailIndex, IndexHeader] | None:
        """Load the latest valid checkpoint of ``f``; ``None`` if there is none that
        matches this segment and its checksum.  Reads 4 bytes per covered entry."""
        # The newest slot first; if the offsets it covers fail their hash (a crash
        # while a checkpoint rewrote them), the older slot may still hold.
        for h in read_index_headers(f):
            if (h.seq, h.uid, h.base) != (seq, uid, base):
                continue
            data = f.pread(4 * h.count, OFFSETS_START)
            if len(data) != 4 * h.count or offsets_hash(data) != h.data_hash:
                continue
            arr = np.frombuffer(data, dtype="<u4").copy()
            return cls(base, arr, h.ckpt_seq), h
        return None


def write_sealed_index(
    fs: FileSystem, path: str, *, seq: int, uid: int, base: int, offsets: np.ndarray, covered_end: int, chain_crc: int
) -> None:
    """Write a complete, sealed index file for a segment and fdatasync it.

    Overwrites in place: a torn result fails its checksum and is rebuilt.
    """
    f = fs.open(path, create=True)
    try:
        data = np.ascontiguousarray(offsets, dtype="<u4")
        raw = data.data.cast("B")
        # ckpt_seq 2 lives in slot A (slot = ckpt_seq & 1), as tail checkpoints do, so
        # a later checkpoint of this file (if the seal never committed) goes to B.
        h = IndexHeader(True, seq, uid, base, len(data), 2, covered_end, chain_crc, offsets_hash(raw))
        hb = encode_index_header(h)
        f.truncate(0)
        f.pwrite(hb + bytes(SLOT_B_OFFSET - len(hb)) + bytes(OFFSETS_START - SLOT_B_OFFSET), 0)
        if len(data):
            f.pwrite(raw, OFFSETS_START)
        f.fdatasync()
    finally:
        f.close()


class SealedIndex:
    """A sealed segment's index, mapped read-only.  Verified once, on first use."""

    __slots__ = ("path", "base", "count", "_map", "view")

    def __init__(self, path: str, base: int, count: int, mapping: mmap.mmap) -> None:
        self.path = path
        self.base = base
        self.count = count
        self._map = mapping
        self.view = memoryview(mapping)[OFFSETS_START : OFFSETS_START + 4 * count].cast("I")

    def offset(self, pos: int) -> int:
        """Slot offset of entry ``base + pos``.  O(1)."""
        return self.view[pos]

    def array(self) -> np.ndarray:
        """The offsets as a read-only numpy view.  O(1)."""
        return np.frombuffer(self.view, dtype=np.uint32)

    @classmethod
    def open(cls, fs: FileSystem, path: str, *, seq: int, uid: int, base: int, count: int) -> SealedIndex | None:
        """Map and verify the index file of a sealed segment holding at least
        ``count`` entries.  ``None`` if it is missing or fails its checksums (the
        caller rebuilds it).  O(count) once: one xxh3 pass.

        Raises:
            CorruptionError: the index is valid but holds fewer entries than
                the manifest records for the segment.

        Returns an index whose ``count`` is exactly ``count`` (entries beyond it
        were cut by a later truncation and are not served).
        """
        if not fs.exists(path):
            return None
        f = fs.open(path, readonly=True)
        try:
            h = read_index_header(f)
            if h is None or not h.sealed or (h.seq, h.uid, h.base) != (seq, uid, base):
                return None
            if h.count < count:
                raise CorruptionError(
                    f"index holds {h.count} entries but the manifest says the segment holds {count}",
                    path=path,
                    offset=32,
                    index=base + h.count,
                )
            if f.size() < OFFSETS_START + 4 * h.count:
                return None
            m = f.map()
        finally:
            f.close()
        if m is None:
            return None
        if offsets_hash(memoryview(m)[OFFSETS_START : OFFSETS_START + 4 * h.count]) != h.data_hash:
            return None
        return cls(path, base, count, m)

    def with_count(self, count: int) -> SealedIndex:
        """The same mapping, serving only the first ``count`` entries."""
        return SealedIndex(self.path, self.base, count, self._map)

