"""Snapshots of the key/value state: round trip, refusal of damaged files, crash atomicity."""

from __future__ import annotations

from pathlib import Path

import pytest

from segwal.engine import CorruptionError, Entry, HardState, LogId, WalEngine
from segwal.testing.pytest_plugin import CrashHarness


def source(path: Path, n: int = 300) -> tuple[LogId, dict[bytes, bytes]]:
    """An engine with some kv data applied up to LogId(2, 40); returns the expected map."""
    with WalEngine(path, segment_size=1024) as e:
        e.persist_entries([Entry(i, 1 + i // 30, bytes([i]) * 20) for i in range(1, 60)])
        e.apply([(b"k%d" % i, b"v%d" % i * 3) for i in range(n)], applied=LogId(1, 20))
        e.apply([(b"k7", None), (b"k8", b"eight")], applied=LogId(2, 40))
        want = {b"k%d" % i: b"v%d" % i * 3 for i in range(n)}
        del want[b"k7"]
        want[b"k8"] = b"eight"
        assert e.snapshot(path / "snap") == LogId(2, 40)
    return LogId(2, 40), want


def test_snapshot_round_trip_and_install(tmp_path: Path) -> None:
    sid, want = source(tmp_path / "a")
    snap = tmp_path / "a" / "snap"
    with WalEngine(tmp_path / "b") as b:
        b.persist_entries([Entry(1, 1, b"old")])
        b.insert(b"gone", b"1")
        b.save_hard_state(HardState(5, None, 1))
        assert b.install_snapshot(snap) == sid
        assert (b.first_index(), b.last_index(), b.purge_boundary(), b.last_applied()) == (41, 40, sid, sid)
        assert b.get(b"gone") is None and all(b.get(k) == v for k, v in want.items())
        assert b.load_hard_state() == HardState(5, None, 1)  # kept
        b.persist_entries([Entry(41, 2, b"next")])
    with WalEngine(tmp_path / "b") as b:
        assert (b.first_index(), b.last_index(), b.last_applied()) == (41, 41, sid)
        assert all(b.get(k) == v for k, v in want.items())


def test_snapshot_needs_an_applied_logid(tmp_path: Path) -> None:
    with WalEngine(tmp_path / "e") as e:
        e.insert(b"a", b"1")
        with pytest.raises(ValueError, match="last_applied"):
            e.snapshot(tmp_path / "s")
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("damage", ["flip", "truncate", "header"])
def test_damaged_snapshot_is_refused_and_changes_nothing(tmp_path: Path, damage: str) -> None:
    source(tmp_path / "a")
    snap = tmp_path / "a" / "snap"
    data = bytearray(snap.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x20
    elif damage == "truncate":
        data = data[: len(data) - 30]
    else:
        data[10] ^= 1
    snap.write_bytes(bytes(data))
    with WalEngine(tmp_path / "b") as b:
        b.persist_entries([Entry(1, 1, b"keep")])
        b.insert(b"x", b"y")
        with pytest.raises(CorruptionError) as ei:
            b.install_snapshot(snap)
        assert ei.value.path == str(snap)
        assert b.entry(1) == Entry(1, 1, b"keep") and b.get(b"x") == b"y" and b.last_applied() is None


def test_install_snapshot_is_atomic_under_crashes(tmp_path: Path) -> None:
    """Every crash state during an install opens as the old state or the new one."""
    root = tmp_path / "rec"
    root.mkdir()
    source(tmp_path / "a", n=40)
    (root / "snap").write_bytes((tmp_path / "a" / "snap").read_bytes())  # part of the start image
    harness = CrashHarness(root, max_states=None)
    with harness.engine(segment_size=512) as wal:
        wal.persist_entries([Entry(i, 1, bytes([i]) * 50) for i in range(1, 12)])
        wal.apply([(b"old", b"1"), (b"k3", b"stale")], applied=LogId(1, 5))
        wal.install_snapshot(str(root / "snap"))
        wal.persist_entries([Entry(41, 3, b"after")])
    report = harness.check_all(per_point=24)
    print(report.summary().splitlines()[0])
    assert report.explored > 100
