"""The rules of the :class:`~segwal.types.StorageEngine` contract, in one place.

Pure helpers shared by the reference engines (:mod:`segwal.storage.memory`,
:mod:`segwal.storage.sqlite`, :mod:`segwal.storage.rocksdb`) and
open to any custom engine that wants the exact rules:

* argument validation: :func:`check_int`, :func:`check_bytes`,
  :func:`check_u64`, :func:`check_logid`, :func:`check_hard_state`,
  :func:`check_changes`, :func:`check_sync_mode`;
* log rules: :func:`check_batch` (a :meth:`persist_entries` batch),
  :func:`truncate_needed`, :func:`purge_needed` and the bounds that follow a
  write (:func:`appended_bounds`, :func:`truncated_bounds`,
  :func:`purged_bounds`), :func:`clip_range`;
* key/value: :func:`stage_changes` (previous values and net effect of an
  :meth:`apply`);
* encoding of the metadata the durable engines store: :func:`encode_u64`,
  :func:`decode_u64`, :func:`encode_logid`, :func:`decode_logid`,
  :func:`check_log_end`;
* two mixins for the methods that are the same in every engine:
  :class:`ContextManagerMixin` (``with engine:``) and
  :class:`CachedStateMixin` (the cached ``first_index``/``last_index``/
  ``purge_boundary``/``last_applied`` reads of a lock-serialised engine).

No function here keeps state or touches storage; every
check raises before the caller changes anything, so a call that raises leaves
an engine as it was.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Final, Self

from segwal.errors import CorruptionError
from segwal.types import Entry, HardState, LogId

__all__ = [
    "U64_LIMIT",
    "CachedStateMixin",
    "ContextManagerMixin",
    "appended_bounds",
    "check_batch",
    "check_bytes",
    "check_changes",
    "check_hard_state",
    "check_int",
    "check_log_end",
    "check_logid",
    "check_sync_mode",
    "check_u64",
    "clip_range",
    "decode_logid",
    "decode_u64",
    "encode_logid",
    "encode_u64",
    "purge_needed",
    "purged_bounds",
    "stage_changes",
    "truncate_needed",
    "truncated_bounds",
]

U64_LIMIT: Final = 1 << 64
"""Indexes, terms and hard-state fields are u64 (as ``WalEngine`` stores them):
every engine refuses ``2**64`` and above the same way (ValueError)."""

_U64: Final = struct.Struct(">Q")
_LOGID: Final = struct.Struct(">QQ")


# -- argument validation ------------------------------------------------------


def check_u64(name: str, value: int) -> None:
    """Raise ValueError naming ``name`` unless ``0 <= value < 2**64``.  O(1)."""
    if not 0 <= value < U64_LIMIT:
        raise ValueError(f"{name} {value} is not in 0..2**64-1")


def check_int(name: str, value: object) -> int:
    """Return ``value`` if it is a plain int (not bool), else raise TypeError naming ``name``.  O(1)."""
    if type(value) is not int:
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    return value


def check_bytes(name: str, value: object) -> bytes:
    """Return ``value`` if it is ``bytes``, else raise TypeError naming ``name``.

    Only ``bytes``, not ``bytearray``/``memoryview``, as ``WalEngine`` does: a
    test that passes on one engine then passes on the others.  O(1).
    """
    if not isinstance(value, bytes):
        raise TypeError(f"{name} must be bytes, got {type(value).__name__}")
    return value


def check_logid(name: str, value: object) -> LogId:
    """Return ``value`` if it is a :class:`LogId` of u64 fields.

    Raises TypeError (not a LogId) or ValueError (a field outside u64), naming
    ``name``.  O(1).
    """
    if not isinstance(value, LogId):
        raise TypeError(f"{name} must be a LogId, got {type(value).__name__}")
    check_u64(f"{name}.index", value.index)
    check_u64(f"{name}.term", value.term)
    return value


def check_hard_state(hs: object) -> HardState:
    """Return ``hs`` if it is a :class:`HardState` whose numbers all fit u64.

    Raises TypeError (not a HardState) or ValueError (a field outside u64).  O(1).
    """
    if not isinstance(hs, HardState):
        raise TypeError(f"hs must be a HardState, got {type(hs).__name__}")
    check_u64("hs.current_term", hs.current_term)
    check_u64("hs.commit_index", hs.commit_index)
    if hs.voted_for is not None:
        check_u64("hs.voted_for.voted_for_id", hs.voted_for.voted_for_id)
        check_u64("hs.voted_for.voted_for_term", hs.voted_for.voted_for_term)
    return hs


def check_changes(
    changes: Iterable[tuple[bytes, bytes | None]], applied: LogId | None
) -> list[tuple[bytes, bytes | None]]:
    """Validate the arguments of :meth:`apply`; return the changes as a list.

    ``applied`` is checked first (TypeError unless a :class:`LogId` or
    ``None``, ValueError for a field outside u64), then each change (TypeError
    unless a ``(bytes, bytes-or-None)`` pair, naming its position).  Pure.
    Complexity: O(len(changes)).
    """
    if applied is not None:
        if not isinstance(applied, LogId):
            raise TypeError(f"applied must be a LogId or None, got {type(applied).__name__}")
        check_logid("applied", applied)
    staged: list[tuple[bytes, bytes | None]] = []
    for position, change in enumerate(changes):
        if not isinstance(change, (tuple, list)) or len(change) != 2:
            raise TypeError(f"changes[{position}] must be a (key, value) pair, got {change!r}")
        key, value = change
        k = check_bytes(f"changes[{position}] key", key)
        v = None if value is None else check_bytes(f"changes[{position}] value", value)
        staged.append((k, v))
    return staged


def check_sync_mode(sync: str) -> None:
    """Raise ValueError unless ``sync`` is ``"always"`` or ``"flush"``.  O(1)."""
    if sync not in ("always", "flush"):
        raise ValueError(f"sync must be 'always' or 'flush', got {sync!r}")


# -- log rules ----------------------------------------------------------------


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
    or ``None``.  Pure: nothing is changed.

    Raises:
        TypeError: an element is not an :class:`Entry` of ints and bytes.
        ValueError: naming the offending index (gap, wrong start, term going
            down, index at or below the boundary).

    Complexity: O(len(entries)) plus one ``term_before`` call.
    """
    batch: list[Entry] = []
    for position, e in enumerate(entries):
        if not isinstance(e, Entry):
            raise TypeError(f"entries[{position}] must be an Entry, got {type(e).__name__}")
        index = check_int(f"entries[{position}].index", e.index)
        term = check_int(f"entries[{position}].term", e.term)
        check_bytes(f"entries[{position}].payload", e.payload)
        if not 0 <= term < U64_LIMIT:
            raise ValueError(f"entry {index}: term {term} is not in 0..2**64-1")
        if index >= U64_LIMIT:
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


def appended_bounds(first_index: int, last_index: int, batch: list[Entry]) -> tuple[int, int]:
    """``(first_index, last_index)`` after persisting a non-empty, checked ``batch``.

    An empty log starts at the batch's first index; otherwise the first index
    stays and the log ends at the batch's last entry (a conflicting suffix is
    replaced).  O(1).
    """
    first = batch[0].index if first_index > last_index else first_index
    return first, batch[-1].index


def truncate_needed(from_index: object, *, last_index: int, boundary: LogId | None) -> bool:
    """Validate a :meth:`truncate` argument; ``True`` when entries must be removed.

    Raises TypeError unless ``from_index`` is an int, ValueError when it is
    < 1 or at or below the purge boundary.  ``False`` (a no-op) beyond the end
    of the log.  O(1).
    """
    index = check_int("from_index", from_index)
    if index < 1:
        raise ValueError(f"from_index must be >= 1, got {index}")
    if boundary is not None and index <= boundary.index:
        raise ValueError(f"from_index {index} is at or below the purge boundary {boundary.index}")
    return index <= last_index


def truncated_bounds(first_index: int, from_index: int) -> tuple[int, int]:
    """``(first_index, last_index)`` after a truncate that removed entries >= ``from_index``.  O(1)."""
    return min(first_index, from_index), from_index - 1


def purge_needed(
    cutoff: object,
    *,
    first_index: int,
    boundary: LogId | None,
    term_at: Callable[[int], int | None],
) -> bool:
    """Validate a :meth:`purge_logs` cutoff; ``True`` when the purge must happen.

    ``False`` (a no-op) at or below the current boundary, or (with no
    boundary) below ``first_index - 1``.  ``term_at(i)`` gives the term of the
    entry at ``i`` or ``None`` when it is not in the log.

    Raises:
        TypeError: ``cutoff`` is not a :class:`LogId`.
        ValueError: a field is outside u64, or ``cutoff.index`` is in the log
            with another term.

    Complexity: O(1) plus one ``term_at`` call.
    """
    lid = check_logid("cutoff", cutoff)
    k = lid.index
    if boundary is not None and k <= boundary.index:
        return False
    if boundary is None and k < first_index - 1:
        return False
    term = term_at(k)
    if term is not None and term != lid.term:
        raise ValueError(f"cutoff {lid}: entry {k} has term {term}, not {lid.term}")
    return True


def purged_bounds(first_index: int, last_index: int, cutoff_index: int) -> tuple[int, int]:
    """``(first_index, last_index)`` after purging every entry <= ``cutoff_index``.

    The last index is never lowered (a purge beyond the end raises it to the
    cutoff); the log is empty afterwards unless entries remain past the
    cutoff.  O(1).
    """
    new_last = max(last_index, cutoff_index)
    non_empty = first_index <= last_index and cutoff_index < last_index
    return (cutoff_index + 1 if non_empty else new_last + 1), new_last


def clip_range(start: object, end: object, first_index: int, last_index: int) -> tuple[int, int] | None:
    """Validate :meth:`get_entries_range` bounds; the part ``(lo, hi)`` inside the log, or ``None``.

    Raises TypeError unless ``start`` and ``end`` are ints (checked in that
    order).  ``None`` when ``[start, end]`` misses ``[first_index, last_index]``
    (including ``start > end`` and an empty log).  O(1).
    """
    lo = max(check_int("start", start), first_index)
    hi = min(check_int("end", end), last_index)
    return None if lo > hi else (lo, hi)


# -- key/value ----------------------------------------------------------------


def stage_changes(
    staged: list[tuple[bytes, bytes | None]], read: Callable[[bytes], bytes | None]
) -> tuple[list[bytes | None], dict[bytes, bytes | None]]:
    """Previous values and net effect of applying checked ``staged`` changes in order.

    ``read(key)`` gives a key's stored value or ``None``; it is called at most
    once per distinct key.  Returns the value each change's key had just
    before it (later changes see earlier ones), and the last value each key
    gets (``None``: delete), in first-change order.  Pure but for ``read``.
    Complexity: O(len(staged)) plus one ``read`` per distinct key.
    """
    overlay: dict[bytes, bytes | None] = {}
    previous: list[bytes | None] = []
    for k, v in staged:
        previous.append(overlay[k] if k in overlay else read(k))
        overlay[k] = v
    return previous, overlay


# -- metadata encoding --------------------------------------------------------


def encode_u64(value: int) -> bytes:
    """``value`` as 8 big-endian bytes (so that byte order is numeric order).  O(1)."""
    return _U64.pack(value)


def decode_u64(raw: bytes | None, what: str, path: str) -> int:
    """The u64 stored by :func:`encode_u64`.

    Raises CorruptionError (``"{what} is missing or damaged"``, at ``path``)
    when ``raw`` is ``None`` or not 8 bytes.  O(1).
    """
    if raw is None or len(raw) != _U64.size:
        raise CorruptionError(f"{what} is missing or damaged", path=path)
    value: int = _U64.unpack(raw)[0]
    return value


def encode_logid(lid: LogId) -> bytes:
    """``lid`` as 16 bytes: term, then index, each a big-endian u64.  O(1)."""
    return _LOGID.pack(lid.term, lid.index)


def decode_logid(blob: bytes, what: str, path: str) -> LogId:
    """The :class:`LogId` stored by :func:`encode_logid`.

    Raises CorruptionError naming ``what`` and ``path`` when ``blob`` is not
    16 bytes.  O(1).
    """
    if len(blob) != _LOGID.size:
        raise CorruptionError(f"{what} is {len(blob)} bytes, expected {_LOGID.size}", path=path)
    term, index = _LOGID.unpack(blob)
    return LogId(term, index)


def check_log_end(highest: int, last_index: int, path: str) -> None:
    """Raise CorruptionError unless the highest stored entry is at the stored ``last_index``.  O(1)."""
    if highest != last_index:
        raise CorruptionError(f"log ends at {highest} but last_index is {last_index}", path=path, index=highest)


# -- shared methods -----------------------------------------------------------


class ContextManagerMixin:
    """``with engine:`` for an engine: entering checks it is open, leaving closes it.

    The engine provides ``_check_open()`` (raising
    :class:`~segwal.errors.EngineClosedError` once closed) and ``close()``.
    """

    __slots__ = ()

    def _check_open(self) -> object:
        raise NotImplementedError

    def close(self) -> None:
        """Close the engine (provided by the engine).  Idempotent."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        """Return the engine itself; EngineClosedError if it is closed.  O(1)."""
        self._check_open()
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


class CachedStateMixin(ContextManagerMixin):
    """The cached reads of an engine that serialises its calls with ``_mutex``.

    The engine keeps ``_first``, ``_last``, ``_boundary`` and ``_applied``
    equal to what it has stored (updating them only after a write succeeded)
    and ``_sync`` as its mode (``"always"`` or ``"flush"``).
    """

    __slots__ = ()

    _mutex: threading.RLock
    _sync: str
    _first: int
    _last: int
    _boundary: LogId | None
    _applied: LogId | None

    def last_index(self) -> int:
        """Highest index of the log; 0 when new; never lowered by a purge.  O(1) (cached)."""
        with self._mutex:
            self._check_open()
            return self._last

    def first_index(self) -> int:
        """Lowest readable index; ``last_index() + 1`` when the log is empty.  O(1) (cached)."""
        with self._mutex:
            self._check_open()
            return self._first

    def purge_boundary(self) -> LogId | None:
        """The last purged :class:`LogId`, or ``None``.  O(1) (cached)."""
        with self._mutex:
            self._check_open()
            return self._boundary

    def last_applied(self) -> LogId | None:
        """The :class:`LogId` last recorded by :meth:`apply`, or ``None``.  O(1) (cached)."""
        with self._mutex:
            self._check_open()
            return self._applied

    def is_write_durable(self) -> bool:
        """``True`` in ``"always"`` mode: every mutating call is durable on return.  O(1)."""
        return self._sync == "always"
