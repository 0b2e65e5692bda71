"""VolatileFileSystem: what is not synced is lost when the process's image is dropped (a kill)."""

from __future__ import annotations

import os

import pytest

from segwal.engine import Entry, WalEngine
from segwal.testing.volatile import VolatileFileSystem

pytestmark = pytest.mark.skipif(not hasattr(os, "memfd_create"), reason="needs os.memfd_create (Linux)")


def test_unsynced_data_and_names_are_lost(tmp_path):
    fs = VolatileFileSystem(tmp_path)
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    f = fs.open(a, create=True)
    f.pwrite(b"hello", 0)
    f.fdatasync()
    assert not os.path.exists(a)  # the name is not synced yet
    fs.fsync_dir(str(tmp_path))
    assert (tmp_path / "a").read_bytes() == b"hello"
    f.pwrite(b"HELLO world", 0)  # unsynced overwrite and extension
    g = fs.open(b, create=True)
    g.pwrite(b"b", 0)
    g.fdatasync()  # data synced, name not
    assert f.pread(100, 0) == b"HELLO world" and sorted(fs.listdir(str(tmp_path))) == ["a", "b"]
    after = VolatileFileSystem(tmp_path)  # the process was killed: a new image from disk
    assert sorted(after.listdir(str(tmp_path))) == ["a"]
    assert after.open(a).pread(100, 0) == b"hello"
    f.fdatasync()
    assert (tmp_path / "a").read_bytes() == b"HELLO world"


def test_rename_unlink_and_directories_need_fsync_dir(tmp_path):
    fs = VolatileFileSystem(tmp_path)
    d = str(tmp_path / "d")
    fs.mkdir(d)
    f = fs.open(d + "/x.tmp", create=True)
    f.pwrite(b"v1", 0)
    f.fsync()
    fs.rename(d + "/x.tmp", d + "/x")
    assert VolatileFileSystem(tmp_path).listdir(str(tmp_path)) == []
    fs.fsync_dir(str(tmp_path))
    fs.fsync_dir(d)
    assert (tmp_path / "d" / "x").read_bytes() == b"v1" and os.listdir(d) == ["x"]
    fs.unlink(d + "/x")
    assert not fs.exists(d + "/x") and os.path.exists(d + "/x")
    fs.fsync_dir(d)
    assert not os.path.exists(d + "/x")


def test_map_sees_later_writes(tmp_path):
    fs = VolatileFileSystem(tmp_path)
    f = fs.open(str(tmp_path / "m"), create=True)
    f.pwrite(b"\0" * 8, 0)
    m = f.map()
    assert m is not None
    f.pwrite(b"abc", 2)
    assert m[:8] == b"\0\0abc\0\0\0"
    m.close()


@pytest.mark.parametrize("sync", ["always", "flush"])
def test_engine_keeps_exactly_what_it_synced(tmp_path, sync):
    fs = VolatileFileSystem(tmp_path)
    path = str(tmp_path / "wal")
    eng = WalEngine(path, segment_size=4096, sync=sync, fs=fs)
    eng.persist_entries([Entry(1, 1, b"first")])  # opens the first segment (synced in both modes)
    eng.persist_entries([Entry(i, 1, b"x%d" % i) for i in range(2, 20)])
    eng._lock.release()  # a killed process releases its flock; its image is simply dropped
    again = WalEngine(path, segment_size=4096, fs=VolatileFileSystem(tmp_path))
    try:
        assert again.last_index() == (19 if sync == "always" else 1)
    finally:
        again.close()
