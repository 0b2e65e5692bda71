"""The conformance kit against ``ObjectStoreEngine`` on MemoryStore, LocalStore and SeaweedFS S3.

Each variant maps the kit's directory ``path`` to a store and prefix: a
MemoryStore kept per path (so a reopen sees the same objects), a LocalStore
rooted at the path, and a prefix of the session's SeaweedFS bucket.  The
small ``compact_slots`` makes the kit's histories cross compactions.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from segwal.testing.conformance import EngineContract
from segwal.types import StorageEngine

obstore_store = pytest.importorskip("obstore.store")

from segwal.storage.objectstore import ObjectStoreEngine  # noqa: E402

_MEMORY: dict[str, Any] = {}


class TestObjectStoreOnMemoryStore(EngineContract):
    def open_engine(self, path: str) -> StorageEngine:
        store = _MEMORY.setdefault(path, obstore_store.MemoryStore())
        return ObjectStoreEngine(store, "node", compact_slots=4)


class TestObjectStoreOnLocalStore(EngineContract):
    def open_engine(self, path: str) -> StorageEngine:
        return ObjectStoreEngine(obstore_store.LocalStore(path, mkdir=True), compact_slots=8)


class TestObjectStoreOnSeaweedFS(EngineContract):
    @pytest.fixture(autouse=True)
    def _server(self, seaweedfs: Any) -> None:
        self.server = seaweedfs

    def open_engine(self, path: str) -> StorageEngine:
        prefix = "conformance/" + hashlib.sha1(path.encode()).hexdigest()[:16]
        return ObjectStoreEngine(self.server.store(), prefix, compact_slots=16, retries=1)
