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
