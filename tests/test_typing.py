"""mypy --strict accepts WalEngine (and the reference engines) as a StorageEngine."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import segwal

pytest.importorskip("mypy")

# The sub-packages installed from sibling folders of a source checkout (pyproject's package-dir).
LAYERS = ("wal", "index", "kv", "engine", "storage", "raft", "testing", "integrations", "bench", "tools")


def package_root(tmp_path: Path) -> Path:
    """A directory holding ``segwal/`` as mypy must see it.

    An installed copy already has its layers inside ``segwal/``; a source checkout
    maps them from sibling folders (pyproject's package-dir), so lay out links.
    """
    pkg = Path(segwal.__file__).parent
    if (pkg / "engine").is_dir():
        return pkg.parent
    repo = pkg.parent
    farm = tmp_path / "src" / "segwal"
    farm.mkdir(parents=True)
    for item in pkg.iterdir():
        if item.name != "__pycache__":
            (farm / item.name).symlink_to(item)
    for layer in LAYERS:
        if (repo / layer).is_dir():
            (farm / layer).symlink_to(repo / layer)
    return farm.parent


def test_engines_satisfy_the_storage_engine_protocol(tmp_path: Path) -> None:
    src = tmp_path / "check_protocol.py"
    src.write_text(
        textwrap.dedent(
            """
            from segwal.engine import WalEngine
            from segwal.storage.memory import InMemoryEngine
            from segwal.types import StorageEngine
            from segwal.storage.rocksdb import RocksDBEngine
            from segwal.storage.sqlite import SqliteEngine
            from segwal.storage.objectstore import ObjectStoreEngine

            def use(engine: StorageEngine) -> None:
                engine.last_index()

            use(WalEngine("/tmp/never-opened"))
            use(InMemoryEngine())
            use(SqliteEngine("/tmp/never-opened"))
            use(RocksDBEngine("/tmp/never-opened"))
            use(ObjectStoreEngine(object()))
            """
        )
    )
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", "--cache-dir", str(tmp_path / ".mypy"),
         "--follow-imports=silent", str(src)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "MYPYPATH": str(package_root(tmp_path))},
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_library_passes_mypy_strict(tmp_path: Path) -> None:
    """Every module of the library (not the benchmark) type-checks under --strict."""
    modules = ["-m", "segwal.errors", "-m", "segwal.fs", "-m", "segwal.types", "-m", "segwal.cli", "-m", "segwal.demo"]
    packages = [arg for layer in LAYERS if layer != "bench" for arg in ("-p", f"segwal.{layer}")]
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", "--cache-dir", str(tmp_path / ".mypy"),
         "--follow-imports=silent", "--ignore-missing-imports", *modules, *packages],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "MYPYPATH": str(package_root(tmp_path))},
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stdout + out.stderr
