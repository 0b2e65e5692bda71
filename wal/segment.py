"""One segment file: append frames, sync, read through a shared map, recover its tail.

The file grows in ``prealloc``-byte steps ahead of the writer (sparse: the new
space reads as zeros and costs no write), so the shared map is rebuilt once per
step.  Unwritten space is zeros, which no frame parses as.

Recovery of the tail segment is :func:`recover_tail`, a pure function over the
file's bytes; the torn-versus-corrupt rule it applies is documented in
``docs/format.md`` ("Torn tail or corruption").
"""

from __future__ import annotations

import errno
import mmap
import threading
from dataclasses import dataclass

from segwal.errors import CorruptionError, OutOfSpaceError, StorageIOError, SyncError
from segwal.fs import File, FileSystem
from segwal.wal.format import (
    SEGMENT_HEADER_SIZE,
    Buf,
    EncodedFrame,
    FrameHeader,
    decode_segment_header,
    encode_segment_header,
    encode_single_entry,
    find_valid_frames,
    scan_frames,
)

__all__ = ["SegmentFile", "TailRecovery", "recover_tail", "io_error"]

_ZEROS = bytes(1 << 20)

def io_error(exc: OSError, what: str, path: str) -> StorageIOError:
    """Wrap an OSError from ``what`` on ``path`` into segwal's tree (ENOSPC -> OutOfSpaceError)."""
    cls = OutOfSpaceError if exc.errno in (errno.ENOSPC, errno.EDQUOT) else StorageIOError
    return cls(exc.errno or errno.EIO, f"{what} failed: {exc.strerror or exc}", path)


@dataclass(frozen=True, slots=True)
class TailRecovery:
    """What :func:`recover_tail` decided for the tail segment.

    Attributes:
        frames: valid chained frames from the scan start, in order.
        end: offset just past the last valid frame.
        last_crc: chain value at ``end``.
        torn: bytes after ``end`` are a torn write to cut (never acknowledged).
        claim: the largest durable claim found beyond ``end`` (0 if none): when
            it passes ``end``, the damage hit synced data and is corruption.
        later: self-valid frames found beyond the damage (for error reports).
    """

    frames: list[tuple[int, FrameHeader]]
    end: int
    last_crc: int
    torn: bool
    claim: int
    later: list[tuple[int, FrameHeader]]

    @property
    def corrupt(self) -> bool:
        """Damage below a durable claim: acknowledged data is gone."""
        return self.claim > self.end


def recover_tail(buf: Buf, start: int, prev_crc: int, *, known_durable: int = 0) -> TailRecovery:
    """Decide where the tail segment's valid frames end, and whether what follows
    is a torn write or corruption.  Pure; O(bytes after ``start``).

    The rule: the scan stops at the first byte that is not a valid frame chained
    to the one before.  What lies there is a torn tail only if no durable claim
    passes it: neither ``known_durable`` (the manifest's clean-close offset or an
    index checkpoint), nor the ``durable`` field of any self-valid frame found
    later in the file.  Every frame records, when written, the offset below which
    the segment was already synced, so a valid later frame proves the damaged
    bytes had been acknowledged.
    """
    res = scan_frames(buf, start, prev_crc)
    later = [fh for fh in find_valid_frames(buf, res.end) if fh[0] >= res.end]
    claim = max([known_durable, *(h.durable for _, h in later)])
    torn = res.stop == "invalid" or bool(later)
    return TailRecovery(res.frames, res.end, res.last_crc, torn, claim, later)


class SegmentFile:
    """An open segment file.  One writer; concurrent readers use :attr:`map`.

    Attributes:
        path: file path.
        seq, uid, base: identity from the header.
        end: offset where the next frame goes.
        last_crc: chain value at ``end``.
        durable: offset below which the file is known synced.
        map: read-only shared map covering the allocated size (``None`` if empty).
    """

    __slots__ = (
        "fs",
        "path",
        "file",
        "seq",
        "uid",
        "base",
        "end",
        "last_crc",
        "durable",
        "capacity",
        "map",
        "prealloc",
        "lock",
        "zeroed",
        "zero_failed",
        "zero_stopped",
    )

    def __init__(self, fs: FileSystem, path: str, file: File, seq: int, uid: int, base: int, prealloc: int) -> None:
        self.fs = fs
        self.path = path
        self.file = file
        self.seq = seq
        self.uid = uid
        self.base = base
        self.end = SEGMENT_HEADER_SIZE
        self.last_crc = 0
        self.durable = 0
        self.capacity = file.size()
        self.prealloc = prealloc
        self.map: mmap.mmap | bytes | None = file.map()
        #: Guards ``end``/``capacity`` against a :class:`~segwal.wal.prealloc.Preallocator`
        #: writing zeros ahead of the writer.
        self.lock = threading.Lock()
        #: Bytes ``[0, zeroed)`` are written and synced (data or zeros): frames written
        #: there do not change the file's allocation, so their fdatasync is cheaper.
        self.zeroed = 0
        #: Set when a background sync of this file failed: the next :meth:`sync` must
        #: fail too (the error may have consumed the writer's own dirty pages).
        self.zero_failed: OSError | None = None
        #: No more zeros may be written (the file is being sealed, trimmed or closed).
        self.zero_stopped = False

    # -- creation and opening -------------------------------------------------

    @classmethod
    def create(
        cls, fs: FileSystem, path: str, *, engine_id: int, seq: int, uid: int, base: int, prealloc: int
    ) -> SegmentFile:
        """Create a new segment file with its header written (not yet synced).

        The caller syncs it (and fsyncs the directory) before acknowledging
        anything stored in it.
        """
        try:
            f = fs.open(path, create=True)
        except OSError as e:
            raise io_error(e, "creating segment", path) from e
        header = encode_segment_header(engine_id, seq, uid, base)
        try:
            f.truncate(0)
            f.pwrite(header, 0)
        except OSError as e:
            f.close()
            try:
                fs.unlink(path)
            except OSError:
                pass
            raise io_error(e, "creating segment", path) from e
        seg = cls(fs, path, f, seq, uid, base, prealloc)
        seg.last_crc = int.from_bytes(header[60:64], "little")
        return seg

    @classmethod
    def open(
        cls, fs: FileSystem, path: str, *, engine_id: int, seq: int, uid: int, base: int, prealloc: int, readonly: bool
    ) -> SegmentFile:
        """Open an existing segment and check its header against the manifest's record.

        Raises:
            CorruptionError: missing header, or one that names another engine,
                sequence, activation (uid) or base index.
        """
        try:
            f = fs.open(path, readonly=readonly)
        except FileNotFoundError:
            raise CorruptionError(
                "segment listed in the manifest is missing", path=path, offset=None, index=base
            ) from None
        except OSError as e:
            raise io_error(e, "opening segment", path) from e
        try:
            head = f.pread(SEGMENT_HEADER_SIZE, 0)
        except OSError as e:
            f.close()
            raise io_error(e, "reading segment header", path) from e
        try:
            h = decode_segment_header(head, path)
            if h is None:
                raise CorruptionError("segment header is zeroed", path=path, offset=0, index=base)
            if h.engine_id != engine_id:
                raise CorruptionError(
                    f"foreign segment: engine id {h.engine_id:#x} != {engine_id:#x}", path=path, offset=8, index=base
                )
            if (h.seq, h.uid, h.base_index) != (seq, uid, base):
                raise CorruptionError(
                    f"stale segment: header (seq {h.seq}, uid {h.uid:#x}, base {h.base_index}) does not match "
                    f"the manifest (seq {seq}, uid {uid:#x}, base {base})",
                    path=path,
                    offset=16,
                    index=base,
                )
        except BaseException:
            f.close()
            raise
        seg = cls(fs, path, f, seq, uid, base, prealloc)
        seg.last_crc = h.crc
        return seg

    def remap(self) -> None:
        """Map the file's current size (after it grew or shrank).  Old maps are left
        to the garbage collector, so a concurrent reader holding one is safe."""
        self.capacity = self.file.size()
        self.map = self.file.map()

    def snapshot(self) -> None:
        """Serve reads from a private copy of the file's bytes instead of a shared map.

        For a reader of a file that another process writes: that writer may shrink
        it (trim at seal or close, cut a torn tail at open), and a shared map's
        pages past the new end would then fault (SIGBUS); a copy never changes.
        Durability: none (reads only).  O(file size): one pread.
        """
        data = self.file.pread(self.file.size(), 0)
        self.capacity = len(data)
        self.map = data or None

    # -- writing -------------------------------------------------------------

    def _reserve(self, need: int) -> None:
        """Make sure the file (and so the map) reaches ``end + need``: extend its
        size in ``prealloc`` steps, as a sparse hole (reads as zeros, costs no
        write), so the map is rebuilt once per step rather than once per frame."""
        target = self.end + need
        if target <= self.capacity:
            return
        new_cap = max(target, self.capacity + self.prealloc)
        try:
            self.file.truncate(new_cap)
        except OSError as e:
            raise io_error(e, "extending segment", self.path) from e
        self.remap()

    def append(self, frame: EncodedFrame) -> int:
        """Write ``frame`` at :attr:`end` (not synced) and advance.  Returns its offset.

        On failure (ENOSPC, short write, EIO) the file is cut back to the frame's
        start and the error raised; the segment stays usable.
        """
        with self.lock:
            off = self.end
            self._reserve(frame.frame_len)
            try:
                self.file.pwritev(frame.buffers, off)
            except OSError as e:
                self._cut(off)
                raise io_error(e, "writing frame", self.path) from e
            self.end = end = off + frame.frame_len
            self.last_crc = frame.header_crc
            m = self.map
            if m is None or end > len(m):
                self.remap()
        return off

    def append_entry(self, index: int, term: int, payload: bytes) -> int:
        """:meth:`append` for a one-entry frame (:func:`encode_single_entry`):
        encoded against this file's end, durable point and chain value, written
        with one ``pwrite``, no frame object (the path of libraries appending one
        entry at a time).  Not synced; returns the frame's offset.  On failure the
        file is cut back to the frame's start and the error raised.  O(len(payload)).
        """
        lock = self.lock
        lock.acquire()  # not ``with``: that builds two bound methods per call
        try:
            off = self.end
            data, hcrc = encode_single_entry(index, term, payload, off, self.durable, self.last_crc)
            end = off + len(data)
            if end > self.capacity:
                self._reserve(len(data))
            try:
                self.file.pwrite(data, off)
            except OSError as e:
                self._cut(off)
                raise io_error(e, "writing frame", self.path) from e
            self.end = end
            self.last_crc = hcrc
            m = self.map
            if m is None or end > len(m):
                self.remap()
            return off
        finally:
            lock.release()

    def sync(self) -> None:
        """fdatasync the file: everything written so far becomes durable.

        Raises:
            SyncError: the sync failed (or a background sync of this file did:
                the error may have taken the writer's dirty pages with it).  The
                caller must cut back what was not known durable (:meth:`rollback`)
                and poison itself.
        """
        try:
            if self.zero_failed is not None:
                raise self.zero_failed
            self.file.fdatasync()
        except OSError as e:
            raise SyncError(e.errno or errno.EIO, f"fdatasync failed: {e.strerror or e}", self.path) from e
        self.durable = self.end

    def zero_ahead(self, chunk: int, limit: int) -> bool:
        """Write ``chunk`` bytes of zeros past the writer's end and sync them, so later
        frames land in allocated, synced space (called by the preallocator thread).

        Returns False when there is nothing left to do below ``limit``.  A failed
        sync is recorded so the writer's next :meth:`sync` fails too.
        """
        with self.lock:
            start = max(self.zeroed, self.end)
            n = min(chunk, limit - start)
            if n <= 0 or self.zero_failed is not None or self.zero_stopped:
                return False
            self.file.pwrite(memoryview(_ZEROS)[:n] if n <= len(_ZEROS) else bytes(n), start)
            self.capacity = max(self.capacity, start + n)
        try:
            self.file.fdatasync()
        except OSError as e:
            self.zero_failed = e
            raise
        with self.lock:
            if self.capacity >= start + n:
                self.zeroed = max(self.zeroed, start + n)
        return True

    def stop_zeroing(self) -> None:
        """No more background zeros for this file (before it is sealed or closed).

        Taken under the file's lock, so a preallocation step already under way
        has finished writing, and none starts after it.
        """
        with self.lock:
            self.zero_stopped = True

    def trim(self) -> None:
        """Cut preallocated zeros after :attr:`end` and sync (at seal and clean close):
        a sealed segment has its exact length, and a reopen scans nothing after it."""
        with self.lock:
            self.zero_stopped = True
            if self.capacity > self.end:
                try:
                    self.file.truncate(self.end)
                except OSError as e:
                    raise io_error(e, "trimming segment", self.path) from e
                self.capacity = self.end
                self.zeroed = min(self.zeroed, self.end)
                self.map = self.file.map()
        self.sync()

    def rollback(self, end: int, last_crc: int) -> None:
        """Forget frames written at or after ``end`` (best effort, not synced).

        Used after a failed write or sync: the bytes are cut from the file so
        that clean-but-unsynced pages cannot be read back later.
        """
        with self.lock:
            self.end = end
            self.last_crc = last_crc
            self.durable = min(self.durable, end)
            try:
                self._cut(end)
            except OSError:
                pass

    def _cut(self, size: int) -> None:
        if size < self.capacity:
            self.file.truncate(size)
            self.zeroed = min(self.zeroed, size)
            self.remap()

    def cut_torn_tail(self) -> None:
        """Cut everything after :attr:`end` and fdatasync (recovery of a torn tail)."""
        try:
            self.file.truncate(self.end)
            self.file.fdatasync()
        except OSError as e:
            raise io_error(e, "cutting torn tail", self.path) from e
        self.remap()
        self.durable = self.end

    def buffer(self) -> mmap.mmap | bytes:
        """The bytes of the file as mapped now (``b""`` when empty)."""
        m = self.map
        return m if m is not None else b""

    def close(self) -> None:
        """Close the file handle.  The map stays: a reader that found this file in a
        view taken before the close may still read it (an mmap outlives its file
        descriptor, and an unlinked file its name); it is released with the last
        reference to this object.  O(1)."""
        self.file.close()

    def discard(self) -> None:
        """Close a file no reader ever saw (its creation or first write failed),
        its map included, so nothing of it outlives the call.  O(1)."""
        m, self.map = self.map, None
        if m is not None and not isinstance(m, bytes):
            try:
                m.close()
            except (BufferError, ValueError):
                pass  # a buffer export still holds it: the last reference frees it
        self.file.close()
