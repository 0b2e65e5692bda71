"""Tests of ``BufferedRaftLog``'s group commit under ``MemFirst``: batching, the
writer's triggers, truncations racing a write, the wake relay, the write-group
leader (a waiting thread that writes the batch itself) and asyncio waiters.

Everything is ordered with events, never with sleeps (``GatedEngine`` in
``raftlog_support`` holds the engine's calls until the test releases them);
where a state has no event, ``_until`` polls for it.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import pytest
from raftlog_support import WAIT, E, GatedEngine, contents

from segwal.engine import LogId, WalEngine
from segwal.errors import EnginePoisonedError
from segwal.fs import OsFileSystem
from segwal.raft.log import BufferedRaftLog
from segwal.raft.strategy import MemFirst, WriteStats
from segwal.storage.memory import InMemoryEngine
from segwal.testing import FaultyFS

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
