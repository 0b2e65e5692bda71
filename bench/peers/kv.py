"""The embedded key/value store peers: LMDB, RocksDB (rocksdict) and LevelDB (plyvel).

Each stores an entry under key = 8-byte big-endian index with value = 8-byte
big-endian term + payload, and writes one synced transaction or batch per call.
"""

from __future__ import annotations

import struct
from typing import Any

from .base import BasePeer, Change, Entry, new_entry

_KEY = struct.Struct(">Q")


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
        return new_entry(index, int.from_bytes(v[:8], "big"), v[8:])

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
        return new_entry(index, int.from_bytes(v[:8], "big"), v[8:])

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
        return new_entry(index, int.from_bytes(v[:8], "big"), v[8:])

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
