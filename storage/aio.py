"""``AsyncWalEngine``: the engine's methods as coroutines, with file I/O off the event loop.

Strategy: every call is forwarded to a synchronous engine (a
:class:`~segwal.engine.WalEngine` by default, or any
:class:`~segwal.types.StorageEngine`) in a worker thread, so the
event loop never blocks on a read, a write or an fsync.

* **Writes** (``persist_entries``, ``truncate``, ``purge_logs``, ``flush``,
  ``reset``, ``save_hard_state``, ``insert``, ``delete``, ``apply``, ``close``)
  run on one single-thread executor per engine, so they reach the engine in the
  order they were *called* (not the order they were awaited).  A write whose
  awaiting task is cancelled still runs to completion (it is shielded): a write
  is never silently dropped once called.
* **Reads** run on a separate small pool (``read_workers`` threads), so they
  proceed while a write waits for its fsync; ``WalEngine`` allows readers
  concurrent with its writer.  With ``read_workers=0`` reads share the write
  thread (for engines that are not safe for concurrent reads, such as
  ``InMemoryEngine``); then every call is ordered.

A read awaited after a write's ``await`` sees that write.  Durability is the
underlying engine's: ``await eng.persist_entries(...)`` is durable when it
returns iff :meth:`is_write_durable` (``sync="always"``), and ``await
eng.flush()`` always makes earlier writes durable.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any, Literal, Self, TypeVar

from segwal.engine.engine import DEFAULT_SEGMENT_SIZE, WalEngine
from segwal.errors import EngineClosedError
from segwal.types import Entry, HardState, KVChange, LogId, StorageEngine

__all__ = ["AsyncWalEngine"]

T = TypeVar("T")


class AsyncWalEngine:
    """A :class:`WalEngine` (or any StorageEngine) driven from asyncio.

    Args:
        path: the engine directory, opened by :meth:`open` or ``async with``
            (opening is file I/O too, so it also runs in the write thread).
        engine: an already open engine to wrap instead of ``path`` (the async
            engine owns it: :meth:`close` closes it).
        segment_size, sync: passed to :class:`WalEngine` when opening ``path``.
        read_workers: threads for reads (0: reads share the write thread).

    Example::

        async with AsyncWalEngine(path, sync="flush") as eng:
            await eng.persist_entries([Entry(1, 1, b"x")])
            await eng.flush()
            e = await eng.entry(1)

    Every method has the contract of the synchronous one (see
    :mod:`segwal.types`); each is a coroutine except
    :meth:`is_write_durable`, which does no I/O.

    Thread safety: use one instance from one event loop.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        engine: StorageEngine | None = None,
        segment_size: int = DEFAULT_SEGMENT_SIZE,
        sync: Literal["always", "flush"] = "always",
        read_workers: int = 2,
    ) -> None:
        if (path is None) == (engine is None):
            raise TypeError("give exactly one of path or engine")
        if type(read_workers) is not int or read_workers < 0:
            raise ValueError(f"read_workers must be an int >= 0, got {read_workers!r}")
        self._path = path
        self._kwargs: dict[str, Any] = {"segment_size": segment_size, "sync": sync}
        self._engine: StorageEngine | None = engine
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="segwal-aio-write")
        self._reader = (
            ThreadPoolExecutor(max_workers=read_workers, thread_name_prefix="segwal-aio-read")
            if read_workers
            else self._writer
        )
        self._closed = False

    # ------------------------------------------------------------ plumbing

    @property
    def engine(self) -> StorageEngine:
        """The synchronous engine (do not call its methods from the event loop)."""
        if self._engine is None:
            raise EngineClosedError("AsyncWalEngine is not open: await open() or use 'async with'")
        return self._engine

    async def _write(self, fn: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise EngineClosedError("AsyncWalEngine is closed")
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(self._writer, functools.partial(fn, *args))
        return await asyncio.shield(fut)

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise EngineClosedError("AsyncWalEngine is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._reader, functools.partial(fn, *args))

    async def open(self) -> AsyncWalEngine:
        """Open the engine at ``path`` in the write thread (no-op when already open).

        Raises what :class:`WalEngine` raises (LockedError, CorruptionError, ...).
        """
        if self._engine is None:
            assert self._path is not None  # __init__ requires one of path and engine
            self._engine = await self._write(functools.partial(WalEngine, self._path, **self._kwargs))
        return self

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the engine (flushes: durable on return), then stop the worker threads.  Idempotent."""
        if self._closed:
            return
        try:
            if self._engine is not None:
                await self._write(self._engine.close)
        finally:
            self._closed = True
            self._writer.shutdown(wait=False)
            if self._reader is not self._writer:
                self._reader.shutdown(wait=False)

    def is_write_durable(self) -> bool:
        """Whether each mutating call is durable when its await returns.  No I/O.  O(1)."""
        return self.engine.is_write_durable()

    # -------------------------------------------------------------- writes

    async def persist_entries(self, entries: Iterable[Entry]) -> None:
        """Append a batch atomically, overwriting from its first index.

        Durability: as the engine (durable on return with ``sync="always"``).
        Complexity: O(batch) in the write thread; O(1) on the loop.
        """
        await self._write(self.engine.persist_entries, list(entries))

    async def truncate(self, from_index: int) -> None:
        """Remove every entry >= ``from_index``.  Durability: as the engine."""
        await self._write(self.engine.truncate, from_index)

    async def purge_logs(self, cutoff: LogId) -> None:
        """Remove every entry <= ``cutoff.index``.  Durability: as the engine."""
        await self._write(self.engine.purge_logs, cutoff)

    async def flush(self) -> None:
        """Return when every write called before is on stable storage."""
        await self._write(self.engine.flush)

    async def reset(self) -> None:
        """Clear the log, the boundary and key/value data; keep the hard state."""
        await self._write(self.engine.reset)

    async def save_hard_state(self, hard_state: HardState) -> None:
        """Durably replace the hard state (durable on return in every mode)."""
        await self._write(self.engine.save_hard_state, hard_state)

    async def insert(self, key: bytes, value: bytes) -> bytes | None:
        """Set ``key``; returns the previous value.  Durability: as the engine."""
        return await self._write(self.engine.insert, key, value)

    async def delete(self, key: bytes) -> bytes | None:
        """Remove ``key``; returns the previous value.  Durability: as the engine."""
        return await self._write(self.engine.delete, key)

    async def apply(self, changes: Iterable[KVChange], applied: LogId | None = None) -> object:
        """Apply key/value changes and record ``applied`` atomically.  Durability: as the engine."""
        return await self._write(self.engine.apply, list(changes), applied)

    # --------------------------------------------------------------- reads

    async def entry(self, index: int) -> Entry | None:
        """The entry at ``index`` or ``None``.  O(1) in the read pool."""
        return await self._read(self.engine.entry, index)

    async def get_entries_range(self, start: int, end: int) -> list[Entry]:
        """Entries ``start..end`` inclusive that exist.  O(returned) in the read pool."""
        return await self._read(self.engine.get_entries_range, start, end)

    async def last_index(self) -> int:
        """Highest index of the log.  O(1)."""
        return await self._read(self.engine.last_index)

    async def first_index(self) -> int:
        """Lowest readable index.  O(1)."""
        return await self._read(self.engine.first_index)

    async def term_of(self, index: int) -> int | None:
        """Term of ``index`` or of the purge boundary at its index; ``None`` otherwise.

        Uses the engine's ``term_of`` when it has one (``WalEngine`` does),
        else ``entry``/``purge_boundary``.  O(1).
        """
        eng = self.engine
        fn = getattr(eng, "term_of", None)
        if fn is not None:
            return await self._read(fn, index)

        def term() -> int | None:
            b = eng.purge_boundary()
            if b is not None and b.index == index:
                return b.term
            e = eng.entry(index)
            return None if e is None else e.term

        return await self._read(term)

    async def purge_boundary(self) -> LogId | None:
        """The last purged ``LogId`` or ``None``.  O(1)."""
        return await self._read(self.engine.purge_boundary)

    async def load_hard_state(self) -> HardState | None:
        """The saved hard state or ``None``.  O(1)."""
        return await self._read(self.engine.load_hard_state)

    async def get(self, key: bytes) -> bytes | None:
        """The value of ``key`` or ``None``."""
        return await self._read(self.engine.get, key)

    async def last_applied(self) -> LogId | None:
        """The ``LogId`` recorded by the last ``apply(..., applied=...)``, or ``None``."""
        return await self._read(self.engine.last_applied)
