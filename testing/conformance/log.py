"""The conformance kit's log area: appends, reads, truncation, purge and reset."""

from __future__ import annotations

from typing import Any

from segwal.testing.conformance.base import ContractBase, Harness, _entry, _names, make_entries
from segwal.types import Entry, HardState, LogId, VotedFor


class LogContract(ContractBase):
    """``persist_entries``, ``entry``, ``get_entries_range``, ``first_index`` and
    ``last_index``, ``truncate``, ``purge_logs`` and ``purge_boundary``, ``reset``."""

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
