"""The write path of the segmented log: append, truncate, rotation, purge, reset, install, flush, close.

The commit point of each change is listed in :mod:`segwal.engine.log` (and
``docs/format.md``).  One writer at a time: the facade holds a lock.
"""

from __future__ import annotations

import logging
import os
import random
import threading
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from segwal.engine.manifest import MANIFEST_NAME, Manifest, SegmentRecord, encode_manifest
from segwal.engine.segments import LiveSegment, segment_name
from segwal.engine.view import LogReader, _View
from segwal.errors import EnginePoisonedError, OutOfSpaceError, SegwalError, StorageIOError, SyncError
from segwal.fs import replace_file
from segwal.index.offsets import TailIndex, write_sealed_index
from segwal.kv.files import KVFile
from segwal.types import LogId
from segwal.wal.format import (
    FRAME_HEADER_SIZE,
    KIND_TRUNCATE,
    SEGMENT_HEADER_SIZE,
    SINGLE_ENTRY_MAX,
    SLOT_SIZE,
    EncodedFrame,
    EntryColumns,
    align8,
    encode_entries_columns,
    encode_entries_frame,
    encode_frame,
)
from segwal.wal.segment import SegmentFile, io_error

__all__ = ["CHECKPOINT_BYTES", "CHECKPOINT_FRAMES", "LogWriter"]

log = logging.getLogger("segwal")

#: Checkpoint the tail index after this many bytes or frames since the last one.
CHECKPOINT_BYTES = 8 << 20
CHECKPOINT_FRAMES = 4096


def _encode(
    first: int,
    terms: Sequence[int] | np.ndarray,
    payloads: Sequence[bytes] | EntryColumns,
    offset: int,
    durable: int,
    prev_crc: int,
    sizes: np.ndarray | None = None,
) -> EncodedFrame:
    if isinstance(payloads, EntryColumns):
        return encode_entries_columns(first, payloads, offset=offset, durable=durable, prev_crc=prev_crc)
    return encode_entries_frame(first, terms, payloads, offset=offset, durable=durable, prev_crc=prev_crc, sizes=sizes)


#: Builds a :class:`_View` without NamedTuple's Python-level ``__new__`` (half the cost, once per append).
_new_view = tuple.__new__


class LogWriter(LogReader):
    """The segmented log's writes; the facade validates arguments and holds one writer at a time."""

    def _check_writable(self) -> None:
        if self.poisoned is not None:
            raise EnginePoisonedError(
                f"a previous sync failed ({self.poisoned}); reopen the engine to recover what is durable"
            )

    def append(
        self,
        first: int,
        terms: Sequence[int] | np.ndarray,
        payloads: Sequence[bytes] | EntryColumns,
        payload_bytes: int,
        sizes: np.ndarray | None = None,
    ) -> None:
        """Write a validated batch starting at ``first`` (replacing entries from
        ``first`` on).  Durable on return in ``always`` mode.  ``payloads`` may be
        :class:`EntryColumns` (``terms`` then equals its terms): written with the
        check values it carries, no payload hashed."""
        self._check_writable()
        n = len(payloads)
        frame_len = FRAME_HEADER_SIZE + align8(SLOT_SIZE * n + payload_bytes)
        tail = self._segs[-1] if self._segs else None
        rotate = (
            tail is None
            or not tail.base <= first <= tail.last + 1
            or (tail.file.end > SEGMENT_HEADER_SIZE and tail.file.end + frame_len > self.segment_size)  # type: ignore[union-attr]
        )
        # An overwrite rewrites offsets that older views still cover, a rotation
        # changes segments in place: range readers see _rewrites move and read again.
        # A pure append only adds past every view, so it does not count.
        rewrite = rotate or first <= tail.last  # type: ignore[union-attr]
        if rewrite:
            self._begin_rewrite()
        try:
            if rotate:
                self._rotate(first, terms, payloads)
            else:
                assert tail is not None
                f = tail.file
                assert f is not None and isinstance(tail.index, TailIndex)
                fr = _encode(first, terms, payloads, f.end, f.durable, f.last_crc, sizes)
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
        finally:
            if rewrite:
                self._rewrites += 1

    def append_one(self, index: int, term: int, payload: bytes) -> bool:
        """Append one validated entry when it simply extends the tail segment
        (``index`` is the next index, ``term`` not below the last, no rotation,
        a payload of at most :data:`SINGLE_ENTRY_MAX` bytes): the hot path of
        libraries that append one entry at a time.  Returns ``False``, having
        done nothing, in every other case (the caller then takes :meth:`append`
        with its full checks).  Durable on return in ``always`` mode.
        O(len(payload)): one frame written with one ``pwrite``.
        """
        segs = self._segs
        if not segs or self.poisoned is not None:
            return False
        tail = segs[-1]
        v = self._view
        f = tail.file
        if index != tail.last + 1 or v.hi != tail.last or v.hi < v.lo or term < self._tail_term or f is None:
            return False
        off = f.end
        plen = len(payload)
        if plen > SINGLE_ENTRY_MAX or (off > SEGMENT_HEADER_SIZE and off + 71 + plen > self.segment_size):
            return False  # a large payload or a rotation: the general path (71 = header + slot + pad)
        crc = f.last_crc
        f.append_entry(index, term, payload)
        always = self.sync_always
        if always:
            try:
                f.sync()
            except SyncError as e:
                f.rollback(off, crc)
                self.poisoned = e
                raise
        pa = self.preallocator
        if pa is not None and f.zeroed - f.end < pa.ahead // 2:
            pa.register(f, self.segment_size)
        tail.index.set_one(index - tail.base, off + FRAME_HEADER_SIZE)  # type: ignore[union-attr]
        tail.last = index
        self._tail_term = term
        self._ckpt_dirty = True
        self._ckpt_frames = frames = self._ckpt_frames + 1
        if always and (f.end - self._ckpt_end >= CHECKPOINT_BYTES or frames >= CHECKPOINT_FRAMES):
            self.checkpoint()
        if v.segs and v.segs[-1] is tail:
            self._view = _new_view(_View, (v.lo, index, v.segs, v.bases))
        else:
            self._publish()
        return True

    def _begin_rewrite(self) -> None:
        """Mark a change to what older views cover as in progress (``_rewrites`` odd);
        the caller adds one more once the new view is published."""
        self._rewriter = threading.get_ident()
        self._rewrites += 1

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
        self._begin_rewrite()  # later appends reuse positions older views cover (see append)
        try:
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
        finally:
            self._rewrites += 1


    def _rotate(
        self,
        base: int,
        terms: Sequence[int] | np.ndarray | None,
        payloads: Sequence[bytes] | EntryColumns | None,
    ) -> None:
        """Start a new tail segment at ``base`` (optionally holding a first batch),
        cutting every entry ``>= base``.  Commit point: the manifest rename."""
        m = self.manifest
        old = self._segs
        keep: list[LiveSegment] = [s for s in old if s.base < base]
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
                fr = _encode(base, terms, payloads, f.end, 0, f.last_crc)
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
            f.discard()
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
        seg = LiveSegment(self.dir, new_rec)
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

    def _seal(self, seg: LiveSegment) -> None:
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
                new_file.discard()
            if on_fail_unlink is not None:
                try:
                    self.fs.unlink(on_fail_unlink)
                except OSError:
                    pass
            raise
        self.manifest = nm

    def _delete_files(self, segs: list[LiveSegment]) -> None:
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
        self._begin_rewrite()  # segments of older views go
        try:
            self._write_manifest(nm)
            self._segs = keep
            hold = self.purge_hold
            if hold is not None and gone:
                try:  # an archiver maps what it has not shipped yet (engine/tap.py); never on the append path
                    hold(gone)
                except Exception as e:  # noqa: BLE001 - the purge is committed: the hook cannot undo it
                    log.warning("purge hold hook failed: %s", e)
            self._delete_files(gone)
            if not keep:
                self._tail_term = cutoff.term
            self._publish()
        finally:
            self._rewrites += 1

    def reset(self) -> None:
        """Drop every segment and the purge boundary; bump the KV generation.

        Commit point: the manifest rename.
        """
        self._replace_all(None, self.manifest.kv_generation + 1)

    def install(self, cutoff: LogId, kv_generation: int, kv_files: tuple[KVFile, ...] = ()) -> None:
        """Drop every segment, set the purge boundary to ``cutoff`` and switch to
        ``kv_generation`` (already written and durable, in ``kv_files``), in one
        manifest write: the commit point of a snapshot install.
        """
        self._replace_all(cutoff, kv_generation, kv_files)

    def record_manifest(self, **changes: object) -> None:
        """Write the manifest with ``changes`` (its fields: e.g. ``kv_files``,
        ``hard_state_saved``).  Durable on return; the commit point of whatever the
        changed fields record.  Cost: one atomic replace (two syncs, a rename).

        Raises:
            SyncError: a sync failed (the log is poisoned: the manifest may or may not be new).
            OutOfSpaceError / StorageIOError: nothing changed.
        """
        m = self.manifest
        self._write_manifest(replace(m, revision=m.revision + 1, **changes))  # type: ignore[arg-type]

    def _replace_all(self, boundary: LogId | None, kv_generation: int, kv_files: tuple[KVFile, ...] = ()) -> None:
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
            kv_files=kv_files,
        )
        self._begin_rewrite()  # segments of older views go
        try:
            self._write_manifest(nm)
            gone = self._segs
            self._segs = []
            self._delete_files(gone)
            self._tail_term = 0 if boundary is None else boundary.term
            self._publish()
        finally:
            self._rewrites += 1

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
