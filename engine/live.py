"""Read-only views of a live engine directory: opened without a lock, as of one manifest generation, moved forward by ``refresh()``.

A ``WalEngine(path, readonly=True)`` shares its directory with a writer that may
run in another process at the same time.  It takes no lock, opens every file
read-only and changes none, and reads what one manifest generation names:

* the MANIFEST first (replaced atomically, so always read whole), then the
  hard state (saved before any manifest that records it), then the tail
  segment and the active key/value file, each copied whole with one ``pread``
  (the writer may append to them, or cut them at a seal, a close or its own
  open, which would fault a shared map); sealed segments and sealed key/value
  files never change again and are mapped (the log's sealed segments on first
  read, as in any engine);
* the view is every entry up to the last complete, verified frame of the tail
  at the moment it was read: a frame still being written ends it, silently;
* a check that fails while being read (a file the writer removed, a frame
  half-copied while written, a hard state newer than the log read before it)
  is read again: only a failure that repeats at one manifest generation is
  reported (``CorruptionError``); a directory that keeps changing for
  :data:`MAX_WAIT` seconds raises ``StaleViewError``;
* after open, a read of a sealed segment that the writer has since removed (a
  purge, a truncation below it) raises ``StaleViewError``; ``refresh()`` moves
  the view to the current generation, keeping the sealed segments already opened.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from typing import Final, NamedTuple, Protocol

from segwal.engine import hardstate as _hs
from segwal.engine.keyvalue import KV_DIR
from segwal.engine.log import SegmentedLog
from segwal.engine.manifest import MANIFEST_NAME, decode_manifest
from segwal.errors import CorruptionError, EngineClosedError, StaleViewError
from segwal.fs import FileSystem, read_file
from segwal.index.offsets import SealedIndex
from segwal.kv import KVStore
from segwal.types import HardState

__all__ = ["LiveView", "LiveViewOps", "read_view", "MAX_WAIT"]

#: Seconds a read-only open or refresh keeps re-reading a directory whose writer
#: changes it under every attempt before it gives up with ``StaleViewError``.
MAX_WAIT: Final = 10.0
#: Reads of one manifest generation that must fail alike before the failure is reported.
_STABLE_FAILURES: Final = 3


class LiveView(NamedTuple):
    """One consistent read of an engine directory (what a read-only engine serves)."""

    log: SegmentedLog
    hard: HardState | None
    kv: KVStore
    notes: list[str]


def read_view(
    fs: FileSystem, path: str, *, segment_size: int, previous: SegmentedLog | None = None, max_wait: float = MAX_WAIT
) -> LiveView:
    """Read the directory ``path`` as of one manifest generation, without a lock and
    without changing anything (see the module docstring).

    ``previous`` (an earlier view's log) lends its opened sealed segments that
    the new generation still lists.  Durability: reads only.  Complexity: the
    tail segment and the key/value files are read whole, O(their bytes); no
    other sealed segment is read.

    Raises:
        CorruptionError: damage that every read of one manifest generation finds.
        StaleViewError: the writer changed the directory under every attempt for ``max_wait`` s.
        StorageIOError: an I/O error.
    """
    mpath = os.path.join(path, MANIFEST_NAME)
    deadline = time.monotonic() + max_wait
    failures = 0
    while True:
        data = read_file(fs, mpath)
        if data is None:
            raise CorruptionError("not a segwal directory (no manifest)", path=mpath)
        try:
            return _read_once(fs, path, data, segment_size, previous)
        except (CorruptionError, OSError) as e:  # StorageIOError is an OSError
            # The writer's work in progress, or damage?  Read again: the same
            # failure at the same manifest generation, several times, is damage.
            failures = failures + 1 if read_file(fs, mpath) == data else 0
            if failures >= _STABLE_FAILURES:
                raise
            if time.monotonic() > deadline:
                raise StaleViewError(
                    f"{path}: the writer changed the directory under every read for {max_wait:g} s (last: {e})"
                ) from e
            time.sleep(0.001 * failures)


def _read_once(fs: FileSystem, path: str, data: bytes, segment_size: int, previous: SegmentedLog | None) -> LiveView:
    m = decode_manifest(data, os.path.join(path, MANIFEST_NAME))
    hard = _hs.load_hard_state(fs, path)  # after the manifest: never older than what it records
    lg = SegmentedLog(
        fs, path, m, segment_size=segment_size, sync_always=False, readonly=True, prealloc=min(1 << 20, segment_size)
    )
    lent = _borrow_sealed(lg, previous) if previous is not None else set()
    try:
        notes = lg.recover()
        if hard is None and m.hard_state_saved:
            raise CorruptionError(
                "hard state is missing: the manifest records that one was saved",
                path=os.path.join(path, _hs.HARDSTATE_NAME),
            )
        if hard is not None and not m.reset_pending and hard.commit_index > lg.last_index():
            raise CorruptionError(
                f"hard state commit index {hard.commit_index} is beyond the last log index {lg.last_index()}: "
                "committed entries are missing",
                path=os.path.join(path, _hs.HARDSTATE_NAME),
                offset=32,
                index=lg.last_index() + 1,
            )
        kv = KVStore.open(
            fs, os.path.join(path, KV_DIR), engine_id=m.engine_id, generation=m.kv_generation, sync=False,
            file_size=segment_size, readonly=True, files=m.kv_files,
        )
    except BaseException:
        release(lg, lent)
        raise
    lg.on_failed_read = _StaleCheck(fs, path, lg)
    return LiveView(lg, hard, kv, notes)


def _borrow_sealed(lg: SegmentedLog, previous: SegmentedLog) -> set[int]:
    """Give ``lg``'s sealed segments the files and indexes ``previous`` already opened
    for the same segments (same ``seq`` and ``uid``); returns their ids.  O(segments)."""
    old = {(s.seq, s.uid): s for s in previous._view.segs[:-1]}
    lent: set[int] = set()
    for s in lg._segs[:-1]:
        o = old.get((s.seq, s.uid))
        if o is None or o.file is None or o.index is None:
            continue
        count = s.last - s.base + 1
        idx = o.index
        if isinstance(idx, SealedIndex):
            if count > idx.count:
                continue
            if count < idx.count:
                idx = idx.with_count(count)
        s.file, s.index = o.file, idx
        lent.add(id(o.file))
    return lent


def release(lg: SegmentedLog, keep: set[int]) -> None:
    """Close the file handles of ``lg``'s segments except those in ``keep`` (ids).
    Maps and copies stay readable for reads still in flight.  O(segments)."""
    for s in lg._view.segs or tuple(lg._segs):
        f = s.file
        if f is not None and id(f) not in keep:
            f.close()


class _StaleCheck:
    """After a read of a view failed for good: raise StaleViewError if the writer
    has removed the file the read needed (the current manifest no longer lists
    it); otherwise the caller reports the failure itself."""

    __slots__ = ("fs", "path", "log")

    def __init__(self, fs: FileSystem, path: str, lg: SegmentedLog) -> None:
        # weak: the log holds this check, and a cycle would keep its maps open until a GC pass
        self.fs, self.path, self.log = fs, path, weakref.ref(lg)

    def __call__(self, exc: BaseException) -> None:
        lg = self.log()
        if lg is None:
            return
        mpath = os.path.join(self.path, MANIFEST_NAME)
        data = read_file(self.fs, mpath)
        if data is None:
            return
        m = decode_manifest(data, mpath)
        if m.revision == lg.manifest.revision:
            return  # the same generation: the failure is the log's own
        listed = {(r.seq, r.uid) for r in m.segments}
        where = getattr(exc, "path", None) or getattr(exc, "filename", None)
        segs = lg._view.segs
        named = [s for s in segs if where in (s.path, s.idx_path)] or list(segs)
        gone = [s for s in named if (s.seq, s.uid) not in listed]
        if gone:
            raise StaleViewError(
                f"{gone[0].path}: the writer removed this segment (entries {gone[0].base}..{gone[0].last}) "
                f"after this view was read (manifest revision {lg.manifest.revision}, now {m.revision}); "
                "refresh() moves the view forward"
            ) from exc


class _Engine(Protocol):
    """What the live-view operations use of the engine they are mixed into."""

    _fs: FileSystem
    _path: str
    _segment_size: int
    _readonly: bool
    _closed: bool
    _wlock: threading.RLock
    _log: SegmentedLog
    _hard: HardState | None
    _kv: KVStore | None
    notes: list[str]

    def _live(self) -> SegmentedLog: ...


class LiveViewOps:
    """Opening and refreshing a read-only view (a mixin of ``WalEngine``)."""

    _log: SegmentedLog
    _hard: HardState | None
    _kv: KVStore | None
    notes: list[str]

    def _open_view(self: _Engine) -> None:
        """Open the read-only view (the body of ``WalEngine(path, readonly=True)``)."""
        v = read_view(self._fs, self._path, segment_size=self._segment_size)
        self._log, self._hard, self._kv, self.notes = v.log, v.hard, v.kv, v.notes

    def pin(self: _Engine) -> None:
        """Open every segment of the view now, so that no later purge or truncation
        by a live writer can make it stale (an unlinked file stays readable while
        mapped): for a reader about to read the whole view, such as ``segwal dump``.
        A no-op for a writer.

        Durability: reads only.  Complexity: O(segments) opens, and each sealed
        index verified once (O(entries)), as their first reads would.

        Raises:
            StaleViewError: the writer already removed a segment of the view
                (``refresh()``, then pin again).
            CorruptionError: a segment or its index is damaged.
        """
        lg = self._live()
        if not self._readonly:
            return
        for seg in lg._view.segs:
            try:
                lg._opened(seg)
            except (CorruptionError, OSError) as e:
                lg._failed(e)
                raise

    def refresh(self: _Engine) -> None:
        """Move a read-only view forward to the directory's current state: the log
        up to the tail's last complete frame now, the hard state and key/value
        data as of the current manifest generation.  Reads in flight finish on the
        old view; a thread that needs several calls to see one view (say
        ``first_index()`` then ``get_entries_range``) must not race a refresh
        from another thread.  A no-op for a writer (its view is always current).

        Durability: reads only, takes no lock a writer uses, changes no file.
        Complexity: O(tail segment + key/value bytes) (read whole, as at open);
        sealed segments already opened are kept.

        Raises:
            EngineClosedError: the engine is closed.
            CorruptionError / StaleViewError / StorageIOError: as at open; the old view stays.
        """
        if not self._readonly:
            self._live()
            return
        with self._wlock:
            if self._closed:
                raise EngineClosedError("the engine is closed")
            old_log, old_kv = self._log, self._kv
            v = read_view(self._fs, self._path, segment_size=self._segment_size, previous=old_log)
            self._log, self._hard, self._kv, self.notes = v.log, v.hard, v.kv, v.notes
            release(old_log, {id(s.file) for s in v.log._segs if s.file is not None})
            if old_kv is not None:
                old_kv.close(clean=False)
