"""``RocksDBEngine``: the :class:`StorageEngine` contract on RocksDB, through rocksdict.

A reference custom engine (issue 5, section 4): the d-engine design's
"production-grade" RocksDB engine, with write batches, and a baseline for the
benchmarks.  It follows :class:`~segwal.storage.memory.InMemoryEngine` edge
case for edge case and validates batches with the same
:func:`~segwal.storage.rules.check_batch` (and the other rules of
:mod:`segwal.storage.rules`).

rocksdict is an optional dependency (``pip install 'segwal[rocksdb]'``): this
module imports without it, and :class:`RocksDBEngine` raises a clear
:class:`ImportError` naming the extra when it is missing.

Directory layout::

    <path>/LOCK    flock'ed while open (a second open raises LockedError)
    <path>/db/     the RocksDB database (RocksDB keeps its own LOCK there)

Keys, one key space split by a one-byte prefix (``raw_mode``: bytes in, bytes out)::

    b"K" + key                       state-machine key/value data -> value
    b"L" + index (u64 big-endian)    one log entry -> term (u64 big-endian) + payload
    b"M" + name                      meta: format, last_index, boundary, applied, hard_state

Big-endian indexes sort numerically, so a log range is a key range and purge
and truncate are one ``delete_range`` each.  ``meta`` values: ``last_index``
(u64; it can exceed the last entry after a purge beyond the end),
``boundary``/``applied`` (term, index as two u64; absent when ``None``),
``hard_state`` (the checksummed 44-byte encoding of
:func:`segwal.engine.hardstate.encode_hard_state`).  ``first_index()`` is not
stored: it is the lowest log key, or ``last_index() + 1`` when there is none.

Durability: every mutating call is exactly one ``WriteBatch``, which RocksDB
applies atomically (one WAL record).  ``sync="always"`` writes it with
``WriteOptions.sync = True``: the WAL is fsynced before the call returns.
``sync="flush"`` writes it without sync: it reaches the OS (it survives a
killed process) and :meth:`RocksDBEngine.flush` fsyncs the WAL
(``flush_wal(sync=True)``).  :meth:`RocksDBEngine.save_hard_state` always
writes with sync, which also makes every earlier write durable (the WAL is
one sequential file).

Thread safety: a lock serialises every call (reads included), because the
cached first/last index and the read-modify-write of ``insert`` must stay
consistent with the database.
"""

from __future__ import annotations

import errno
import os
import struct
import threading
from collections.abc import Iterable
from types import ModuleType
from typing import TYPE_CHECKING, Final, Literal

from segwal.engine.hardstate import decode_hard_state, encode_hard_state
from segwal.errors import CorruptionError, EngineClosedError, SegwalError, StorageIOError
from segwal.fs import OsFileSystem
from segwal.storage.rules import (
    CachedStateMixin,
    appended_bounds,
    check_batch,
    check_bytes,
    check_changes,
    check_hard_state,
    check_int,
    check_log_end,
    check_sync_mode,
    clip_range,
    decode_logid,
    decode_u64,
    encode_logid,
    encode_u64,
    purge_needed,
    purged_bounds,
    stage_changes,
    truncate_needed,
    truncated_bounds,
)
from segwal.storage.sqlite import open_locked_directory
from segwal.types import Entry, HardState, LogId

if TYPE_CHECKING:  # pragma: no cover - annotations only; rocksdict is optional at run time
    import rocksdict  # type: ignore[import-not-found, unused-ignore]

__all__ = ["RocksDBEngine", "DB_DIR"]

DB_DIR: Final = "db"
_FORMAT: Final = b"1"
_KV: Final = b"K"
_LOG: Final = b"L"
_LOG_END: Final = b"M"  # first key after every log key
_KV_END: Final = b"L"
_M_FORMAT: Final = b"Mformat"
_M_LAST: Final = b"Mlast_index"
_M_BOUNDARY: Final = b"Mboundary"
_M_APPLIED: Final = b"Mapplied"
_M_HARD: Final = b"Mhard_state"
_MAX: Final = (1 << 64) - 1
_U64: Final = struct.Struct(">Q")
"""Log keys and the term prefix of log values: a big-endian u64."""


def _import_rocksdict() -> ModuleType:
    """rocksdict, or an ImportError that names the extra to install."""
    try:
        import rocksdict as module  # type: ignore[import-not-found, unused-ignore]
    except ImportError as e:
        raise ImportError(
            "RocksDBEngine needs the optional dependency rocksdict: pip install 'segwal[rocksdb]'"
        ) from e
    loaded: ModuleType = module  # typed even when mypy cannot see rocksdict
    return loaded


def _log_key(index: int) -> bytes:
    return _LOG + _U64.pack(index)


def _log_key_after(index: int) -> bytes:
    """The first log key past ``index`` (the end of the log key space past 2**64-1)."""
    return _LOG_END if index >= _MAX else _log_key(index + 1)


class RocksDBEngine(CachedStateMixin):
    """A durable :class:`~segwal.types.StorageEngine` on RocksDB (rocksdict).

    Args:
        path: the engine directory (created, with missing parents, if needed).
        sync: ``"always"`` (each write batch is written with ``sync=True``:
            durable on return) or ``"flush"`` (durable after :meth:`flush`;
            survives a killed process before that).

    Raises:
        ImportError: rocksdict is not installed (``pip install 'segwal[rocksdb]'``).
        LockedError: the directory is open in another engine.
        CorruptionError: the database is not a segwal database or its meta is damaged.
        StorageIOError: RocksDB failed while opening.

    Complexity: log reads and writes are LSM lookups, O(log n) per entry;
    purge, truncate and reset are O(1) range deletions (space is reclaimed
    later by compaction); ``first_index``/``last_index``/``purge_boundary``/
    ``last_applied`` are cached, O(1).  Opening replays RocksDB's WAL and does
    one seek.

    After :meth:`close`, every method but :meth:`close` raises
    :class:`~segwal.errors.EngineClosedError`.  Calls are serialised by a lock.
    The cached reads (``first_index``, ``last_index``, ``purge_boundary``,
    ``last_applied``), ``is_write_durable`` and ``with`` support come from
    :class:`~segwal.storage.rules.CachedStateMixin`; the argument checks and
    log rules from the functions of :mod:`segwal.storage.rules`.
    """

    def __init__(self, path: str | os.PathLike[str], *, sync: Literal["always", "flush"] = "always") -> None:
        check_sync_mode(sync)
        self._rd = _import_rocksdict()
        self._sync = sync
        self._mutex = threading.RLock()
        self._closed = True
        self._path, self._lock = open_locked_directory(path)
        self._db_path = os.path.join(self._path, DB_DIR)
        try:
            self._db = self._connect()
        except BaseException:
            self._lock.release()
            raise
        self._closed = False

    # -- opening ------------------------------------------------------------

    def _connect(self) -> rocksdict.Rdict:
        rd = self._rd
        options = rd.Options(raw_mode=True)
        options.create_if_missing(True)
        try:
            db: rocksdict.Rdict = rd.Rdict(self._db_path, options)
        except Exception as e:  # rocksdict raises plain exceptions carrying RocksDB's status
            raise self._translate(e, "opening the database") from e
        try:
            self._sync_opts = rd.WriteOptions()
            self._sync_opts.sync = True
            self._write_opts = rd.WriteOptions()
            self._write_opts.sync = self._sync == "always"
            if db.get(_M_FORMAT) is None and self._is_empty(db):
                # a new database (or one whose creation a crash interrupted
                # before this batch): initialise it, then make db/ durable
                wb = rd.WriteBatch(raw_mode=True)
                wb.put(_M_FORMAT, _FORMAT)
                wb.put(_M_LAST, encode_u64(0))
                db.write(wb, self._sync_opts)
                OsFileSystem().fsync_dir(self._path)  # the new db/ directory itself
            self._load_meta(db)
        except BaseException:
            db.close()
            raise
        return db

    def _is_empty(self, db: rocksdict.Rdict) -> bool:
        it = db.iter()
        try:
            it.seek_to_first()
            return not it.valid()
        finally:
            del it

    def _load_meta(self, db: rocksdict.Rdict) -> None:
        fmt = db.get(_M_FORMAT)
        if fmt != _FORMAT:
            raise CorruptionError(f"not a segwal RocksDB database (format {fmt!r})", path=self._db_path)
        self._last: int = decode_u64(db.get(_M_LAST), "meta key 'last_index'", self._db_path)
        raw = db.get(_M_BOUNDARY)
        self._boundary: LogId | None = None if raw is None else decode_logid(raw, "meta key 'boundary'", self._db_path)
        raw = db.get(_M_APPLIED)
        self._applied: LogId | None = None if raw is None else decode_logid(raw, "meta key 'applied'", self._db_path)
        read_opts = self._rd.ReadOptions()
        read_opts.set_iterate_upper_bound(_LOG_END)
        it = db.iter(read_opts)
        try:
            it.seek(_LOG)
            first_key: bytes | None = it.key() if it.valid() else None
            it.seek_for_prev(_LOG_END)
            last_key: bytes | None = it.key() if it.valid() and it.key().startswith(_LOG) else None
        finally:
            del it  # an open iterator keeps RocksDB alive past close()
        if first_key is None:
            self._first: int = self._last + 1
        else:
            self._first = _U64.unpack(first_key[1:])[0]
            last = _U64.unpack(last_key[1:])[0] if last_key is not None else self._first
            check_log_end(last, self._last, self._db_path)

    def _translate(self, e: Exception, doing: str) -> SegwalError:
        """Map a rocksdict exception to segwal's error tree."""
        text = str(e)
        if "Corruption" in text:
            return CorruptionError(f"{doing}: {text}", path=self._db_path)
        return StorageIOError(errno.EIO, f"RocksDB failed {doing}: {text}", self._db_path)

    def _check_open(self) -> rocksdict.Rdict:
        if self._closed:
            raise EngineClosedError("RocksDBEngine is closed")
        return self._db

    def _batch(self) -> rocksdict.WriteBatch:
        wb: rocksdict.WriteBatch = self._rd.WriteBatch(raw_mode=True)
        return wb

    def _commit(self, wb: rocksdict.WriteBatch, doing: str, *, sync: bool | None = None) -> None:
        """Write ``wb`` atomically, with sync per the mode (or as ``sync`` says)."""
        opts = self._write_opts if sync is None else (self._sync_opts if sync else self._write_opts)
        try:
            self._db.write(wb, opts)
        except Exception as e:
            raise self._translate(e, doing) from e

    def _read(self, key: bytes) -> bytes | None:
        try:
            value: bytes | None = self._db.get(key)
        except Exception as e:
            raise self._translate(e, "reading") from e
        return value

    def _term_at(self, index: int) -> int | None:
        if not self._first <= index <= self._last:
            return None
        value = self._read(_log_key(index))
        return None if value is None else int(_U64.unpack_from(value)[0])

    # -- log writes ---------------------------------------------------------

    def persist_entries(self, entries: Iterable[Entry], /) -> None:
        """Append a batch, or replace the suffix from its first index (conflict overwrite).

        Raises ValueError naming the offending index, or TypeError; nothing changes.
        Durability: one WriteBatch (atomic); durable on return in ``"always"`` mode.
        Complexity: O(len(batch)) puts plus one range deletion on overwrite.
        """
        with self._mutex:
            self._check_open()
            batch = check_batch(
                entries,
                first_index=self._first,
                last_index=self._last,
                boundary=self._boundary,
                term_before=self._term_at,
            )
            if not batch:
                return
            head, last = batch[0].index, batch[-1].index
            wb = self._batch()
            if head <= self._last:
                wb.delete_range(_log_key(head), _LOG_END)
            pack = _U64.pack
            for e in batch:
                wb.put(_LOG + pack(e.index), pack(e.term) + e.payload)
            wb.put(_M_LAST, encode_u64(last))
            self._commit(wb, "persisting entries")
            self._first, self._last = appended_bounds(self._first, self._last, batch)

    def truncate(self, from_index: int, /) -> None:
        """Remove every entry >= ``from_index``; a no-op beyond the end.

        Raises ValueError when ``from_index`` < 1 or at or below the purge boundary.
        Durability: one WriteBatch (a range deletion); follows the mode.  Complexity: O(1).
        """
        with self._mutex:
            self._check_open()
            if not truncate_needed(from_index, last_index=self._last, boundary=self._boundary):
                return
            wb = self._batch()
            wb.delete_range(_log_key(from_index), _LOG_END)
            wb.put(_M_LAST, encode_u64(from_index - 1))
            self._commit(wb, "truncating the log")
            self._first, self._last = truncated_bounds(self._first, from_index)

    def purge_logs(self, cutoff: LogId, /) -> None:
        """Remove every entry <= ``cutoff.index`` and record ``cutoff`` as the boundary.

        A no-op at or below the current boundary, or (with no boundary) below
        ``first_index() - 1``.  Raises ValueError when ``cutoff.index`` is in the
        log with another term.  Durability: one WriteBatch (a range deletion);
        follows the mode.  Complexity: O(1).
        """
        with self._mutex:
            self._check_open()
            if not purge_needed(cutoff, first_index=self._first, boundary=self._boundary, term_at=self._term_at):
                return
            k = cutoff.index
            new_first, new_last = purged_bounds(self._first, self._last, k)
            wb = self._batch()
            wb.delete_range(_LOG, _log_key_after(k))
            wb.put(_M_LAST, encode_u64(new_last))
            wb.put(_M_BOUNDARY, encode_logid(cutoff))
            self._commit(wb, "purging the log")
            self._first, self._last = new_first, new_last
            self._boundary = cutoff

    def flush(self) -> None:
        """Fsync RocksDB's WAL: every write made before is durable on return.  O(unsynced WAL bytes)."""
        with self._mutex:
            db = self._check_open()
            try:
                db.flush_wal(True)
            except Exception as e:
                raise self._translate(e, "syncing the WAL") from e

    def reset(self) -> None:
        """Clear entries, purge boundary, key/value data and last applied; keep the hard state.

        Durability: one WriteBatch (old state or fully reset after a crash);
        follows the mode.  Complexity: O(1) (two range deletions).
        """
        with self._mutex:
            self._check_open()
            wb = self._batch()
            wb.delete_range(_LOG, _LOG_END)
            wb.delete_range(_KV, _KV_END)
            wb.delete(_M_BOUNDARY)
            wb.delete(_M_APPLIED)
            wb.put(_M_LAST, encode_u64(0))
            self._commit(wb, "resetting")
            self._first, self._last = 1, 0
            self._boundary = None
            self._applied = None

    # -- log reads ----------------------------------------------------------

    def entry(self, index: int, /) -> Entry | None:
        """The entry at ``index``, or ``None`` if it is not in the log.  O(log n): one point lookup."""
        with self._mutex:
            self._check_open()
            check_int("index", index)
            if not self._first <= index <= self._last:
                return None
            value = self._read(_log_key(index))
            if value is None:
                return None
            return Entry(index, _U64.unpack_from(value)[0], value[8:])

    def get_entries_range(self, start: int, end: int, /) -> list[Entry]:
        """Entries with ``start <= index <= end`` that exist, ascending.  O(log n + returned)."""
        with self._mutex:
            db = self._check_open()
            clipped = clip_range(start, end, self._first, self._last)
            if clipped is None:
                return []
            lo, hi = clipped
            read_opts = self._rd.ReadOptions()
            read_opts.set_iterate_upper_bound(_log_key_after(hi))
            out: list[Entry] = []
            unpack = _U64.unpack_from
            try:
                it = db.iter(read_opts)
                try:
                    it.seek(_log_key(lo))
                    while it.valid():
                        value = it.value()
                        out.append(Entry(unpack(it.key(), 1)[0], unpack(value)[0], value[8:]))
                        it.next()
                finally:
                    del it  # an open iterator keeps RocksDB alive past close()
            except Exception as e:
                raise self._translate(e, "reading the log") from e
            return out

    # -- hard state ---------------------------------------------------------

    def load_hard_state(self) -> HardState | None:
        """The saved hard state, or ``None`` if none was ever saved.

        Raises CorruptionError when the stored bytes are damaged.  O(log n): one lookup.
        """
        with self._mutex:
            self._check_open()
            raw = self._read(_M_HARD)
            return None if raw is None else decode_hard_state(raw, f"{self._db_path}:Mhard_state")

    def save_hard_state(self, hs: HardState, /) -> None:
        """Replace the hard state (kept by :meth:`reset`).  TypeError for a non-HardState.

        Durability: durable on return in both modes (written with ``sync=True``);
        one WriteBatch, so a crash leaves the old or the new value.  Complexity: O(1).
        """
        with self._mutex:
            self._check_open()
            encoded = encode_hard_state(check_hard_state(hs))
            wb = self._batch()
            wb.put(_M_HARD, encoded)
            self._commit(wb, "saving the hard state", sync=True)

    # -- key/value data -----------------------------------------------------

    def insert(self, key: bytes, value: bytes, /) -> bytes | None:
        """Set ``key`` to ``value``; return the previous value or ``None``.

        Durability: one WriteBatch; follows the mode.  Complexity: O(log n).
        """
        with self._mutex:
            self._check_open()
            k = check_bytes("key", key)
            v = check_bytes("value", value)
            previous = self._read(_KV + k)
            wb = self._batch()
            wb.put(_KV + k, v)
            self._commit(wb, "inserting a key")
            return previous

    def get(self, key: bytes, /) -> bytes | None:
        """The value of ``key`` or ``None``.  O(log n): one point lookup."""
        with self._mutex:
            self._check_open()
            return self._read(_KV + check_bytes("key", key))

    def delete(self, key: bytes, /) -> bytes | None:
        """Remove ``key``; return the previous value or ``None``.

        Durability: one WriteBatch when the key exists (nothing is written
        otherwise); follows the mode.  Complexity: O(log n).
        """
        with self._mutex:
            self._check_open()
            k = check_bytes("key", key)
            previous = self._read(_KV + k)
            if previous is not None:
                wb = self._batch()
                wb.delete(_KV + k)
                self._commit(wb, "deleting a key")
            return previous

    def apply(
        self, changes: Iterable[tuple[bytes, bytes | None]], /, applied: LogId | None = None
    ) -> list[bytes | None]:
        """Apply ``(key, value-or-None)`` changes and record ``applied``, all or nothing.

        Returns the previous value of each change's key, in order (later
        changes see earlier ones).  Raises TypeError for a malformed change or
        ``applied``, changing nothing.  Durability: one WriteBatch; follows the
        mode.  Complexity: O(changes) lookups and puts.
        """
        with self._mutex:
            self._check_open()
            staged = check_changes(changes, applied)
            previous, overlay = stage_changes(staged, lambda k: self._read(_KV + k))
            wb = self._batch()
            for k, v in overlay.items():
                if v is None:
                    wb.delete(_KV + k)
                else:
                    wb.put(_KV + k, v)
            if applied is not None:
                wb.put(_M_APPLIED, encode_logid(applied))
            if overlay or applied is not None:
                self._commit(wb, "applying changes")
            if applied is not None:
                self._applied = applied
            return previous

    # -- lifecycle ----------------------------------------------------------

    def close(self) -> None:
        """Fsync the WAL, close the database, release the lock.  Idempotent.

        Durability: everything written before is durable on return.
        """
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            db = self._db
            try:
                db.flush_wal(True)
            finally:
                try:
                    db.close()
                finally:
                    del self._db
                    self._lock.release()
