"""The key/value side of the ``WalEngine`` facade: reads and atomic batches of
changes (recording ``last_applied``), and snapshots of the key/value data.

:class:`KeyValueOps` is mixed into :class:`~segwal.engine.engine.WalEngine`,
which opens, locks and closes the store; each method states what it uses of the
engine through its ``self`` type (:class:`_Engine`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator
from typing import Final, Protocol

from segwal.engine.log import SegmentedLog
from segwal.errors import EngineClosedError, SyncError
from segwal.fs import FileSystem
from segwal.kv.files import KVFile
from segwal.kv.store import KVStore
from segwal.types import LogId

__all__ = ["KV_DIR", "KeyValueOps"]

#: The key/value store's folder inside the engine directory.
KV_DIR: Final = "kv"


class _Engine(Protocol):
    """What the key/value operations use of the engine they are mixed into."""

    _fs: FileSystem
    _path: str
    _segment_size: int
    _wlock: threading.RLock
    _log: SegmentedLog
    _kv: KVStore | None

    def _live(self) -> SegmentedLog: ...

    def _writable(self) -> SegmentedLog: ...

    def _open_kv(self, generation: int) -> KVStore: ...

    def apply(
        self, changes: Iterable[tuple[bytes, bytes | None]], applied: LogId | None = None
    ) -> list[bytes | None]: ...


class KeyValueOps:
    """The key/value and snapshot operations of ``WalEngine`` (a mixin)."""

    _kv: KVStore | None  # the open store: WalEngine opens it, install_snapshot replaces it

    def insert(self: _Engine, key: bytes, value: bytes) -> bytes | None:
        """Set ``key`` to ``value``; returns the previous value or ``None``.
        Durability: follows ``sync``.  Complexity: O(len(key)+len(value))."""
        if type(value) is not bytes:
            raise TypeError(f"value must be bytes, got {type(value).__name__}")
        return self.apply([(key, value)])[0]

    def get(self: _Engine, key: bytes) -> bytes | None:
        """The value of ``key`` or ``None``; checksum verified.  O(1) + O(len(value)).

        Raises ``EngineClosedError`` after close (the key/value store refuses).
        A ``reset`` or ``install_snapshot`` running concurrently swaps the store:
        the read is then made again on the new one.
        """
        while True:
            kv = self._kv
            try:
                return kv.get(key)  # type: ignore[union-attr]
            except EngineClosedError:
                if self._kv is kv:
                    raise

    def delete(self: _Engine, key: bytes) -> bytes | None:
        """Remove ``key``; returns the previous value or ``None``.  Durability: follows ``sync``."""
        return self.apply([(key, None)])[0]

    def apply(
        self: _Engine, changes: Iterable[tuple[bytes, bytes | None]], applied: LogId | None = None
    ) -> list[bytes | None]:
        """Apply key/value changes (value ``None`` deletes) and, optionally, record
        the ``LogId`` they were applied up to, in one atomic step.  Returns the
        previous values.  Durability: follows ``sync``; a crash leaves all or none.
        Complexity: O(total bytes), one write and one fdatasync.
        """
        if applied is not None and not isinstance(applied, LogId):
            raise TypeError(f"applied must be a LogId or None, got {applied!r}")
        batch = changes if type(changes) is list else list(changes)  # the store splits it before it returns
        with self._wlock:
            self._writable()
            try:
                return self._kv.apply(batch, applied)  # type: ignore[union-attr]
            except SyncError as e:
                self._log.poisoned = e
                raise

    def last_applied(self: _Engine) -> LogId | None:
        """The ``LogId`` recorded by the last ``apply(..., applied=...)``, or ``None``."""
        self._live()
        return self._kv.last_applied()  # type: ignore[union-attr]

    def kv_stats(self: _Engine) -> object:
        """Statistics of the key/value store (keys, live and dead bytes, files)."""
        self._live()
        return self._kv.stats()  # type: ignore[union-attr]

    # ------------------------------------------------------------ snapshots

    def snapshot(self: _Engine, dest: str | os.PathLike[str]) -> LogId:
        """Write a consistent, checksummed copy of the key/value data at
        ``last_applied()`` to the file ``dest``; returns that ``LogId``.

        Writers are held off only while a frozen view of the key directory is
        taken (:func:`segwal.kv.keydir.freeze_store`: one C-level copy of the overlay of changes
        since the key index was last written, no key or value read); the keys are
        listed and the values copied afterwards, without the lock (a damaged key
        index is rebuilt under it instead).  O(keys + bytes) in all.  Durable on
        return (temporary file, fsync, rename, directory fsync).

        Raises:
            ValueError: no ``last_applied`` was ever recorded (nothing to name the
                snapshot by: use ``apply(..., applied=...)``).
        """
        from segwal.kv.keydir import freeze_store
        from segwal.kv.keyindex import IndexDamaged
        from segwal.kv.snapshot import CHUNK_PAIRS, write_snapshot

        with self._wlock:
            self._live()
            kv = self._kv
            assert kv is not None
            view, applied = freeze_store(kv)
        if applied is None:
            raise ValueError("no last_applied LogId recorded: record one with apply(..., applied=...) first")
        try:
            items = list(view.items())  # O(keys), writers go on
            keys, locs = [k for k, _ in items], [v for _, v in items]
            del items
        except IndexDamaged:  # rare: rebuild the key directory, under the lock as every writer
            with self._wlock:
                self._live()
                keys, locs, applied = kv.capture()
        if applied is None:
            raise ValueError("no last_applied LogId recorded: record one with apply(..., applied=...) first")

        def chunks() -> Iterator[tuple[list[bytes], list[bytes]]]:
            for i in range(0, len(keys), CHUNK_PAIRS):
                yield keys[i : i + CHUNK_PAIRS], kv.read_values(locs[i : i + CHUNK_PAIRS])

        write_snapshot(self._fs, os.path.abspath(os.fspath(dest)), applied, len(keys), chunks())
        return applied

    def install_snapshot(self: _Engine, src: str | os.PathLike[str]) -> LogId:
        """Replace everything by the snapshot in file ``src``: the log is emptied,
        the purge boundary and ``last_applied()`` become the snapshot's ``LogId``,
        the key/value data becomes the snapshot's.  The hard state is kept.

        Atomic with respect to crashes: the new key/value generation is written
        and synced beside the old one, then one manifest write switches to it
        (the commit point); a crash before leaves the old state whole.  The whole
        snapshot is verified before anything changes.  Complexity: O(bytes).
        """
        from segwal.kv.snapshot import read_snapshot

        applied, _count, chunks = read_snapshot(self._fs, os.path.abspath(os.fspath(src)))
        with self._wlock:
            lg = self._writable()
            new_gen = lg.manifest.kv_generation + 1
            kvdir = os.path.join(self._path, KV_DIR)
            prefix = f"kv-{new_gen:016x}-"
            for name in self._fs.listdir(kvdir):
                if name.startswith(prefix):  # leftovers of an install that failed
                    self._fs.unlink(os.path.join(kvdir, name))
            listed: list[tuple[KVFile, ...]] = [()]  # the staged store's files, committed below with the switch
            staged = KVStore.open(
                self._fs, kvdir, engine_id=lg.manifest.engine_id, generation=new_gen, sync=False,
                file_size=self._segment_size, keep_other_generations=True, files=(), commit=lambda files: listed.__setitem__(0, files),
            )
            try:
                for keys, values in chunks:
                    staged.apply(list(zip(keys, values)))
                staged.apply([], applied=applied)
                staged.flush()
            finally:
                staged.close()
            lg.install(applied, new_gen, listed[0])
            old, self._kv = self._kv, self._open_kv(new_gen)  # readers move to the new store first
            if old is not None:
                old.close(clean=False)  # its generation is gone: nothing to record
        return applied

