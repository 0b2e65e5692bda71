"""The readers' view of the segmented log: the log's state, and reads that never lock.

Readers read an immutable :class:`_View` that the writer replaces after each
change (segment maps are never closed under them).  A read that fails while the
writer is changing the log (an offset index being rewritten under a range read,
a segment file closed after a purge) is made again on the newer view; only a
failure that persists once no writer is at work is reported (:meth:`LogReader._settled`).  :class:`LogReader` holds the
state the recovery and writer mixins share; ``segwal.engine.log`` assembles them.
"""

from __future__ import annotations

import struct
import threading
import time
from bisect import bisect_right
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import xxhash

from segwal.engine.manifest import Manifest
from segwal.engine.segments import LiveSegment, SegmentInfo
from segwal.errors import CorruptionError, SegwalError
from segwal.fs import FileSystem
from segwal.index.offsets import SealedIndex, TailIndex
from segwal.types import Entry
from segwal.wal.format import FRAME_HEADER_SIZE, SLOT, SLOT_SIZE, Buf
from segwal.wal.prealloc import Preallocator
from segwal.wal.reader import read_batch_entries, read_entries, read_term
from segwal.wal.segment import SegmentFile

__all__ = ["LogReader"]

_unpack_slot = SLOT.unpack_from
_xxh3 = xxhash.xxh3_64_intdigest
_new = tuple.__new__


def _batch_offset(all_offs: np.ndarray, pos: int, limit: int) -> int | None:
    """How many slots of its batch precede position ``pos`` (slots of one batch are
    24 bytes apart, batches never touch), or ``None`` when that is more than
    ``limit``.  O(limit)."""
    lo = max(0, pos - limit - 1)
    d = np.flatnonzero(np.diff(all_offs[lo : pos + 1].astype(np.int64)) != SLOT_SIZE)
    if len(d):
        return pos - (lo + int(d[-1]) + 1)
    return pos if lo == 0 else None


def _read_range(
    buf: Buf, all_offs: np.ndarray, base: int, start: int, stop: int, path: str
) -> list[Entry]:
    """Entries ``start..stop`` of one segment (``all_offs``: its whole offset index).

    Each batch the range covers is verified by its frame's body CRC when the
    range takes at least a quarter of it (one CRC32C pass instead of a hash per
    entry); otherwise, or if that check does not hold, entry by entry.
    """
    lo, hi = start - base, stop - base
    offs = all_offs[lo : hi + 1]
    n = hi - lo + 1
    if n < 32:
        return read_entries(buf, offs, start, path)
    o = offs.astype(np.int64)
    breaks = np.flatnonzero(np.diff(o) != SLOT_SIZE) + 1
    bounds = [0, *breaks.tolist(), n]
    out: list[Entry] = []
    for a, b in zip(bounds, bounds[1:]):
        # A run of adjacent slots lies in one batch; only the range's first run
        # can start inside its batch (a later batch's live entries are a prefix).
        # The batch CRC pays only if the range covers a quarter of the batch or
        # more, so its start is looked for at most 3 x the run's length back.
        j = _batch_offset(all_offs, lo, 3 * (b - a)) if a == 0 else 0
        got = None
        if j is not None:
            got = read_batch_entries(buf, int(o[a]) - SLOT_SIZE * j - FRAME_HEADER_SIZE, j, b - a, start + a, path)
        out.extend(got if got is not None else read_entries(buf, offs[a:b], start + a, path))
    return out


class _View(NamedTuple):
    """What readers see: entries ``lo..hi`` live in ``segs`` (bases in ``bases``).

    Immutable and replaced whole by the writer after each change (a NamedTuple:
    cheap to build, as every append builds one)."""

    lo: int
    hi: int
    segs: tuple[LiveSegment, ...]
    bases: list[int]


class LogReader:
    """The segmented log's state and its reads (the base of ``SegmentedLog``).

    Reads are concurrent with each other and with the one writer: they take
    what they need from one :class:`_View`.  Opening a sealed segment on its
    first read is recovery's (:meth:`_load`).
    """

    def __init__(
        self,
        fs: FileSystem,
        directory: str,
        manifest: Manifest,
        *,
        segment_size: int,
        sync_always: bool,
        readonly: bool,
        prealloc: int,
        preallocator: Preallocator | None = None,
    ) -> None:
        self.fs = fs
        self.preallocator = preallocator
        self.dir = directory
        self.manifest = manifest
        self.segment_size = segment_size
        self.sync_always = sync_always
        self.readonly = readonly
        self.prealloc = prealloc
        self.poisoned: SegwalError | None = None
        self.reads_poisoned = False
        self._load_lock = threading.Lock()
        #: odd while the writer changes what an older view covers; moved twice per change
        self._rewrites = 0
        #: the thread making the current change (a read it makes itself is not waited for)
        self._rewriter = 0
        #: called with a read's error once it is known not to be this process's writer at
        #: work; a read-only view of a live directory raises StaleViewError there when the
        #: other process's writer removed what the read needed (``segwal.engine.live``)
        self.on_failed_read: Callable[[BaseException], None] | None = None
        self._segs: list[LiveSegment] = [LiveSegment(directory, r) for r in manifest.segments]
        self._tail_term = 0
        self._ckpt_end = 0
        self._ckpt_frames = 0
        self._ckpt_dirty = False
        self._opened_end = 0
        self._view = _View(1, 0, (), [])

    def _load(self, seg: LiveSegment) -> TailIndex | SealedIndex:
        """Open a sealed segment and its index on first use (``LogRecovery._load``)."""
        raise NotImplementedError

    def _term_at(self, index: int) -> int:
        seg = self._seg_for(index)
        idx, f = self._opened(seg)
        return read_term(f.buffer(), idx.offset(index - seg.base), index, seg.path)

    def _seg_for(self, index: int) -> LiveSegment:
        v = self._view
        segs = v.segs if v.segs else tuple(self._segs)
        bases = v.bases if v.segs else [s.base for s in segs]
        return segs[bisect_right(bases, index) - 1]

    def _opened(self, seg: LiveSegment) -> tuple[TailIndex | SealedIndex, SegmentFile]:
        """The segment's index and file, opening them on first use.  O(1) after."""
        idx, f = seg.index, seg.file
        if idx is None or f is None:
            idx = self._load(seg)
            f = seg.file
            assert f is not None
        return idx, f

    def _publish(self) -> None:
        segs = tuple(self._segs)
        m = self.manifest
        floor = m.purge.index + 1 if m.purge is not None else 1
        if segs:
            hi = segs[-1].last
            lo = max(floor, segs[0].base)
        else:
            hi, lo = 0, floor
        self._view = _View(lo, hi, segs, [s.base for s in segs])

    # ----------------------------------------------------------------- reads

    def first_index(self) -> int:
        """Lowest readable index; ``last_index()+1`` when empty.  O(1)."""
        v = self._view
        return v.lo if v.hi >= v.lo else self.last_index() + 1

    def last_index(self) -> int:
        """Highest index (a purge never lowers it).  O(1)."""
        v = self._view
        p = self.manifest.purge
        return max(v.hi, p.index) if p is not None else v.hi

    def entry(self, index: int) -> Entry | None:
        """The entry at ``index`` or None.  O(log segments + len(payload)), verified.

        The hot path of point reads: the tail segment is tried before the bisect,
        and the slot decode and check are inlined (see ``wal.reader.read_entry``
        for the same logic as a pure function).
        """
        v = self._view
        try:
            if index < v.lo or index > v.hi:
                return None
            seg = v.segs[-1]
            if index < seg.base:
                seg = v.segs[bisect_right(v.bases, index) - 1]
                if index > seg.last:
                    return None
            idx = seg.index
            f = seg.file
            if idx is None or f is None:
                idx, f = self._opened(seg)
            m = f.map
            off = idx.view[index - seg.base]
            try:
                term, pstart, plen, check = _unpack_slot(m, off)  # type: ignore[arg-type]
            except (struct.error, TypeError):
                raise CorruptionError(
                    "index points past the end of the segment", path=seg.path, offset=off, index=index
                ) from None
            payload = m[pstart : pstart + plen]  # type: ignore[index]
            if _xxh3(payload, index) ^ term != check or len(payload) != plen:
                if len(payload) != plen:
                    raise CorruptionError(
                        "entry payload runs past the end of the segment", path=seg.path, offset=off, index=index
                    )
                raise CorruptionError("entry checksum mismatch", path=seg.path, offset=off, index=index)
            return _new(Entry, (index, term, payload))
        except (SegwalError, OSError, TypeError, IndexError) as e:
            if self._settled(v):
                self._failed(e)
                raise
            return self.entry(index)  # the writer changed the log under this read: read again

    def entries(self, start: int, end: int) -> list[Entry]:
        """Entries ``start..end`` that exist, ascending, verified.  O(total bytes)."""
        v = self._view
        c0 = self._rewrites
        first, last = start, end
        try:
            start = max(start, v.lo)
            end = min(end, v.hi)
            out: list[Entry] = []
            if start > end:
                return out
            k = bisect_right(v.bases, start) - 1
            while start <= end and k < len(v.segs):
                seg = v.segs[k]
                stop = min(end, seg.last)
                if stop >= start:
                    idx, f = self._opened(seg)
                    m = f.map
                    out.extend(_read_range(m if m is not None else b"", idx.array(), seg.base, start, stop, seg.path))
                    start = stop + 1
                k += 1
        except (SegwalError, OSError, TypeError, IndexError) as e:
            if self._settled(v):
                self._failed(e)
                raise
            return self.entries(first, last)  # the writer changed the log under this read: read again
        if (c0 != self._rewrites or c0 & 1) and self._rewriter != threading.get_ident():
            # An overwrite, truncation, rotation or purge ran during this read: the
            # entries may mix two histories.  Read again once it is published.
            self._settled(v)
            return self.entries(first, last)
        return out

    def _settled(self, v: _View) -> bool:
        """After a failed read on view ``v``: whether the failure is the log's own
        (reported) rather than the writer's change in progress (the read is then
        made again).  Waits for a change in progress to be published.  Never on
        the hot path."""
        me = threading.get_ident()
        deadline = time.monotonic() + 10.0
        while self._view is v and self._rewrites & 1 and self._rewriter != me:
            if time.monotonic() > deadline:
                break
            time.sleep(0.0002)
        return self._view is v

    def _failed(self, exc: BaseException) -> None:
        """A read failed for good on this log's view: let :attr:`on_failed_read`
        (a read-only view's check against the writer's newer manifest) turn it
        into :class:`~segwal.errors.StaleViewError` when the writer explains it."""
        check = self.on_failed_read
        if check is not None:
            check(exc)

    def term_of(self, index: int) -> int | None:
        """Term of the entry at ``index``, of the purge boundary, or None."""
        p = self.manifest.purge
        if p is not None and index == p.index:
            return p.term
        e = self.entry(index)
        return None if e is None else e.term

    def last_term(self) -> int:
        """Term of the last entry (or of the purge boundary when the log is empty)."""
        v = self._view
        if v.hi >= v.lo:
            return self._tail_term
        p = self.manifest.purge
        return p.term if p is not None else 0

    def segments_info(self) -> list[SegmentInfo]:
        """One :class:`SegmentInfo` per live segment, in log order.  O(segments)."""
        out = []
        segs = self._view.segs
        for k, s in enumerate(segs):
            try:
                if s.file is not None:
                    size = s.file.file.size()
                else:
                    fh = self.fs.open(s.path, readonly=True)
                    size = fh.size()
                    fh.close()
            except OSError:
                size = -1
            out.append(SegmentInfo(s.seq, s.path, s.base, s.last, size, k < len(segs) - 1))
        return out
