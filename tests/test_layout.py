"""The tree keeps its shape: imports only go down a level, no module passes its line limit."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from layout_rules import check_docstrings, check_imports, check_line_limits, level_of, library_modules

ROOT = Path(__file__).resolve().parents[1]


def test_every_import_goes_down() -> None:
    bad = check_imports(ROOT)
    assert not bad, "imports against the layout:\n" + "\n".join(map(str, bad))


def test_no_module_passes_its_line_limit() -> None:
    bad = check_line_limits(ROOT)
    assert not bad, "modules too long (split by responsibility):\n" + "\n".join(map(str, bad))


def test_every_library_module_says_what_it_is_for() -> None:
    bad = check_docstrings(ROOT)
    assert not bad, "\n".join(map(str, bad))


def test_every_package_folder_is_installed() -> None:
    """A folder with Python modules that pyproject does not list would be missing from a wheel."""
    listed = {p.resolve() for _, p in library_modules(ROOT)}
    for folder in ("segwal", "wal", "index", "kv", "engine", "storage", "raft", "testing", "integrations", "bench",
                   "tools"):
        for f in (ROOT / folder).rglob("*.py"):
            if "__pycache__" not in f.parts:
                assert f.resolve() in listed, f"{f.relative_to(ROOT)} is not in a package listed in pyproject.toml"


def test_every_module_has_a_level() -> None:
    for name, path in library_modules(ROOT):
        assert level_of(name) is not None, f"{name} ({path}) has no level"


# -- the checks catch what they guard against ---------------------------------------


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the library's folders and pyproject.toml, to break on purpose."""
    tmp_path = tmp_path_factory.mktemp("tree")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    for folder in ("segwal", "wal", "index", "kv", "engine", "storage", "raft", "testing", "integrations", "bench",
                   "tools", "tests"):
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__", "results"))
    return tmp_path


@pytest.fixture
def tree(pristine: Path) -> Iterator[Path]:
    """The copy, with every file a test changed put back afterwards."""
    saved = {p: p.read_bytes() for p in pristine.rglob("*.py")}
    yield pristine
    for p, data in saved.items():
        p.write_bytes(data)


@pytest.mark.parametrize(
    "folder, module, line",
    [
        ("wal", "format.py", "from segwal.engine import WalEngine\n"),                # module level, upward
        ("index", "format.py", "def f():\n    import segwal.kv.store\n"),            # sideways, function-local
        ("segwal", "types.py", "if TYPE_CHECKING:\n    from segwal.wal import format\n"),  # TYPE_CHECKING
        ("engine", "manifest.py", "import importlib\nimportlib.import_module('segwal.raft.log')\n"),
        ("kv", "snapshot.py", "__import__('segwal.storage')\n"),
        ("tools", "verify.py", "from segwal import cli\n"),                           # inside level 7, out of order
        ("raft", "__init__.py", "from ..testing import crash\n"),                     # relative
    ],
)
def test_an_upward_import_is_caught(tree: Path, folder: str, module: str, line: str) -> None:
    assert check_imports(tree) == []
    with (tree / folder / module).open("a") as f:
        f.write("\n" + line)
    bad = check_imports(tree)
    assert len(bad) == 1 and bad[0].path == f"{folder}/{module}", bad


def test_a_long_module_is_caught(tree: Path) -> None:
    assert check_line_limits(tree) == []
    (tree / "wal" / "format.py").write_text((tree / "wal" / "format.py").read_text() + "#\n" * 600)
    (tree / "tests" / "test_format.py").write_text("#\n" * 801)
    assert {v.path for v in check_line_limits(tree)} == {"wal/format.py", "tests/test_format.py"}
