"""Recovery of the segmented log at open: leftovers, foreign segments, the tail, indexes.

At open the directory is checked against the manifest (an unnamed segment file
is a leftover of an interrupted operation and is deleted, unless it belongs to
another engine), the tail segment's frames after its index checkpoint are
replayed, and a torn end is cut.  Sealed segments are not read at open: each is
opened on its first read, its index rebuilt from the segment if missing or damaged.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from segwal.engine.manifest import MANIFEST_NAME
from segwal.engine.segments import LiveSegment, replay_frames, segment_name
from segwal.engine.view import LogReader
from segwal.errors import CorruptionError, FormatVersionError, StorageIOError, SyncError
from segwal.fs import TMP_SUFFIX
from segwal.index.offsets import SealedIndex, TailIndex, write_sealed_index
from segwal.wal.format import KIND_ENTRIES, SEGMENT_HEADER_SIZE, decode_segment_header, scan_frames
from segwal.wal.segment import SegmentFile, recover_tail

__all__ = ["LogRecovery"]

log = logging.getLogger("segwal")


class LogRecovery(LogReader):
    """Opening the segmented log: :meth:`recover`, and sealed segments on first read."""

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
        except FileNotFoundError:
            if self.readonly:
                return  # a live writer removed it meanwhile
            raise StorageIOError(2, "segment file vanished while being checked", path) from None
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

    def _open_segment(self, seg: LiveSegment, readonly: bool) -> SegmentFile:
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

    def _recover_tail(self, seg: LiveSegment, notes: list[str]) -> None:
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
                (log.info if self.readonly else log.warning)(msg)  # read-only: maybe a checkpoint in progress
                notes.append(msg)
            else:
                index, h = loaded
                start, chain = h.covered_end, h.chain_crc
        if self.readonly:
            # A writer elsewhere may be appending, or cut this file: read a copy,
            # taken after the index checkpoint (which it can only extend).
            f.snapshot()
        if start > f.capacity:
            raise CorruptionError(
                f"index covers {start} bytes but the segment has only {f.capacity}",
                path=seg.idx_path,
                offset=48,
                index=None if index is None else seg.base + index.count,
            )
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
        if rec.torn and self.readonly:
            # A frame being written by a live writer, or a torn tail a writer will cut:
            # the view ends before it either way, and nothing is changed.
            msg = f"tail {seg.path} read up to offset {rec.end} (last index {last}); what follows is being written or torn"
            log.info(msg)
            notes.append(msg)
        elif rec.torn:
            msg = f"torn tail in {seg.path} at offset {rec.end}: cut what follows (last index kept {last})"
            log.warning(msg)
            notes.append(msg)
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

    def _load(self, seg: LiveSegment) -> TailIndex | SealedIndex:
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

    def _rebuild_sealed(self, seg: LiveSegment, count: int) -> tuple[np.ndarray, int, int]:
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
