"""The crash checker's reference model: the states an engine may legally show after a crash.

Strategy: the code under test marks every call that was acknowledged
(:meth:`RecordingFS.mark`, or :class:`~segwal.testing.tracking.TrackedEngine`,
which does it for you).  For a crash at point ``k``, the marks made at or
before ``k`` are acknowledged and the first mark after ``k`` is the call that
may have been in flight.  A small reference model (:class:`LogModel`) of the
:class:`~segwal.engine.WalEngine` semantics replays the marks and gives the
*candidate* states the engine may show after recovery (:func:`candidates_at`):
the acknowledged state, or that plus the in-flight call (each call is atomic).
Marks made with ``durable=False`` (an engine in ``sync="flush"`` mode) may also
be lost back to the last ``flush`` (or ``reset``) mark: a suffix of the entry
calls (persist, truncate) and, independently, a suffix of the purges and a
suffix of the key/value calls.  :func:`snapshot_engine` reads the same
observable state (a :class:`Snapshot`) from an engine, to compare.

Mark vocabulary understood by the model (unknown labels are ignored, so users
may add their own for their own invariants):

=============== ================================================================
label           facts
=============== ================================================================
``persist``     ``entries``: Entry objects or ``(index, term, payload)`` tuples
``truncate``    ``from_index``
``purge``       ``index``, ``term`` (or ``cutoff``: a LogId)
``hard_state``  ``hard_state``
``insert``      ``key``, ``value``
``delete``      ``key``
``apply``       ``changes`` (``(key, value-or-None)`` pairs), ``applied`` (LogId or None)
``reset``       (none)
``flush``       (none): every earlier mark is durable
``acked``       any of ``entries``, ``hard_state`` (as persist / hard_state)
=============== ================================================================

``persisted``, ``truncated`` and ``purged`` are accepted as aliases.  Any mark
may carry ``durable=False``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from segwal.testing.recording import Mark

__all__ = [
    "EntryTuple",
    "LogIdTuple",
    "LogModel",
    "Snapshot",
    "as_entry",
    "as_logid",
    "candidates_at",
    "short_repr",
    "snapshot_engine",
    "watched_keys",
]

_ALIASES = {"persisted": "persist", "truncated": "truncate", "purged": "purge"}
_KV_LABELS = frozenset({"insert", "delete", "apply"})

LogIdTuple = tuple[int, int]
EntryTuple = tuple[int, int, bytes]


def as_logid(x: Any) -> LogIdTuple | None:
    """A LogId (or ``(term, index)`` pair) as a ``(term, index)`` tuple; ``None`` stays ``None``."""
    if x is None:
        return None
    if hasattr(x, "term") and not isinstance(x, tuple) or hasattr(x, "_fields"):
        return (int(x.term), int(x.index))
    term, index = x
    return (int(term), int(index))


def as_entry(x: Any) -> EntryTuple:
    """An Entry (or ``(index, term, payload)`` tuple) as an ``(index, term, payload)`` tuple."""
    if not isinstance(x, tuple):  # Entry as a class; a NamedTuple Entry unpacks in field order
        return (int(x.index), int(x.term), bytes(x.payload))
    index, term, payload = x
    return (int(index), int(term), bytes(payload))


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    """The observable state of a WAL engine.

    Attributes:
        first_index, last_index: as the engine reports them.
        purge_boundary: ``(term, index)`` or ``None``.
        entries: ``(index, term, payload)`` for ``first_index..last_index``.
        hard_state: what ``load_hard_state()`` returned.
        kv: ``(key, value-or-None)`` for each watched key, sorted by key.
        last_applied: ``(term, index)`` or ``None``.
    """

    first_index: int
    last_index: int
    purge_boundary: LogIdTuple | None
    entries: tuple[EntryTuple, ...]
    hard_state: Any
    kv: tuple[tuple[bytes, bytes | None], ...]
    last_applied: LogIdTuple | None

    def diff(self, other: Snapshot, *, limit: int = 6) -> list[str]:
        """Differences, ``self`` as expected and ``other`` as found. O(entries)."""
        out: list[str] = []
        for name in ("first_index", "last_index", "purge_boundary", "hard_state", "last_applied"):
            a, b = getattr(self, name), getattr(other, name)
            if a != b:
                out.append(f"{name}: expected {a!r}, found {b!r}")
        if self.entries != other.entries:
            exp = {e[0]: e for e in self.entries}
            got = {e[0]: e for e in other.entries}
            bad = [i for i in sorted(set(exp) | set(got)) if exp.get(i) != got.get(i)]
            for i in bad[:limit]:
                out.append(f"entry {i}: expected {short_repr(exp.get(i))}, found {short_repr(got.get(i))}")
            if len(bad) > limit:
                out.append(f"... {len(bad) - limit} more entries differ")
        if self.kv != other.kv:
            exp_kv, got_kv = dict(self.kv), dict(other.kv)
            bad_k = [k for k in exp_kv if exp_kv.get(k) != got_kv.get(k)]
            for k in bad_k[:limit]:
                out.append(f"key {k!r}: expected {short_repr(exp_kv.get(k))}, found {short_repr(got_kv.get(k))}")
        return out


def short_repr(x: Any) -> str:
    """``repr(x)`` cut to 80 characters, for messages."""
    r = repr(x)
    return r if len(r) <= 80 else r[:77] + "..."


class LogModel:
    """A reference model of the WalEngine semantics, driven by marks.

    Complexity: each mark O(size of its change) (truncate/purge O(entries)).
    """

    def __init__(self) -> None:
        self.entries: dict[int, tuple[int, bytes]] = {}
        self.last = 0
        self.boundary: LogIdTuple | None = None
        self.hard_state: Any = None
        self.kv: dict[bytes, bytes] = {}
        self.applied: LogIdTuple | None = None
        self.keys: set[bytes] = set()

    def copy(self) -> LogModel:
        """An independent copy. O(size)."""
        m = LogModel()
        m.entries = dict(self.entries)
        m.last = self.last
        m.boundary = self.boundary
        m.hard_state = self.hard_state
        m.kv = dict(self.kv)
        m.applied = self.applied
        m.keys = self.keys
        return m

    def apply(self, mark: Mark) -> None:
        """Apply one acknowledged call (unknown labels are ignored)."""
        label = _ALIASES.get(mark.label, mark.label)
        f = mark.facts
        if label in ("persist", "acked") and "entries" in f:
            batch = [as_entry(e) for e in f["entries"]]
            if batch:
                first = batch[0][0]
                for i in [i for i in self.entries if i >= first]:
                    del self.entries[i]
                for i, t, p in batch:
                    self.entries[i] = (t, p)
                self.last = batch[-1][0]
        if label in ("hard_state", "acked") and "hard_state" in f:
            self.hard_state = f["hard_state"]
        if label == "truncate":
            k = int(f["from_index"])
            if k <= self.last:
                for i in [i for i in self.entries if i >= k]:
                    del self.entries[i]
                self.last = k - 1
        elif label == "purge":
            cut = as_logid(f["cutoff"]) if "cutoff" in f else (int(f["term"]), int(f["index"]))
            assert cut is not None
            if self.boundary is None or cut[1] > self.boundary[1]:
                for i in [i for i in self.entries if i <= cut[1]]:
                    del self.entries[i]
                self.boundary = cut
                self.last = max(self.last, cut[1])
        elif label == "insert":
            self.keys.add(bytes(f["key"]))
            self.kv[bytes(f["key"])] = bytes(f["value"])
        elif label == "delete":
            self.keys.add(bytes(f["key"]))
            self.kv.pop(bytes(f["key"]), None)
        elif label == "apply":
            for k, v in f.get("changes", ()):
                self.keys.add(bytes(k))
                if v is None:
                    self.kv.pop(bytes(k), None)
                else:
                    self.kv[bytes(k)] = bytes(v)
            if f.get("applied") is not None:
                self.applied = as_logid(f["applied"])
        elif label == "reset":
            self.entries.clear()
            self.last = 0
            self.boundary = None
            self.kv.clear()
            self.applied = None
        elif label == "install_snapshot":
            cut = as_logid(f["applied"])
            assert cut is not None
            self.entries.clear()
            self.boundary = cut
            self.last = cut[1]
            self.kv = {bytes(k): bytes(v) for k, v in f.get("kv", ())}
            self.keys = self.keys | set(self.kv)
            self.applied = cut

    def snapshot(self, keys: Iterable[bytes]) -> Snapshot:
        """The state the engine should show. O(entries + keys)."""
        first = min(self.entries) if self.entries else self.last + 1
        return Snapshot(
            first_index=first,
            last_index=self.last,
            purge_boundary=self.boundary,
            entries=tuple((i, *self.entries[i]) for i in sorted(self.entries)),
            hard_state=self.hard_state,
            kv=tuple((k, self.kv.get(k)) for k in sorted(keys)),
            last_applied=self.applied,
        )


def watched_keys(marks: Sequence[Mark]) -> set[bytes]:
    """Every key a mark wrote, deleted or installed: the keys a snapshot must read. O(marks)."""
    keys: set[bytes] = set()
    for m in marks:
        if m.label in ("insert", "delete"):
            keys.add(bytes(m.facts["key"]))
        elif m.label == "apply":
            keys.update(bytes(k) for k, _ in m.facts.get("changes", ()))
        elif m.label == "install_snapshot":
            keys.update(bytes(k) for k, _ in m.facts.get("kv", ()))
    return keys


def candidates_at(marks: Sequence[Mark], point: int, keys: Iterable[bytes] | None = None) -> list[Snapshot]:
    """The states an engine may legally show after a crash at ``point``.

    The acknowledged state comes first, then (for non-durable marks) the states
    with some of them lost, then each of those plus the in-flight call.
    Complexity: O(marks * size) per candidate; the number of candidates is the
    product of (non-durable marks + 1) over the three streams.
    """
    acked = [m for m in marks if m.position <= point]
    later = [m for m in marks if m.position > point]
    keyset = set(keys) if keys is not None else watched_keys(marks)
    # Non-durable marks after the last flush (or reset) may be lost: a suffix of
    # each stream, independently: log entry calls (persist, truncate), purges,
    # and key/value calls (they live in different files and commit points).
    # Durable marks (hard state, sync="always" calls) are never lost.
    barrier = max((i for i, m in enumerate(acked) if m.label in ("flush", "reset")), default=-1)
    loose: dict[str, list[int]] = {"log": [], "purge": [], "kv": []}
    for i, m in enumerate(acked):
        if i > barrier and m.facts.get("durable", True) is False:
            label = _ALIASES.get(m.label, m.label)
            loose["kv" if label in _KV_LABELS else "purge" if label == "purge" else "log"].append(i)
    out: list[Snapshot] = []
    with_next: list[Snapshot] = []
    for kl in range(len(loose["log"]), -1, -1):
        for kp in range(len(loose["purge"]), -1, -1):
            for kk in range(len(loose["kv"]), -1, -1):
                dropped = set(loose["log"][kl:]) | set(loose["purge"][kp:]) | set(loose["kv"][kk:])
                model = LogModel()
                for i, m in enumerate(acked):
                    if i not in dropped:
                        model.apply(m)
                out.append(model.snapshot(keyset))
                if later:
                    model.apply(later[0])
                    with_next.append(model.snapshot(keyset))
    return out + with_next


def snapshot_engine(engine: Any, keys: Iterable[bytes]) -> Snapshot:
    """Read the observable state of a WalEngine-like object. O(entries + keys)."""
    first, last = engine.first_index(), engine.last_index()
    entries = tuple(as_entry(e) for e in engine.get_entries_range(first, last))
    la = getattr(engine, "last_applied", None)
    return Snapshot(
        first_index=first,
        last_index=last,
        purge_boundary=as_logid(engine.purge_boundary()),
        entries=entries,
        hard_state=engine.load_hard_state(),
        kv=tuple((k, engine.get(k)) for k in sorted(keys)),
        last_applied=as_logid(la()) if callable(la) else None,
    )
