"""The conformance kit against the reference custom engines: SqliteEngine and RocksDBEngine.

Both run in ``sync="always"`` and ``sync="flush"`` mode; the RocksDB classes
are skipped when rocksdict (the ``segwal[rocksdb]`` extra) is not installed.
A few engine-specific tests follow: reopen after close, a second open of the
same directory is refused, the mode is reported, the clear ImportError.
"""

from __future__ import annotations

import builtins
import importlib
import os
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from segwal.errors import CorruptionError, EngineClosedError, LockedError
from segwal.storage.sqlite import SqliteEngine
from segwal.testing.conformance import EngineContract, make_entries
from segwal.types import Entry, HardState, LogId, StorageEngine, VotedFor


def _rocksdb(path: str, sync: str = "always") -> StorageEngine:
    pytest.importorskip("rocksdict")
    from segwal.storage.rocksdb import RocksDBEngine

    return RocksDBEngine(path, sync=sync)  # type: ignore[arg-type]


def _sqlite(path: str, sync: str = "always") -> StorageEngine:
    return SqliteEngine(path, sync=sync)  # type: ignore[arg-type]


# -- the kit ------------------------------------------------------------------


class TestSqliteEngine(EngineContract):
    def open_engine(self, path: str) -> StorageEngine:
        return SqliteEngine(path)


class TestSqliteEngineFlushMode(EngineContract):
    def open_engine(self, path: str) -> StorageEngine:
        return SqliteEngine(path, sync="flush")


class TestRocksDBEngine(EngineContract):
    def open_engine(self, path: str) -> StorageEngine:
        return _rocksdb(path)


class TestRocksDBEngineFlushMode(EngineContract):
    def open_engine(self, path: str) -> StorageEngine:
        return _rocksdb(path, "flush")


# -- engine-specific tests ------------------------------------------------------

OPENERS: dict[str, Callable[..., StorageEngine]] = {"sqlite": _sqlite, "rocksdb": _rocksdb}


@pytest.fixture(params=sorted(OPENERS))
def opener(request: pytest.FixtureRequest) -> Callable[..., StorageEngine]:
    return OPENERS[request.param]


def test_engines_satisfy_the_protocol(tmp_path: Path, opener: Callable[..., StorageEngine]) -> None:
    with opener(str(tmp_path / "e")) as engine:
        assert isinstance(engine, StorageEngine)


def test_reopen_after_close_keeps_everything(tmp_path: Path, opener: Callable[..., StorageEngine]) -> None:
    path = str(tmp_path / "e")
    engine = opener(path)
    engine.persist_entries(make_entries(1, 100, term=2))
    engine.purge_logs(LogId(2, 10))
    engine.truncate(91)
    engine.save_hard_state(HardState(2, VotedFor(1, 2), 80))
    engine.apply([(b"a", b"1"), (b"b", b"2")], applied=LogId(2, 80))
    engine.close()
    engine.close()  # idempotent
    with pytest.raises(EngineClosedError):
        engine.last_index()
    with opener(path) as again:
        assert (again.first_index(), again.last_index()) == (11, 90)
        assert again.get_entries_range(0, 1000) == make_entries(11, 90, term=2)
        assert again.purge_boundary() == LogId(2, 10)
        assert again.load_hard_state() == HardState(2, VotedFor(1, 2), 80)
        assert (again.get(b"a"), again.get(b"b")) == (b"1", b"2")
        assert again.last_applied() == LogId(2, 80)


def test_second_open_is_locked(tmp_path: Path, opener: Callable[..., StorageEngine]) -> None:
    path = str(tmp_path / "e")
    with opener(path), pytest.raises(LockedError):
        opener(path)
    opener(path).close()  # released on close


def test_second_open_from_another_process_is_locked(tmp_path: Path) -> None:
    path = str(tmp_path / "e")
    with SqliteEngine(path):
        code = textwrap.dedent(
            f"""
            from segwal.storage.sqlite import SqliteEngine
            from segwal.errors import LockedError
            try:
                SqliteEngine({path!r})
            except LockedError:
                raise SystemExit(7)
            """
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert out.returncode == 7, out.stderr


@pytest.mark.parametrize("sync", ["always", "flush"])
def test_is_write_durable_follows_the_mode(tmp_path: Path, opener: Callable[..., StorageEngine], sync: str) -> None:
    with opener(str(tmp_path / "e"), sync) as engine:
        assert engine.is_write_durable() is (sync == "always")


def test_bad_sync_mode_is_refused(tmp_path: Path, opener: Callable[..., StorageEngine]) -> None:
    with pytest.raises(ValueError, match="sync"):
        opener(str(tmp_path / "e"), "sometimes")


def test_u64_extremes_round_trip(tmp_path: Path, opener: Callable[..., StorageEngine]) -> None:
    """Indexes and terms near 2**64 (beyond SQLite's signed integers) keep their order."""
    top = (1 << 64) - 1
    path = str(tmp_path / "e")
    batch = [Entry(top - 2, 1 << 63, b"a"), Entry(top - 1, top - 1, b"b"), Entry(top, top, b"")]
    with opener(path) as engine:
        engine.persist_entries(batch)
        engine.purge_logs(LogId(1 << 63, top - 2))
    with opener(path) as engine:
        assert engine.get_entries_range(0, top) == batch[1:]
        assert engine.entry(top) == batch[2] and engine.entry(top + 1) is None
        assert engine.first_index() == top - 1 and engine.last_index() == top
        engine.truncate(top)
        assert engine.last_index() == top - 1


def test_flush_mode_writes_survive_a_killed_process(tmp_path: Path, opener: Callable[..., StorageEngine]) -> None:
    """``sync="flush"``: a write reaches the OS on return, so SIGKILL loses nothing."""
    path = str(tmp_path / "e")
    kind = "sqlite" if opener is _sqlite else "rocksdb"
    module, cls = ("sqlite", "SqliteEngine") if kind == "sqlite" else ("rocksdb", "RocksDBEngine")
    code = textwrap.dedent(
        f"""
        import os, signal
        from segwal.storage.{module} import {cls}
        from segwal.types import Entry, LogId
        e = {cls}({path!r}, sync="flush")
        e.persist_entries([Entry(i, 1, b"x%d" % i) for i in range(1, 51)])
        e.apply([(b"k", b"v")], applied=LogId(1, 50))
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == -9, out.stderr
    with opener(path) as engine:
        assert engine.last_index() == 50 and engine.entry(50) == Entry(50, 1, b"x50")
        assert engine.get(b"k") == b"v" and engine.last_applied() == LogId(1, 50)


def test_rocksdb_missing_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real_import = builtins.__import__

    def fake_import(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "rocksdict" or name.startswith("rocksdict."):
            raise ImportError("No module named 'rocksdict'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    monkeypatch.delitem(sys.modules, "rocksdict", raising=False)
    module = importlib.import_module("segwal.storage.rocksdb")  # importing the module needs no rocksdict
    with pytest.raises(ImportError, match=r"segwal\[rocksdb\]"):
        module.RocksDBEngine(str(tmp_path / "e"))
    assert not os.path.exists(tmp_path / "e" / "db")


def _tamper(path: str, kind: str, key: str, value: bytes) -> None:
    """Overwrite one meta value behind the closed engine's back."""
    if kind == "sqlite":
        conn = sqlite3.connect(os.path.join(path, "segwal.sqlite3"), isolation_level=None)
        conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))
        conn.close()
    else:
        rocksdict = pytest.importorskip("rocksdict")
        db = rocksdict.Rdict(os.path.join(path, "db"), rocksdict.Options(raw_mode=True))
        db.put(b"M" + key.encode(), value)
        db.close()
        del db


def test_damaged_hard_state_raises_corruption(tmp_path: Path, opener: Callable[..., StorageEngine]) -> None:
    path = str(tmp_path / "e")
    with opener(path) as engine:
        engine.save_hard_state(HardState(3, VotedFor(1, 3), 0))
    kind = "sqlite" if opener is _sqlite else "rocksdb"
    _tamper(path, kind, "hard_state", b"\x00" * 44)
    with opener(path) as engine, pytest.raises(CorruptionError):
        engine.load_hard_state()


def test_interrupted_creation_opens_as_new(tmp_path: Path, opener: Callable[..., StorageEngine]) -> None:
    """A crash after the database file/directory was created but before it was initialised."""
    path = tmp_path / "e"
    path.mkdir()
    if opener is _sqlite:
        (path / "segwal.sqlite3").write_bytes(b"")
    else:
        rocksdict = pytest.importorskip("rocksdict")
        options = rocksdict.Options(raw_mode=True)
        options.create_if_missing(True)
        db = rocksdict.Rdict(str(path / "db"), options)
        db.close()
        del db
    with opener(str(path)) as engine:
        assert (engine.first_index(), engine.last_index()) == (1, 0)
        engine.persist_entries(make_entries(1, 2))
    with opener(str(path)) as engine:
        assert engine.last_index() == 2


def test_sqlite_garbage_database_is_corruption(tmp_path: Path) -> None:
    path = tmp_path / "e"
    path.mkdir()
    (path / "segwal.sqlite3").write_bytes(b"this is not an sqlite database" * 200)
    with pytest.raises(CorruptionError):
        SqliteEngine(str(path))
    (path / "segwal.sqlite3").unlink()
    SqliteEngine(str(path)).close()  # the lock was released by the failed open
