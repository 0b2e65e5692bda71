"""Invariant checking of crash states: open the engine on each, compare with the marks.

Strategy: the code under test marks every call that was acknowledged
(:meth:`RecordingFS.mark`, or :class:`TrackedEngine`, which does it for you).
For a crash at point ``k``, the marks made at or before ``k`` are acknowledged
and the first mark after ``k`` is the call that may have been in flight.  A
small reference model of the :class:`~segwal.engine.WalEngine` semantics
replays the marks and gives the *candidate* states the engine may show after
recovery: the acknowledged state, or that plus the in-flight call (each call
is atomic).  Marks made with ``durable=False`` (an engine in ``sync="flush"``
mode) may also be lost back to the last ``flush`` (or ``reset``) mark: a suffix
of the entry calls (persist, truncate) and, independently, a suffix of the
purges and a suffix of the key/value calls.

The default invariants then require, on every state:

1. ``acknowledged_state``: the engine's observable state (first/last index,
   purge boundary, every entry byte for byte, hard state, every key ever
   written, last applied) equals one of the candidates.  This covers "every
   acknowledged entry, hard state and key/value change is present" and
   "truncated and purged entries never come back": after an acknowledged
   truncate or purge, no candidate holds those entries.
2. ``log_contiguous``: the range read returns exactly ``first..last`` with no
   gap, ``entry()`` agrees at both ends and is ``None`` just outside them.
3. ``terms_non_decreasing``: along the log, and from the purge boundary.
4. reopening gives the same observable state (checked by :func:`check_state`
   itself when ``reopen=True``).

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

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segwal.fs import OsFile, OsFileSystem
from segwal.testing.crash import CrashSimulator, CrashState
from segwal.testing.recording import Mark, Recording, RecordingFS

__all__ = [
    "Snapshot",
    "LogModel",
    "CheckContext",
    "Invariant",
    "Failure",
    "CheckReport",
    "CrashCheckFailed",
    "TrackedEngine",
    "DEFAULT_INVARIANTS",
    "acknowledged_state",
    "log_contiguous",
    "terms_non_decreasing",
    "candidates_at",
    "snapshot_engine",
    "check_state",
    "check_recording",
    "ScratchFS",
    "scratch_root",
]

_ALIASES = {"persisted": "persist", "truncated": "truncate", "purged": "purge"}
_KV_LABELS = frozenset({"insert", "delete", "apply"})

LogIdTuple = tuple[int, int]
EntryTuple = tuple[int, int, bytes]


def _logid(x: Any) -> LogIdTuple | None:
    if x is None:
        return None
    if hasattr(x, "term") and not isinstance(x, tuple) or hasattr(x, "_fields"):
        return (int(x.term), int(x.index))
    term, index = x
    return (int(term), int(index))


def _entry(x: Any) -> EntryTuple:
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
                out.append(f"entry {i}: expected {_short(exp.get(i))}, found {_short(got.get(i))}")
            if len(bad) > limit:
                out.append(f"... {len(bad) - limit} more entries differ")
        if self.kv != other.kv:
            exp_kv, got_kv = dict(self.kv), dict(other.kv)
            bad_k = [k for k in exp_kv if exp_kv.get(k) != got_kv.get(k)]
            for k in bad_k[:limit]:
                out.append(f"key {k!r}: expected {_short(exp_kv.get(k))}, found {_short(got_kv.get(k))}")
        return out


def _short(x: Any) -> str:
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
            batch = [_entry(e) for e in f["entries"]]
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
            cut = _logid(f["cutoff"]) if "cutoff" in f else (int(f["term"]), int(f["index"]))
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
                self.applied = _logid(f["applied"])
        elif label == "reset":
            self.entries.clear()
            self.last = 0
            self.boundary = None
            self.kv.clear()
            self.applied = None
        elif label == "install_snapshot":
            cut = _logid(f["applied"])
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


def _watched_keys(marks: Sequence[Mark]) -> set[bytes]:
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
    keyset = set(keys) if keys is not None else _watched_keys(marks)
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
    entries = tuple(_entry(e) for e in engine.get_entries_range(first, last))
    la = getattr(engine, "last_applied", None)
    return Snapshot(
        first_index=first,
        last_index=last,
        purge_boundary=_logid(engine.purge_boundary()),
        entries=entries,
        hard_state=engine.load_hard_state(),
        kv=tuple((k, engine.get(k)) for k in sorted(keys)),
        last_applied=_logid(la()) if callable(la) else None,
    )


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
        candidates: the legal observable states (see :func:`candidates_at`).
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
        out.append(f"log not contiguous: first={s.first_index} last={s.last_index}, range read gave {_short(idx)}")
    if s.first_index > 1 and eng.entry(s.first_index - 1) is not None:
        out.append(f"entry({s.first_index - 1}) below first_index is not None")
    if eng.entry(s.last_index + 1) is not None:
        out.append(f"entry({s.last_index + 1}) past last_index is not None")
    for e in (s.entries[:1] + s.entries[-1:]) if s.entries else ():
        got = eng.entry(e[0])
        if got is None or _entry(got) != e:
            out.append(f"entry({e[0]}) = {_short(got)} disagrees with the range read {_short(e)}")
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


class ScratchFS(OsFileSystem):
    """The real file system without syncs, to open engines on throw-away crash states.

    A materialised crash state is scratch: its own durability does not matter
    (recovery idempotence is checked by reopening), and skipping fsync makes
    each check several times faster.
    """

    def open(self, path: str, *, create: bool = False, readonly: bool = False) -> OsFile:
        """Open like :class:`OsFileSystem`, returning a file whose syncs are no-ops."""
        f = super().open(path, create=create, readonly=readonly)
        return _ScratchFile(f.path, f.fd)

    def fsync_dir(self, path: str) -> None:
        """No-op."""


class _ScratchFile(OsFile):
    __slots__ = ()

    def fdatasync(self) -> None:
        """No-op."""

    def fsync(self) -> None:
        """No-op."""


def _default_open(path: str) -> Any:
    from segwal.engine import WalEngine

    return WalEngine(path, fs=ScratchFS())


def scratch_root() -> str | None:
    """A fast directory for crash states: ``/dev/shm`` when it is a writable
    directory (tmpfs on Linux), else ``None`` (the system temporary directory)."""
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None


def check_state(
    state: CrashState,
    recording: Recording,
    *,
    workdir: str | os.PathLike[str],
    open_engine: Callable[[str], Any] | None = None,
    engine_subdir: str = ".",
    invariants: Sequence[Invariant] = DEFAULT_INVARIANTS,
    reopen: bool = True,
) -> list[str]:
    """Materialise ``state`` into empty ``workdir``, open the engine and run the invariants.

    Returns the problems found (empty: the state is fine).  An exception from
    opening, reading or closing the engine is a problem, never raised.
    Complexity: one or two engine opens plus O(state bytes).
    """
    opener = open_engine or _default_open
    root = state.materialize(workdir)
    path = root / engine_subdir
    marks = recording.marks
    acked = tuple(m for m in marks if m.position <= state.point)
    later = [m for m in marks if m.position > state.point]
    keys = _watched_keys(marks)
    cands = tuple(candidates_at(marks, state.point, keys))
    problems: list[str] = []
    first: Snapshot | None = None
    for attempt in range(2 if reopen else 1):
        engine = None
        try:
            engine = opener(str(path))
            snap = snapshot_engine(engine, keys)
            if attempt == 0:
                first = snap
                ctx = CheckContext(
                    engine=engine,
                    snapshot=snap,
                    state=state,
                    acked=acked,
                    in_flight=later[0] if later else None,
                    candidates=cands,
                    path=path,
                )
                for inv in invariants:
                    problems.extend(f"{getattr(inv, '__name__', 'invariant')}: {p}" for p in inv(ctx))
            elif first is not None and snap != first:
                problems.append("reopen: second open differs from the first")
                problems.extend("  " + d for d in first.diff(snap))
        except Exception as e:  # noqa: BLE001 - any escape is a finding
            problems.append(f"open #{attempt + 1}: {type(e).__name__}: {e}")
            break
        finally:
            if engine is not None:
                try:
                    engine.close()
                except Exception as e:  # noqa: BLE001
                    problems.append(f"close #{attempt + 1}: {type(e).__name__}: {e}")
    return problems


@dataclass(frozen=True, slots=True, kw_only=True)
class Failure:
    """A crash state on which an invariant failed.

    Attributes:
        description: :meth:`CrashState.describe` (point, generator, variant, seed).
        point, generator: to regenerate it (``CrashSimulator.states(only_points=...)``).
        problems: what failed.
        kept: where the state directory was kept, if ``keep_failed`` was set.
    """

    description: str
    point: int
    generator: str
    problems: tuple[str, ...]
    kept: str | None = None

    def __str__(self) -> str:
        kept = f"\n    kept in {self.kept}" if self.kept else ""
        return f"{self.description}{kept}\n" + "\n".join("    " + p for p in self.problems)


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckReport:
    """The outcome of :func:`check_recording`.

    Attributes:
        ops: operations in the recording.
        marks: marks in the recording.
        points: crash points visited.
        generated: states generated (duplicates included).
        explored: unique states checked.
        per_generator: unique states per generator.
        failures: failed states (at most ``max_failures`` kept).
        failed: number of failed states.
        seconds: wall time.
    """

    ops: int
    marks: int
    points: int
    generated: int
    explored: int
    per_generator: Mapping[str, int]
    failures: tuple[Failure, ...]
    failed: int
    seconds: float

    @property
    def ok(self) -> bool:
        """No state failed."""
        return self.failed == 0

    @property
    def duplicates(self) -> int:
        """States skipped as duplicates."""
        return self.generated - self.explored

    def summary(self) -> str:
        """One line of counts (plus the failures, if any)."""
        rate = self.explored / self.seconds if self.seconds > 0 else 0.0
        gens = ", ".join(f"{g} {n}" for g, n in self.per_generator.items())
        line = (
            f"{self.explored} crash states explored ({self.duplicates} duplicates skipped) "
            f"over {self.points} crash points of {self.ops} ops in {self.seconds:.2f}s "
            f"({rate:.0f}/s) [{gens}]: {self.failed} failed"
        )
        if self.failures:
            line += "\n" + "\n".join(str(f) for f in self.failures)
            if self.failed > len(self.failures):
                line += f"\n... and {self.failed - len(self.failures)} more failed states"
        return line

    def raise_if_failed(self) -> None:
        """Raise :class:`CrashCheckFailed` with the summary if any state failed."""
        if not self.ok:
            raise CrashCheckFailed(self.summary(), report=self)


class CrashCheckFailed(AssertionError):
    """Some crash state broke an invariant; ``report`` holds the details."""

    def __init__(self, message: str, *, report: CheckReport) -> None:
        super().__init__(message)
        self.report = report


def check_recording(
    recording: Recording | RecordingFS,
    *,
    open_engine: Callable[[str], Any] | None = None,
    engine_subdir: str = ".",
    invariants: Sequence[Invariant] = DEFAULT_INVARIANTS,
    reopen: bool = True,
    simulator: CrashSimulator | None = None,
    keep_failed: str | os.PathLike[str] | None = None,
    max_failures: int = 10,
    stop_after_failures: int | None = None,
    workdir: str | os.PathLike[str] | None = None,
    **simulator_options: Any,
) -> CheckReport:
    """Generate the crash states of ``recording`` and check each one.

    Args:
        recording: a recording, or the RecordingFS to take one from.
        open_engine: ``path -> engine`` (default ``segwal.engine.WalEngine(path,
            fs=ScratchFS())``; pass ``fs=ScratchFS()`` to yours for speed).
        engine_subdir: the engine directory relative to the recorded root.
        invariants: checks run on each state (see :data:`DEFAULT_INVARIANTS`).
        reopen: also open a second time and require the same state.
        simulator: a configured :class:`CrashSimulator` (else one is built
            from ``simulator_options``: ``seed``, ``max_states``, ``per_point``,
            ``points``, ``generators``, ``sector_size``, ``min_point``).
        keep_failed: copy each failed state's directory under this directory.
        max_failures: failures kept in the report (all are counted).
        stop_after_failures: stop exploring after this many failed states.
        workdir: where states are materialised (default :func:`scratch_root`).

    Complexity: per unique state, one materialisation plus one or two opens.
    """
    rec = recording.recording() if isinstance(recording, RecordingFS) else recording
    sim = simulator or CrashSimulator(rec, **simulator_options)
    failures: list[Failure] = []
    failed = 0
    explored = 0
    t0 = time.perf_counter()
    base = workdir if workdir is not None else scratch_root()
    with tempfile.TemporaryDirectory(prefix="segwal-crash-", dir=base) as tmp:
        for n, state in enumerate(sim.states()):
            explored += 1
            work = Path(tmp) / f"s{n}"
            problems = check_state(
                state,
                rec,
                workdir=work,
                open_engine=open_engine,
                engine_subdir=engine_subdir,
                invariants=invariants,
                reopen=reopen,
            )
            if problems:
                failed += 1
                kept = None
                if keep_failed is not None:
                    dest = Path(keep_failed) / f"point{state.point}-{state.generator}-{state.digest[:10]}"
                    shutil.rmtree(dest, ignore_errors=True)
                    state.materialize(dest)  # the pristine state, before recovery touched it
                    kept = str(dest)
                if len(failures) < max_failures:
                    failures.append(
                        Failure(
                            description=state.describe(),
                            point=state.point,
                            generator=state.generator,
                            problems=tuple(problems),
                            kept=kept,
                        )
                    )
            shutil.rmtree(work, ignore_errors=True)
            if stop_after_failures is not None and failed >= stop_after_failures:
                break
    st = sim.stats
    return CheckReport(
        ops=len(rec.ops),
        marks=len(rec.marks),
        points=st.points,
        generated=st.generated,
        explored=explored,
        per_generator=dict(st.per_generator),
        failures=tuple(failures),
        failed=failed,
        seconds=time.perf_counter() - t0,
    )


class TrackedEngine:
    """Wraps an engine and marks each acknowledged call on a RecordingFS.

    Every mutating WalEngine method is forwarded; when it returns normally the
    matching mark (see the module docstring) is recorded.  Other attributes
    (reads, ``close``...) are forwarded untouched.  A call that raises is not
    marked: it was not acknowledged.

    ``durable``: whether log and key/value calls are durable on return
    (default: ``engine.is_write_durable()`` when the engine has it, else True).
    """

    def __init__(self, engine: Any, fs: RecordingFS, *, durable: bool | None = None) -> None:
        self._engine = engine
        self._fs = fs
        if durable is None:
            probe = getattr(engine, "is_write_durable", None)
            durable = bool(probe()) if callable(probe) else True
        self._durable = durable

    @property
    def engine(self) -> Any:
        """The wrapped engine."""
        return self._engine

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def __enter__(self) -> TrackedEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self._engine.close()

    def _mark(self, label: str, **facts: Any) -> None:
        if not self._durable:
            facts["durable"] = False
        self._fs.mark(label, **facts)

    def persist_entries(self, entries: Iterable[Any]) -> Any:
        """Forward; mark ``persist``."""
        batch = list(entries)
        out = self._engine.persist_entries(batch)
        self._mark("persist", entries=tuple(_entry(e) for e in batch))
        return out

    def truncate(self, from_index: int) -> Any:
        """Forward; mark ``truncate``."""
        out = self._engine.truncate(from_index)
        self._mark("truncate", from_index=from_index)
        return out

    def purge_logs(self, cutoff: Any) -> Any:
        """Forward; mark ``purge``."""
        out = self._engine.purge_logs(cutoff)
        term, index = _logid(cutoff)  # type: ignore[misc]
        self._mark("purge", term=term, index=index)
        return out

    def save_hard_state(self, hs: Any) -> Any:
        """Forward; mark ``hard_state`` (always durable on return)."""
        out = self._engine.save_hard_state(hs)
        self._fs.mark("hard_state", hard_state=hs)
        return out

    def insert(self, key: bytes, value: bytes) -> Any:
        """Forward; mark ``insert``."""
        out = self._engine.insert(key, value)
        self._mark("insert", key=bytes(key), value=bytes(value))
        return out

    def delete(self, key: bytes) -> Any:
        """Forward; mark ``delete``."""
        out = self._engine.delete(key)
        self._mark("delete", key=bytes(key))
        return out

    def apply(self, changes: Iterable[tuple[bytes, bytes | None]], applied: Any = None) -> Any:
        """Forward; mark ``apply``."""
        ch = [(bytes(k), None if v is None else bytes(v)) for k, v in changes]
        out = self._engine.apply(ch, applied)
        self._mark("apply", changes=tuple(ch), applied=_logid(applied))
        return out

    def reset(self) -> Any:
        """Forward; mark ``reset``."""
        out = self._engine.reset()
        self._mark("reset")
        return out

    def install_snapshot(self, src: Any) -> Any:
        """Forward; mark ``install_snapshot`` with the snapshot's content (always
        durable on return)."""
        from segwal.kv.snapshot import read_snapshot

        applied, _n, chunks = read_snapshot(OsFileSystem(), str(src))
        out = self._engine.install_snapshot(src)
        kv = tuple((k, v) for keys, values in chunks for k, v in zip(keys, values))
        self._fs.mark("install_snapshot", applied=(applied.term, applied.index), kv=kv)
        return out

    def flush(self) -> Any:
        """Forward; mark ``flush`` (everything before is durable)."""
        out = self._engine.flush()
        self._fs.mark("flush")
        return out

