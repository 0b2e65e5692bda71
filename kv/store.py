"""The key/value store ``KVStore``: a Bitcask-style append-only record log with an in-memory key directory.

Strategy: every :meth:`KVStore.apply` is ONE ``KIND_KV`` frame (``wal/format.py``)
appended to the active record file with one ``pwritev`` and, when ``sync`` is
true, one ``fdatasync``.  The frame carries all the changes of the batch and
the optional ``applied`` :class:`LogId`, so a crash leaves the whole batch or
none of it.  The key directory maps each live key to ``(file, start, end,
xxh3)`` of its value; :meth:`KVStore.get` is a dict lookup, one slice of the
file's shared map and one xxh3 check.  ``docs/format-kv.md`` is the
byte-by-byte spec and gives the commit point of apply, compaction and reset.

The frame body is ``kv/codec.py``'s, the files and their names are
``kv/files.py``'s, and rewriting the live data into one file is
``kv/compaction.py``'s; this module owns the key directory, opening (replay),
reads, writes, flush and close.

Thread safety: one writer at a time (apply, flush, compact and close take an
internal lock); :meth:`KVStore.get`, ``len`` and :meth:`KVStore.last_applied`
run concurrently with the writer and never block (except to rebuild a damaged
key index).  A reader concurrent with an ``apply`` may see part of that batch;
a crash never leaves such a half state.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import threading
from collections.abc import Callable, Iterable
from itertools import accumulate, compress, repeat
from typing import Any

import xxhash

from segwal.errors import (
    EngineClosedError,
    EnginePoisonedError,
    OutOfSpaceError,
    StorageIOError,
    SyncError,
)
from segwal.fs import FileSystem
from segwal.kv.codec import (
    BODY_HEAD_SIZE,
    REC_TABLE,
    encode_kv_padded,
    split_changes,
)
from segwal.kv.compaction import Compaction, auto_compact, compact_now, stop_compaction
from segwal.kv.files import (
    KVFile,
    Loc,
    create_file,
    file_name,
    move_zeroing,
    read_locs,
    seal_file,
    write_clean_end,
)
from segwal.kv.keydir import (
    Checkpoint,
    KeyDir,
    KVStats,
    Refusing,
    checkpoint_store,
    index_damaged,
    maybe_checkpoint,
    publish_slow,
    stop_checkpoint,
)
from segwal.kv.keyindex import IndexDamaged
from segwal.kv.opening import recover_store
from segwal.types import LogId
from segwal.wal.format import FRAME_HEADER_SIZE, KIND_KV, SEGMENT_HEADER_SIZE, encode_frame
from segwal.wal.prealloc import Preallocator
from segwal.wal.segment import SegmentFile

__all__ = ["KVStats", "KVStore"]

log = logging.getLogger("segwal.kv")

_xxh3 = xxhash.xxh3_64_intdigest

#: Defaults of :meth:`KVStore.open`'s ``index_every``/``index_min_keys`` (read at each open: tests lower them).
INDEX_EVERY = 1 << 18
INDEX_MIN_KEYS = 1 << 16


class KVStore:
    """A crash-safe key/value store in its own directory (see the module docstring).

    Invariants: ``_files`` are the record files in use, in sequence order, the
    last one (``_active``) takes appends; every other one is sealed (truncated
    to its last frame and fsynced) or is a committed compaction output.
    """

    __slots__ = (
        "_active",
        "_applied",
        "_ckpt",
        "_closed",
        "_commit",
        "_compaction",
        "_dead",
        "_dir",
        "_engine_id",
        "_file_size",
        "_files",
        "_fs",
        "_gen",
        "_index_every",
        "_index_min",
        "_kd",
        "_last_off",
        "_live",
        "_min_dead",
        "_outer",
        "_pa",
        "_poisoned",
        "_prealloc",
        "_ratio",
        "_readonly",
        "_sync",
        "_tracked",
        "_wlock",
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
    _index_every: int
    _index_min: int

    def __init__(self) -> None:  # use KVStore.open
        self._kd: KeyDir | Refusing = KeyDir()
        self._files: list[SegmentFile] = []
        self._active: SegmentFile | None = None
        self._live = 0
        self._dead = 0
        self._applied: LogId | None = None
        self._poisoned: BaseException | None = None
        self._closed = False
        self._wlock = threading.Lock()
        self._pa: Preallocator | None = None
        self._tracked: tuple[KVFile, ...] | None = None
        self._commit: Callable[[tuple[KVFile, ...]], None] | None = None
        self._last_off = SEGMENT_HEADER_SIZE  # start of the active file's last frame (the header: none)
        self._compaction: Compaction | None = None  # running in the background
        self._ckpt: Checkpoint | None = None  # a key index being written in the background
        self._outer: Any = None  # the engine's write lock, reentrant (see open)

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
        files: tuple[KVFile, ...] | None = None,
        commit: Callable[[tuple[KVFile, ...]], None] | None = None,
        index_every: int | None = None,
        index_min_keys: int | None = None,
        use_index: bool = True,
        outer_lock: Any = None,
    ) -> KVStore:
        """Open (or create) the store in directory ``path`` (which must exist, except
        in read-only mode).

        Files of any other ``generation`` (unless ``keep_other_generations``: used
        to stage a snapshot install beside the live generation) and stray
        ``.tmp`` files of this one are deleted;
        files made obsolete by a committed compaction are deleted; the record
        files are replayed into the key directory; a torn tail of the last file
        is cut with a WARNING.  Nothing is modified when ``readonly``.

        ``files`` is the list of record files the engine's manifest committed
        (``None`` for a directory whose manifest predates the list): every one
        must be there, sealed ones at their exact size and the active one intact
        up to its durable claim; any other file of the generation is a leftover
        and is deleted.  ``commit`` durably records a new list (the engine writes
        its manifest); it is called when the files change (a new store, a
        rollover, a compaction, a clean close), each time before anything that
        relies on the new list is acknowledged.

        The key index (``kv-G.index``, ``kv/keyindex.py``) is a checkpoint of the
        key directory: when a usable one is there, open reads no record file
        below the position it covers and replays only the frames after it.  It
        is written when ``index_every`` keys changed since the last one (or a
        quarter of the indexed keys, if more), and at a clean close of a store of
        at least ``index_min_keys`` keys or that already has one (defaults:
        :data:`INDEX_EVERY`, :data:`INDEX_MIN_KEYS`).  ``use_index=False`` replays
        everything (``segwal verify``).  ``outer_lock``: the engine's (reentrant) write
        lock, taken before the store's by a compaction or checkpoint to commit.

        Complexity: with a usable key index, O(files + frames written after its
        checkpoint); otherwise O(records and bytes in the files), bounded by
        compaction to about twice the live data (see docs/format-kv.md, "Open").

        Raises:
            CorruptionError: damage in a non-last file, damage below a durable
                claim in the last file, a missing file, a foreign file.
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
        self._tracked, self._outer = files, outer_lock
        self._commit = None if readonly else commit
        self._index_every = max(1, INDEX_EVERY if index_every is None else index_every)
        self._index_min = INDEX_MIN_KEYS if index_min_keys is None else index_min_keys
        try:
            recover_store(self, keep_other_generations, use_index)
        except BaseException:
            for seg in self._files:
                seg.file.close()
            raise
        return self

    def _path(self, name: str) -> str:
        return f"{self._dir}/{name}"

    def file_list(self, active_claim: int) -> tuple[KVFile, ...]:
        """The record files in use as the manifest lists them, with ``active_claim``
        as the durable claim of the active file.  O(files)."""
        files = self._files
        out = [KVFile(f.seq, f.uid, f.end) for f in files[:-1]]
        if files:
            out.append(KVFile(files[-1].seq, files[-1].uid, active_claim))
        return tuple(out)

    def _commit_files(self, active_claim: int, files: list[SegmentFile] | None = None) -> None:
        """Have the engine record which files hold the store (its manifest write).  Durable on return."""
        commit = self._commit
        if commit is None:
            return
        if files is not None:
            saved, self._files = self._files, files
            try:
                listed = self.file_list(active_claim)
            finally:
                self._files = saved
        else:
            listed = self.file_list(active_claim)
        commit(listed)
        self._tracked = listed

    # -- reading ---------------------------------------------------------------

    def get(self, key: bytes) -> bytes | None:
        """The value of ``key``, or ``None``.  The value's xxh3 is verified on every read.

        Complexity: O(1) plus O(len(value)): a dict lookup, then either a slice
        of the file's map (a key changed since the key index was written) or a
        probe of the mapped index and one ``pread`` of the record; one xxh3.
        Never blocks on the writer (except to rebuild a damaged key index).

        Raises:
            CorruptionError: the stored value no longer matches its checksum.
            EngineClosedError: the store was closed.
        """
        try:
            return self._kd.value(key)
        except IndexDamaged as exc:
            return self._index_damaged(exc).value(key)

    def __len__(self) -> int:
        """Number of live keys.  O(1)."""
        return len(self._kd)

    def last_applied(self) -> LogId | None:
        """The ``LogId`` recorded by the latest ``apply(..., applied=...)``, or ``None``. O(1)."""
        return self._applied

    def capture(self) -> tuple[list[bytes], list[Loc], LogId | None]:
        """A consistent view of the store for a snapshot: the keys, where their
        values are, and ``last_applied``.  O(keys), no value is read.

        The caller must hold off writers during the call (the engine's write
        lock); the values are read afterwards with :meth:`read_values`, which
        stays valid across later writes and compactions (locations keep their
        file's map alive).
        """
        try:
            items = list(self._kd.items())  # a closed or poisoned store raises its error
        except IndexDamaged as e:
            items = list(self._index_damaged(e, locked=True).items())
        return [k for k, _ in items], [v for _, v in items], self._applied

    def read_values(self, locs: list[Loc]) -> list[bytes]:
        """The values at ``locs`` (from :meth:`capture`), each verified.  O(bytes)."""
        return read_locs(locs) if locs else []

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
        keys, vals, has_none, klens, vlens = split_changes(changes)
        n = len(keys)
        if n == 0 and applied is None:
            return []
        with self._wlock:
            self._writable()
            kd = self._kd
            assert isinstance(kd, KeyDir)
            try:  # without a key index every key is in the overlay: one C-level pass
                olds: list[Any] = kd.get_many(keys)
            except IndexDamaged as e:
                kd = self._index_damaged(e, locked=True)
                olds = kd.get_many(keys)
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
            else:  # no (None, i) marker: every old is a Loc or None
                present = list(filter(None, olds))
            lost = 0
            if present:
                pv = read_locs(present)
                if len(pv) == n:
                    prevs: list[bytes | None] = pv  # type: ignore[assignment]
                else:
                    it = iter(pv)
                    prevs = [None if loc is None else (vals[loc[1]] if loc[0] is None else next(it)) for loc in olds]
                if simple:
                    lost = REC_TABLE * len(pv) + sum(map(len, pv)) + sum(compress(klens, olds))
            elif simple:
                prevs = olds  # all None
            else:
                prevs = [None if loc is None else vals[loc[1]] for loc in olds]
            checks = [0 if v is None else _xxh3(v) for v in vals] if has_none else list(map(_xxh3, vals))
            body = encode_kv_padded(keys, vals, klens, vlens, checks, applied, deletes=has_none)
            frame_len = FRAME_HEADER_SIZE + len(body)
            seg = self._active
            assert seg is not None
            if seg.end > SEGMENT_HEADER_SIZE and seg.end + frame_len > self._file_size and self._compaction is None:
                seg = self._rollover()
            off = seg.end
            prev_crc = seg.last_crc
            frame = encode_frame(KIND_KV, 0, body, offset=off, durable=seg.durable, prev_crc=prev_crc, count=n)
            seg.append(frame)  # cuts back and raises OutOfSpaceError/StorageIOError on failure
            self._last_off = off
            pa = self._pa
            if pa is not None and seg.zeroed - seg.end < pa.ahead // 2:
                pa.register(seg, self._file_size)  # from the first write on; a no-op after
            if self._sync:
                try:
                    seg.sync()
                except SyncError as e:
                    seg.rollback(off, prev_crc)
                    self._last_off = -1  # unknown until the next frame: no checkpoint
                    self._poison(e)
                    raise
            # The frame is written (and durable if sync): publish it.
            data = off + FRAME_HEADER_SIZE + BODY_HEAD_SIZE + REC_TABLE * n
            if simple:
                inter: list[int] = [0] * (2 * n)
                inter[0::2] = klens
                inter[1::2] = vlens
                acc = list(accumulate(inter, initial=data))
                kd.put_many(zip(keys, zip(repeat(seg), acc[1::2], acc[2::2], checks)), n - len(present))
                gained = REC_TABLE * n + acc[-1] - data
                self._live += gained - lost
                self._dead += lost
            else:
                publish_slow(self, seg, data, keys, vals, checks, olds)
            if applied is not None:
                self._applied = applied
            if self._ckpt is not None:
                self._ckpt.changed.extend(keys)  # laid over the new index when it switches
            dead = self._dead
            if dead > self._min_dead and dead > self._ratio * (self._live + dead):
                auto_compact(self)
            kd = self._kd
            if isinstance(kd, KeyDir) and not (self._compaction or self._ckpt) and len(kd.over) >= self._index_every and (
                kd.table is None or len(kd.over) >= kd.table.head.nkeys // 4
            ):
                maybe_checkpoint(self)
            return prevs

    def _rollover(self) -> SegmentFile:
        """Seal the active file (truncate to its end, fsync) and start the next one."""
        old = self._active
        assert old is not None
        move_zeroing(self._pa, old, None, self._file_size)
        try:
            seal_file(old)
        except SyncError as e:
            self._poison(e)
            raise
        try:
            new = create_file(
                self._fs, self._dir, engine_id=self._engine_id, generation=self._gen, seq=old.seq + 1,
                prealloc=self._prealloc,
            )
        except OutOfSpaceError:
            self._discard(file_name(self._gen, old.seq + 1, "log"))
            raise
        except SyncError as e:
            self._poison(e)
            raise
        except StorageIOError:
            self._discard(file_name(self._gen, old.seq + 1, "log"))
            raise
        try:
            self._commit_files(new.durable, self._files + [new])
        except SyncError as e:
            new.discard()
            self._poison(e)
            raise
        except BaseException:
            new.discard()  # the manifest still lists the old file as active: it goes on
            self._discard(file_name(self._gen, old.seq + 1, "log"))
            move_zeroing(self._pa, None, old, self._file_size)
            raise
        self._files.append(new)
        self._active = new
        self._last_off = SEGMENT_HEADER_SIZE
        move_zeroing(self._pa, None, new, self._file_size)
        return new

    def _discard(self, name: str) -> None:
        with contextlib.suppress(OSError):
            self._fs.unlink(self._path(name))

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
            self._kd = Refusing(EnginePoisonedError(f"key/value data lost by a failed sync ({e})"), len(self._kd))
            try:
                seg.file.pwrite(bytes(seg.end - start), start)
            except OSError:
                pass
            raise

    def _checkpoint(self) -> None:
        """Write the key index (:func:`segwal.kv.keydir.checkpoint_store`).  Under the write lock."""
        checkpoint_store(self)

    def _index_damaged(self, e: IndexDamaged, *, locked: bool = False) -> KeyDir:
        """Drop a damaged key index and rebuild the key directory (:func:`segwal.kv.keydir.index_damaged`)."""
        with contextlib.nullcontext() if locked else self._wlock:
            return index_damaged(self, e)

    def compact(self) -> None:
        """Rewrite the live data into one new file, delete the old files; returns when done.
        The copy runs in a thread while writers go on (``kv/compaction.py``); commit
        point: the manifest listing the new file (docs/format-kv.md).  O(live bytes).

        Raises:
            OutOfSpaceError / StorageIOError / SyncError: as :meth:`apply`; nothing lost.
        """
        compact_now(self)

    # -- closing ---------------------------------------------------------------

    def close(self, *, clean: bool = True) -> None:
        """Flush, record a clean end (an empty frame whose durable claim covers the
        whole file, so later damage anywhere in it is corruption, not a torn
        tail), and release the files.  Idempotent.  A poisoned or read-only store,
        or ``clean=False`` (the engine around it is poisoned), is released
        without writing.  A compaction running in the background is stopped first.
        """
        stop_compaction(self)
        stop_checkpoint(self)
        with self._wlock:
            if self._closed:
                return
            try:
                seg = self._active
                move_zeroing(self._pa, seg, None, self._file_size)
                if clean and seg is not None and not self._readonly and self._poisoned is None:
                    self._flush()
                    before = seg.end
                    try:
                        write_clean_end(seg, self._applied)
                    except SyncError as e:
                        self._poison(e)
                        raise
                    if seg.end != before:
                        self._last_off = before
                    seg.durable = seg.end
                    checkpoint_store(self, closing=True)
                    try:
                        self._commit_files(seg.end)  # the clean end becomes a claim on the whole file
                    except (OutOfSpaceError, StorageIOError) as e:
                        log.warning("key/value clean end not recorded in the manifest (%s)", e)
            finally:
                self._closed = True
                retired = self._kd.retired if isinstance(self._kd, KeyDir) else []
                self._kd = Refusing(EngineClosedError("key/value store is closed"), 0)
                for f in self._files + retired:
                    f.file.close()
                self._files = []
                self._active = None

    def __enter__(self) -> KVStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
