"""The built-in crash test behind ``segwal crashtest [--states N] [--seed S]``.

Strategy: record one mixed workload on a :class:`~segwal.testing.RecordingFS`
(appends, conflicting overwrites, suffix truncations, purges, segment rotations
with a 512-byte segment size, hard-state saves and key/value writes, each
acknowledged call marked by :class:`~segwal.testing.TrackedEngine`), then
check crash states of it with the default invariants.

The budget is spread over the whole workload: every state the simulator can
generate is counted first (cheap: no engine is opened), then ``states`` of them
are drawn at random (seeded) and checked, so a small budget still reaches the
purges and truncations at the end of the workload instead of stopping after the
first few crash points.  The seed drives the workload's payload sizes, the
simulator's choices and the sample.
"""

from __future__ import annotations

import logging
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from segwal.testing.checker import ScratchFS, check_state, scratch_root
from segwal.testing.crash import CrashSimulator
from segwal.testing.invariants import DEFAULT_INVARIANTS
from segwal.testing.recording import Recording, RecordingFS
from segwal.testing.tracking import TrackedEngine

__all__ = ["SEGMENT_SIZE", "record_workload", "run_crashtest"]

#: Small, so the workload rotates segments every few calls.
SEGMENT_SIZE = 512
_SUBDIR = "db"


def record_workload(root: str | Path, seed: int = 0) -> Recording:
    """Run the built-in workload on a RecordingFS rooted at ``root``; return the recording.

    Complexity: about 60 engine calls on a scratch directory (no real syncs).
    """
    from segwal.engine import Entry, HardState, LogId, VotedFor, WalEngine

    rng = random.Random(seed)
    fs = RecordingFS(root)

    def pay(i: int, t: int) -> bytes:
        return (b"%d/%d;" % (i, t)) * rng.randint(2, 40)

    with TrackedEngine(WalEngine(str(Path(root) / _SUBDIR), fs=fs, segment_size=SEGMENT_SIZE), fs) as wal:
        wal.save_hard_state(HardState(1, VotedFor(1, 1), 0))
        nxt = 1
        for _ in range(4):  # appends, rotating
            n = rng.randint(1, 3)
            wal.persist_entries([Entry(i, 1, pay(i, 1)) for i in range(nxt, nxt + n)])
            nxt += n
        wal.insert(b"a", b"1")
        wal.persist_entries([Entry(nxt - 1, 2, pay(nxt - 1, 2)), Entry(nxt, 2, pay(nxt, 2))])  # conflict overwrite
        nxt += 1
        wal.save_hard_state(HardState(2, VotedFor(2, 2), nxt - 3))
        wal.truncate(nxt - 1)
        nxt -= 1
        wal.persist_entries([Entry(nxt, 3, pay(nxt, 3) * 4)])  # large: a segment of its own
        nxt += 1
        wal.purge_logs(LogId(1, 2))
        wal.apply([(b"b", b"2"), (b"a", None)], LogId(3, nxt - 1))
        for _ in range(4):
            wal.persist_entries([Entry(nxt, 3, pay(nxt, 3))])
            nxt += 1
        wal.save_hard_state(HardState(3, VotedFor(2, 3), nxt - 2))
        wal.purge_logs(LogId(3, nxt - 3))
        wal.truncate(nxt - 1)  # truncate the last entry (above the commit index)
        wal.delete(b"b")
        wal.insert(b"c", b"3" * rng.randint(1, 300))
    return fs.recording()


def _open_state(path: str) -> Any:
    from segwal.engine import WalEngine

    return WalEngine(path, fs=ScratchFS(), segment_size=SEGMENT_SIZE)


def run_crashtest(
    states: int,
    seed: int,
    out: Callable[[str], object] = print,
    *,
    open_engine: Callable[[str], Any] | None = None,
) -> int:
    """Record the built-in workload, check about ``states`` crash states, print a report.

    Args:
        states: how many crash states to check (all of them when fewer exist).
        seed: seeds the workload, the simulator and the sample.
        out: where report lines go.
        open_engine: ``path -> engine`` for each state (default: ``WalEngine``
            with the workload's segment size, on the real file system without syncs).

    Returns 0 when every checked state passed, 1 otherwise.
    """
    if states < 1:
        raise ValueError(f"states must be >= 1, got {states}")
    opener = open_engine or _open_state
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="segwal-crashtest-") as tmp:
        rec = record_workload(Path(tmp) / "recorded", seed)
    sim = CrashSimulator(rec, seed=seed, per_point=48)
    per_gen_total: dict[str, int] = {}
    total = 0
    for st in sim.states():
        total += 1
        per_gen_total[st.generator] = per_gen_total.get(st.generator, 0) + 1
    chosen = set(range(total)) if total <= states else set(random.Random(seed).sample(range(total), states))
    out(
        f"segwal crashtest: seed {seed}, workload of {len(rec.ops)} file operations and "
        f"{len(rec.marks)} acknowledged calls; {total} distinct crash states over "
        f"{sim.stats.points} crash points; checking {len(chosen)}"
    )
    checked: dict[str, int] = {}
    failures: list[tuple[str, list[str]]] = []
    # Recovery logs a warning per torn tail cut or index rebuilt: expected here,
    # and hundreds of them would drown the report.
    logger = logging.getLogger("segwal")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        _check_sample(sim, rec, chosen, opener, checked, failures)
    finally:
        logger.setLevel(level)
    for gen, n in per_gen_total.items():
        out(f"  {gen:<14} {checked.get(gen, 0):>6} checked of {n:>6}")
    explored = sum(checked.values())
    out(f"{explored} crash states explored in {time.perf_counter() - t0:.1f}s: {len(failures)} failed")
    for desc, problems in failures[:10]:
        out(f"FAILED {desc}")
        for p in problems:
            out(f"    {p}")
    if len(failures) > 10:
        out(f"... and {len(failures) - 10} more failed states")
    return 1 if failures else 0


def _check_sample(
    sim: CrashSimulator,
    rec: Recording,
    chosen: set[int],
    opener: Callable[[str], Any],
    checked: dict[str, int],
    failures: list[tuple[str, list[str]]],
) -> None:
    """Regenerate the states (deterministic for a seed) and check the chosen ones."""
    with tempfile.TemporaryDirectory(prefix="segwal-crashtest-", dir=scratch_root()) as tmp:
        for n, st in enumerate(sim.states()):
            if n not in chosen:
                continue
            checked[st.generator] = checked.get(st.generator, 0) + 1
            problems = check_state(
                st, rec, workdir=Path(tmp) / f"s{n}", open_engine=opener,
                engine_subdir=_SUBDIR, invariants=DEFAULT_INVARIANTS,
            )
            shutil.rmtree(Path(tmp) / f"s{n}", ignore_errors=True)
            if problems:
                failures.append((st.describe(), problems))
