"""``segwal crashtest``: the built-in workload under the crash simulator."""

from __future__ import annotations

from typing import Any

import pytest

from segwal.cli import main
from segwal.tools.crashtest import SEGMENT_SIZE, record_workload, run_crashtest


def test_cli_crashtest_small_budget_passes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["crashtest", "--states", "40", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "checking 40" in out
    assert "40 crash states explored" in out and ": 0 failed" in out
    for gen in ("process_kill", "torn", "dir_ops"):
        assert gen in out


def test_budget_is_spread_over_the_whole_workload() -> None:
    lines: list[str] = []
    assert run_crashtest(25, 0, out=lines.append) == 0
    counts = {ln.split()[0]: int(ln.split()[1]) for ln in lines if "checked of" in ln}
    assert sum(counts.values()) == 25
    assert len([g for g, n in counts.items() if n]) >= 2  # a sample, not the first 25 states


def test_workload_covers_every_kind_of_call(tmp_path: Any) -> None:
    rec = record_workload(tmp_path / "rec", seed=0)
    labels = {m.label for m in rec.marks}
    assert {"persist", "truncate", "purge", "hard_state", "insert", "delete", "apply"} <= labels
    renames = [op for op in rec.ops if op.kind.value == "rename"]
    segments = {op.path for op in rec.ops if op.kind.value == "create" and op.path.endswith(".wal")}
    assert renames and len(segments) >= 4  # manifest replaced, segments rotated


def test_a_broken_engine_fails_the_crashtest() -> None:
    from segwal.engine import WalEngine
    from segwal.testing import ScratchFS

    class LosesItsLastEntry:
        """Drops the newest entry on every open: the checker must notice."""

        def __init__(self, path: str) -> None:
            self._e = WalEngine(path, fs=ScratchFS(), segment_size=SEGMENT_SIZE)
            p = self._e.purge_boundary()
            if self._e.last_index() > (p.index if p else 0):
                self._e.truncate(self._e.last_index())

        def __getattr__(self, name: str) -> Any:
            return getattr(self._e, name)

    lines: list[str] = []
    assert run_crashtest(30, 1, out=lines.append, open_engine=LosesItsLastEntry) == 1
    assert any(ln.startswith("FAILED crash point") for ln in lines)
    assert any("acknowledged_state" in ln for ln in lines)
