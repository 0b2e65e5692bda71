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
from typing import Any

import pytest

from segwal.engine import StaleViewError, WalEngine

CHILD = Path(__file__).with_name("live_writer_child.py")
sys.path.insert(0, str(CHILD.parent))
from live_writer_child import KEYS, SEGMENT_SIZE, parse  # noqa: E402


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


class Journal:
    """The writer's key/value journal: the exact state after each batch."""

    def __init__(self, path: Path) -> None:
        self.path = Path(str(path) + ".kv.jsonl")
        self.batches: dict[int, list[list[str | None]]] = {}
        self.pos = 0

    def state_after(self, n: int) -> dict[bytes, bytes]:
        if any(m not in self.batches for m in range(1, n + 1)):
            with open(self.path) as f:
                f.seek(self.pos)
                for line in f:
                    if not line.endswith("\n"):
                        break
                    self.pos += len(line.encode())
                    if line.strip():
                        m, changes = json.loads(line)
                        self.batches[m] = changes
        state: dict[bytes, bytes] = {}
        for m in range(1, n + 1):
            for k, v in self.batches[m]:
                assert k is not None
                if v is None:
                    state.pop(k.encode(), None)
                else:
                    state[k.encode()] = v.encode()
        return state


def check_view(r: WalEngine, rng: random.Random, journal: Journal | None = None) -> tuple[int, int]:
    """Check one view (see the module docstring); returns (last index, kv batch number)."""
    first, last = r.first_index(), r.last_index()
    ents = r.get_entries_range(first, last)
    assert [e.index for e in ents] == list(range(first, first + len(ents)))
    assert not ents or ents[-1].index == last, (first, last, len(ents))
    prev = None
    for e in ents:
        i, t, v, p = parse(e.payload)
        assert (i, t) == (e.index, e.term), f"entry {e.index} (term {e.term}) holds {e.payload[:40]!r}"
        if prev is not None:
            assert e.term >= prev[0], f"term goes down at {e.index}"
            assert p == prev[1], f"entry {e.index} follows version {p}, the view has {prev[1]} before it"
        prev = (e.term, v)
    for i in rng.sample(range(first, last + 1), min(5, len(ents))):
        assert r.entry(i) == ents[i - first]
    hs = r.load_hard_state()
    if hs is not None:
        assert hs.commit_index <= last
    seq_v = r.get(b"seq")
    n = int(seq_v) if seq_v is not None else 0
    kv = {k: v for k in [*KEYS, b"seq"] if (v := r.get(k)) is not None}
    for k, val in kv.items():
        assert int(val.split(b":")[0]) <= n, f"{k!r} holds batch {val[:12]!r}, newer than the view's {n}"
    if journal is not None:
        assert kv == journal.state_after(n), f"the key/value data is not the state after batch {n}"
    return last, n


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


def final_state(r: WalEngine) -> dict[str, Any]:
    hs = r.load_hard_state()
    la = r.last_applied()
    return {
        "entries": [[x.index, x.term, x.payload.decode()] for x in r.get_entries_range(r.first_index(), r.last_index())],
        "kv": {k.decode(): v.decode() for k in sorted([*KEYS, b"seq"]) if (v := r.get(k)) is not None},
        "hard": None if hs is None else [hs.current_term, hs.commit_index],
        "applied": None if la is None else [la.term, la.index],
    }


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
            assert "(live: a writer had the directory open): clean" in out, out
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
