"""Background preallocation: zeros ahead of the writer, trimmed at seal and close,
and a failed background sync fails the writer's next sync (fsyncgate)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from segwal.engine import EnginePoisonedError, Entry, SyncError, WalEngine
from segwal.fs import OsFileSystem
from segwal.testing import FaultyFS


def wait_for(cond: object, timeout: float = 20.0) -> None:
    """Poll ``cond()`` until true (bounded): the preallocator runs on its own thread."""
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


def tail_file(e: WalEngine) -> object:
    return e._log._segs[-1].file  # noqa: SLF001 - white-box check of the tail's state


def test_zeros_ahead_then_exact_length_after_close(tmp_path: Path) -> None:
    d = tmp_path / "e"
    e = WalEngine(d, segment_size=1 << 20, preallocate=True)
    e.persist_entries([Entry(1, 1, b"x" * 100)])
    f = tail_file(e)
    wait_for(lambda: f.zeroed >= f.end + 256 << 10)  # type: ignore[attr-defined]
    seg = sorted(d.glob("*.wal"))[-1]
    assert seg.stat().st_size > f.end  # type: ignore[attr-defined]
    for i in range(2, 200):
        e.persist_entries([Entry(i, 1, b"y" * 100)])
    end = f.end  # type: ignore[attr-defined]
    e.close()
    assert seg.stat().st_size == end  # trimmed: a reopen scans nothing past the end
    with WalEngine(d, segment_size=1 << 20) as r:
        assert r.last_index() == 199 and r.entry(150) == Entry(150, 1, b"y" * 100)


def test_sealed_segments_have_their_exact_length(tmp_path: Path) -> None:
    d = tmp_path / "e"
    with WalEngine(d, segment_size=64 << 10, preallocate=True) as e:
        for i in range(1, 400):
            e.persist_entries([Entry(i, 1, b"z" * 500)])
        sealed = [s for s in e.segments() if s.sealed]
        assert sealed
        for s in sealed:
            assert Path(s.path).stat().st_size == s.size <= 64 << 10


def test_failed_background_sync_fails_the_writers_next_sync(tmp_path: Path) -> None:
    fs = FaultyFS(OsFileSystem())
    d = tmp_path / "e"
    e = WalEngine(d, segment_size=1 << 20, fs=fs, preallocate=True)
    e.persist_entries([Entry(1, 1, b"a")])
    f = tail_file(e)
    wait_for(lambda: f.zeroed >= f.end + 1024 * 1024 - 4096 or f.zeroed >= (1 << 20))  # type: ignore[attr-defined]
    fs.fail("sync", path_contains=".wal")  # the next fdatasync of the segment fails...
    e._prealloc.wake()  # noqa: SLF001
    big = [Entry(i, 1, b"b" * 4000) for i in range(2, 300)]
    # ...whichever thread hits it: the writer's own sync fails, or the writer's next
    # sync reports the background failure.  Either way the batch is not acknowledged.
    with pytest.raises(SyncError):
        e.persist_entries(big)
        e.persist_entries([Entry(300, 1, b"c")])
    with pytest.raises(EnginePoisonedError):
        e.persist_entries([Entry(301, 1, b"d")])
    e.close()
