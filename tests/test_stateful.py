"""Model-based test: ``WalEngine`` against ``InMemoryEngine`` under random operation sequences.

Strategy: every rule runs the same call on the model (``InMemoryEngine``, the
reference of the contract) and on the engine under test.  If the model raises
``ValueError``/``TypeError``, the engine must raise the same type and change
nothing; otherwise the engine must succeed and return the same value.  After
every step the whole observable state is compared: entries, first and last
index, purge boundary, hard state, key/value data of every key touched and
last applied.  Segments are tiny (512 and 2048 bytes) so that batches rotate
segments every few steps, and some steps close and reopen the engine.

Batches are drawn near the valid region on purpose: most are valid appends or
conflict overwrites, some are invalid (a gap, a start outside the log, a
term going down), which must be refused without a trace.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from typing import Any, Literal

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from segwal.storage.memory import InMemoryEngine
from segwal.testing.conformance import observe
from segwal.types import Entry, HardState, LogId, StorageEngine, VotedFor

try:
    from segwal.engine import WalEngine
except ImportError:  # the engine is not there yet: nothing to hold to the model
    WalEngine = None  # type: ignore[assignment,misc]

pytestmark = pytest.mark.skipif(WalEngine is None, reason="segwal.engine.WalEngine is not available")

KEYS = [b"a", b"b", b"c", b"key-d", b"", b"\x00\xff"]
keys = st.sampled_from(KEYS)
values = st.binary(max_size=40)
payloads = st.binary(max_size=120)


def _outcome(call: Callable[[], Any]) -> tuple[str, Any]:
    """``("ok", result)`` or ``("raised", exception type)`` for a call refused as bad input."""
    try:
        return ("ok", call())
    except (ValueError, TypeError) as exc:
        return ("raised", ValueError if isinstance(exc, ValueError) else TypeError)


class EngineVsModel(RuleBasedStateMachine):
    """Drive a ``WalEngine`` and an ``InMemoryEngine`` in lockstep."""

    segment_size = 512
    sync: Literal["always", "flush"] = "always"
    # WalEngine refuses to open when the saved commit index is beyond the log
    # (reported to the lead: the contract puts no such limit on the hard
    # state).  Until that is settled, hard states are saved with commit 0 so
    # that the other rules keep being checked; the kit tests commit indexes.
    free_commit_index = False

    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.mkdtemp(prefix="segwal-stateful-")
        self.path = os.path.join(self.tmp, "engine")
        self.model = InMemoryEngine()
        self.engine: StorageEngine = self._open()
        self.keys: set[bytes] = set()

    def _open(self) -> StorageEngine:
        engine: StorageEngine = WalEngine(self.path, segment_size=self.segment_size, sync=self.sync)
        return engine

    def teardown(self) -> None:
        try:
            self.engine.close()
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def both(self, call: Callable[[StorageEngine], Any]) -> Any:
        """Run ``call`` on the model then on the engine; the outcomes must agree."""
        expected = _outcome(lambda: call(self.model))
        actual = _outcome(lambda: call(self.engine))
        assert actual == expected, f"engine {actual} but model {expected}"
        return expected[1]

    # -- helpers over the model -----------------------------------------------

    def _last_term(self) -> int:
        """The term a new entry must at least have: of the last entry, else of the boundary."""
        last = self.model.entry(self.model.last_index())
        if last is not None:
            return last.term
        boundary = self.model.purge_boundary()
        return boundary.term if boundary is not None else 0

    @staticmethod
    def _batch(first: int, terms: list[int], data: st.DataObject) -> list[Entry]:
        return [Entry(first + i, t, data.draw(payloads)) for i, t in enumerate(terms)]

    # -- log rules --------------------------------------------------------------

    @initialize(data=st.data())
    def start(self, data: st.DataObject) -> None:
        first = data.draw(st.sampled_from([1, 1, 1, 5]), label="first index")
        self.both(lambda e: e.persist_entries([Entry(first, 1, b"seed")]))

    @rule(data=st.data(), count=st.integers(1, 12), bump=st.sampled_from([0, 0, 0, 1, 2]))
    def append(self, data: st.DataObject, count: int, bump: int) -> None:
        term = self._last_term() + bump
        batch = self._batch(self.model.last_index() + 1, [term] * count, data)
        self.both(lambda e: e.persist_entries(batch))

    @precondition(lambda self: self.model.first_index() <= self.model.last_index())
    @rule(data=st.data(), count=st.integers(1, 6), bump=st.integers(0, 2))
    def overwrite(self, data: st.DataObject, count: int, bump: int) -> None:
        start = data.draw(st.integers(self.model.first_index(), self.model.last_index()), label="start")
        before = self.model.entry(start - 1)
        boundary = self.model.purge_boundary()
        base = before.term if before is not None else (boundary.term if boundary else 0)
        old = self.model.entry(start)
        term = max(base, old.term if old else 0) + bump
        batch = self._batch(start, [term] * count, data)
        self.both(lambda e: e.persist_entries(batch))

    @rule(
        data=st.data(),
        offset=st.integers(-3, 3),
        terms=st.lists(st.integers(-1, 2), min_size=1, max_size=5),
        gap_at=st.one_of(st.none(), st.integers(1, 4)),
    )
    def persist_anything(self, data: st.DataObject, offset: int, terms: list[int], gap_at: int | None) -> None:
        """A batch near the end of the log, valid or not; the model decides."""
        first = max(0, self.model.last_index() + 1 + offset)
        base = self._last_term()
        entries: list[Entry] = []
        index, term = first, base
        for position, delta in enumerate(terms):
            term = max(0, term + delta)
            if gap_at is not None and position == gap_at:
                index += 1
            entries.append(Entry(index, term, data.draw(payloads)))
            index += 1
        self.both(lambda e: e.persist_entries(entries))

    @rule(offset=st.integers(-3, 3))
    def truncate(self, offset: int) -> None:
        from_index = max(1, self.model.last_index() + offset)
        self.both(lambda e: e.truncate(from_index))

    @rule(data=st.data())
    def truncate_inside(self, data: st.DataObject) -> None:
        low = max(1, self.model.first_index() - 1)
        from_index = data.draw(st.integers(low, self.model.last_index() + 1), label="from_index")
        self.both(lambda e: e.truncate(from_index))

    @rule(data=st.data(), wrong_term=st.booleans())
    def purge(self, data: st.DataObject, wrong_term: bool) -> None:
        first, last = self.model.first_index(), self.model.last_index()
        index = data.draw(st.integers(max(1, first - 2), last + 3), label="cutoff index")
        existing = self.model.entry(index)
        if existing is not None:
            term = existing.term + 1 if wrong_term else existing.term
        else:
            term = self._last_term()
        self.both(lambda e: e.purge_logs(LogId(term, index)))

    @rule()
    def reset(self) -> None:
        self.both(lambda e: e.reset())

    @rule()
    def flush(self) -> None:
        self.both(lambda e: e.flush())

    @rule()
    def reopen(self) -> None:
        self.engine.close()
        self.engine = self._open()

    # -- hard state -----------------------------------------------------------

    @rule(
        term=st.integers(0, 2**40),
        vote=st.one_of(st.none(), st.builds(VotedFor, st.integers(0, 9), st.integers(0, 2**40), st.booleans())),
        commit=st.integers(0, 2**40),
    )
    def save_hard_state(self, term: int, vote: VotedFor | None, commit: int) -> None:
        if not self.free_commit_index:
            commit = 0
        hs = HardState(term, vote, commit)
        self.both(lambda e: e.save_hard_state(hs))

    # -- key/value ------------------------------------------------------------

    @rule(key=keys, value=values)
    def insert(self, key: bytes, value: bytes) -> None:
        self.keys.add(key)
        self.both(lambda e: e.insert(key, value))

    @rule(key=keys)
    def delete(self, key: bytes) -> None:
        self.keys.add(key)
        self.both(lambda e: e.delete(key))

    @rule(key=keys)
    def get(self, key: bytes) -> None:
        self.both(lambda e: e.get(key))

    @rule(
        changes=st.lists(st.tuples(keys, st.one_of(st.none(), values)), max_size=6),
        applied=st.one_of(st.none(), st.builds(LogId, st.integers(0, 50), st.integers(0, 500))),
        bad=st.booleans(),
    )
    def apply(self, changes: list[tuple[bytes, bytes | None]], applied: LogId | None, bad: bool) -> None:
        self.keys.update(k for k, _ in changes)
        batch: list[Any] = list(changes)
        if bad:
            batch.append(("not bytes", b"x"))  # the whole apply must be refused
        self.both(lambda e: e.apply(batch, applied=applied))

    # -- the check --------------------------------------------------------------

    @invariant()
    def same_state(self) -> None:
        expected = observe(self.model, self.keys)
        actual = observe(self.engine, self.keys)
        assert actual == expected, f"\nengine {actual}\nmodel  {expected}"


class EngineVsModelLargerSegments(EngineVsModel):
    """The same machine with 2 KiB segments and ``sync="flush"``."""

    segment_size = 2048
    sync: Literal["always", "flush"] = "flush"


_STEPS = settings(stateful_step_count=50)
TestEngineVsModel = EngineVsModel.TestCase
TestEngineVsModel.settings = _STEPS
TestEngineVsModelLargerSegments = EngineVsModelLargerSegments.TestCase
TestEngineVsModelLargerSegments.settings = _STEPS
