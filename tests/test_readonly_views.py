"""Read-only views take no lock, change no file, work on a read-only mount, go
stale (not corrupt) when the writer removes what they name, and still report
real damage as ``CorruptionError``."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from segwal.engine import CorruptionError, Entry, HardState, LogId, StaleViewError, WalEngine
from segwal.errors import SegwalError
from segwal.tools.verify import verify

SEG = 1024


def fill(e: WalEngine, lo: int, hi: int, term: int = 1) -> None:
    for i in range(lo, hi + 1, 4):
        e.persist_entries([Entry(j, term, b"entry %d " % j * 4) for j in range(i, min(hi, i + 3) + 1)])


def tree(root: Path) -> dict[str, tuple[bytes, int, int]]:
    """Every file under ``root``: content, mtime and mode."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(root))] = (p.read_bytes() if p.is_file() else b"", st.st_mtime_ns, st.st_mode)
    return out


def read_all(e: WalEngine) -> tuple[object, ...]:
    return (
        e.get_entries_range(e.first_index(), e.last_index()),
        e.load_hard_state(),
        e.get(b"k"),
        e.last_applied(),
        e.purge_boundary(),
    )


@pytest.fixture()
def crashed(tmp_path: Path) -> Path:
    """A directory as a killed writer leaves it: a frame cut short at the tail, a
    stray temporary file, an unlisted segment, no clean close."""
    src = tmp_path / "live"
    e = WalEngine(src, segment_size=SEG)
    fill(e, 1, 60)
    e.save_hard_state(HardState(1, None, 40))
    e.apply([(b"k", b"v")], LogId(1, 40))
    e.purge_logs(LogId(1, 10))
    dst = tmp_path / "crashed"
    shutil.copytree(src, dst)  # taken while open: no clean close recorded
    e.close()
    tail = max(dst.glob("*.wal"))
    data = tail.read_bytes().rstrip(b"\0")
    tail.write_bytes(data + b"\x01torn frame" * 3)
    (dst / "MANIFEST.tmp").write_bytes(b"half a manifest")
    (dst / "00000000000000ff.wal").write_bytes(bytes(64))
    (dst / "LOCK").unlink()
    return dst


def test_a_readonly_view_changes_nothing(crashed: Path) -> None:
    before = tree(crashed)
    with WalEngine(crashed, readonly=True, segment_size=SEG) as r:
        got = read_all(r)
        r.refresh()
        assert read_all(r) == got
        assert any("being written or torn" in n for n in r.notes)
    assert tree(crashed) == before  # no cut, no index, no LOCK, no leftover removed
    with WalEngine(crashed, segment_size=SEG) as w:  # the writer's recovery sees the same state
        assert read_all(w) == got


def _read_only_mount(src: Path, mnt: Path) -> bool:
    mnt.mkdir()
    if subprocess.run(["mount", "--bind", str(src), str(mnt)], capture_output=True).returncode != 0:
        return False
    if subprocess.run(["mount", "-o", "remount,ro,bind", str(mnt)], capture_output=True).returncode != 0:
        subprocess.run(["umount", str(mnt)], capture_output=True)
        return False
    return True


def test_a_readonly_view_works_on_a_read_only_file_system(crashed: Path, tmp_path: Path) -> None:
    expect = None
    with WalEngine(crashed, readonly=True, segment_size=SEG) as r:
        expect = read_all(r)
    if os.geteuid() != 0:  # permissions stop a non-root writer
        for p in [crashed, *crashed.rglob("*")]:
            p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
        try:
            with WalEngine(crashed, readonly=True, segment_size=SEG) as r:
                assert read_all(r) == expect
                r.refresh()
        finally:
            for p in [crashed, *crashed.rglob("*")]:
                p.chmod(p.stat().st_mode | stat.S_IWUSR)
        return
    mnt = tmp_path / "ro"
    if not _read_only_mount(crashed, mnt):
        if os.environ.get("CI") == "true":
            pytest.fail("could not make a read-only bind mount as root (CI must test it)")
        pytest.skip("bind mounts are not permitted here")
    try:
        with pytest.raises(OSError):
            (mnt / "probe").write_bytes(b"x")  # the mount really is read-only
        with WalEngine(mnt, readonly=True, segment_size=SEG) as r:
            assert read_all(r) == expect
            r.refresh()
            assert read_all(r) == expect
        with pytest.raises(OSError):
            WalEngine(mnt, segment_size=SEG)  # a writer cannot open there
    finally:
        subprocess.run(["umount", str(mnt)], check=True)  # busy if a file or map were still open


def test_writer_and_views_share_the_directory(tmp_path: Path) -> None:
    d = tmp_path / "db"
    w = WalEngine(d, segment_size=SEG)
    fill(w, 1, 20)
    r = WalEngine(d, readonly=True, segment_size=SEG)  # beside an open writer
    w.close()
    w = WalEngine(d, segment_size=SEG)  # a writer opens beside an open view
    fill(w, 21, 30)
    assert r.last_index() == 20
    r.refresh()
    assert r.last_index() == 30 and r.entry(30) == w.entry(30)
    with pytest.raises(PermissionError):
        r.persist_entries([Entry(31, 1, b"x")])
    r.close()
    w.close()


def test_a_purged_segment_makes_the_view_stale_and_refresh_recovers(tmp_path: Path) -> None:
    d = tmp_path / "db"
    w = WalEngine(d, segment_size=SEG)
    fill(w, 1, 80)
    r = WalEngine(d, readonly=True, segment_size=SEG)
    pinned = WalEngine(d, readonly=True, segment_size=SEG)
    pinned.pin()  # every segment held open: a purge cannot make this one stale
    assert len(r.segments()) > 3
    w.purge_logs(LogId(1, 60))  # removes segments the view has not opened yet
    assert [e.index for e in pinned.get_entries_range(1, 80)] == list(range(1, 81))
    pinned.close()
    with pytest.raises(StaleViewError) as ei:
        r.get_entries_range(1, 80)
    assert isinstance(ei.value, SegwalError) and not isinstance(ei.value, CorruptionError)
    assert "refresh()" in str(ei.value)
    r.refresh()
    assert r.first_index() == 61
    assert [e.index for e in r.get_entries_range(1, 80)] == list(range(61, 81))
    r.close()
    w.close()


def test_damage_that_stays_is_corruption(tmp_path: Path) -> None:
    d = tmp_path / "db"
    w = WalEngine(d, segment_size=SEG)
    fill(w, 1, 80)
    first = min(d.glob("*.wal"))
    raw = bytearray(first.read_bytes())
    raw[200] ^= 0xFF  # inside the first batch of a sealed segment
    first.write_bytes(bytes(raw))
    r = WalEngine(d, readonly=True, segment_size=SEG)
    with pytest.raises(CorruptionError) as ei:  # the writer is open, but the manifest did not move
        r.get_entries_range(1, 10)
    assert ei.value.path == str(first)
    r.close()
    w.close()
    # Damage below a durable claim in the tail: every read of the generation finds it.
    tail = max(d.glob("*.wal"))
    raw = bytearray(tail.read_bytes())
    raw[70] ^= 0xFF
    tail.write_bytes(bytes(raw))
    tail.with_suffix(".idx").unlink()  # so that open scans the tail from its start
    with pytest.raises(CorruptionError) as ei:
        WalEngine(d, readonly=True, segment_size=SEG)
    assert ei.value.path == str(tail)


def test_verify_tells_the_live_part_of_the_tail_from_a_torn_one(crashed: Path) -> None:
    before = tree(crashed)
    dead = verify(str(crashed), live=False)  # no writer: a torn tail open would cut
    assert dead.exit_status == 1 and any("torn tail" in f.message for f in dead.findings)
    live = verify(str(crashed), live=True)  # a writer at work: the same bytes are its frame in progress
    assert live.exit_status == 0, live.findings
    assert any("verified up to offset" in n and "being written" in n for n in live.live_notes), live.live_notes
    assert verify(str(crashed)).exit_status == 1  # nobody holds the lock: not live
    with WalEngine(crashed, segment_size=SEG) as w:
        fill(w, 61, 64)
        report = verify(str(crashed))  # the writer holds the lock: live, and healthy
        assert report.live and report.exit_status == 0, report.findings
    assert tree(crashed) != before
