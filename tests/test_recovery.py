"""Recovery at open: torn tails are cut, damage to synced data is corruption."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest

from segwal.engine import CorruptionError, Entry, HardState, LogId, WalEngine
from segwal.wal.format import SEGMENT_HEADER_SIZE, decode_frame_header


def batch(first: int, n: int, term: int = 1, size: int = 20) -> list[Entry]:
    return [Entry(i, term, bytes([i % 251]) * size) for i in range(first, first + n)]


def crash_copy(engine_dir: Path, dest: Path) -> Path:
    """Copy an open engine's directory as a crash would leave it (no clean close)."""
    shutil.copytree(engine_dir, dest)
    (dest / "LOCK").unlink(missing_ok=True)
    return dest


def frames_of(seg: Path) -> list[tuple[int, int]]:
    """(offset, frame_len) of each frame in a segment file."""
    data = seg.read_bytes()
    out, off = [], SEGMENT_HEADER_SIZE
    while True:
        h = decode_frame_header(data, off)
        if h is None:
            return out
        out.append((off, h.frame_len))
        off += h.frame_len


def tail_segment(d: Path) -> Path:
    return sorted(d.glob("*.wal"))[-1]


@pytest.fixture()
def crashed(tmp_path: Path) -> tuple[Path, list[Entry]]:
    """An engine directory after 4 acknowledged batches and a crash (no close)."""
    src = tmp_path / "src"
    e = WalEngine(src)
    written: list[Entry] = []
    for k in range(4):
        b = batch(1 + 5 * k, 5)
        e.persist_entries(b)
        written += b
    image = crash_copy(src, tmp_path / "image")
    e.close()
    return image, written


def test_torn_tail_at_every_byte_of_the_last_frame(crashed: tuple[Path, list[Entry]], tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    image, written = crashed
    seg = tail_segment(image)
    off, flen = frames_of(seg)[-1]
    data = seg.read_bytes()
    for cut in range(off, off + flen):
        # every byte offset for a cut file; every 7th for zero- and garbage-filled space
        fills = ("truncate", "zeros", "garbage") if (cut - off) % 7 == 0 else ("truncate",)
        for fill in fills:
            d = tmp_path / f"t{cut}-{fill}"
            shutil.copytree(image, d)
            s = tail_segment(d)
            if fill == "truncate":
                s.write_bytes(data[:cut])
            else:
                rest = bytes(len(data) - cut) if fill == "zeros" else os.urandom(len(data) - cut)
                s.write_bytes(data[:cut] + rest)
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="segwal"):
                e = WalEngine(d)
            # zero-filling only the frame's zero padding leaves it intact
            intact = fill == "zeros" and not data[cut : off + flen].strip(b"\0")
            kept = 20 if intact else 15
            assert e.last_index() == kept, (cut, fill)
            assert e.get_entries_range(1, 100) == written[:kept]
            if not intact and cut > off:
                assert any("torn tail" in r.getMessage() and str(off) in r.getMessage() for r in caplog.records)
            # the engine keeps working after the cut, and the result survives reopen
            e.truncate(16)
            e.persist_entries(batch(16, 3, term=2))
            e.close()
            e = WalEngine(d)
            assert e.last_index() == 18 and e.entry(18) == Entry(18, 2, bytes([18]) * 20)
            e.close()
            shutil.rmtree(d)


def test_damage_below_a_durable_claim_is_corruption(crashed: tuple[Path, list[Entry]]) -> None:
    image, _ = crashed
    seg = tail_segment(image)
    (off, flen) = frames_of(seg)[1]  # the second batch; later frames claim it was synced
    data = bytearray(seg.read_bytes())
    data[off + flen - 12] ^= 0x01
    seg.write_bytes(bytes(data))
    with pytest.raises(CorruptionError) as ei:
        WalEngine(image)
    err = ei.value
    assert err.path == str(seg) and err.offset == off and err.index == 6
    assert "entries up to 20" in str(err)
    # nothing was truncated on the engine's own initiative
    assert seg.read_bytes() == bytes(data)


def test_damage_after_clean_close_is_corruption(tmp_path: Path) -> None:
    """A clean close records where the log ends: damage before that point is never
    cut as a torn tail; reading the damaged entry reports it."""
    d = tmp_path / "e"
    with WalEngine(d) as e:
        e.persist_entries(batch(1, 5))
        e.persist_entries(batch(6, 5))
    seg = tail_segment(d)
    off, flen = frames_of(seg)[-1]
    data = bytearray(seg.read_bytes())
    data[off + flen - 12] ^= 0x01  # last payload byte of entry 10
    seg.write_bytes(bytes(data))
    with WalEngine(d) as e:
        assert e.last_index() == 10
        assert e.entry(9) == batch(9, 1)[0]
        with pytest.raises(CorruptionError) as ei:
            e.entry(10)
        assert ei.value.index == 10 and ei.value.path == str(seg)
    assert seg.read_bytes() == bytes(data)


def test_bit_flip_in_sealed_segment_raises_on_read(tmp_path: Path) -> None:
    d = tmp_path / "e"
    with WalEngine(d, segment_size=1024) as e:
        for k in range(10):
            e.persist_entries(batch(1 + 5 * k, 5, size=30))
        assert len(list(d.glob("*.wal"))) > 2
    first = sorted(d.glob("*.wal"))[0]
    data = bytearray(first.read_bytes())
    pos = data.index(bytes([3]) * 30)  # payload of entry 3
    data[pos + 7] ^= 0x10
    first.write_bytes(bytes(data))
    with WalEngine(d, segment_size=1024) as e:  # open reads no sealed segment
        assert e.entry(2) == Entry(2, 1, bytes([2]) * 30)
        with pytest.raises(CorruptionError) as ei:
            e.entry(3)
        assert ei.value.index == 3 and ei.value.path == str(first)
        with pytest.raises(CorruptionError):
            e.get_entries_range(1, 10)
        assert e.entry(40) == Entry(40, 1, bytes([40]) * 30)


def test_missing_middle_segment_is_corruption(tmp_path: Path) -> None:
    d = tmp_path / "e"
    with WalEngine(d, segment_size=1024) as e:
        for k in range(10):
            e.persist_entries(batch(1 + 5 * k, 5, size=30))
    segs = sorted(d.glob("*.wal"))
    segs[1].unlink()
    with pytest.raises(CorruptionError, match="missing"):
        WalEngine(d, segment_size=1024)


def test_damaged_or_missing_index_is_rebuilt_with_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    d = tmp_path / "e"
    with WalEngine(d, segment_size=1024) as e:
        for k in range(10):
            e.persist_entries(batch(1 + 5 * k, 5, size=30))
        want = e.get_entries_range(1, 50)
    idx = sorted(d.glob("*.idx"))
    idx[0].unlink()
    raw = bytearray(idx[1].read_bytes())
    raw[8192] ^= 0xFF
    idx[1].write_bytes(bytes(raw))
    with caplog.at_level(logging.WARNING, logger="segwal"):
        with WalEngine(d, segment_size=1024) as e:
            assert e.get_entries_range(1, 50) == want
    assert sum("rebuilding" in r.getMessage() for r in caplog.records) >= 2


def test_commit_index_beyond_last_entry_is_corruption(tmp_path: Path) -> None:
    d = tmp_path / "e"
    with WalEngine(d) as e:
        e.persist_entries(batch(1, 5))
        e.save_hard_state(HardState(1, None, 5))
        img = crash_copy(d, tmp_path / "img")
    seg = tail_segment(img)
    data = seg.read_bytes()
    off, _ = frames_of(seg)[-1]
    seg.write_bytes(data[:off])  # the only batch is lost, but the commit index says 5
    with pytest.raises(CorruptionError, match="commit index 5"):
        WalEngine(img)


def test_stray_temporary_files_are_removed(tmp_path: Path) -> None:
    d = tmp_path / "e"
    with WalEngine(d) as e:
        e.persist_entries(batch(1, 3))
    (d / "MANIFEST.tmp").write_bytes(b"half a manifest")
    (d / "HARDSTATE.tmp").write_bytes(b"x")
    with WalEngine(d) as e:
        assert e.last_index() == 3
    assert not list(d.glob("*.tmp"))


def test_foreign_segment_is_corruption(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    with WalEngine(a) as e:
        e.persist_entries(batch(1, 3))
    with WalEngine(b) as e:
        e.persist_entries(batch(1, 3))
    seg_b = tail_segment(b)
    shutil.copy(tail_segment(a), seg_b)
    with pytest.raises(CorruptionError, match="foreign|stale"):
        WalEngine(b)


def test_purge_boundary_and_rollover_truncate_survive_crash(tmp_path: Path) -> None:
    d = tmp_path / "e"
    e = WalEngine(d, segment_size=1024)
    for k in range(10):
        e.persist_entries(batch(1 + 5 * k, 5, size=30))
    e.purge_logs(LogId(1, 20))
    e.truncate(30)
    e.persist_entries(batch(30, 2, term=2))
    img = crash_copy(d, tmp_path / "img")
    e.close()
    with WalEngine(img, segment_size=1024) as r:
        assert (r.first_index(), r.last_index()) == (21, 31)
        assert r.purge_boundary() == LogId(1, 20)
        assert [x.term for x in r.get_entries_range(28, 40)] == [1, 1, 2, 2]
