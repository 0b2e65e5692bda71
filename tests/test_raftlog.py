"""Tests of ``BufferedRaftLog``: Raft's matching rule, durability claims, group
commit, failure handling and restart recovery, under both strategies.

Everything is ordered with events, never with sleeps: a :class:`GatedEngine`
wrapper can hold the engine's ``flush`` (or ``persist_entries``) until the
test releases it, and records what reached the engine and what was synced.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from segwal.engine import Entry, LogId, WalEngine
from segwal.errors import EngineClosedError, EnginePoisonedError
from segwal.fs import OsFileSystem
from segwal.raft.log import BufferedRaftLog
from segwal.raft.strategy import DiskFirst, MemFirst, WriteStats
from segwal.storage.memory import InMemoryEngine
from segwal.testing import FaultyFS

WAIT = 30.0  # generous bound on event waits; only hit when a test is failing


class GatedEngine:
    """Wraps an engine; records persist/flush calls; can block them on events.

    Attributes:
        persisted: the index lists of every ``persist_entries`` call, in order.
        synced: the highest index known to be durable in the inner engine
            (advanced after a successful flush, or a persist on a sync engine).
        flush_gate / persist_gate: when set to an unset Event, the call waits
            for it (after setting ``flush_entered`` / ``persist_entered``).
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.persisted: list[list[int]] = []
        self.flushes = 0
        self.synced = 0
        self._written = 0  # last index handed to the inner engine
        self.flush_gate: threading.Event | None = None
        self.persist_gate: threading.Event | None = None
        self.flush_entered = threading.Event()
        self.persist_entered = threading.Event()
        self.flushed = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def persist_entries(self, entries: Any) -> None:
        batch = list(entries)
        self.persist_entered.set()
        if self.persist_gate is not None:
            assert self.persist_gate.wait(WAIT)
        self.inner.persist_entries(batch)
        self.persisted.append([e.index for e in batch])
        if batch:
            self._written = batch[-1].index
            if self.inner.is_write_durable():
                self.synced = self._written

    def flush(self) -> None:
        self.flush_entered.set()
        if self.flush_gate is not None:
            assert self.flush_gate.wait(WAIT)
        self.inner.flush()
        self.flushes += 1
        self.synced = self._written
        self.flushed.set()


def E(index: int, term: int, payload: bytes | None = None) -> Entry:
    return Entry(index, term, payload if payload is not None else b"p%d.%d" % (index, term))


STRATEGIES = [pytest.param(DiskFirst(), id="diskfirst"), pytest.param(MemFirst(), id="memfirst")]


@pytest.fixture(params=["memory", "wal"])
def make_engine(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Any]:
    def make() -> Any:
        if request.param == "memory":
            return InMemoryEngine()
        return WalEngine(tmp_path / "wal", sync="flush", segment_size=4096)

    yield make


def contents(log: BufferedRaftLog) -> list[tuple[int, int]]:
    return [(e.index, e.term) for e in log.get_entries_range(0, log.last_index())]


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


# --------------------------------------------------------------- group commit


def test_group_commit_batches_appends_made_during_one_fsync() -> None:
    eng = GatedEngine(InMemoryEngine())
    gate = eng.flush_gate = threading.Event()
    log = BufferedRaftLog(eng, MemFirst(idle_interval=0))
    log.append_payloads(1, [b"first"])
    assert eng.flush_entered.wait(WAIT)  # the writer is inside the (slow) fsync of batch 1

    def appender(k: int) -> None:
        for n in range(10):
            log.append_payloads(1, [b"%d" % k])

    threads = [threading.Thread(target=appender, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    gate.set()
    log.flush()
    assert eng.persisted == [[1], list(range(2, 42))]  # 40 appends, one persist call
    assert log.durable_index() == 41
    assert log.write_stats() == WriteStats(writes=2, entries=41)
    log.close()


def test_size_threshold_triggers_a_write_without_waiters() -> None:
    eng = GatedEngine(InMemoryEngine())
    log = BufferedRaftLog(eng, MemFirst(idle_interval=3600, max_batch_entries=5))
    log.append([E(i, 1) for i in range(1, 5)])  # 4 < 5: waits for the (huge) idle interval
    assert not eng.persist_entered.is_set()
    log.append([E(5, 1)])
    assert eng.flushed.wait(WAIT)  # the threshold fired, nobody asked
    assert eng.persisted == [[1, 2, 3, 4, 5]]
    log.close()


def test_idle_interval_flushes_without_waiters() -> None:
    eng = GatedEngine(InMemoryEngine())
    log = BufferedRaftLog(eng, MemFirst(idle_interval=0.001))
    log.append([E(1, 1)])
    assert eng.flushed.wait(WAIT)
    assert log.wait_durable(1, timeout=WAIT)
    log.close()


def test_conflict_overwrite_of_pending_and_persisted_entries() -> None:
    eng = GatedEngine(InMemoryEngine())
    gate = eng.flush_gate = threading.Event()
    log = BufferedRaftLog(eng, MemFirst(idle_interval=0))
    log.append([E(1, 1), E(2, 1), E(3, 1)])
    assert eng.flush_entered.wait(WAIT)  # 1..3 handed to the engine, fsync in progress
    log.append([E(4, 1), E(5, 1), E(6, 1)])  # pending in memory
    # conflict inside the pending part: handled in memory
    assert log.append_entries(LogId(1, 4), [E(5, 2)])
    # conflict inside the batch being fsynced: its completion must not claim 2..3
    assert log.append_entries(LogId(1, 1), [E(2, 3)])
    assert contents(log) == [(1, 1), (2, 3)]
    gate.set()
    log.flush()
    assert log.durable_index() == 2
    assert eng.persisted == [[1, 2, 3], [2]]  # the engine overwrote its suffix from 2
    assert [(e.index, e.term) for e in eng.inner.get_entries_range(1, 10)] == [(1, 1), (2, 3)]
    log.close()


def test_durable_index_lowered_by_truncation() -> None:
    with BufferedRaftLog(InMemoryEngine(), MemFirst(idle_interval=0)) as log:
        log.append([E(i, 1) for i in range(1, 6)])
        log.flush()
        assert log.durable_index() == 5
        eng = log.engine
        assert log.append_entries(LogId(1, 2), [E(3, 2)])
        assert log.durable_index() <= 3
        log.flush()
        assert log.durable_index() == 3
        assert [(e.index, e.term) for e in eng.get_entries_range(1, 9)] == [(1, 1), (2, 1), (3, 2)]


def test_waiter_keeps_waiting_when_its_target_is_truncated() -> None:
    """A thread waiting for index 3 is not released by the completion of a write
    whose entry 3 was overwritten meanwhile, nor by a timeout of another waiter;
    it returns once the new entry 3 is durable."""
    eng = GatedEngine(InMemoryEngine())
    gate = eng.flush_gate = threading.Event()
    log = BufferedRaftLog(eng, MemFirst(idle_interval=0))
    log.append([E(1, 1), E(2, 1), E(3, 1)])
    assert eng.flush_entered.wait(WAIT)  # 1..3 are being fsynced
    result: list[bool] = []
    waiter = threading.Thread(target=lambda: result.append(log.wait_durable(3, timeout=WAIT)))
    waiter.start()
    assert not log.wait_durable(3, timeout=0.01)  # a timed-out waiter leaves no trace
    infinite = threading.Thread(target=lambda: result.append(log.wait_durable(3, timeout=float("inf"))))
    infinite.start()  # an infinite timeout is no timeout
    assert log.append_entries(LogId(1, 1), [E(2, 2)])  # 2..3 overwritten during the fsync
    gate.set()
    log.flush()
    assert log.durable_index() == 2 and log.last_index() == 2
    assert waiter.is_alive() and result == []
    log.append([E(3, 2)])
    waiter.join(WAIT)
    infinite.join(WAIT)
    assert result == [True, True]
    assert log.durable_index() == 3 and log.entry(3) == E(3, 2)
    log.close()


def test_waiters_time_out_inside_the_wake_relay(monkeypatch: Any) -> None:
    """Waiters whose target became durable are released one by one (a relay);
    one whose timeout expires before the relay reaches it leaves the relay
    and reports its durable target, and nobody after it is stranded."""
    from segwal.raft import writer as raftwriter

    eng = GatedEngine(InMemoryEngine())
    gate = eng.flush_gate = threading.Event()
    log = BufferedRaftLog(eng, MemFirst(idle_interval=0))
    log.append([E(1, 1), E(2, 1), E(3, 1)])
    assert eng.flush_entered.wait(WAIT)
    results: dict[int, bool] = {}
    waiters = [
        threading.Thread(target=lambda i=i: results.__setitem__(i, log.wait_durable(i, timeout=0.3)))
        for i in (1, 2, 3)
    ]
    for t in waiters:
        t.start()
    while len(log._waiting) < 3:  # all three are blocked on their locks
        threading.Event().wait(0.001)
    monkeypatch.setattr(raftwriter, "_pass_relay", lambda relay: None)  # the relay never starts
    gate.set()
    for t in waiters:
        t.join(WAIT)
    assert results == {1: True, 2: True, 3: True} and log._relay == []
    assert log.durable_index() == 3
    monkeypatch.undo()
    log.append([E(4, 1)])  # later waiters are woken normally
    assert log.wait_durable(4, timeout=WAIT)
    log.close()


def test_many_waiters_with_timeouts_never_hang() -> None:
    """16 threads append and wait with short random timeouts (some expire):
    every wait returns, True exactly when the target is durable, and a final
    untimed wait of each thread succeeds."""
    rng = random.Random(5)
    timeouts = [[rng.choice([0.0, 0.0001, 0.001, 0.01, None]) for _ in range(40)] for _ in range(16)]
    log = BufferedRaftLog(InMemoryEngine(), MemFirst(idle_interval=0.0005))
    bad: list[tuple[int, bool, int]] = []

    def worker(k: int) -> None:
        last = 0
        for t in timeouts[k]:
            lid = log.append_payloads(1, [b"%d" % k])
            assert lid is not None
            last = lid.index
            ok = log.wait_durable(last, timeout=t)
            if ok != (log.durable_index() >= last) and ok:
                bad.append((last, ok, log.durable_index()))
        assert log.wait_durable(last)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
        assert not t.is_alive()
    assert bad == [] and log.durable_index() == 16 * 40
    assert log._waiting == [] and log._relay == []
    log.close()


def _in_a_thread(fn: Any, name: str = "worker") -> Any:
    """Run ``fn`` in a new (non-main) thread and return its result or raise its exception."""
    out: list[Any] = []

    def run() -> None:
        try:
            out.append((True, fn()))
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller
            out.append((False, e))

    t = threading.Thread(target=run, name=name, daemon=True)
    t.start()
    t.join(WAIT)
    assert out, f"{name} did not finish within {WAIT} s"
    ok, value = out[0]
    if not ok:
        raise value
    return value


def _without_writer_thread(monkeypatch: Any) -> None:
    """Make new MemFirst logs start a writer thread that exits at once, so that
    only threads waiting for durability write (deterministic helper tests)."""
    monkeypatch.setattr(BufferedRaftLog, "_writer_loop", lambda self: None)


def test_a_waiting_thread_that_completes_the_group_writes_it(monkeypatch: Any) -> None:
    """The thread whose wait finds the group complete and nobody writing persists
    the batch itself (a write-group leader) and returns once it is durable;
    the other waiters of the batch are released by it."""
    _without_writer_thread(monkeypatch)
    eng = GatedEngine(InMemoryEngine())
    writers: list[str] = []
    inner_persist = eng.persist_entries
    monkeypatch.setattr(eng, "persist_entries", lambda b: (writers.append(threading.current_thread().name), inner_persist(b)))
    log = BufferedRaftLog(eng, MemFirst(idle_interval=3600))
    log.append([E(1, 1), E(2, 1)])
    assert not _in_a_thread(lambda: log.wait_durable(1, timeout=0.01))  # a timeout never writes: the write may outlast it
    assert eng.persisted == []
    assert _in_a_thread(lambda: log.wait_durable(1), name="helper-1")
    assert eng.persisted == [[1, 2]] and writers == ["helper-1"]
    assert log.durable_index() == 2 and log.write_stats() == WriteStats(1, 2)
    # the helper counts as a sibling of the next batch: 0 released + itself
    log.append([E(3, 1)])
    other = threading.Thread(target=lambda: log.wait_durable(3), name="helper-2", daemon=True)
    other.start()
    other.join(WAIT)
    assert eng.persisted == [[1, 2], [3]] and writers[-1] == "helper-2" and log.durable_index() == 3


def test_the_main_thread_never_writes_a_group(monkeypatch: Any) -> None:
    """The main thread, where a Ctrl-C lands, leaves writing to the writer thread:
    an interrupt there can never poison the log in the middle of a write."""
    eng = GatedEngine(InMemoryEngine())
    writers: list[str] = []
    inner_persist = eng.persist_entries
    monkeypatch.setattr(eng, "persist_entries", lambda b: (writers.append(threading.current_thread().name), inner_persist(b)))
    log = BufferedRaftLog(eng, MemFirst(idle_interval=3600))
    log.append([E(1, 1)])  # nobody waits: pending for the hour; the wait below would lead it
    assert threading.current_thread() is threading.main_thread()
    assert log.wait_durable(1)
    assert writers == ["segwal-raftlog-writer"]
    log.close()


def test_a_helping_thread_that_fails_poisons_the_log(monkeypatch: Any, tmp_path: Any) -> None:
    """A failed write by a waiting thread reaches it as EnginePoisonedError, and the
    log refuses everything after, exactly as a failure of the writer thread."""
    _without_writer_thread(monkeypatch)
    fs = FaultyFS(OsFileSystem())
    log = BufferedRaftLog(WalEngine(tmp_path / "wal", sync="always", fs=fs), MemFirst())
    log.append([E(1, 1)])
    assert _in_a_thread(lambda: log.wait_durable(1))
    fs.fail("sync", persistent=True)
    log.append([E(2, 1)])
    with pytest.raises(EnginePoisonedError) as info:
        _in_a_thread(lambda: log.wait_durable(2))
    assert isinstance(info.value.__cause__, OSError)
    assert log.durable_index() == 1
    with pytest.raises(EnginePoisonedError):
        log.append([E(3, 1)])
    with pytest.raises(EnginePoisonedError):
        log.close()


def _until(cond: Any) -> bool:
    """Poll ``cond`` for up to WAIT seconds (for states with no event to wait on)."""
    end = time.monotonic() + WAIT
    while not cond():
        if time.monotonic() > end:
            return False
        time.sleep(0.0005)
    return True


def test_a_helper_whose_write_covers_its_target_returns_true_during_close() -> None:
    """close() starting while a waiting thread writes its group does not turn that
    thread's durable entry into an error; close waits for the write."""
    eng = GatedEngine(InMemoryEngine())
    log = BufferedRaftLog(eng, MemFirst(idle_interval=3600))
    log.append([E(1, 1)])  # nobody waits: the writer sleeps out the hour
    gate = eng.flush_gate = threading.Event()
    result: list[object] = []
    helper = threading.Thread(target=lambda: result.append(log.wait_durable(1)))
    helper.start()  # it marks the batch urgent and captures it under the same lock
    assert eng.flush_entered.wait(WAIT)
    closer = threading.Thread(target=log.close)
    closer.start()
    assert _until(lambda: log._closing)
    gate.set()
    helper.join(WAIT)
    closer.join(WAIT)
    assert result == [True] and not closer.is_alive()
    assert eng.persisted == [[1]] and log.durable_index() == 1


def test_an_interrupted_waiter_does_not_stop_the_relay(monkeypatch: Any) -> None:
    """A wait_durable interrupted while blocked (KeyboardInterrupt in a CLI) leaves
    nothing behind: the waiters after it are still woken by the next write."""
    import _thread

    from segwal.raft import writer as raftwriter

    class Interrupted(BaseException):
        pass

    class InterruptedLock:  # its first blocking wait raises, as a signal handler would
        def __init__(self) -> None:
            self.inner = _thread.allocate_lock()
            self.calls = 0

        def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
            self.calls += 1
            if self.calls == 2:
                raise Interrupted
            return self.inner.acquire(blocking, timeout)

        def release(self) -> None:
            self.inner.release()

    eng = GatedEngine(InMemoryEngine())
    gate = eng.flush_gate = threading.Event()
    log = BufferedRaftLog(eng, MemFirst(idle_interval=0))
    log.append([E(1, 1)])
    assert eng.flush_entered.wait(WAIT)  # the writer is inside the fsync of [1]
    monkeypatch.setattr(raftwriter, "_allocate_lock", InterruptedLock)
    with pytest.raises(Interrupted):
        log.wait_durable(1)
    monkeypatch.undo()
    done: list[bool] = []
    waiters = [threading.Thread(target=lambda: done.append(log.wait_durable(1)), daemon=True) for _ in range(2)]
    for t in waiters:
        t.start()
    assert _until(lambda: len(log._waiting) == 2)
    gate.set()
    for t in waiters:
        t.join(WAIT)
    assert done == [True, True]
    log.close()


def test_after_a_helper_the_writer_still_serves_waiters_of_later_appends() -> None:
    """With idle_interval=0 the writer waits for a helper without a timeout; when
    the helper hands back, an append that no waiter completes must still wake it
    (a thread already waiting for that index would otherwise wait forever)."""
    for _attempt in range(50):  # the helper races the writer for the first batch
        eng = GatedEngine(InMemoryEngine())
        gate = eng.flush_gate = threading.Event()
        log = BufferedRaftLog(eng, MemFirst(idle_interval=0))
        writers: list[str] = []
        inner = eng.persist_entries
        eng.persist_entries = lambda b, inner=inner, w=writers: (w.append(threading.current_thread().name), inner(b))[1]
        helper = threading.Thread(target=lambda: (log.append([E(1, 1)]), log.wait_durable(1)), name="helper")
        helper.start()
        assert eng.flush_entered.wait(WAIT)
        if writers == ["helper"]:
            break
        gate.set()
        helper.join(WAIT)
        log.close()
    else:
        pytest.fail("the writer thread always took the first batch")
    plain = threading.Thread(target=lambda: log.wait_durable(1), daemon=True)  # joins batch [1] as a plain waiter
    plain.start()
    assert _until(lambda: len(log._waiting) == 1)
    assert _until(lambda: log._wstate == "helper")  # the writer saw the helper writing
    gate.set()
    helper.join(WAIT)
    plain.join(WAIT)
    result: list[bool] = []
    later = threading.Thread(target=lambda: result.append(log.wait_durable(2)), daemon=True)
    later.start()  # waits for an index not appended yet (a flush() or follower pattern)
    assert _until(lambda: len(log._waiting) == 1)
    log.append([E(2, 1)])  # one append, fewer than the two siblings the helper released
    later.join(WAIT)
    assert result == [True] and log.durable_index() == 2
    log.close()


def test_a_waiter_cuts_the_idle_interval_short(tmp_path: Any) -> None:
    """With an hour-long idle interval, entries nobody waits for stay pending, but
    a thread or a coroutine that waits for one gets it written at once."""
    import asyncio

    eng = GatedEngine(InMemoryEngine())
    log = BufferedRaftLog(eng, MemFirst(idle_interval=3600))
    log.append([E(1, 1)])
    assert log.wait_durable(1, timeout=WAIT)
    log.append([E(2, 1)])

    async def main() -> None:
        await asyncio.wait_for(log.wait_durable_async(2), WAIT)

    asyncio.run(main())
    assert eng.persisted == [[1], [2]] and log.durable_index() == 2
    log.close()


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


def test_asyncio_appenders_await_durability(tmp_path: Any) -> None:
    """Coroutines on one event loop await wait_durable_async; each returns only once
    its entry is durable, and group commit batches them."""
    import asyncio

    log = BufferedRaftLog(WalEngine(tmp_path / "wal", sync="always"), MemFirst())
    seen: list[tuple[int, int]] = []

    async def appender() -> None:
        for _ in range(20):
            lid = log.append_payloads(1, [b"cmd"])
            assert lid is not None
            await log.wait_durable_async(lid.index)
            seen.append((lid.index, log.durable_index()))

    async def main() -> None:
        await asyncio.gather(*(appender() for _ in range(8)))

    asyncio.run(main())
    assert all(durable >= index for index, durable in seen)
    assert log.durable_index() == 160
    log.close()
    with WalEngine(tmp_path / "wal") as again:
        assert again.last_index() == 160


def test_asyncio_waiters_get_the_failure(tmp_path: Any) -> None:
    """A failed fsync reaches every coroutine awaiting durability, and none of them
    is told its entry is durable."""
    import asyncio

    fs = FaultyFS(OsFileSystem())
    eng = GatedEngine(WalEngine(tmp_path / "wal", sync="flush", fs=fs))
    log = BufferedRaftLog(eng, MemFirst(idle_interval=0))
    log.append([E(1, 1)])
    log.flush()
    fs.fail("sync", persistent=True)

    async def main() -> list[BaseException | None]:
        async def one(i: int) -> None:
            lid = log.append_payloads(1, [b"x%d" % i])
            assert lid is not None
            await log.wait_durable_async(lid.index)

        return await asyncio.gather(*(one(i) for i in range(4)), return_exceptions=True)

    results = asyncio.run(main())
    assert results and all(isinstance(r, EnginePoisonedError) for r in results)
    assert log.durable_index() == 1
    with pytest.raises(EnginePoisonedError):
        log.close()
