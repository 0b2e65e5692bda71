"""Every Python example of the README runs as written, twice in a row, writing only to temporary directories."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)


def test_the_readme_has_its_examples() -> None:
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("n", range(len(BLOCKS)))
def test_readme_example_runs_twice(n: int, tmp_path: Path) -> None:
    block = BLOCKS[n]
    # a user who is not root can write only where they are given room: no fixed absolute paths
    assert not re.search(r"[\"'](/var|/tmp|/etc|/srv|/opt|/home)/", block), "use a temporary directory"
    is_test = "def test_" in block or "class Test" in block
    if is_test:
        script = tmp_path / f"test_readme_example_{n}.py"
        script.write_text(block)
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(script)]
    else:
        cmd = [sys.executable, "-c", block]
    for attempt in (1, 2):
        out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, f"run {attempt}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
