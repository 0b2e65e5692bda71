"""`segwal bench --quick` runs end to end and writes its JSON (a smoke test: no timing assertions)."""

from __future__ import annotations

import json
from pathlib import Path

from segwal.cli import main


def test_bench_quick_runs_and_records_segwal(tmp_path: Path) -> None:
    status = main(
        ["bench", "--quick", "--repeat", "1", "--out", str(tmp_path), "--no-plots", "--peers", "segwal,raw,sqlite"]
    )
    assert status == 0
    (run,) = tmp_path.glob("bench-quick-*.json")
    data = json.loads(run.read_text())
    assert "segwal" in json.dumps(data["results"] if "results" in data else data)


def test_raftlog_bench_quick_runs_and_records_both_strategies(tmp_path: Path) -> None:
    """The group-commit benchmark runs end to end: every run makes all its appends
    durable (checked inside), and MemFirst batches while DiskFirst writes singly."""
    from segwal.bench import raftlog_bench

    out = tmp_path / "raftlog.json"
    assert raftlog_bench.main(["--quick", "--runs", "1", "--dir", str(tmp_path), "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    for mode in ("threads", "asyncio"):
        assert data["median"][f"{mode}/MemFirst"] > 0 and data["median"][f"{mode}/DiskFirst"] > 0
        assert data["entries_per_write"][f"{mode}/DiskFirst"] == [1.0]
        assert data["entries_per_write"][f"{mode}/MemFirst"][0] > 1.0
    assert data["thread_wake_us"] > 0


def test_cluster_bench_quick_runs_both_segwal_modes(tmp_path: Path) -> None:
    """`segwal bench --cluster` runs a 3-node PySyncObj cluster end to end (no timing assertions)."""
    import pytest

    pytest.importorskip("pysyncobj")
    status = main(["bench", "--cluster", "--quick", "--commands", "300", "--journals", "segwal,segwal-flush",
                   "--out", str(tmp_path)])
    assert status == 0
    (run,) = tmp_path.glob("cluster-quick-*.json")
    data = json.loads(run.read_text())
    assert set(data["commits_per_s"]) == {"segwal", "segwal-flush"}
    assert all(r["ok"] == 300 and r["finished"] for r in data["raw"])
