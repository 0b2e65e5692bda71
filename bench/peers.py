"""Peer adapters: one object per store, all driven through the same calls.

Strategy: every workload talks to a store only through :class:`Peer`.  An
adapter turns the benchmark's neutral inputs (lists of :class:`Entry`, lists of
``(key, value)`` changes) into the store's own calls, and its outputs back into
``Entry`` objects, so the cost of that translation is inside the timed loop for
every store, as it would be in a real Raft node.  The one exception is the raw
limit, whose :meth:`Peer.prepare` encodes the bytes *outside* the timed loop: it
is the ceiling, the cost of the write and the sync alone.

Conventions (the same as ``shared/reference/peer-baseline.md`` so numbers can be
compared): key/value stores use key = 8-byte big-endian index and value =
8-byte big-endian term + payload; raw records are a ``<IIQQ`` header (payload
length, crc32c(payload), index, term) then the payload, 280 bytes per entry.

A peer whose package is missing reports why from :meth:`Peer.unavailable` and
is skipped with a note; nothing here imports an optional package at module
import time.
"""

from __future__ import annotations

import os
import sqlite3
import struct
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, NamedTuple, Protocol, runtime_checkable

__all__ = [
    "Entry",
    "Change",
    "Peer",
    "BasePeer",
    "ALL_PEERS",
    "make_peer",
    "peer_names",
    "term_of",
]

try:  # the engine's own value type when it exists, so no peer is favoured
    from segwal.types import Entry
except Exception:  # pragma: no cover - segwal is always installed with the bench

    class Entry(NamedTuple):  # type: ignore[no-redef]
        index: int  # type: ignore[assignment]
        term: int
        payload: bytes = b""


Change = tuple[bytes, "bytes | None"]
"""A key/value change: ``(key, value)``; ``value is None`` deletes the key."""

_KEY = struct.Struct(">Q")
_RAW_HEADER = struct.Struct("<IIQQ")
_KV_HEADER = struct.Struct("<III")  # key length, value length (0xFFFFFFFF = delete), crc
_DELETED = 0xFFFFFFFF


def term_of(index: int) -> int:
    """Term of the entry at ``index`` in every workload: ``1 + index // 10000``."""
    return 1 + index // 10000


def _new_entry(index: int, term: int, payload: bytes) -> Entry:
    # Same construction for every KV peer: the cheapest public way to build one.
    return tuple.__new__(Entry, (index, term, payload))


@runtime_checkable
class Peer(Protocol):
    """What a workload may ask of a store.

    Capabilities: ``caps`` names the workloads the store takes part in
    (``append``, ``read``, ``reopen``, ``delete``, ``kv``, ``kv_get``).  A
    method outside the store's capabilities raises ``NotImplementedError``.
    Every mutating call is durable when it returns if ``durable`` is true.
    Calls come from one thread.
    """

    name: str
    """Short identifier used on the command line and in the JSON."""
    label: str
    """Human-readable description for tables."""
    kind: str
    """``segwal``, ``raw`` (the disk limit), ``peer`` (a store a user would pick) or
    ``ceiling`` (an in-memory or non-durable reference, never a "best peer")."""
    durable: bool
    caps: frozenset[str]

    def unavailable(self) -> str | None:
        """``None`` if the store can run here, else why not (missing package)."""

    def version(self) -> str:
        """Package and library version, for the machine record."""

    def open(self, path: str) -> None:
        """Open or create the store in directory ``path``."""

    def close(self) -> None:
        """Release the store; its data stays on disk."""

    def reserve(self, nbytes: int) -> None:
        """Called before a timed append of about ``nbytes``; untimed."""

    def prepare(self, batch: list[Entry]) -> Any:
        """Turn one batch into what :meth:`append` takes; runs outside the timed loop."""

    def append(self, prepared: Any) -> None:
        """Append one batch durably (one sync)."""

    def entry(self, index: int) -> Entry | None:
        """The entry at ``index`` or ``None``."""

    def range(self, start: int, end: int) -> list[Entry]:
        """Entries ``start..end`` inclusive, ascending."""

    def bounds(self) -> tuple[int, int]:
        """``(first_index, last_index)``; ``(0, 0)`` when empty."""

    def purge(self, upto: int) -> None:
        """Durably remove every entry ``<= upto``."""

    def truncate(self, from_index: int) -> None:
        """Durably remove every entry ``>= from_index``."""

    def kv_prepare(self, changes: list[Change]) -> Any:
        """Like :meth:`prepare` for one key/value batch."""

    def kv_apply(self, prepared: Any) -> None:
        """Apply one batch of key/value changes atomically and durably."""

    def kv_get(self, key: bytes) -> bytes | None:
        """The value of ``key`` or ``None``."""


class BasePeer:
    """Defaults shared by the adapters: identity ``prepare``, no capabilities."""

    name: ClassVar[str] = "base"
    label: ClassVar[str] = "base"
    kind: ClassVar[str] = "peer"
    durable: ClassVar[bool] = True
    caps: ClassVar[frozenset[str]] = frozenset()
    module: ClassVar[str | None] = None

    def unavailable(self) -> str | None:
        if self.module is None:
            return None
        try:
            __import__(self.module)
        except Exception as exc:  # ImportError, or a broken wheel
            return f"{self.module} not importable ({type(exc).__name__}: {exc})"
        return None

    def version(self) -> str:
        if self.module is None:
            return ""
        try:
            from importlib.metadata import version

            return version(self.module)
        except Exception:
            return "?"

    def reserve(self, nbytes: int) -> None:
        return None

    def prepare(self, batch: list[Entry]) -> Any:
        return batch

    def kv_prepare(self, changes: list[Change]) -> Any:
        return changes

    def _no(self) -> NotImplementedError:
        return NotImplementedError(f"{self.name} does not support this workload")

    # Everything below is overridden by the adapters that have the capability.
    def open(self, path: str) -> None:
        raise self._no()

    def close(self) -> None:
        raise self._no()

    def append(self, prepared: Any) -> None:
        raise self._no()

    def entry(self, index: int) -> Entry | None:
        raise self._no()

    def range(self, start: int, end: int) -> list[Entry]:
        raise self._no()

    def bounds(self) -> tuple[int, int]:
        raise self._no()

    def purge(self, upto: int) -> None:
        raise self._no()

    def truncate(self, from_index: int) -> None:
        raise self._no()

    def kv_apply(self, prepared: Any) -> None:
        raise self._no()

    def kv_get(self, key: bytes) -> bytes | None:
        raise self._no()


# --------------------------------------------------------------------------- segwal


class SegwalPeer(BasePeer):
    """segwal's :class:`WalEngine` with ``sync="always"``."""

    name = "segwal"
    label = "segwal (sync=always)"
    kind = "segwal"
    caps = frozenset({"append", "read", "reopen", "delete", "kv", "kv_get"})
    module = "segwal.engine"

    def __init__(self, segment_size: int | None = None) -> None:
        self.segment_size = segment_size
        self.eng: Any = None

    def unavailable(self) -> str | None:
        try:
            from segwal.engine import Entry as _E  # noqa: F401
            from segwal.engine import LogId as _L  # noqa: F401
            from segwal.engine import WalEngine as _W  # noqa: F401
        except Exception as exc:
            return f"segwal.engine.WalEngine not importable yet ({type(exc).__name__}: {exc})"
        return None

    def version(self) -> str:
        import segwal

        return getattr(segwal, "__version__", "?")

    def open(self, path: str) -> None:
        from segwal.engine import WalEngine

        kw: dict[str, Any] = {"sync": "always"}
        if self.segment_size is not None:
            kw["segment_size"] = self.segment_size
        self.eng = WalEngine(path, **kw)

    def close(self) -> None:
        if self.eng is not None:
            self.eng.close()
            self.eng = None

    def append(self, prepared: list[Entry]) -> None:
        self.eng.persist_entries(prepared)

    def entry(self, index: int) -> Entry | None:
        return self.eng.entry(index)

    def range(self, start: int, end: int) -> list[Entry]:
        return self.eng.get_entries_range(start, end)  # type: ignore[no-any-return]

    def bounds(self) -> tuple[int, int]:
        return self.eng.first_index(), self.eng.last_index()

    def purge(self, upto: int) -> None:
        from segwal.engine import LogId

        self.eng.purge_logs(LogId(term_of(upto), upto))

    def truncate(self, from_index: int) -> None:
        self.eng.truncate(from_index)

    def kv_apply(self, prepared: list[Change]) -> None:
        self.eng.apply(prepared)

    def kv_get(self, key: bytes) -> bytes | None:
        return self.eng.get(key)  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- raw


def encode_raw(batch: Sequence[Entry]) -> bytes:
    """The baseline's raw record: ``<IIQQ`` header + payload, per entry, joined."""
    import crc32c

    pack = _RAW_HEADER.pack
    crc = crc32c.crc32c
    parts: list[bytes] = []
    for e in batch:
        p = e.payload
        parts.append(pack(len(p), crc(p), e.index, e.term))
        parts.append(p)
    return b"".join(parts)


def encode_raw_kv(changes: Sequence[Change]) -> bytes:
    import crc32c

    parts: list[bytes] = []
    for k, v in changes:
        body = k + (v or b"")
        parts.append(_KV_HEADER.pack(len(k), _DELETED if v is None else len(v), crc32c.crc32c(body)))
        parts.append(body)
    return b"".join(parts)


class RawAppendPeer(BasePeer):
    """The disk limit: pre-encoded bytes, ``os.write`` + ``os.fdatasync`` per batch."""

    name = "raw"
    label = "RAW LIMIT: os.write + fdatasync (append)"
    kind = "raw"
    caps = frozenset({"append", "kv"})
    module = "crc32c"

    def __init__(self) -> None:
        self.fd = -1

    def open(self, path: str) -> None:
        self.fd = os.open(os.path.join(path, "raw.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def prepare(self, batch: list[Entry]) -> bytes:
        return encode_raw(batch)

    def append(self, prepared: bytes) -> None:
        os.write(self.fd, prepared)
        os.fdatasync(self.fd)

    def kv_prepare(self, changes: list[Change]) -> bytes:
        return encode_raw_kv(changes)

    kv_apply = append


class RawPrezeroedPeer(RawAppendPeer):
    """``os.pwrite`` into a file filled with zeros and synced beforehand."""

    name = "raw_prezeroed"
    label = "raw: pwrite into a pre-zeroed file + fdatasync"
    caps = frozenset({"append"})

    def __init__(self) -> None:
        super().__init__()
        self.off = 0

    def open(self, path: str) -> None:
        self.fd = os.open(os.path.join(path, "raw.log"), os.O_RDWR | os.O_CREAT, 0o644)
        self.off = 0

    def reserve(self, nbytes: int) -> None:
        chunk = b"\0" * (1 << 20)
        size = os.fstat(self.fd).st_size
        want = nbytes + (1 << 20)
        while size < want:
            size += os.pwrite(self.fd, chunk, size)
        os.fsync(self.fd)

    def append(self, prepared: bytes) -> None:
        self.off += os.pwrite(self.fd, prepared, self.off)
        os.fdatasync(self.fd)


# --------------------------------------------------------------------------- sqlite3


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
        return None if row is None else _new_entry(index, row[0], row[1])

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


# --------------------------------------------------------------------------- lmdb


class LmdbPeer(BasePeer):
    """LMDB: ``sync=True, metasync=True``, one write transaction per batch."""

    name = "lmdb"
    label = "lmdb (sync=True)"
    caps = frozenset({"append", "read", "reopen", "delete", "kv", "kv_get"})
    module = "lmdb"

    def __init__(self) -> None:
        self.env: Any = None
        self._rtxn: Any = None

    def version(self) -> str:
        import lmdb

        return f"{lmdb.__version__} (liblmdb {'.'.join(map(str, lmdb.version()))})"

    def open(self, path: str) -> None:
        import lmdb

        self.env = lmdb.open(path, map_size=1 << 36, sync=True, metasync=True, readahead=False)

    def _r(self) -> Any:
        if self._rtxn is None:
            self._rtxn = self.env.begin(buffers=False)
        return self._rtxn

    def _end_reads(self) -> None:
        if self._rtxn is not None:
            self._rtxn.abort()
            self._rtxn = None

    def close(self) -> None:
        self._end_reads()
        if self.env is not None:
            self.env.close()
            self.env = None

    def append(self, prepared: list[Entry]) -> None:
        self._end_reads()
        pack = _KEY.pack
        with self.env.begin(write=True) as txn:
            put = txn.put
            for e in prepared:
                put(pack(e.index), pack(e.term) + e.payload, append=True)

    def entry(self, index: int) -> Entry | None:
        v = self._r().get(_KEY.pack(index))
        if v is None:
            return None
        return _new_entry(index, int.from_bytes(v[:8], "big"), v[8:])

    def range(self, start: int, end: int) -> list[Entry]:
        cur = self._r().cursor()
        out: list[Entry] = []
        if not cur.set_range(_KEY.pack(start)):
            return out
        unpack = _KEY.unpack
        new = tuple.__new__
        app = out.append
        for k, v in cur.iternext():
            i = unpack(k)[0]
            if i > end:
                break
            app(new(Entry, (i, int.from_bytes(v[:8], "big"), v[8:])))
        return out

    def bounds(self) -> tuple[int, int]:
        with self.env.begin() as txn:
            cur = txn.cursor()
            if not cur.first():
                return (0, 0)
            lo = _KEY.unpack(cur.key())[0]
            cur.last()
            return lo, _KEY.unpack(cur.key())[0]

    def purge(self, upto: int) -> None:
        self._end_reads()
        with self.env.begin(write=True) as txn:
            cur = txn.cursor()
            if cur.first():
                stop = _KEY.pack(upto)
                while cur.key() and cur.key() <= stop:
                    if not cur.delete():
                        break

    def truncate(self, from_index: int) -> None:
        self._end_reads()
        with self.env.begin(write=True) as txn:
            cur = txn.cursor()
            if cur.set_range(_KEY.pack(from_index)):
                while cur.delete():
                    pass

    def kv_apply(self, prepared: list[Change]) -> None:
        self._end_reads()
        with self.env.begin(write=True) as txn:
            for k, v in prepared:
                if v is None:
                    txn.delete(k)
                else:
                    txn.put(k, v)

    def kv_get(self, key: bytes) -> bytes | None:
        return self._r().get(key)  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- rocksdict


class RocksdictPeer(BasePeer):
    """RocksDB through rocksdict: ``raw_mode``, a ``WriteBatch`` per batch, ``sync=True``."""

    name = "rocksdict"
    label = "rocksdict (sync WriteBatch)"
    caps = frozenset({"append", "read", "reopen", "delete", "kv", "kv_get"})
    module = "rocksdict"

    def __init__(self) -> None:
        self.db: Any = None
        self.wopt: Any = None

    def open(self, path: str) -> None:
        from rocksdict import Options, Rdict, WriteOptions

        opts = Options(raw_mode=True)
        opts.create_if_missing(True)
        self.db = Rdict(path, opts)
        self.wopt = WriteOptions()
        self.wopt.sync = True

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None

    def append(self, prepared: list[Entry]) -> None:
        from rocksdict import WriteBatch

        pack = _KEY.pack
        wb = WriteBatch(raw_mode=True)
        put = wb.put
        for e in prepared:
            put(pack(e.index), pack(e.term) + e.payload)
        self.db.write(wb, self.wopt)

    def entry(self, index: int) -> Entry | None:
        v = self.db.get(_KEY.pack(index))
        if v is None:
            return None
        return _new_entry(index, int.from_bytes(v[:8], "big"), v[8:])

    def range(self, start: int, end: int) -> list[Entry]:
        out: list[Entry] = []
        unpack = _KEY.unpack
        new = tuple.__new__
        app = out.append
        for k, v in self.db.items(from_key=_KEY.pack(start)):
            i = unpack(k)[0]
            if i > end:
                break
            app(new(Entry, (i, int.from_bytes(v[:8], "big"), v[8:])))
        return out

    def bounds(self) -> tuple[int, int]:
        it = self.db.iter()
        it.seek_to_first()
        if not it.valid():
            return (0, 0)
        lo = _KEY.unpack(it.key())[0]
        it.seek_to_last()
        hi = _KEY.unpack(it.key())[0]
        del it
        return lo, hi

    def purge(self, upto: int) -> None:
        self.db.delete_range(_KEY.pack(0), _KEY.pack(upto + 1), self.wopt)

    def truncate(self, from_index: int) -> None:
        self.db.delete_range(_KEY.pack(from_index), b"\xff" * 9, self.wopt)

    def kv_apply(self, prepared: list[Change]) -> None:
        from rocksdict import WriteBatch

        wb = WriteBatch(raw_mode=True)
        for k, v in prepared:
            if v is None:
                wb.delete(k)
            else:
                wb.put(k, v)
        self.db.write(wb, self.wopt)

    def kv_get(self, key: bytes) -> bytes | None:
        return self.db.get(key)  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- plyvel


class PlyvelPeer(BasePeer):
    """LevelDB through plyvel: one ``write_batch(sync=True)`` per batch."""

    name = "plyvel"
    label = "plyvel/LevelDB (sync WriteBatch)"
    caps = frozenset({"append", "read", "reopen", "delete", "kv", "kv_get"})
    module = "plyvel"

    def __init__(self) -> None:
        self.db: Any = None

    def version(self) -> str:
        import plyvel

        return f"{plyvel.__version__} (leveldb {plyvel.__leveldb_version__})"

    def open(self, path: str) -> None:
        import plyvel

        self.db = plyvel.DB(path, create_if_missing=True)

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None

    def append(self, prepared: list[Entry]) -> None:
        pack = _KEY.pack
        with self.db.write_batch(sync=True) as wb:
            put = wb.put
            for e in prepared:
                put(pack(e.index), pack(e.term) + e.payload)

    def entry(self, index: int) -> Entry | None:
        v = self.db.get(_KEY.pack(index))
        if v is None:
            return None
        return _new_entry(index, int.from_bytes(v[:8], "big"), v[8:])

    def range(self, start: int, end: int) -> list[Entry]:
        unpack = _KEY.unpack
        new = tuple.__new__
        return [
            new(Entry, (unpack(k)[0], int.from_bytes(v[:8], "big"), v[8:]))
            for k, v in self.db.iterator(start=_KEY.pack(start), stop=_KEY.pack(end + 1))
        ]

    def bounds(self) -> tuple[int, int]:
        lo = next(self.db.iterator(include_value=False), None)
        if lo is None:
            return (0, 0)
        hi = next(self.db.iterator(reverse=True, include_value=False))
        return _KEY.unpack(lo)[0], _KEY.unpack(hi)[0]

    def _delete(self, start: bytes | None, stop: bytes | None) -> None:
        with self.db.write_batch(sync=True) as wb:
            for k in self.db.iterator(start=start, stop=stop, include_value=False):
                wb.delete(k)

    def purge(self, upto: int) -> None:
        self._delete(None, _KEY.pack(upto + 1))

    def truncate(self, from_index: int) -> None:
        self._delete(_KEY.pack(from_index), None)

    def kv_apply(self, prepared: list[Change]) -> None:
        with self.db.write_batch(sync=True) as wb:
            for k, v in prepared:
                if v is None:
                    wb.delete(k)
                else:
                    wb.put(k, v)

    def kv_get(self, key: bytes) -> bytes | None:
        return self.db.get(key)  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- pysyncobj


class PysyncobjPeer(BasePeer):
    """PySyncObj's ``FileJournal`` with ``flush()`` (msync of the mapping) per batch."""

    name = "pysyncobj"
    label = "pysyncobj FileJournal + flush()/batch"
    caps = frozenset({"append", "read", "reopen", "delete"})
    module = "pysyncobj"
    flush_each_batch: ClassVar[bool] = True

    def __init__(self) -> None:
        self.j: Any = None

    def open(self, path: str) -> None:
        from pysyncobj.journal import FileJournal

        self.j = FileJournal(os.path.join(path, "journal.bin"))

    def close(self) -> None:
        if self.j is not None:
            self.j._destroy()  # flush + close; despite the name it deletes nothing
            self.j = None

    def append(self, prepared: list[Entry]) -> None:
        add = self.j.add
        for e in prepared:
            add(e.payload, e.index, e.term)
        if self.flush_each_batch:
            self.j.flush()

    def _first(self) -> int:
        return self.j[0][1] if len(self.j) else 0

    def entry(self, index: int) -> Entry | None:
        pos = index - self._first()
        if pos < 0 or pos >= len(self.j) or not len(self.j):
            return None
        cmd, idx, term = self.j[pos]
        return _new_entry(idx, term, cmd)

    def range(self, start: int, end: int) -> list[Entry]:
        first = self._first()
        a = max(start - first, 0)
        b = min(end - first + 1, len(self.j))
        new = tuple.__new__
        out: list[Entry] = []
        for pos in range(a, b):
            cmd, idx, term = self.j[pos]
            out.append(new(Entry, (idx, term, cmd)))
        return out

    def bounds(self) -> tuple[int, int]:
        if not len(self.j):
            return (0, 0)
        return self.j[0][1], self.j[len(self.j) - 1][1]

    def purge(self, upto: int) -> None:
        self.j.deleteEntriesTo(upto - self._first() + 1)
        self.j.flush()

    def truncate(self, from_index: int) -> None:
        self.j.deleteEntriesFrom(from_index - self._first())
        self.j.flush()


class PysyncobjNoSyncPeer(PysyncobjPeer):
    """``FileJournal`` as SyncObj itself uses it: never flushed, so not durable."""

    name = "pysyncobj_nosync"
    label = "pysyncobj FileJournal, no sync (as SyncObj uses it; NOT durable)"
    kind = "ceiling"
    durable = False
    caps = frozenset({"append"})
    flush_each_batch = False


# --------------------------------------------------------------------------- dict


class DictPeer(BasePeer):
    """A Python dict of ``Entry``: the in-memory ceiling for reads (not durable)."""

    name = "dict"
    label = "python dict (in-memory ceiling)"
    kind = "ceiling"
    durable = False
    caps = frozenset({"read", "kv_get"})
    _stores: ClassVar[dict[str, dict[Any, Any]]] = {}

    def __init__(self) -> None:
        self.d: dict[Any, Any] = {}
        self.path = ""

    def open(self, path: str) -> None:
        self.path = path
        self.d = self._stores.setdefault(path, {})

    def close(self) -> None:
        self.d = {}

    def append(self, prepared: list[Entry]) -> None:
        for e in prepared:
            self.d[e.index] = e

    def entry(self, index: int) -> Entry | None:
        return self.d.get(index)

    def range(self, start: int, end: int) -> list[Entry]:
        d = self.d
        return [d[i] for i in range(start, end + 1) if i in d]

    def bounds(self) -> tuple[int, int]:
        return (min(self.d), max(self.d)) if self.d else (0, 0)

    def kv_apply(self, prepared: list[Change]) -> None:
        for k, v in prepared:
            if v is None:
                self.d.pop(k, None)
            else:
                self.d[k] = v

    def kv_get(self, key: bytes) -> bytes | None:
        return self.d.get(key)

    @classmethod
    def forget(cls, path: str) -> None:
        cls._stores.pop(path, None)


ALL_PEERS: dict[str, Callable[[], BasePeer]] = {
    "segwal": SegwalPeer,
    "raw": RawAppendPeer,
    "raw_prezeroed": RawPrezeroedPeer,
    "sqlite": SqlitePeer,
    "lmdb": LmdbPeer,
    "rocksdict": RocksdictPeer,
    "plyvel": PlyvelPeer,
    "pysyncobj": PysyncobjPeer,
    "pysyncobj_nosync": PysyncobjNoSyncPeer,
    "dict": DictPeer,
}


def peer_names() -> list[str]:
    return list(ALL_PEERS)


def make_peer(name: str, **kw: Any) -> BasePeer:
    factory = ALL_PEERS[name]
    return factory(**kw) if kw else factory()
