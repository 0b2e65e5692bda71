"""InMemoryEngine: the whole :class:`StorageEngine` contract, in memory, not durable.

For users' unit tests (a Raft node that needs an engine but not a disk) and as
the reference model the property tests hold ``WalEngine`` to.  It therefore
follows every edge case of the contract exactly, and favours being obviously
right over being fast where the two differ (they rarely do).

State, all plain Python:

* ``_log``: the readable entries, ``_log[i]`` has index ``_start + i``;
* ``_last``: ``last_index()``, which can exceed the last entry after a purge
  beyond the end (a purge never lowers it);
* ``_boundary``: the purge boundary, or ``None``;
* ``_hard``, ``_kv``, ``_applied``: hard state, key/value data, last applied.

Every method validates all of its input before changing anything, so a call
that raises leaves the engine as it was.  Nothing is written anywhere:
``is_write_durable()`` is ``False`` and ``flush()`` does nothing.  Not
thread-safe.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Self

from segwal.engine.types import HardState
from segwal.errors import EngineClosedError
from segwal.wal.types import Entry, LogId

__all__ = ["InMemoryEngine", "check_batch"]

_U64 = 1 << 64
"""Indexes, terms and hard-state fields are stored as u64 by ``WalEngine``;
this engine refuses larger values the same way (ValueError), so that a test
passing here passes there."""


def _check_u64(name: str, value: int) -> None:
    """ValueError naming ``name`` unless ``0 <= value < 2**64``."""
    if not 0 <= value < _U64:
        raise ValueError(f"{name} {value} is not in 0..2**64-1")


def _check_int(name: str, value: object) -> int:
    """``value`` if it is a plain int (not bool), else TypeError naming ``name``."""
    if type(value) is not int:
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    return value


def _check_bytes(name: str, value: object) -> bytes:
    """``value`` if it is ``bytes``, else TypeError naming ``name``.

    Only ``bytes``, not ``bytearray``/``memoryview``, as ``WalEngine`` does: a
    test that passes on this engine then passes on the durable one.
    """
    if not isinstance(value, bytes):
        raise TypeError(f"{name} must be bytes, got {type(value).__name__}")
    return value


def check_batch(
    entries: Iterable[Entry],
    *,
    first_index: int,
    last_index: int,
    boundary: LogId | None,
    term_before: Callable[[int], int | None],
) -> list[Entry]:
    """Validate a :meth:`persist_entries` batch against a log's shape; return it as a list.

    ``term_before(i)`` gives the term of the entry at ``i`` (``i`` in the log)
    or ``None``.  Pure: nothing is changed.  Shared by engines that want the
    exact rules of the contract.

    Raises:
        TypeError: an element is not an :class:`Entry` of ints and bytes.
        ValueError: naming the offending index (gap, wrong start, term going
            down, index at or below the boundary).

    Complexity: O(len(entries)).
    """
    batch: list[Entry] = []
    for position, e in enumerate(entries):
        if not isinstance(e, Entry):
            raise TypeError(f"entries[{position}] must be an Entry, got {type(e).__name__}")
        index = _check_int(f"entries[{position}].index", e.index)
        term = _check_int(f"entries[{position}].term", e.term)
        _check_bytes(f"entries[{position}].payload", e.payload)
        if not 0 <= term < _U64:
            raise ValueError(f"entry {index}: term {term} is not in 0..2**64-1")
        if index >= _U64:
            raise ValueError(f"entry {index}: index is not in 1..2**64-1")
        if batch:
            prev = batch[-1]
            if index != prev.index + 1:
                raise ValueError(f"entry {index}: indexes must be contiguous, {index} follows {prev.index}")
            if term < prev.term:
                raise ValueError(f"entry {index}: term {term} is below term {prev.term} of entry {prev.index}")
        batch.append(e)
    if not batch:
        return batch
    head = batch[0]
    if head.index < 1:
        raise ValueError(f"entry {head.index}: indexes start at 1")
    empty = first_index > last_index
    if boundary is None and empty:
        return batch  # an empty log with no boundary accepts any first index >= 1
    if boundary is not None and head.index <= boundary.index:
        raise ValueError(f"entry {head.index}: at or below the purge boundary {boundary.index}")
    if head.index < first_index or head.index > last_index + 1:
        raise ValueError(
            f"entry {head.index}: the first index must lie in [{first_index}, {last_index + 1}]"
        )
    if boundary is not None and head.index == boundary.index + 1:
        before = boundary.term
    else:
        found = term_before(head.index - 1)
        before = 0 if found is None else found
    if head.term < before:
        raise ValueError(f"entry {head.index}: term {head.term} is below term {before} of entry {head.index - 1}")
    return batch


class InMemoryEngine:
    """A complete, non-durable :class:`~segwal.engine.protocol.StorageEngine`.

    ``InMemoryEngine()`` starts empty.  Methods, by intent: log writes
    (:meth:`persist_entries`, :meth:`truncate`, :meth:`purge_logs`,
    :meth:`reset`), log reads (:meth:`entry`, :meth:`get_entries_range`,
    :meth:`first_index`, :meth:`last_index`, :meth:`purge_boundary`), hard
    state, key/value data (:meth:`insert`, :meth:`get`, :meth:`delete`,
    :meth:`apply`, :meth:`last_applied`), lifecycle.

    Durability: none; the state lives as long as the object.  After
    :meth:`close`, every method but :meth:`close` raises
    :class:`~segwal.errors.EngineClosedError`.
    """

    __slots__ = ("_log", "_start", "_last", "_boundary", "_hard", "_kv", "_applied", "_closed")

    def __init__(self) -> None:
        """Create an empty engine.  O(1)."""
        self._log: list[Entry] = []
        self._start = 1
        self._last = 0
        self._boundary: LogId | None = None
        self._hard: HardState | None = None
        self._kv: dict[bytes, bytes] = {}
        self._applied: LogId | None = None
        self._closed = False

    def _open(self) -> None:
        if self._closed:
            raise EngineClosedError("InMemoryEngine is closed")

    def _term_at(self, index: int) -> int | None:
        if self._log and self._start <= index < self._start + len(self._log):
            return self._log[index - self._start].term
        return None

    # -- log writes ---------------------------------------------------------

    def persist_entries(self, entries: Iterable[Entry], /) -> None:
        """Append a batch, or replace the suffix from its first index (conflict overwrite).

        Raises ValueError naming the offending index, or TypeError, changing nothing.
        Durability: none.  Complexity: O(len(batch) + replaced suffix).
        """
        self._open()
        batch = check_batch(
            entries,
            first_index=self.first_index(),
            last_index=self._last,
            boundary=self._boundary,
            term_before=self._term_at,
        )
        if not batch:
            return
        head = batch[0].index
        if not self._log or head < self._start or head > self._start + len(self._log):
            # an empty log (possibly restarting at any index), or a restart
            # after everything was truncated
            self._log = batch
            self._start = head
        else:
            del self._log[head - self._start :]
            self._log.extend(batch)
        self._last = batch[-1].index

    def truncate(self, from_index: int, /) -> None:
        """Remove every entry >= ``from_index``; no-op beyond the end.

        Raises ValueError when ``from_index`` is < 1 or at or below the purge boundary.
        Durability: none.  Complexity: O(removed entries).
        """
        self._open()
        _check_int("from_index", from_index)
        if from_index < 1:
            raise ValueError(f"from_index must be >= 1, got {from_index}")
        if self._boundary is not None and from_index <= self._boundary.index:
            raise ValueError(
                f"from_index {from_index} is at or below the purge boundary {self._boundary.index}"
            )
        if from_index > self._last:
            return
        keep = max(0, from_index - self._start)
        del self._log[keep:]
        if not self._log:
            self._start = from_index
        self._last = from_index - 1

    def purge_logs(self, cutoff: LogId, /) -> None:
        """Remove every entry <= ``cutoff.index`` and record ``cutoff`` as the boundary.

        No-op at or below the current boundary, or (with no boundary) below
        ``first_index() - 1``.  Raises ValueError when
        ``cutoff.index`` is in the log with another term.
        Durability: none.  Complexity: O(remaining entries).
        """
        self._open()
        if not isinstance(cutoff, LogId):
            raise TypeError(f"cutoff must be a LogId, got {type(cutoff).__name__}")
        _check_u64("cutoff.index", cutoff.index)
        _check_u64("cutoff.term", cutoff.term)
        k = cutoff.index
        if self._boundary is not None and k <= self._boundary.index:
            return
        if self._boundary is None and k < self.first_index() - 1:
            return
        term = self._term_at(k)
        if term is not None and term != cutoff.term:
            raise ValueError(f"cutoff {cutoff}: entry {k} has term {term}, not {cutoff.term}")
        if self._log:
            drop = max(0, k + 1 - self._start)
            del self._log[:drop]
        self._start = k + 1
        self._last = max(self._last, k)
        self._boundary = cutoff

    def flush(self) -> None:
        """Nothing to do: nothing is ever durable.  O(1)."""
        self._open()

    def reset(self) -> None:
        """Clear entries, purge boundary, key/value data and last applied; keep the hard state.

        Afterwards the log reads like a new engine's (``last_index() == 0``).
        Durability: none.  Complexity: O(1) (the old containers are dropped).
        """
        self._open()
        self._log = []
        self._start = 1
        self._last = 0
        self._boundary = None
        self._kv = {}
        self._applied = None

    # -- log reads ----------------------------------------------------------

    def entry(self, index: int, /) -> Entry | None:
        """The entry at ``index`` or ``None`` if it is not in the log.  O(1)."""
        self._open()
        _check_int("index", index)
        if self._log and self._start <= index < self._start + len(self._log):
            return self._log[index - self._start]
        return None

    def get_entries_range(self, start: int, end: int, /) -> list[Entry]:
        """Entries with ``start <= index <= end`` that exist, ascending.  O(returned)."""
        self._open()
        _check_int("start", start)
        _check_int("end", end)
        if start > end or not self._log:
            return []
        lo = max(start, self._start) - self._start
        hi = min(end, self._start + len(self._log) - 1) - self._start
        if lo > hi:
            return []
        return self._log[lo : hi + 1]

    def last_index(self) -> int:
        """Highest index of the log; 0 when new; never lowered by a purge.  O(1)."""
        self._open()
        return self._last

    def first_index(self) -> int:
        """Lowest readable index; ``last_index() + 1`` when the log is empty.  O(1)."""
        self._open()
        return self._start if self._log else self._last + 1

    def purge_boundary(self) -> LogId | None:
        """The last purged :class:`LogId`, or ``None``.  O(1)."""
        self._open()
        return self._boundary

    # -- hard state ---------------------------------------------------------

    def load_hard_state(self) -> HardState | None:
        """The last saved hard state, or ``None`` if none was saved.  O(1)."""
        self._open()
        return self._hard

    def save_hard_state(self, hs: HardState, /) -> None:
        """Replace the hard state (kept by :meth:`reset`).  TypeError for a non-HardState.  O(1)."""
        self._open()
        if not isinstance(hs, HardState):
            raise TypeError(f"hs must be a HardState, got {type(hs).__name__}")
        _check_u64("hs.current_term", hs.current_term)
        _check_u64("hs.commit_index", hs.commit_index)
        if hs.voted_for is not None:
            _check_u64("hs.voted_for.voted_for_id", hs.voted_for.voted_for_id)
            _check_u64("hs.voted_for.voted_for_term", hs.voted_for.voted_for_term)
        self._hard = hs

    # -- key/value data -----------------------------------------------------

    def insert(self, key: bytes, value: bytes, /) -> bytes | None:
        """Set ``key`` to ``value``; return the previous value or ``None``.  O(len)."""
        self._open()
        k = _check_bytes("key", key)
        v = _check_bytes("value", value)
        previous = self._kv.get(k)
        self._kv[k] = v
        return previous

    def get(self, key: bytes, /) -> bytes | None:
        """The value of ``key`` or ``None``.  O(len(key))."""
        self._open()
        return self._kv.get(_check_bytes("key", key))

    def delete(self, key: bytes, /) -> bytes | None:
        """Remove ``key``; return the previous value or ``None``.  O(len(key))."""
        self._open()
        return self._kv.pop(_check_bytes("key", key), None)

    def apply(
        self, changes: Iterable[tuple[bytes, bytes | None]], /, applied: LogId | None = None
    ) -> list[bytes | None]:
        """Apply ``(key, value-or-None)`` changes and record ``applied``, all or nothing.

        Returns the previous value of each change's key, in order (as ``WalEngine`` does).
        Raises TypeError for a malformed change or ``applied``, changing nothing.
        Durability: none.  Complexity: O(total size of the changes).
        """
        self._open()
        if applied is not None and not isinstance(applied, LogId):
            raise TypeError(f"applied must be a LogId or None, got {type(applied).__name__}")
        if applied is not None:
            _check_u64("applied.index", applied.index)
            _check_u64("applied.term", applied.term)
        staged: list[tuple[bytes, bytes | None]] = []
        for position, change in enumerate(changes):
            if not isinstance(change, (tuple, list)) or len(change) != 2:
                raise TypeError(f"changes[{position}] must be a (key, value) pair, got {change!r}")
            key, value = change
            k = _check_bytes(f"changes[{position}] key", key)
            v = None if value is None else _check_bytes(f"changes[{position}] value", value)
            staged.append((k, v))
        previous: list[bytes | None] = []
        for k, v in staged:
            if v is None:
                previous.append(self._kv.pop(k, None))
            else:
                previous.append(self._kv.get(k))
                self._kv[k] = v
        if applied is not None:
            self._applied = applied
        return previous

    def last_applied(self) -> LogId | None:
        """The :class:`LogId` last recorded by :meth:`apply`, or ``None``.  O(1)."""
        self._open()
        return self._applied

    # -- lifecycle ----------------------------------------------------------

    def is_write_durable(self) -> bool:
        """Always ``False``: nothing is ever on stable storage.  O(1)."""
        return False

    def close(self) -> None:
        """Mark the engine closed; later calls raise EngineClosedError.  Idempotent.  O(1)."""
        self._closed = True

    def __enter__(self) -> Self:
        """Return the engine itself."""
        self._open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
        /,
    ) -> None:
        """Close the engine."""
        self.close()

    # -- helpers for tests --------------------------------------------------

    def keys(self) -> list[bytes]:
        """All keys of the key/value data, sorted (for comparisons in tests).  O(n log n)."""
        self._open()
        return sorted(self._kv)
