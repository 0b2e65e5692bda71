"""A real full disk: a size-limited tmpfs filled while the engine appends, applies, snapshots and saves.

Each call that meets ENOSPC raises :class:`OutOfSpaceError` and changes
nothing; everything acknowledged before it survives a reopen; once space is
freed the same engine object carries on.  Needs root to mount a tmpfs: under
``CI=true`` a failed mount is a test failure, elsewhere a skip.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from segwal.engine import Entry, HardState, LogId, OutOfSpaceError, VotedFor, WalEngine

MOUNT_SIZE = "2m"


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs mounted for this test."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    why = ""
    if os.geteuid() != 0:
        why = "mounting a tmpfs needs root"
    else:
        out = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={MOUNT_SIZE}", "tmpfs", str(mnt)],
                             capture_output=True, text=True)
        why = out.stderr.strip() if out.returncode else ""
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"cannot mount a size-limited tmpfs under CI: {why}")
        pytest.skip(why)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(disk: Path) -> Path:
    """Fill ``disk`` to the last byte with one file; returns it (delete it to free the space)."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (1 << 16, 1 << 12, 1 << 9, 1):
            while True:
                try:
                    os.write(fd, b"\xff" * size)
                except OSError as e:
                    assert e.errno == errno.ENOSPC
                    break
    finally:
        os.close(fd)
    return filler


def state(eng: WalEngine, keys: list[bytes]) -> tuple[object, ...]:
    """Everything a caller can observe."""
    first, last = eng.first_index(), eng.last_index()
    return (first, last, eng.get_entries_range(first, last), eng.load_hard_state(), eng.last_applied(),
            [eng.get(k) for k in keys])


def until_full(call: Callable[[int], None], limit: int = 10_000) -> int:
    """Make ``call(i)`` for i = 0, 1, ... until it raises OutOfSpaceError; returns that i."""
    for i in range(limit):
        try:
            call(i)
        except OutOfSpaceError:
            return i
    raise AssertionError("the disk never filled")


def open_engine(disk: Path) -> WalEngine:
    return WalEngine(str(disk / "node"), segment_size=64 << 10)


def test_appends_on_a_full_disk(tiny_disk: Path) -> None:
    eng = open_engine(tiny_disk)
    eng.save_hard_state(HardState(1, VotedFor(2, 1), 0))
    filler = fill(tiny_disk)
    payload = b"p" * 3000
    acked: list[Entry] = []

    def append(i: int) -> None:
        batch = [Entry(len(acked) + 1 + j, 1, payload) for j in range(4)]
        eng.persist_entries(batch)
        acked.extend(batch)

    n = until_full(append)
    before = state(eng, [])
    with pytest.raises(OutOfSpaceError):
        append(n)
    assert state(eng, []) == before  # the failed call changed nothing
    os.unlink(filler)
    for i in range(3):  # the same engine carries on
        append(n + 1 + i)
    eng.close()
    with open_engine(tiny_disk) as again:
        assert again.get_entries_range(1, len(acked)) == acked
        assert again.last_index() == len(acked)


def test_key_value_applies_on_a_full_disk(tiny_disk: Path) -> None:
    eng = open_engine(tiny_disk)
    eng.persist_entries([Entry(i, 1, b"x") for i in range(1, 101)])
    filler = fill(tiny_disk)
    done: dict[bytes, bytes] = {}
    applied = [0]

    def apply(i: int) -> None:
        changes = [(b"k%05d" % (i * 8 + j), b"v" * 2000) for j in range(8)]
        eng.apply(changes, applied=LogId(1, min(i + 1, 100)))
        done.update(changes)
        applied[0] = min(i + 1, 100)

    n = until_full(apply)
    keys = sorted(done) + [b"k%05d" % (n * 8)]
    before = state(eng, keys)
    with pytest.raises(OutOfSpaceError):
        apply(n)
    assert state(eng, keys) == before
    os.unlink(filler)
    apply(n)
    apply(n + 1)
    eng.close()
    with open_engine(tiny_disk) as again:
        assert all(again.get(k) == v for k, v in done.items())
        assert again.last_applied() == LogId(1, applied[0])


def test_snapshot_and_install_on_a_full_disk(tiny_disk: Path) -> None:
    eng = open_engine(tiny_disk)
    eng.persist_entries([Entry(1, 1, b"a"), Entry(2, 1, b"b")])
    eng.apply([(b"k%03d" % i, b"v" * 1500) for i in range(200)], applied=LogId(1, 2))
    filler = fill(tiny_disk)
    dest = tiny_disk / "node.snap"
    keys = [b"k%03d" % i for i in range(200)]
    before = state(eng, keys)
    with pytest.raises(OutOfSpaceError):
        eng.snapshot(str(dest))
    assert not dest.exists() and not any(p.name.startswith("node.snap") for p in tiny_disk.iterdir())
    assert state(eng, keys) == before
    os.unlink(filler)
    assert eng.snapshot(str(dest)) == LogId(1, 2)
    eng.apply([(b"extra", b"1")], applied=LogId(1, 2))
    filler = fill(tiny_disk)
    before = state(eng, keys + [b"extra"])
    with pytest.raises(OutOfSpaceError):
        eng.install_snapshot(str(dest))
    assert state(eng, keys + [b"extra"]) == before
    os.unlink(filler)
    assert eng.install_snapshot(str(dest)) == LogId(1, 2)
    assert eng.get(b"extra") is None and eng.get(b"k007") == b"v" * 1500
    eng.close()
    with open_engine(tiny_disk) as again:
        assert again.get(b"k199") == b"v" * 1500 and again.last_applied() == LogId(1, 2)


def test_hard_state_save_on_a_full_disk(tiny_disk: Path) -> None:
    eng = open_engine(tiny_disk)
    eng.persist_entries([Entry(1, 1, b"a")])
    eng.save_hard_state(HardState(1, VotedFor(3, 1), 1))
    filler = fill(tiny_disk)
    with pytest.raises(OutOfSpaceError):
        eng.save_hard_state(HardState(2, VotedFor(4, 2), 1))
    assert eng.load_hard_state() == HardState(1, VotedFor(3, 1), 1)
    assert not any(p.name.endswith(".tmp") for p in (tiny_disk / "node").iterdir())
    os.unlink(filler)
    eng.save_hard_state(HardState(2, VotedFor(4, 2), 1))
    eng.close()
    with open_engine(tiny_disk) as again:
        assert again.load_hard_state() == HardState(2, VotedFor(4, 2), 1)
