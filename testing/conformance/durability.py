"""The conformance kit's lifecycle area: a new engine, ``flush``, close, reopen and durability."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from segwal.testing.conformance.base import ContractBase, Harness, make_entries
from segwal.types import HardState, LogId, StorageEngine, VotedFor


class DurabilityContract(ContractBase):
    """A new engine is empty, ``flush`` changes nothing visible, and every effect
    survives ``close()`` and a reopen on the same path."""

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
