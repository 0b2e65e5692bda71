"""The conformance kit's harness: open, reopen and observe one engine under test.

:class:`ContractBase` holds what every area of the contract shares: the
``persistent`` and ``checks_commit_index`` switches, :meth:`open_engine` that
a user implements, and the ``h`` fixture (a :class:`Harness` on a fresh
directory).  :func:`observe` reads everything a caller can see of an engine,
and the helpers build entries whose payloads name their index and term.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest

from segwal.types import Entry, HardState, LogId, StorageEngine

__all__ = ["ContractBase", "EngineState", "Harness", "observe", "make_entries"]


# -- helpers ----------------------------------------------------------------


def _entry(index: int, term: int) -> Entry:
    """An entry whose payload names its index and term, so an overwrite is visible."""
    return Entry(index, term, f"payload {index}/{term}".encode())


def make_entries(first: int, last: int, term: int = 1) -> list[Entry]:
    """Entries ``first..last`` (inclusive), all of ``term``, with distinct payloads."""
    return [_entry(i, term) for i in range(first, last + 1)]


@dataclass(frozen=True, slots=True)
class EngineState:
    """Everything a caller can observe of an engine (the key/value part for known keys)."""

    first_index: int
    last_index: int
    boundary: LogId | None
    entries: tuple[Entry, ...]
    hard_state: HardState | None
    last_applied: LogId | None
    kv: tuple[tuple[bytes, bytes | None], ...]


def observe(engine: StorageEngine, keys: Iterable[bytes] = ()) -> EngineState:
    """Read the observable state of ``engine``; checks that point reads agree with range reads.

    Complexity: O(entries in the log + keys).
    """
    first, last = engine.first_index(), engine.last_index()
    entries = tuple(engine.get_entries_range(first, last))
    assert [e.index for e in entries] == list(range(first, first + len(entries))), "range not contiguous"
    if entries:
        assert entries[-1].index == last, f"last entry {entries[-1].index} != last_index() {last}"
    else:
        assert first == last + 1, f"empty log but first_index() {first} != last_index()+1 {last + 1}"
    for e in entries:
        assert engine.entry(e.index) == e, f"entry({e.index}) disagrees with the range read"
    assert engine.entry(first - 1) is None, f"entry({first - 1}) below first_index() is readable"
    assert engine.entry(last + 1) is None, f"entry({last + 1}) past last_index() is readable"
    return EngineState(
        first_index=first,
        last_index=last,
        boundary=engine.purge_boundary(),
        entries=entries,
        hard_state=engine.load_hard_state(),
        last_applied=engine.last_applied(),
        kv=tuple((k, engine.get(k)) for k in sorted(set(keys))),
    )


class Harness:
    """One engine under test at one path, reopened on demand.

    ``engine`` is the currently open engine; :meth:`reopen` closes it and opens
    a new one on the same path (a no-op for non-persistent engines).
    """

    def __init__(self, opener: Callable[[str], StorageEngine], path: str, persistent: bool) -> None:
        self._opener = opener
        self.path = path
        self.persistent = persistent
        self.opened: list[StorageEngine] = []
        self.keys: set[bytes] = set()
        self.engine = self.open()

    def open(self) -> StorageEngine:
        """Open a new engine on the path and remember it for cleanup."""
        engine = self._opener(self.path)
        self.opened.append(engine)
        return engine

    def reopen(self) -> StorageEngine:
        """Close the engine and open it again on the same path (persistent engines only)."""
        if self.persistent:
            self.engine.close()
            self.engine = self.open()
        return self.engine

    def state(self) -> EngineState:
        """The observable state, including every key the test touched."""
        return observe(self.engine, self.keys)

    def check_reopen(self) -> EngineState:
        """Assert that close + reopen shows exactly the state seen before; return it."""
        before = self.state()
        self.reopen()
        after = self.state()
        assert after == before, f"state changed across close/reopen:\n before {before}\n after  {after}"
        return after

    def rejects(self, exc: type[BaseException] | tuple[type[BaseException], ...],
                call: Callable[[], Any], match: str | None = None) -> None:
        """Assert that ``call()`` raises ``exc`` and changes nothing (also after a reopen)."""
        before = self.state()
        with pytest.raises(exc, match=match):
            call()
        assert self.state() == before, "a rejected call changed the state"
        self.reopen()
        assert self.state() == before, "a rejected call changed the state on disk"

    def close_all(self) -> None:
        """Close every engine opened (ignoring errors from already-closed ones)."""
        for engine in self.opened:
            try:
                engine.close()
            except Exception:  # noqa: BLE001 - double close may raise; cleanup only
                pass


def _names(index: int) -> str:
    """A regex matching ``index`` as a whole number in an error message."""
    return rf"(?<!\d){index}(?!\d)"


# -- what every area of the kit shares ----------------------------------------


class ContractBase:
    """The switches, the opener and the ``h`` fixture shared by every area of
    :class:`~segwal.testing.conformance.EngineContract`."""

    persistent: ClassVar[bool] = True
    #: Whether the engine refuses to reopen (``CorruptionError``) when the saved
    #: commit index is beyond its log, as ``WalEngine`` does: committed entries
    #: are then missing.  Set False for an engine that stores the hard state
    #: without checking it against the log.
    checks_commit_index: ClassVar[bool] = False

    def open_engine(self, path: str) -> StorageEngine:
        """Open (creating if needed) an engine stored at directory ``path``."""
        raise NotImplementedError("subclass EngineContract and implement open_engine(path)")

    @pytest.fixture
    def h(self, tmp_path: Any) -> Iterator[Harness]:
        """A :class:`Harness` on a fresh directory; every engine is closed afterwards."""
        harness = Harness(self.open_engine, str(tmp_path / "engine"), self.persistent)
        try:
            yield harness
        finally:
            harness.close_all()
