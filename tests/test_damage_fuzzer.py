"""The damaged-directory fuzzer (issue 10): damage one thing, open, read everything, judge.

Each round copies one of the session's base directories (``tests/damage_fuzz.py``:
a cleanly closed engine with many small segments, a conflict overwrite, a purge,
a truncation, hard states, key/value data with a last-applied id, an insert and
a delete, and a snapshot file; and the same workload in a real writer killed
with SIGKILL, idle or in the middle of a call), damages it (bit flips, zeroed
ranges, truncation, garbage appended, noise, deletion, duplication under another
sequence number, two files swapped, and "crafted": a length, count, index or
kind field rewritten with every checksum recomputed, where only the exception
type, hangs, deaths and log entries are judged) in any file the engine writes (segments,
indexes, MANIFEST, HARDSTATE, key/value files, the snapshot given to
``install_snapshot``), opens it with ``WalEngine`` and reads every entry, the
hard state, every key and ``last_applied``.  The spec (docs/format.md,
docs/format-kv.md) decides per round what the damage must give:

* damage to anything acknowledged: a ``SegwalError`` from open or from the read
  that touches it, never wrong data, never silence;
* damage that holds nothing acknowledged (an index, bytes past the last frame,
  a leftover segment, a stray temporary file, a torn frame never acknowledged):
  a clean open with exactly what was written;
* where the spec allows both (the torn-tail window after a kill, bytes no read
  ever touches): either, but never wrong data;
* never another exception type, a hang (an alarm per round) or a dead process
  (rounds run in a child process, restarted after a death).

Knobs (environment): ``SEGWAL_FUZZ_SEED`` (default 10), ``SEGWAL_FUZZ_ROUNDS``
(default 600; 20,000 with ``--long``), ``SEGWAL_FUZZ_ROUND=r1,r2`` (replay only
those rounds), ``SEGWAL_FUZZ_BASES=DIR`` (build the bases there, or reuse them:
the killed-writer bases depend on timing, so an exact replay reuses them),
``SEGWAL_FUZZ_JOBS`` (worker processes; default 1, 2 with ``--long``).
The counts by file kind x damage kind x outcome are printed in the terminal
summary; each failing class is printed with a command that replays it alone.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import damage_fuzz as fz
import pytest
from damage_oracle import DAMAGES

from segwal.engine import WalEngine

HERE = Path(__file__).resolve().parent
CI_ROUNDS = 600
LONG_ROUNDS = 20_000
SILENCE_SECONDS = 120  # a worker that prints nothing this long is hung (the per-round alarm failed)


class _Summary:
    """Prints the fuzzer's counts in pytest's terminal summary (visible without ``-s``)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.lines:
            terminalreporter.section("damaged-directory fuzzer")
            for ln in self.lines:
                terminalreporter.write_line(ln)


@pytest.fixture(scope="session")
def summary(request: pytest.FixtureRequest) -> _Summary:
    s = _Summary()
    request.config.pluginmanager.register(s, "damage-fuzz-summary")
    return s


def _seed() -> int:
    return int(os.environ.get("SEGWAL_FUZZ_SEED", "10"))


@pytest.fixture(scope="session")
def bases_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    env = os.environ.get("SEGWAL_FUZZ_BASES")
    root = Path(env) if env else tmp_path_factory.mktemp("damage-bases")
    if not (root / "bases.pickle").exists():
        root.mkdir(parents=True, exist_ok=True)
        fz.build_bases(root, _seed())
    return root


def _rounds(config: pytest.Config) -> list[int]:
    only = os.environ.get("SEGWAL_FUZZ_ROUND")
    if only:
        return [int(x) for x in only.split(",")]
    n = int(os.environ.get("SEGWAL_FUZZ_ROUNDS", LONG_ROUNDS if config.getoption("--long") else CI_ROUNDS))
    return list(range(n))


def _run_worker(bases: Path, seed: int, todo: list[int]) -> list[dict[str, Any]]:
    """Run ``todo`` in child processes; a death or a hang is that round's outcome, then go on."""
    out: list[dict[str, Any]] = []
    while todo:
        proc = subprocess.Popen(
            [sys.executable, str(HERE / "damage_fuzz.py"), "run", str(bases), str(seed), ",".join(map(str, todo))],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=HERE.parent, env=fz.child_env(),
        )
        assert proc.stdout is not None
        done: list[dict[str, Any]] = []
        buf = b""
        last = time.monotonic()
        hung = False
        while True:
            ready, _, _ = select.select([proc.stdout], [], [], 5)
            if ready:
                chunk = os.read(proc.stdout.fileno(), 1 << 16)
                if not chunk:
                    break
                buf += chunk
                *lines, buf = buf.split(b"\n")
                done += [json.loads(ln) for ln in lines if ln]
                last = time.monotonic()
            elif time.monotonic() - last > SILENCE_SECONDS:
                hung = True
                break
        if hung:
            proc.kill()
        proc.wait()
        err = proc.stderr.read().decode(errors="replace")[-1500:]  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]
        proc.stdout.close()
        out += done
        todo = todo[len(done):]
        if todo:  # the worker died (or hung) in round todo[0]
            r = todo.pop(0)
            why = f"worker {'hung' if hung else f'died ({proc.returncode})'}: {err}"
            out.append({"round": r, "base": "?", "damage": "?", "target": "?", "expect": "?", "what": "?", "why": "",
                        "outcome": "HANG" if hung else "DEAD", "ok": False, "detail": why})
    return out


def _replay(bases: Path, seed: int, r: int) -> str:
    return (f"SEGWAL_FUZZ_SEED={seed} SEGWAL_FUZZ_ROUND={r} SEGWAL_FUZZ_BASES={bases} "
            f"python -m pytest tests/test_damage_fuzzer.py -k fuzzer")


def _report(results: list[dict[str, Any]], bases: Path, seed: int, secs: float) -> list[str]:
    lines = [f"{len(results)} rounds, seed {seed}, {secs:.1f} s, bases in {bases}"]
    by = Counter((r["target"], r["damage"], r["outcome"]) for r in results)
    targets = sorted({k[0] for k in by})
    for t in targets:
        for d in DAMAGES + ["?"]:
            cells = {o: n for (t2, d2, o), n in by.items() if (t2, d2) == (t, d)}
            if cells:
                lines.append(f"  {t:<13}{d:<10}" + "  ".join(f"{o}={n}" for o, n in sorted(cells.items())))
    fails = [r for r in results if not r["ok"]]
    lines.append(f"failures: {len(fails)}")
    classes: dict[tuple[str, str, str, str], list[dict[str, Any]]] = {}
    for r in fails:
        classes.setdefault((r["damage"], r["target"], r["base"], r["outcome"]), []).append(r)
    for (d, t, b, o), rs in sorted(classes.items()):
        x = rs[0]
        lines.append(f"  FAIL {len(rs)}x damage={d} file={t} base={b}: expected {x['expect']}, got {o}")
        lines.append(f"      e.g. round {x['round']}: {x.get('what')} ({x.get('why')})")
        lines.append(f"      {x['detail'].strip().splitlines()[-1][:300] if x['detail'].strip() else ''}")
        lines.append(f"      replay: {_replay(bases, seed, x['round'])}")
    return lines


def test_damage_fuzzer(bases_dir: Path, summary: _Summary, request: pytest.FixtureRequest) -> None:
    seed = _seed()
    rounds = _rounds(request.config)
    jobs = int(os.environ.get("SEGWAL_FUZZ_JOBS") or (2 if request.config.getoption("--long") else 1))
    t0 = time.monotonic()
    if jobs > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(jobs) as ex:
            parts = list(ex.map(lambda k: _run_worker(bases_dir, seed, rounds[k::jobs]), range(jobs)))
        results = sorted((r for p in parts for r in p), key=lambda r: r["round"])
    else:
        results = _run_worker(bases_dir, seed, rounds)
    secs = time.monotonic() - t0
    summary.lines += _report(results, bases_dir, seed, secs)
    if len(rounds) == 1:
        summary.lines.append(json.dumps(results[0], indent=1))
    assert len(results) == len(rounds)
    if len(rounds) >= 500:  # the run covers every kind of file and of damage
        assert {r["damage"] for r in results} >= set(DAMAGES) - {"?"}
        assert {r["target"] for r in results} >= {"wal", "wal-tail", "idx", "MANIFEST", "HARDSTATE", "kv", "kv-last",
                                                  "snapshot"}
    fails = [r for r in results if not r["ok"]]
    assert not fails, "\n".join(_report(fails, bases_dir, seed, secs)[1:])


def test_undamaged_bases_open_exactly(bases_dir: Path) -> None:
    """The oracle's own check: every base opens, without damage, to exactly what it says."""
    for b in fz.load_bases(bases_dir):
        top = max([i for s in b.legal for i, _, _ in s.entries] + [1]) + 3
        copy = bases_dir / "undamaged" / Path(b.path).parent.name
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(b.path, copy)
        with WalEngine(copy, segment_size=fz.SEG) as e:
            items, errors = fz._observe(e, top)
        assert not errors
        items.pop("first"), items.pop("last")
        assert items == fz._expected_items(b.ref, top), b.name
