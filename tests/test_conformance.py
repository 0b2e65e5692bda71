"""Run the conformance kit (``segwal.testing.conformance``) against segwal's own engines.

``WalEngine`` runs with small segments (so batches rotate segments often), with
the default size, and in ``sync="flush"`` mode; ``InMemoryEngine`` runs as a
non-persistent engine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from segwal.storage.memory import InMemoryEngine
from segwal.testing.conformance import EngineContract
from segwal.types import StorageEngine


class TestInMemoryEngine(EngineContract):
    persistent = False

    def open_engine(self, path: str) -> StorageEngine:
        return InMemoryEngine()


def _wal_engine(path: str, segment_size: int | None = None, sync: Literal["always", "flush"] = "always") -> StorageEngine:
    from segwal.engine import DEFAULT_SEGMENT_SIZE, WalEngine

    engine: StorageEngine = WalEngine(path, segment_size=segment_size or DEFAULT_SEGMENT_SIZE, sync=sync)
    return engine


class TestWalEngineSmallSegments(EngineContract):
    checks_commit_index = True
    def open_engine(self, path: str) -> StorageEngine:
        return _wal_engine(path, segment_size=4096)


class TestWalEngineDefault(EngineContract):
    checks_commit_index = True
    def open_engine(self, path: str) -> StorageEngine:
        return _wal_engine(path)


class TestWalEngineFlushMode(EngineContract):
    checks_commit_index = True
    def open_engine(self, path: str) -> StorageEngine:
        return _wal_engine(path, segment_size=4096, sync="flush")


def test_engines_satisfy_the_protocol(tmp_path: Path) -> None:
    """A runtime check of method presence; mypy checks the signatures."""
    assert isinstance(InMemoryEngine(), StorageEngine)
    with _wal_engine(str(tmp_path / "engine")) as engine:
        assert isinstance(engine, StorageEngine)
