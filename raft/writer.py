"""How :class:`~segwal.raft.log.BufferedRaftLog`'s appended entries become durable: written through under ``DiskFirst``, or staged for the ``MemFirst`` group-commit writer thread, which wakes the threads and coroutines that wait for durability.

Under :class:`~segwal.raft.strategy.MemFirst` a background writer thread hands
every entry that arrived since its previous write to the engine in one
``persist_entries`` call and makes it durable (group commit).  When a write
completes and releases ``n`` waiting threads, the next write waits (at most
``idle_interval``) for ``n`` new appends, so that appenders that wait for
durability after each append go out together instead of in two alternating
half-groups (PostgreSQL's ``commit_delay``/``commit_siblings`` idea).  A
thread that calls :meth:`~GroupCommitWriter.wait_durable` when that group is
complete and nobody is writing writes the batch itself (raft-engine's
write-group leader) instead of waking the writer and being woken after.

Waking threads is what a group commit costs besides its fsync: on a VM whose
idle vCPUs halt, each wake-up of a sleeping thread is ~20 us, and eight in a row
weigh as much as the fsync.  So the writer sleeps in a recorded state
(``_wstate``) and appends and waiters wake it only when that changes its
decision; a thread waiter blocks on its own lock and returns without taking
``_lock`` again; and the released waiters are woken in a relay, each waking the
next as soon as it runs, so that a wake-up overlaps the work of the thread before.

:class:`GroupCommitWriter` is a mixin of ``BufferedRaftLog``: its methods work
on that class's state under its locks (the invariants are in the docstring of
``segwal.raft.log``), so an append reaches them with no extra call layer.
"""

from __future__ import annotations

import _thread
import asyncio
import contextlib
import threading
import time
from itertools import repeat
from typing import TYPE_CHECKING, Final

from segwal.errors import EngineClosedError, EnginePoisonedError, OutOfSpaceError
from segwal.raft.strategy import DiskFirst, MemFirst, PersistenceStrategy, WriteStats
from segwal.types import Entry, LogId, StorageEngine

__all__ = ["GroupCommitWriter"]

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


class GroupCommitWriter:
    """The persistence half of :class:`~segwal.raft.log.BufferedRaftLog` (a mixin).

    The appends' hand-off to the engine or to the MemFirst writer thread, that
    thread and the decisions of when to wake it, the write-group leader, and
    the durability waiters.  ``BufferedRaftLog.__init__`` calls
    :meth:`_init_writer` last.
    """

    # BufferedRaftLog's state, initialised by its __init__ (see segwal.raft.log)
    _engine: StorageEngine
    _strategy: PersistenceStrategy
    _sync_engine: bool
    _io: contextlib.AbstractContextManager[object]
    _wlock: threading.Lock
    _lock: threading.Lock
    _work: threading.Condition
    _mem: list[Entry]
    _mem_start: int
    _first: int
    _last: int
    _last_term: int
    _persist_from: int
    _durable: int
    _closing: bool
    _closed: bool
    _failed: BaseException | None

    if TYPE_CHECKING:  # BufferedRaftLog's (caller holds _lock)

        def _check_live(self) -> None: ...
        def _install(self, k: int, new: list[Entry]) -> None: ...
        def _evict(self) -> None: ...

    def _init_writer(self) -> None:
        """Initialise the state of the writer and the waiters; start the MemFirst writer thread."""
        self._trunc_low = _INF
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
        self._writer: threading.Thread | None = None
        if isinstance(self._strategy, MemFirst):
            self._writer = threading.Thread(target=self._writer_loop, name="segwal-raftlog-writer", daemon=True)
            self._writer.start()

    # ---------------------------------------------------------------- intake

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

    # ------------------------------------------------------------ durability

    def _poison(self, exc: BaseException) -> None:
        with self._lock:
            if self._failed is None:
                self._failed = exc
            self._work.notify_all()
            self._notify_durable()

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
