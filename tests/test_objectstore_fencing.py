"""Fencing, lost replies and store failures of ``ObjectStoreEngine``.

Two engines on one prefix: the older one's next write of any kind (log, hard
state, key/value) raises FencedError, and so does every later call; a stale
writer that resumes after the new owner purged and compacted cannot get a
write accepted either.  A wrapper seam performs a PUT and then raises a
timeout (a lost reply): the engine retries and does not fence itself.
Injected failures surface as StorageIOError and lose nothing acknowledged.
Runs on MemoryStore and on the session's SeaweedFS.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from segwal.errors import FencedError, StorageIOError
from segwal.types import Entry, HardState, LogId, VotedFor

obstore_store = pytest.importorskip("obstore.store")

from segwal.storage.objectstore import ObjectStoreEngine  # noqa: E402
from segwal.storage.objectstore.seam import ObjectInfo, ObjectStoreSeam, ObstoreAdapter, StoredObject  # noqa: E402


def batch(first: int, last: int, term: int = 1, tag: str = "") -> list[Entry]:
    return [Entry(i, term, f"{tag}{i}/{term}".encode()) for i in range(first, last + 1)]


class FaultySeam:
    """Wraps a seam; ``plan`` decides per PUT: ``None`` (pass), ``"lost"`` (perform, then time
    out), ``"fail"`` (time out without performing)."""

    def __init__(self, inner: ObjectStoreSeam) -> None:
        self.inner = inner
        self.plan: Callable[[str], str | None] = lambda name: None
        self.puts: list[str] = []

    def get(self, name: str) -> StoredObject | None:
        return self.inner.get(name)

    def get_range(self, name: str, start: int, end: int) -> bytes | None:
        return self.inner.get_range(name, start, end)

    def put(self, name: str, data: bytes, *, create: bool = False, write_id: str | None = None) -> None:
        self.puts.append(name)
        action = self.plan(name)
        if action == "fail":
            raise StorageIOError(110, "injected timeout (not performed)", name)
        self.inner.put(name, data, create=create, write_id=write_id)
        if action == "lost":
            raise StorageIOError(110, "injected timeout (performed, reply lost)", name)

    def list(self, prefix: str, after: str | None = None) -> list[ObjectInfo]:
        return self.inner.list(prefix, after)

    def head(self, name: str) -> ObjectInfo | None:
        return self.inner.head(name)

    def delete(self, names: Sequence[str]) -> None:
        self.inner.delete(names)


@pytest.fixture(params=["memory", "seaweedfs"])
def store(request: pytest.FixtureRequest) -> tuple[Any, str]:
    """A store and a fresh prefix: a MemoryStore, or the session's SeaweedFS bucket."""
    prefix = f"fencing/{uuid.uuid4().hex[:12]}"
    if request.param == "memory":
        return obstore_store.MemoryStore(), prefix
    server = request.getfixturevalue("seaweedfs")
    return server.store(), prefix


def open_engine(store: tuple[Any, str], **kw: Any) -> ObjectStoreEngine:
    kw.setdefault("retries", 2)
    kw.setdefault("retry_delay", 0.0)
    return ObjectStoreEngine(store[0], store[1], **kw)


# -- fencing ------------------------------------------------------------------

WRITES: dict[str, Callable[[ObjectStoreEngine], object]] = {
    "log": lambda e: e.persist_entries(batch(4, 4)),
    "hard state": lambda e: e.save_hard_state(HardState(9, VotedFor(1, 9))),
    "kv": lambda e: e.insert(b"k", b"old"),
    "truncate": lambda e: e.truncate(2),
    "purge": lambda e: e.purge_logs(LogId(1, 2)),
}


@pytest.mark.parametrize("kind", sorted(WRITES))
def test_the_older_writer_is_fenced_on_its_next_write_of_any_kind(store: tuple[Any, str], kind: str) -> None:
    old = open_engine(store)
    old.persist_entries(batch(1, 3))
    new = open_engine(store)
    with pytest.raises(FencedError):
        WRITES[kind](old)
    for call in (lambda: old.persist_entries(batch(4, 4)), old.last_index, lambda: old.get(b"k")):
        with pytest.raises(FencedError):
            call()  # every later call too
    assert new.get_entries_range(1, 10) == batch(1, 3)
    assert new.load_hard_state() is None and new.get(b"k") is None
    new.persist_entries(batch(4, 5, term=2))
    new.close()
    old.close()
    with open_engine(store) as again:
        assert again.get_entries_range(1, 10) == batch(1, 3) + batch(4, 5, term=2)
        assert again.load_hard_state() is None and again.get(b"k") is None


def test_a_write_that_landed_before_the_fence_is_part_of_the_log(store: tuple[Any, str]) -> None:
    old = open_engine(store)
    old.persist_entries(batch(1, 3))
    old.save_hard_state(HardState(2, VotedFor(3, 2)))
    old.insert(b"a", b"1")
    new = open_engine(store)
    assert new.get_entries_range(1, 3) == batch(1, 3)
    assert new.load_hard_state() == HardState(2, VotedFor(3, 2))
    assert new.get(b"a") == b"1"
    old.close()
    new.close()


def test_a_stale_writer_after_purge_and_compaction_gets_nothing_accepted(store: tuple[Any, str]) -> None:
    old = open_engine(store, compact_slots=4)
    for i in range(1, 21, 2):
        old.persist_entries(batch(i, i + 1))
    new = open_engine(store, compact_slots=4)
    new.purge_logs(LogId(1, 18))  # deletes the old slots and chunks below the boundary
    new.compact()
    for kind in ("log", "hard state", "kv"):
        with pytest.raises(FencedError):
            WRITES[kind](old)
    with pytest.raises(FencedError):
        old.persist_entries(batch(21, 22))
    assert new.last_index() == 20 and new.load_hard_state() is None and new.get(b"k") is None
    new.close()
    with open_engine(store) as again:
        assert again.get_entries_range(1, 100) == batch(19, 20)
        assert again.load_hard_state() is None and again.get(b"k") is None
    old.close()


def test_a_third_writer_fences_the_second_and_the_first_stays_fenced(store: tuple[Any, str]) -> None:
    a = open_engine(store, compact_slots=3)
    a.persist_entries(batch(1, 2))
    b = open_engine(store, compact_slots=3)
    b.persist_entries(batch(3, 4))
    c = open_engine(store, compact_slots=3)
    for i in range(5, 15):
        c.persist_entries(batch(i, i))  # compactions delete older slots and retire manifests
    for e in (a, b):
        with pytest.raises(FencedError):
            e.persist_entries(batch(3, 3, term=5))
        with pytest.raises(FencedError):
            e.save_hard_state(HardState(7, VotedFor(2, 7)))
    assert c.get_entries_range(1, 20) == batch(1, 14)
    for e in (a, b, c):
        e.close()


# -- lost replies and injected failures -----------------------------------------


def faulty(store: tuple[Any, str]) -> FaultySeam:
    return FaultySeam(ObstoreAdapter(store[0]))


def test_a_lost_reply_is_retried_and_does_not_fence(store: tuple[Any, str]) -> None:
    seam = faulty(store)
    engine = ObjectStoreEngine(seam, store[1], retries=2, retry_delay=0.0, compact_slots=4)
    lost: set[str] = set()

    def lose_first_attempt(name: str) -> str | None:
        if name in lost:
            return None
        lost.add(name)
        return "lost"

    seam.plan = lose_first_attempt  # every first PUT of every object lands, then its reply is lost
    engine.persist_entries(batch(1, 3))
    engine.save_hard_state(HardState(1, VotedFor(1, 1)))
    assert engine.insert(b"k", b"v") is None
    for i in range(4, 12):
        engine.persist_entries(batch(i, i))  # crosses compactions: manifests and chunks too
    assert engine.get_entries_range(1, 20) == batch(1, 11)
    engine.close()
    with open_engine(store) as again:
        assert again.get_entries_range(1, 20) == batch(1, 11)
        assert again.load_hard_state() == HardState(1, VotedFor(1, 1)) and again.get(b"k") == b"v"


def test_a_lost_reply_at_open_does_not_fence_the_opener(store: tuple[Any, str]) -> None:
    with open_engine(store) as first:
        first.persist_entries(batch(1, 2))
    seam = faulty(store)
    seen: set[str] = set()

    def lose_claim_and_fence(name: str) -> str | None:
        if ("/manifest/" in name or "/log/" in name) and name not in seen:
            seen.add(name)
            return "lost"
        return None

    seam.plan = lose_claim_and_fence
    with ObjectStoreEngine(seam, store[1], retries=2, retry_delay=0.0) as engine:
        engine.persist_entries(batch(3, 3))
        assert engine.get_entries_range(1, 5) == batch(1, 3)


def test_transient_failures_are_retried(store: tuple[Any, str]) -> None:
    seam = faulty(store)
    engine = ObjectStoreEngine(seam, store[1], retries=3, retry_delay=0.0)
    count = iter(range(1000))
    seam.plan = lambda name: "fail" if next(count) % 3 < 2 else None  # two failures, then success
    engine.persist_entries(batch(1, 2))
    engine.save_hard_state(HardState(3))
    engine.apply([(b"x", b"1")], applied=LogId(1, 2))
    engine.close()
    with open_engine(store) as again:
        assert again.get_entries_range(1, 5) == batch(1, 2) and again.load_hard_state() == HardState(3)
        assert again.last_applied() == LogId(1, 2)


def test_every_reply_lost_still_succeeds(store: tuple[Any, str]) -> None:
    """Each PUT lands and its reply is lost: each retry finds its own write id and succeeds."""
    seam = faulty(store)
    engine = ObjectStoreEngine(seam, store[1], retries=1, retry_delay=0.0, compact_slots=3)
    seam.plan = lambda name: "lost"
    for i in range(1, 8):
        engine.persist_entries(batch(i, i))
    engine.save_hard_state(HardState(2))
    assert engine.get_entries_range(1, 10) == batch(1, 7)
    engine.close()
    with open_engine(store) as again:
        assert again.get_entries_range(1, 10) == batch(1, 7) and again.load_hard_state() == HardState(2)


@pytest.mark.parametrize("first", ["fail", "lost"])
def test_a_store_that_keeps_failing_raises_and_loses_nothing_acknowledged(store: tuple[Any, str], first: str) -> None:
    """The first attempt fails (performed or not), every retry fails unperformed: StorageIOError.
    The failed batch is then whole or absent; retrying it (what Raft does) works either way."""
    seam = faulty(store)
    engine = ObjectStoreEngine(seam, store[1], retries=2, retry_delay=0.0)
    engine.persist_entries(batch(1, 3))
    tried: set[str] = set()

    def plan(name: str) -> str:
        action = "fail" if name in tried else first
        tried.add(name)
        return action

    seam.plan = plan
    with pytest.raises(StorageIOError):
        engine.persist_entries(batch(4, 5, tag="x"))
    with pytest.raises(StorageIOError):
        engine.save_hard_state(HardState(4))
    seam.plan = lambda name: None
    engine.persist_entries(batch(4, 5, tag="x"))
    engine.save_hard_state(HardState(4))
    engine.persist_entries(batch(6, 6))
    assert engine.get_entries_range(1, 10) == batch(1, 3) + batch(4, 5, tag="x") + batch(6, 6)
    engine.close()
    with open_engine(store) as again:
        assert again.get_entries_range(1, 10) == batch(1, 3) + batch(4, 5, tag="x") + batch(6, 6)
        assert again.load_hard_state() == HardState(4)


def test_a_failed_write_that_landed_is_adopted_by_the_next_write(store: tuple[Any, str]) -> None:
    seam = faulty(store)
    engine = ObjectStoreEngine(seam, store[1], retries=1, retry_delay=0.0)
    engine.persist_entries(batch(1, 2))
    tried: set[str] = set()

    def plan(name: str) -> str:
        action = "fail" if name in tried else "lost"
        tried.add(name)
        return action

    seam.plan = plan
    with pytest.raises(StorageIOError):
        engine.persist_entries(batch(3, 4))  # landed, but the caller was told it failed
    assert engine.last_index() == 2
    seam.plan = lambda name: None
    engine.insert(b"after", b"1")  # finds slot 3 taken by its own failed write: adopts it, not a fence
    assert engine.get_entries_range(1, 10) == batch(1, 4)
    engine.close()
    with open_engine(store) as again:
        assert again.get_entries_range(1, 10) == batch(1, 4) and again.get(b"after") == b"1"


# -- SeaweedFS stopped and started again ---------------------------------------------


def test_server_restart_mid_run(seaweedfs: Any) -> None:
    prefix = f"restart/{uuid.uuid4().hex[:12]}"
    engine = ObjectStoreEngine(seaweedfs.store(), prefix, retries=1, retry_delay=0.05)
    engine.persist_entries(batch(1, 5))
    engine.save_hard_state(HardState(1, VotedFor(1, 1)))
    seaweedfs.stop()
    try:
        with pytest.raises(StorageIOError):
            engine.persist_entries(batch(6, 7))
        with pytest.raises(StorageIOError):
            engine.insert(b"k", b"v")
    finally:
        seaweedfs.restart()
    engine.persist_entries(batch(6, 7))
    engine.insert(b"k", b"v")
    assert engine.get_entries_range(1, 10) == batch(1, 7)
    engine.close()
    with ObjectStoreEngine(seaweedfs.store(), prefix) as again:
        assert again.get_entries_range(1, 10) == batch(1, 7)
        assert again.load_hard_state() == HardState(1, VotedFor(1, 1)) and again.get(b"k") == b"v"


def test_a_compaction_whose_manifest_landed_unacknowledged_is_adopted(store: tuple[Any, str]) -> None:
    seam = faulty(store)
    engine = ObjectStoreEngine(seam, store[1], retries=1, retry_delay=0.0, compact_slots=4)
    tried: set[str] = set()

    def plan(name: str) -> str | None:
        if "/manifest/" not in name or len(tried) >= 1 and name not in tried:
            return None
        action = "fail" if name in tried else "lost"
        tried.add(name)
        return action

    engine.persist_entries(batch(1, 1))  # slot 2 (the fence is slot 1)
    seam.plan = plan
    for i in range(2, 5):
        engine.persist_entries(batch(i, i))  # the 4th slot compacts: its manifest lands, unacknowledged
    assert len(tried) == 1
    seam.plan = lambda name: None
    for i in range(5, 10):
        engine.persist_entries(batch(i, i))  # the next compaction adopts it and collects its garbage
    engine.insert(b"k", b"v")
    assert engine.get_entries_range(1, 20) == batch(1, 9)
    engine.close()
    with open_engine(store) as again:
        assert again.get_entries_range(1, 20) == batch(1, 9) and again.get(b"k") == b"v"
    inner = ObstoreAdapter(store[0])
    slots = [i.name for i in inner.list(f"{store[1]}/log/")]
    assert len(slots) <= 6, slots  # fences and the slots after the last manifest only


class IgnoresConditions(FaultySeam):
    """A store that overwrites even when asked to create only if absent."""

    def put(self, name: str, data: bytes, *, create: bool = False, write_id: str | None = None) -> None:
        self.inner.put(name, data, create=False, write_id=write_id)


def test_a_store_without_create_if_absent_is_refused_at_open() -> None:
    store = obstore_store.MemoryStore()
    with pytest.raises(StorageIOError, match="create-if-absent"):
        ObjectStoreEngine(IgnoresConditions(ObstoreAdapter(store)), "n")
    assert [m["path"] for c in __import__("obstore").list(store, "n/") for m in c] == []


def test_an_old_write_landing_between_claim_and_fence_is_kept(store: tuple[Any, str]) -> None:
    """The old writer's PUT lands after the new owner claimed the epoch but before its fence:
    the fence steps over it, the new owner replays it; the old writer's next write is fenced."""
    old = open_engine(store)
    old.persist_entries(batch(1, 2))
    seam = faulty(store)
    raced: list[str] = []

    def race_the_fence(name: str) -> str | None:
        if "/log/" in name and not raced:
            raced.append(name)
            old.persist_entries(batch(3, 4))  # lands in the slot the fence was about to take
        return None

    seam.plan = race_the_fence
    new = ObjectStoreEngine(seam, store[1], retries=1, retry_delay=0.0)
    assert raced and new.get_entries_range(1, 10) == batch(1, 4)
    with pytest.raises(FencedError):
        old.persist_entries(batch(5, 5))
    new.close()
    old.close()
    with open_engine(store) as again:
        assert again.get_entries_range(1, 10) == batch(1, 4)


def test_an_old_writer_compacting_after_the_new_owner_collected_is_fenced_not_corrupt(store: tuple[Any, str]) -> None:
    old = open_engine(store, compact_slots=1000, cache_bytes=0)
    for i in range(1, 9):
        old.persist_entries(batch(i, i))
    new = open_engine(store, compact_slots=1000)
    new.compact()  # folds and deletes the old writer's slots
    with pytest.raises(FencedError):
        old.compact()  # its slots are gone: it finds the newer epoch, not damage
    with pytest.raises(FencedError):
        old.last_index()
    assert new.get_entries_range(1, 10) == batch(1, 8)
    new.close()
    old.close()
