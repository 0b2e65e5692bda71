"""Tests of the in-process archiver's key/value snapshots: taken without holding the node's writers off for O(keys)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from obstore.store import MemoryStore

import segwal.kv.store as kvstore
from segwal.engine import WalEngine
from segwal.fs import OsFileSystem
from segwal.kv.keydir import KeyDir
from segwal.kv.snapshot import read_snapshot
from segwal.storage.archive import Archiver
from segwal.storage.archive.format import K_KV, decode_object
from segwal.storage.objectstore.seam import as_seam
from segwal.types import Entry, LogId


def _contents(path: Path) -> tuple[LogId, dict[bytes, bytes]]:
    applied, count, chunks = read_snapshot(OsFileSystem(), str(path))
    got = {k: v for keys, vals in chunks for k, v in zip(keys, vals, strict=True)}
    assert len(got) == count
    return applied, got


@pytest.fixture
def small_index(monkeypatch: pytest.MonkeyPatch) -> None:
    """A key index after a few changes, so the directory has both a table and an overlay."""
    monkeypatch.setattr(kvstore, "INDEX_EVERY", 64)
    monkeypatch.setattr(kvstore, "INDEX_MIN_KEYS", 0)


def _node(path: Path) -> tuple[WalEngine, dict[bytes, bytes]]:
    eng = WalEngine(path, sync="flush")
    state: dict[bytes, bytes] = {}
    for b in range(4):  # 4 batches of 100: written into key indexes, the last ones over it
        batch = [(b"key%05d" % i, b"v%d-%d" % (b, i)) for i in range(b * 60, b * 60 + 100)]
        eng.apply(batch, applied=LogId(1, b + 1))
        state.update(batch)
    eng.apply([(b"key00001", None)], applied=LogId(1, 5))
    del state[b"key00001"]
    eng.persist_entries([Entry(i, 1, b"e%d" % i) for i in range(1, 6)])
    return eng, state


def _changing_listing(monkeypatch: pytest.MonkeyPatch, eng: WalEngine, owned: list[bool]) -> None:
    """While the snapshot lists the keys, record whether the engine's write lock is held by the
    listing thread, and change the store as a writer would (overwrite from the index, overwrite
    from the overlay, delete, add)."""
    real = KeyDir.items

    def items(self: KeyDir) -> Any:
        owned.append(eng._wlock._is_owned())  # type: ignore[attr-defined]
        if len(owned) == 1:
            eng.apply(
                [(b"key00002", b"changed"), (b"key00300", b"changed"), (b"key00003", None), (b"new", b"x")],
                applied=LogId(1, 6),
            )
        return real(self)

    monkeypatch.setattr(KeyDir, "items", items)


def test_kv_snapshot_lists_keys_without_the_write_lock_and_stays_consistent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_index: None
) -> None:
    eng, state = _node(tmp_path / "n")
    assert isinstance(eng._kv._kd, KeyDir) and eng._kv._kd.table is not None and eng._kv._kd.over  # type: ignore[union-attr]
    owned: list[bool] = []
    _changing_listing(monkeypatch, eng, owned)
    at = eng.snapshot(tmp_path / "snap")
    assert owned and not any(owned)  # O(keys) listing ran with appends free to go on
    assert at == LogId(1, 5)
    assert _contents(tmp_path / "snap") == (LogId(1, 5), state)  # the state at the capture, not after
    assert eng.get(b"key00002") == b"changed" and eng.last_applied() == LogId(1, 6)
    eng.close()


def test_archiver_ships_a_kv_snapshot_without_holding_the_write_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_index: None
) -> None:
    eng, state = _node(tmp_path / "n")
    seam = as_seam(MemoryStore())
    owned: list[bool] = []
    arch = Archiver(eng, seam, "p", kv_snapshot_interval=0)
    _changing_listing(monkeypatch, eng, owned)
    arch.sync_now()
    assert owned and not any(owned)
    names = [o.name for o in seam.list("p/kv/")]
    assert len(names) == 1
    got = seam.get(names[0])
    assert got is not None
    _head, body = decode_object(got.data, names[0], K_KV)
    (tmp_path / "body").write_bytes(bytes(body))
    assert _contents(tmp_path / "body") == (LogId(1, 5), state)
    eng.close()
