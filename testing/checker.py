"""Invariant checking of crash states: open the engine on each, compare with the marks.

Strategy: :func:`check_state` materialises one crash state
(:mod:`segwal.testing.crash`), opens the engine on it (on a :class:`ScratchFS`,
the real file system without syncs), reads its observable state and runs the
invariants (:mod:`segwal.testing.invariants`) against the legal candidates of
the reference model (:mod:`segwal.testing.logmodel`) built from the marks the
code under test made (by hand or with :class:`~segwal.testing.tracking.TrackedEngine`);
then it reopens the engine and requires the same state.
:func:`check_recording` does that for every state of a recording and returns a
:class:`CheckReport`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segwal.fs import OsFile, OsFileSystem
from segwal.testing.crash import CrashSimulator, CrashState
from segwal.testing.invariants import DEFAULT_INVARIANTS, CheckContext, Invariant
from segwal.testing.logmodel import Snapshot, candidates_at, snapshot_engine, watched_keys
from segwal.testing.recording import Recording, RecordingFS

__all__ = [
    "Failure",
    "CheckReport",
    "CrashCheckFailed",
    "check_state",
    "check_recording",
    "ScratchFS",
    "scratch_root",
]


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
    keys = watched_keys(marks)
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
