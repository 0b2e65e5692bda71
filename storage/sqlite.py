"""``SqliteEngine``: the :class:`StorageEngine` contract on the standard library's sqlite3.

A reference custom engine (issue 5, section 4): it shows how a user plugs a
general-purpose database behind segwal's contract, passes the conformance kit
(``segwal.testing.conformance``), and serves as a baseline for the benchmarks.  It
follows :class:`~segwal.storage.memory.InMemoryEngine` edge case for edge case
and applies the same rules, from :mod:`segwal.storage.rules`.

Directory layout::

    <path>/LOCK               flock'ed while open (a second open raises LockedError)
    <path>/segwal.sqlite3     the database (plus SQLite's -wal / -shm files while open)

Tables (all in one database, so one transaction can span them)::

    log(idx INTEGER PRIMARY KEY, term INTEGER, payload BLOB)   one row per entry
    meta(name TEXT PRIMARY KEY, value BLOB)                    see below
    kv(key BLOB PRIMARY KEY, value BLOB)                       state-machine data

``idx`` and ``term`` are u64 values stored biased by ``-2**63`` so that the
whole u64 range fits SQLite's signed 64-bit integers with its order kept.
``meta`` rows: ``format`` (``b"1"``), ``last_index`` (u64 big-endian; it can
exceed the highest row after a purge beyond the end), ``boundary`` and
``applied`` (term, index as two big-endian u64; absent when ``None``) and
``hard_state`` (the 44-byte checksummed encoding of
:func:`segwal.engine.hardstate.encode_hard_state`, so damage raises
:class:`~segwal.errors.CorruptionError`).  ``first_index()`` is not stored: it
is the lowest row, or ``last_index() + 1`` when there is none.

Durability: the database runs in WAL journal mode.  ``sync="always"`` uses
``synchronous=FULL``: every mutating call is one transaction whose commit
fsyncs the WAL, so it is atomic and durable on return.  ``sync="flush"`` uses
``synchronous=NORMAL``: a commit reaches the OS (it survives a killed process)
and :meth:`SqliteEngine.flush` makes it durable with a full checkpoint (which
fsyncs the WAL, then the database).  :meth:`SqliteEngine.save_hard_state` is
durable on return in both modes (its commit runs with ``synchronous=FULL``).
Every mutating call is one transaction, so a crash leaves the state before or
after it, never in between (SQLite's own guarantee).

Thread safety: one connection, guarded by a lock; every call (reads included)
is serialised.  Readers therefore do not run concurrently with the writer.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import threading
from collections.abc import Iterable
from typing import Final, Literal

from segwal.engine.hardstate import decode_hard_state, encode_hard_state
from segwal.errors import CorruptionError, EngineClosedError, LockedError, SegwalError, StorageIOError
from segwal.fs import Lock, OsFileSystem, make_dirs
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
from segwal.types import Entry, HardState, LogId

__all__ = ["SqliteEngine", "DB_NAME", "LOCK_NAME", "open_locked_directory"]

DB_NAME: Final = "segwal.sqlite3"
LOCK_NAME: Final = "LOCK"
_FORMAT: Final = b"1"
_BIAS: Final = 1 << 63
"""Stored integer = u64 value - 2**63: the u64 range maps onto SQLite's i64, order kept."""

_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS log(idx INTEGER PRIMARY KEY, term INTEGER NOT NULL, payload BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS meta(name TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS kv(key BLOB PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID",
)


def open_locked_directory(path: str | os.PathLike[str]) -> tuple[str, Lock]:
    """Create ``path`` (and missing parents, fsyncing each parent) and lock it.

    Returns the absolute path and the held lock (``flock`` on ``<path>/LOCK``).

    Raises:
        LockedError: another open engine (this or another process) holds it.
        StorageIOError: the directory cannot be created or locked.
    """
    fs = OsFileSystem()
    abspath = os.path.abspath(os.fspath(path))
    try:
        make_dirs(fs, abspath)
        try:
            return abspath, fs.lock(os.path.join(abspath, LOCK_NAME))
        except BlockingIOError:
            raise LockedError(
                errno.EWOULDBLOCK, "engine directory is already open (locked by another engine)", abspath
            ) from None
    except SegwalError:
        raise
    except OSError as e:
        raise StorageIOError(e.errno or errno.EIO, f"opening engine directory failed: {e.strerror or e}", abspath) from e


class SqliteEngine(CachedStateMixin):
    """A durable :class:`~segwal.types.StorageEngine` in one SQLite database.

    Args:
        path: the engine directory (created, with missing parents, if needed).
        sync: ``"always"`` (``synchronous=FULL``: every mutating call is durable
            on return) or ``"flush"`` (``synchronous=NORMAL``: durable after
            :meth:`flush`; survives a killed process before that).

    Raises:
        LockedError: the directory is open in another engine.
        CorruptionError: the database is damaged or not a segwal database.
        StorageIOError: SQLite or the OS failed while opening.

    Complexity: log reads and writes are B-tree operations, O(log n) per
    entry; ``first_index``/``last_index``/``purge_boundary``/``last_applied``
    are cached, O(1).  Opening is O(log n) (one ``MIN(idx)`` lookup).

    After :meth:`close`, every method but :meth:`close` raises
    :class:`~segwal.errors.EngineClosedError`.  Calls are serialised by a lock.
    The cached reads (``first_index``, ``last_index``, ``purge_boundary``,
    ``last_applied``), ``is_write_durable`` and ``with`` support come from
    :class:`~segwal.storage.rules.CachedStateMixin`; the argument checks and
    log rules from the functions of :mod:`segwal.storage.rules`.
    """

    def __init__(self, path: str | os.PathLike[str], *, sync: Literal["always", "flush"] = "always") -> None:
        check_sync_mode(sync)
        self._sync = sync
        self._mutex = threading.RLock()
        self._closed = True
        self._path, self._lock = open_locked_directory(path)
        self._db_path = os.path.join(self._path, DB_NAME)
        try:
            self._conn = self._connect()
        except BaseException:
            self._lock.release()
            raise
        self._closed = False

    # -- opening ------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self._db_path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as e:
            raise self._translate(e, "opening the database") from e
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StorageIOError(errno.EIO, f"SQLite refused WAL journal mode (got {mode!r})", self._db_path)
            conn.execute(f"PRAGMA synchronous={'FULL' if self._sync == 'always' else 'NORMAL'}")
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _SCHEMA:
                    conn.execute(statement)
                meta = dict(conn.execute("SELECT name, value FROM meta").fetchall())
                created = not meta  # new, or its creation was interrupted before this commit
                if created:
                    conn.execute("INSERT INTO meta VALUES ('format', ?), ('last_index', ?)", (_FORMAT, encode_u64(0)))
                    meta = {"format": _FORMAT, "last_index": encode_u64(0)}
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            if created:
                # SQLite does not fsync the directory after creating the main
                # database file; do it so that a new engine survives power loss.
                conn.execute("PRAGMA wal_checkpoint(FULL)")
                OsFileSystem().fsync_dir(self._path)
            self._load_meta(conn, meta)
        except sqlite3.Error as e:
            conn.close()
            raise self._translate(e, "opening the database") from e
        except BaseException:
            conn.close()
            raise
        return conn

    def _load_meta(self, conn: sqlite3.Connection, meta: dict[str, bytes]) -> None:
        if meta.get("format") != _FORMAT:
            raise CorruptionError(f"not a segwal SQLite database (format {meta.get('format')!r})", path=self._db_path)
        self._last: int = decode_u64(meta.get("last_index"), "meta row 'last_index'", self._db_path)
        self._boundary: LogId | None = None
        self._applied: LogId | None = None
        if "boundary" in meta:
            self._boundary = decode_logid(meta["boundary"], "meta row 'boundary'", self._db_path)
        if "applied" in meta:
            self._applied = decode_logid(meta["applied"], "meta row 'applied'", self._db_path)
        lo, hi = conn.execute("SELECT MIN(idx), MAX(idx) FROM log").fetchone()
        if lo is None:
            self._first: int = self._last + 1
        else:
            self._first = lo + _BIAS
            check_log_end(hi + _BIAS, self._last, self._db_path)

    def _translate(self, e: sqlite3.Error, doing: str) -> SegwalError:
        """Map a sqlite3 error to segwal's error tree."""
        damaged = "malformed" in str(e) or "not a database" in str(e)
        if isinstance(e, sqlite3.DatabaseError) and not isinstance(e, sqlite3.OperationalError) and damaged:
            return CorruptionError(f"{doing}: {e}", path=self._db_path)
        return StorageIOError(errno.EIO, f"SQLite failed {doing}: {e}", self._db_path)

    def _check_open(self) -> sqlite3.Connection:
        if self._closed:
            raise EngineClosedError("SqliteEngine is closed")
        return self._conn

    def _write(self, doing: str, statements: Iterable[tuple[str, object]]) -> None:
        """Run ``statements`` (SQL, parameters) in one ``BEGIN IMMEDIATE`` transaction.

        ``parameters`` is a tuple for ``execute`` or a list of tuples for
        ``executemany``.  Rolled back entirely if any statement fails.
        """
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for sql, params in statements:
                    if isinstance(params, list):
                        conn.executemany(sql, params)
                    else:
                        conn.execute(sql, params)  # type: ignore[arg-type]
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as e:
            raise self._translate(e, doing) from e

    def _term_at(self, index: int) -> int | None:
        if not self._first <= index <= self._last:
            return None
        try:
            row = self._conn.execute("SELECT term FROM log WHERE idx = ?", (index - _BIAS,)).fetchone()
        except sqlite3.Error as e:
            raise self._translate(e, "reading the log") from e
        return None if row is None else int(row[0]) + _BIAS

    # -- log writes ---------------------------------------------------------

    def persist_entries(self, entries: Iterable[Entry], /) -> None:
        """Append a batch, or replace the suffix from its first index (conflict overwrite).

        Raises ValueError naming the offending index, or TypeError; nothing changes.
        Durability: one transaction (atomic); durable on return in ``"always"`` mode.
        Complexity: O(len(batch) + replaced suffix) B-tree operations.
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
            statements: list[tuple[str, object]] = []
            if head <= self._last:
                statements.append(("DELETE FROM log WHERE idx >= ?", (head - _BIAS,)))
            statements.append(
                ("INSERT INTO log VALUES (?, ?, ?)", [(e.index - _BIAS, e.term - _BIAS, e.payload) for e in batch])
            )
            statements.append(("UPDATE meta SET value = ? WHERE name = 'last_index'", (encode_u64(last),)))
            self._write("persisting entries", statements)
            self._first, self._last = appended_bounds(self._first, self._last, batch)

    def truncate(self, from_index: int, /) -> None:
        """Remove every entry >= ``from_index``; a no-op beyond the end.

        Raises ValueError when ``from_index`` < 1 or at or below the purge boundary.
        Durability: one transaction; follows the mode.  Complexity: O(removed rows).
        """
        with self._mutex:
            self._check_open()
            if not truncate_needed(from_index, last_index=self._last, boundary=self._boundary):
                return
            self._write(
                "truncating the log",
                [
                    ("DELETE FROM log WHERE idx >= ?", (from_index - _BIAS,)),
                    ("UPDATE meta SET value = ? WHERE name = 'last_index'", (encode_u64(from_index - 1),)),
                ],
            )
            self._first, self._last = truncated_bounds(self._first, from_index)

    def purge_logs(self, cutoff: LogId, /) -> None:
        """Remove every entry <= ``cutoff.index`` and record ``cutoff`` as the boundary.

        A no-op at or below the current boundary, or (with no boundary) below
        ``first_index() - 1``.  Raises ValueError when ``cutoff.index`` is in the
        log with another term.  Durability: one transaction; follows the mode.
        Complexity: O(removed rows).
        """
        with self._mutex:
            self._check_open()
            if not purge_needed(cutoff, first_index=self._first, boundary=self._boundary, term_at=self._term_at):
                return
            k = cutoff.index
            new_first, new_last = purged_bounds(self._first, self._last, k)
            self._write(
                "purging the log",
                [
                    ("DELETE FROM log WHERE idx <= ?", (k - _BIAS,)),
                    ("UPDATE meta SET value = ? WHERE name = 'last_index'", (encode_u64(new_last),)),
                    ("INSERT OR REPLACE INTO meta VALUES ('boundary', ?)", (encode_logid(cutoff),)),
                ],
            )
            self._first, self._last = new_first, new_last
            self._boundary = cutoff

    def flush(self) -> None:
        """Make every committed transaction durable: a full WAL checkpoint.

        The checkpoint fsyncs the WAL, copies it into the database and fsyncs
        that.  Durability: durable on return.  Complexity: O(WAL size).
        """
        with self._mutex:
            conn = self._check_open()
            self._checkpoint(conn)

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        try:
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(FULL)").fetchone()
        except sqlite3.Error as e:
            raise self._translate(e, "checkpointing") from e
        if busy:
            raise StorageIOError(errno.EBUSY, "SQLite checkpoint could not complete (busy)", self._db_path)

    def reset(self) -> None:
        """Clear entries, purge boundary, key/value data and last applied; keep the hard state.

        Durability: one transaction (old state or fully reset after a crash);
        follows the mode.  Complexity: O(rows) (SQLite's truncate optimisation
        makes an unconditional DELETE cheap).
        """
        with self._mutex:
            self._check_open()
            self._write(
                "resetting",
                [
                    ("DELETE FROM log", ()),
                    ("DELETE FROM kv", ()),
                    ("DELETE FROM meta WHERE name IN ('boundary', 'applied')", ()),
                    ("UPDATE meta SET value = ? WHERE name = 'last_index'", (encode_u64(0),)),
                ],
            )
            self._first, self._last = 1, 0
            self._boundary = None
            self._applied = None

    # -- log reads ----------------------------------------------------------

    def entry(self, index: int, /) -> Entry | None:
        """The entry at ``index``, or ``None`` if it is not in the log.  O(log n): one B-tree lookup."""
        with self._mutex:
            conn = self._check_open()
            check_int("index", index)
            if not self._first <= index <= self._last:
                return None
            try:
                row = conn.execute("SELECT term, payload FROM log WHERE idx = ?", (index - _BIAS,)).fetchone()
            except sqlite3.Error as e:
                raise self._translate(e, "reading the log") from e
            return None if row is None else Entry(index, row[0] + _BIAS, row[1])

    def get_entries_range(self, start: int, end: int, /) -> list[Entry]:
        """Entries with ``start <= index <= end`` that exist, ascending.  O(log n + returned)."""
        with self._mutex:
            conn = self._check_open()
            clipped = clip_range(start, end, self._first, self._last)
            if clipped is None:
                return []
            lo, hi = clipped
            try:
                rows = conn.execute(
                    "SELECT idx, term, payload FROM log WHERE idx BETWEEN ? AND ? ORDER BY idx",
                    (lo - _BIAS, hi - _BIAS),
                ).fetchall()
            except sqlite3.Error as e:
                raise self._translate(e, "reading the log") from e
            return [Entry(i + _BIAS, t + _BIAS, p) for i, t, p in rows]

    # -- hard state ---------------------------------------------------------

    def load_hard_state(self) -> HardState | None:
        """The saved hard state, or ``None`` if none was ever saved.

        Raises CorruptionError when the stored bytes are damaged.  O(1): one lookup.
        """
        with self._mutex:
            conn = self._check_open()
            try:
                row = conn.execute("SELECT value FROM meta WHERE name = 'hard_state'").fetchone()
            except sqlite3.Error as e:
                raise self._translate(e, "reading the hard state") from e
            return None if row is None else decode_hard_state(bytes(row[0]), f"{self._db_path}:meta/hard_state")

    def save_hard_state(self, hs: HardState, /) -> None:
        """Replace the hard state (kept by :meth:`reset`).  TypeError for a non-HardState.

        Durability: durable on return in both modes (the commit runs with
        ``synchronous=FULL``, which fsyncs the WAL and so every earlier commit
        too); one transaction, so a crash leaves the old or the new value.
        Complexity: O(1).
        """
        with self._mutex:
            conn = self._check_open()
            encoded = encode_hard_state(check_hard_state(hs))
            statement = ("INSERT OR REPLACE INTO meta VALUES ('hard_state', ?)", (encoded,))
            if self._sync == "always":
                self._write("saving the hard state", [statement])
                return
            try:
                conn.execute("PRAGMA synchronous=FULL")
                try:
                    self._write("saving the hard state", [statement])
                finally:
                    conn.execute("PRAGMA synchronous=NORMAL")
            except sqlite3.Error as e:
                raise self._translate(e, "saving the hard state") from e

    # -- key/value data -----------------------------------------------------

    def _get(self, conn: sqlite3.Connection, key: bytes) -> bytes | None:
        row = conn.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def insert(self, key: bytes, value: bytes, /) -> bytes | None:
        """Set ``key`` to ``value``; return the previous value or ``None``.

        Durability: one transaction; follows the mode.  Complexity: O(log n).
        """
        with self._mutex:
            conn = self._check_open()
            k = check_bytes("key", key)
            v = check_bytes("value", value)
            try:
                previous = self._get(conn, k)
            except sqlite3.Error as e:
                raise self._translate(e, "reading a key") from e
            self._write("inserting a key", [("INSERT OR REPLACE INTO kv VALUES (?, ?)", (k, v))])
            return previous

    def get(self, key: bytes, /) -> bytes | None:
        """The value of ``key`` or ``None``.  O(log n): one B-tree lookup."""
        with self._mutex:
            conn = self._check_open()
            k = check_bytes("key", key)
            try:
                return self._get(conn, k)
            except sqlite3.Error as e:
                raise self._translate(e, "reading a key") from e

    def delete(self, key: bytes, /) -> bytes | None:
        """Remove ``key``; return the previous value or ``None``.

        Durability: one transaction when the key exists (nothing is written
        otherwise); follows the mode.  Complexity: O(log n).
        """
        with self._mutex:
            conn = self._check_open()
            k = check_bytes("key", key)
            try:
                previous = self._get(conn, k)
            except sqlite3.Error as e:
                raise self._translate(e, "reading a key") from e
            if previous is not None:
                self._write("deleting a key", [("DELETE FROM kv WHERE key = ?", (k,))])
            return previous

    def apply(
        self, changes: Iterable[tuple[bytes, bytes | None]], /, applied: LogId | None = None
    ) -> list[bytes | None]:
        """Apply ``(key, value-or-None)`` changes and record ``applied``, all or nothing.

        Returns the previous value of each change's key, in order (later
        changes see earlier ones).  Raises TypeError for a malformed change or
        ``applied``, changing nothing.  Durability: one transaction; follows
        the mode.  Complexity: O(changes) B-tree operations.
        """
        with self._mutex:
            conn = self._check_open()
            staged = check_changes(changes, applied)
            statements: list[tuple[str, object]] = []
            try:
                previous, overlay = stage_changes(staged, lambda k: self._get(conn, k))
            except sqlite3.Error as e:
                raise self._translate(e, "reading a key") from e
            for k, v in overlay.items():
                if v is None:
                    statements.append(("DELETE FROM kv WHERE key = ?", (k,)))
                else:
                    statements.append(("INSERT OR REPLACE INTO kv VALUES (?, ?)", (k, v)))
            if applied is not None:
                statements.append(("INSERT OR REPLACE INTO meta VALUES ('applied', ?)", (encode_logid(applied),)))
            if statements:
                self._write("applying changes", statements)
            if applied is not None:
                self._applied = applied
            return previous

    # -- lifecycle ----------------------------------------------------------

    def close(self) -> None:
        """Make everything durable (a full checkpoint), close the database, release the lock.

        Idempotent.  Durability: everything written before is durable on return.
        """
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            try:
                self._checkpoint(self._conn)
            finally:
                try:
                    self._conn.close()
                finally:
                    self._lock.release()
