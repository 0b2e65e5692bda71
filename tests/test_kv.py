"""Tests of the key/value store (engine/kv.py): behaviour, crash states, faults.

Crash states are built by copying the store's files as they are at some
instant (what a killed process leaves) and then slicing, truncating or flipping
bytes in the copies, since every recovery decision is made from the bytes.
"""

from __future__ import annotations

import errno
import logging
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from segwal.errors import (
    CorruptionError,
    EngineClosedError,
    EnginePoisonedError,
    OutOfSpaceError,
    SyncError,
)
from segwal.fs import Buffer, OsFileSystem
from segwal.kv import MAX_KEY_SIZE, KVStore
from segwal.types import LogId

EID = 0x5EC0
FS = OsFileSystem()


def open_kv(path: Path, *, gen: int = 1, sync: bool = True, fs: Any = FS, **kw: Any) -> KVStore:
    return KVStore.open(fs, str(path), engine_id=EID, generation=gen, sync=sync, **kw)


def snapshot(path: Path) -> dict[str, bytes]:
    """The bytes of every file in the directory: the state a killed process leaves."""
    return {p.name: p.read_bytes() for p in path.iterdir()}


def restore(files: dict[str, bytes], path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for p in path.iterdir():
        p.unlink()
    for name, data in files.items():
        (path / name).write_bytes(data)
    return path


def content(kv: KVStore, keys: Sequence[bytes]) -> dict[bytes, bytes]:
    out = {}
    for k in keys:
        v = kv.get(k)
        if v is not None:
            out[k] = v
    return out


def logs(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.suffix == ".log")


# -- basic behaviour -------------------------------------------------------------


def test_round_trip_overwrite_delete(tmp_path: Path) -> None:
    kv = open_kv(tmp_path)
    assert kv.get(b"a") is None and len(kv) == 0 and kv.last_applied() is None
    assert kv.apply([(b"a", b"1"), (b"b", b"2"), (b"", b"empty key")]) == [None, None, None]
    assert kv.apply([(b"a", b"3"), (b"b", None), (b"zz", None)]) == [b"1", b"2", None]
    assert kv.get(b"a") == b"3" and kv.get(b"b") is None and kv.get(b"") == b"empty key"
    assert len(kv) == 2
    # A key repeated in one batch: each change sees the one before it.
    assert kv.apply([(b"a", b"4"), (b"a", None), (b"a", b"5"), (b"c", b"")]) == [b"3", b"4", None, None]
    assert kv.get(b"a") == b"5" and kv.get(b"c") == b""
    st = kv.stats()
    assert st.keys == 3 and st.files == 1
    assert st.live_bytes == sum(16 + len(k) + len(v) for k, v in [(b"a", b"5"), (b"", b"empty key"), (b"c", b"")])
    kv.close()
    kv = open_kv(tmp_path)
    assert content(kv, [b"a", b"b", b"", b"c"]) == {b"a": b"5", b"": b"empty key", b"c": b""}
    assert kv.stats() == st
    kv.close()
    with pytest.raises(EngineClosedError):
        kv.get(b"a")
    with pytest.raises(EngineClosedError):
        kv.apply([(b"x", b"y")])
    kv.close()  # idempotent


def test_last_applied_across_reopen(tmp_path: Path) -> None:
    kv = open_kv(tmp_path, sync=False)
    kv.apply([(b"k", b"v")], LogId(2, 10))
    kv.apply([(b"k", b"w")])  # no applied: keeps the previous one
    assert kv.last_applied() == LogId(2, 10)
    assert kv.apply([], LogId(3, 11)) == []  # an applied mark alone is a frame too
    kv.close()
    kv = open_kv(tmp_path)
    assert kv.last_applied() == LogId(3, 11) and kv.get(b"k") == b"w"
    kv.close()


def test_bad_input_changes_nothing(tmp_path: Path) -> None:
    kv = open_kv(tmp_path)
    kv.apply([(b"a", b"1")], LogId(1, 1))
    before = snapshot(tmp_path)
    cases: list[tuple[Any, type[Exception], str]] = [
        ([(b"b", b"2"), ("c", b"3")], TypeError, "change 1: key must be bytes"),
        ([(b"b", b"2"), (b"c", bytearray(b"3"))], TypeError, "change 1: value must be bytes"),
        ([(b"b", b"2"), (b"c", b"3", b"x")], TypeError, "change 1"),
        ([(b"b", b"2"), b"cd"], TypeError, "change 1"),
        ([(b"b", b"2"), 7], TypeError, "change 1"),
        ([(bytes(MAX_KEY_SIZE + 1), b"v")], ValueError, "change 0: key of"),
    ]
    for changes, exc, msg in cases:
        with pytest.raises(exc, match=msg):
            kv.apply(changes)
    with pytest.raises(TypeError, match="applied"):
        kv.apply([(b"b", b"2")], (1, 2))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        kv.get("a")  # type: ignore[arg-type]
    assert snapshot(tmp_path) == before
    assert content(kv, [b"a", b"b", b"c"]) == {b"a": b"1"} and kv.last_applied() == LogId(1, 1)
    kv.close()


def test_rollover_and_big_batch(tmp_path: Path) -> None:
    kv = open_kv(tmp_path, file_size=1024)
    model = {}
    for i in range(40):
        k, v = b"k%d" % (i % 13), bytes([i]) * (i * 7)
        kv.apply([(k, v)])
        model[k] = v
    kv.apply([(b"big", b"B" * 5000)])  # larger than file_size: a file of its own
    model[b"big"] = b"B" * 5000
    assert len(logs(tmp_path)) > 5
    assert content(kv, list(model)) == model
    kv.close()
    kv = open_kv(tmp_path, file_size=1024)
    assert content(kv, list(model)) == model
    kv.close()


# -- crash states ----------------------------------------------------------------


def _three_batches(path: Path) -> tuple[dict[str, bytes], int, int]:
    """Batches A, B, C (sync); returns the files as left by a kill, and where C lies."""
    path.mkdir()
    kv = open_kv(path)
    kv.apply([(b"a", b"A" * 30), (b"x", b"1")], LogId(1, 1))
    kv.apply([(b"b", b"B" * 20), (b"x", None)], LogId(1, 2))
    seg_end_before = _active_end(path)
    kv.apply([(b"a", b"C" * 40), (b"c", b"c" * 9), (b"b", None)], LogId(2, 3))
    seg_end_after = _active_end(path)
    files = snapshot(path)
    kv.close()
    return files, seg_end_before, seg_end_after


def _active_end(path: Path) -> int:
    """Offset just past the last frame of the (single) log file, read from the bytes."""
    from segwal.wal.format import SEGMENT_HEADER_SIZE, decode_segment_header, scan_frames

    (name,) = logs(path)
    data = (path / name).read_bytes()
    h = decode_segment_header(data, name)
    assert h is not None
    return scan_frames(data, SEGMENT_HEADER_SIZE, h.crc).end


STATE_AB = {b"a": b"A" * 30, b"b": b"B" * 20}
STATE_ABC = {b"a": b"C" * 40, b"c": b"c" * 9}
KEYS = [b"a", b"b", b"c", b"x"]


def test_torn_tail_at_every_byte_of_last_frame(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    files, c_start, c_end = _three_batches(tmp_path / "orig")
    (name,) = [n for n in files if n.endswith(".log")]
    data = files[name]
    assert c_end - c_start > 100
    for cut in range(c_start, c_end + 1):
        for fill in (b"", b"\0"):  # truncated file, or preallocated zeros after the cut
            torn = data[:cut] + (fill * (len(data) - cut) if fill else b"")
            d = restore({**files, name: torn}, tmp_path / "crash")
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="segwal.kv"):
                kv = open_kv(d)
            # Zero-filling only the frame's zero padding leaves the frame whole.
            whole = torn[:c_end] == data[:c_end]
            want, applied = (STATE_ABC, LogId(2, 3)) if whole else (STATE_AB, LogId(1, 2))
            assert content(kv, KEYS) == want, cut
            assert kv.last_applied() == applied
            warned = [r for r in caplog.records if r.name == "segwal.kv" and "torn tail" in r.getMessage()]
            if whole or cut == c_start or (fill and not torn[c_start:].strip(b"\0")):
                assert not warned, cut  # ends at a frame boundary, then nothing or zeros
            else:
                assert warned and name in warned[0].getMessage() and str(c_start) in warned[0].getMessage()
            # The store is writable after recovery, and the recovery itself is stable.
            kv.apply([(b"after", b"1")])
            kv.close()
            kv = open_kv(d)
            assert content(kv, KEYS) == want and kv.get(b"after") == b"1"
            kv.close()


def test_damage_below_durable_claim_is_corruption(tmp_path: Path) -> None:
    files, c_start, _ = _three_batches(tmp_path / "orig")
    (name,) = [n for n in files if n.endswith(".log")]
    data = bytearray(files[name])
    data[70] ^= 0x01  # inside batch A's frame; B and C claim it durable
    d = restore({**files, name: bytes(data)}, tmp_path / "bad")
    with pytest.raises(CorruptionError) as ei:
        open_kv(d)
    assert ei.value.path.endswith(name) and ei.value.offset == 64 and ei.value.index is None
    assert (d / name).read_bytes() == bytes(data)  # nothing cut


def test_clean_close_makes_last_frame_damage_corruption(tmp_path: Path) -> None:
    kv = open_kv(tmp_path, sync=False)
    kv.apply([(b"a", b"1" * 50)])
    end = _active_end(tmp_path)
    kv.close()  # records a clean end after the frame
    (name,) = logs(tmp_path)
    data = bytearray((tmp_path / name).read_bytes())
    data[end - 10] ^= 0x80
    (tmp_path / name).write_bytes(bytes(data))
    with pytest.raises(CorruptionError):
        open_kv(tmp_path)


def test_bit_flip_in_earlier_file_is_corruption(tmp_path: Path) -> None:
    kv = open_kv(tmp_path, file_size=512)
    for i in range(10):
        kv.apply([(b"k%d" % i, b"v" * 100)])
    kv.close()
    names = logs(tmp_path)
    assert len(names) >= 3
    first = tmp_path / names[0]
    data = bytearray(first.read_bytes())
    data[len(data) - 20] ^= 0x04
    first.write_bytes(bytes(data))
    with pytest.raises(CorruptionError) as ei:
        open_kv(tmp_path, file_size=512)
    assert ei.value.path.endswith(names[0])
    assert ei.value.offset is not None


def test_read_verifies_checksum(tmp_path: Path) -> None:
    kv = open_kv(tmp_path)
    kv.apply([(b"k", b"value-bytes")])
    (name,) = logs(tmp_path)
    p = tmp_path / name
    data = bytearray(p.read_bytes())
    i = data.index(b"value-bytes")
    with open(p, "r+b") as f:  # damage under a live, mapped store
        f.seek(i)
        f.write(b"X")
    with pytest.raises(CorruptionError) as ei:
        kv.get(b"k")
    assert ei.value.path.endswith(name) and ei.value.offset == i
    with pytest.raises(CorruptionError):  # the previous value is read too: nothing written
        kv.apply([(b"k", b"new")])
    kv.close()


def test_missing_middle_file_and_foreign_file(tmp_path: Path) -> None:
    kv = open_kv(tmp_path, file_size=512)
    for i in range(10):
        kv.apply([(b"k%d" % i, b"v" * 100)])
    kv.close()
    files = snapshot(tmp_path)
    names = logs(tmp_path)
    d = restore({n: b for n, b in files.items() if n != names[1]}, tmp_path / "gap")
    with pytest.raises(CorruptionError, match="missing"):
        open_kv(d, file_size=512)
    d = restore(files, tmp_path / "foreign")
    with pytest.raises(CorruptionError, match="foreign"):
        KVStore.open(FS, str(d), engine_id=EID + 1, generation=1, sync=True)


def test_torn_creation_of_last_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    kv = open_kv(tmp_path, file_size=512)
    kv.apply([(b"a", b"1" * 300)])
    kv.apply([(b"b", b"2" * 300)])
    kv.close()
    names = logs(tmp_path)
    nxt = names[-1][:-20] + f"{int(names[-1][-20:-4], 16) + 1:016x}.log"
    for junk in (b"", bytes(64), bytes(100), b"\x01" * 30):
        (tmp_path / nxt).write_bytes(junk)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="segwal.kv"):
            kv = open_kv(tmp_path, file_size=512)
        assert any("torn creation" in r.getMessage() for r in caplog.records)
        assert kv.get(b"a") == b"1" * 300 and kv.get(b"b") == b"2" * 300
        assert not (tmp_path / nxt).exists()
        kv.close()
    (tmp_path / nxt).write_bytes(bytes(64) + b"data after a zeroed header")
    with pytest.raises(CorruptionError):
        open_kv(tmp_path, file_size=512)


def test_stray_tmp_and_other_generations_removed(tmp_path: Path) -> None:
    kv = open_kv(tmp_path, gen=1)
    kv.apply([(b"old", b"data")], LogId(1, 5))
    kv.close()
    (tmp_path / f"kv-{1:016x}-{9:016x}.tmp").write_bytes(b"partial")
    (tmp_path / "unrelated").write_bytes(b"keep")
    ro = open_kv(tmp_path, gen=2, readonly=True)  # read-only: ignores, deletes nothing
    assert ro.get(b"old") is None and len(ro) == 0
    ro.close()
    assert len(list(tmp_path.iterdir())) == 3
    kv = open_kv(tmp_path, gen=2)  # the engine committed generation 2: reset
    assert kv.get(b"old") is None and kv.last_applied() is None and len(kv) == 0
    kv.apply([(b"new", b"x")])
    kv.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["kv-0000000000000002-0000000000000001.log", "unrelated"]
    kv = open_kv(tmp_path, gen=2)
    assert kv.get(b"new") == b"x" and kv.get(b"old") is None
    kv.close()


def test_flush_mode_survives_kill(tmp_path: Path) -> None:
    kv = open_kv(tmp_path, sync=False)
    for i in range(20):
        kv.apply([(b"k%d" % i, b"v%d" % i)], LogId(1, i + 1))
    files = snapshot(tmp_path)  # what a killed process leaves in the page cache
    kv.flush()
    kv.close()
    d = restore(files, tmp_path / "killed")
    kv = open_kv(d)
    assert kv.get(b"k19") == b"v19" and kv.last_applied() == LogId(1, 20) and len(kv) == 20
    kv.close()


def test_readonly(tmp_path: Path) -> None:
    assert len(open_kv(tmp_path / "missing", readonly=True)) == 0
    kv = open_kv(tmp_path)
    kv.apply([(b"a", b"1")])
    files = snapshot(tmp_path)
    kv.close()
    (name,) = logs(tmp_path)
    torn = files[name] + b"\x03garbage-tail"
    d = restore({name: torn}, tmp_path / "ro")
    ro = open_kv(d, readonly=True)
    assert ro.get(b"a") == b"1"
    with pytest.raises(PermissionError):
        ro.apply([(b"b", b"2")])
    ro.close()
    assert (d / name).read_bytes() == torn


# -- compaction ------------------------------------------------------------------


def _churn(kv: KVStore, rounds: int, model: dict[bytes, bytes], rng: random.Random) -> None:
    for r in range(rounds):
        batch: list[tuple[bytes, bytes | None]] = []
        for _ in range(8):
            k = b"key%03d" % rng.randrange(40)
            if rng.random() < 0.2:
                batch.append((k, None))
                model.pop(k, None)
            else:
                v = rng.randbytes(rng.randrange(0, 120))
                batch.append((k, v))
                model[k] = v
        kv.apply(batch, LogId(1, r + 1))


ALL = [b"key%03d" % i for i in range(40)]


def test_compaction_keeps_data_and_frees_files(tmp_path: Path) -> None:
    rng = random.Random(1)
    model: dict[bytes, bytes] = {}
    kv = open_kv(tmp_path, file_size=2048, compact_min_dead=1 << 40)
    _churn(kv, 60, model, rng)
    before = kv.stats()
    assert before.files > 3 and before.dead_bytes > before.live_bytes
    kv.compact()
    after = kv.stats()
    assert after.files == 1 and after.dead_bytes == 0 and after.live_bytes == before.live_bytes
    assert [p.name for p in tmp_path.iterdir()] == [f"kv-{1:016x}-{before.files + 1:016x}.merged"]
    assert content(kv, ALL) == model and kv.last_applied() == LogId(1, 60)
    _churn(kv, 20, model, rng)  # appends continue after the compaction
    kv.close()
    kv = open_kv(tmp_path, file_size=2048)
    assert content(kv, ALL) == model and kv.last_applied() == LogId(1, 20)
    kv.close()


def test_automatic_compaction(tmp_path: Path) -> None:
    rng = random.Random(2)
    model: dict[bytes, bytes] = {}
    kv = open_kv(tmp_path, file_size=4096, compact_min_dead=2000)
    _churn(kv, 200, model, rng)
    st = kv.stats()
    assert st.dead_bytes <= max(2000, st.live_bytes) + 2000
    assert st.files < 10
    assert content(kv, ALL) == model
    kv.close()
    kv = open_kv(tmp_path, file_size=4096)
    assert content(kv, ALL) == model and kv.last_applied() == LogId(1, 200)
    kv.close()


def test_compaction_crash_states(tmp_path: Path) -> None:
    rng = random.Random(3)
    model: dict[bytes, bytes] = {}
    orig = tmp_path / "orig"
    orig.mkdir()
    kv = open_kv(orig, file_size=2048, compact_min_dead=1 << 40)
    _churn(kv, 30, model, rng)
    pre = snapshot(orig)
    kv.compact()
    post = snapshot(orig)
    kv.close()
    (merged,) = post
    tmp = merged.replace(".merged", ".tmp")
    states = {
        # crash while the new file was being written, or before its rename
        "partial tmp": {**pre, tmp: post[merged][: len(post[merged]) // 2]},
        "complete tmp": {**pre, tmp: post[merged]},
        # crash after the rename, before the old files were deleted
        "renamed, old kept": {**pre, merged: post[merged]},
        "renamed, some old deleted": {**dict(list(pre.items())[len(pre) // 2 :]), merged: post[merged]},
        "done": post,
    }
    for label, files in states.items():
        d = restore(files, tmp_path / "state")
        kv = open_kv(d, file_size=2048)
        assert content(kv, ALL) == model, label
        assert kv.last_applied() == LogId(1, 30), label
        names = sorted(p.name for p in d.iterdir())
        assert names == (sorted(pre) if "tmp" in label else [merged]), label
        kv.apply([(b"key000", b"z")])
        kv.close()
        kv = open_kv(d, file_size=2048)
        assert kv.get(b"key000") == b"z", label
        kv.close()


def test_compaction_carries_last_applied_when_empty(tmp_path: Path) -> None:
    kv = open_kv(tmp_path)
    kv.apply([(b"a", b"1")], LogId(4, 9))
    kv.apply([(b"a", None)])
    kv.compact()
    assert len(kv) == 0 and kv.stats().dead_bytes == 0
    kv.close()
    kv = open_kv(tmp_path)
    assert kv.last_applied() == LogId(4, 9) and len(kv) == 0
    kv.close()


def test_readers_keep_old_values_across_compaction(tmp_path: Path) -> None:
    kv = open_kv(tmp_path, compact_min_dead=1 << 40)
    kv.apply([(b"a", b"1" * 100), (b"b", b"2")])
    kv.apply([(b"b", b"3")])
    g = kv.get
    kv.compact()
    assert g(b"a") == b"1" * 100 and g(b"b") == b"3"
    kv.close()


# -- faults ----------------------------------------------------------------------


class FaultyFile:
    """Wraps a real file; fails operations on demand (one shot each)."""

    def __init__(self, inner: Any, fs: FaultyFS) -> None:
        self._inner = inner
        self._fs = fs
        self.path = inner.path

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def pwrite(self, data: Buffer, offset: int) -> None:
        self._fs.maybe_fail("write", self.path)
        self._inner.pwrite(data, offset)

    def pwritev(self, buffers: Sequence[Buffer], offset: int) -> None:
        if self._fs.armed.get("short") and self.path.endswith(".log"):
            del self._fs.armed["short"]
            self._inner.pwrite(b"".join(buffers)[:10], offset)  # some bytes land, then no space
            raise OSError(errno.ENOSPC, "No space left on device", self.path)
        self._fs.maybe_fail("write", self.path)
        self._inner.pwritev(buffers, offset)

    def fdatasync(self) -> None:
        self._fs.maybe_fail("fdatasync", self.path)
        self._inner.fdatasync()


class FaultyFS(OsFileSystem):
    def __init__(self) -> None:
        self.armed: dict[str, int] = {}

    def maybe_fail(self, op: str, path: str) -> None:
        code = self.armed.pop(op, None)
        if code is not None:
            raise OSError(code, os.strerror(code), path)

    def open(self, path: str, *, create: bool = False, readonly: bool = False) -> Any:
        return FaultyFile(super().open(path, create=create, readonly=readonly), self)


def test_failed_fdatasync_poisons(tmp_path: Path) -> None:
    fs = FaultyFS()
    kv = open_kv(tmp_path, fs=fs)
    kv.apply([(b"a", b"1")], LogId(1, 1))
    fs.armed["fdatasync"] = errno.EIO
    with pytest.raises(SyncError):
        kv.apply([(b"a", b"2"), (b"b", b"3")], LogId(1, 2))
    assert kv.get(b"a") == b"1" and kv.get(b"b") is None  # not acknowledged, not visible
    with pytest.raises(EnginePoisonedError):
        kv.apply([(b"c", b"4")])
    with pytest.raises(EnginePoisonedError):
        kv.compact()
    kv.close()
    kv = open_kv(tmp_path)
    assert content(kv, [b"a", b"b", b"c"]) == {b"a": b"1"} and kv.last_applied() == LogId(1, 1)
    kv.apply([(b"c", b"4")])
    kv.close()


def test_failed_flush_poisons_and_hides_unsynced(tmp_path: Path) -> None:
    fs = FaultyFS()
    kv = open_kv(tmp_path, fs=fs, sync=False)
    kv.apply([(b"a", b"1")])
    kv.flush()
    kv.apply([(b"a", b"2")])
    fs.armed["fdatasync"] = errno.EIO
    with pytest.raises(SyncError):
        kv.flush()
    with pytest.raises(EnginePoisonedError):
        kv.get(b"a")
    kv.close()
    kv = open_kv(tmp_path)
    assert kv.get(b"a") == b"1"
    kv.close()


@pytest.mark.parametrize("kind", ["enospc", "short"])
def test_out_of_space_rolls_back(tmp_path: Path, kind: str) -> None:
    fs = FaultyFS()
    kv = open_kv(tmp_path, fs=fs)
    kv.apply([(b"a", b"1")], LogId(1, 1))
    before = kv.stats()
    if kind == "short":
        fs.armed["short"] = 1
    else:
        fs.armed["write"] = errno.ENOSPC
    with pytest.raises(OutOfSpaceError):
        kv.apply([(b"a", b"2"), (b"b", b"3")], LogId(1, 2))
    assert kv.get(b"a") == b"1" and kv.get(b"b") is None
    assert kv.stats() == before and kv.last_applied() == LogId(1, 1)
    assert kv.apply([(b"b", b"4")], LogId(1, 3)) == [None]  # later writes work
    kv.close()
    kv = open_kv(tmp_path)
    assert content(kv, [b"a", b"b"]) == {b"a": b"1", b"b": b"4"} and kv.last_applied() == LogId(1, 3)
    kv.close()


def test_out_of_space_during_compaction_keeps_old_files(tmp_path: Path) -> None:
    fs = FaultyFS()
    kv = open_kv(tmp_path, fs=fs, compact_min_dead=1 << 40)
    kv.apply([(b"a", b"1"), (b"b", b"2")])
    kv.apply([(b"a", b"3")])
    fs.armed["write"] = errno.ENOSPC
    with pytest.raises(OutOfSpaceError):
        kv.compact()
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]
    assert kv.get(b"a") == b"3"
    kv.apply([(b"c", b"4")])
    kv.compact()
    kv.close()
    kv = open_kv(tmp_path)
    assert content(kv, [b"a", b"b", b"c"]) == {b"a": b"3", b"b": b"2", b"c": b"4"}
    kv.close()


# -- model -----------------------------------------------------------------------


def test_random_operations_against_a_dict(tmp_path: Path) -> None:
    rng = random.Random(7)
    model: dict[bytes, bytes] = {}
    applied = None
    kv = open_kv(tmp_path, file_size=1024, compact_min_dead=3000)
    for step in range(400):
        op = rng.random()
        if op < 0.8:
            batch: list[tuple[bytes, bytes | None]] = []
            for _ in range(rng.randrange(1, 6)):
                k = b"k%02d" % rng.randrange(30)
                v = None if rng.random() < 0.25 else rng.randbytes(rng.randrange(200))
                batch.append((k, v))
            expect = []
            for k, v in batch:
                expect.append(model.get(k))
                if v is None:
                    model.pop(k, None)
                else:
                    model[k] = v
            a = LogId(1, step) if rng.random() < 0.5 else None
            assert kv.apply(batch, a) == expect
            applied = a or applied
        elif op < 0.9:
            kv.close()
            kv = open_kv(tmp_path, file_size=1024, compact_min_dead=3000, sync=rng.random() < 0.5)
        else:
            kv.compact()
        assert len(kv) == len(model)
        assert kv.last_applied() == applied
        k = b"k%02d" % rng.randrange(30)
        assert kv.get(k) == model.get(k)
    assert content(kv, [b"k%02d" % i for i in range(30)]) == model
    kv.close()


def test_changes_that_are_not_tuples_are_split_without_losing_one_shot_pairs(tmp_path: Path) -> None:
    """The fast split takes tuples only: a list pair or a one-shot iterator pair among them is
    read once, by the per-change path, and a malformed change is named, with nothing written."""
    s = open_kv(tmp_path)
    assert s.apply([(b"a", b"1"), [b"b", b"2"], iter((b"c", b"3"))]) == [None, None, None]  # type: ignore[list-item]
    assert [s.get(k) for k in (b"a", b"b", b"c")] == [b"1", b"2", b"3"]
    with pytest.raises(TypeError, match="change 1: expected a"):
        s.apply([(b"a", b"x"), (b"b", b"y", b"z")])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="change 0: value must be bytes or None"):
        s.apply([(b"a", 1), (b"b", b"y")])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="change 1: value must be bytes or None"):  # the pair before is read once
        s.apply([iter((b"a", b"x")), (b"b", 2)])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="change 1: expected a"):
        s.apply([(b"a", b"x"), 5])  # type: ignore[list-item]
    assert [s.get(k) for k in (b"a", b"b", b"c")] == [b"1", b"2", b"3"]
    s.close()


def test_the_padded_write_path_encoding_is_the_body_plus_the_frames_padding() -> None:
    import xxhash

    from segwal.kv.codec import encode_kv_body, encode_kv_padded, split_changes

    rng = random.Random(4)
    for trial in range(200):
        ch = [(os.urandom(rng.randrange(0, 9)), None if rng.random() < 0.3 else os.urandom(rng.randrange(0, 30)))
              for _ in range(rng.randrange(0, 12))]
        keys, vals, has_none, klens, vlens = split_changes(ch)
        checks = [0 if v is None else xxhash.xxh3_64_intdigest(v) for v in vals]
        applied = LogId(3, trial) if trial % 2 else None
        body = encode_kv_body(list(keys), list(vals), checks, applied)
        assert encode_kv_padded(keys, vals, klens, vlens, checks, applied, deletes=has_none) == body + bytes(
            -len(body) & 7)
