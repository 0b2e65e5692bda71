"""The conformance kit's hard-state area: ``save_hard_state`` and ``load_hard_state``."""

from __future__ import annotations

from typing import Any

import pytest

from segwal.errors import CorruptionError
from segwal.testing.conformance.base import ContractBase, Harness, make_entries
from segwal.types import HardState, LogId, VotedFor


class HardStateContract(ContractBase):
    """The hard state round-trips, the last save wins, and it is apart from the log."""

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
