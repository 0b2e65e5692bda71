"""kill -9 of a real writer process at random moments, over and over on one directory.

Strategy: ``tests/kill9_child.py`` runs a seeded random Raft-like workload on a
``WalEngine`` with ``sync="always"`` and a small segment size (appends,
conflicting overwrites, suffix truncations, purges, hard-state saves,
key/value applies; rotations every few calls).  Before each call it prints
``DO <call>``, after it returns ``ACK``.  The parent SIGKILLs it after a short
seeded random delay (sometimes while it is still opening, so recovery itself
gets killed), reopens the directory in-process and requires the state to be
exactly the acknowledged one, or that plus the one call in flight:

* every acknowledged entry present with its payload, nothing truncated or
  purged coming back;
* the log contiguous from ``first_index`` to ``last_index``, terms never
  decreasing;
* hard state and key/value data (and ``last_applied``) as last acknowledged;
* a second open shows the same state.

Then the next child starts on the same directory.  At least 50 kills in the
default run; ``pytest --long`` does 500.  This is the process-kill model (the
page cache survives); power loss is the crash simulator's job
(``tests/test_crash_harness.py``).
"""

from __future__ import annotations

import importlib.util
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from itertools import pairwise
from pathlib import Path

import pytest

from segwal.engine import WalEngine

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL (POSIX)")

CHILD = Path(__file__).with_name("kill9_child.py")
_spec = importlib.util.spec_from_file_location("kill9_child", CHILD)
assert _spec is not None and _spec.loader is not None
child = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(child)

KILLS_CI = 50
KILLS_LONG = 500
KEYS = [f"k{i}" for i in range(5)]


@dataclass
class Model:
    """What the engine must show: entries (index -> term), purge boundary, hard state, key/value."""

    entries: dict[int, int] = field(default_factory=dict)
    boundary: tuple[int, int] | None = None  # (term, index)
    hard: tuple[int, int, int] | None = None  # (term, vote id or 0, commit)
    kv: dict[str, str] = field(default_factory=dict)
    applied: tuple[int, int] | None = None  # (term, index)

    def after(self, call: list[str]) -> Model:
        """The state after one call (``DO`` line fields)."""
        m = replace(self, entries=dict(self.entries), kv=dict(self.kv))
        op, args = call[0], [int(x) if x.lstrip("-").isdigit() else x for x in call[1:]]
        if op == "P":
            a, b, t = args
            m.entries = {i: x for i, x in m.entries.items() if i < a}
            m.entries.update({i: t for i in range(a, b + 1)})
        elif op == "T":
            m.entries = {i: x for i, x in m.entries.items() if i < args[0]}
        elif op == "G":
            idx, t = args
            m.entries = {i: x for i, x in m.entries.items() if i > idx}
            m.boundary = (t, idx)
        elif op == "H":
            m.hard = (args[0], args[1], args[2])
        elif op == "K":
            key, value, idx, t = args
            m.kv[str(key)] = str(value)
            if idx:
                m.applied = (t, idx)
        else:  # pragma: no cover - protocol error
            raise AssertionError(call)
        return m


def observe(path: str) -> tuple[Model, list[str]]:
    """Open the engine and read its whole state; returns it and the problems seen."""
    problems: list[str] = []
    with WalEngine(path, segment_size=child.SEGMENT_SIZE) as e:
        first, last = e.first_index(), e.last_index()
        got = e.get_entries_range(first, last)
        idx = [x.index for x in got]
        if idx != list(range(first, first + len(idx))) or (got and idx[-1] != last):
            problems.append(f"log not contiguous: first {first}, last {last}, indexes {idx[:3]}..{idx[-3:]}")
        terms = [x.term for x in got]
        if any(b < a for a, b in pairwise(terms)):
            problems.append(f"terms decrease: {terms}")
        for x in got:
            if x.payload != child.payload(x.index, x.term):
                problems.append(f"entry {x.index} (term {x.term}) has a wrong payload")
        pb = e.purge_boundary()
        hs = e.load_hard_state()
        la = e.last_applied()
        m = Model(
            entries={x.index: x.term for x in got},
            boundary=None if pb is None else (pb.term, pb.index),
            hard=None if hs is None else (
                hs.current_term, hs.voted_for.voted_for_id if hs.voted_for else 0, hs.commit_index),
            kv={k: v.decode() for k in KEYS if (v := e.get(k.encode())) is not None},
            applied=None if la is None else (la.term, la.index),
        )
        if hs is not None and hs.commit_index > last:
            problems.append(f"commit index {hs.commit_index} beyond last index {last}")
    return m, problems


def run_child(path: str, seed: int, rng: random.Random) -> tuple[list[list[str]], list[str] | None, bool]:
    """Start a child, kill it at a random moment; return (acknowledged calls,
    the call in flight or None, whether it got as far as READY)."""
    # the child imports segwal from this checkout (its root first on sys.path), as this test does
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), path, str(seed)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None and proc.stderr is not None
    head = b""
    try:
        if rng.random() < 0.1:
            time.sleep(rng.uniform(0.0, 0.3))  # often while it opens and recovers
        else:
            head = proc.stdout.readline()
            if head != b"READY\n":
                proc.wait(timeout=30)
                pytest.fail(f"child did not start: {head!r} {proc.stderr.read().decode(errors='replace')}")
            time.sleep(rng.uniform(0.0, 0.15))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        rest = proc.stdout.read()
        err = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    if proc.returncode != -signal.SIGKILL:
        pytest.fail(f"child exited by itself ({proc.returncode}): {err.decode(errors='replace')[-2000:]}")
    lines = (head + rest).decode().splitlines()
    acked: list[list[str]] = []
    inflight: list[str] | None = None
    ready = False
    for ln in lines:
        if ln == "READY":
            ready = True
        elif ln.startswith("DO "):
            inflight = ln.split()[1:]
        elif ln == "ACK":
            assert inflight is not None
            acked.append(inflight)
            inflight = None
        # a torn last line cannot happen (one write per line) but is ignored anyway
    return acked, inflight, ready


def _kills(request: pytest.FixtureRequest) -> int:
    try:
        long = bool(request.config.getoption("--long", default=False))
    except ValueError:
        long = False
    return KILLS_LONG if long else KILLS_CI


def test_acknowledged_state_survives_repeated_kill9(tmp_path: Path, request: pytest.FixtureRequest,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    kills = _kills(request)
    path = str(tmp_path / "engine")
    rng = random.Random(20240519)
    model = Model()
    t0 = time.perf_counter()
    total_acked = 0
    in_flight_applied = 0
    for k in range(kills):
        acked, inflight, _ = run_child(path, 1000 + k, rng)
        for call in acked:
            model = model.after(call)
        total_acked += len(acked)
        legal = [model] + ([model.after(inflight)] if inflight is not None else [])
        seen, problems = observe(path)
        assert not problems, f"kill {k}: {problems}"
        assert seen in legal, (
            f"kill {k}: state after recovery is neither the acknowledged one nor that plus the call in flight "
            f"{inflight}:\n expected {legal[0]}\n found    {seen}"
        )
        again, _ = observe(path)
        assert again == seen, f"kill {k}: a second open differs from the first"
        if inflight is not None and seen != legal[0]:
            in_flight_applied += 1
        model = seen
    elapsed = time.perf_counter() - t0
    with capsys.disabled():
        print(f"\nkill -9: {kills} kills, {total_acked} acknowledged calls checked "
              f"({in_flight_applied} in-flight calls found applied), last index {max(model.entries, default=0)}, "
              f"{elapsed:.1f}s")
    assert total_acked > kills  # the kills did land during real work
    assert model.boundary is not None or kills < 50  # purges happened
