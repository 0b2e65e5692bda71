"""The archive's tap into an engine's log: segment identities, per-entry check values, raw entry columns, the purge hold hook, and column appends for restore.

``segwal.storage.archive`` ships a node's log to an object store and builds
engine directories back from it.  It needs what the public ``StorageEngine``
calls do not give, all served here without touching the append path:

* :func:`log_segments`: the segments of the engine's current view (sequence
  number, activation uid, first and last index, sealed or tail), so that a
  sealed segment already compared is not read again;
* :func:`segment_checks`: the 64-bit check value of each entry
  (``xxh3_64(payload, seed=index) ^ term``, the value every slot already
  stores; ``docs/format.md`` section 2.3), read from the slots without
  reading payloads: how the archiver sees an overwrite or a truncation of
  entries it already shipped;
* :func:`set_purge_hold`: a hook the writer calls inside ``purge_logs``, with
  the segments the purge is about to unlink, before it unlinks them.  The hook
  may map them (:func:`hold_segment`): an unlinked file stays readable while
  mapped, so the archiver can still ship it, and its disk space is freed when
  the archiver lets it go.  Never called on the append path;
* :func:`segment_raw`: a range of entries as columns (terms, lengths, check
  values) and their payloads back to back, each payload verified once: what a
  delta is made of, without building ``Entry`` objects;
* :func:`append_columns`: the restore side, appending such columns as one
  batch, with the check values it was given (verified by the caller): no
  payload is hashed a second time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import xxhash

from segwal.engine.segments import LiveSegment
from segwal.errors import CorruptionError, StaleViewError
from segwal.types import LogId
from segwal.wal.format import EntryColumns

if TYPE_CHECKING:
    from segwal.engine.engine import WalEngine

__all__ = [
    "LogState",
    "PurgeHold",
    "RawEntries",
    "SegmentRef",
    "append_columns",
    "hold_segment",
    "log_segments",
    "segment_checks",
    "segment_raw",
    "set_purge_hold",
]

#: Called by the writer, under its lock, with the segments a purge is about to unlink.
PurgeHold = Callable[[Sequence["SegmentRef"]], None]


class SegmentRef(NamedTuple):
    """One segment of a view: identity, entry range, and the handle to read it by."""

    seq: int
    uid: int
    base: int
    last: int  # last live entry (base - 1 when empty)
    sealed: bool
    handle: LiveSegment


class LogState(NamedTuple):
    """One view of the log: readable entries ``lo..hi``, the purge boundary, the segments."""

    lo: int
    hi: int
    purge: LogId | None
    manifest_revision: int
    engine_id: int
    segments: list[SegmentRef]


def log_segments(engine: WalEngine) -> LogState:
    """The segments of ``engine``'s current view, in log order.  O(segments); reads no file."""
    lg = engine._live()
    v = lg._view
    m = lg.manifest
    out: list[SegmentRef] = []
    n = len(v.segs)
    for k, s in enumerate(v.segs):
        last = v.hi if k == n - 1 else min(s.last, v.segs[k + 1].base - 1)
        out.append(SegmentRef(s.seq, s.uid, s.base, last, k < n - 1, s))
    if v.hi < v.lo:
        return LogState(v.lo, v.lo - 1, m.purge, m.revision, m.engine_id, out)
    return LogState(v.lo, v.hi, m.purge, m.revision, m.engine_id, out)


def _stable(engine: WalEngine) -> int:
    return int(engine._log._rewrites)


def segment_checks(engine: WalEngine, ref: SegmentRef, start: int, end: int) -> np.ndarray | None:
    """The check values (``uint64``) of entries ``start..end`` of segment ``ref``, read
    from their slots (no payload is read).  ``None`` when the writer rewrote the log
    meanwhile (read the segments again).  O(end - start) numpy work, no copy of the file.

    Raises:
        CorruptionError: a slot offset outside the file.
        StaleViewError: a read-only view's writer removed the segment (refresh).
    """
    if end < start:
        return np.zeros(0, dtype=np.uint64)
    lg = engine._log
    c0 = _stable(engine)
    if c0 & 1:
        return None
    try:
        idx, f = lg._opened(ref.handle)
        offs = idx.array()[start - ref.base : end - ref.base + 1].astype(np.int64)
        buf = f.buffer()
        words = np.frombuffer(buf, dtype="<u8", count=len(buf) // 8)
        pos = (offs + 16) >> 3
        if len(pos) and (int(pos.max()) >= len(words) or bool((offs & 7).any())):
            raise CorruptionError("slot offset outside the segment", path=ref.handle.path, index=start)
        checks: np.ndarray = words[pos].astype(np.uint64)
        del words
    except (CorruptionError, OSError) as e:
        if _stable(engine) != c0:
            return None
        lg._failed(e)
        raise
    if _stable(engine) != c0 or len(checks) != end - start + 1:
        return None
    return checks


class RawEntries(NamedTuple):
    """Entries ``first ..`` of one segment as columns, payloads back to back (verified)."""

    first: int
    terms: np.ndarray
    plens: np.ndarray
    checks: np.ndarray
    payloads: bytes


def segment_raw(engine: WalEngine | None, ref: SegmentRef, start: int, end: int) -> RawEntries | None:
    """Entries ``start..end`` of segment ``ref`` (a held segment a purge unlinked too) as
    columns read from their slots, every payload verified against its slot's check
    value; no ``Entry`` is built.  ``None`` when the writer rewrote the log meanwhile.
    O(bytes): one xxh3 per entry and one copy of the payloads.

    Raises:
        CorruptionError: a slot pointing outside the file, or a payload that fails its
            check (path, offset and log index named).
        StaleViewError: a read-only view's writer removed the segment (refresh).
    """
    c0 = _stable(engine) if engine is not None else 0
    if c0 & 1:
        return None
    seg = ref.handle
    try:
        if seg.index is None or seg.file is None:
            if engine is None:
                raise StaleViewError(f"{seg.path}: segment is not mapped")
            engine._log._opened(seg)
        idx, f = seg.index, seg.file
        assert idx is not None and f is not None
        buf = f.buffer()
        offs = idx.array()[start - seg.base : end - seg.base + 1].astype(np.int64)
        n = len(offs)
        if n != end - start + 1:
            if engine is not None and _stable(engine) != c0:
                return None
            raise CorruptionError(
                f"the segment's index does not reach entries {start}..{end}", path=seg.idx_path, index=start
            )
        words = np.frombuffer(buf, dtype="<u8", count=len(buf) // 8)
        halves = np.frombuffer(buf, dtype="<u4", count=len(buf) // 4)
        if n and (bool((offs & 7).any()) or int(offs.max()) + 24 > len(buf)):
            raise CorruptionError("slot offset outside the segment", path=seg.path, index=start)
        terms = words[offs >> 3].astype(np.uint64)
        pstart = halves[(offs + 8) >> 2].astype(np.int64)
        plens = halves[(offs + 12) >> 2].astype(np.uint32)
        checks = words[(offs + 16) >> 3].astype(np.uint64)
        del words, halves
        if n and int((pstart + plens).max()) > len(buf):
            raise CorruptionError("entry payload runs past the end of the segment", path=seg.path, index=start)
        mv = memoryview(buf)
        parts: list[memoryview] = []
        try:
            parts = list(map(mv.__getitem__, map(slice, pstart.tolist(), (pstart + plens).tolist())))
            got = np.fromiter(map(xxhash.xxh3_64_intdigest, parts, range(start, start + n)), dtype=np.uint64, count=n)
            bad = np.flatnonzero((got ^ terms) != checks)
            if len(bad):
                i = int(bad[0])
                raise CorruptionError("entry checksum mismatch", path=seg.path, offset=int(offs[i]), index=start + i)
            payloads = b"".join(parts)
        finally:
            del parts
            mv.release()
    except (CorruptionError, OSError) as e:
        if engine is not None and _stable(engine) != c0:
            return None
        if engine is not None:
            engine._log._failed(e)
        raise
    if engine is not None and _stable(engine) != c0:
        return None
    return RawEntries(start, terms, plens, checks, payloads)


def append_columns(
    engine: WalEngine,
    first: int,
    terms: np.ndarray,
    plens: np.ndarray,
    checks: np.ndarray,
    blob: bytes | memoryview,
) -> None:
    """Append entries ``first ..`` given as columns (terms, payload lengths, check
    values) and their payloads back to back (``blob``) at the end of ``engine``'s
    log, as one batch: what a restore writes, without building ``Entry`` objects
    and without hashing a payload.  The check values go into the slots as given:
    the caller has verified each against its payload at the index it is appended
    at (``xxh3_64(payload, seed=index) ^ term``; a restore does it when it reads
    the archive object).  The batch must extend the log (``first ==
    last_index()+1``) with terms non-decreasing from the last entry's.

    Durability: as ``persist_entries``.  Complexity: O(n) numpy work and one
    CRC32C over the payloads; one frame, the payloads not copied.

    Raises:
        ValueError: the batch does not extend the log, a term decreases, or the
            columns do not agree (lengths, or ``blob`` not the lengths' sum).
    """
    n = len(terms)
    if n == 0:
        return
    if len(plens) != n or len(checks) != n:
        raise ValueError(f"columns of {n} terms, {len(plens)} lengths and {len(checks)} check values")
    t = np.asarray(terms, dtype=np.uint64)
    sizes = np.asarray(plens, dtype=np.uint64)
    total = int(sizes.sum())
    if total != len(blob):
        raise ValueError(f"payload blob of {len(blob)} bytes, the lengths add up to {total}")
    cols = EntryColumns(t, sizes, np.asarray(checks, dtype=np.uint64), blob)
    with engine._wlock:
        lg = engine._writable()
        if first != lg.last_index() + 1:
            raise ValueError(f"entry {first}: an appended batch must start at {lg.last_index() + 1}")
        if bool((t[1:] < t[:-1]).any()) or int(t[0]) < lg.last_term():
            raise ValueError(f"entries {first}..{first + n - 1}: terms decrease")
        lg.append(first, t, cols, total, sizes)


def hold_segment(engine: WalEngine, ref: SegmentRef) -> int:
    """Map segment ``ref`` (and its index) so that it stays readable after the writer
    unlinks it; returns its size in bytes.  Called from a :data:`PurgeHold` hook,
    in the writer's thread.  O(1), or O(entries) to verify an index never read before."""
    _idx, f = engine._log._opened(ref.handle)
    return len(f.buffer())


def set_purge_hold(engine: WalEngine, hook: PurgeHold | None) -> None:
    """Install (or with ``None`` remove) the hook ``purge_logs`` calls with the segments
    it is about to unlink, under the writer's lock.  The hook must be quick and
    must not raise (an exception is logged and ignored).  O(1)."""
    lg = engine._log
    if engine._readonly:
        raise PermissionError("a read-only view never purges: it has nothing to hold")
    lg.purge_hold = None if hook is None else _Adapter(hook)


class _Adapter:
    """Turn the writer's LiveSegments into :class:`SegmentRef` for the hook."""

    __slots__ = ("hook",)

    def __init__(self, hook: PurgeHold) -> None:
        self.hook = hook

    def __call__(self, gone: list[LiveSegment]) -> None:
        self.hook([SegmentRef(s.seq, s.uid, s.base, s.last, True, s) for s in gone])
