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
import struct
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import crc32c as _crc
import xxhash

from segwal.engine import Entry, HardState, LogId, SegwalError, VotedFor, WalEngine

SEG = 1024
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


@dataclass(frozen=True)
class State:
    """What an engine must show: live entries, purge boundary, hard state, key/value data."""

    entries: tuple[tuple[int, int, bytes], ...] = ()  # (index, term, payload), ascending
    boundary: tuple[int, int] | None = None  # (term, index)
    hard: HardState | None = None
    kv: tuple[tuple[bytes, bytes], ...] = ()  # sorted
    applied: tuple[int, int] | None = None  # (term, index)

    def log(self) -> dict[int, tuple[int, bytes]]:
        return {i: (t, p) for i, t, p in self.entries}


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


@dataclass
class Base:
    """One undamaged directory and what it must show."""

    name: str  # clean / kill9-idle / kill9-mid
    path: str  # <root>/<name>/engine
    clean_close: bool
    legal: list[State]  # the acknowledged state, and that plus the call in flight
    ref: State  # what this directory holds (one of ``legal``), by the oracle's replay
    snapshot: str | None = None  # snapshot file (clean base)
    snap_state: State | None = None
    files: dict[str, bytes] = field(default_factory=dict)  # rel path -> bytes (the oracle's copy)


def build_clean(root: Path, seed: int) -> Base:
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


# ----------------------------------------------------------------------------- the oracle (from the spec)

_FRAME = struct.Struct("<BBHIQIIIIII")
_SEGHDR = struct.Struct("<4sHHQQQQ20xI")
_MANI = struct.Struct("<4sHHQQQQQQQII")
_IDX = struct.Struct("<4sHHQQQQQIIQ12xI")


def crc(b: bytes) -> int:
    return _crc.crc32c(b)  # type: ignore[no-any-return]


@dataclass
class Frame:
    start: int
    end: int
    kind: int
    count: int
    first: int
    durable: int
    body: bytes


def frames(data: bytes, start: int = 64) -> list[Frame]:
    """The chained, self-valid frames from ``start`` (docs/format.md 2.2)."""
    out: list[Frame] = []
    if len(data) < 64:
        return out
    prev = int.from_bytes(data[60:64], "little") if start == 64 else None
    off = start
    while off + 40 <= len(data):
        kind, ver, magic, count, first, flen, durable, pcrc, bcrc, _r, hcrc = _FRAME.unpack_from(data, off)
        if kind not in (1, 2, 3) or magic != 0x5746 or crc(data[off:off + 36]) != hcrc or ver != 1:
            break
        if flen < 40 or flen % 8 or off + flen > len(data) or crc(data[off + 40:off + flen]) != bcrc:
            break
        if prev is not None and pcrc != prev:
            break
        out.append(Frame(off, off + flen, kind, count, first, durable, data[off + 40:off + flen]))
        prev, off = hcrc, off + flen
    return out


def manifest(data: bytes) -> dict[str, Any]:
    (_m, _v, flags, eid, _rev, kvgen, next_seq, pterm, pidx, tail_durable, n, _r) = _MANI.unpack_from(data, 0)
    recs = [struct.unpack_from("<QQQQ", data, 72 + 32 * i) for i in range(n)]
    return dict(flags=flags, engine_id=eid, kv_generation=kvgen, next_seq=next_seq, tail_durable=tail_durable,
                boundary=(pterm, pidx) if flags & 1 else None, records=recs)


def segment_entries(data: bytes, fr: list[Frame]) -> dict[int, tuple[int, bytes, list[tuple[int, int]]]]:
    """Replay ENTRIES/TRUNCATE frames: index -> (term, payload, [byte ranges of its slot and payload])."""
    live: dict[int, tuple[int, bytes, list[tuple[int, int]]]] = {}
    for f in fr:
        live = {i: x for i, x in live.items() if i < f.first}
        if f.kind == 1:
            for j in range(f.count):
                s = f.start + 40 + 24 * j
                term, ps, pl, _chk = struct.unpack_from("<QIIQ", data, s)
                live[f.first + j] = (term, data[ps:ps + pl], [(s, s + 24), (ps, ps + pl)])
    return live


def index_scan_start(idx: bytes | None, seq: int, uid: int, base: int) -> int:
    """Where open scans the tail from: the checkpoint's ``covered_end``, or 64 (docs/format.md 5.8.2)."""
    best = None
    for at in (0, 4096):
        if idx is None or len(idx) < at + 80:
            continue
        h = _IDX.unpack_from(idx, at)
        if h[0] != b"SWIX" or crc(idx[at:at + 76]) != h[11]:
            continue
        if best is None or h[7] > best[7]:
            best = h
    if best is None or (best[3], best[4], best[5]) != (seq, uid, base):
        return 64
    cnt = best[6]
    if xxhash.xxh3_64_intdigest(idx[8192:8192 + 4 * cnt]) != best[10] or len(idx) < 8192 + 4 * cnt:
        return 64
    return int(best[8])


def kv_replay(files: list[bytes], kv: dict[bytes, bytes], applied: tuple[int, int] | None,
              cut: int | None = None) -> tuple[dict[bytes, bytes], tuple[int, int] | None, list[list[Frame]]]:
    """Replay key/value files in order (the last one cut at ``cut`` if given)."""
    kv = dict(kv)
    all_fr = []
    for n, data in enumerate(files):
        fr = frames(data)
        if cut is not None and n == len(files) - 1:
            fr = [f for f in fr if f.end <= cut]
        all_fr.append(fr)
        for f in fr:
            flags, _r, at, ai = struct.unpack_from("<IIQQ", f.body, 0)
            c = f.count
            kl = struct.unpack_from(f"<{c}I", f.body, 24)
            vl = struct.unpack_from(f"<{c}I", f.body, 24 + 4 * c)
            pos = 24 + 16 * c
            for a, b in zip(kl, vl):
                k = f.body[pos:pos + a]
                pos += a
                if b == 0xFFFFFFFF:
                    kv.pop(k, None)
                else:
                    kv[k] = f.body[pos:pos + b]
                    pos += b
            if flags & 1:
                applied = (at, ai)
    return kv, applied, all_fr


def _has_data(fr: list[Frame]) -> bool:
    """A key/value frame list holds records or a last-applied id (not only markers)."""
    return any(f.count or struct.unpack_from("<I", f.body, 0)[0] & 1 and not struct.unpack_from("<I", f.body, 0)[0] & 2
               for f in fr)


class Oracle:
    """What the spec says about one base's files."""

    def __init__(self, b: Base) -> None:
        self.b = b
        self.m = manifest(b.files["MANIFEST"])
        self.recs = self.m["records"]
        self.seg = {r[0]: f"{r[0]:016x}.wal" for r in self.recs}
        self.tail = self.seg[self.recs[-1][0]] if self.recs else None
        g = self.m["kv_generation"]
        self.kvfiles = sorted(n for n in b.files if n.startswith(f"kv/kv-{g:016x}-") and n.endswith((".log", ".merged")))
        self.scan_start = 64
        if self.tail:
            seq, uid, base, _ = self.recs[-1]
            self.scan_start = index_scan_start(b.files.get(self.tail[:-4] + ".idx"), seq, uid, base)

    def log_ranges(self, tail_cut: int | None = None) -> tuple[dict[int, tuple[int, bytes]], dict[str, list[tuple[int, int]]]]:
        """The live log (tail cut at ``tail_cut``) and, per segment, the byte ranges live entries occupy."""
        log: dict[int, tuple[int, bytes]] = {}
        ranges: dict[str, list[tuple[int, int]]] = {}
        bnd = self.m["boundary"]
        for seq, _uid, base, last in self.recs:
            name = self.seg[seq]
            data = self.b.files[name]
            fr = frames(data)
            if name == self.tail and tail_cut is not None:
                fr = [f for f in fr if f.end <= tail_cut]
            ents = segment_entries(data, fr)
            hi = None if name == self.tail else last
            keep = {i: x for i, x in ents.items() if i >= base and (hi is None or i <= hi)
                    and (bnd is None or i > bnd[1])}
            for i, (t, p, rg) in keep.items():
                log[i] = (t, p)
            ranges[name] = [r for _, _, rg in keep.values() for r in rg]
        return log, ranges

    def replay(self, tail_cut: int | None = None, kv_cut: int | None = None) -> State:
        log, _ = self.log_ranges(tail_cut)
        kv, applied, _ = kv_replay([self.b.files[n] for n in self.kvfiles], {}, None, kv_cut)
        hs = self.b.files.get("HARDSTATE")
        hard = None
        if hs is not None:
            _m, _v, flags, term, vid, vterm, commit, _c = struct.unpack("<4sHHQQQQI", hs)
            hard = HardState(term, VotedFor(vid, vterm) if flags & 1 else None, commit)
        return State(tuple((i, t, p) for i, (t, p) in sorted(log.items())), self.m["boundary"], hard,
                     tuple(sorted(kv.items())), applied)

    def kind_of(self, rel: str) -> str:
        if rel == self.tail:
            return "wal-tail"
        if rel in self.seg.values():
            return "wal"
        if rel.endswith(".wal"):
            return "wal-leftover"
        if rel.endswith(".idx"):
            return "idx"
        if rel in self.kvfiles:
            return "kv-last" if rel == self.kvfiles[-1] else "kv"
        if rel.endswith(".tmp"):
            return "tmp"
        return rel  # MANIFEST, HARDSTATE, LOCK

    # -- expectation of a damage that changed the bytes of one file -----------------------

    def expect_bytes(self, rel: str, new: bytes) -> tuple[str, list[State], str]:
        """(expected, states a clean open may show, why) for file ``rel`` now holding ``new``."""
        old = self.b.files[rel]
        ref = self.b.ref
        if new == old:
            return "clean", [ref], "no byte changed"
        kind = self.kind_of(rel)
        lo = next((i for i in range(min(len(old), len(new))) if old[i] != new[i]), min(len(old), len(new)))
        if kind in ("idx", "wal-leftover", "tmp", "LOCK"):
            return "clean", [ref], f"{kind} holds nothing acknowledged"
        if kind in ("MANIFEST", "HARDSTATE"):
            return "error", [], f"{kind} changed at {lo}"
        changed = [i for i in range(min(len(old), len(new))) if old[i] != new[i]]
        if len(new) != len(old):
            changed.append(min(len(new), len(old)))  # the cut-off bytes, or the first appended one
        if kind in ("wal", "wal-tail"):
            return self._expect_wal(rel, kind, old, new, changed)
        return self._expect_kv(rel, kind, old, new, changed)

    def _expect_wal(self, rel: str, kind: str, old: bytes, new: bytes, changed: list[int]) -> tuple[str, list[State], str]:
        ref = self.b.ref
        _, ranges = self.log_ranges()
        live = ranges[rel]
        fr = frames(old)
        end = fr[-1].end if fr else 64
        trunc = len(new) < len(old)
        hit = [i for i in changed if any(a <= i < b for a, b in live) or (trunc and i <= max((b for _, b in live), default=0) - 1)]
        if any(i < 64 for i in changed):
            return ("error" if live else "either"), [], "segment header"
        if kind == "wal":  # sealed: read through its index, never scanned at open
            if hit:
                return "error", [], f"live entry bytes at {hit[0]}"
            return "either", [ref], "sealed segment, no live entry byte (dead frames, frame headers, padding, past the end)"
        below = [i for i in changed if i < self.scan_start]
        if below:
            if hit and hit[0] < self.scan_start:
                return "error", [], f"live entry bytes at {hit[0]} below the checkpoint"
            if not [i for i in changed if i >= self.scan_start]:
                return "either", [ref], "below the checkpoint, no live entry byte"
        return self._tail_rule(rel, fr, end, changed, new, "log")

    def _tail_rule(self, rel: str, fr: list[Frame], end: int, changed: list[int], new: bytes,
                   what: str) -> tuple[str, list[State], str]:
        """docs/format.md section 6 on the damaged last file: corrupt, or a cut (harmless or in the window)."""
        ref = self.b.ref
        first = min(i for i in changed if i >= (self.scan_start if what == "log" else 64))
        if first >= end:
            return "clean", [ref], f"past the last frame (at {first}, data ends at {end})"
        hitf = next(f for f in fr if f.start <= first < f.end)
        intact_later = [f for f in fr if f.start > hitf.start and f.end <= len(new)
                        and not any(f.start <= i < f.end for i in changed)]
        claim = max([f.durable for f in intact_later] + [end if self.b.clean_close else 0])
        cut = self.replay(tail_cut=hitf.start) if what == "log" else self.replay(kv_cut=hitf.start)
        if claim > hitf.start:
            if cut == ref:  # e.g. only the key/value clean-close marker: nothing acknowledged is lost
                return "either", [ref], f"frame at {hitf.start} is below a claim but holds nothing (a marker)"
            return "error", [], f"frame at {hitf.start} damaged below a durable claim of {claim}"
        if cut in self.b.legal:
            return "clean", [cut], f"frame at {hitf.start} holds nothing acknowledged: cut"
        return "either", [cut], f"frame at {hitf.start} is acknowledged but unclaimed: the torn-tail window"

    def _expect_kv(self, rel: str, kind: str, old: bytes, new: bytes, changed: list[int]) -> tuple[str, list[State], str]:
        fr = frames(old)
        end = fr[-1].end if fr else 64
        data = _has_data(fr)
        if any(i < 64 for i in changed):
            return ("error" if data else "either"), [self.b.ref], "key/value file header"
        if kind == "kv":
            if min(changed) >= end:
                return "either", [self.b.ref], "after the last frame of a sealed key/value file (spec: error)"
            return "error", [], f"sealed key/value file changed at {min(changed)}"
        return self._tail_rule(rel, fr, end, changed, new, "kv")

    def expect_delete(self, rel: str) -> tuple[str, list[State], str]:
        kind = self.kind_of(rel)
        if kind in ("idx", "wal-leftover", "tmp", "LOCK"):
            return "clean", [self.b.ref], f"{kind} deleted"
        if kind in ("kv", "kv-last") and not _has_data(frames(self.b.files[rel])):
            return "either", [self.b.ref], "key/value file without data deleted"
        return "error", [], f"{kind} deleted"


# ----------------------------------------------------------------------------- damage


DAMAGES = ["bitflip", "multiflip", "zero", "truncate", "append", "noise", "delete", "duplicate", "swap"]


@dataclass
class Damage:
    kind: str
    target: str  # file kind
    what: str  # exact description
    expect: str
    states: list[State]
    why: str


def _pos(rng: random.Random, data: bytes, fr: list[Frame]) -> int:
    """A position: anywhere, within the data, or at a structure's edge."""
    end = fr[-1].end if fr else min(len(data), 64)
    r = rng.random()
    if r < 0.4 or not fr:
        return rng.randrange(len(data))
    if r < 0.8:
        return rng.randrange(max(end, 1))
    f = rng.choice(fr)
    return min(len(data) - 1, rng.choice([f.start, f.start + rng.randrange(40), f.end - 1, f.start + 36]))


def damage(base: Base, d: Path, rng: random.Random, snap: Path | None) -> Damage:
    """Damage the copy ``d`` of ``base`` (or the snapshot copy ``snap``); says what the spec expects."""
    o = Oracle(base)
    kind = rng.choice(DAMAGES)
    files = sorted(base.files)
    groups: dict[str, list[str]] = {}
    for rel in files:
        groups.setdefault(o.kind_of(rel), []).append(rel)
    if snap is not None:
        return _damage_snapshot(base, snap, rng, kind)
    if kind == "swap":
        pairs = [g for k, g in groups.items() if len(g) > 1 and k in ("wal", "idx", "kv")]
        pairs.append(["MANIFEST", "HARDSTATE"] if "HARDSTATE" in base.files else ["MANIFEST", groups["wal-tail"][0]])
        g = rng.choice(pairs)
        a, b = rng.sample(g, 2) if len(g) > 2 else (g[0], g[1])
        if rng.random() < 0.3 and "wal" in groups and "wal-tail" in groups and g is pairs[0]:
            a, b = rng.choice(groups["wal"]), groups["wal-tail"][0]
        if a.endswith(".idx") and b.endswith(".idx"):
            ka, exp, states, why = "idx", "clean", [base.ref], "index files swapped"
        elif {a, b} == {"MANIFEST", "HARDSTATE"} or a == "MANIFEST":
            ka, exp, states, why = "MANIFEST", "error", [], "MANIFEST swapped"
        else:
            ka = o.kind_of(b) if o.kind_of(b) == "wal-tail" else o.kind_of(a)
            exp, states, why = "error", [], "two files swapped"
            if ka.startswith("kv") and base.files[a][64:] == base.files[b][64:]:
                exp, states = "either", [base.ref]
        (d / a).rename(d / "swap.x")
        (d / b).rename(d / a)
        (d / "swap.x").rename(d / b)
        return Damage(kind, ka, f"swap {a} <-> {b}", exp, states, why)
    if kind == "duplicate":
        opts = [k for k in ("wal", "wal-tail", "idx", "kv", "kv-last", "MANIFEST", "HARDSTATE") if k in groups]
        k = rng.choice(opts)
        src = rng.choice(groups[k])
        if k in ("MANIFEST", "HARDSTATE"):
            shutil.copy(d / src, d / (src + ".tmp"))
            return Damage(kind, k, f"copy {src} -> {src}.tmp", "clean", [base.ref], "stray temporary file")
        if k.startswith("kv"):
            g, s = src[6:22], int(src[23:39], 16)
            seqs = [int(n[23:39], 16) for n in o.kvfiles]
            if rng.random() < 0.2:  # a compaction's leftover
                shutil.copy(d / src, d / f"kv/kv-{g}-{max(seqs) + 1:016x}.tmp")
                return Damage(kind, k, f"copy {src} -> kv-{g}-{max(seqs) + 1:016x}.tmp", "clean", [base.ref],
                              "stray compaction temporary file")
            to = rng.choice([x for x in seqs if x != s] + [max(seqs) + 1, max(seqs) + 5])
            dst = f"kv/kv-{g}-{to:016x}.log"
            shutil.copy(d / src, d / dst)
            if to in seqs:
                exp = "either" if dst == src or not _has_data(frames(base.files[dst])) else "error"
                return Damage(kind, k, f"copy {src} over {dst}", exp, [base.ref], "key/value file replaced")
            return Damage(kind, k, f"copy {src} -> new {dst}", "either", [base.ref],
                          "extra key/value file (spec: header must match its name)")
        seq = int(src[:16], 16)
        listed = [r[0] for r in o.recs]
        unl = [o.m["next_seq"] + rng.randrange(3), max(1, min(listed) - 1) if listed else 1]
        to = rng.choice(listed + unl)
        ext = src[16:]
        dst = f"{to:016x}{ext}"
        if to == seq:
            return Damage(kind, k, "copy onto itself", "clean", [base.ref], "no change")
        shutil.copy(d / src, d / dst)
        if ext == ".idx" or to not in listed:
            return Damage(kind, k, f"copy {src} -> {dst}", "clean", [base.ref], "leftover or index: ignored or rebuilt")
        return Damage(kind, o.kind_of(dst), f"copy {src} over {dst}", "error", [], "listed segment replaced by another")
    # a damage to one file's bytes, or its deletion
    weights = {"wal": 3, "wal-tail": 3, "idx": 2, "kv": 2, "kv-last": 3, "MANIFEST": 1.5, "HARDSTATE": 1.5,
               "LOCK": 0.3, "wal-leftover": 1, "tmp": 1}
    ks = [k for k in weights if k in groups]
    k = rng.choices(ks, [weights[x] for x in ks])[0]
    rel = rng.choice(groups[k])
    p = d / rel
    if kind == "delete":
        p.unlink()
        exp, states, why = o.expect_delete(rel)
        return Damage(kind, k, f"delete {rel}", exp, states, why)
    old = base.files[rel]
    new, what = mutate(old, kind, rng, frames(old) if rel.endswith((".wal", ".log", ".merged")) else [])
    p.write_bytes(new)
    exp, states, why = o.expect_bytes(rel, new)
    return Damage(kind, k, f"{rel}: {what}", exp, states, why)


def mutate(old: bytes, kind: str, rng: random.Random, fr: list[Frame]) -> tuple[bytes, str]:
    """Apply a byte-level damage; returns the new bytes and an exact description."""
    b = bytearray(old)
    if kind in ("bitflip", "multiflip") and b:
        done = []
        for _ in range(1 if kind == "bitflip" else rng.randint(2, 8)):
            i, bit = _pos(rng, old, fr), 1 << rng.randrange(8)
            b[i] ^= bit
            done.append(f"{i}^{bit:#x}")
        return bytes(b), "flip " + ",".join(done)
    if kind == "zero" and b:
        i = _pos(rng, old, fr)
        n = rng.choice([1, 8, 40, 512, 4096, rng.randint(1, 300)])
        b[i:i + n] = bytes(len(b[i:i + n]))
        return bytes(b), f"zero [{i}, {min(i + n, len(b))})"
    if kind == "truncate" and b:
        ends = [f.end for f in fr] + [f.start for f in fr]
        t = rng.choice(ends) if ends and rng.random() < 0.5 else rng.randrange(len(b))
        return bytes(b[:t]), f"truncate to {t} of {len(b)}"
    if kind == "noise":
        return rng.randbytes(len(b)), f"rewrite {len(b)} bytes with noise"
    g = rng.randbytes(rng.randint(1, 600))
    return bytes(b) + g, f"append {len(g)} garbage bytes at {len(b)}"


def _snap_reserved(data: bytes) -> list[int]:
    """Byte positions of a snapshot no check covers: chunk ``reserved`` fields, bytes after the end chunk."""
    out, off = [], 48
    while off + 16 <= len(data):
        n, blen = struct.unpack_from("<II", data, off)
        out += range(off + 12, off + 16)
        off += 16 + blen
        if n == 0:
            return out + list(range(off, len(data)))
    return out


def _damage_snapshot(base: Base, snap: Path, rng: random.Random, kind: str) -> Damage:
    old = snap.read_bytes()
    if kind in ("delete", "swap", "duplicate"):
        snap.unlink()
        return Damage("delete", "snapshot", "delete the snapshot", "error", [], "snapshot missing")
    new, what = mutate(old, kind, rng, [])
    snap.write_bytes(new)
    free = set(_snap_reserved(old))
    if new == old:
        return Damage(kind, "snapshot", what, "clean", [base.snap_state], "no byte changed")  # type: ignore[list-item]
    changed = {i for i in range(min(len(old), len(new))) if old[i] != new[i]}
    if len(new) > len(old):
        return Damage(kind, "snapshot", what, "either", [base.snap_state], "bytes after the end chunk")  # type: ignore
    if len(new) == len(old) and changed <= free:
        return Damage(kind, "snapshot", what, "either", [base.snap_state], "only unchecked reserved bytes")  # type: ignore
    return Damage(kind, "snapshot", what, "error", [], "snapshot damaged")


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
    out["boundary"] = None if s.boundary is None else LogId(*s.boundary)
    out["hard"] = s.hard
    kv = dict(s.kv)
    out.update({f"key {k.decode()}": kv.get(k) for k in KEYS})
    out["applied"] = None if s.applied is None else LogId(*s.applied)
    return out


def _judge(items: dict[str, Any], errors: list[str], dmg: Damage, base: Base, top: int) -> tuple[str, bool, str]:
    """(outcome, ok, detail) for an open that succeeded."""
    first, last = items.pop("first"), items.pop("last")
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
    snapshot_round = base.snapshot is not None and rng.random() < 0.15
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
        res.update(damage="?", target="?", expect="?", outcome="FUZZER-BUG", ok=False, detail=traceback.format_exc())
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
