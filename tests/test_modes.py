"""Who may read what segwal writes: owner-only by default (0o600 files, 0o700 directories), widened on request."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

import segwal.fs
from segwal.engine import Entry, HardState, LogId, VotedFor, WalEngine
from segwal.fs import OsFileSystem


def modes(root: Path) -> dict[str, int]:
    """Permission bits of ``root`` and of everything under it, by relative path."""
    out = {".": stat.S_IMODE(root.stat().st_mode)}
    for p in root.rglob("*"):
        out[str(p.relative_to(root))] = stat.S_IMODE(p.stat().st_mode)
    return out


def exercise(path: Path, snap: Path, **kw: int) -> None:
    """Create every kind of file: segments and indexes (several, sealed), MANIFEST,
    HARDSTATE, LOCK, key/value files, a snapshot; then reopen."""
    with WalEngine(str(path), segment_size=1024, **kw) as eng:
        for i in range(1, 60, 4):
            eng.persist_entries([Entry(j, 1, b"cmd %d" % j * 8) for j in range(i, i + 4)])
        eng.save_hard_state(HardState(1, VotedFor(2, 1), 10))
        eng.apply([(b"k%d" % i, b"v" * 300) for i in range(12)], applied=LogId(1, 10))
        eng.snapshot(str(snap))
        eng.install_snapshot(str(snap))
        eng.persist_entries([Entry(11, 1, b"after")])
    with WalEngine(str(path), **kw) as eng:
        assert eng.get(b"k3") == b"v" * 300


@pytest.fixture
def umask_zero():  # type: ignore[no-untyped-def]
    old = os.umask(0)  # show the modes segwal asks for, not the umask's narrowing
    yield
    os.umask(old)


def test_everything_created_is_owner_only_by_default(tmp_path: Path, umask_zero: None) -> None:
    seen_tmp: list[int] = []
    real_replace = segwal.fs.replace_file

    # catch the temporary file of an atomic replace while it exists
    orig_rename = OsFileSystem.rename

    def rename(self: OsFileSystem, src: str, dst: str) -> None:
        seen_tmp.append(stat.S_IMODE(os.stat(src).st_mode))
        orig_rename(self, src, dst)

    OsFileSystem.rename = rename  # type: ignore[method-assign]
    (tmp_path / "snaps").mkdir()
    try:
        exercise(tmp_path / "a" / "node", tmp_path / "snaps" / "node.snap")
    finally:
        OsFileSystem.rename = orig_rename  # type: ignore[method-assign]
    assert real_replace is segwal.fs.replace_file
    got = modes(tmp_path / "a")
    kinds = {".wal", ".idx", ".log", ".merged"}
    assert any(k.endswith(".wal") for k in got) and any(k.endswith(".idx") for k in got)
    assert {"node/MANIFEST", "node/HARDSTATE", "node/LOCK", "node/kv"} <= set(got)
    for name, mode in got.items():
        want = 0o700 if (tmp_path / "a" / name).is_dir() else 0o600
        assert mode == want, f"{name}: {oct(mode)}, expected {oct(want)}"
    assert any(os.path.splitext(k)[1] in kinds for k in got)
    assert stat.S_IMODE((tmp_path / "snaps" / "node.snap").stat().st_mode) == 0o600
    assert seen_tmp and all(m == 0o600 for m in seen_tmp), [oct(m) for m in seen_tmp]


def test_modes_can_be_widened(tmp_path: Path, umask_zero: None) -> None:
    exercise(tmp_path / "node", tmp_path / "node.snap", file_mode=0o640, dir_mode=0o750)
    for name, mode in modes(tmp_path / "node").items():
        want = 0o750 if (tmp_path / "node" / name).is_dir() else 0o640
        assert mode == want, f"{name}: {oct(mode)}, expected {oct(want)}"


@pytest.mark.parametrize("kw, word", [
    ({"file_mode": 0o400}, "file_mode"),       # the owner could not write its own log
    ({"dir_mode": 0o600}, "dir_mode"),
    ({"file_mode": 0o1777}, "file_mode"),
    ({"file_mode": "0o600"}, "file_mode"),
])
def test_bad_modes_are_refused_before_anything_is_created(tmp_path: Path, kw: dict[str, object], word: str) -> None:
    with pytest.raises(ValueError, match=word):
        WalEngine(str(tmp_path / "node"), **kw)  # type: ignore[arg-type]
    assert not (tmp_path / "node").exists()
