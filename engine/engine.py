"""``WalEngine``: the StorageEngine facade over the segmented log, the hard-state
file and the key/value store.

It validates every argument before touching anything (a bad call raises and
changes nothing), serialises writers with one lock, and leaves crash safety to
the layers below (see :mod:`segwal.engine.log`).  Directory layout::

    <path>/LOCK            flock'ed while a writer has it open (read-only views: no lock)
    <path>/MANIFEST        segments, purge boundary, KV generation (atomic replace)
    <path>/HARDSTATE       term, vote, commit index (atomic replace)
    <path>/<seq>.wal       log segments;  <path>/<seq>.idx  their offset indexes
    <path>/kv/             key/value files (see docs/format-kv.md)
"""

from __future__ import annotations

import errno
import logging
import operator
import os
import random
import threading
from collections.abc import Iterable, Sequence
from dataclasses import replace
from types import TracebackType
from typing import Final, Literal

import numpy as np

from segwal.engine import hardstate as _hs
from segwal.engine.checks import MAX_PAYLOAD, reject_batch
from segwal.engine.keyvalue import KV_DIR, KeyValueOps
from segwal.engine.live import LiveViewOps
from segwal.engine.log import SegmentedLog
from segwal.engine.manifest import MANIFEST_NAME, Manifest, decode_manifest, encode_manifest
from segwal.engine.segments import SegmentInfo
from segwal.errors import (
    CorruptionError,
    EngineClosedError,
    EnginePoisonedError,
    LockedError,
    OutOfSpaceError,
    SegwalError,
    StorageIOError,
    SyncError,
)
from segwal.fs import (
    DEFAULT_DIR_MODE,
    DEFAULT_FILE_MODE,
    FileSystem,
    Lock,
    OsFileSystem,
    make_dirs,
    read_file,
    replace_file,
)
from segwal.kv import KVStore
from segwal.kv.files import KVFile
from segwal.types import Entry, HardState, LogId
from segwal.wal.format import MAX_SEGMENT_BYTES, SMALL_BATCH
from segwal.wal.prealloc import Preallocator

__all__ = ["WalEngine", "DEFAULT_SEGMENT_SIZE"]

log = logging.getLogger("segwal")

DEFAULT_SEGMENT_SIZE: Final = 64 << 20
MIN_SEGMENT_SIZE: Final = 256
_MAX_PAYLOAD: Final = MAX_PAYLOAD
_U64: Final = 1 << 64
_MAX_INDEX: Final = _U64 - 2  # the highest index an entry may have (index + 1 must fit in u64)
_LOCK_NAME: Final = "LOCK"
_ENTRY_ONLY: Final = {Entry}
_INT_ONLY: Final = frozenset((int,))
_BYTES_ONLY: Final = frozenset((bytes,))
_le = operator.le


class WalEngine(KeyValueOps, LiveViewOps):
    """A durable Raft log, hard state and key/value store in one directory.

    Args:
        path: the engine directory (created, with missing parents, if needed).
        segment_size: roll over to a new segment before a batch would push the
            current one past this many bytes (a larger batch gets a segment of
            its own).  256 bytes to 4 GiB.
        sync: ``"always"``: every mutating call is on stable storage when it
            returns.  ``"flush"``: writes reach the OS when the call returns
            (they survive a killed process) and :meth:`flush` makes them
            durable.  ``save_hard_state`` is durable on return in both modes.
        fs: the file system to use (default: the real one); ``segwal.testing``
            passes recording or fault-injecting ones.
        readonly: a view that takes no lock, opens nothing for writing and changes
            no file (beside a live writer in any process, or on a read-only mount),
            as of one manifest generation; :meth:`refresh` moves it forward.
            Mutating calls raise.  See ``segwal.engine.live``.
        preallocate: keep the tail segment written with zeros and synced a few
            MiB ahead of the writer, from a background thread, so appends do not
            pay for block allocation in their fdatasync.  Default: on for the
            real file system, off for any other ``fs`` (a recording or
            fault-injecting file system then sees one thread's operations, in a
            reproducible order).
        file_mode, dir_mode: permissions of the files (segments, indexes,
            MANIFEST, HARDSTATE, LOCK, key/value files, snapshots, temporary
            files) and directories the engine creates; default ``0o600`` and
            ``0o700`` (the log holds the application's commands, often secrets:
            only the owner may read it, as with etcd).  Widen them, e.g.
            ``file_mode=0o640, dir_mode=0o750``, to let a group read.  The
            process umask still applies; existing files keep their modes.  Only
            with the default ``fs`` (a custom file system decides for itself).

    Raises:
        LockedError: another writer (this or another process) holds the directory.
        CorruptionError: the directory holds damaged or inconsistent data.
        StorageIOError: an I/O error while opening.

    Thread safety: one writer at a time (writers are serialised by a lock);
    readers may run concurrently with the writer and with each other.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        segment_size: int = DEFAULT_SEGMENT_SIZE,
        sync: Literal["always", "flush"] = "always",
        fs: FileSystem | None = None,
        readonly: bool = False,
        preallocate: bool | None = None,
        file_mode: int = DEFAULT_FILE_MODE,
        dir_mode: int = DEFAULT_DIR_MODE,
    ) -> None:
        if type(segment_size) is not int or not MIN_SEGMENT_SIZE <= segment_size <= MAX_SEGMENT_BYTES:
            raise ValueError(
                f"segment_size must be an int from {MIN_SEGMENT_SIZE} to {MAX_SEGMENT_BYTES}, got {segment_size!r}"
            )
        if sync not in ("always", "flush"):
            raise ValueError(f"sync must be 'always' or 'flush', got {sync!r}")
        modes = OsFileSystem(file_mode=file_mode, dir_mode=dir_mode)  # checks both before anything happens
        if fs is not None and (file_mode, dir_mode) != (DEFAULT_FILE_MODE, DEFAULT_DIR_MODE):
            raise ValueError("file_mode and dir_mode apply to the default file system; set them on your fs instead")
        self._fs: FileSystem = fs if fs is not None else modes
        self._path = os.path.abspath(os.fspath(path))
        self._sync = sync
        self._segment_size = segment_size
        self._readonly = readonly
        if preallocate is None:
            preallocate = fs is None or type(fs) is OsFileSystem
        self._prealloc: Preallocator | None = None
        if preallocate and not readonly:
            self._prealloc = Preallocator(ahead=min(4 << 20, segment_size), chunk=min(512 << 10, segment_size))
        # Reentrant: a key/value compaction called by a thread that holds it commits under it.
        self._wlock = threading.RLock()
        self._closed = True
        self._lock: Lock | None = None
        self._kv: KVStore | None = None
        fsys = self._fs
        try:
            if readonly:  # no lock: a read-only view never keeps a writer out (engine/live.py)
                if not fsys.isdir(self._path):
                    raise FileNotFoundError(errno.ENOENT, "engine directory does not exist", self._path)
            else:
                make_dirs(fsys, self._path)
                try:
                    self._lock = fsys.lock(os.path.join(self._path, _LOCK_NAME))
                except BlockingIOError:
                    raise LockedError(
                        errno.EWOULDBLOCK, "engine directory is already open (locked by another engine)", self._path
                    ) from None
        except SegwalError:
            raise
        except OSError as e:
            raise StorageIOError(e.errno or errno.EIO, f"opening engine directory failed: {e.strerror or e}", self._path) from e
        try:
            try:
                self._open()
            except SegwalError:
                raise
            except OSError as e:
                # An I/O error while opening is reported as such, never taken for
                # damage: nothing was cut or rewritten on its account.
                raise StorageIOError(
                    e.errno or errno.EIO, f"I/O error while opening: {e.strerror or e}", e.filename or self._path
                ) from e
        except BaseException:
            if self._prealloc is not None:
                self._prealloc.close()
            if self._lock is not None:
                self._lock.release()
                self._lock = None
            raise
        self._closed = False

    def _open(self) -> None:
        if self._readonly:
            return self._open_view()
        fsys = self._fs
        mpath = os.path.join(self._path, MANIFEST_NAME)
        data = read_file(fsys, mpath)
        if data is None:
            leftovers = [n for n in fsys.listdir(self._path) if n.endswith(".wal") or n == _hs.HARDSTATE_NAME]
            if leftovers:
                raise CorruptionError(f"manifest is missing but the directory holds {sorted(leftovers)[:3]}", path=mpath)
            if self._readonly:
                raise CorruptionError("not a segwal directory (no manifest)", path=mpath)
            manifest = Manifest(random.getrandbits(64) or 1, 1, 1, 1, None, 0, (), kv_files=())
            replace_file(fsys, self._path, MANIFEST_NAME, encode_manifest(manifest))
        else:
            manifest = decode_manifest(data, mpath)
        self._log = SegmentedLog(
            fsys,
            self._path,
            manifest,
            segment_size=self._segment_size,
            sync_always=self._sync == "always",
            readonly=self._readonly,
            prealloc=min(1 << 20, self._segment_size),
            preallocator=self._prealloc,
        )
        self.notes = self._log.recover()
        self._hard = _hs.load_hard_state(fsys, self._path)
        if self._hard is None and manifest.hard_state_saved:
            raise CorruptionError(
                "hard state is missing: the manifest records that one was saved (a node that forgot its "
                "term and vote could vote twice in one term; see `segwal repair`)",
                path=os.path.join(self._path, _hs.HARDSTATE_NAME),
            )
        if self._hard is not None and not manifest.hard_state_saved and not self._readonly:
            self._log.record_manifest(hard_state_saved=True)  # saved by a crash-interrupted first save
        self._check_commit_index()
        kvdir = os.path.join(self._path, KV_DIR)
        if not fsys.exists(kvdir) and not self._readonly:
            fsys.mkdir(kvdir)
            fsys.fsync_dir(self._path)
        self._kv = self._open_kv(manifest.kv_generation)

    def _open_kv(self, generation: int) -> KVStore:
        m = self._log.manifest
        return KVStore.open(
            self._fs,
            os.path.join(self._path, KV_DIR),
            engine_id=m.engine_id,
            generation=generation,
            sync=self._sync == "always",
            file_size=self._segment_size,
            readonly=self._readonly,
            preallocator=self._prealloc,
            files=m.kv_files if generation == m.kv_generation else (),
            commit=self._commit_kv,
            outer_lock=self._wlock,  # a background compaction commits under it, like every writer
        )

    def _commit_kv(self, files: tuple[KVFile, ...]) -> None:
        """Record in the manifest which files hold the key/value store.  Durable on return."""
        self._log.record_manifest(kv_files=files)

    def _check_commit_index(self) -> None:
        hs = self._hard
        lg = self._log
        if hs is None or lg.manifest.reset_pending:
            return  # nothing saved, or the log was reset since: no claim on this log
        if hs.commit_index > lg.last_index():
            raise CorruptionError(
                f"hard state commit index {hs.commit_index} is beyond the last log index {lg.last_index()}: "
                "committed entries are missing",
                path=os.path.join(self._path, _hs.HARDSTATE_NAME),
                offset=32,
                index=lg.last_index() + 1,
            )

    # ------------------------------------------------------------ lifecycle

    def _live(self) -> SegmentedLog:
        if self._closed:
            raise EngineClosedError("the engine is closed")
        lg = self._log
        if lg.reads_poisoned:
            raise EnginePoisonedError(
                f"a flush failed ({lg.poisoned}); what was not synced was cut: reopen the engine to read"
            )
        return lg

    def _writable(self) -> SegmentedLog:
        lg = self._live()
        if self._readonly:
            raise PermissionError(errno.EROFS, "engine was opened readonly", self._path)
        if lg.poisoned is not None:
            raise EnginePoisonedError(
                f"a previous sync failed ({lg.poisoned}); reopen the engine to recover what is durable"
            )
        return lg

    def close(self) -> None:
        """Flush, record a clean end, release files and the directory lock.  Idempotent.

        Durability: everything written before is durable when it returns.
        """
        if self._closed:
            return
        with self._wlock:
            self._closed = True
            try:
                clean = not self._readonly and self._log.poisoned is None
                if self._prealloc is not None:
                    self._prealloc.close()
                self._log.close(clean)
                if self._kv is not None:
                    self._kv.close(clean=clean)
            finally:
                if self._lock is not None:
                    self._lock.release()
                    self._lock = None

    def __enter__(self) -> WalEngine:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def is_write_durable(self) -> bool:
        """Whether each mutating call is durable on return (``sync="always"``)."""
        return self._sync == "always"

    @property
    def path(self) -> str:
        """The engine directory."""
        return self._path

    # ------------------------------------------------------------------ log

    def persist_entries(self, entries: Iterable[Entry]) -> None:
        """Append a batch, atomically; entries from its first index on are replaced.

        Indexes must be contiguous and ascending, the first in
        ``[first_index(), last_index()+1]`` (any index >= 1 on an empty log with no
        purge boundary), terms non-decreasing along the log.

        Durability: on stable storage when it returns with ``sync="always"``;
        reaches the OS with ``"flush"``.  A crash leaves all of the batch or none.
        Complexity: O(n + bytes), one write and one fdatasync.

        Raises:
            ValueError: a contract violation, naming the offending index; nothing changed.
            TypeError: an element is not an ``Entry`` or a payload not ``bytes``.
        """
        if type(entries) is list and len(entries) == 1:
            # One entry extending the log: checked here, appended without the batch machinery.
            e = entries[0]
            if type(e) is Entry:
                i1, t1, p1 = e
                if (type(i1) is int and type(t1) is int and type(p1) is bytes and 0 < i1 <= _MAX_INDEX
                        and 0 <= t1 < _U64 and len(p1) <= _MAX_PAYLOAD):
                    wlock = self._wlock
                    wlock.acquire()  # not ``with``: that builds two bound methods per call
                    try:
                        # append_one itself refuses a poisoned log; closed and readonly are checked here.
                        if not (self._closed or self._readonly) and self._log.append_one(i1, t1, p1):
                            return
                    finally:
                        wlock.release()
        batch = entries if type(entries) is list else list(entries)
        n = len(batch)
        if n == 0:
            return
        # Fast path: one C-level pass per column; any doubt goes to _reject(),
        # which walks the batch and names the offending entry.
        try:
            idxs, terms, payloads = zip(*batch)
            first = idxs[0]
            ok = (
                type(first) is int
                and 1 <= first
                and first + n <= 1 << 64
                and idxs == tuple(range(first, first + n))
                and set(map(type, batch)) == _ENTRY_ONLY
            )
        except (TypeError, ValueError):
            ok = False
        if not ok:
            reject_batch(batch)
        if n > SMALL_BATCH:
            t = np.array(terms)
            # non-decreasing and the first >= 0 means all >= 0
            if t.dtype.kind not in "iu" or terms[0] < 0 or bool((t[1:] < t[:-1]).any()):
                reject_batch(batch)
            if not _BYTES_ONLY.issuperset(map(type, payloads)):
                reject_batch(batch)
            sizes = np.fromiter(map(len, payloads), dtype=np.uint64, count=n)
            total = int(sizes.sum())  # bounds every payload too
            if total > _MAX_PAYLOAD:
                reject_batch(batch)
            column: Sequence[int] | np.ndarray = t  # the encoder reuses the validated array
        else:
            if not (
                _INT_ONLY.issuperset(map(type, terms))
                and _BYTES_ONLY.issuperset(map(type, payloads))
                and all(map(_le, terms, terms[1:]))
                and terms[0] >= 0
                and terms[-1] < 1 << 64
            ):
                reject_batch(batch)
            sizes = None
            column = terms
            total = sum(map(len, payloads))
            if total > _MAX_PAYLOAD:
                reject_batch(batch)
        with self._wlock:
            lg = self._writable()
            lo, last = lg.first_index(), lg.last_index()
            if not (lo > last and lg.manifest.purge is None) and not lo <= first <= last + 1:
                raise ValueError(
                    f"entry {first}: the first index of a batch must lie in [{lo}, {last + 1}] "
                    f"(first_index() .. last_index()+1)"
                )
            prev = lg.last_term() if first == last + 1 else (lg.term_of(first - 1) if first > 1 else None)
            if prev is not None and terms[0] < prev:
                raise ValueError(f"entry {first}: term {terms[0]} is lower than the term {prev} of entry {first - 1}")
            lg.append(first, column, payloads, total, sizes)

    def entry(self, index: int) -> Entry | None:
        """The entry at ``index``, or ``None`` when it is not in the log (0, purged,
        truncated, past the end).  Checksum verified.

        Complexity: O(1) in the log size (a bisect over segment starts and one
        array lookup), plus O(len(payload)) to verify it.
        """
        if type(index) is not int:
            raise TypeError(f"index must be an int, got {index!r}")
        lg = self._log
        if self._closed or lg.reads_poisoned:
            self._live()  # raises
        return lg.entry(index)

    def get_entries_range(self, start: int, end: int) -> list[Entry]:
        """Entries ``start..end`` inclusive that exist, ascending (purged and
        past-the-end indexes skipped); ``[]`` when ``start > end``.  Checksums verified.

        Complexity: O(number of entries + their bytes).
        """
        if type(start) is not int or type(end) is not int:
            raise TypeError(f"start and end must be ints, got {start!r}, {end!r}")
        return self._live().entries(start, end)

    def last_index(self) -> int:
        """Highest index in the log; 0 for a new engine; never lowered by a purge.  O(1)."""
        return self._live().last_index()

    def first_index(self) -> int:
        """Lowest readable index; ``last_index()+1`` when the log is empty.  O(1)."""
        return self._live().first_index()

    def term_of(self, index: int) -> int | None:
        """Term of the entry at ``index``, or of the purge boundary when ``index`` is
        the boundary; ``None`` otherwise.  O(1) plus one verified read."""
        if type(index) is not int:
            raise TypeError(f"index must be an int, got {index!r}")
        return self._live().term_of(index)

    def purge_boundary(self) -> LogId | None:
        """The last purged ``LogId``, or ``None``; survives reopen.  O(1)."""
        return self._live().manifest.purge

    def truncate(self, from_index: int) -> None:
        """Remove every entry ``>= from_index``.  A no-op beyond the end.

        Durability: follows ``sync`` like appends.  Complexity: O(1) I/O (one small
        frame, or a new segment and a manifest write when cutting below the tail
        segment).

        Raises:
            ValueError: ``from_index`` is at or below the purge boundary, or < 1.
        """
        if type(from_index) is not int:
            raise TypeError(f"from_index must be an int, got {from_index!r}")
        with self._wlock:
            lg = self._writable()
            p = lg.manifest.purge
            if p is not None and from_index <= p.index:
                raise ValueError(f"from_index {from_index} is at or below the purge boundary {p.index}")
            if from_index < 1:
                raise ValueError(f"from_index must be >= 1, got {from_index}")
            if from_index > lg.last_index():
                return
            lg.truncate(from_index)

    def purge_logs(self, cutoff: LogId) -> None:
        """Remove every entry ``<= cutoff.index`` and record ``cutoff`` as the purge
        boundary.  Whole segments at or below it are deleted from disk.  A cutoff at
        or below the current boundary is a no-op, and so is one below
        ``first_index()-1`` when no boundary is set (nothing to purge).

        Durability: the boundary is durable on return (manifest rename).
        Complexity: O(segments) plus the unlinks.

        Raises:
            ValueError: ``cutoff.index`` is in the log with another term.
        """
        if not isinstance(cutoff, LogId):
            raise TypeError(f"cutoff must be a LogId, got {cutoff!r}")
        with self._wlock:
            lg = self._writable()
            p = lg.manifest.purge
            if p is not None and cutoff.index <= p.index:
                return
            lo, last = lg.first_index(), lg.last_index()
            if p is None and cutoff.index < lo - 1:
                return
            if lo <= cutoff.index <= last:
                term = lg.term_of(cutoff.index)
                if term is not None and term != cutoff.term:
                    raise ValueError(
                        f"cutoff {cutoff}: entry {cutoff.index} has term {term}, not {cutoff.term} "
                        "(a snapshot of a different history)"
                    )
            lg.purge(cutoff)

    def flush(self) -> None:
        """Return when everything written before is on stable storage.

        Complexity: one fdatasync per dirty file.
        """
        with self._wlock:
            lg = self._writable()
            lg.flush()
            if self._kv is not None:
                try:
                    self._kv.flush()
                except SyncError as e:
                    lg.poisoned = e
                    raise

    def reset(self) -> None:
        """Clear every log entry, the purge boundary, the key/value data and
        ``last_applied()``.  The hard state is kept.  Atomic: a crash leaves the old
        state or the fully reset one.  Durable on return (manifest rename).
        """
        with self._wlock:
            lg = self._writable()
            lg.reset()
            old, self._kv = self._kv, self._open_kv(lg.manifest.kv_generation)  # readers move first
            if old is not None:
                old.close(clean=False)  # its generation is gone: nothing to record

    def segments(self) -> list[SegmentInfo]:
        """The live segments, in log order (for inspection tools).  O(segments)."""
        return self._live().segments_info()

    # ------------------------------------------------------------ hard state

    def load_hard_state(self) -> HardState | None:
        """The saved hard state, or ``None`` if none was ever saved.  O(1)
        (read and verified at open; a damaged file makes open raise CorruptionError)."""
        self._live()
        return self._hard

    def save_hard_state(self, hard_state: HardState) -> None:
        """Durably replace the hard state (temporary file, fsync, rename, directory
        fsync).  Durable on return in both sync modes; a crash leaves exactly the
        old or the new value.
        """
        if not isinstance(hard_state, HardState):
            raise TypeError(f"hard_state must be a HardState, got {hard_state!r}")
        with self._wlock:
            lg = self._writable()
            if self._sync == "flush" and hard_state.commit_index > 0:
                # The commit index claims entries up to it exist; make the log back
                # that claim before it is durable (a power loss must not leave a
                # commit index beyond the log).
                lg.flush()
            try:
                _hs.save_hard_state(self._fs, self._path, hard_state)
            except SyncError as e:
                lg.poisoned = e
                raise
            self._hard = hard_state
            if not lg.manifest.hard_state_saved:
                # From now on a missing HARDSTATE is damage, not "never saved".  If
                # this write fails the flag still rides on the next manifest write.
                try:
                    lg.record_manifest(hard_state_saved=True)
                except (OutOfSpaceError, StorageIOError) as e:
                    log.warning("hard-state flag not yet recorded in the manifest (%s)", e)
                    lg.manifest = replace(lg.manifest, hard_state_saved=True)
