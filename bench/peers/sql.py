"""The sqlite3 peer (stdlib): WAL mode, ``synchronous=FULL``, one transaction per batch."""

from __future__ import annotations

import os
import sqlite3

from .base import BasePeer, Change, Entry, new_entry


class SqlitePeer(BasePeer):
    """sqlite3 (stdlib): WAL mode, ``synchronous=FULL``, one transaction per batch."""

    name = "sqlite"
    label = "sqlite3 (WAL, synchronous=FULL)"
    caps = frozenset({"append", "read", "reopen", "delete", "kv", "kv_get"})

    def __init__(self) -> None:
        self.db: sqlite3.Connection | None = None

    def version(self) -> str:
        return f"sqlite {sqlite3.sqlite_version}"

    def open(self, path: str) -> None:
        db = sqlite3.connect(os.path.join(path, "log.db"), isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE IF NOT EXISTS log(idx INTEGER PRIMARY KEY, term INTEGER, payload BLOB)")
        db.execute("CREATE TABLE IF NOT EXISTS kv(k BLOB PRIMARY KEY, v BLOB) WITHOUT ROWID")
        self.db = db

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None

    def append(self, prepared: list[Entry]) -> None:
        db = self.db
        assert db is not None
        db.execute("BEGIN")
        db.executemany("INSERT OR REPLACE INTO log(idx, term, payload) VALUES (?, ?, ?)", prepared)
        db.execute("COMMIT")

    def entry(self, index: int) -> Entry | None:
        assert self.db is not None
        row = self.db.execute("SELECT term, payload FROM log WHERE idx=?", (index,)).fetchone()
        return None if row is None else new_entry(index, row[0], row[1])

    def range(self, start: int, end: int) -> list[Entry]:
        assert self.db is not None
        rows = self.db.execute(
            "SELECT idx, term, payload FROM log WHERE idx>=? AND idx<=? ORDER BY idx", (start, end)
        ).fetchall()
        new = tuple.__new__
        return [new(Entry, r) for r in rows]

    def bounds(self) -> tuple[int, int]:
        assert self.db is not None
        lo, hi = self.db.execute("SELECT MIN(idx), MAX(idx) FROM log").fetchone()
        return (lo or 0, hi or 0)

    def _delete(self, sql: str, arg: int) -> None:
        assert self.db is not None
        self.db.execute("BEGIN")
        self.db.execute(sql, (arg,))
        self.db.execute("COMMIT")

    def purge(self, upto: int) -> None:
        self._delete("DELETE FROM log WHERE idx<=?", upto)

    def truncate(self, from_index: int) -> None:
        self._delete("DELETE FROM log WHERE idx>=?", from_index)

    def kv_apply(self, prepared: list[Change]) -> None:
        db = self.db
        assert db is not None
        db.execute("BEGIN")
        for k, v in prepared:
            if v is None:
                db.execute("DELETE FROM kv WHERE k=?", (k,))
            else:
                db.execute("INSERT OR REPLACE INTO kv(k, v) VALUES (?, ?)", (k, v))
        db.execute("COMMIT")

    def kv_get(self, key: bytes) -> bytes | None:
        assert self.db is not None
        row = self.db.execute("SELECT v FROM kv WHERE k=?", (key,)).fetchone()
        return None if row is None else row[0]
