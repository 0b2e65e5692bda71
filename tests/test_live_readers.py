"""Read-only views of a live directory: a writer PROCESS (``tests/live_writer_child.py``)
appends, overwrites, truncates, purges, saves hard state, applies and compacts
key/value data, while this process opens read-only views, reads and refreshes.

Every view must be a state the writer had: each entry is one the writer wrote
at that index and term, the log is contiguous from ``first_index()`` to
``last_index()``, each entry links to the version of the one before it (so two
states mixed would show a broken link), terms never decrease, the commit index
is within the log, the key/value data is exactly the state after the last batch
the view holds (rebuilt from the writer's journal).  Refreshes show
progress; after the writer stops, a refresh shows exactly its final state.  The
reader never takes a lock: the writer opens while views are open, and a view
opens while the writer runs (and after it was killed, mid-write).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from segwal.engine import StaleViewError, WalEngine

CHILD = Path(__file__).with_name("live_writer_child.py")
sys.path.insert(0, str(CHILD.parent))
import live_writer_child  # noqa: E402
from live_support import Journal, check_view, final_state  # noqa: E402
from live_writer_child import SEGMENT_SIZE  # noqa: E402


def start_writer(path: Path, seed: int, ops: int, final: Path | None) -> subprocess.Popen[bytes]:
    """Start the writer child and wait until its engine is open."""
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), str(path), str(seed), str(ops), str(final) if final else "-"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line != b"READY\n":
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"writer did not start: {line!r} {err.decode(errors='replace')}")
    return proc


def read_under_fire(
    path: Path, proc: subprocess.Popen[bytes], rng: random.Random, reader: WalEngine, journal: Journal
) -> dict[str, int]:
    """Refresh and check ``reader`` (and fresh views) until the writer exits."""
    stats = {"views": 0, "stale": 0, "opens": 0, "progress": 0}
    seen = (-1, -1)
    while proc.poll() is None:
        for _ in range(3):
            try:
                got = check_view(reader, rng, journal)
                break
            except StaleViewError:
                stats["stale"] += 1  # the writer purged a segment this view had not opened yet
                reader.refresh()
        else:
            pytest.fail("three refreshed views in a row went stale")
        stats["views"] += 1
        if got != seen:
            stats["progress"] += 1
            seen = got
        if rng.random() < 0.2:
            with WalEngine(path, readonly=True, segment_size=SEGMENT_SIZE) as fresh:
                stats["opens"] += 1
                try:
                    check_view(fresh, rng, journal)
                except StaleViewError:
                    stats["stale"] += 1
        reader.refresh()
    return stats


def test_views_of_a_live_writer_killed_and_restarted(tmp_path: Path) -> None:
    path = tmp_path / "node"
    final = tmp_path / "final.json"
    rng = random.Random(14)
    journal = Journal(path)
    with WalEngine(path, segment_size=SEGMENT_SIZE):
        pass  # an empty engine directory
    reader = WalEngine(path, readonly=True, segment_size=SEGMENT_SIZE)  # open before any writer: no lock held
    try:
        # Phase 1: a writer opens beside the open view, runs, and is killed mid-work.
        proc = start_writer(path, 1, -1, None)
        deadline = time.monotonic() + 2.5
        stats1 = {"views": 0, "progress": 0, "stale": 0}
        seen = (-1, -1)
        while time.monotonic() < deadline:
            try:
                got = check_view(reader, rng, journal)
            except StaleViewError:
                stats1["stale"] += 1
                reader.refresh()
                continue
            stats1["views"] += 1
            stats1["progress"] += got != seen
            seen = got
            reader.refresh()
        assert proc.poll() is None, "the writer died on its own"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()
        proc.stderr.close()
        reader.refresh()  # whatever the kill left (a frame cut short included) reads as a state the writer had
        check_view(reader, rng, journal)
        # Phase 2: a new writer recovers the directory (cutting a torn tail) under the open view, then works on.
        proc = start_writer(path, 2, 600, final)
        stats2 = read_under_fire(path, proc, rng, reader, journal)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode(errors="replace")
        reader.refresh()
        assert final_state(reader) == json.loads(final.read_text())
        assert reader.notes == []  # a cleanly closed writer leaves nothing in progress
    finally:
        reader.close()
    assert stats1["views"] >= 5 and stats1["progress"] >= 3, stats1
    assert stats2["views"] >= 5 and stats2["progress"] >= 3, stats2
    assert stats2["opens"] >= 1, stats2
    print(stats1, stats2)


def test_cli_inspects_verifies_and_dumps_a_running_node(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from segwal.cli import main

    path = tmp_path / "node"
    proc = start_writer(path, 3, -1, None)
    try:
        time.sleep(0.3)
        for _ in range(3):
            assert main(["verify", str(path)]) == 0, capsys.readouterr()
            out = capsys.readouterr().out
            assert "(live: read beside a writer at work): clean" in out, out
            assert "(live): verified up to offset" in out, out  # which part of the tail was live
            assert main(["inspect", "--json", str(path)]) == 0
            info = json.loads(capsys.readouterr().out)
            assert info["segments"] and info["last_index"] >= info["first_index"] - 1
            assert info["writer"] == "running"
            assert main(["dump", str(path)]) == 0
            lines = [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]
            idx = [x["index"] for x in lines]
            assert idx == list(range(idx[0], idx[0] + len(idx))) if idx else True
            time.sleep(0.2)
        assert proc.poll() is None  # the node ran on, never blocked
    finally:
        proc.kill()
        proc.communicate()


def test_a_reader_process_beside_a_writer_in_this_process(tmp_path: Path) -> None:
    path = tmp_path / "node"
    final, stop = tmp_path / "final.json", tmp_path / "stop"
    with WalEngine(path, segment_size=SEGMENT_SIZE):
        pass
    reader = subprocess.Popen(
        [sys.executable, str(CHILD.with_name("live_reader_child.py")), str(path), str(stop), str(final)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert reader.stdout is not None
        assert reader.stdout.readline() == b"READY\n"
        live_writer_child.main(str(path), 4, 600, str(final))  # the writer opens beside the reader's view
        stop.touch()
        out, err = reader.communicate(timeout=120)
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.communicate()
    assert reader.returncode == 0, err.decode(errors="replace")
    stats = json.loads(out.decode())
    assert stats["views"] >= 3 and stats["progress"] >= 2, stats  # refreshes showed the writer's progress
