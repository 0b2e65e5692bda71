"""Conformance kit: hold any :class:`~segwal.types.StorageEngine` to segwal's contract.

Strategy: :class:`EngineContract` is a pytest test class without a ``Test``
prefix, so pytest does not collect it by itself.  Subclass it in a test
module, say how to open your engine on a directory, and pytest runs every
check below against it: each method of the contract, every edge case of its
table, errors that must change nothing, and, when ``persistent`` is true,
that every effect survives ``close()`` and a reopen on the same path.

Example (``tests/test_my_engine.py``)::

    from segwal.testing.conformance import EngineContract
    from mypackage import MyEngine

    class TestMyEngine(EngineContract):
        persistent = True            # False for an engine that forgets on close

        def open_engine(self, path: str) -> MyEngine:
            return MyEngine(path)    # open or create the engine at ``path``

Then ``pytest tests/test_my_engine.py``.  ``path`` is a directory under
pytest's ``tmp_path`` that does not exist yet at the first open; the kit
closes every engine it opened at the end of each test.  An engine that is not
persistent is opened once per test and never reopened.

The kit needs pytest (``pip install segwal[test]``).  Tests are grouped by
method, in the order of the contract; each name says what it checks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest

from segwal.errors import CorruptionError
from segwal.types import Entry, HardState, LogId, StorageEngine, VotedFor

__all__ = ["EngineContract", "EngineState", "Harness", "observe", "make_entries"]


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


# -- the kit ----------------------------------------------------------------


class EngineContract:
    """The contract of a segwal storage engine, as pytest tests.  Subclass, then
    implement :meth:`open_engine` (and set ``persistent = False`` if your engine
    forgets everything on close)."""

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

    # -- a new engine -------------------------------------------------------

    def test_new_engine_is_empty(self, h: Harness) -> None:
        e = h.engine
        assert e.last_index() == 0
        assert e.first_index() == 1
        assert e.entry(0) is None and e.entry(1) is None
        assert e.get_entries_range(0, 100) == []
        assert e.purge_boundary() is None
        assert e.load_hard_state() is None
        assert e.last_applied() is None
        assert e.get(b"missing") is None
        h.check_reopen()

    def test_new_engine_creates_missing_parent_directories(self, tmp_path: Any) -> None:
        if not self.persistent:
            pytest.skip("not a persistent engine")
        path = str(tmp_path / "a" / "b" / "engine")
        h = Harness(self.open_engine, path, True)
        try:
            h.engine.persist_entries(make_entries(1, 3))
            assert h.check_reopen().last_index == 3
        finally:
            h.close_all()

    def test_is_write_durable_is_a_bool(self, h: Harness) -> None:
        assert isinstance(h.engine.is_write_durable(), bool)

    def test_context_manager_returns_the_engine_and_closes_it(self, h: Harness) -> None:
        engine = h.engine
        with engine as entered:
            assert entered is engine
            entered.persist_entries(make_entries(1, 3))
        if self.persistent:
            h.engine = h.open()
            assert [x.index for x in h.engine.get_entries_range(1, 3)] == [1, 2, 3]

    # -- persist_entries ----------------------------------------------------

    def test_persist_appends_and_reads_back(self, h: Harness) -> None:
        batch = make_entries(1, 5)
        h.engine.persist_entries(batch)
        assert h.engine.first_index() == 1 and h.engine.last_index() == 5
        for e in batch:
            assert h.engine.entry(e.index) == e
            assert isinstance(h.engine.entry(e.index), Entry)
        assert h.engine.get_entries_range(1, 5) == batch
        assert list(h.check_reopen().entries) == batch

    def test_persist_several_batches_and_continue_after_reopen(self, h: Harness) -> None:
        h.engine.persist_entries(make_entries(1, 3))
        h.engine.persist_entries(make_entries(4, 4))
        h.engine.persist_entries(make_entries(5, 9, term=2))
        h.check_reopen()
        h.engine.persist_entries(make_entries(10, 12, term=3))
        state = h.check_reopen()
        assert list(state.entries) == make_entries(1, 4) + make_entries(5, 9, 2) + make_entries(10, 12, 3)

    def test_persist_accepts_any_iterable(self, h: Harness) -> None:
        h.engine.persist_entries(e for e in make_entries(1, 3))
        h.engine.persist_entries(tuple(make_entries(4, 5)))
        h.engine.persist_entries(iter(make_entries(6, 6)))
        assert h.check_reopen().entries == tuple(make_entries(1, 6))

    def test_persist_empty_batch_is_a_no_op(self, h: Harness) -> None:
        h.engine.persist_entries([])
        assert h.state().last_index == 0
        h.engine.persist_entries(make_entries(1, 2))
        before = h.state()
        h.engine.persist_entries([])
        h.engine.persist_entries(iter(()))
        assert h.check_reopen() == before

    def test_persist_first_batch_may_start_above_one(self, h: Harness) -> None:
        h.engine.persist_entries(make_entries(5, 7))
        assert h.engine.first_index() == 5 and h.engine.last_index() == 7
        assert h.engine.entry(4) is None and h.engine.entry(1) is None
        assert h.engine.get_entries_range(1, 10) == make_entries(5, 7)
        state = h.check_reopen()
        assert (state.first_index, state.last_index) == (5, 7)
        h.engine.persist_entries(make_entries(8, 8))
        assert h.check_reopen().entries == tuple(make_entries(5, 8))

    def test_persist_payloads_of_every_shape(self, h: Harness) -> None:
        batch = [
            Entry(1, 1),
            Entry(2, 1, b""),
            Entry(3, 1, bytes(range(256))),
            Entry(4, 1, b"\x00" * 100),
            Entry(5, 2, b"x" * 20_000),  # larger than a small test segment
            Entry(6, 2, b"y"),
        ]
        h.engine.persist_entries(batch)
        assert h.engine.entry(1) == Entry(1, 1, b"")
        assert h.check_reopen().entries == tuple(batch)
        assert h.engine.entry(5) == batch[4]

    def test_persist_many_entries_across_many_batches(self, h: Harness) -> None:
        expected: list[Entry] = []
        index = 1
        for term, size in enumerate([1, 7, 50, 3, 120, 1, 64], start=1):
            batch = [Entry(i, term, b"%d" % i * 20) for i in range(index, index + size)]
            h.engine.persist_entries(batch)
            expected += batch
            index += size
        assert h.engine.get_entries_range(1, index) == expected
        assert h.check_reopen().entries == tuple(expected)
        assert h.engine.entry(100) == expected[99]

    def test_persist_conflict_overwrites_the_suffix(self, h: Harness) -> None:
        h.engine.persist_entries(make_entries(1, 10, term=1))
        replacement = make_entries(6, 7, term=2)
        h.engine.persist_entries(replacement)
        assert h.engine.last_index() == 7
        assert h.engine.entry(6) == replacement[0] and h.engine.entry(7) == replacement[1]
        assert h.engine.entry(8) is None and h.engine.entry(10) is None
        assert h.engine.get_entries_range(1, 10) == make_entries(1, 5) + replacement
        state = h.check_reopen()
        assert state.entries == tuple(make_entries(1, 5) + replacement)
        h.engine.persist_entries(make_entries(8, 8, term=2))
        assert h.check_reopen().last_index == 8

    def test_persist_overwrite_longer_than_the_suffix(self, h: Harness) -> None:
        h.engine.persist_entries(make_entries(1, 5, term=1))
        h.engine.persist_entries(make_entries(4, 9, term=2))
        assert h.check_reopen().entries == tuple(make_entries(1, 3) + make_entries(4, 9, 2))

    def test_persist_overwrite_at_first_index_replaces_everything(self, h: Harness) -> None:
        h.engine.persist_entries(make_entries(1, 5, term=1))
        h.engine.persist_entries(make_entries(1, 2, term=3))
        assert h.check_reopen().entries == tuple(make_entries(1, 2, 3))

    def test_persist_overwrite_of_the_last_entry(self, h: Harness) -> None:
        h.engine.persist_entries(make_entries(1, 5, term=1))
        h.engine.persist_entries([Entry(5, 1, b"again")])
        assert h.engine.entry(5) == Entry(5, 1, b"again")
        assert h.check_reopen().last_index == 5
        assert h.engine.entry(5) == Entry(5, 1, b"again")

    def test_persist_overwrite_after_purge_at_first_index(self, h: Harness) -> None:
        h.engine.persist_entries(make_entries(1, 10, term=1))
        h.engine.purge_logs(LogId(1, 4))
        h.engine.persist_entries(make_entries(5, 6, term=2))
        state = h.check_reopen()
        assert state.entries == tuple(make_entries(5, 6, 2))
        assert state.boundary == LogId(1, 4)

    def test_persist_terms_may_rise_within_a_batch(self, h: Harness) -> None:
        batch = [_entry(1, 1), _entry(2, 1), _entry(3, 4), _entry(4, 4), _entry(5, 9)]
        h.engine.persist_entries(batch)
        assert h.check_reopen().entries == tuple(batch)

    def test_persist_rejects_a_gap_inside_the_batch(self, h: Harness) -> None:
        h.engine.persist_entries(make_entries(1, 10))
        bad = make_entries(11, 12) + make_entries(14, 15)
        h.rejects(ValueError, lambda: h.engine.persist_entries(bad), match=_names(14))

    def test_persist_rejects_a_repeated_index_inside_the_batch(self, h: Harness) -> None:
        h.engine.persist_entries(make_entries(1, 10))
        bad = make_entries(11, 12) + make_entries(12, 13)
        h.rejects(ValueError, lambda: h.engine.persist_entries(bad), match=_names(12))

    def test_persist_rejects_descending_indexes(self, h: Harness) -> None:
        h.engine.persist_entries(make_entries(1, 10))
        bad = [_entry(11, 1), _entry(10, 1)]
        h.rejects(ValueError, lambda: h.engine.persist_entries(bad), match=_names(10))

    def test_persist_rejects_a_gap_after_the_end(self, h: Harness) -> None:
        h.engine.persist_entries(make_entries(1, 10))
        h.rejects(ValueError, lambda: h.engine.persist_entries(make_entries(12, 13)), match=_names(12))

    def test_persist_rejects_index_zero_and_below_on_an_empty_log(self, h: Harness) -> None:
        h.rejects(ValueError, lambda: h.engine.persist_entries([Entry(0, 1)]))
        h.rejects(ValueError, lambda: h.engine.persist_entries([Entry(-3, 1), Entry(-2, 1)]))

    def test_persist_rejects_a_start_below_first_index(self, h: Harness) -> None:
        h.engine.persist_entries(make_entries(20, 30))
        h.rejects(ValueError, lambda: h.engine.persist_entries(make_entries(17, 25)), match=_names(17))

    def test_persist_rejects_a_start_at_or_below_the_purge_boundary(self, h: Harness) -> None:
        h.engine.persist_entries(make_entries(1, 10))
        h.engine.purge_logs(LogId(1, 5))
        h.rejects(ValueError, lambda: h.engine.persist_entries(make_entries(5, 12)), match=_names(5))
        h.rejects(ValueError, lambda: h.engine.persist_entries(make_entries(3, 12)), match=_names(3))

    def test_persist_rejects_a_term_going_down_inside_the_batch(self, h: Harness) -> None:
        h.engine.persist_entries(make_entries(1, 10, term=2))
        bad = [_entry(11, 3), _entry(12, 3), _entry(13, 2)]
        h.rejects(ValueError, lambda: h.engine.persist_entries(bad), match=_names(13))

    def test_persist_rejects_a_term_below_the_previous_entry(self, h: Harness) -> None:
        h.engine.persist_entries(make_entries(1, 10, term=3))
        h.rejects(ValueError, lambda: h.engine.persist_entries([_entry(11, 2)]), match=_names(11))
        h.engine.persist_entries([_entry(11, 3)])  # an equal term is fine
        assert h.engine.last_index() == 11

    def test_persist_rejects_an_overwrite_below_the_previous_term(self, h: Harness) -> None:
        h.engine.persist_entries([_entry(1, 1), _entry(2, 1), _entry(3, 2), _entry(4, 2), _entry(5, 3)])
        h.rejects(ValueError, lambda: h.engine.persist_entries([_entry(4, 1)]), match=_names(4))
        h.engine.persist_entries([_entry(4, 2)])
        assert h.check_reopen().last_index == 4

    def test_persist_rejects_a_term_below_the_purge_boundary_term(self, h: Harness) -> None:
        h.engine.persist_entries(make_entries(1, 5, term=3))
        h.engine.purge_logs(LogId(3, 5))
        h.rejects(ValueError, lambda: h.engine.persist_entries([_entry(6, 2)]), match=_names(6))
        h.engine.persist_entries([_entry(6, 3)])
        assert h.check_reopen().entries == (_entry(6, 3),)

    def test_persist_rejects_a_term_below_a_boundary_past_the_end(self, h: Harness) -> None:
        h.engine.purge_logs(LogId(4, 10))
        h.rejects(ValueError, lambda: h.engine.persist_entries([_entry(11, 3)]), match=_names(11))
        h.rejects(ValueError, lambda: h.engine.persist_entries([_entry(12, 4)]), match=_names(12))
        h.engine.persist_entries([_entry(11, 4)])
        assert h.check_reopen().entries == (_entry(11, 4),)

    def test_persist_rejects_a_non_entry_and_changes_nothing(self, h: Harness) -> None:
        h.engine.persist_entries(make_entries(1, 3))
        bad: list[Any] = [_entry(4, 1), "not an entry"]
        h.rejects((TypeError, ValueError), lambda: h.engine.persist_entries(bad))

    def test_persist_rejected_batch_leaves_no_prefix(self, h: Harness) -> None:
        h.engine.persist_entries(make_entries(1, 5, term=2))
        bad = [_entry(6, 2), _entry(7, 2), _entry(8, 1)]
        h.rejects(ValueError, lambda: h.engine.persist_entries(bad), match=_names(8))
        assert h.engine.entry(6) is None
        h.engine.persist_entries([_entry(6, 2)])  # still usable
        assert h.check_reopen().last_index == 6

    def test_persist_rejected_overwrite_keeps_the_old_suffix(self, h: Harness) -> None:
        h.engine.persist_entries(make_entries(1, 8, term=1))
        bad = [_entry(4, 2), _entry(5, 2), _entry(7, 2)]
        h.rejects(ValueError, lambda: h.engine.persist_entries(bad), match=_names(7))
        assert h.state().entries == tuple(make_entries(1, 8))

    # -- entry --------------------------------------------------------------

    def test_entry_is_none_outside_the_log(self, h: Harness) -> None:
        h.engine.persist_entries(make_entries(1, 10))
        h.engine.purge_logs(LogId(1, 3))
        h.engine.truncate(9)
        for index in (0, 1, 3, 9, 10, 11, 1000):
            assert h.engine.entry(index) is None, index
        for index in range(4, 9):
            assert h.engine.entry(index) == _entry(index, 1)
        h.reopen()
        for index in (0, 1, 3, 9, 10, 11, 1000):
            assert h.engine.entry(index) is None, index

    # -- get_entries_range --------------------------------------------------

    def test_range_is_inclusive_and_ascending(self, h: Harness) -> None:
        h.engine.persist_entries(make_entries(1, 10))
        assert h.engine.get_entries_range(3, 6) == make_entries(3, 6)
        assert h.engine.get_entries_range(4, 4) == [_entry(4, 1)]
        assert h.engine.get_entries_range(1, 10) == make_entries(1, 10)

    def test_range_with_start_after_end_is_empty(self, h: Harness) -> None:
        h.engine.persist_entries(make_entries(1, 10))
        assert h.engine.get_entries_range(6, 5) == []
        assert h.engine.get_entries_range(10, 1) == []

    def test_range_skips_the_purged_prefix_and_past_the_end(self, h: Harness) -> None:
        h.engine.persist_entries(make_entries(1, 10))
        h.engine.purge_logs(LogId(1, 4))
        assert h.engine.get_entries_range(1, 7) == make_entries(5, 7)
        assert h.engine.get_entries_range(8, 100) == make_entries(8, 10)
        assert h.engine.get_entries_range(0, 1000) == make_entries(5, 10)
        assert h.engine.get_entries_range(1, 4) == []
        assert h.engine.get_entries_range(11, 20) == []
        h.reopen()
        assert h.engine.get_entries_range(0, 1000) == make_entries(5, 10)

    def test_range_across_many_batches(self, h: Harness) -> None:
        for first in range(1, 400, 20):
            h.engine.persist_entries([Entry(i, 1, b"r" * 50) for i in range(first, first + 20)])
        expected = [Entry(i, 1, b"r" * 50) for i in range(1, 401)]
        assert h.engine.get_entries_range(1, 400) == expected
        assert h.engine.get_entries_range(37, 283) == expected[36:283]
        h.reopen()
        assert h.engine.get_entries_range(37, 283) == expected[36:283]

    # -- last_index and first_index -----------------------------------------

    def test_first_and_last_index_follow_appends(self, h: Harness) -> None:
        h.engine.persist_entries(make_entries(1, 4))
        assert (h.engine.first_index(), h.engine.last_index()) == (1, 4)
        h.engine.persist_entries(make_entries(5, 9))
        assert (h.engine.first_index(), h.engine.last_index()) == (1, 9)

    def test_purge_never_lowers_last_index(self, h: Harness) -> None:
        h.engine.persist_entries(make_entries(1, 10))
        h.engine.purge_logs(LogId(1, 5))
        assert h.engine.last_index() == 10
        h.engine.purge_logs(LogId(1, 10))
        assert h.engine.last_index() == 10
        assert h.engine.first_index() == 11
        h.engine.purge_logs(LogId(2, 20))
        state = h.check_reopen()
        assert (state.first_index, state.last_index, state.entries) == (21, 20, ())

    # -- truncate -----------------------------------------------------------

    def test_truncate_removes_the_suffix(self, h: Harness) -> None:
        h.engine.persist_entries(make_entries(1, 10))
        h.engine.truncate(6)
        assert h.engine.last_index() == 5 and h.engine.first_index() == 1
        assert h.engine.entry(6) is None and h.engine.entry(5) == _entry(5, 1)
        assert h.check_reopen().entries == tuple(make_entries(1, 5))

    def test_truncate_of_the_last_entry(self, h: Harness) -> None:
        h.engine.persist_entries(make_entries(1, 10))
        h.engine.truncate(10)
        assert h.check_reopen().last_index == 9

    def test_truncate_beyond_the_end_is_a_no_op(self, h: Harness) -> None:
        h.engine.persist_entries(make_entries(1, 10))
        before = h.state()
        h.engine.truncate(11)
        h.engine.truncate(1000)
        assert h.check_reopen() == before

    def test_truncate_on_a_new_engine_is_a_no_op(self, h: Harness) -> None:
        h.engine.truncate(1)
        h.engine.truncate(5)
        state = h.check_reopen()
        assert (state.first_index, state.last_index) == (1, 0)

    def test_truncate_everything(self, h: Harness) -> None:
        h.engine.persist_entries(make_entries(1, 10))
        h.engine.truncate(1)
        state = h.check_reopen()
        assert (state.first_index, state.last_index, state.entries) == (1, 0, ())
        h.engine.persist_entries(make_entries(1, 2, term=2))
        assert h.check_reopen().entries == tuple(make_entries(1, 2, 2))

    def test_truncate_below_the_first_index_without_a_boundary(self, h: Harness) -> None:
        # "after truncate(k) with k <= last_index(), last_index() is k-1", also
        # when the log (which started above 1) is already empty
        h.engine.persist_entries(make_entries(5, 7))
        h.engine.truncate(5)
        state = h.check_reopen()
        assert (state.first_index, state.last_index) == (5, 4)
        h.engine.truncate(3)
        state = h.check_reopen()
        assert (state.first_index, state.last_index) == (3, 2)

    def test_truncate_at_or_below_the_boundary_raises(self, h: Harness) -> None:
        h.engine.persist_entries(make_entries(1, 10))
        h.engine.purge_logs(LogId(1, 5))
        h.rejects(ValueError, lambda: h.engine.truncate(5))
        h.rejects(ValueError, lambda: h.engine.truncate(2))

    def test_truncate_just_above_the_boundary_empties_the_log(self, h: Harness) -> None:
        h.engine.persist_entries(make_entries(1, 10))
        h.engine.purge_logs(LogId(1, 5))
        h.engine.truncate(6)
        state = h.check_reopen()
        assert (state.first_index, state.last_index, state.entries) == (6, 5, ())
        assert state.boundary == LogId(1, 5)
        h.engine.persist_entries(make_entries(6, 7, term=2))
        assert h.check_reopen().entries == tuple(make_entries(6, 7, 2))

    def test_truncate_then_append_continues_from_there(self, h: Harness) -> None:
        h.engine.persist_entries(make_entries(1, 10, term=1))
        h.engine.truncate(4)
        h.rejects(ValueError, lambda: h.engine.persist_entries(make_entries(5, 6)), match=_names(5))
        h.engine.persist_entries(make_entries(4, 5, term=2))
        assert h.check_reopen().entries == tuple(make_entries(1, 3) + make_entries(4, 5, 2))

    def test_truncated_entries_never_come_back(self, h: Harness) -> None:
        h.engine.persist_entries(make_entries(1, 10, term=1))
        h.engine.truncate(5)
        h.engine.persist_entries([_entry(5, 2)])
        state = h.check_reopen()
        assert state.last_index == 5 and state.entries[-1] == _entry(5, 2)
        for index in range(6, 11):
            assert h.engine.entry(index) is None
        h.reopen()
        assert h.state() == state

    def test_truncate_repeatedly_across_reopens(self, h: Harness) -> None:
        h.engine.persist_entries(make_entries(1, 30))
        for cut in (25, 20, 12, 3):
            h.engine.truncate(cut)
            assert h.check_reopen().last_index == cut - 1

    # -- purge_logs and purge_boundary --------------------------------------

    def test_purge_removes_the_prefix_and_records_the_boundary(self, h: Harness) -> None:
        h.engine.persist_entries(make_entries(1, 10))
        h.engine.purge_logs(LogId(1, 4))
        assert h.engine.first_index() == 5 and h.engine.last_index() == 10
        assert h.engine.purge_boundary() == LogId(1, 4)
        for index in range(1, 5):
            assert h.engine.entry(index) is None
        state = h.check_reopen()
        assert state.boundary == LogId(1, 4) and state.entries == tuple(make_entries(5, 10))

    def test_purge_of_many_batches(self, h: Harness) -> None:
        for first in range(1, 600, 25):
            h.engine.persist_entries([Entry(i, 1 + first // 100, b"p" * 60) for i in range(first, first + 25)])
        h.engine.purge_logs(LogId(4, 333))
        state = h.check_reopen()
        assert state.first_index == 334 and state.last_index == 600
        h.engine.purge_logs(LogId(6, 600))
        state = h.check_reopen()
        assert state.first_index == 601 and state.boundary == LogId(6, 600)

    def test_purge_at_or_below_the_boundary_is_a_no_op(self, h: Harness) -> None:
        h.engine.persist_entries(make_entries(1, 10))
        h.engine.purge_logs(LogId(1, 6))
        before = h.state()
        h.engine.purge_logs(LogId(1, 6))
        h.engine.purge_logs(LogId(1, 3))
        h.engine.purge_logs(LogId(7, 2))  # term is not checked below the boundary
        assert h.check_reopen() == before

    def test_purge_with_a_different_term_raises(self, h: Harness) -> None:
        h.engine.persist_entries(make_entries(1, 5, term=1) + make_entries(6, 10, term=2))
        h.rejects(ValueError, lambda: h.engine.purge_logs(LogId(1, 7)))
        h.rejects(ValueError, lambda: h.engine.purge_logs(LogId(3, 7)))
        h.engine.purge_logs(LogId(2, 7))
        assert h.check_reopen().boundary == LogId(2, 7)

    def test_purge_of_the_whole_log(self, h: Harness) -> None:
        h.engine.persist_entries(make_entries(1, 10, term=2))
        h.engine.purge_logs(LogId(2, 10))
        state = h.check_reopen()
        assert (state.first_index, state.last_index, state.entries) == (11, 10, ())
        h.engine.persist_entries(make_entries(11, 12, term=2))
        assert h.check_reopen().entries == tuple(make_entries(11, 12, 2))

    def test_purge_past_the_end_moves_last_index(self, h: Harness) -> None:
        h.engine.persist_entries(make_entries(1, 10, term=1))
        h.engine.purge_logs(LogId(3, 50))
        assert h.engine.last_index() == 50 and h.engine.first_index() == 51
        assert h.engine.entry(10) is None
        state = h.check_reopen()
        assert (state.first_index, state.last_index, state.boundary) == (51, 50, LogId(3, 50))
        h.rejects(ValueError, lambda: h.engine.persist_entries([_entry(52, 3)]), match=_names(52))
        h.rejects(ValueError, lambda: h.engine.persist_entries([_entry(11, 3)]), match=_names(11))
        h.engine.persist_entries([_entry(51, 3)])
        assert h.check_reopen().entries == (_entry(51, 3),)

    def test_purge_on_a_new_engine(self, h: Harness) -> None:
        h.engine.purge_logs(LogId(2, 7))
        state = h.check_reopen()
        assert (state.first_index, state.last_index, state.boundary) == (8, 7, LogId(2, 7))

    def test_purge_below_the_first_index_without_a_boundary_is_a_no_op(self, h: Harness) -> None:
        h.engine.persist_entries(make_entries(10, 20))
        before = h.state()
        h.engine.purge_logs(LogId(1, 5))
        h.engine.purge_logs(LogId(1, 8))
        state = h.check_reopen()
        assert state == before and state.boundary is None

    def test_purges_advance_the_boundary(self, h: Harness) -> None:
        h.engine.persist_entries(make_entries(1, 30))
        for cut in (3, 9, 10, 22):
            h.engine.purge_logs(LogId(1, cut))
            state = h.check_reopen()
            assert state.boundary == LogId(1, cut) and state.first_index == cut + 1

    def test_purge_then_truncate_then_append(self, h: Harness) -> None:
        h.engine.persist_entries(make_entries(1, 20, term=1))
        h.engine.purge_logs(LogId(1, 8))
        h.engine.truncate(15)
        h.engine.persist_entries(make_entries(15, 17, term=2))
        state = h.check_reopen()
        assert state.entries == tuple(make_entries(9, 14) + make_entries(15, 17, 2))
        assert state.boundary == LogId(1, 8)

    # -- flush --------------------------------------------------------------

    def test_flush_changes_nothing_visible(self, h: Harness) -> None:
        h.engine.flush()
        h.engine.persist_entries(make_entries(1, 5))
        h.engine.insert(b"k", b"v")
        h.keys.add(b"k")
        before = h.state()
        h.engine.flush()
        h.engine.flush()
        assert h.check_reopen() == before

    # -- reset --------------------------------------------------------------

    def test_reset_clears_log_boundary_kv_and_last_applied(self, h: Harness) -> None:
        h.engine.persist_entries(make_entries(1, 20, term=2))
        h.engine.purge_logs(LogId(2, 5))
        h.engine.insert(b"a", b"1")
        h.engine.apply([(b"b", b"2")], applied=LogId(2, 10))
        h.keys |= {b"a", b"b"}
        h.engine.reset()
        for state in (h.state(), h.check_reopen()):
            assert (state.first_index, state.last_index, state.entries) == (1, 0, ())
            assert state.boundary is None and state.last_applied is None
            assert state.kv == ((b"a", None), (b"b", None))

    def test_reset_keeps_the_hard_state(self, h: Harness) -> None:
        hs = HardState(7, VotedFor(3, 7, True), 12)
        h.engine.save_hard_state(hs)
        h.engine.persist_entries(make_entries(1, 5))
        h.engine.reset()
        assert h.engine.load_hard_state() == hs
        assert h.check_reopen().hard_state == hs

    def test_reset_then_the_log_accepts_a_fresh_start(self, h: Harness) -> None:
        h.engine.persist_entries(make_entries(1, 40, term=5))
        h.engine.purge_logs(LogId(5, 30))
        h.engine.reset()
        h.engine.persist_entries(make_entries(1, 3, term=1))  # term and index start over
        assert h.check_reopen().entries == tuple(make_entries(1, 3))
        h.engine.reset()
        h.engine.persist_entries(make_entries(100, 101, term=9))
        assert h.check_reopen().entries == tuple(make_entries(100, 101, 9))

    def test_reset_of_a_new_engine(self, h: Harness) -> None:
        h.engine.reset()
        state = h.check_reopen()
        assert (state.first_index, state.last_index, state.boundary) == (1, 0, None)

    # -- hard state ---------------------------------------------------------

    @pytest.mark.parametrize(
        "hs",
        [
            HardState(0),
            HardState(1, None, 0),
            HardState(5, VotedFor(2, 5)),
            HardState(9, VotedFor(0, 8, committed=True), 41),
            HardState(2**40, VotedFor(2**33, 2**40, False), 2**50),
        ],
        ids=["zero", "no-vote", "vote", "committed-vote", "large"],
    )
    def test_hard_state_round_trips(self, h: Harness, hs: HardState) -> None:
        # a snapshot at the commit index first, so that the log covers it
        h.engine.purge_logs(LogId(1, hs.commit_index))
        h.engine.save_hard_state(hs)
        assert h.engine.load_hard_state() == hs
        assert h.check_reopen().hard_state == hs

    def test_hard_state_last_save_wins(self, h: Harness) -> None:
        for term in range(1, 6):
            h.engine.save_hard_state(HardState(term, VotedFor(term % 3, term), term * 2))
        h.engine.save_hard_state(HardState(6))
        assert h.check_reopen().hard_state == HardState(6)

    def test_hard_state_is_independent_of_the_log(self, h: Harness) -> None:
        hs = HardState(3, VotedFor(1, 3), 4)
        h.engine.save_hard_state(hs)
        h.engine.persist_entries(make_entries(1, 10))
        h.engine.truncate(5)
        h.engine.purge_logs(LogId(1, 3))
        h.engine.insert(b"k", b"v")
        assert h.engine.load_hard_state() == hs
        h.reopen()
        assert h.engine.load_hard_state() == hs
        assert h.engine.last_index() == 4

    def test_hard_state_commit_index_beyond_the_log(self, h: Harness, tmp_path: Any) -> None:
        # Either the engine stores the commit index as the caller's claim, or
        # (checks_commit_index) it refuses to reopen a log that lacks committed
        # entries.  Saving itself is accepted either way.
        hs = HardState(2, VotedFor(1, 2), 41)
        h.engine.persist_entries(make_entries(1, 3, term=2))
        h.engine.save_hard_state(hs)
        assert h.engine.load_hard_state() == hs
        if not h.persistent:
            return
        if not self.checks_commit_index:
            assert h.check_reopen().hard_state == hs
            return
        h.engine.close()
        with pytest.raises(CorruptionError, match="commit index"):
            self.open_engine(h.path)

    def test_hard_state_commit_index_may_exceed_a_fresh_log(self, h: Harness) -> None:
        # reset() keeps the hard state and the log then accepts a fresh start:
        # a commit index beyond the new log is not damage.
        hs = HardState(3, VotedFor(1, 3), 9)
        h.engine.persist_entries(make_entries(1, 10, term=3))
        h.engine.save_hard_state(hs)
        h.engine.reset()
        h.engine.persist_entries(make_entries(1, 2, term=3))
        state = h.check_reopen()
        assert state.hard_state == hs and state.entries == tuple(make_entries(1, 2, 3))

    def test_save_hard_state_rejects_other_types(self, h: Harness) -> None:
        h.engine.save_hard_state(HardState(1))
        bad: Any = (2, None, 0)
        h.rejects((TypeError, ValueError), lambda: h.engine.save_hard_state(bad))

    # -- insert, get, delete ------------------------------------------------

    def test_insert_returns_the_previous_value(self, h: Harness) -> None:
        h.keys |= {b"k", b"other"}
        assert h.engine.insert(b"k", b"v1") is None
        assert h.engine.insert(b"k", b"v2") == b"v1"
        assert h.engine.get(b"k") == b"v2"
        assert h.engine.get(b"other") is None
        state = h.check_reopen()
        assert state.kv == ((b"k", b"v2"), (b"other", None))
        assert h.engine.insert(b"k", b"v3") == b"v2"

    def test_delete_returns_the_previous_value(self, h: Harness) -> None:
        h.keys |= {b"k", b"never"}
        h.engine.insert(b"k", b"v")
        assert h.engine.delete(b"k") == b"v"
        assert h.engine.delete(b"k") is None
        assert h.engine.delete(b"never") is None
        assert h.check_reopen().kv == ((b"k", None), (b"never", None))
        assert h.engine.insert(b"k", b"again") is None

    def test_empty_and_binary_values(self, h: Harness) -> None:
        key = bytes(range(256))
        h.keys |= {b"empty", key}
        assert h.engine.insert(b"empty", b"") is None
        assert h.engine.get(b"empty") == b""  # empty, not missing
        h.engine.insert(key, key[::-1] * 10)
        state = h.check_reopen()
        assert dict(state.kv) == {b"empty": b"", key: key[::-1] * 10}
        assert h.engine.delete(b"empty") == b""

    def test_many_keys_with_overwrites_and_deletes(self, h: Harness) -> None:
        model: dict[bytes, bytes] = {}
        for round_ in range(4):
            for i in range(150):
                key = b"key-%d" % i
                h.keys.add(key)
                if (i + round_) % 5 == 0:
                    assert h.engine.delete(key) == model.pop(key, None)
                else:
                    value = b"v%d-%d" % (round_, i) * (1 + i % 7)
                    assert h.engine.insert(key, value) == model.get(key)
                    model[key] = value
        state = h.check_reopen()
        assert dict(state.kv) == {k: model.get(k) for k in h.keys}

    def test_kv_data_is_apart_from_the_log(self, h: Harness) -> None:
        h.keys.add(b"1")
        h.engine.insert(b"1", b"kv")
        h.engine.persist_entries(make_entries(1, 3))
        assert h.engine.get(b"1") == b"kv"
        assert h.engine.entry(1) == _entry(1, 1)
        h.engine.truncate(1)
        h.engine.purge_logs(LogId(1, 10))
        state = h.check_reopen()
        assert state.kv == ((b"1", b"kv"),) and state.entries == ()

    def test_kv_rejects_non_bytes_and_changes_nothing(self, h: Harness) -> None:
        h.keys.add(b"k")
        h.engine.insert(b"k", b"v")
        bad: Any = "text"
        h.rejects((TypeError, ValueError), lambda: h.engine.insert(bad, b"v"))
        h.rejects((TypeError, ValueError), lambda: h.engine.insert(b"k", bad))
        h.rejects((TypeError, ValueError), lambda: h.engine.insert(b"k", None))  # type: ignore[arg-type]

    # -- apply and last_applied ---------------------------------------------

    def test_apply_sets_and_deletes_and_records_last_applied(self, h: Harness) -> None:
        h.keys |= {b"a", b"b", b"c"}
        h.engine.insert(b"c", b"old")
        h.engine.apply([(b"a", b"1"), (b"b", b"2"), (b"c", None)], applied=LogId(2, 7))
        assert h.engine.last_applied() == LogId(2, 7)
        state = h.check_reopen()
        assert state.kv == ((b"a", b"1"), (b"b", b"2"), (b"c", None))
        assert state.last_applied == LogId(2, 7)

    def test_apply_without_applied_keeps_last_applied(self, h: Harness) -> None:
        h.keys.add(b"a")
        h.engine.apply([(b"a", b"1")], applied=LogId(1, 3))
        h.engine.apply([(b"a", b"2")])
        state = h.check_reopen()
        assert state.last_applied == LogId(1, 3) and state.kv == ((b"a", b"2"),)

    def test_apply_with_no_changes_records_last_applied(self, h: Harness) -> None:
        h.engine.apply([], applied=LogId(4, 40))
        assert h.check_reopen().last_applied == LogId(4, 40)
        h.engine.apply(iter(()), applied=LogId(4, 41))
        assert h.check_reopen().last_applied == LogId(4, 41)

    def test_apply_later_changes_win(self, h: Harness) -> None:
        h.keys |= {b"k", b"j"}
        h.engine.apply([(b"k", b"1"), (b"k", b"2"), (b"j", b"x"), (b"j", None)], applied=LogId(1, 1))
        assert h.check_reopen().kv == ((b"j", None), (b"k", b"2"))

    def test_apply_accepts_a_generator(self, h: Harness) -> None:
        h.keys |= {b"g0", b"g1", b"g2"}
        h.engine.apply(((b"g%d" % i, b"%d" % i) for i in range(3)), applied=LogId(1, 2))
        assert h.check_reopen().kv == ((b"g0", b"0"), (b"g1", b"1"), (b"g2", b"2"))

    def test_apply_is_all_or_nothing(self, h: Harness) -> None:
        h.keys |= {b"a", b"b"}
        h.engine.apply([(b"a", b"1")], applied=LogId(1, 1))
        bad: Any = [(b"a", b"2"), (b"b", b"3"), ("not bytes", b"4")]
        h.rejects((TypeError, ValueError), lambda: h.engine.apply(bad, applied=LogId(1, 2)))
        assert h.engine.get(b"a") == b"1" and h.engine.get(b"b") is None
        assert h.engine.last_applied() == LogId(1, 1)

    def test_apply_many_then_reopen(self, h: Harness) -> None:
        for n in range(1, 60):
            key = b"n%d" % (n % 13)
            h.keys.add(key)
            h.engine.apply([(key, b"%d" % n), (b"n%d" % ((n + 5) % 13), None)], applied=LogId(1, n))
        before = h.state()
        assert before.last_applied == LogId(1, 59)
        assert h.check_reopen() == before

    # -- close, reopen, durability ------------------------------------------

    def test_everything_survives_close_and_reopen(self, h: Harness) -> None:
        h.engine.persist_entries(make_entries(1, 50, term=1))
        h.engine.persist_entries(make_entries(40, 60, term=2))
        h.engine.purge_logs(LogId(1, 20))
        h.engine.truncate(58)
        h.engine.save_hard_state(HardState(2, VotedFor(1, 2), 55))
        h.engine.insert(b"x", b"1")
        h.engine.apply([(b"y", b"2"), (b"x", None)], applied=LogId(2, 45))
        h.keys |= {b"x", b"y"}
        expected = h.state()
        assert expected.entries == tuple(make_entries(21, 39) + make_entries(40, 57, 2))
        h.check_reopen()
        h.check_reopen()  # reopening twice with no write in between changes nothing

    def test_close_then_reopen_with_a_new_object(self, h: Harness) -> None:
        if not self.persistent:
            pytest.skip("not a persistent engine")
        h.engine.persist_entries(make_entries(1, 5))
        h.engine.save_hard_state(HardState(1))
        h.engine.close()
        other = h.open()
        assert other.get_entries_range(1, 5) == make_entries(1, 5)
        assert other.load_hard_state() == HardState(1)
        h.engine = other

    def test_a_mixed_history_with_a_reopen_after_every_step(self, h: Harness) -> None:
        steps: list[Callable[[StorageEngine], object]] = [
            lambda e: e.persist_entries(make_entries(1, 8, term=1)),
            lambda e: e.persist_entries(make_entries(9, 12, term=2)),
            lambda e: e.truncate(11),
            lambda e: e.persist_entries(make_entries(11, 15, term=3)),
            lambda e: e.purge_logs(LogId(1, 6)),
            lambda e: e.persist_entries(make_entries(9, 9, term=3)),
            lambda e: e.save_hard_state(HardState(3, VotedFor(2, 3), 9)),
            lambda e: e.apply([(b"m", b"1")], applied=LogId(3, 9)),
            lambda e: e.purge_logs(LogId(3, 30)),
            lambda e: e.persist_entries(make_entries(31, 33, term=4)),
            lambda e: e.reset(),  # then install a snapshot at (4, 40)
            lambda e: e.purge_logs(LogId(4, 40)),
            lambda e: e.persist_entries(make_entries(41, 42, term=5)),
        ]
        h.keys.add(b"m")
        for step in steps:
            step(h.engine)
            h.check_reopen()
        state = h.state()
        assert state.entries == tuple(make_entries(41, 42, 5)) and state.boundary == LogId(4, 40)
        assert state.hard_state == HardState(3, VotedFor(2, 3), 9)
        assert state.kv == ((b"m", None),) and state.last_applied is None
