"""The damaged-directory fuzzer's machinery (``tests/test_damage_fuzzer.py`` drives it).

Three parts:

* **Bases**: engine directories built once per session.  ``clean``: a scripted
  workload (many small segments, a conflict overwrite, a purge, a truncation,
  hard states, key/value applies with a last-applied id, an insert, a delete),
  closed cleanly, plus a snapshot file.  ``kill9-*``: the same workload run by a
  real child process (``python tests/damage_fuzz.py child ...``) killed with
  SIGKILL, either idle after its last acknowledged call or in the middle of one.
* **An oracle from the spec** (docs/format.md, docs/format-kv.md), written
  from the documents, not from the engine: it parses the MANIFEST, segments,
  index headers and key/value frames of the undamaged base and decides, from
  where a damage lands, what it must give: ``error`` (it hits acknowledged
  bytes, or the spec says ``CorruptionError``), ``clean`` (it holds nothing
  acknowledged: an index, bytes past the last frame, a leftover, a stray
  temporary), or ``either`` (the spec allows both, e.g. the documented torn-tail
  window after a kill, or bytes that no read ever touches).  For a cut the
  spec allows it computes the state the cut leaves.
* **Rounds**: ``run_round`` copies a base, damages it, opens it with the public
  API (``WalEngine``), reads every entry, the hard state, every key and
  ``last_applied`` (or installs the damaged snapshot) and classifies the outcome.
  ``python tests/damage_fuzz.py run BASES SEED START COUNT`` runs rounds in one
  process, each under an alarm, printing one JSON line per round.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any

from damage_oracle import DAMAGES, Base, Damage, Oracle, State, damage, frames  # noqa: F401 (re-exported)

from segwal.engine import Entry, HardState, LogId, SegwalError, VotedFor, WalEngine

SEG = 1024


def small_key_index() -> None:
    """Have the engines of this process checkpoint their key index (kv-G.index) every few
    changes, so the bases hold one and damage lands in it (a cache: must open cleanly)."""
    from segwal.kv import store as kvstore

    kvstore.INDEX_EVERY = 4
    kvstore.INDEX_MIN_KEYS = 0
ROOT = Path(__file__).resolve().parents[1]


def child_env() -> dict[str, str]:
    """The environment of a child process: this checkout's segwal first (not an installed copy)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env

ROUND_SECONDS = 20  # alarm per round (open + full read); a hang is a failure
KEYS = [b"key%02d" % i for i in range(16)]
ERR = "<raised SegwalError>"

# ----------------------------------------------------------------------------- the workload


def payload(index: int, term: int, salt: int) -> bytes:
    """The payload of entry ``index`` written in ``term`` (10..150 bytes)."""
    return (b"%d.%d.%d|" % (index, term, salt)) * (1 + (index * 7 + term * 13 + salt) % 14)


def script(seed: int, nops: int = 100) -> list[tuple[Any, ...]]:
    """A deterministic Raft-like workload; covers every kind of operation at least once."""
    rng = random.Random(seed)
    ops: list[tuple[Any, ...]] = []
    last, commit, term, first, applied_ok = 0, 0, 1, 1, 0
    salt = 0
    forced = ["P", "P", "P", "P", "A", "O", "H", "T", "P", "P", "G", "I", "D", "A"]
    for n in range(nops):
        kind = forced[n] if n < len(forced) else rng.choices("POTGHAID", [45, 8, 5, 4, 10, 14, 6, 4])[0]
        salt += 1
        if kind == "O" and last > commit and last >= first:  # conflict overwrite
            term += 1
            start = rng.randint(max(commit + 1, first, last - 5), last)
            ops.append(("P", start, start + rng.randint(1, 4) - 1, term, salt))
            last = ops[-1][2]
        elif kind == "T" and last > commit and last >= first:
            k = rng.randint(max(commit + 1, first), last)
            ops.append(("T", k))
            last = k - 1
        elif kind == "G" and commit - first > 8:
            idx = rng.randint(first, commit - 3)
            ops.append(("G", idx))
            first = idx + 1
        elif kind == "H" and last >= 1:
            commit = rng.randint(commit, last)
            ops.append(("H", term, rng.randint(0, 3), commit))
        elif kind == "A":
            ch = [(rng.choice(KEYS), bytes([65 + salt % 26]) * rng.randint(5, 220)) for _ in range(rng.randint(1, 4))]
            if rng.random() < 0.15:
                ch.append((rng.choice(KEYS), None))
            applied_ok = max(applied_ok, min(commit, last))
            ops.append(("A", ch, applied_ok if applied_ok >= first else 0))
        elif kind == "I":
            ops.append(("I", rng.choice(KEYS), b"ins%d" % salt * rng.randint(1, 9)))
        elif kind == "D":
            ops.append(("D", rng.choice(KEYS)))
        else:
            if rng.random() < 0.1:
                term += 1
            k = rng.randint(1, 5)
            ops.append(("P", last + 1, last + k, term, salt))
            last += k
    return ops


def after(s: State, op: tuple[Any, ...]) -> State:
    """The state after one scripted call."""
    log, kv = s.log(), dict(s.kv)
    if op[0] == "P":
        _, a, b, t, salt = op
        log = {i: x for i, x in log.items() if i < a}
        log.update({i: (t, payload(i, t, salt)) for i in range(a, b + 1)})
    elif op[0] == "T":
        log = {i: x for i, x in log.items() if i < op[1]}
    elif op[0] == "G":
        t = log[op[1]][0]
        log = {i: x for i, x in log.items() if i > op[1]}
        s = replace(s, boundary=(t, op[1]))
    elif op[0] == "H":
        _, t, vote, c = op
        s = replace(s, hard=HardState(t, VotedFor(vote, t) if vote else None, c))
    elif op[0] in "AID":
        changes = op[1] if op[0] == "A" else [(op[1], op[2])] if op[0] == "I" else [(op[1], None)]
        for k, v in changes:
            if v is None:
                kv.pop(k, None)
            else:
                kv[k] = v
        if op[0] == "A" and op[2]:
            s = replace(s, applied=(log[op[2]][0], op[2]))
    return replace(s, entries=tuple((i, t, p) for i, (t, p) in sorted(log.items())), kv=tuple(sorted(kv.items())))


def perform(e: WalEngine, s: State, op: tuple[Any, ...]) -> None:
    """Run one scripted call on an engine whose acknowledged state is ``s``."""
    if op[0] == "P":
        _, a, b, t, salt = op
        e.persist_entries([Entry(i, t, payload(i, t, salt)) for i in range(a, b + 1)])
    elif op[0] == "T":
        e.truncate(op[1])
    elif op[0] == "G":
        e.purge_logs(LogId(s.log()[op[1]][0], op[1]))
    elif op[0] == "H":
        _, t, vote, c = op
        e.save_hard_state(HardState(t, VotedFor(vote, t) if vote else None, c))
    elif op[0] == "A":
        e.apply(op[1], LogId(s.log()[op[2]][0], op[2]) if op[2] else None)
    elif op[0] == "I":
        e.insert(op[1], op[2])
    else:
        e.delete(op[1])


def child_main(path: str, seed: int, nops: int) -> None:
    """The writer that is killed: ``DO n`` before call n, ``ACK n`` after, ``PAUSE`` at the end."""
    import segwal

    assert Path(segwal.__file__).resolve().parents[1] == ROOT, f"segwal imported from {segwal.__file__}, not {ROOT}"
    small_key_index()
    e = WalEngine(path, segment_size=SEG, sync="always")
    s = State()
    out = sys.stdout
    for n, op in enumerate(script(seed, nops)):
        out.write(f"DO {n}\n")
        out.flush()
        perform(e, s, op)
        s = after(s, op)
        out.write(f"ACK {n}\n")
        out.flush()
    out.write("PAUSE\n")
    out.flush()
    sys.stdin.read()  # killed here (idle bases); never closed cleanly


# ----------------------------------------------------------------------------- bases


def build_clean(root: Path, seed: int) -> Base:
    from segwal.kv import store as kvstore

    saved = kvstore.INDEX_EVERY, kvstore.INDEX_MIN_KEYS
    small_key_index()
    try:
        return _build_clean(root, seed)
    finally:
        kvstore.INDEX_EVERY, kvstore.INDEX_MIN_KEYS = saved


def _build_clean(root: Path, seed: int) -> Base:
    path = root / "engine"
    s = State()
    with WalEngine(path, segment_size=SEG) as e:
        for op in script(seed):
            perform(e, s, op)
            s = after(s, op)
        snap = root / "snapshot"
        sid = e.snapshot(snap)
    snap_state = State(boundary=(sid.term, sid.index), hard=s.hard, kv=s.kv, applied=(sid.term, sid.index))
    return finish(Base("clean", str(path), True, [s], s, str(snap), snap_state))


def build_kill9(root: Path, seed: int, mid: bool) -> Base:
    """Run the workload in a child and SIGKILL it: idle after its last call, or during call ``stop``."""
    path = root / "engine"
    ops = script(seed)
    stop = random.Random(seed).randrange(len(ops) // 2, len(ops)) if mid else len(ops)
    proc = subprocess.Popen([sys.executable, __file__, "child", str(path), str(seed), str(len(ops))],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env())
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        while True:
            ln = proc.stdout.readline().decode()
            if not ln:
                raise AssertionError(f"child died: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            lines.append(ln.strip())
            if ln.strip() in ("PAUSE", f"DO {stop}"):
                break
        if mid:
            time.sleep(random.Random(seed + 1).uniform(0, 0.004))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        lines += proc.stdout.read().decode().splitlines()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    acked = [int(ln.split()[1]) for ln in lines if ln.startswith("ACK ")]
    s = State()
    for n in acked:
        s = after(s, ops[n])
    legal = [s]
    if len(acked) < len(ops):
        legal.append(after(s, ops[len(acked)]))
    return finish(Base("kill9-mid" if mid else "kill9-idle", str(path), False, legal, s))


def finish(b: Base) -> Base:
    """Read the files, replay them with the oracle, check that against the acknowledged state."""
    root = Path(b.path)
    b.files = {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    b.ref = Oracle(b).replay()
    assert b.ref in b.legal, f"{b.name}: the oracle's replay of the undamaged base is not a legal state"
    return b


def build_bases(root: Path, seed: int) -> list[Base]:
    """The session's bases (one clean, two killed while idle, two killed mid-call), pickled in ``root``."""
    specs = [("clean", 0), ("kill9-idle", 1), ("kill9-idle", 2), ("kill9-mid", 3), ("kill9-mid", 4)]
    bases = []
    for name, k in specs:
        d = root / f"{name}-{k}"
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        s = seed * 10 + k
        bases.append(build_clean(d, s) if name == "clean" else build_kill9(d, s, name == "kill9-mid"))
    with open(root / "bases.pickle", "wb") as f:
        pickle.dump(bases, f)
    return bases


def load_bases(root: Path) -> list[Base]:
    with open(root / "bases.pickle", "rb") as f:
        return pickle.load(f)  # type: ignore[no-any-return]


# ----------------------------------------------------------------------------- rounds


class RoundTimeout(BaseException):
    """The round's alarm fired: open or a read hung."""


def _observe(e: WalEngine, top: int) -> tuple[dict[str, Any], list[str]]:
    """Everything the public API shows; an item whose read raised SegwalError is recorded as the error."""
    items: dict[str, Any] = {}
    errors: list[str] = []

    def get(name: str, fn: Any) -> None:
        try:
            items[name] = fn()
        except SegwalError as x:
            errors.append(f"{name}: {type(x).__name__}: {x}")
            items[name] = ERR

    first, last = e.first_index(), e.last_index()
    items["first"], items["last"] = first, last
    for i in range(1, top + 1):
        get(f"entry {i}", lambda i=i: e.entry(i))
    get("range", lambda: e.get_entries_range(1, top))
    beyond = []  # indexes past anything ever written that return an entry (last_index() may claim them)
    for i in range(top + 1, min(last, top + 100) + 1):
        try:
            if e.entry(i) is not None:
                beyond.append(i)
        except SegwalError:
            pass
    items["beyond"] = beyond
    get("boundary", e.purge_boundary)
    get("hard", e.load_hard_state)
    for k in KEYS:
        get(f"key {k.decode()}", lambda k=k: e.get(k))
    get("applied", e.last_applied)
    return items, errors


def _expected_items(s: State, top: int) -> dict[str, Any]:
    log = s.log()
    out: dict[str, Any] = {f"entry {i}": (Entry(i, *log[i]) if i in log else None) for i in range(1, top + 1)}
    out["range"] = [Entry(i, t, p) for i, t, p in s.entries]
    out["beyond"] = []
    out["boundary"] = None if s.boundary is None else LogId(*s.boundary)
    out["hard"] = s.hard
    kv = dict(s.kv)
    out.update({f"key {k.decode()}": kv.get(k) for k in KEYS})
    out["applied"] = None if s.applied is None else LogId(*s.applied)
    return out


def _judge(items: dict[str, Any], errors: list[str], dmg: Damage, base: Base, top: int) -> tuple[str, bool, str]:
    """(outcome, ok, detail) for an open that succeeded."""
    first, last = items.pop("first"), items.pop("last")
    if dmg.expect == "forged":  # the entries returned must be ones that were written (first/last may lie)
        cands = [_expected_items(s, top) for s in [base.ref, *base.legal]]
        bad = [n for n, v in items.items() if n.startswith("entry") and v not in (None, ERR)
               and not any(c[n] == v for c in cands)] + [f"entry {i}" for i in items["beyond"]]
        if bad:
            return "WRONG", False, f"entries never written: {bad[:3]}: " + _diff(items, dmg, base, top)
        return ("error-read" if errors else "clean-forged"), True, errors[0] if errors else ""
    got = {i: items[f"entry {i}"] for i in range(1, top + 1) if items[f"entry {i}"] is not None}
    if got and (first != min(got) or last != max(got) or len(got) != last - first + 1):
        return "WRONG", False, f"first/last {first}/{last} do not match the readable entries {min(got)}..{max(got)}"
    if not errors:
        for s in dmg.states:
            if items == _expected_items(s, top):
                exact = s in (base.ref, base.snap_state)
                return ("clean" if exact else "clean-cut"), dmg.expect != "error", ""
        if dmg.expect == "error":
            legal = any(items == _expected_items(s, top) for s in [base.ref, *base.legal])
            return "clean", False, "silent: no error" + ("" if legal else "; and the data differs from what was written")
        return "WRONG", False, "opened cleanly with data that matches no allowed state: " + _diff(items, dmg, base, top)
    # some reads raised: every other item must still be one an allowed state holds
    cands = [_expected_items(s, top) for s in [base.ref, *base.legal, *dmg.states]]
    bad = [n for n, v in items.items() if v != ERR and not any(c[n] == v for c in cands)]
    if bad:
        return "WRONG", False, f"read error(s) {errors[:1]} and wrong items {bad[:3]}: " + _diff(items, dmg, base, top)
    return "error-read", dmg.expect != "clean", errors[0]


def _diff(items: dict[str, Any], dmg: Damage, base: Base, top: int) -> str:
    want = _expected_items((dmg.states or [base.ref])[0], top)
    out = [f"{n}: got {str(v)[:80]} want {str(want.get(n))[:80]}" for n, v in items.items() if want.get(n) != v]
    return "; ".join(out[:4])


def run_round(bases: list[Base], seed: int, r: int, work: Path) -> dict[str, Any]:
    """One round: copy a base, damage it, open and read it, classify.  Never raises."""
    rng = random.Random(f"{seed}/{r}")
    base = rng.choice(bases)
    snapshot_round = base.snapshot is not None and rng.random() < 0.25
    d = work / f"r{r}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    shutil.copytree(base.path, d)
    snap = None
    if snapshot_round:
        snap = work / "snapshot"
        shutil.copy(base.snapshot, snap)  # type: ignore[arg-type]
    res: dict[str, Any] = dict(round=r, base=base.name)
    try:
        dmg = damage(base, d, rng, snap)
    except Exception:  # a bug of the fuzzer itself
        res.update(damage="?", target="?", expect="?", what="?", why="?", outcome="FUZZER-BUG", ok=False,
                   detail=traceback.format_exc())
        return res
    res.update(damage=dmg.kind, target=dmg.target, expect=dmg.expect, what=dmg.what, why=dmg.why)
    top = max([i for s in [*base.legal, base.ref] for i, _, _ in s.entries] + [1]) + 3
    signal.setitimer(signal.ITIMER_REAL, ROUND_SECONDS)
    e = None
    try:
        try:
            e = WalEngine(d, segment_size=SEG, preallocate=False)
        except SegwalError as x:
            if snapshot_round:
                raise AssertionError(f"the undamaged base failed to open: {x!r}") from x
            outcome, ok, detail = "error-open", dmg.expect != "clean", f"{type(x).__name__}: {x}"
        else:
            if snapshot_round:
                try:
                    e.install_snapshot(snap)  # type: ignore[arg-type]
                    items, errors = _observe(e, top)
                    outcome, ok, detail = _judge(items, errors, dmg, base, top)
                except SegwalError as x:
                    items, errors = _observe(e, top)
                    sub = replace(dmg, expect="clean", states=[base.ref])
                    o2, ok2, d2 = _judge(items, errors, sub, base, top)
                    outcome, ok = "error-install", dmg.expect != "clean" and ok2
                    detail = f"{type(x).__name__}: {x}" + ("" if ok2 else f"; and the state changed: {o2} {d2}")
            else:
                items, errors = _observe(e, top)
                outcome, ok, detail = _judge(items, errors, dmg, base, top)
            e.close()
            e = None
    except RoundTimeout:
        outcome, ok, detail = "HANG", False, f"no answer within {ROUND_SECONDS} s"
    except BaseException as x:  # noqa: BLE001 - any other exception type is a finding
        outcome, ok, detail = "BAD-EXCEPTION", False, "".join(traceback.format_exception(x))[-3000:]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        if e is not None:
            try:
                e.close()
            except BaseException:  # noqa: BLE001
                pass
    res.update(outcome=outcome, ok=ok, detail=detail)
    return res


def run_main(bases_dir: str, seed: int, rounds: list[int]) -> None:
    """Run rounds in this process, one JSON line each (the parent restarts us if we die)."""
    import logging
    import tempfile

    logging.disable(logging.CRITICAL)
    soft = 3 << 30
    resource.setrlimit(resource.RLIMIT_AS, (soft, resource.getrlimit(resource.RLIMIT_AS)[1]))

    def alarm(*_: object) -> None:
        raise RoundTimeout()

    signal.signal(signal.SIGALRM, alarm)
    import segwal

    assert Path(segwal.__file__).resolve().parents[1] == ROOT, f"segwal imported from {segwal.__file__}, not {ROOT}"
    bases = load_bases(Path(bases_dir))
    with tempfile.TemporaryDirectory(prefix="damage-fuzz-") as tmp:
        for r in rounds:
            sys.stdout.write(json.dumps(run_round(bases, seed, r, Path(tmp) / "w")) + "\n")
            sys.stdout.flush()


if __name__ == "__main__":
    # Run everything in the module ``damage_fuzz`` (not ``__main__``), so that the bases
    # unpickled from the session's file and the states built here are of the same classes.
    import damage_fuzz as fz

    if sys.argv[1] == "child":
        fz.child_main(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    elif sys.argv[1] == "build":
        fz.build_bases(Path(sys.argv[2]), int(sys.argv[3]))
    else:  # run BASES SEED FIRST COUNT | run BASES SEED r1,r2,...
        rs = [int(x) for x in sys.argv[4].split(",")] if len(sys.argv) == 5 else \
            list(range(int(sys.argv[4]), int(sys.argv[4]) + int(sys.argv[5])))
        fz.run_main(sys.argv[2], int(sys.argv[3]), rs)
