"""Model-based test: ``ObjectStoreEngine`` against ``InMemoryEngine`` under random operation sequences.

The machine of ``tests/test_stateful.py`` (every call on the model and on the
engine, outcomes and the whole observable state compared after each step),
with the engine on a MemoryStore compacting every 3 slots, a rule that
compacts on demand, and reopens that rebuild everything from the objects.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import settings
from hypothesis.stateful import rule

from segwal.types import StorageEngine

obstore_store = pytest.importorskip("obstore.store")

from test_stateful import EngineVsModel  # noqa: E402

from segwal.storage.objectstore import ObjectStoreEngine  # noqa: E402


class ObjectStoreVsModel(EngineVsModel):
    """The model machine against an ``ObjectStoreEngine`` on a MemoryStore."""

    free_commit_index = True
    compact_slots = 3
    cache_bytes = 1 << 20

    def _open(self) -> StorageEngine:
        if not hasattr(self, "store"):
            self.store: Any = obstore_store.MemoryStore()
        return ObjectStoreEngine(self.store, "node", compact_slots=self.compact_slots, cache_bytes=self.cache_bytes)

    @rule()
    def compact(self) -> None:
        engine = self.engine
        assert isinstance(engine, ObjectStoreEngine)
        engine.compact()


class ObjectStoreVsModelNoCache(ObjectStoreVsModel):
    """No caches and rare compactions: every read is a ranged GET, reopens replay many slots."""

    compact_slots = 20
    cache_bytes = 0


_STEPS = settings(stateful_step_count=40, max_examples=40)
TestObjectStoreVsModel = ObjectStoreVsModel.TestCase
TestObjectStoreVsModel.settings = _STEPS
TestObjectStoreVsModelNoCache = ObjectStoreVsModelNoCache.TestCase
TestObjectStoreVsModelNoCache.settings = _STEPS
