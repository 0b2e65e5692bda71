"""``BufferedRaftLog``: the Raft-log layer over any :class:`StorageEngine`.

Strategy: this module owns the *protocol-level* log (the d-engine ``RaftLog``):
sequencing, Raft's matching rule, conflict truncation and an in-memory buffer
of recent entries.  Physical persistence is left to the engine below, reached
only through the :class:`~segwal.types.StorageEngine` contract
(``persist_entries`` with its conflict-overwrite semantics, ``flush``,
``purge_logs``, reads).  Two persistence strategies decide *when* an append
returns:

* :class:`DiskFirst`: after the entries are durable (``persist_entries`` on a
  ``sync="always"`` engine, else ``persist_entries`` + ``flush``), one engine
  write per append, appends serialised.
* :class:`MemFirst`: after the memory write.  A background writer thread
  hands every entry that arrived since its previous write to the engine in one
  ``persist_entries`` call and makes it durable (group commit).  When a write
  completes and releases ``n`` waiting threads, the next write waits (at most
  ``idle_interval``) for ``n`` new appends, so that appenders that wait for
  durability after each append go out together instead of in two alternating
  half-groups (PostgreSQL's ``commit_delay``/``commit_siblings`` idea).  A
  thread that calls :meth:`BufferedRaftLog.wait_durable` when that group is
  complete and nobody is writing writes the batch itself (raft-engine's
  write-group leader) instead of waking the writer and being woken after.

Waking threads is what a group commit costs besides its fsync: on a VM whose
idle vCPUs halt, each wake-up of a sleeping thread is ~20 us, and eight in a row
weigh as much as the fsync.  So the writer sleeps in a recorded state
(``_wstate``) and appends and waiters wake it only when that changes its
decision; a thread waiter blocks on its own lock and returns without taking
``_lock`` again; and the released waiters are woken in a relay, each waking the
next as soon as it runs, so that a wake-up overlaps the work of the thread before.

Theory of operation (invariants, all guarded by ``_lock``):

* The log is ``first .. last`` (empty when ``first > last``) plus the purge
  boundary.  ``_mem`` holds entries ``_mem_start .. last``; entries below
  ``_mem_start`` are in the engine, unchanged since they were persisted.
* ``_persist_from``: every entry below it has been handed to the engine with
  the content memory has now; entries from it on are *pending*.  A conflict
  truncation at ``k`` lowers it to ``k`` and the next engine write starts at
  ``k``, which the engine treats as an overwrite of its suffix.
* ``_durable``: every entry up to it is on stable storage with the content
  memory has now.  It advances only after the ``flush`` (or synchronous
  persist) that covers it, and a truncation at ``k`` lowers it to ``k - 1``.
  A truncation that races with an in-flight write is remembered
  (``_trunc_low``) so the write's completion never claims overwritten entries.
* ``_writing``: a captured batch is being written, by the writer thread or a
  helping waiter; one at a time, and the writer waits for a helper to finish.
* After any engine write fails, the log is *failed*: the writer stops and
  every later call raises :class:`~segwal.errors.EnginePoisonedError` chained
  to the original error.  ``durable_index()`` keeps its last value: nothing
  that was not fsynced is ever reported durable.

Locks: ``_wlock`` serialises the mutators (appends, purge, close); ``_lock``
(with its condition) guards the state above and is held only for memory work,
never during I/O, so readers never wait for an fsync.  Engine reads run
outside ``_lock`` and are validated afterwards with an epoch counter bumped by
every truncation and purge (a read that raced with one is retried).  Engines
that cannot serve a read concurrently with a write (``InMemoryEngine``) get
every engine call serialised by an extra I/O lock (``serialize_engine``).
"""

from __future__ import annotations

import _thread
import asyncio
import contextlib
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import repeat
from types import TracebackType
from typing import Final, Self

from segwal.errors import EngineClosedError, EnginePoisonedError, OutOfSpaceError
from segwal.types import Entry, LogId, StorageEngine

__all__ = ["BufferedRaftLog", "DiskFirst", "MemFirst", "PersistenceStrategy", "WriteStats"]

_U64: Final = 1 << 64
_UNKNOWN: Final = object()  # _known_term: not answerable without a read
_BYTES_ONLY: Final = frozenset((bytes,))
_new_tuple = tuple.__new__
_new_object = object.__new__
_set = object.__setattr__
_allocate_lock = _thread.allocate_lock
_get_ident = _thread.get_ident
_LockType = _thread.LockType
# What the MemFirst writer is doing, read by the threads that may need to wake it.
_W_RUNNING: Final = "running"  # not waiting: it will look at the state again by itself
_W_EMPTY: Final = "empty"  # nothing pending: sleeps until an append
_W_SIBLINGS: Final = "siblings"  # waits for the appenders its last write released
_W_DEADLINE: Final = "deadline"  # pending entries, nobody waiting: sleeps out the idle interval
_W_HELPER: Final = "helper"  # a waiting thread writes a batch; the writer waits for it to finish
_INF: Final = 1 << 80


@dataclass(frozen=True, slots=True)
class DiskFirst:
    """Every append returns only after its entries are durable.

    One engine write (and fsync) per append; appends are serialised.  Use it
    when the caller must not see an acknowledgement before the disk has it and
    appends are rare, or as the safe baseline.
    """


@dataclass(frozen=True, slots=True)
class MemFirst:
    """Appends return after the memory write; a writer thread persists in batches.

    Attributes:
        idle_interval: seconds a pending entry may wait for company before the
            writer hands the batch to the engine when nobody waits for it.  When
            someone waits (:meth:`BufferedRaftLog.wait_durable`,
            :meth:`BufferedRaftLog.flush`) the writer starts at once, except that
            it gives the threads its previous write released up to this long to
            append again and join the batch.  ``0`` writes as soon as it can.
        max_batch_entries: write at once when this many entries are pending.
        max_batch_bytes: write at once when this many payload bytes are pending.

    These are triggers, not caps: the writer always takes *every* pending
    entry, so the appends that arrived during one fsync go out in the next
    single write (group commit).
    """

    idle_interval: float = 0.001
    max_batch_entries: int = 4096
    max_batch_bytes: int = 4 << 20

    def __post_init__(self) -> None:
        if not (isinstance(self.idle_interval, (int, float)) and self.idle_interval >= 0):
            raise ValueError(f"idle_interval must be a number >= 0, got {self.idle_interval!r}")
        for name in ("max_batch_entries", "max_batch_bytes"):
            v = getattr(self, name)
            if type(v) is not int or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")


@dataclass(frozen=True, slots=True)
class WriteStats:
    """What :class:`BufferedRaftLog` handed to its engine so far.

    Attributes:
        writes: engine writes (``persist_entries`` calls, each made durable).
        entries: entries those writes carried; ``entries / writes`` is the mean
            group-commit batch (1 under :class:`DiskFirst` with single appends).
    """

    writes: int
    entries: int


PersistenceStrategy = DiskFirst | MemFirst
"""The two persistence strategies of :class:`BufferedRaftLog`."""


def _pass_relay(relay: list[_LockType]) -> None:
    """Release the next waiter of the wake relay, if any (see ``_notify_durable``)."""
    try:
        relay.pop().release()
    except IndexError:
        pass


def _settle_all(futs: list[asyncio.Future[None]], err: BaseException | None) -> None:
    """Complete durability futures on their own loop (skipping cancelled ones)."""
    for fut in futs:
        if not fut.done():
            if err is None:
                fut.set_result(None)
            else:
                fut.set_exception(err)


def _check_entries(entries: Iterable[Entry]) -> list[Entry]:
    """The entries as a list, checked to be exactly what every engine accepts.

    Exact ``Entry`` instances of ints and ``bytes``, u64 terms, contiguous
    ascending indexes >= 1 and non-decreasing terms.  Raises TypeError or
    ValueError naming the offending index.  O(n).
    """
    batch = entries if type(entries) is list else list(entries)
    prev: Entry | None = None
    for pos, e in enumerate(batch):
        if type(e) is not Entry:
            raise TypeError(f"entries[{pos}] is {type(e).__name__}, expected segwal Entry")
        i, t, p = e
        if type(i) is not int or type(t) is not int:
            raise TypeError(f"entries[{pos}]: index and term must be ints, got {i!r}, {t!r}")
        if type(p) is not bytes:
            raise TypeError(f"entry {i}: payload must be bytes, got {type(p).__name__}")
        if not 0 <= t < _U64:
            raise ValueError(f"entry {i}: term {t} is not in 0..2**64-1")
        if prev is None:
            if i < 1:
                raise ValueError(f"entry {i}: log indexes start at 1")
        else:
            if i != prev.index + 1:
                raise ValueError(f"entry {i}: indexes must be contiguous and ascending (expected {prev.index + 1})")
            if t < prev.term:
                raise ValueError(f"entry {i}: term {t} is lower than the term {prev.term} before it")
        prev = e
    return batch


class BufferedRaftLog:
    """A Raft log buffered in memory over a :class:`StorageEngine`.

    Args:
        engine: any engine of the StorageEngine contract, already open; the log
            owns it from now on (:meth:`close` closes it) and must be its only
            writer.  Its content at open is taken as durable.
        strategy: :class:`DiskFirst` or :class:`MemFirst` (see the module
            docstring).  ``MemFirst`` with a ``sync="flush"`` engine is the
            fast combination: the writer does one write and one flush per batch.
        cache_entries: durable entries kept in memory besides the pending ones;
            older entries are dropped from memory and read from the engine.
            ``None`` keeps every entry until it is purged.
        serialize_engine: serialise every engine call (reads included) with
            one lock, for engines that cannot read concurrently with a write.
            Default: ``False`` for ``WalEngine``, ``True`` for any other engine.

    Methods, by intent:

    * writes: :meth:`append_entries` (follower), :meth:`append` and
      :meth:`append_payloads` (leader), :meth:`purge`;
    * durability: :meth:`durable_index`, :meth:`wait_durable`, :meth:`flush`;
    * reads: :meth:`entry`, :meth:`term_of`, :meth:`get_entries_range`,
      :meth:`first_index`, :meth:`last_index`, :meth:`last_log_id`,
      :meth:`purge_boundary`;
    * lifecycle: :meth:`close`, ``with`` blocks.

    Errors: invalid arguments raise ValueError/TypeError and change nothing.
    After an engine write failed, every call except :meth:`durable_index`
    raises :class:`~segwal.errors.EnginePoisonedError` chained to the
    original error (the failing call itself raises the original error under
    ``DiskFirst``).  Reopen the engine to recover what is durable.

    Thread safety: any number of threads may append and read concurrently;
    mutators are serialised, readers never wait for I/O under ``MemFirst``.
    """

    def __init__(
        self,
        engine: StorageEngine,
        strategy: PersistenceStrategy,
        *,
        cache_entries: int | None = 65536,
        serialize_engine: bool | None = None,
    ) -> None:
        if not isinstance(strategy, (DiskFirst, MemFirst)):
            raise TypeError(f"strategy must be DiskFirst() or MemFirst(...), got {strategy!r}")
        if cache_entries is not None and (type(cache_entries) is not int or cache_entries < 0):
            raise ValueError(f"cache_entries must be an int >= 0 or None, got {cache_entries!r}")
        if serialize_engine is None:
            from segwal.engine.engine import WalEngine

            serialize_engine = not isinstance(engine, WalEngine)
        self._engine = engine
        self._strategy = strategy
        self._cache = cache_entries
        self._sync_engine = engine.is_write_durable()
        self._io: contextlib.AbstractContextManager[object] = (
            threading.Lock() if serialize_engine else contextlib.nullcontext()
        )
        self._wlock = threading.Lock()
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # the writer waits here for entries or urgency
        with self._io:
            self._boundary: LogId | None = engine.purge_boundary()
            self._first: int = engine.first_index()
            self._last: int = engine.last_index()
            self._last_term: int = self._engine_term(self._last) or 0
        self._mem: list[Entry] = []
        self._mem_start = self._last + 1
        self._persist_from = self._last + 1
        self._durable = self._last
        self._trunc_low = _INF
        self._epoch = 0
        self._pending_bytes = 0
        self._urgent = False
        # (target, lock) of the threads blocked in wait_durable: each blocks on
        # its own held lock, so a woken thread returns without taking _lock
        # again (no convoy on it after a group commit).
        self._waiting: list[tuple[int, _LockType]] = []
        # The wake relay: locks of waiters whose target is durable, not yet
        # released.  The writer releases the first; each thread releases the
        # next one as soon as it wakes (see _notify_durable).  Never rebound:
        # woken threads pop from it without _lock (list.pop is atomic).
        self._relay: list[_LockType] = []
        # (target, event loop, future) of the coroutines in wait_durable_async
        self._async_waiting: list[tuple[int, asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._expect = 0  # waiters released by the last write, expected to append again
        self._arrivals = 0  # appends since the last write completed
        self._writing = False  # a batch is being written (by the writer or a helping waiter)
        self._writes = 0  # engine writes made (WriteStats)
        self._written = 0  # entries they carried
        self._expect_deadline = 0.0
        self._wstate: object = _W_RUNNING  # what the MemFirst writer waits for (see _take_batch)
        self._closing = False
        self._closed = False
        self._failed: BaseException | None = None
        self._writer: threading.Thread | None = None
        if isinstance(strategy, MemFirst):
            self._writer = threading.Thread(target=self._writer_loop, name="segwal-raftlog-writer", daemon=True)
            self._writer.start()

    # ------------------------------------------------------------ internals

    @property
    def engine(self) -> StorageEngine:
        """The engine below (for hard state and key/value data; do not write its log)."""
        return self._engine

    @property
    def strategy(self) -> PersistenceStrategy:
        """The persistence strategy."""
        return self._strategy

    def _engine_term(self, index: int) -> int | None:
        """Term of ``index`` from the engine (caller holds ``_io``), or the boundary's."""
        b = self._boundary
        if b is not None and index == b.index:
            return b.term
        if index < 1:
            return None
        e = self._engine.entry(index)
        return None if e is None else e.term

    def _check_live(self) -> None:
        """Raise if failed or closed (caller holds ``_lock``)."""
        if self._failed is not None:
            raise EnginePoisonedError(
                f"an engine write failed ({self._failed!r}); the log refuses further calls, "
                "reopen the engine to recover what is durable"
            ) from self._failed
        if self._closed or self._closing:
            raise EngineClosedError("the raft log is closed")

    def _locate(self, index: int) -> tuple[Entry | None, int, bool]:
        """Under ``_lock``: (memory entry or None, epoch, whether to ask the engine)."""
        self._check_live()
        if self._mem_start <= index <= self._last:
            return self._mem[index - self._mem_start], self._epoch, False
        b = self._boundary.index if self._boundary is not None else 0
        in_engine = max(self._first, b + 1, 1) <= index < self._mem_start
        return None, self._epoch, in_engine

    def _read(self, index: int) -> Entry | None:
        """The entry at ``index``: from memory, else from the engine, retried on a race."""
        while True:
            with self._lock:
                e, epoch, ask = self._locate(index)
            if not ask:
                return e
            with self._io:
                e = self._engine.entry(index)
            with self._lock:
                if self._epoch == epoch:
                    return e

    def _term(self, index: int) -> int | None:
        """Term at ``index`` (memory, boundary or engine).  Caller holds ``_wlock``,
        so the log's shape cannot change underneath; no lock needed for the engine read."""
        with self._lock:
            known = self._known_term(index)
            if known is not _UNKNOWN:
                return known  # type: ignore[return-value]
            if self._mem_start <= index <= self._last:
                return self._mem[index - self._mem_start].term
            if not (max(self._first, 1) <= index < self._mem_start):
                return None
        with self._io:
            e = self._engine.entry(index)
        return None if e is None else e.term

    def _notify_durable(self) -> int:
        """Wake durability waiters after ``_durable``, ``_failed`` or ``_closed`` changed
        (caller holds ``_lock``): threads blocked in :meth:`wait_durable`, and the
        asyncio futures of :meth:`wait_durable_async` whose target is reached (all
        of them on failure or close).  Returns how many waiters were woken."""
        woken = 0
        end = self._failed is not None or self._closed
        if self._waiting:
            still: list[tuple[int, _LockType]] = []
            reached: list[_LockType] = []
            for item in self._waiting:
                if end or item[0] <= self._durable:
                    reached.append(item[1])
                else:
                    still.append(item)
            if reached:
                self._waiting = still
                woken = len(reached)
                # Released together, the threads would wake in series, each
                # after the previous one gave up the GIL: one thread wake-up
                # latency plus its work each.  In a relay each releases the
                # next as soon as it wakes, so the next wake-up overlaps its work.
                reached.reverse()
                self._relay.extend(reached)
                _pass_relay(self._relay)
        if end:
            while self._relay:
                _pass_relay(self._relay)
        if not self._async_waiting:
            return woken
        err: BaseException | None = None
        if self._failed is not None or self._closed:
            try:
                self._check_live()
                err = EngineClosedError("the raft log is closed")
            except (EnginePoisonedError, EngineClosedError) as e:
                err = e
        keep = []
        ready: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
        for target, loop, fut in self._async_waiting:
            if err is not None or target <= self._durable:
                ready.setdefault(loop, []).append(fut)
            else:
                keep.append((target, loop, fut))
        self._async_waiting = keep
        for loop, futs in ready.items():  # one wake-up of each loop for all its waiters
            try:
                loop.call_soon_threadsafe(_settle_all, futs, err)
            except RuntimeError:  # that loop is closed: nobody is waiting there any more
                pass
        return woken + sum(map(len, ready.values()))

    async def wait_durable_async(self, index: int) -> None:
        """Wait, without blocking the event loop, until ``durable_index() >= index``.

        For asyncio Raft implementations: any number of coroutines can await
        durability on one event-loop thread, so a group commit wakes them all
        without a thread switch each.  Use ``asyncio.wait_for`` for a timeout.

        Raises:
            EnginePoisonedError: an engine write failed.
            EngineClosedError: the log was closed.
        """
        if type(index) is not int:
            raise TypeError(f"index must be an int, got {index!r}")
        loop = asyncio.get_running_loop()
        with self._lock:
            self._check_live()
            if self._durable >= index:
                return
            if not self._urgent:
                self._urgent = True
                if self._wstate is _W_DEADLINE:
                    self._work.notify()
            fut = loop.create_future()
            self._async_waiting.append((index, loop, fut))
        await fut

    def _poison(self, exc: BaseException) -> None:
        with self._lock:
            if self._failed is None:
                self._failed = exc
            self._work.notify_all()
            self._notify_durable()

    # --------------------------------------------------------------- writes

    def append_entries(self, prev_log_id: LogId | None, entries: Iterable[Entry]) -> bool:
        """Apply a leader's AppendEntries with Raft's matching rule; ``False`` on a mismatch.

        ``entries`` must be contiguous from ``prev_log_id.index + 1`` (from 1
        when ``prev_log_id`` is ``None``) with non-decreasing terms, not below
        ``prev_log_id.term``.  The rule:

        1. Reject (return ``False``, change nothing) unless ``prev_log_id`` is
           ``None``, or its index is in the log (or is the purge boundary) with
           the same term.  A ``prev_log_id`` *below* the purge boundary matches:
           the purged prefix is committed, so it agrees with every leader;
           entries at or below the boundary are then ignored.
        2. Skip entries already present with the same term (a duplicate or
           reordered message never truncates anything).
        3. At the first entry whose term differs from the one stored, remove
           it and every later entry, then append the rest.

        Durability: with :class:`DiskFirst` the new entries are durable when it
        returns; with :class:`MemFirst` they are in memory (use
        :meth:`wait_durable`).  A truncation of entries already persisted is
        done by the engine's conflict overwrite, atomically with the new ones.
        Complexity: O(len(entries)) plus one engine read per compared entry
        that is no longer cached.

        Raises:
            ValueError, TypeError: malformed entries; nothing changed.
            EnginePoisonedError: an engine write failed earlier.
        """
        if prev_log_id is not None and not isinstance(prev_log_id, LogId):
            raise TypeError(f"prev_log_id must be a LogId or None, got {prev_log_id!r}")
        batch = _check_entries(entries)
        prev_index = prev_log_id.index if prev_log_id is not None else 0
        prev_term = prev_log_id.term if prev_log_id is not None else 0
        if batch:
            if batch[0].index != prev_index + 1:
                raise ValueError(f"entry {batch[0].index}: the entries must start at prev_log_id.index + 1 = {prev_index + 1}")
            if batch[0].term < prev_term:
                raise ValueError(f"entry {batch[0].index}: term {batch[0].term} is lower than prev_log_id.term {prev_term}")
        with self._wlock:
            with self._lock:
                self._check_live()
                last = self._last
                b = self._boundary.index if self._boundary is not None else 0
            if prev_index > last:
                return False
            if prev_index >= b and prev_index > 0 and self._term(prev_index) != prev_term:
                return False
            rest = [e for e in batch if e.index > b]  # at or below the boundary: committed, skip
            j = 0
            for e in rest:
                if e.index > last:
                    break
                t = self._term(e.index)
                if t is None:
                    return False  # below a log start that has no boundary: cannot be matched
                if t != e.term:
                    break
                j += 1
            new = rest[j:]
            if not new:
                return True
            before = self._term(new[0].index - 1)
            if before is not None and new[0].term < before:
                raise ValueError(
                    f"entry {new[0].index}: term {new[0].term} is lower than the term {before} of the entry before it"
                )
            self._write(new)
            return True

    def append(self, entries: Iterable[Entry]) -> LogId | None:
        """Append entries as a leader: they must start at ``last_index() + 1``.

        Terms must be non-decreasing and not below the last entry's term.
        Returns the :class:`LogId` of the last entry appended (``None`` for an
        empty batch).  Durability and complexity as :meth:`append_entries`.

        Raises:
            ValueError: the entries do not continue the log; nothing changed.
        """
        batch = _check_entries(entries)
        if not batch:
            return None
        with self._wlock:
            with self._lock:
                self._check_live()
                if batch[0].index != self._last + 1:
                    raise ValueError(f"entry {batch[0].index}: a leader append must start at {self._last + 1}")
                if batch[0].term < self._last_term:
                    raise ValueError(
                        f"entry {batch[0].index}: term {batch[0].term} is lower than the last term {self._last_term}"
                    )
            self._write(batch)
            return LogId(batch[-1].term, batch[-1].index)

    def append_payloads(self, term: int, payloads: Iterable[bytes]) -> LogId | None:
        """Append new entries with ``term`` and these payloads at the end of the log.

        The indexes are assigned under the writers' lock, so concurrent
        leader threads need not coordinate.  Returns the :class:`LogId` of the
        last new entry (``None`` when ``payloads`` is empty); pass its index to
        :meth:`wait_durable`.  Durability and complexity as :meth:`append_entries`.
        """
        data = list(payloads)
        if not data:
            return None
        if type(term) is not int:
            raise TypeError(f"term must be an int, got {term!r}")
        if isinstance(self._strategy, MemFirst) and 0 <= term < _U64 and _BYTES_ONLY.issuperset(map(type, data)):
            return self._append_mem(term, data)
        with self._wlock:
            with self._lock:
                self._check_live()
                start = self._last + 1
            batch = _check_entries([Entry(start + k, term, p) for k, p in enumerate(data)])
            with self._lock:
                if term < self._last_term:
                    raise ValueError(f"term {term} is lower than the last term {self._last_term}")
            self._write(batch)
            return LogId(term, batch[-1].index)

    def _append_mem(self, term: int, data: list[bytes]) -> LogId:
        """The MemFirst leader append with arguments already checked: one pass
        under the locks, with :meth:`_stage` and :meth:`_install` inlined for
        the append at ``last + 1``.  Every appender's Python work runs between
        two fsyncs under the GIL, so its cost bounds group-commit throughput
        directly (``bench/raftlog_bench.py``)."""
        with self._wlock, self._lock:
            if self._failed is not None or self._closed or self._closing:
                self._check_live()
            if term < self._last_term:
                raise ValueError(f"term {term} is lower than the last term {self._last_term}")
            start = self._last + 1
            if len(data) == 1:
                new = [_new_tuple(Entry, (start, term, data[0]))]
                nbytes = len(data[0])
            else:
                new = list(map(_new_tuple, repeat(Entry), zip(range(start, start + len(data)), repeat(term), data)))
                nbytes = sum(map(len, data))
            if self._mem:  # it holds _mem_start .. last, so the new entries go at its end
                self._mem += new
            else:
                self._mem = new
                self._mem_start = start
            if self._first >= start:  # the log was empty
                self._first = start
            self._last = last = start + len(new) - 1
            self._last_term = term
            self._pending_bytes += nbytes
            self._arrivals += 1
            w = self._wstate
            if w is not _W_RUNNING and self._writer_decides(w):
                self._work.notify()
        lid = _new_object(LogId)  # both fields were checked above: skip the constructor's checks
        _set(lid, "term", term)
        _set(lid, "index", last)
        return lid

    def _write(self, new: list[Entry]) -> None:
        """Install ``new`` (first index <= last + 1) per the strategy.  Holds ``_wlock``."""
        k = new[0].index
        if isinstance(self._strategy, DiskFirst):
            try:
                with self._io:
                    self._engine.persist_entries(new)
                    if not self._sync_engine:
                        self._engine.flush()
            except OutOfSpaceError:
                raise  # the engine rolled the batch back and stays usable
            except BaseException as e:
                self._poison(e)
                raise
            with self._lock:
                self._writes += 1
                self._written += len(new)
                self._install(k, new)
                self._persist_from = self._last + 1
                self._durable = self._last
                self._evict()
                self._notify_durable()
            return
        nbytes = sum(len(e.payload) for e in new)
        with self._lock:
            self._check_live()
            self._stage(k, new, nbytes)

    def _stage(self, k: int, new: list[Entry], nbytes: int) -> None:
        """MemFirst: put ``new`` in memory for the writer (caller holds ``_lock``)."""
        s = self._strategy
        assert isinstance(s, MemFirst)
        self._install(k, new)
        self._pending_bytes += nbytes
        self._arrivals += 1
        w = self._wstate
        if w is not _W_RUNNING and self._writer_decides(w):
            self._work.notify()

    def _writer_decides(self, w: object) -> bool:
        """Whether an append must wake the MemFirst writer, waiting in state ``w``
        (caller holds ``_lock``).  Only when the append changes its decision:
        each needless wake is a thread switch in the middle of the appenders.
        It sleeps untimed only when nothing is pending; waiting for the siblings
        it needs the last of them; any timed wait ends at a size threshold."""
        if w is _W_HELPER:  # it cannot write now; the helper hands back when done
            return False
        return w is _W_EMPTY or (w is _W_SIBLINGS and self._arrivals >= self._expect) or self._batch_full()

    def _batch_full(self) -> bool:
        """MemFirst: the pending entries reach a size threshold, so they go at once
        (caller holds ``_lock``)."""
        s = self._strategy
        assert isinstance(s, MemFirst)
        return self._last - self._persist_from + 1 >= s.max_batch_entries or self._pending_bytes >= s.max_batch_bytes

    def _install(self, k: int, new: list[Entry]) -> None:
        """Put ``new`` in memory from index ``k`` on (caller holds ``_lock``)."""
        old_last = self._last
        if k <= old_last:  # conflict truncation
            self._epoch += 1
            self._persist_from = min(self._persist_from, k)
            self._durable = min(self._durable, k - 1)
            self._trunc_low = min(self._trunc_low, k)
        if self._first > old_last:  # the log was empty
            self._first = k
        if k < self._mem_start or not self._mem:
            self._mem = list(new)
            self._mem_start = k
        else:
            del self._mem[k - self._mem_start :]
            self._mem.extend(new)
        self._last = new[-1].index
        self._last_term = new[-1].term

    def _evict(self) -> None:
        """Drop durable entries beyond the cache size from memory (caller holds ``_lock``).

        Evicts in chunks, so its cost is O(1) amortised per entry.
        """
        cap = self._cache
        if cap is None or len(self._mem) <= 2 * cap + 64:
            return
        limit = min(self._durable, self._persist_from - 1) + 1  # entries below it are in the engine
        drop = min(len(self._mem) - cap, limit - self._mem_start)
        if drop > 0:
            del self._mem[:drop]
            self._mem_start += drop

    def purge(self, cutoff: LogId) -> None:
        """Remove every entry <= ``cutoff.index`` (log compaction after a snapshot).

        First makes every pending entry durable (a flush barrier), then calls
        the engine's ``purge_logs``.  A cutoff beyond the end empties the log
        and moves ``last_index()`` to ``cutoff.index`` (snapshot install).  A
        cutoff at or below the current boundary is a no-op.

        Durability: follows the engine (durable on return with ``sync="always"``).
        Complexity: O(pending entries) for the barrier plus the engine purge.

        Raises:
            ValueError: ``cutoff.index`` is in the log with another term.
        """
        if not isinstance(cutoff, LogId):
            raise TypeError(f"cutoff must be a LogId, got {cutoff!r}")
        with self._wlock:
            with self._lock:
                self._check_live()
                if self._boundary is not None and cutoff.index <= self._boundary.index:
                    return
                if self._boundary is None and cutoff.index < self._first - 1:
                    return
            t = self._term(cutoff.index)
            if cutoff.index <= self.last_index() and t is not None and t != cutoff.term:
                raise ValueError(
                    f"cutoff {cutoff}: entry {cutoff.index} has term {t}, not {cutoff.term} "
                    "(a snapshot of a different history)"
                )
            self.flush()
            try:
                with self._io:
                    self._engine.purge_logs(cutoff)
            except ValueError:
                raise
            except BaseException as e:
                self._poison(e)
                raise
            with self._lock:
                k = cutoff.index
                self._epoch += 1
                self._boundary = cutoff
                self._first = k + 1
                if k >= self._last:
                    self._mem = []
                    self._mem_start = k + 1
                    self._last = k
                    self._last_term = cutoff.term
                elif k >= self._mem_start:
                    del self._mem[: k + 1 - self._mem_start]
                    self._mem_start = k + 1
                self._persist_from = max(self._persist_from, k + 1)
                self._durable = max(self._durable, k)
                self._notify_durable()

    # ------------------------------------------------------------ durability

    def durable_index(self) -> int:
        """The highest index up to which the log is on stable storage.

        Only advances after the fsync (or synchronous persist) that covers it;
        a conflict truncation at ``k`` lowers it to ``k - 1``.  Never raises:
        after a failure it keeps its last value.  O(1).
        """
        with self._lock:
            return self._durable

    def _may_help(self, index: int) -> bool:
        """Whether a thread about to wait for ``index`` should write the pending
        batch itself (caller holds ``_lock``): MemFirst, nobody writing, its
        target pending, and the writer's policy for a waited-for batch says go.
        Never the main thread: it alone receives signals, and a Ctrl-C in the
        middle of a write would poison the log for every thread."""
        if not isinstance(self._strategy, MemFirst) or self._writing or self._closing:
            return False
        if _get_ident() == threading.main_thread().ident:
            return False
        if not self._persist_from <= index <= self._last:
            return False
        return self._arrivals >= self._expect or time.monotonic() >= self._expect_deadline or self._batch_full()

    def write_stats(self) -> WriteStats:
        """Engine writes made so far and the entries they carried (how well group
        commit batches: ``entries / writes``).  Never raises.  O(1)."""
        with self._lock:
            return WriteStats(self._writes, self._written)

    def wait_durable(self, index: int, timeout: float | None = None) -> bool:
        """Block until ``durable_index() >= index``; ``False`` if ``timeout`` expired.

        Under :class:`MemFirst`, asks the writer to write at once instead of
        waiting out its idle interval.  An ``index`` not yet appended waits for
        it to be appended and made durable.  Without a ``timeout``, a thread
        that completes a group commit (see :class:`MemFirst`) writes the batch
        itself, saving two thread wake-ups.

        Raises:
            EnginePoisonedError: an engine write failed (before or while waiting).
            EngineClosedError: the log is closed.
        """
        if type(index) is not int:
            raise TypeError(f"index must be an int, got {index!r}")
        if timeout is not None and timeout >= threading.TIMEOUT_MAX:  # inf and the like: no timeout
            timeout = None
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
        while True:
            with self._lock:
                self._check_live()
                if self._durable >= index:
                    return True
                if not self._urgent:
                    self._urgent = True
                    if self._wstate is _W_DEADLINE:
                        self._work.notify()
                got = self._capture() if deadline is None and self._may_help(index) else None
                if got is None:
                    item = (index, _allocate_lock())
                    item[1].acquire()
                    self._waiting.append(item)
            if got is not None:
                # This thread completes the group: it writes the batch itself
                # instead of waking the writer and being woken after the fsync
                # (a write-group leader; only without a timeout, as the write
                # may take longer than one).
                err = self._write_batch(*got, helper=True)
                if err is None and self._durable >= index:
                    return True
                if err is not None and not isinstance(err, Exception):
                    raise err  # KeyboardInterrupt and the like, after poisoning the log
                continue  # raises the failure, or waits anew after a truncation
            try:
                if deadline is None:
                    woken = item[1].acquire()
                else:
                    remaining = deadline - time.monotonic()
                    woken = remaining > 0 and item[1].acquire(True, remaining)
            except BaseException:  # interrupted (KeyboardInterrupt): leave no trace
                with self._lock:
                    self._withdraw(item)
                raise
            if woken:
                _pass_relay(self._relay)
            else:
                with self._lock:
                    if self._withdraw(item):  # not released: the timeout expired
                        if self._durable >= index:
                            return True
                        self._check_live()
                        return False
                # its target was reached just as the timeout expired: as if woken
            if self._durable >= index:  # an int read, atomic: no lock on the fast path
                return True
            # released by a failure or close (the check above raises), or a
            # truncation lowered _durable again since: wait anew

    def _withdraw(self, item: tuple[int, _LockType]) -> bool:
        """Take a thread that stops waiting out of ``_waiting`` or the wake relay
        (caller holds ``_lock``).  Returns whether it was still waiting (not released)."""
        if item in self._waiting:
            self._waiting.remove(item)
            return True
        try:  # released but not reached by the relay yet: the relay goes on without it
            self._relay.remove(item[1])
        except ValueError:  # being woken by the relay: pass it on in this thread's place
            _pass_relay(self._relay)
        return False

    def flush(self) -> None:
        """Strict barrier: return when every entry appended before the call is durable.

        Raises the failure of any engine write (as :class:`EnginePoisonedError`
        chained to it).  Complexity: waits for at most one writer round.
        """
        with self._lock:
            self._check_live()
            target = self._last
        self.wait_durable(target)

    # ----------------------------------------------------------------- reads

    def entry(self, index: int) -> Entry | None:
        """The entry at ``index``, or ``None`` if it is not in the log.

        Includes entries not yet durable (a leader replicates before its own
        fsync).  Complexity: O(1) from memory, one engine read otherwise.
        """
        if type(index) is not int:
            raise TypeError(f"index must be an int, got {index!r}")
        return self._read(index)

    def term_of(self, index: int) -> int | None:
        """The term of the entry at ``index``; the purge boundary's term for its
        index (also after a restart); 0 for index 0; ``None`` otherwise.  O(1)."""
        if type(index) is not int:
            raise TypeError(f"index must be an int, got {index!r}")
        with self._lock:
            known = self._known_term(index)
        if known is not _UNKNOWN:
            return known  # type: ignore[return-value]
        e = self._read(index)
        return None if e is None else e.term

    def _known_term(self, index: int) -> int | object:
        """0 for index 0, the boundary's term for its index, else ``_UNKNOWN``
        (caller holds ``_lock``; raises if the log failed or closed)."""
        self._check_live()
        if index == 0:
            return 0
        b = self._boundary
        if b is not None and index == b.index:
            return b.term
        return _UNKNOWN

    def get_entries_range(self, start: int, end: int) -> list[Entry]:
        """Entries ``start..end`` inclusive that exist, ascending; ``[]`` if ``start > end``.

        Complexity: O(number returned); the part no longer cached is one engine
        range read.
        """
        if type(start) is not int or type(end) is not int:
            raise TypeError(f"start and end must be ints, got {start!r}, {end!r}")
        while True:
            with self._lock:
                self._check_live()
                b = self._boundary.index if self._boundary is not None else 0
                lo = max(start, b + 1, self._first, 1)
                hi = min(end, self._last)
                if lo > hi:
                    return []
                ms = self._mem_start
                tail = self._mem[max(lo, ms) - ms : hi - ms + 1] if hi >= ms else []
                epoch = self._epoch
            if lo >= ms:
                return tail
            with self._io:
                head = self._engine.get_entries_range(lo, min(hi, ms - 1))
            with self._lock:
                if self._epoch == epoch:
                    return head + tail

    def first_index(self) -> int:
        """Lowest readable index; ``last_index() + 1`` when the log is empty.  O(1)."""
        with self._lock:
            self._check_live()
            return self._first if self._first <= self._last else self._last + 1

    def last_index(self) -> int:
        """Highest index of the log (appended, durable or not); 0 when new.  O(1)."""
        with self._lock:
            self._check_live()
            return self._last

    def last_log_id(self) -> LogId | None:
        """``LogId`` of the last entry, the purge boundary when the log is empty
        after a purge, or ``None`` for a new log.  O(1)."""
        with self._lock:
            self._check_live()
            if self._last == 0:
                return None
            return LogId(self._last_term, self._last)

    def purge_boundary(self) -> LogId | None:
        """The last purged ``LogId``, or ``None``.  O(1)."""
        with self._lock:
            self._check_live()
            return self._boundary

    # ------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Make everything durable, stop the writer and close the engine.  Idempotent.

        Durability: every appended entry is durable on return, unless an engine
        write failed, in which case the engine is closed without writing more
        and the failure is raised (:class:`EnginePoisonedError`).
        """
        with self._wlock:
            with self._lock:
                if self._closed:
                    return
                self._closing = True
                self._urgent = True
                self._work.notify_all()
            if self._writer is not None:
                self._writer.join()
            with self._lock:
                self._closed = True
                self._notify_durable()
                failed = self._failed
            try:
                with self._io:
                    self._engine.close()
            except Exception:
                if failed is None:
                    raise
                # the engine is already poisoned; its close may fail again: report the first failure
            if failed is not None:
                raise EnginePoisonedError(f"an engine write failed ({failed!r}); closed without writing more") from failed

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ---------------------------------------------------------------- writer

    def _take_batch(self) -> tuple[list[Entry], int] | None:
        """Wait for work under ``_lock`` per the MemFirst policy; capture the pending batch.

        Returns ``(batch, last index of batch)`` or ``None`` when the writer must stop.
        Before each wait it records in ``_wstate`` what it waits for, so that
        appenders and waiters notify it only when that changes its decision.
        """
        s = self._strategy
        assert isinstance(s, MemFirst)
        deadline: float | None = None
        with self._lock:
            try:
                while True:
                    self._wstate = _W_RUNNING
                    if self._failed is not None:
                        return None
                    if self._writing:  # a waiting thread is writing a batch (see wait_durable)
                        deadline = None  # what is pending after it is a new batch
                        self._wstate = _W_HELPER
                        self._work.wait(s.idle_interval or None)
                        continue
                    pending = self._last - self._persist_from + 1
                    now = time.monotonic()
                    # the waiters the last write released have not all appended
                    # again: give them until the idle interval to join this batch
                    # (group commit siblings)
                    siblings = self._arrivals < self._expect and now < self._expect_deadline
                    if pending <= 0:
                        if self._closing:
                            return None
                        deadline = None
                        if siblings:
                            self._wstate = _W_SIBLINGS
                            self._work.wait(self._expect_deadline - now)
                        else:
                            self._wstate = _W_EMPTY
                            self._work.wait()
                        continue
                    if self._closing or self._batch_full():
                        break
                    if self._urgent:  # someone waits: go now, unless siblings are due
                        if not siblings:
                            break
                        self._wstate = _W_SIBLINGS
                        self._work.wait(self._expect_deadline - now)
                        continue
                    if deadline is None:
                        deadline = now + s.idle_interval
                    if now >= deadline:
                        break
                    self._wstate = _W_DEADLINE
                    self._work.wait(deadline - now)
            finally:
                self._wstate = _W_RUNNING
            return self._capture()

    def _capture(self) -> tuple[list[Entry], int]:
        """Take every pending entry as the next batch to write (caller holds ``_lock``,
        something is pending and nobody is writing).  Returns ``(batch, last index)``."""
        a = self._persist_from
        batch = self._mem[a - self._mem_start :]
        b = self._last
        self._persist_from = b + 1
        self._trunc_low = _INF
        self._urgent = False
        self._pending_bytes = 0
        self._writing = True
        return batch, b

    def _write_batch(self, batch: list[Entry], b: int, helper: bool) -> BaseException | None:
        """Persist a captured batch, make it durable and wake its waiters; on a
        failure poison the log and return the error.  ``helper``: the caller is
        a thread that waits for durability itself and will append again, so it
        counts among the siblings of the next batch."""
        try:
            with self._io:
                self._engine.persist_entries(batch)
                if not self._sync_engine:
                    self._engine.flush()
        except BaseException as e:  # noqa: BLE001 - any failure stops all writing and is re-raised to callers
            self._poison(e)
            return e
        s = self._strategy
        assert isinstance(s, MemFirst)
        with self._lock:
            self._writing = False
            self._writes += 1
            self._written += len(batch)
            covered = min(b, self._trunc_low - 1)
            self._durable = max(self._durable, covered)
            self._evict()
            self._expect = self._notify_durable() + helper
            self._arrivals = 0
            self._expect_deadline = time.monotonic() + s.idle_interval
            if self._wstate is _W_HELPER:  # the writer waits for this write: hand back
                # Label its wait for the appends to come, without waking it when
                # nothing is pending: with an idle interval it is a timed wait
                # (it will look at the siblings' deadline itself); without one,
                # untimed, so the next append must wake it.
                self._wstate = _W_SIBLINGS if s.idle_interval > 0 else _W_EMPTY
                if self._closing or self._last >= self._persist_from:
                    self._work.notify()
        return None

    def _writer_loop(self) -> None:
        """MemFirst writer: persist + make durable each captured batch, until close or failure."""
        while True:
            got = self._take_batch()
            if got is None or self._write_batch(*got, helper=False) is not None:
                return
