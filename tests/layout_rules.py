"""The repository's layout rules as pure functions: line limits and imports that only go down.

Levels (docs/design.md): a module may import modules of its own package at its
own level, or modules of lower levels.  Level 7 is ordered: integrations, then
bench, then tools, then the command line (``segwal.cli``, ``segwal.demo``,
``segwal.__main__``); each may import only those before it.
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

LIBRARY_LIMIT = 600
TEST_LIMIT = 800

#: package -> (level, group).  Same level and same group may import each other.
PACKAGE_LEVELS: dict[str, tuple[float, str]] = {
    "segwal.wal": (1, "wal"),
    "segwal.index": (2, "index"),
    "segwal.kv": (2, "kv"),
    "segwal.engine": (3, "engine"),
    "segwal.storage": (4, "storage"),
    "segwal.raft": (5, "raft"),
    "segwal.testing": (6, "testing"),
    "segwal.integrations": (7.0, "integrations"),
    "segwal.bench": (7.1, "bench"),
    "segwal.tools": (7.2, "tools"),
}
#: modules of the ``segwal/`` folder itself: level 0, or the command line at 7.3.
TOP_MODULES: dict[str, tuple[float, str]] = {
    "segwal": (0, "segwal"),
    "segwal.errors": (0, "segwal"),
    "segwal.fs": (0, "segwal"),
    "segwal.types": (0, "segwal"),
    "segwal.cli": (7.3, "cli"),
    "segwal.demo": (7.3, "cli"),
    "segwal.__main__": (7.3, "cli"),
}


@dataclass(frozen=True)
class Violation:
    """One broken rule: where, and what."""

    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


def package_dirs(root: Path) -> dict[str, Path]:
    """Package name -> folder, from pyproject.toml's ``package-dir``."""
    conf = tomllib.loads((root / "pyproject.toml").read_text())
    return {name: root / rel for name, rel in conf["tool"]["setuptools"]["package-dir"].items()}


def library_modules(root: Path) -> Iterator[tuple[str, Path]]:
    """(dotted module name, file) for every module of every listed package."""
    dirs = package_dirs(root)
    for pkg, folder in sorted(dirs.items()):
        for f in sorted(folder.glob("*.py")):
            name = pkg if f.stem == "__init__" else f"{pkg}.{f.stem}"
            yield name, f


def level_of(module: str) -> tuple[float, str] | None:
    """The (level, group) a dotted ``segwal`` module belongs to, or None if it has no place."""
    if module in TOP_MODULES:
        return TOP_MODULES[module]
    best = None
    for pkg, lv in PACKAGE_LEVELS.items():
        if (module == pkg or module.startswith(pkg + ".")) and (best is None or len(pkg) > len(best[0])):
            best = (pkg, lv)
    return None if best is None else best[1]


def _resolve_from(module: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    parts = module.split(".")
    base = parts if is_pkg else parts[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imported_modules(source: str, module: str, is_pkg: bool, known: set[str]) -> Iterator[tuple[int, str]]:
    """Every ``segwal`` module ``source`` imports, with its line: module-level, function-local,
    under ``TYPE_CHECKING``, and string arguments of ``importlib.import_module``/``__import__``."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            target = _resolve_from(module, is_pkg, node)
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                yield node.lineno, sub if sub in known else target
        elif isinstance(node, ast.Call) and node.args:
            fn = node.func
            name = fn.attr if isinstance(fn, ast.Attribute) else fn.id if isinstance(fn, ast.Name) else ""
            arg = node.args[0]
            if name in ("import_module", "__import__") and isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                yield node.lineno, arg.value


def check_imports(root: Path) -> list[Violation]:
    """Every import of a ``segwal`` module that runs upward, sideways, or to a module with no level."""
    mods = list(library_modules(root))
    known = {name for name, _ in mods}
    out: list[Violation] = []
    for name, path in mods:
        rel = str(path.relative_to(root))
        mine = level_of(name)
        if mine is None:
            out.append(Violation(rel, 1, f"module {name} has no level (add its package to the layout)"))
            continue
        for line, target in imported_modules(path.read_text(), name, path.stem == "__init__", known):
            if target != "segwal" and not target.startswith("segwal."):
                continue
            theirs = level_of(target)
            if theirs is None:
                out.append(Violation(rel, line, f"imports {target}, which has no level"))
            elif theirs[0] > mine[0] or (theirs[0] == mine[0] and theirs[1] != mine[1]):
                out.append(Violation(rel, line, f"{name} (level {mine[0]}, {mine[1]}) imports {target} "
                                                f"(level {theirs[0]}, {theirs[1]})"))
    return out


def check_line_limits(root: Path) -> list[Violation]:
    """Library and benchmark modules over 600 lines, test modules over 800."""
    out = []
    files = [(p, LIBRARY_LIMIT) for _, p in library_modules(root)]
    files += [(p, TEST_LIMIT) for p in sorted((root / "tests").glob("*.py"))]
    for path, limit in files:
        n = len(path.read_text().splitlines())
        if n > limit:
            out.append(Violation(str(path.relative_to(root)), n, f"{n} lines, over the limit of {limit}"))
    return out


def check_docstrings(root: Path) -> list[Violation]:
    """Library modules that do not open with a docstring (whose first sentence names their job)."""
    out = []
    for _, path in library_modules(root):
        doc = ast.get_docstring(ast.parse(path.read_text()))
        if not doc or not doc.strip():
            out.append(Violation(str(path.relative_to(root)), 1, "no module docstring"))
    return out
