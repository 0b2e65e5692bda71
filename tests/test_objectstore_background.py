"""Compaction beside writers: the plan / upload / publish phases with writes in between, and the background compactor.

Deterministic part: a compaction is planned, then other calls run (appends,
overwrites, truncations, purges, key/value changes, reset), then it uploads
and publishes; the engine must then read exactly like the model
(``InMemoryEngine``) that saw the same calls, before and after a reopen.
Then the conformance kit and the model machine with ``background=True``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import settings

from segwal.storage.memory import InMemoryEngine
from segwal.testing.conformance import EngineContract, observe
from segwal.types import Entry, HardState, LogId, StorageEngine, VotedFor

obstore_store = pytest.importorskip("obstore.store")

from test_objectstore_stateful import ObjectStoreVsModel  # noqa: E402

from segwal.storage.objectstore import (
    ObjectStoreEngine,  # noqa: E402
    compaction,  # noqa: E402
)

KEYS = [b"a", b"b", b"c"]


def batch(first: int, last: int, term: int = 1, tag: str = "") -> list[Entry]:
    return [Entry(i, term, f"{tag}{i}/{term}".encode()) for i in range(first, last + 1)]


def history(e: Any) -> None:
    """A history that leaves chunks (after the first compaction), slots and key/value data."""
    for i in range(1, 30, 4):
        e.persist_entries(batch(i, i + 3))
    e.apply([(b"a", b"1"), (b"b", b"2")], applied=LogId(1, 10))
    e.save_hard_state(HardState(1, VotedFor(2, 1), 3))


LATER: dict[str, Callable[[Any], None]] = {
    "nothing": lambda e: None,
    "append": lambda e: e.persist_entries(batch(33, 40)),
    "overwrite in the slots": lambda e: e.persist_entries(batch(30, 31, term=2, tag="x")),
    "overwrite in the chunks": lambda e: e.persist_entries(batch(6, 8, term=3, tag="y")),
    "truncate in the chunks": lambda e: e.truncate(5),
    "truncate then append": lambda e: (e.truncate(20), e.persist_entries(batch(20, 22, term=2, tag="z"))),
    "purge inside": lambda e: e.purge_logs(LogId(1, 14)),
    "purge past the end": lambda e: e.purge_logs(LogId(1, 50)),
    "kv": lambda e: e.apply([(b"a", None), (b"c", b"3")], applied=LogId(1, 12)),
    "hard state": lambda e: e.save_hard_state(HardState(4)),
    "reset": lambda e: e.reset(),
    "reset then append": lambda e: (e.reset(), e.persist_entries(batch(1, 3, term=5))),
}


@pytest.mark.parametrize("chunks_first", [False, True])
@pytest.mark.parametrize("later", sorted(LATER))
def test_writes_between_plan_and_publish(later: str, chunks_first: bool) -> None:
    store = obstore_store.MemoryStore()
    engine = ObjectStoreEngine(store, "n", compact_slots=1 << 20, chunk_bytes=4096, background=True)
    assert engine._bg is not None
    model = InMemoryEngine()
    for e in (engine, model):
        history(e)
    if chunks_first:
        engine.compact()  # then the plan keeps old chunks and folds the newer slots
        for e in (engine, model):
            e.persist_entries(batch(30, 32))
    with engine._bg.lock:  # what the background compactor holds: others (a purge's) wait
        with engine._mutex:
            p = compaction.plan(engine)
        assert p is not None
        for e in (engine, model):
            LATER[later](e)
        written, ckpt, size = compaction.upload(engine, p)
        with engine._mutex:
            dead = compaction.publish(engine, p, written, ckpt, size)
        compaction._collect(engine, dead, p.m.mid + 1)
    assert observe(engine, KEYS) == observe(model, KEYS)
    engine.persist_entries(batch(engine.last_index() + 1, engine.last_index() + 2, term=9))
    model.persist_entries(batch(model.last_index() + 1, model.last_index() + 2, term=9))
    engine.compact()
    assert observe(engine, KEYS) == observe(model, KEYS)
    engine.close()
    with ObjectStoreEngine(store, "n") as again:
        assert observe(again, KEYS) == observe(model, KEYS)


def test_background_compaction_under_writes_keeps_everything() -> None:
    store = obstore_store.MemoryStore()
    engine = ObjectStoreEngine(store, "n", compact_slots=4, chunk_bytes=4096, background=True)
    for i in range(1, 400, 2):
        engine.persist_entries(batch(i, i + 1))
        if i % 50 == 1:
            engine.insert(b"k%d" % i, b"v")
        if i % 100 == 1 and i > 100:
            engine.purge_logs(LogId(1, i - 60))
    engine.compact()  # waits for a running one, then folds the rest
    assert engine.get_entries_range(1, 1000) == batch(242, 400)
    engine.close()
    with ObjectStoreEngine(store, "n") as again:
        assert again.get_entries_range(1, 1000) == batch(242, 400) and again.get(b"k351") == b"v"
    slots = [m["path"] for c in __import__("obstore").list(store, "n/log/") for m in c]
    assert len(slots) <= 3, slots  # everything folded but the fences


class TestObjectStoreBackgroundOnMemoryStore(EngineContract):
    def open_engine(self, path: str) -> StorageEngine:
        store = _MEMORY.setdefault(path, obstore_store.MemoryStore())
        return ObjectStoreEngine(store, "node", compact_slots=2, background=True)


_MEMORY: dict[str, Any] = {}


class BackgroundVsModel(ObjectStoreVsModel):
    """The model machine with compaction in the background (every 2 slots)."""

    compact_slots = 2

    def _open(self) -> StorageEngine:
        if not hasattr(self, "store"):
            self.store: Any = obstore_store.MemoryStore()
        return ObjectStoreEngine(self.store, "node", compact_slots=2, background=True)


TestBackgroundVsModel = BackgroundVsModel.TestCase
TestBackgroundVsModel.settings = settings(stateful_step_count=40, max_examples=40)
