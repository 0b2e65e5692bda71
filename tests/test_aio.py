"""Tests of ``AsyncWalEngine`` under plain ``asyncio.run`` (no pytest plugin).

Ordering is done with events: a :class:`BlockingEngine` holds
``persist_entries`` inside the worker thread until the test releases it, which
shows the event loop keeps running during a slow write.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from segwal.engine import Entry, HardState, LogId, VotedFor
from segwal.errors import EngineClosedError, LockedError
from segwal.storage.aio import AsyncWalEngine
from segwal.storage.memory import InMemoryEngine

WAIT = 30.0


class BlockingEngine:
    """Wraps an engine; ``persist_entries`` signals ``entered`` then waits for ``release``."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.entered = threading.Event()
        self.release = threading.Event()
        self.calls: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def persist_entries(self, entries: Any) -> None:
        batch = list(entries)
        self.entered.set()
        assert self.release.wait(WAIT)
        self.inner.persist_entries(batch)
        self.calls.append(batch[0].index)


def test_roundtrip_and_reopen(tmp_path: Any) -> None:
    path = tmp_path / "wal"

    async def main() -> None:
        async with AsyncWalEngine(path, sync="flush", segment_size=4096) as eng:
            assert not eng.is_write_durable()
            await eng.persist_entries([Entry(i, 1 + i // 5, b"x%d" % i) for i in range(1, 21)])
            await eng.flush()
            assert await eng.last_index() == 20 and await eng.first_index() == 1
            assert await eng.entry(7) == Entry(7, 2, b"x7")
            assert [e.index for e in await eng.get_entries_range(3, 5)] == [3, 4, 5]
            await eng.truncate(18)
            await eng.purge_logs(LogId(1, 4))
            assert await eng.term_of(4) == 1 and await eng.purge_boundary() == LogId(1, 4)
            hs = HardState(3, VotedFor(2, 3), 10)
            await eng.save_hard_state(hs)
            assert await eng.insert(b"k", b"v") is None
            assert await eng.get(b"k") == b"v"
            await eng.apply([(b"k", None), (b"j", b"w")], LogId(2, 10))
            assert await eng.delete(b"j") == b"w"
            assert await eng.last_applied() == LogId(2, 10)
            assert await eng.load_hard_state() == hs
            with pytest.raises(ValueError):
                await eng.persist_entries([Entry(30, 9)])  # a gap: the engine's error comes through
        with pytest.raises(EngineClosedError):
            await eng.entry(5)
        eng2 = await AsyncWalEngine(path).open()
        try:
            assert await eng2.last_index() == 17 and await eng2.first_index() == 5
            with pytest.raises(LockedError):
                await AsyncWalEngine(path).open()
        finally:
            await eng2.close()
        await eng2.close()  # idempotent

    asyncio.run(main())


def test_concurrent_readers_and_one_writer(tmp_path: Any) -> None:
    async def main() -> None:
        async with AsyncWalEngine(tmp_path / "wal", sync="flush", segment_size=2048, read_workers=2) as eng:
            done = asyncio.Event()
            checks = 0

            async def writer() -> None:
                for b in range(30):
                    await eng.persist_entries([Entry(b * 5 + k, 1 + b // 10, b"%d" % (b * 5 + k)) for k in range(1, 6)])
                    if b % 10 == 9:
                        await eng.flush()
                done.set()

            async def reader() -> None:
                nonlocal checks
                while True:
                    finished = done.is_set()
                    last = await eng.last_index()
                    got = await eng.get_entries_range(1, last)
                    # what one read sees is a contiguous prefix, consistent with the writer's pattern
                    assert [e.index for e in got] == list(range(1, len(got) + 1))
                    assert len(got) >= last  # never less than the last index read before it
                    assert all(e.payload == b"%d" % e.index for e in got)
                    one = await eng.entry(max(1, last))
                    assert last == 0 or one is not None
                    checks += 1
                    if finished:
                        return

            await asyncio.gather(writer(), *(reader() for _ in range(4)))
            assert await eng.last_index() == 150
            assert checks >= 4

    asyncio.run(main())


def test_event_loop_not_blocked_by_a_slow_write() -> None:
    inner = InMemoryEngine()
    inner.persist_entries([Entry(1, 1)])
    slow = BlockingEngine(inner)

    async def main() -> None:
        eng = AsyncWalEngine(engine=slow)  # type: ignore[arg-type]
        write = asyncio.create_task(eng.persist_entries([Entry(2, 1)]))
        # wait (off the loop) until the worker thread is inside persist_entries
        assert await asyncio.to_thread(slow.entered.wait, WAIT)
        # the loop still runs other coroutines ...
        ticks = 0
        for _ in range(100):
            await asyncio.sleep(0)
            ticks += 1
        assert ticks == 100 and not write.done()
        # ... and reads complete while the write is blocked (separate read pool)
        assert await eng.last_index() == 1
        assert await eng.entry(1) == Entry(1, 1)
        assert not write.done()
        slow.release.set()
        await write
        assert await eng.last_index() == 2
        await eng.close()

    asyncio.run(main())


def test_writes_run_in_call_order_and_survive_cancellation() -> None:
    slow = BlockingEngine(InMemoryEngine())

    async def main() -> None:
        eng = AsyncWalEngine(engine=slow, read_workers=0)  # type: ignore[arg-type]
        tasks = [asyncio.create_task(eng.persist_entries([Entry(i, 1)])) for i in range(1, 11)]
        assert await asyncio.to_thread(slow.entered.wait, WAIT)
        tasks[5].cancel()  # a queued write whose caller gave up still runs, in order
        slow.release.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(results[5], asyncio.CancelledError)
        await eng.flush()  # ordered after every write called before it
        assert slow.calls == list(range(1, 11))
        assert await eng.last_index() == 10
        await eng.close()

    asyncio.run(main())


def test_arguments() -> None:
    with pytest.raises(TypeError):
        AsyncWalEngine()
    with pytest.raises(ValueError):
        AsyncWalEngine(engine=InMemoryEngine(), read_workers=-1)  # type: ignore[arg-type]
    eng = AsyncWalEngine("/nonexistent/never-opened")
    with pytest.raises(EngineClosedError):
        eng.is_write_durable()

    async def main() -> None:
        await eng.close()  # never opened: nothing to do

    asyncio.run(main())
