"""The key/value store: a Bitcask-style append-only record log with an in-memory key directory.

Strategy: every :meth:`KVStore.apply` is ONE ``KIND_KV`` frame (``wal/format.py``)
appended to the active record file with one ``pwritev`` and, when ``sync`` is
true, one ``fdatasync``.  The frame carries all the changes of the batch and
the optional ``applied`` :class:`LogId`, so a crash leaves the whole batch or
none of it.  The key directory maps each live key to ``(file, start, end,
xxh3)`` of its value; :meth:`KVStore.get` is a dict lookup, one slice of the
file's shared map and one xxh3 check.  ``docs/format-kv.md`` is the
byte-by-byte spec and gives the commit point of apply, compaction and reset.

Files in the store directory (``G`` = generation, ``S`` = file sequence, both 16
lower-case hex digits)::

    kv-G-S.log      record file written by apply
    kv-G-S.merged   compaction output: its final name makes every file of
                    generation G with a smaller S obsolete (the commit point)
    kv-G-S.tmp      compaction in progress; removed at open

Each file starts with the common 64-byte segment header (``engine_id``, ``seq`` =
S, ``uid`` random, ``base_index`` = G) followed by ``KIND_KV`` frames whose body
is ``kv/codec.py``'s.

Thread safety: one writer at a time (apply, flush, compact and close take an
internal lock); :meth:`KVStore.get`, ``len`` and :meth:`KVStore.last_applied`
may run concurrently with the writer and never block.  A reader running
concurrently with an ``apply`` may see some of that batch's keys updated and
others not yet; a crash never leaves such a half state.
"""

from __future__ import annotations

import errno
import logging
import operator
import random
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import accumulate, compress, repeat
from typing import Any, Final, NoReturn

import xxhash

from segwal.errors import (
    CorruptionError,
    EngineClosedError,
    EnginePoisonedError,
    OutOfSpaceError,
    StorageIOError,
    SyncError,
)
from segwal.fs import FileSystem
from segwal.kv.codec import (
    BODY_HEAD_SIZE,
    FLAG_CLOSE,
    FLAG_COMPACT_END,
    REC_TABLE,
    TOMBSTONE,
    decode_kv_body,
    encode_kv_body,
    validate_changes,
)
from segwal.types import LogId
from segwal.wal.format import (
    FRAME_HEADER_SIZE,
    KIND_KV,
    SEGMENT_HEADER_SIZE,
    FrameHeader,
    align8,
    decode_segment_header,
    encode_frame,
    scan_frames,
)
from segwal.wal.prealloc import Preallocator
from segwal.wal.segment import SegmentFile, io_error, recover_tail

__all__ = ["KVStore", "KVStats"]

log = logging.getLogger("segwal.kv")

_xxh3 = xxhash.xxh3_64_intdigest

#: Bytes of live records per frame written by a compaction.
_COMPACT_CHUNK: Final = 1 << 20
_NAME = re.compile(r"^kv-([0-9a-f]{16})-([0-9a-f]{16})\.(log|merged|tmp)$")

_getitem = operator.getitem
_get_map = operator.attrgetter("map")


def _file_name(generation: int, seq: int, kind: str) -> str:
    return f"kv-{generation:016x}-{seq:016x}.{kind}"


@dataclass(frozen=True, slots=True)
class KVStats:
    """Sizes of the store.

    Attributes:
        keys: live keys.
        live_bytes: bytes of live records (16-byte table slot + key + value each).
        dead_bytes: bytes of records that no longer count (overwritten values,
            deleted values, tombstones); compaction reclaims them.
        files: record files in use.
    """

    keys: int
    live_bytes: int
    dead_bytes: int
    files: int


class _Refusing:
    """Stands in for the key directory once the store is closed or lost data:
    every read raises the given error (keeps the hot :meth:`KVStore.get` path free
    of state checks)."""

    __slots__ = ("_exc", "_n")

    def __init__(self, exc: Exception, n: int) -> None:
        self._exc = exc
        self._n = n

    def get(self, key: bytes) -> NoReturn:
        raise self._exc

    def __len__(self) -> int:
        return self._n


_Loc = tuple[SegmentFile, int, int, int]


class KVStore:
    """A crash-safe key/value store in its own directory (see the module docstring).

    Invariants: ``_files`` are the record files in use, in sequence order, the
    last one (``_active``) takes appends; every other one is sealed (truncated
    to its last frame and fsynced) or is a committed compaction output.
    """

    __slots__ = (
        "_fs",
        "_dir",
        "_engine_id",
        "_gen",
        "_sync",
        "_file_size",
        "_readonly",
        "_prealloc",
        "_min_dead",
        "_ratio",
        "_kd",
        "_files",
        "_active",
        "_live",
        "_dead",
        "_applied",
        "_poisoned",
        "_closed",
        "_wlock",
        "_pa",
    )
    # Set by open() on the instance it builds (declared here for the type checker).
    _fs: FileSystem
    _dir: str
    _engine_id: int
    _gen: int
    _sync: bool
    _file_size: int
    _readonly: bool
    _prealloc: int
    _min_dead: int
    _ratio: float

    def __init__(self) -> None:  # use KVStore.open
        self._kd: dict[bytes, _Loc] | _Refusing = {}
        self._files: list[SegmentFile] = []
        self._active: SegmentFile | None = None
        self._live = 0
        self._dead = 0
        self._applied: LogId | None = None
        self._poisoned: BaseException | None = None
        self._closed = False
        self._wlock = threading.Lock()
        self._pa: Preallocator | None = None

    # -- opening ---------------------------------------------------------------

    @classmethod
    def open(
        cls,
        fs: FileSystem,
        path: str,
        *,
        engine_id: int,
        generation: int,
        sync: bool,
        file_size: int = 64 << 20,
        readonly: bool = False,
        compact_min_dead: int = 16 << 20,
        compact_ratio: float = 0.5,
        keep_other_generations: bool = False,
        preallocator: Preallocator | None = None,
    ) -> KVStore:
        """Open (or create) the store in directory ``path`` (which must exist, except
        in read-only mode).

        Files of any other ``generation`` (unless ``keep_other_generations``: used
        to stage a snapshot install beside the live generation) and stray
        ``.tmp`` files of this one are deleted;
        files made obsolete by a committed compaction are deleted; the record
        files are replayed into the key directory; a torn tail of the last file
        is cut with a WARNING.  Nothing is modified when ``readonly``.

        Complexity: O(records and bytes in the files), bounded by compaction to
        about twice the live data (see docs/format-kv.md, "Open").

        Raises:
            CorruptionError: damage in a non-last file, damage below a durable
                claim in the last file, a missing middle file, a foreign file.
            StorageIOError: an I/O call failed.
        """
        if file_size < 256:
            raise ValueError(f"file_size must be >= 256, got {file_size}")
        if not 0.0 < compact_ratio < 1.0:
            raise ValueError(f"compact_ratio must be in (0, 1), got {compact_ratio}")
        self = cls()
        self._fs = fs
        self._dir = path.rstrip("/") or "/"
        self._engine_id = engine_id
        self._gen = generation
        self._sync = sync
        self._file_size = file_size
        self._readonly = readonly
        self._prealloc = max(4096, min(file_size, 4 << 20))
        self._min_dead = compact_min_dead
        self._ratio = compact_ratio
        self._pa = None if readonly else preallocator
        try:
            self._recover(keep_other_generations)
        except BaseException:
            for seg in self._files:
                seg.file.close()
            raise
        return self

    def _path(self, name: str) -> str:
        return f"{self._dir}/{name}"

    def _recover(self, keep_others: bool = False) -> None:
        fs = self._fs
        if self._readonly and not fs.exists(self._dir):
            return
        try:
            names = fs.listdir(self._dir)
        except OSError as e:
            raise io_error(e, "listing key/value directory", self._dir) from e
        mine: dict[int, tuple[str, str]] = {}
        doomed: list[str] = []
        for name in sorted(names):
            m = _NAME.match(name)
            if m is None:
                continue  # not ours: leave it alone
            gen, seq, kind = int(m.group(1), 16), int(m.group(2), 16), m.group(3)
            if gen != self._gen:
                if not keep_others:
                    doomed.append(name)
                continue
            if kind == "tmp":
                doomed.append(name)
                continue
            if seq in mine:
                raise CorruptionError(
                    f"two files with sequence {seq}: {mine[seq][0]} and {name}", path=self._path(name), offset=None
                )
            mine[seq] = (name, kind)
        merged = [s for s, (_n, k) in mine.items() if k == "merged"]
        base = max(merged) if merged else 1
        obsolete = [mine.pop(s)[0] for s in sorted(mine) if s < base]
        if not self._readonly and (doomed or obsolete):
            try:
                # Make the compaction's rename durable before removing what it replaces.
                fs.fsync_dir(self._dir)
                for name in doomed + obsolete:
                    fs.unlink(self._path(name))
                fs.fsync_dir(self._dir)
            except OSError as e:
                raise io_error(e, "removing stale key/value files", self._dir) from e
        seqs = sorted(mine)
        if seqs and seqs[0] != base:
            raise CorruptionError(
                f"key/value file sequence {base} is missing (first present is {seqs[0]})",
                path=self._path(mine[seqs[0]][0]),
                offset=None,
            )
        for a, b in zip(seqs, seqs[1:]):
            if b != a + 1:
                raise CorruptionError(
                    f"key/value files {a + 1}..{b - 1} are missing", path=self._path(mine[b][0]), offset=None
                )
        if seqs and self._torn_creation(mine[seqs[-1]][0]):
            seqs.pop()
        self._kd = {}
        for i, seq in enumerate(seqs):
            self._load(mine[seq][0], seq, last=i == len(seqs) - 1)
        if self._files:
            self._active = self._files[-1]
        elif not self._readonly:
            self._active = self._create(base if merged else 1)
            self._files.append(self._active)

    def _preallocate(self, old: SegmentFile | None, new: SegmentFile | None) -> None:
        """Move background zero-filling from ``old`` to the new active file."""
        pa = self._pa
        if pa is None:
            return
        if old is not None:
            pa.unregister(old)
            old.stop_zeroing()
        if new is not None:
            pa.register(new, self._file_size)

    def _create(self, seq: int) -> SegmentFile:
        """Create record file ``seq`` with its header durable, and its name durable."""
        path = self._path(_file_name(self._gen, seq, "log"))
        seg = SegmentFile.create(
            self._fs, path, engine_id=self._engine_id, seq=seq, uid=random.getrandbits(64), base=self._gen,
            prealloc=self._prealloc,
        )
        try:
            seg.sync()
            self._fs.fsync_dir(self._dir)
        except SyncError:
            seg.close()
            raise
        except OSError as e:
            seg.close()
            raise SyncError(e.errno or errno.EIO, f"fsync of directory failed: {e.strerror or e}", self._dir) from e
        seg.durable = seg.end
        return seg

    def _torn_creation(self, name: str) -> bool:
        """Whether the last file never got its header (a crash while it was being
        created); if so it is removed (WARNING).  Its header is synced before any
        frame goes in, so such a file holds nothing acknowledged."""
        path = self._path(name)
        try:
            f = self._fs.open(path, readonly=True)
            try:
                size = f.size()
                if size > 1 << 20:
                    return False
                head = f.pread(size, 0)
            finally:
                f.close()
        except OSError as e:
            raise io_error(e, "reading key/value file", path) from e
        if len(head) >= SEGMENT_HEADER_SIZE:
            try:
                if decode_segment_header(head, path) is not None:
                    return False
            except CorruptionError:
                pass
        if len(head) > SEGMENT_HEADER_SIZE and head[SEGMENT_HEADER_SIZE:].strip(b"\0"):
            return False  # data after a bad header: not a torn creation (_load reports it)
        log.warning("key/value file %s: torn creation (no valid header) at offset 0: removed", path)
        if not self._readonly:
            try:
                self._fs.unlink(path)
                self._fs.fsync_dir(self._dir)
            except OSError as e:
                raise io_error(e, "removing torn key/value file", path) from e
        return True

    def _load(self, name: str, seq: int, *, last: bool) -> None:
        fs = self._fs
        path = self._path(name)
        try:
            f = fs.open(path, readonly=self._readonly)
        except OSError as e:
            raise io_error(e, "opening key/value file", path) from e
        try:
            head = f.pread(SEGMENT_HEADER_SIZE, 0)
        except OSError as e:
            f.close()
            raise io_error(e, "reading key/value file header", path) from e
        try:
            h = decode_segment_header(head, path) if len(head) == SEGMENT_HEADER_SIZE else None
            bad_header = None
        except CorruptionError as e:
            h, bad_header = None, e
        if h is None:
            f.close()
            if bad_header is not None:
                raise bad_header
            raise CorruptionError("key/value file header is missing or zeroed", path=path, offset=0)
        try:
            if h.engine_id != self._engine_id:
                raise CorruptionError(
                    f"foreign key/value file: engine id {h.engine_id:#x} != {self._engine_id:#x}", path=path, offset=8
                )
            if h.seq != seq or h.base_index != self._gen:
                raise CorruptionError(
                    f"stale key/value file: header (seq {h.seq}, generation {h.base_index}) does not match its "
                    f"name (seq {seq}, generation {self._gen})",
                    path=path,
                    offset=16,
                )
        except BaseException:
            f.close()
            raise
        seg = SegmentFile(fs, path, f, seq, h.uid, self._gen, self._prealloc)
        seg.last_crc = h.crc
        self._files.append(seg)
        buf = seg.buffer()
        if last:
            rec = recover_tail(buf, SEGMENT_HEADER_SIZE, h.crc)
            if rec.corrupt:
                raise CorruptionError(
                    f"damaged key/value frame below a durable claim of offset {rec.claim}", path=path, offset=rec.end
                )
            frames = rec.frames
            seg.end, seg.last_crc = rec.end, rec.last_crc
            if rec.torn:
                log.warning("key/value file %s: torn tail at offset %d cut off", path, rec.end)
                if not self._readonly:
                    seg.cut_torn_tail()
                    buf = seg.buffer()
            elif not self._readonly:
                seg.sync()  # what the OS holds becomes durable: later frames may claim it
        else:
            res = scan_frames(buf, SEGMENT_HEADER_SIZE, h.crc)
            if res.stop != "end" or res.end != len(buf):
                raise CorruptionError("damaged frame in a sealed key/value file", path=path, offset=res.end)
            frames = res.frames
            seg.end, seg.last_crc, seg.durable = res.end, res.last_crc, res.end
        for off, fh in frames:
            self._replay(seg, buf, off, fh)

    def _replay(self, seg: SegmentFile, buf: Any, off: int, fh: FrameHeader) -> None:
        if fh.kind != KIND_KV:
            raise CorruptionError(f"frame of kind {fh.kind} in a key/value file", path=seg.path, offset=off)
        body = decode_kv_body(buf, off + FRAME_HEADER_SIZE, off + fh.frame_len, fh.count, seg.path)
        kd = self._kd
        assert isinstance(kd, dict)
        live = self._live
        dead = self._dead
        for k, vs, ve, vl, c in zip(body.keys, body.vstarts, body.vends, body.vlens, body.checks):
            if vl == TOMBSTONE:
                old = kd.pop(k, None)
                dead += REC_TABLE + len(k)
            else:
                old = kd.get(k)
                kd[k] = (seg, vs, ve, c)
                live += REC_TABLE + len(k) + vl
            if old is not None:
                sz = REC_TABLE + len(k) + old[2] - old[1]
                live -= sz
                dead += sz
        self._live, self._dead = live, dead
        if body.applied is not None:
            self._applied = body.applied

    # -- reading ---------------------------------------------------------------

    def get(self, key: bytes) -> bytes | None:
        """The value of ``key``, or ``None``.  The value's xxh3 is verified on every read.

        Complexity: O(1) plus O(len(value)): a dict lookup, one slice of the
        file's map, one xxh3.  Never blocks on the writer.

        Raises:
            CorruptionError: the stored value no longer matches its checksum.
            EngineClosedError: the store was closed.
        """
        loc = self._kd.get(key)
        if loc is None:
            if type(key) is not bytes:
                raise TypeError(f"key must be bytes, got {type(key).__name__}")
            return None
        seg, s, e, h = loc
        v = seg.map[s:e]  # type: ignore[index]
        if _xxh3(v) != h:
            raise CorruptionError("key/value value checksum mismatch", path=seg.path, offset=s)
        return v

    def __len__(self) -> int:
        """Number of live keys.  O(1)."""
        return len(self._kd)

    def last_applied(self) -> LogId | None:
        """The ``LogId`` recorded by the latest ``apply(..., applied=...)``, or ``None``. O(1)."""
        return self._applied

    def capture(self) -> tuple[list[bytes], list[_Loc], LogId | None]:
        """A consistent view of the store for a snapshot: the keys, where their
        values are, and ``last_applied``.  O(keys), no value is read.

        The caller must hold off writers during the call (the engine's write
        lock); the values are read afterwards with :meth:`read_values`, which
        stays valid across later writes and compactions (locations keep their
        file's map alive).
        """
        kd = self._kd
        if not isinstance(kd, dict):
            kd.get(b"")  # raises the recorded error
        assert isinstance(kd, dict)
        return list(kd.keys()), list(kd.values()), self._applied

    def read_values(self, locs: list[_Loc]) -> list[bytes]:
        """The values at ``locs`` (from :meth:`capture`), each verified.  O(bytes)."""
        return self._read_locs(locs) if locs else []

    def stats(self) -> KVStats:
        """Key count, live and dead bytes, files in use.  O(1)."""
        return KVStats(len(self._kd), self._live, self._dead, len(self._files))

    # -- writing ---------------------------------------------------------------

    def _writable(self) -> None:
        if self._closed:
            raise EngineClosedError("key/value store is closed")
        if self._poisoned is not None:
            raise EnginePoisonedError(
                f"key/value store refused: an earlier sync failed ({self._poisoned}); reopen to recover"
            )
        if self._readonly:
            raise PermissionError(errno.EROFS, "key/value store is open read-only", self._dir)

    def _poison(self, exc: BaseException) -> None:
        self._poisoned = exc

    def _read_locs(self, locs: list[_Loc]) -> list[bytes]:
        """The values at ``locs``, each verified against its xxh3.  C-level maps."""
        segs, starts, ends, checks = zip(*locs)
        values: list[bytes] = list(map(_getitem, map(_get_map, segs), map(slice, starts, ends)))
        if list(map(_xxh3, values)) != list(checks):
            for seg, s, v, c in zip(segs, starts, values, checks):
                if _xxh3(v) != c:
                    raise CorruptionError("key/value value checksum mismatch", path=seg.path, offset=s)
        return values

    def apply(
        self, changes: Iterable[tuple[bytes, bytes | None]], applied: LogId | None = None
    ) -> list[bytes | None]:
        """Apply ``(key, value)`` changes (``None`` deletes) and record ``applied``, atomically.

        Returns the previous value of each change's key, in order (a key
        repeated in the batch sees the earlier change).  All changes and
        ``applied`` go into one frame: after a crash the whole batch is there or
        none of it.  An empty batch with ``applied=None`` writes nothing.

        Durability: on stable storage when it returns if ``sync``; otherwise
        handed to the OS (survives a killed process) and durable at the next
        :meth:`flush`.  Complexity: O(total bytes); one pwritev, one fdatasync,
        and a constant number of C-level passes over the batch when it holds no
        delete and no repeated key (otherwise one Python loop more).

        Raises:
            TypeError / ValueError: a bad change (named by position); nothing changed.
            OutOfSpaceError: ENOSPC or short write; rolled back, later writes work.
            SyncError: fdatasync failed; the batch is cut back and the store is
                poisoned (:class:`EnginePoisonedError` until reopened).
            CorruptionError: a previous value failed its checksum; nothing written.
        """
        if type(changes) is not list:
            changes = list(changes)
        if applied is not None and not isinstance(applied, LogId):
            raise TypeError(f"applied must be a LogId or None, got {type(applied).__name__}")
        keys, vals, has_none = validate_changes(changes)
        n = len(keys)
        if n == 0 and applied is None:
            return []
        with self._wlock:
            self._writable()
            kd = self._kd
            assert isinstance(kd, dict)
            olds: list[Any] = list(map(kd.get, keys))
            simple = not has_none and len(set(keys)) == n
            if not simple:
                # Deletes or a repeated key: each change sees the one before it.
                # (None, i) stands for "the value of change i of this batch".
                pending: dict[bytes, Any] = {}
                for i, k in enumerate(keys):
                    if k in pending:
                        olds[i] = pending[k]
                    pending[k] = None if vals[i] is None else (None, i)
            present = [loc for loc in olds if loc is not None and loc[0] is not None]
            lost = 0
            if present:
                pv = self._read_locs(present)
                if len(pv) == n:
                    prevs: list[bytes | None] = pv  # type: ignore[assignment]
                else:
                    it = iter(pv)
                    prevs = [None if loc is None else (vals[loc[1]] if loc[0] is None else next(it)) for loc in olds]
                if simple:
                    lost = REC_TABLE * len(pv) + sum(map(len, pv)) + sum(map(len, compress(keys, olds)))
            else:
                prevs = [None if loc is None else vals[loc[1]] for loc in olds]
            checks = [0 if v is None else _xxh3(v) for v in vals] if has_none else list(map(_xxh3, vals))  # type: ignore[arg-type]
            body = encode_kv_body(keys, vals, checks, applied, has_none=has_none)
            frame_len = FRAME_HEADER_SIZE + align8(len(body))
            seg = self._active
            assert seg is not None
            if seg.end > SEGMENT_HEADER_SIZE and seg.end + frame_len > self._file_size:
                seg = self._rollover()
            off = seg.end
            prev_crc = seg.last_crc
            frame = encode_frame(KIND_KV, 0, body, offset=off, durable=seg.durable, prev_crc=prev_crc, count=n)
            seg.append(frame)  # cuts back and raises OutOfSpaceError/StorageIOError on failure
            pa = self._pa
            if pa is not None and seg.zeroed - seg.end < pa.ahead // 2:
                pa.register(seg, self._file_size)  # from the first write on; a no-op after
            if self._sync:
                try:
                    seg.sync()
                except SyncError as e:
                    seg.rollback(off, prev_crc)
                    self._poison(e)
                    raise
            # The frame is written (and durable if sync): publish it.
            data = off + FRAME_HEADER_SIZE + BODY_HEAD_SIZE + REC_TABLE * n
            klens = list(map(len, keys))
            if simple:
                vlens = list(map(len, vals))  # type: ignore[arg-type]
                inter: list[int] = [0] * (2 * n)
                inter[0::2] = klens
                inter[1::2] = vlens
                acc = list(accumulate(inter, initial=data))
                kd.update(zip(keys, zip(repeat(seg), acc[1::2], acc[2::2], checks)))
                gained = REC_TABLE * n + acc[-1] - data
                self._live += gained - lost
                self._dead += lost
            else:
                self._publish_slow(seg, data, keys, vals, checks, olds)
            if applied is not None:
                self._applied = applied
            dead = self._dead
            if dead > self._min_dead and dead > self._ratio * (self._live + dead):
                self._auto_compact()
            return prevs

    def _publish_slow(
        self, seg: SegmentFile, pos: int, keys: list[bytes], vals: list[bytes | None], checks: list[int], olds: list[Any]
    ) -> None:
        kd = self._kd
        assert isinstance(kd, dict)
        live = self._live
        dead = self._dead
        for k, v, c, old in zip(keys, vals, checks, olds):
            pos += len(k)
            if v is None:
                kd.pop(k, None)
                dead += REC_TABLE + len(k)
            else:
                end = pos + len(v)
                kd[k] = (seg, pos, end, c)
                live += REC_TABLE + len(k) + len(v)
                pos = end
            if old is not None:
                sz = REC_TABLE + len(k) + (len(vals[old[1]]) if old[0] is None else old[2] - old[1])
                live -= sz
                dead += sz
        self._live = live
        self._dead = dead

    def _rollover(self) -> SegmentFile:
        """Seal the active file (truncate to its end, fsync) and start the next one."""
        old = self._active
        assert old is not None
        self._preallocate(old, None)
        try:
            old.file.truncate(old.end)
            old.file.fsync()
        except OSError as e:
            err = SyncError(e.errno or errno.EIO, f"sealing key/value file failed: {e.strerror or e}", old.path)
            self._poison(err)
            raise err from e
        old.remap()
        old.durable = old.end
        try:
            new = self._create(old.seq + 1)
        except OutOfSpaceError:
            self._discard(_file_name(self._gen, old.seq + 1, "log"))
            raise
        except SyncError as e:
            self._poison(e)
            raise
        except StorageIOError:
            self._discard(_file_name(self._gen, old.seq + 1, "log"))
            raise
        self._files.append(new)
        self._active = new
        self._preallocate(None, new)
        return new

    def _discard(self, name: str) -> None:
        try:
            self._fs.unlink(self._path(name))
        except OSError:
            pass

    def flush(self) -> None:
        """Make everything written before it durable (fdatasync of the active file).

        A no-op when nothing is pending.  Raises :class:`SyncError` and poisons
        the store on failure: the writes since the last durable point are zeroed
        in the file and reads raise :class:`EnginePoisonedError` until reopen.
        """
        with self._wlock:
            if self._closed or self._readonly:
                return
            if self._poisoned is not None:
                raise EnginePoisonedError(f"key/value store refused: an earlier sync failed ({self._poisoned})")
            self._flush()

    def _flush(self) -> None:
        seg = self._active
        if seg is None or seg.durable >= seg.end:
            return
        start = seg.durable
        try:
            seg.sync()
        except SyncError as e:
            self._poison(e)
            # Never trust a failed sync: make the unsynced frames unreadable, now and after reopen.
            self._kd = _Refusing(EnginePoisonedError(f"key/value data lost by a failed sync ({e})"), len(self._kd))
            try:
                seg.file.pwrite(bytes(seg.end - start), start)
            except OSError:
                pass
            raise

    # -- compaction --------------------------------------------------------------

    def compact(self) -> None:
        """Rewrite the live data into one new file and delete the old files.

        Commit point: the rename of ``kv-G-S.tmp`` (complete and fdatasynced) to
        ``kv-G-S.merged`` followed by an fsync of the directory; the new file
        carries ``last_applied``.  Readers keep using the old files until the
        key directory is switched in one assignment.  The new file becomes the
        active file.  Complexity: O(live bytes).

        Raises:
            OutOfSpaceError / StorageIOError: the new file could not be written;
                the old files stay in use, nothing lost.
            SyncError: the directory fsync after the rename failed; poisoned.
        """
        with self._wlock:
            self._writable()
            self._compact()

    def _auto_compact(self) -> None:
        # The batch that triggered it is already committed: a failed compaction is
        # reported in the log, never as a failure of that apply.  A failure after
        # the rename has poisoned the store (the next write says so).
        try:
            self._compact()
        except (StorageIOError, OSError) as e:
            log.warning("key/value compaction in %s failed, will retry later: %s", self._dir, e)
        except CorruptionError as e:
            log.error("key/value compaction in %s stopped at damaged data: %s", self._dir, e)

    def _compact(self) -> None:
        fs = self._fs
        act = self._active
        assert act is not None
        kd = self._kd
        assert isinstance(kd, dict)
        seq = act.seq + 1
        tmp = self._path(_file_name(self._gen, seq, "tmp"))
        final = self._path(_file_name(self._gen, seq, "merged"))
        try:
            seg = SegmentFile.create(
                fs, tmp, engine_id=self._engine_id, seq=seq, uid=random.getrandbits(64), base=self._gen,
                prealloc=self._prealloc,
            )
        except BaseException:
            self._discard(tmp.rsplit("/", 1)[1])
            raise
        renamed = False
        try:
            new_kd: dict[bytes, _Loc] = {}
            live = 0
            keys: list[bytes] = []
            locs: list[_Loc] = []
            size = 0
            for k, loc in kd.items():
                keys.append(k)
                locs.append(loc)
                size += REC_TABLE + len(k) + loc[2] - loc[1]
                if size >= _COMPACT_CHUNK:
                    vals = list(self._read_locs(locs))
                    checks = [loc[3] for loc in locs]
                    live += self._write_chunk(seg, keys, vals, checks, new_kd, 0)
                    keys, locs, size = [], [], 0
            if keys:
                vals = list(self._read_locs(locs))
                checks = [loc[3] for loc in locs]
                live += self._write_chunk(seg, keys, vals, checks, new_kd, 0)
            # Last frame: carries last_applied, and claims everything before it durable
            # (true at the commit point, which comes only after the fdatasync below).
            self._write_chunk(seg, [], [], [], new_kd, FLAG_COMPACT_END, durable=seg.end)
            seg.sync()
            fs.rename(tmp, final)
            renamed = True
            seg.path = final
            seg.file.path = final
            try:
                fs.fsync_dir(self._dir)  # COMMIT POINT
            except OSError as e:
                err = SyncError(e.errno or errno.EIO, f"fsync of directory failed: {e.strerror or e}", self._dir)
                self._poison(err)
                raise err from e
        except BaseException:
            if not renamed:
                seg.close()
                self._discard(tmp.rsplit("/", 1)[1])
            raise
        old_files = self._files
        self._preallocate(self._active, None)
        self._kd = new_kd  # readers switch here; old maps stay valid while referenced
        self._files = [seg]
        self._active = seg
        self._preallocate(None, seg)
        self._live = live
        self._dead = 0
        for old in old_files:
            old.file.close()  # keep old.map: a concurrent reader may still slice it
        try:
            for old in old_files:
                fs.unlink(old.path)
            fs.fsync_dir(self._dir)
        except OSError as e:
            log.warning("key/value compaction in %s: removing old files failed (retried at open): %s", self._dir, e)

    def _write_chunk(
        self,
        seg: SegmentFile,
        keys: list[bytes],
        vals: Sequence[bytes | None],
        checks: list[int],
        new_kd: dict[bytes, _Loc],
        flags: int,
        durable: int = 0,
    ) -> int:
        n = len(keys)
        body = encode_kv_body(keys, list(vals), checks, self._applied, flags)
        off = seg.end
        seg.append(encode_frame(KIND_KV, 0, body, offset=off, durable=durable, prev_crc=seg.last_crc, count=n))
        pos = off + FRAME_HEADER_SIZE + BODY_HEAD_SIZE + REC_TABLE * n
        live = 0
        for k, v, c in zip(keys, vals, checks):
            pos += len(k)
            end = pos + len(v)  # type: ignore[arg-type]
            new_kd[k] = (seg, pos, end, c)
            live += REC_TABLE + len(k) + len(v)  # type: ignore[arg-type]
            pos = end
        return live

    # -- closing ---------------------------------------------------------------

    def close(self, *, clean: bool = True) -> None:
        """Flush, record a clean end (an empty frame whose durable claim covers the
        whole file, so later damage anywhere in it is corruption, not a torn
        tail), and release the files.  Idempotent.  A poisoned or read-only store,
        or ``clean=False`` (the engine around it is poisoned), is released
        without writing.
        """
        with self._wlock:
            if self._closed:
                return
            try:
                seg = self._active
                self._preallocate(seg, None)
                if clean and seg is not None and not self._readonly and self._poisoned is None:
                    self._flush()
                    body = encode_kv_body([], [], [], self._applied, FLAG_CLOSE)
                    off, prev_crc = seg.end, seg.last_crc
                    try:
                        seg.append(encode_frame(KIND_KV, 0, body, offset=off, durable=seg.durable, prev_crc=prev_crc))
                    except OutOfSpaceError as e:
                        # Everything is already synced; the clean-end marker is only a
                        # stronger claim for the next open.  A full disk must not make
                        # close fail.
                        log.warning("key/value clean-close marker not written (%s): disk full", e)
                        return
                    try:
                        seg.sync()
                    except SyncError as e:
                        seg.rollback(off, prev_crc)
                        self._poison(e)
                        raise
            finally:
                self._closed = True
                self._kd = _Refusing(EngineClosedError("key/value store is closed"), 0)
                for f in self._files:
                    f.file.close()
                self._files = []
                self._active = None

    def __enter__(self) -> KVStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
