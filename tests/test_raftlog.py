"""Tests of ``BufferedRaftLog``'s log: Raft's matching rule, durability claims,
failure handling, restart recovery and a randomized model, under both strategies.

Everything is ordered with events, never with sleeps: a ``GatedEngine``
wrapper (``raftlog_support``) can hold the engine's ``flush`` (or
``persist_entries``) until the test releases it, and records what reached the
engine and what was synced.  Group commit and its waiters are tested in
``test_raftlog_group_commit.py``.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from raftlog_support import WAIT, E, GatedEngine, contents

from segwal.engine import Entry, LogId, WalEngine
from segwal.errors import EngineClosedError, EnginePoisonedError
from segwal.fs import OsFileSystem
from segwal.raft.log import BufferedRaftLog
from segwal.raft.strategy import DiskFirst, MemFirst, WriteStats
from segwal.storage.memory import InMemoryEngine
from segwal.testing import FaultyFS

STRATEGIES = [pytest.param(DiskFirst(), id="diskfirst"), pytest.param(MemFirst(), id="memfirst")]


@pytest.fixture(params=["memory", "wal"])
def make_engine(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Any]:
    def make() -> Any:
        if request.param == "memory":
            return InMemoryEngine()
        return WalEngine(tmp_path / "wal", sync="flush", segment_size=4096)

    yield make


# ---------------------------------------------------------------- matching rule


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_matching_rule(strategy: Any, make_engine: Any) -> None:
    with BufferedRaftLog(make_engine(), strategy) as log:
        assert log.last_log_id() is None and log.first_index() == 1 and log.term_of(0) == 0
        assert log.append_entries(None, [E(1, 1), E(2, 1), E(3, 1), E(4, 2), E(5, 2)])
        # prev mismatch: wrong term, or beyond the end -> rejected, nothing changed
        assert not log.append_entries(LogId(1, 4), [E(5, 3)])
        assert not log.append_entries(LogId(2, 7), [E(8, 2)])
        assert contents(log) == [(1, 1), (2, 1), (3, 1), (4, 2), (5, 2)]
        # duplicates (a stale, shorter message) are skipped: no truncation
        assert log.append_entries(LogId(1, 1), [E(2, 1), E(3, 1)])
        assert log.last_index() == 5
        # heartbeat
        assert log.append_entries(LogId(2, 5), [])
        # conflict at 4: truncate 4.. and append the rest
        assert log.append_entries(LogId(1, 3), [E(4, 3)])
        assert contents(log) == [(1, 1), (2, 1), (3, 1), (4, 3)]
        assert log.last_log_id() == LogId(3, 4)
        # duplicates then new entries
        assert log.append_entries(LogId(1, 2), [E(3, 1), E(4, 3), E(5, 3), E(6, 4)])
        assert contents(log) == [(1, 1), (2, 1), (3, 1), (4, 3), (5, 3), (6, 4)]
        assert log.entry(4) == E(4, 3) and log.entry(7) is None and log.entry(0) is None
        log.flush()
        assert log.durable_index() == 6
        eng = log.engine
        assert [(e.index, e.term) for e in eng.get_entries_range(1, 10)] == contents(log)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_malformed_calls_change_nothing(strategy: Any) -> None:
    with BufferedRaftLog(InMemoryEngine(), strategy) as log:
        log.append([E(1, 1), E(2, 2)])
        with pytest.raises(ValueError):
            log.append_entries(LogId(2, 2), [E(4, 2)])  # does not start at prev + 1
        with pytest.raises(ValueError):
            log.append_entries(LogId(2, 2), [E(3, 1)])  # term below prev's
        with pytest.raises(ValueError):
            log.append_entries(LogId(2, 2), [E(3, 3), E(4, 2)])  # decreasing terms
        with pytest.raises(ValueError):
            log.append([E(5, 2)])  # leader append not at the end
        with pytest.raises(ValueError):
            log.append([E(3, 1)])  # leader term below the last term
        with pytest.raises(TypeError):
            log.append([(3, 2, b"")])  # type: ignore[list-item]
        with pytest.raises(TypeError):
            log.append_entries(LogId(2, 2), [Entry(3, 2, "text")])  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            log.append_payloads(1, [b"x"])  # term below the last term
        assert contents(log) == [(1, 1), (2, 2)]
        assert log.append_payloads(2, [b"a", b"b"]) == LogId(2, 4)
        assert log.entry(4) == Entry(4, 2, b"b")


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_prev_is_purge_boundary_after_restart(strategy: Any, tmp_path: Any) -> None:
    path = tmp_path / "wal"
    with BufferedRaftLog(WalEngine(path, sync="flush", segment_size=512), strategy) as log:
        log.append([E(i, 1 + i // 4) for i in range(1, 11)])
        log.purge(LogId(log.term_of(6) or 0, 6))
        assert log.first_index() == 7 and log.entry(6) is None
    t6 = 1 + 6 // 4
    with BufferedRaftLog(WalEngine(path, sync="flush", segment_size=512), strategy) as log:
        assert log.purge_boundary() == LogId(t6, 6)
        assert log.term_of(6) == t6 and log.term_of(5) is None
        assert not log.append_entries(LogId(t6 + 1, 6), [E(7, t6 + 1)])
        assert log.append_entries(LogId(t6, 6), [E(7, 1 + 7 // 4)])  # a duplicate
        assert log.last_index() == 10
        # prev below the boundary: the purged prefix is committed, it matches
        assert log.append_entries(LogId(1, 2), [E(i, 1 + i // 4) for i in range(3, 11)] + [E(11, 9)])
        assert log.last_log_id() == LogId(9, 11)
        # purge beyond the end empties the log (snapshot install)
        log.purge(LogId(9, 20))
        assert log.first_index() == 21 and log.last_log_id() == LogId(9, 20)
    with BufferedRaftLog(WalEngine(path, sync="flush", segment_size=512), strategy) as log:
        assert log.term_of(20) == 9 and log.last_log_id() == LogId(9, 20)
        assert log.get_entries_range(0, 100) == []
        assert log.append_entries(LogId(9, 20), [E(21, 9)])
        assert contents(log) == [(21, 9)]


# ------------------------------------------------------------------ durability


def test_memfirst_durable_only_after_the_flush_that_covers_it() -> None:
    eng = GatedEngine(InMemoryEngine())
    gate = eng.flush_gate = threading.Event()
    log = BufferedRaftLog(eng, MemFirst(idle_interval=0))
    log.append([E(1, 1), E(2, 1), E(3, 1)])  # returns after the memory write
    assert log.entry(3) == E(3, 1)
    assert eng.flush_entered.wait(WAIT)
    # persisted, but the fsync has not returned: not durable
    assert eng.persisted == [[1, 2, 3]]
    assert log.durable_index() == 0
    assert not log.wait_durable(1, timeout=0)
    gate.set()
    assert log.wait_durable(3, timeout=WAIT)
    assert log.durable_index() == 3 <= eng.synced
    log.close()


def test_memfirst_durable_index_never_exceeds_synced() -> None:
    eng = GatedEngine(InMemoryEngine())
    log = BufferedRaftLog(eng, MemFirst(idle_interval=0, max_batch_entries=7))
    stop = threading.Event()
    violations: list[tuple[int, int]] = []

    def sample() -> None:
        while not stop.is_set():
            d = log.durable_index()
            s = eng.synced  # read after: synced only grows here (no truncation)
            if d > s:
                violations.append((d, s))

    def appender(k: int) -> None:
        for n in range(60):
            lid = log.append_payloads(1, [b"%d-%d" % (k, n)])
            assert lid is not None
            if n % 7 == 0:
                assert log.wait_durable(lid.index, timeout=WAIT)

    sampler = threading.Thread(target=sample)
    sampler.start()
    threads = [threading.Thread(target=appender, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.flush()
    stop.set()
    sampler.join()
    assert violations == []
    assert log.durable_index() == 240 == eng.synced
    assert [i for batch in eng.persisted for i in batch] == list(range(1, 241))
    log.close()


def test_fsync_failure_stops_everything(tmp_path: Any) -> None:
    fs = FaultyFS(OsFileSystem())
    path = tmp_path / "wal"
    eng = GatedEngine(WalEngine(path, sync="flush", fs=fs))
    log = BufferedRaftLog(eng, MemFirst(idle_interval=0))
    log.append([E(1, 1), E(2, 1), E(3, 1)])
    log.flush()
    assert log.durable_index() == 3
    fs.fail("sync", persistent=True)
    log.append([E(4, 1), E(5, 1), E(6, 2)])  # memory write succeeds
    with pytest.raises(EnginePoisonedError) as info:
        log.flush()
    assert isinstance(info.value.__cause__, OSError)
    assert log.durable_index() == 3  # the failed batch is never reported durable
    assert eng.persisted[-1] == [4, 5, 6] and eng.synced == 3
    calls = [
        lambda: log.entry(1),
        lambda: log.term_of(2),
        lambda: log.last_index(),
        lambda: log.first_index(),
        lambda: log.last_log_id(),
        lambda: log.get_entries_range(1, 3),
        lambda: log.append([E(7, 2)]),
        lambda: log.append_entries(LogId(2, 6), [E(7, 2)]),
        lambda: log.append_payloads(2, [b"x"]),
        lambda: log.wait_durable(1),
        lambda: log.flush(),
        lambda: log.purge(LogId(1, 1)),
    ]
    for call in calls:
        with pytest.raises(EnginePoisonedError) as info:
            call()
        assert isinstance(info.value.__cause__, OSError)
    assert log.durable_index() == 3
    with pytest.raises(EnginePoisonedError):
        log.close()  # releases the engine, reports the failure
    log.close()  # idempotent
    fs.clear()
    with WalEngine(path, sync="flush") as again:  # what was acknowledged durable is there
        assert [e.index for e in again.get_entries_range(1, 3)] == [1, 2, 3]


def test_diskfirst_returns_only_after_durable() -> None:
    eng = GatedEngine(InMemoryEngine())  # not a sync engine: DiskFirst persists then flushes
    gate = eng.flush_gate = threading.Event()
    log = BufferedRaftLog(eng, DiskFirst())
    returned = threading.Event()

    def append() -> None:
        log.append([E(1, 1), E(2, 1)])
        returned.set()

    t = threading.Thread(target=append)
    t.start()
    assert eng.flush_entered.wait(WAIT)
    assert not returned.is_set()  # blocked in flush: the append has not returned
    assert log.durable_index() == 0 and log.last_index() == 0  # not visible before durable
    gate.set()
    t.join()
    assert returned.is_set() and log.durable_index() == 2 == eng.synced
    assert eng.persisted == [[1, 2]] and eng.flushes == 1
    log.close()


def test_diskfirst_sync_engine_one_write_per_append(tmp_path: Any) -> None:
    eng = GatedEngine(WalEngine(tmp_path / "wal", sync="always"))
    with BufferedRaftLog(eng, DiskFirst()) as log:
        for i in range(1, 6):
            assert log.append_payloads(1, [b"x"]) == LogId(1, i)
            assert log.durable_index() == i == eng.synced
        assert eng.persisted == [[i] for i in range(1, 6)] and eng.flushes == 0
        assert log.write_stats() == WriteStats(writes=5, entries=5)


# ------------------------------------------------------------------- recovery


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_restart_recovery(strategy: Any, tmp_path: Any) -> None:
    path = tmp_path / "wal"
    with BufferedRaftLog(WalEngine(path, sync="flush", segment_size=512), strategy, cache_entries=3) as log:
        log.append([E(i, 1, b"v%d" % i) for i in range(1, 31)])
        assert log.append_entries(LogId(1, 20), [E(21, 2, b"new")])
        log.append_payloads(3, [b"a", b"b"])
        log.purge(LogId(1, 5))
        before = log.get_entries_range(0, 100)
        state = (log.first_index(), log.last_index(), log.last_log_id(), log.purge_boundary())
    assert [e.index for e in before] == list(range(6, 24))
    with BufferedRaftLog(WalEngine(path, sync="flush", segment_size=512), strategy, cache_entries=3) as log:
        assert (log.first_index(), log.last_index(), log.last_log_id(), log.purge_boundary()) == state
        assert log.get_entries_range(0, 100) == before
        assert [log.entry(i) for i in range(6, 24)] == before
        assert log.term_of(5) == 1 and log.term_of(21) == 2 and log.term_of(23) == 3
        assert log.durable_index() == 23


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("seed", [1, 2])
def test_random_operations_match_a_model(strategy: Any, seed: int, tmp_path: Any) -> None:
    """Seeded random appends/conflicts/purges/reopens against a list model, with a tiny cache."""
    rng = random.Random(seed)
    path = tmp_path / "wal"

    def open_log() -> BufferedRaftLog:
        return BufferedRaftLog(WalEngine(path, sync="flush", segment_size=512), strategy, cache_entries=2)

    model: dict[int, int] = {}  # index -> term
    boundary: LogId | None = None
    last = 0
    log = open_log()
    for _ in range(150):
        op = rng.random()
        last_term = model.get(last, boundary.term if boundary else 0)
        if op < 0.45:  # leader append
            n = rng.randint(1, 4)
            term = last_term + rng.randint(0, 1)
            log.append([E(last + k, term) for k in range(1, n + 1)])
            for k in range(1, n + 1):
                model[last + k] = term
            last += n
        elif op < 0.75 and last > 0:  # follower append with a possible conflict
            lo = boundary.index if boundary else 0
            p = rng.randint(lo, last)
            pt = model.get(p, boundary.term if boundary and p == boundary.index else 0)
            new_term = max(last_term, pt) + rng.randint(0, 1)
            ents = [E(p + k, max(pt, model.get(p + k, 0)) if rng.random() < 0.5 and p + k in model else new_term)
                    for k in range(1, rng.randint(1, 4) + 1)]
            # keep terms non-decreasing along the batch
            fixed: list[Entry] = []
            for e in ents:
                t = max(e.term, fixed[-1].term if fixed else pt)
                fixed.append(E(e.index, t))
            assert log.append_entries(LogId(pt, p) if p else None, fixed)
            for e in fixed:
                if model.get(e.index) != e.term:
                    for i in list(model):
                        if i >= e.index:
                            del model[i]
                    last = e.index - 1
                    break
            for e in fixed:
                if e.index > last:
                    model[e.index] = e.term
                    last = e.index
        elif op < 0.85 and last > 0:
            k = rng.randint(boundary.index if boundary else 0, last)
            if k > 0 and k in model:
                cutoff = LogId(model[k], k)
                log.purge(cutoff)
                boundary = cutoff
                for i in list(model):
                    if i <= k:
                        del model[i]
        elif op < 0.92:
            log.close()
            log = open_log()
        else:
            log.flush()
            assert log.durable_index() == last
        assert log.last_index() == last
        assert [(e.index, e.term) for e in log.get_entries_range(0, last + 5)] == sorted(model.items())
        if model:
            i = rng.choice(list(model))
            assert log.term_of(i) == model[i]
    log.close()
    with WalEngine(path) as eng:
        assert [(e.index, e.term) for e in eng.get_entries_range(0, last)] == sorted(model.items())
        assert eng.purge_boundary() == boundary


def test_closed_log_raises() -> None:
    log = BufferedRaftLog(InMemoryEngine(), MemFirst())
    log.append([E(1, 1)])
    log.close()
    with pytest.raises(EngineClosedError):
        log.entry(1)
    with pytest.raises(EngineClosedError):
        log.append([E(2, 1)])
    log.close()

