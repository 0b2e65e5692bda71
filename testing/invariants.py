"""The crash checker's invariants: what must hold of an engine opened on a crash state.

An invariant takes a :class:`CheckContext` (the opened engine, its observable
state, the crash state, the marks and the legal candidates of
:mod:`segwal.testing.logmodel`) and returns the problems it found.  The
default invariants (:data:`DEFAULT_INVARIANTS`) require, on every state:

1. ``acknowledged_state``: the engine's observable state (first/last index,
   purge boundary, every entry byte for byte, hard state, every key ever
   written, last applied) equals one of the candidates.  This covers "every
   acknowledged entry, hard state and key/value change is present" and
   "truncated and purged entries never come back": after an acknowledged
   truncate or purge, no candidate holds those entries.
2. ``log_contiguous``: the range read returns exactly ``first..last`` with no
   gap, ``entry()`` agrees at both ends and is ``None`` just outside them.
3. ``terms_non_decreasing``: along the log, and from the purge boundary.
4. reopening gives the same observable state (checked by
   :func:`~segwal.testing.checker.check_state` itself when ``reopen=True``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segwal.testing.crash import CrashState
from segwal.testing.logmodel import Snapshot, as_entry, short_repr
from segwal.testing.recording import Mark

__all__ = [
    "CheckContext",
    "Invariant",
    "DEFAULT_INVARIANTS",
    "acknowledged_state",
    "log_contiguous",
    "terms_non_decreasing",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckContext:
    """What an invariant sees for one state.

    Attributes:
        engine: the opened engine (first open).
        snapshot: its observable state.
        state: the crash state.
        acked: marks acknowledged at the crash point.
        in_flight: the first mark after the crash point (the call that may
            have been running), or ``None``.
        candidates: the legal observable states (see :func:`~segwal.testing.logmodel.candidates_at`).
        path: the engine directory inside the materialised state.
    """

    engine: Any
    snapshot: Snapshot
    state: CrashState
    acked: tuple[Mark, ...]
    in_flight: Mark | None
    candidates: tuple[Snapshot, ...]
    path: Path


#: An invariant returns the problems it found (empty when the state is fine).
Invariant = Callable[[CheckContext], Iterable[str]]


def acknowledged_state(ctx: CheckContext) -> list[str]:
    """The engine shows the acknowledged state, or it plus the in-flight call."""
    if ctx.snapshot in ctx.candidates:
        return []
    expected = min(ctx.candidates, key=lambda c: len(c.diff(ctx.snapshot, limit=1000)))
    inflight = f"; in-flight call: {ctx.in_flight.label}" if ctx.in_flight is not None else ""
    return [f"state is neither the acknowledged one nor a legal successor{inflight}; closest legal state:"] + [
        "  " + d for d in expected.diff(ctx.snapshot)
    ]


def log_contiguous(ctx: CheckContext) -> list[str]:
    """first..last all present, in order, with ``entry()`` agreeing at the ends."""
    s, eng = ctx.snapshot, ctx.engine
    out: list[str] = []
    idx = [e[0] for e in s.entries]
    if idx != list(range(s.first_index, s.last_index + 1)):
        out.append(f"log not contiguous: first={s.first_index} last={s.last_index}, range read gave {short_repr(idx)}")
    if s.first_index > 1 and eng.entry(s.first_index - 1) is not None:
        out.append(f"entry({s.first_index - 1}) below first_index is not None")
    if eng.entry(s.last_index + 1) is not None:
        out.append(f"entry({s.last_index + 1}) past last_index is not None")
    for e in (s.entries[:1] + s.entries[-1:]) if s.entries else ():
        got = eng.entry(e[0])
        if got is None or as_entry(got) != e:
            out.append(f"entry({e[0]}) = {short_repr(got)} disagrees with the range read {short_repr(e)}")
    return out


def terms_non_decreasing(ctx: CheckContext) -> list[str]:
    """Terms never decrease along the log, nor below the purge boundary's term."""
    s = ctx.snapshot
    out: list[str] = []
    prev = s.purge_boundary[0] if s.purge_boundary else 0
    for i, t, _ in s.entries:
        if t < prev:
            out.append(f"term decreases at index {i}: {t} after {prev}")
            break
        prev = t
    return out


DEFAULT_INVARIANTS: tuple[Invariant, ...] = (acknowledged_state, log_contiguous, terms_non_decreasing)
