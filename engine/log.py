"""The segmented log: segments listed by the manifest, an offset index each, one tail.

Strategy (the commit point of each operation; ``docs/format.md`` has the steps):

* append into the tail segment: the frame's fdatasync;
* overwrite or truncate at or above the tail's base: a frame in the tail (an
  ENTRIES frame starting at ``k`` replaces everything from ``k``; a TRUNCATE
  frame cuts at ``k``), committed by its fdatasync;
* everything that changes which segments exist (rotation, an overwrite or a
  truncate below the tail's base, purge, reset): the manifest's atomic rename.
  A new segment is written and synced before the manifest names it, so an
  unnamed segment file is always a leftover and is deleted at open.

Readers never lock: they read an immutable :class:`_View` that the writer
replaces after each change, and segment maps are never closed under them.
"""

from __future__ import annotations

import logging
import os
import random
import struct
import threading
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np
import xxhash

from segwal.engine.manifest import MANIFEST_NAME, Manifest, SegmentRecord, encode_manifest
from segwal.errors import (
    CorruptionError,
    EnginePoisonedError,
    FormatVersionError,
    OutOfSpaceError,
    SegwalError,
    StorageIOError,
    SyncError,
)
from segwal.fs import TMP_SUFFIX, FileSystem, replace_file
from segwal.index.offsets import SealedIndex, TailIndex, write_sealed_index
from segwal.types import Entry, LogId
from segwal.wal.format import (
    FRAME_HEADER_SIZE,
    KIND_ENTRIES,
    KIND_TRUNCATE,
    SEGMENT_HEADER_SIZE,
    SLOT,
    SLOT_SIZE,
    Buf,
    FrameHeader,
    align8,
    decode_segment_header,
    encode_entries_frame,
    encode_frame,
    scan_frames,
)
from segwal.wal.prealloc import Preallocator
from segwal.wal.reader import read_batch_entries, read_entries, read_term
from segwal.wal.segment import SegmentFile, io_error, recover_tail

__all__ = ["SegmentedLog", "SegmentInfo", "segment_name", "index_name", "replay_frames"]

_unpack_slot = SLOT.unpack_from
_xxh3 = xxhash.xxh3_64_intdigest
_new = tuple.__new__

log = logging.getLogger("segwal")

#: Checkpoint the tail index after this many bytes or frames since the last one.
CHECKPOINT_BYTES = 8 << 20
CHECKPOINT_FRAMES = 4096


def segment_name(seq: int) -> str:
    """File name of segment ``seq``."""
    return f"{seq:016x}.wal"


def index_name(seq: int) -> str:
    """File name of segment ``seq``'s index."""
    return f"{seq:016x}.idx"


def replay_frames(index: TailIndex, frames: list[tuple[int, FrameHeader]], path: str) -> int:
    """Apply a segment's ENTRIES and TRUNCATE frames, in order, to its offset index;
    returns the last index the segment then holds (``base - 1`` when empty).

    An ENTRIES frame starting at ``k`` replaces everything from ``k`` on; a
    TRUNCATE frame cuts at ``k``.  Pure apart from ``index``.  O(entries).

    Raises:
        CorruptionError: a valid frame that cannot follow the ones before it.
    """
    base = index.base
    last = base - 1 + index.count
    for off, h in frames:
        if h.kind not in (KIND_ENTRIES, KIND_TRUNCATE):
            raise CorruptionError(f"unexpected frame kind {h.kind} in a log segment", path=path, offset=off)
        if not base <= h.first_index <= last + 1:
            raise CorruptionError(
                f"frame at index {h.first_index} cannot follow a segment holding {base}..{last}",
                path=path,
                offset=off,
                index=h.first_index,
            )
        if h.kind == KIND_ENTRIES:
            start = off + FRAME_HEADER_SIZE
            index.set_from(h.first_index - base, np.arange(start, start + SLOT_SIZE * h.count, SLOT_SIZE, dtype=np.uint32))
            last = h.first_index + h.count - 1
        else:
            index.truncate(h.first_index - base)
            last = h.first_index - 1
    return last


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


class _Seg:
    """One live segment in memory."""

    __slots__ = ("seq", "uid", "base", "last", "path", "idx_path", "file", "index")

    def __init__(self, directory: str, rec: SegmentRecord) -> None:
        self.seq = rec.seq
        self.uid = rec.uid
        self.base = rec.base
        self.last = rec.last
        self.path = os.path.join(directory, segment_name(rec.seq))
        self.idx_path = os.path.join(directory, index_name(rec.seq))
        self.file: SegmentFile | None = None
        self.index: TailIndex | SealedIndex | None = None

    def record(self) -> SegmentRecord:
        return SegmentRecord(self.seq, self.uid, self.base, self.last)


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    """A live segment as ``segwal inspect`` shows it (``last < first`` when empty)."""

    seq: int
    path: str
    first: int
    last: int
    size: int
    sealed: bool


class _View(NamedTuple):
    """What readers see: entries ``lo..hi`` live in ``segs`` (bases in ``bases``).

    Immutable and replaced whole by the writer after each change (a NamedTuple:
    cheap to build, as every append builds one)."""

    lo: int
    hi: int
    segs: tuple[_Seg, ...]
    bases: list[int]


class SegmentedLog:
    """The log part of the engine.  Arguments are validated by the facade;
    this class assumes them valid and enforces durability and crash safety.

    One writer at a time (the facade holds a lock); readers concurrent.
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
        self._segs: list[_Seg] = [_Seg(directory, r) for r in manifest.segments]
        self._tail_term = 0
        self._ckpt_end = 0
        self._ckpt_frames = 0
        self._ckpt_dirty = False
        self._opened_end = 0
        self._view = _View(1, 0, (), [])

    # ------------------------------------------------------------------ open

    def recover(self) -> list[str]:
        """Check the directory against the manifest, recover the tail, publish the view.

        Returns notes (warnings) for the caller.  Reads no sealed segment.
        """
        notes: list[str] = []
        self._remove_leftovers(notes)
        m = self.manifest
        segs = self._segs
        for a, b in zip(segs, segs[1:]):
            if a.last != b.base - 1:
                raise CorruptionError(
                    f"manifest: segment {a.seq:#x} ends at {a.last} but the next starts at {b.base}",
                    path=os.path.join(self.dir, MANIFEST_NAME),
                    index=min(a.last, b.base - 1) + 1,
                )
        if segs and m.purge is not None and segs[0].base > m.purge.index + 1:
            raise CorruptionError(
                f"entries {m.purge.index + 1}..{segs[0].base - 1} are missing between the purge boundary "
                f"and the first segment",
                path=segs[0].path,
                index=m.purge.index + 1,
            )
        names = set(self.fs.listdir(self.dir))
        for s in segs:
            if segment_name(s.seq) not in names:
                raise CorruptionError("segment listed in the manifest is missing", path=s.path, index=s.base)
        if segs:
            self._recover_tail(segs[-1], notes)
        self._publish()
        v = self._view
        self._tail_term = self._term_at(v.hi) if v.hi >= v.lo else 0
        return notes

    def _remove_leftovers(self, notes: list[str]) -> None:
        listed = {s.seq for s in self._segs}
        for name in self.fs.listdir(self.dir):
            path = os.path.join(self.dir, name)
            if name.endswith(TMP_SUFFIX):
                if not self.readonly:
                    self.fs.unlink(path)
                    notes.append(f"removed stray temporary file {path}")
                continue
            stem, dot, ext = name.partition(".")
            if ext not in ("wal", "idx") or len(stem) != 16:
                continue
            try:
                seq = int(stem, 16)
            except ValueError:
                continue
            if seq in listed:
                continue
            if ext == "wal":
                self._check_not_foreign(path)
            if not self.readonly:
                self.fs.unlink(path)
                notes.append(f"removed unlisted segment file {path} (left by an interrupted operation)")

    def _check_not_foreign(self, path: str) -> None:
        try:
            f = self.fs.open(path, readonly=True)
            try:
                head = f.pread(SEGMENT_HEADER_SIZE, 0)
            finally:
                f.close()
        except OSError as e:
            raise StorageIOError(e.errno or 5, f"reading segment header failed: {e.strerror or e}", path) from e
        try:
            h = decode_segment_header(head, path) if len(head) == SEGMENT_HEADER_SIZE else None
        except CorruptionError:
            return  # torn header of a segment whose creation never committed
        if h is not None and h.engine_id != self.manifest.engine_id:
            raise CorruptionError(
                f"foreign segment: engine id {h.engine_id:#x} != {self.manifest.engine_id:#x}", path=path, offset=8
            )

    def _open_segment(self, seg: _Seg, readonly: bool) -> SegmentFile:
        """Open a listed segment, checking its header against the manifest's record."""
        return SegmentFile.open(
            self.fs,
            seg.path,
            engine_id=self.manifest.engine_id,
            seq=seg.seq,
            uid=seg.uid,
            base=seg.base,
            prealloc=self.prealloc,
            readonly=readonly,
        )

    def _recover_tail(self, seg: _Seg, notes: list[str]) -> None:
        f = self._open_segment(seg, self.readonly)
        seg.file = f
        start, chain = SEGMENT_HEADER_SIZE, f.last_crc
        index: TailIndex | None = None
        if self.fs.exists(seg.idx_path):
            try:
                idxf = self.fs.open(seg.idx_path, readonly=True)
            except OSError as e:
                raise StorageIOError(e.errno or 5, "opening index failed", seg.idx_path) from e
            try:
                loaded = TailIndex.load(idxf, seq=seg.seq, uid=seg.uid, base=seg.base)
            except OSError as e:
                raise StorageIOError(e.errno or 5, f"reading index failed: {e.strerror or e}", seg.idx_path) from e
            finally:
                idxf.close()
            if loaded is None:
                msg = f"index {seg.idx_path} is damaged or stale; rebuilding it from its segment"
                log.warning(msg)
                notes.append(msg)
            else:
                index, h = loaded
                if h.covered_end > f.capacity:
                    raise CorruptionError(
                        f"index covers {h.covered_end} bytes but the segment has only {f.capacity}",
                        path=seg.idx_path,
                        offset=48,
                        index=seg.base + h.count,
                    )
                start, chain = h.covered_end, h.chain_crc
        if index is None:
            index = TailIndex(seg.base)
        buf = f.buffer()
        claim = self.manifest.tail_durable
        try:
            rec = recover_tail(memoryview(buf), start, chain, known_durable=claim)
        except FormatVersionError as e:
            raise FormatVersionError(e.reason, path=seg.path, offset=e.offset, index=None) from None
        last = replay_frames(index, rec.frames, seg.path)
        f.end, f.last_crc = rec.end, rec.last_crc
        if rec.corrupt:
            lost = ""
            entries_later = [h for _, h in rec.later if h.kind == KIND_ENTRIES]
            if entries_later:
                hi = max(h.first_index + h.count - 1 for h in entries_later)
                lost = f"; entries up to {hi} follow the damage and are unreachable"
            raise CorruptionError(
                f"damaged frame below a durable claim (offset {rec.claim} was synced){lost}",
                path=seg.path,
                offset=rec.end,
                index=last + 1,
            )
        if rec.torn:
            msg = f"torn tail in {seg.path} at offset {rec.end}: cut what follows (last index kept {last})"
            log.warning(msg)
            notes.append(msg)
            if not self.readonly:
                f.cut_torn_tail()
        elif not self.readonly and rec.frames:
            # Frames found intact may have been only in the page cache (a killed
            # process, not a power loss): make them durable before any later frame
            # or checkpoint claims they are.
            try:
                f.sync()
            except SyncError as e:
                self.poisoned = e
                raise
        f.durable = f.end
        self._opened_end = f.end
        seg.index = index
        seg.last = last
        self._ckpt_end = start
        self._ckpt_frames = len(rec.frames)
        self._ckpt_dirty = bool(rec.frames) or start == SEGMENT_HEADER_SIZE

    def _term_at(self, index: int) -> int:
        seg = self._seg_for(index)
        idx, f = self._opened(seg)
        return read_term(f.buffer(), idx.offset(index - seg.base), index, seg.path)

    def _seg_for(self, index: int) -> _Seg:
        v = self._view
        segs = v.segs if v.segs else tuple(self._segs)
        bases = v.bases if v.segs else [s.base for s in segs]
        return segs[bisect_right(bases, index) - 1]

    def _opened(self, seg: _Seg) -> tuple[TailIndex | SealedIndex, SegmentFile]:
        """The segment's index and file, opening them on first use.  O(1) after."""
        idx, f = seg.index, seg.file
        if idx is None or f is None:
            idx = self._load(seg)
            f = seg.file
            assert f is not None
        return idx, f

    def _load(self, seg: _Seg) -> TailIndex | SealedIndex:
        """Open a sealed segment and its index on first use (verifying the index once)."""
        with self._load_lock:
            if seg.index is not None and seg.file is not None:
                return seg.index
            if seg.file is None:
                seg.file = self._open_segment(seg, True)
            count = seg.last - seg.base + 1
            idx = SealedIndex.open(self.fs, seg.idx_path, seq=seg.seq, uid=seg.uid, base=seg.base, count=count)
            if idx is None:
                log.warning("index %s is missing or damaged; rebuilding it from its segment", seg.idx_path)
                offsets, end, chain = self._rebuild_sealed(seg, count)
                if not self.readonly:
                    write_sealed_index(
                        self.fs, seg.idx_path, seq=seg.seq, uid=seg.uid, base=seg.base,
                        offsets=offsets, covered_end=end, chain_crc=chain,
                    )
                    idx = SealedIndex.open(self.fs, seg.idx_path, seq=seg.seq, uid=seg.uid, base=seg.base, count=count)
                if idx is None:
                    t = TailIndex(seg.base, offsets)
                    seg.index = t
                    return t
            seg.index = idx
            return idx

    def _rebuild_sealed(self, seg: _Seg, count: int) -> tuple[np.ndarray, int, int]:
        f = seg.file
        assert f is not None
        buf = memoryview(f.buffer())
        res = scan_frames(buf, SEGMENT_HEADER_SIZE, f.last_crc)
        t = TailIndex(seg.base)
        replay_frames(t, res.frames, seg.path)
        if t.count < count:
            raise CorruptionError(
                f"sealed segment holds entries up to {seg.base + t.count - 1}, the manifest says {seg.last}",
                path=seg.path,
                offset=res.end,
                index=seg.base + t.count,
            )
        return t.array()[:count].copy(), res.end, res.last_crc

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

    def entries(self, start: int, end: int) -> list[Entry]:
        """Entries ``start..end`` that exist, ascending, verified.  O(total bytes)."""
        v = self._view
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
        return out

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

    # ---------------------------------------------------------------- writes

    def _check_writable(self) -> None:
        if self.poisoned is not None:
            raise EnginePoisonedError(
                f"a previous sync failed ({self.poisoned}); reopen the engine to recover what is durable"
            )

    def append(
        self,
        first: int,
        terms: Sequence[int] | np.ndarray,
        payloads: Sequence[bytes],
        payload_bytes: int,
        sizes: np.ndarray | None = None,
    ) -> None:
        """Write a validated batch starting at ``first`` (replacing entries from
        ``first`` on).  Durable on return in ``always`` mode."""
        self._check_writable()
        n = len(payloads)
        frame_len = FRAME_HEADER_SIZE + align8(SLOT_SIZE * n + payload_bytes)
        tail = self._segs[-1] if self._segs else None
        if (
            tail is None
            or not tail.base <= first <= tail.last + 1
            or (tail.file.end > SEGMENT_HEADER_SIZE and tail.file.end + frame_len > self.segment_size)  # type: ignore[union-attr]
        ):
            self._rotate(first, terms, payloads)
        else:
            f = tail.file
            assert f is not None and isinstance(tail.index, TailIndex)
            fr = encode_entries_frame(
                first, terms, payloads, offset=f.end, durable=f.durable, prev_crc=f.last_crc, sizes=sizes
            )
            self._write_frame(f, fr)
            pa = self.preallocator
            if pa is not None and f.zeroed - f.end < pa.ahead // 2:
                # Preallocation starts with the first write: an engine only read
                # never changes its files.  (Registering again is a cheap no-op.)
                pa.register(f, self.segment_size)
            assert fr.slot_offsets is not None
            tail.index.set_from(first - tail.base, fr.slot_offsets)
            tail.last = first + n - 1
            self._after_write(fr.frame_len)
            self._tail_term = int(terms[-1])
            v = self._view
            if v.segs and v.segs[-1] is tail:
                # Only the end moved: reuse the segment tuple and bases.
                self._view = _View(v.lo, tail.last, v.segs, v.bases)
                return
        self._tail_term = int(terms[-1])
        self._publish()

    def _write_frame(self, f: SegmentFile, fr: object) -> None:
        start, crc = f.end, f.last_crc
        f.append(fr)  # type: ignore[arg-type]
        if self.sync_always:
            try:
                f.sync()
            except SyncError as e:
                f.rollback(start, crc)
                self.poisoned = e
                raise

    def _after_write(self, nbytes: int) -> None:
        self._ckpt_dirty = True
        self._ckpt_frames += 1
        tail = self._segs[-1]
        f = tail.file
        assert f is not None
        if self.sync_always and (
            f.end - self._ckpt_end >= CHECKPOINT_BYTES or self._ckpt_frames >= CHECKPOINT_FRAMES
        ):
            self.checkpoint()

    def checkpoint(self) -> None:
        """Persist the tail index up to the durable end of the tail (one fdatasync)."""
        if not self._segs or self.readonly or not self._ckpt_dirty:
            return
        tail = self._segs[-1]
        f = tail.file
        idx = tail.index
        assert f is not None and isinstance(idx, TailIndex)
        if f.durable != f.end:
            return  # only durable frames may be covered
        try:
            idxf = self.fs.open(tail.idx_path, create=True)
            try:
                idx.checkpoint(idxf, seq=tail.seq, uid=tail.uid, covered_end=f.end, chain_crc=f.last_crc, sealed=False)
            finally:
                idxf.close()
        except OSError as e:
            # The index is derived data: a failed checkpoint costs a longer scan at open.
            log.warning("index checkpoint of %s failed: %s", tail.idx_path, e)
            return
        self._ckpt_end = f.end
        self._ckpt_frames = 0
        self._ckpt_dirty = False

    def truncate(self, k: int) -> None:
        """Remove entries ``>= k`` (``k`` validated: boundary < k <= last entry)."""
        self._check_writable()
        tail = self._segs[-1]
        if k >= tail.base:
            f = tail.file
            assert f is not None and isinstance(tail.index, TailIndex)
            fr = encode_frame(KIND_TRUNCATE, k, b"", offset=f.end, durable=f.durable, prev_crc=f.last_crc)
            if f.end > SEGMENT_HEADER_SIZE and f.end + fr.frame_len > self.segment_size:
                self._rotate(k, None, None)
            else:
                self._write_frame(f, fr)
                tail.index.truncate(k - tail.base)
                tail.last = k - 1
                self._after_write(fr.frame_len)
        else:
            self._rotate(k, None, None)
        self._publish()
        self._tail_term = self._term_at(k - 1) if k - 1 >= self._view.lo else 0

    def _rotate(
        self, base: int, terms: Sequence[int] | np.ndarray | None, payloads: Sequence[bytes] | None
    ) -> None:
        """Start a new tail segment at ``base`` (optionally holding a first batch),
        cutting every entry ``>= base``.  Commit point: the manifest rename."""
        m = self.manifest
        old = self._segs
        keep: list[_Seg] = [s for s in old if s.base < base]
        dropped = [s for s in old if s.base >= base]
        new_last: dict[int, int] = {s.seq: min(s.last, base - 1) for s in keep}
        if keep:
            prev = keep[-1]
            if prev is old[-1]:
                self._seal(prev)
        seq = m.next_seq
        uid = random.getrandbits(64) or 1
        path = os.path.join(self.dir, segment_name(seq))
        f = SegmentFile.create(
            self.fs, path, engine_id=m.engine_id, seq=seq, uid=uid, base=base, prealloc=self.prealloc
        )
        index = TailIndex(base)
        last = base - 1
        try:
            if payloads is not None and terms is not None:
                fr = encode_entries_frame(base, terms, payloads, offset=f.end, durable=0, prev_crc=f.last_crc)
                f.append(fr)
                assert fr.slot_offsets is not None
                index.set_from(0, fr.slot_offsets)
                last = base + len(payloads) - 1
            f.sync()
            # The new file's name must be durable before the manifest that lists it:
            # POSIX does not order a create before a later rename in the same directory.
            try:
                self.fs.fsync_dir(self.dir)
            except OSError as e:
                raise SyncError(e.errno or 5, f"directory fsync failed: {e.strerror or e}", self.dir) from e
        except BaseException as e:
            f.close()
            try:
                self.fs.unlink(path)
            except OSError:
                pass
            if isinstance(e, SyncError):
                self.poisoned = e
            raise
        records = [replace(s.record(), last=new_last[s.seq]) for s in keep if new_last[s.seq] >= s.base]
        new_rec = SegmentRecord(seq, uid, base, last)
        nm = replace(m, revision=m.revision + 1, next_seq=seq + 1, tail_durable=0, segments=(*records, new_rec))
        self._write_manifest(nm, on_fail_unlink=path, new_file=f)
        # Committed.
        live = {r.seq for r in nm.segments}
        for s in keep:
            s.last = new_last[s.seq]
            if isinstance(s.index, TailIndex):
                s.index = None  # sealed now: served from its mapped index file
        seg = _Seg(self.dir, new_rec)
        seg.file = f
        seg.index = index
        if self.preallocator is not None:
            self.preallocator.register(f, self.segment_size)  # it is being written
        gone = [s for s in keep if s.seq not in live] + dropped
        self._segs = [s for s in keep if s.seq in live] + [seg]
        self._ckpt_end = SEGMENT_HEADER_SIZE
        self._ckpt_frames = 0
        self._ckpt_dirty = True
        self._delete_files(gone)

    def _seal(self, seg: _Seg) -> None:
        """Sync the tail and write its complete index, marked sealed, before the
        manifest names a successor.

        The index covers every entry the segment holds now, not only those the
        rotation keeps: until the manifest commits, this segment is still the
        tail, and a crash must find the index a faithful checkpoint of it.  The
        manifest's ``last`` is what clips it afterwards.
        """
        f = seg.file
        assert f is not None and isinstance(seg.index, TailIndex)
        if self.preallocator is not None:
            self.preallocator.unregister(f)
        try:
            f.trim()  # exact length, and synced
        except SyncError as e:
            self.poisoned = e
            raise
        try:
            write_sealed_index(
                self.fs, seg.idx_path, seq=seg.seq, uid=seg.uid, base=seg.base,
                offsets=seg.index.array(), covered_end=f.end, chain_crc=f.last_crc,
            )
        except OSError as e:
            raise io_error(e, "writing sealed index", seg.idx_path) from e

    def _write_manifest(self, nm: Manifest, *, on_fail_unlink: str | None = None, new_file: SegmentFile | None = None) -> None:
        try:
            replace_file(self.fs, self.dir, MANIFEST_NAME, encode_manifest(nm))
        except SyncError as e:
            self.poisoned = e
            raise
        except StorageIOError:
            if new_file is not None:
                new_file.close()
            if on_fail_unlink is not None:
                try:
                    self.fs.unlink(on_fail_unlink)
                except OSError:
                    pass
            raise
        self.manifest = nm

    def _delete_files(self, segs: list[_Seg]) -> None:
        """Unlink segments the manifest no longer names (best effort: leftovers are
        removed at the next open)."""
        for s in segs:
            if s.file is not None:
                if self.preallocator is not None:
                    self.preallocator.unregister(s.file)
                s.file.close()
            for p in (s.path, s.idx_path):
                try:
                    self.fs.unlink(p)
                except FileNotFoundError:
                    pass
                except OSError as e:
                    log.warning("could not remove %s: %s", p, e)

    def purge(self, cutoff: LogId) -> None:
        """Set the purge boundary to ``cutoff`` and delete whole segments at or below it.

        Commit point: the manifest rename.  Files are unlinked afterwards.
        """
        self._check_writable()
        m = self.manifest
        gone = [s for s in self._segs if s.last <= cutoff.index]
        keep = [s for s in self._segs if s.last > cutoff.index]
        nm = replace(
            m,
            revision=m.revision + 1,
            purge=cutoff,
            reset_pending=False,
            tail_durable=m.tail_durable if keep else 0,
            segments=tuple(s.record() for s in keep),
        )
        self._write_manifest(nm)
        self._segs = keep
        self._delete_files(gone)
        if not keep:
            self._tail_term = cutoff.term
        self._publish()

    def reset(self) -> None:
        """Drop every segment and the purge boundary; bump the KV generation.

        Commit point: the manifest rename.
        """
        self._replace_all(None, self.manifest.kv_generation + 1)

    def install(self, cutoff: LogId, kv_generation: int) -> None:
        """Drop every segment, set the purge boundary to ``cutoff`` and switch to
        ``kv_generation`` (already written and durable), in one manifest write:
        the commit point of a snapshot install.
        """
        self._replace_all(cutoff, kv_generation)

    def _replace_all(self, boundary: LogId | None, kv_generation: int) -> None:
        """Empty the log (boundary ``boundary``) and switch the KV generation in one
        manifest write; then unlink every old segment.  A reset (no boundary) marks
        the manifest so the hard state's commit index makes no claim on the log."""
        self._check_writable()
        m = self.manifest
        nm = replace(
            m,
            revision=m.revision + 1,
            purge=boundary,
            tail_durable=0,
            segments=(),
            kv_generation=kv_generation,
            reset_pending=boundary is None,
        )
        self._write_manifest(nm)
        gone = self._segs
        self._segs = []
        self._delete_files(gone)
        self._tail_term = 0 if boundary is None else boundary.term
        self._publish()

    def flush(self) -> None:
        """Make every write durable (fdatasync of the tail) and checkpoint its index."""
        self._check_writable()
        if not self._segs:
            return
        f = self._segs[-1].file
        assert f is not None
        if f.durable != f.end:
            start = f.durable
            try:
                f.sync()
            except SyncError as e:
                # Nothing written since the last good sync may be trusted: cut it
                # (best effort) so unsynced pages cannot be read back, and poison.
                # Readers must not see the cut entries either: reads fail too.
                self.poisoned = e
                self.reads_poisoned = True
                f.rollback(start, 0)
                raise
        if f.end - self._ckpt_end >= CHECKPOINT_BYTES or self._ckpt_frames >= CHECKPOINT_FRAMES:
            self.checkpoint()

    def close(self, clean: bool) -> None:
        """Sync, checkpoint and record a clean end in the manifest (when ``clean``)."""
        if self.preallocator is not None:
            for s in self._segs:
                if s.file is not None:
                    self.preallocator.unregister(s.file)
        if clean and not self.readonly and self.poisoned is None and self._segs:
            self.flush()
            tail = self._segs[-1]
            f = tail.file
            assert f is not None
            if f.capacity > f.end and (f.zeroed > 0 or f.durable > self._opened_end):
                # This session wrote or preallocated: cut the zeros past the end, so
                # a reopen has nothing to scan.  (A session that only read leaves
                # the files as they were.)
                try:
                    f.trim()
                except SegwalError as e:
                    log.warning("trimming %s at close failed: %s", f.path, e)
            self._ckpt_dirty = True
            self.checkpoint()
            if self.manifest.tail_durable != f.end or self.manifest.segments[-1].last != tail.last:
                recs = tuple(s.record() for s in self._segs)
                nm = replace(self.manifest, revision=self.manifest.revision + 1, tail_durable=f.end, segments=recs)
                try:
                    self._write_manifest(nm)
                except OutOfSpaceError as e:
                    # Everything is synced already; the clean-close claim is only a
                    # stronger check for the next open.  A full disk must not fail close.
                    log.warning("clean-close record not written (%s): disk full", e)
        for s in self._segs:
            if s.file is not None:
                s.file.close()
                s.file = None
            s.index = None
        self._segs = []
        self._view = _View(1, 0, (), [])
