"""Value types shared by every layer and the :class:`StorageEngine` protocol they meet at.

The value types: :class:`Entry` and :class:`LogId` (the log), :class:`VotedFor`
and :class:`HardState` (Raft's persistent state), :data:`KVChange` (one
state-machine change).  Then the protocol, which states the whole public
contract of a segwal storage engine once, as a :class:`typing.Protocol`, so
that ``WalEngine``, ``InMemoryEngine`` and any custom engine (SQLite, RocksDB,
cloud storage) are interchangeable behind it, and so that mypy can check that
an engine satisfies it.  This module imports nothing from segwal.

Every method's docstring below is the contract; ``segwal.testing.conformance`` tests
it method by method.  Terms used throughout:

* *the log*: the entries still readable, ``first_index() .. last_index()``.
* *the purge boundary*: the last :class:`LogId` given to :meth:`purge_logs`
  that took effect, or ``None``.
* *durable*: on stable storage (survives a power loss).  Whether mutating
  calls are durable on return depends on the engine's mode and is reported by
  :meth:`is_write_durable`; :meth:`flush` always makes them durable, and
  :meth:`save_hard_state` is always durable on return.

Errors: invalid arguments raise :class:`ValueError` or :class:`TypeError`
naming the argument (or, for log batches, the offending index) and change
nothing.  Failures of storage raise a :class:`segwal.errors.SegwalError`
subclass or :class:`OSError`.  Anything else is a bug.

Concurrency: one writer at a time; readers may run concurrently with it
(engines that cannot do so must say so).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import NamedTuple, Protocol, Self, runtime_checkable

__all__ = ["Entry", "LogId", "VotedFor", "HardState", "KVChange", "StorageEngine"]


class Entry(NamedTuple):
    """One Raft log entry: ``Entry(index, term, payload=b"")``.

    A :class:`typing.NamedTuple` rather than a frozen dataclass because range
    reads build thousands of them: measured on the project machine, building
    1024 entries costs ~100 ns each through ``tuple.__new__`` against ~400 ns
    for a frozen slotted dataclass (``bench/micro_entry.py``).  Immutable like
    any tuple.  Note that, being a tuple, it compares equal to a plain tuple
    with the same fields.
    """

    index: int  # type: ignore[assignment]  # shadows tuple.index, as the contract names it
    term: int
    payload: bytes = b""


@dataclass(frozen=True, slots=True)
class LogId:
    """Identifies a log position: the ``term`` of the entry at ``index``."""

    term: int
    index: int

    def __post_init__(self) -> None:
        for name in ("term", "index"):
            value = getattr(self, name)
            if type(value) is not int or not 0 <= value < 1 << 64:
                raise ValueError(f"LogId.{name} must be an int in 0..2**64-1, got {value!r}")


def _check_uint(owner: str, name: str, value: object) -> None:
    if type(value) is not int or not 0 <= value < 1 << 64:
        raise ValueError(f"{owner}.{name} must be an int in 0..2**64-1, got {value!r}")


@dataclass(frozen=True, slots=True)
class VotedFor:
    """The vote a node cast: for ``voted_for_id`` in ``voted_for_term``."""

    voted_for_id: int
    voted_for_term: int
    committed: bool = False

    def __post_init__(self) -> None:
        _check_uint("VotedFor", "voted_for_id", self.voted_for_id)
        _check_uint("VotedFor", "voted_for_term", self.voted_for_term)
        if type(self.committed) is not bool:
            raise ValueError(f"VotedFor.committed must be a bool, got {self.committed!r}")


@dataclass(frozen=True, slots=True)
class HardState:
    """Raft's persistent state: current term, the vote, and the commit index."""

    current_term: int
    voted_for: VotedFor | None = None
    commit_index: int = 0

    def __post_init__(self) -> None:
        _check_uint("HardState", "current_term", self.current_term)
        _check_uint("HardState", "commit_index", self.commit_index)
        if self.voted_for is not None and not isinstance(self.voted_for, VotedFor):
            raise ValueError(f"HardState.voted_for must be a VotedFor or None, got {self.voted_for!r}")

KVChange = tuple[bytes, bytes | None]
"""One key/value change for :meth:`StorageEngine.apply`: ``(key, value)``; ``value`` ``None`` deletes."""


@runtime_checkable
class StorageEngine(Protocol):
    """Raft log entries, hard state and state-machine key/value data behind one contract.

    Methods, by intent:

    * log writes: :meth:`persist_entries`, :meth:`truncate`, :meth:`purge_logs`,
      :meth:`reset`, :meth:`flush`;
    * log reads: :meth:`entry`, :meth:`get_entries_range`, :meth:`first_index`,
      :meth:`last_index`, :meth:`purge_boundary`;
    * hard state: :meth:`load_hard_state`, :meth:`save_hard_state`;
    * key/value data: :meth:`insert`, :meth:`get`, :meth:`delete`,
      :meth:`apply`, :meth:`last_applied`;
    * lifecycle: :meth:`is_write_durable`, :meth:`close`, ``with`` blocks.
    """

    # -- log writes ---------------------------------------------------------

    def persist_entries(self, entries: Iterable[Entry], /) -> None:
        """Append a batch of entries, or overwrite a conflicting suffix with it.

        Indexes must be contiguous and ascending; the first index must lie in
        ``[first_index(), last_index() + 1]`` and above the purge boundary (on
        an empty log with no purge boundary, any first index >= 1).  Terms never
        decrease along the log: the first entry's term is >= the term of the
        entry before it (or of the purge boundary when that entry is purged).
        If the first index is <= ``last_index()``, the entries from it on are
        replaced by the batch in the same atomic step.  An empty batch is a
        no-op.

        Raises:
            ValueError: naming the offending index; nothing changed.
            TypeError: an element is not an :class:`Entry`; nothing changed.

        Durability: atomic (after a crash the whole batch or none of it); durable
        on return when :meth:`is_write_durable`, else after :meth:`flush`.
        Complexity: O(size of the batch), plus O(replaced suffix) on overwrite.
        """
        ...

    def truncate(self, from_index: int, /) -> None:
        """Remove every entry with index >= ``from_index``.

        Afterwards ``last_index()`` is ``from_index - 1`` when ``from_index <=
        last_index()``; beyond the end it is a no-op.  Truncated entries never
        come back, also after a reopen.

        Raises:
            ValueError: ``from_index`` is at or below the purge boundary.

        Durability: follows the mode, like :meth:`persist_entries`.
        Complexity: O(1) in the number of remaining entries.
        """
        ...

    def purge_logs(self, cutoff: LogId, /) -> None:
        """Remove every entry with index <= ``cutoff.index`` (log compaction).

        Afterwards ``purge_boundary() == cutoff`` and ``last_index()`` is
        ``max(previous last_index(), cutoff.index)``.  A cutoff at or below the
        current boundary is a no-op; so is, when there is no boundary, a cutoff
        below ``first_index() - 1``.

        Raises:
            ValueError: ``cutoff.index`` is in the log with a different term
                (a snapshot of another history); nothing changed.

        Durability: follows the mode; the boundary survives a reopen.
        Complexity: O(number of removed segments or entries).
        """
        ...

    def flush(self) -> None:
        """Return when everything written before the call is on stable storage.

        Durability: durable on return.  Complexity: one sync per dirty file.
        """
        ...

    def reset(self) -> None:
        """Clear all log entries, the purge boundary, the key/value data and
        :meth:`last_applied`.  The hard state is kept (a lost vote is a Raft
        safety bug).  Afterwards the engine reads like a new one.

        Durability: follows the mode; a crash leaves the old state or the fully
        reset one.  Complexity: O(number of files).
        """
        ...

    # -- log reads ----------------------------------------------------------

    def entry(self, index: int, /) -> Entry | None:
        """The entry at ``index``, or ``None`` for any index not in the log
        (0, purged, truncated, past the end).

        Complexity: O(1) (at most a search over segments, never over entries).
        """
        ...

    def get_entries_range(self, start: int, end: int, /) -> list[Entry]:
        """The entries with ``start <= index <= end`` (inclusive both ends), ascending.

        Only entries in the log are returned: a purged prefix and anything past
        the end are silently skipped; ``start > end`` gives ``[]``.
        Complexity: O(number of entries returned).
        """
        ...

    def last_index(self) -> int:
        """The highest index of the log: 0 for a new engine; never lowered by a purge.

        Complexity: O(1).
        """
        ...

    def first_index(self) -> int:
        """The lowest index still readable; ``last_index() + 1`` when the log is empty.

        Complexity: O(1).
        """
        ...

    def purge_boundary(self) -> LogId | None:
        """The last purged :class:`LogId`, or ``None`` if none (also after a reopen).

        Complexity: O(1).
        """
        ...

    # -- hard state ---------------------------------------------------------

    def load_hard_state(self) -> HardState | None:
        """The last saved hard state, or ``None`` only if none was ever saved.

        Raises:
            CorruptionError: the stored hard state is damaged (never a silent ``None``).

        Complexity: O(1).
        """
        ...

    def save_hard_state(self, hs: HardState, /) -> None:
        """Replace the hard state, kept apart from the log.

        Raises:
            TypeError: ``hs`` is not a ``HardState``; nothing changed.

        Durability: durable on return in every mode; a crash during the call
        leaves exactly the old or the new value.  Complexity: O(1).
        """
        ...

    # -- key/value data -----------------------------------------------------

    def insert(self, key: bytes, value: bytes, /) -> bytes | None:
        """Set ``key`` to ``value``; return the previous value or ``None``.

        Raises:
            TypeError: ``key`` or ``value`` is not ``bytes``; nothing changed.

        Durability: follows the mode.  Complexity: O(len(key) + len(value)).
        """
        ...

    def get(self, key: bytes, /) -> bytes | None:
        """The value of ``key``, or ``None``.  Complexity: O(1) lookups."""
        ...

    def delete(self, key: bytes, /) -> bytes | None:
        """Remove ``key``; return the previous value or ``None``.

        Durability: follows the mode.  Complexity: O(len(key)).
        """
        ...

    def apply(self, changes: Iterable[KVChange], /, applied: LogId | None = None) -> object:
        """Apply several key/value changes and record ``applied``, in one atomic step.

        ``changes`` are ``(key, value)`` pairs, ``value`` ``None`` meaning
        delete; later pairs win over earlier ones for the same key.  When
        ``applied`` is given, :meth:`last_applied` returns it afterwards (also
        after a reopen); when ``None``, :meth:`last_applied` is unchanged.
        This gives exactly-once application after a crash.  The return value
        is not part of the contract (``WalEngine`` and ``InMemoryEngine``
        return the previous value of each change's key).

        Raises:
            TypeError: a change is malformed; nothing changed.

        Durability: atomic (all changes and ``applied`` or none); durable on
        return when :meth:`is_write_durable`.  Complexity: O(total size).
        """
        ...

    def last_applied(self) -> LogId | None:
        """The :class:`LogId` last recorded by :meth:`apply`, or ``None``.  Complexity: O(1)."""
        ...

    # -- lifecycle ----------------------------------------------------------

    def is_write_durable(self) -> bool:
        """Whether every mutating call is on stable storage when it returns. O(1)."""
        ...

    def close(self) -> None:
        """Flush and release the engine (files, locks).

        Durability: everything written before is durable on return.
        """
        ...

    def __enter__(self) -> Self:
        """Return the engine itself, for ``with`` blocks."""
        ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
        /,
    ) -> None:
        """Close the engine (see :meth:`close`)."""
        ...
