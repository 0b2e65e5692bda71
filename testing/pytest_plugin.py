"""pytest plugin: the ``crash_fs`` fixture, for crash-testing code built on segwal.

Registered through the ``pytest11`` entry point ``segwal``, so installing segwal
makes the fixture available everywhere.  A test reads::

    from segwal.engine import Entry, HardState

    def test_survives_power_loss(crash_fs):
        with crash_fs.engine(segment_size=4096) as wal:   # WalEngine on a RecordingFS
            wal.persist_entries([Entry(1, 1, b"a"), Entry(2, 1, b"b")])
            wal.save_hard_state(HardState(1, None, 2))
            wal.truncate(2)
        crash_fs.check_all()      # every crash point, every generator; fails the test on a bad state

Each acknowledged call on the wrapped engine is marked automatically
(:class:`~segwal.testing.tracking.TrackedEngine`); code that drives the engine
itself can call ``crash_fs.mark(...)``.  ``check_all`` takes the invariants and
the simulator options (``max_states``, ``seed``, ``per_point``, ``points``,
``generators``...).  Command-line options: ``--segwal-crash-states N`` caps the
states per ``check_all`` call (default 5000), ``--segwal-crash-seed S`` changes
the seed, ``--segwal-keep-failed DIR`` keeps failing state directories.  The
number of states explored is printed in the terminal summary.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from segwal.testing.checker import CheckReport, ScratchFS, check_recording
from segwal.testing.invariants import DEFAULT_INVARIANTS, Invariant
from segwal.testing.recording import Mark, RecordingFS
from segwal.testing.tracking import TrackedEngine

__all__ = ["CrashHarness", "crash_fs"]

_REPORTS_KEY = pytest.StashKey[list[tuple[str, CheckReport]]]()


class CrashHarness:
    """A recorded scratch directory plus the checks to run on its crash states.

    Attributes:
        root: the recorded directory.
        path: the engine directory inside it (``root / "db"``), not yet created.
        fs: the :class:`RecordingFS`.
    """

    def __init__(
        self,
        root: Path,
        *,
        max_states: int | None = 5000,
        seed: int = 0,
        keep_failed: str | None = None,
        on_report: Callable[[CheckReport], None] | None = None,
    ) -> None:
        self.root = root
        self.fs = RecordingFS(root)
        self.path = root / "db"
        self._max_states = max_states
        self._seed = seed
        self._keep_failed = keep_failed
        self._on_report = on_report
        self._engine_kwargs: dict[str, Any] = {}

    def engine(self, **kwargs: Any) -> TrackedEngine:
        """Open ``segwal.engine.WalEngine(self.path, fs=self.fs, **kwargs)``, marking its calls.

        The same ``kwargs`` are used to open each crash state in :meth:`check_all`.
        """
        from segwal.engine import WalEngine

        self._engine_kwargs = dict(kwargs)
        return TrackedEngine(WalEngine(str(self.path), fs=self.fs, **kwargs), self.fs)

    def mark(self, label: str, **facts: Any) -> Mark:
        """Record an acknowledgement (see :mod:`segwal.testing.logmodel` for labels)."""
        return self.fs.mark(label, **facts)

    def check_all(
        self,
        open_engine: Callable[[str], Any] | None = None,
        invariants: Sequence[Invariant] = DEFAULT_INVARIANTS,
        *,
        extra_invariants: Sequence[Invariant] = (),
        raise_on_failure: bool = True,
        **options: Any,
    ) -> CheckReport:
        """Check every crash state of what was recorded so far.

        Args:
            open_engine: ``path -> engine``; default ``WalEngine(path,
                fs=ScratchFS(), **kwargs given to engine())``.
            invariants: replaces the default invariants.
            extra_invariants: added to ``invariants``.
            raise_on_failure: fail the test (``CrashCheckFailed``) when a state fails.
            options: for :class:`~segwal.testing.crash.CrashSimulator` and
                :func:`~segwal.testing.checker.check_recording` (``max_states``,
                ``seed``, ``per_point``, ``points``, ``generators``, ``reopen``...).

        Returns the :class:`CheckReport`.
        """
        if open_engine is None:
            kwargs = dict(self._engine_kwargs)

            def open_engine(path: str) -> Any:
                from segwal.engine import WalEngine

                return WalEngine(path, fs=ScratchFS(), **kwargs)

        options.setdefault("max_states", self._max_states)
        options.setdefault("seed", self._seed)
        if self._keep_failed is not None:
            options.setdefault("keep_failed", self._keep_failed)
        engine_subdir = os.path.relpath(self.path, self.root)
        report = check_recording(
            self.fs,
            open_engine=open_engine,
            engine_subdir=options.pop("engine_subdir", engine_subdir),
            invariants=tuple(invariants) + tuple(extra_invariants),
            **options,
        )
        if self._on_report is not None:
            self._on_report(report)
        if raise_on_failure:
            report.raise_if_failed()
        return report


def pytest_addoption(parser: pytest.Parser) -> None:
    """Options of the crash_fs fixture."""
    group = parser.getgroup("segwal", "segwal crash simulation")
    group.addoption("--segwal-crash-states", type=int, default=5000, help="max crash states per check_all (0: no cap)")
    group.addoption("--segwal-crash-seed", type=int, default=0, help="seed of the crash-state sampler")
    group.addoption("--segwal-keep-failed", default=None, help="keep failing crash-state directories here")


def pytest_configure(config: pytest.Config) -> None:
    """Prepare the list of reports printed in the summary."""
    config.stash[_REPORTS_KEY] = []


@pytest.fixture
def crash_fs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CrashHarness]:
    """A :class:`CrashHarness` over a fresh recorded directory."""
    cfg = request.config
    cap = cfg.getoption("--segwal-crash-states", 5000)
    reports = cfg.stash.get(_REPORTS_KEY, [])

    harness = CrashHarness(
        tmp_path / "recorded",
        max_states=cap or None,
        seed=cfg.getoption("--segwal-crash-seed", 0),
        keep_failed=cfg.getoption("--segwal-keep-failed", None),
        on_report=lambda r: reports.append((request.node.nodeid, r)),
    )
    yield harness


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """Print how many crash states each test explored."""
    reports = config.stash.get(_REPORTS_KEY, [])
    if not reports:
        return
    terminalreporter.section("segwal crash simulation")
    total = 0
    for nodeid, rep in reports:
        total += rep.explored
        terminalreporter.write_line(f"{nodeid}: {rep.summary().splitlines()[0]}")
    terminalreporter.write_line(f"total: {total} crash states explored")
