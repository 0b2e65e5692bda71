"""``BufferedRaftLog``: the Raft log over any :class:`StorageEngine`, that is Raft's matching rule, the in-memory buffer of recent entries, reads, truncation and purge.

This module owns the *protocol-level* log (the d-engine ``RaftLog``):
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
  ``persist_entries`` call and makes it durable (group commit).

How appended entries reach the engine (both strategies), the writer thread and
the durability waiters are in ``segwal.raft.writer``: its
:class:`~segwal.raft.writer.GroupCommitWriter` is a mixin of
:class:`BufferedRaftLog` that works on the state below under the same locks.

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

import contextlib
import threading
from collections.abc import Iterable
from types import TracebackType
from typing import Final, Self

from segwal.errors import EngineClosedError, EnginePoisonedError
from segwal.raft.strategy import DiskFirst, MemFirst, PersistenceStrategy
from segwal.raft.writer import GroupCommitWriter
from segwal.types import Entry, LogId, StorageEngine

__all__ = ["BufferedRaftLog"]

_U64: Final = 1 << 64
_UNKNOWN: Final = object()  # _known_term: not answerable without a read
_BYTES_ONLY: Final = frozenset((bytes,))


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


class BufferedRaftLog(GroupCommitWriter):
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
        self._epoch = 0
        self._closing = False
        self._closed = False
        self._failed: BaseException | None = None
        self._init_writer()

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
