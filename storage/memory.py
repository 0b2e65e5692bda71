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
that raises leaves the engine as it was; the checks and log rules are those of
:mod:`segwal.storage.rules`, shared with the other reference engines.  Nothing is written anywhere:
``is_write_durable()`` is ``False`` and ``flush()`` does nothing.  Not
thread-safe.
"""

from __future__ import annotations

from collections.abc import Iterable

from segwal.errors import EngineClosedError
from segwal.storage.rules import (
    ContextManagerMixin,
    check_batch,
    check_bytes,
    check_changes,
    check_hard_state,
    check_int,
    check_u64,
    clip_range,
    purge_needed,
    stage_changes,
    truncate_needed,
)
from segwal.types import Entry, HardState, LogId

# check_batch and the check_* validators live in segwal.storage.rules; they
# are re-exported here for code that imported them from this module.
__all__ = ["InMemoryEngine", "check_batch", "check_bytes", "check_int", "check_u64"]


class InMemoryEngine(ContextManagerMixin):
    """A complete, non-durable :class:`~segwal.types.StorageEngine`.

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

    def _check_open(self) -> None:
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
        self._check_open()
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
        self._check_open()
        if not truncate_needed(from_index, last_index=self._last, boundary=self._boundary):
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
        self._check_open()
        if not purge_needed(cutoff, first_index=self.first_index(), boundary=self._boundary, term_at=self._term_at):
            return
        k = cutoff.index
        if self._log:
            drop = max(0, k + 1 - self._start)
            del self._log[:drop]
        self._start = k + 1
        self._last = max(self._last, k)
        self._boundary = cutoff

    def flush(self) -> None:
        """Nothing to do: nothing is ever durable.  O(1)."""
        self._check_open()

    def reset(self) -> None:
        """Clear entries, purge boundary, key/value data and last applied; keep the hard state.

        Afterwards the log reads like a new engine's (``last_index() == 0``).
        Durability: none.  Complexity: O(1) (the old containers are dropped).
        """
        self._check_open()
        self._log = []
        self._start = 1
        self._last = 0
        self._boundary = None
        self._kv = {}
        self._applied = None

    # -- log reads ----------------------------------------------------------

    def entry(self, index: int, /) -> Entry | None:
        """The entry at ``index`` or ``None`` if it is not in the log.  O(1)."""
        self._check_open()
        check_int("index", index)
        if self._log and self._start <= index < self._start + len(self._log):
            return self._log[index - self._start]
        return None

    def get_entries_range(self, start: int, end: int, /) -> list[Entry]:
        """Entries with ``start <= index <= end`` that exist, ascending.  O(returned)."""
        self._check_open()
        clipped = clip_range(start, end, self._start, self._start + len(self._log) - 1)
        if clipped is None:
            return []
        lo, hi = clipped
        return self._log[lo - self._start : hi - self._start + 1]

    def last_index(self) -> int:
        """Highest index of the log; 0 when new; never lowered by a purge.  O(1)."""
        self._check_open()
        return self._last

    def first_index(self) -> int:
        """Lowest readable index; ``last_index() + 1`` when the log is empty.  O(1)."""
        self._check_open()
        return self._start if self._log else self._last + 1

    def purge_boundary(self) -> LogId | None:
        """The last purged :class:`LogId`, or ``None``.  O(1)."""
        self._check_open()
        return self._boundary

    # -- hard state ---------------------------------------------------------

    def load_hard_state(self) -> HardState | None:
        """The last saved hard state, or ``None`` if none was saved.  O(1)."""
        self._check_open()
        return self._hard

    def save_hard_state(self, hs: HardState, /) -> None:
        """Replace the hard state (kept by :meth:`reset`).  TypeError for a non-HardState.  O(1)."""
        self._check_open()
        self._hard = check_hard_state(hs)

    # -- key/value data -----------------------------------------------------

    def insert(self, key: bytes, value: bytes, /) -> bytes | None:
        """Set ``key`` to ``value``; return the previous value or ``None``.  O(len)."""
        self._check_open()
        k = check_bytes("key", key)
        v = check_bytes("value", value)
        previous = self._kv.get(k)
        self._kv[k] = v
        return previous

    def get(self, key: bytes, /) -> bytes | None:
        """The value of ``key`` or ``None``.  O(len(key))."""
        self._check_open()
        return self._kv.get(check_bytes("key", key))

    def delete(self, key: bytes, /) -> bytes | None:
        """Remove ``key``; return the previous value or ``None``.  O(len(key))."""
        self._check_open()
        return self._kv.pop(check_bytes("key", key), None)

    def apply(
        self, changes: Iterable[tuple[bytes, bytes | None]], /, applied: LogId | None = None
    ) -> list[bytes | None]:
        """Apply ``(key, value-or-None)`` changes and record ``applied``, all or nothing.

        Returns the previous value of each change's key, in order (as ``WalEngine`` does).
        Raises TypeError for a malformed change or ``applied``, changing nothing.
        Durability: none.  Complexity: O(total size of the changes).
        """
        self._check_open()
        staged = check_changes(changes, applied)
        previous, overlay = stage_changes(staged, self._kv.get)
        for k, v in overlay.items():
            if v is None:
                self._kv.pop(k, None)
            else:
                self._kv[k] = v
        if applied is not None:
            self._applied = applied
        return previous

    def last_applied(self) -> LogId | None:
        """The :class:`LogId` last recorded by :meth:`apply`, or ``None``.  O(1)."""
        self._check_open()
        return self._applied

    # -- lifecycle ----------------------------------------------------------

    def is_write_durable(self) -> bool:
        """Always ``False``: nothing is ever on stable storage.  O(1)."""
        return False

    def close(self) -> None:
        """Mark the engine closed; later calls raise EngineClosedError.  Idempotent.  O(1)."""
        self._closed = True

    # -- helpers for tests --------------------------------------------------

    def keys(self) -> list[bytes]:
        """All keys of the key/value data, sorted (for comparisons in tests).  O(n log n)."""
        self._check_open()
        return sorted(self._kv)
