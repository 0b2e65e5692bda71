"""The damaged-directory fuzzer's oracle: what the spec says a damage must give.

Written from docs/format.md and docs/format-kv.md, not from the engine: it parses
the MANIFEST, segments, index headers and key/value frames of an undamaged base
directory, replays them (what the directory holds, and what it holds when the
last file is cut at a frame), and decides from where a damage lands whether it
must give an ``error`` (it hits acknowledged bytes, or the spec says
``CorruptionError``), a ``clean`` open with exactly what was written (an index,
bytes past the last frame, a leftover, a stray temporary, a frame never
acknowledged), or ``either`` (the documented torn-tail window after a kill,
bytes that no open and no read ever touches).  ``damage`` makes one seeded
damage and returns that expectation with an exact description.
"""

from __future__ import annotations

import random
import shutil
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import crc32c as _crc
import xxhash

from segwal.engine import HardState, VotedFor


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
    """The MANIFEST's fields (docs/format.md 2.7); version 2 also lists the key/value files
    (flag bit 3: ``nkv`` at 68, then 24-byte records seq, uid, length after the segments)."""
    (_m, version, flags, eid, _rev, kvgen, next_seq, pterm, pidx, tail_durable, n, nkv) = _MANI.unpack_from(data, 0)
    recs = [struct.unpack_from("<QQQQ", data, 72 + 32 * i) for i in range(n)]
    kv = None
    if version >= 2 and flags & 8:
        kv = [struct.unpack_from("<QQQ", data, 72 + 32 * n + 24 * i) for i in range(nkv)]
    return {"flags": flags, "engine_id": eid, "kv_generation": kvgen, "next_seq": next_seq,
            "tail_durable": tail_durable, "boundary": (pterm, pidx) if flags & 1 else None, "records": recs, "kv": kv}


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
        self.kv_claim = 0  # a version-2 MANIFEST's durable claim on the last key/value file
        if self.m["kv"] is not None:  # only the listed files count; others are leftovers
            listed = {seq: length for seq, _uid, length in self.m["kv"]}
            self.kvfiles = [n for n in self.kvfiles if int(n[23:39], 16) in listed]
            if self.kvfiles:
                self.kv_claim = listed[int(self.kvfiles[-1][23:39], 16)]
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

    def replay(self, tail_cut: int | None = None, kv_cut: int | None = None, kv_drop: str | None = None) -> State:
        log, _ = self.log_ranges(tail_cut)
        kv, applied, _ = kv_replay([self.b.files[n] for n in self.kvfiles if n != kv_drop], {}, None, kv_cut)
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
        if rel.startswith("kv/") and rel.endswith(".index"):
            return "kv-index"  # the key index: a cache, rebuilt from the record files
        if rel.startswith("kv/"):
            return "kv-leftover"  # another generation, or not listed by a version-2 MANIFEST
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
        if kind in ("idx", "kv-index", "wal-leftover", "kv-leftover", "tmp", "LOCK"):
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
            return ("error" if live else "either"), [ref], "segment header"
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
        claim = max([f.durable for f in intact_later] + [end if self.b.clean_close else 0]
                    + [self.kv_claim if what == "kv" else 0])
        cut = self.replay(tail_cut=hitf.start) if what == "log" else self.replay(kv_cut=hitf.start)
        if claim > hitf.start:
            if cut == ref:  # e.g. only the key/value clean-close marker: nothing acknowledged is lost
                return "either", [ref], f"frame at {hitf.start} is below a claim but holds nothing (a marker)"
            return "error", [], f"frame at {hitf.start} damaged below a durable claim of {claim}"
        if cut in self.b.legal:
            return "clean", [cut], f"frame at {hitf.start} holds nothing acknowledged: cut"
        return "either", [cut], f"frame at {hitf.start} is acknowledged but unclaimed: the torn-tail window"

    def kv_checkpoint(self) -> tuple[int, int, int] | None:
        """``(covered_seq, covered_off, last_frame_off)`` of the base's key index
        (docs/format-kv.md, "Key index"), if any."""
        for rel, data in self.b.files.items():
            if rel.startswith("kv/") and rel.endswith(".index") and len(data) >= 128 and data[:4] == b"SWKI":
                return (int.from_bytes(data[48:56], "little"), int.from_bytes(data[56:64], "little"),
                        int.from_bytes(data[64:72], "little"))
        return None

    def _expect_kv(self, rel: str, kind: str, old: bytes, new: bytes, changed: list[int]) -> tuple[str, list[State], str]:
        fr = frames(old)
        end = fr[-1].end if fr else 64
        data = _has_data(fr)
        if any(i < 64 for i in changed):
            if kind == "kv-last" and data and (cut := self.replay(kv_drop=rel)) in self.b.legal:
                return "either", [cut, self.b.ref], "header of a last key/value file holding nothing acknowledged"
            return ("error" if data else "either"), [self.b.ref], "key/value file header"
        cp = self.kv_checkpoint()
        seq = int(rel[23:39], 16)
        # Open does not read below the key index's checkpoint (sizes only): a live record
        # there is reported when read, a dead one never matters (as for sealed log segments).
        if cp is not None and seq < cp[0]:
            return "either", [self.b.ref], "below the key index's checkpoint"
        if (cp is not None and seq == cp[0] and min(changed) < cp[1] and len(new) >= cp[1]
                and not any(cp[2] <= i < cp[1] for i in changed)):  # else the index is not used
            above = [i for i in changed if i >= cp[1]]
            if not above:
                return "either", [self.b.ref], "below the key index's checkpoint"
            _exp, states, why = self._tail_rule(rel, fr, end, above, new, "kv")
            return "either", states + [self.b.ref], f"below the key index's checkpoint, and above it: {why}"
        if kind == "kv":
            if min(changed) >= end:
                return "either", [self.b.ref], "after the last frame of a sealed key/value file (spec: error)"
            return "error", [], f"sealed key/value file changed at {min(changed)}"
        return self._tail_rule(rel, fr, end, changed, new, "kv")

    def expect_delete(self, rel: str) -> tuple[str, list[State], str]:
        kind = self.kind_of(rel)
        if kind in ("idx", "kv-index", "wal-leftover", "kv-leftover", "tmp", "LOCK"):
            return "clean", [self.b.ref], f"{kind} deleted"
        if kind in ("kv", "kv-last") and not _has_data(frames(self.b.files[rel])):
            return "either", [self.b.ref], "key/value file without data deleted"
        if kind == "kv-last" and (cut := self.replay(kv_drop=rel)) in self.b.legal:
            return "either", [cut], "the last key/value file held only a frame never acknowledged"
        return "error", [], f"{kind} deleted"


# ----------------------------------------------------------------------------- damage


DAMAGES = ["bitflip", "multiflip", "zero", "truncate", "append", "noise", "delete", "duplicate", "swap", "crafted"]


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
    if kind == "crafted":  # a field rewritten and every checksum after it recomputed
        ks = [k for k in ("wal", "wal-tail", "kv", "kv-last") if any(frames(base.files[r]) for r in groups.get(k, []))]
        k = rng.choice(ks)
        rel = rng.choice([r for r in groups[k] if frames(base.files[r])])
        new, what = craft(base.files[rel], rng, frames(base.files[rel]))
        (d / rel).write_bytes(new)
        return Damage(kind, k, f"{rel}: {what}", "forged", [base.ref], "checksums recomputed: only the exception "
                      "type, hangs, deaths and log entries (bound by their check values) are judged")
    # a damage to one file's bytes, or its deletion
    weights = {"wal": 3, "wal-tail": 3, "idx": 2, "kv": 2, "kv-last": 3, "kv-index": 2, "MANIFEST": 1.5, "HARDSTATE": 1.5,
               "LOCK": 0.3, "wal-leftover": 1, "kv-leftover": 1, "tmp": 1}
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


def _snap_chunks(data: bytes) -> list[int]:
    """Offsets of a snapshot's chunk headers."""
    out, off = [], 48
    while off + 16 <= len(data):
        n, blen = struct.unpack_from("<II", data, off)
        out.append(off)
        off += 16 + blen
        if n == 0:
            break
    return out


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
    chunks = [Frame(at, at + 16, 0, 0, 0, 0, b"") for at in _snap_chunks(old)]
    if kind == "crafted":  # a chunk's pair count or body length (no checksum covers them)
        at = rng.choice(chunks).start + rng.choice([0, 4])
        cur = struct.unpack_from("<I", old, at)[0]
        val = rng.choice([cur + 1, max(cur - 1, 0), 0, cur * 2 + 7, 0x7FFFFFFF, 0xFFFFFFFF, rng.getrandbits(32)])
        val &= 0xFFFFFFFF
        new, what = old[:at] + struct.pack("<I", val) + old[at + 4:], f"set the chunk field at {at} to {val}"
    else:
        new, what = mutate(old, kind, rng, chunks)
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


def reseal(b: bytearray, fr: list[Frame], k: int) -> None:
    """Recompute frame ``k``'s body and header CRCs and the chain of every frame after it."""
    prev = None
    for f in fr[k:]:
        if prev is not None:
            struct.pack_into("<I", b, f.start + 24, prev)
        struct.pack_into("<I", b, f.start + 28, crc(bytes(b[f.start + 40:f.end])))
        prev = crc(bytes(b[f.start:f.start + 36]))
        struct.pack_into("<I", b, f.start + 36, prev)


def craft(old: bytes, rng: random.Random, fr: list[Frame]) -> tuple[bytes, str]:
    """Rewrite one length, count, index, kind or slot field of a frame; the checksums still match."""
    b = bytearray(old)
    k = rng.randrange(len(fr))
    f = fr[k]

    def u32(cur: int) -> int:
        return rng.choice([0, 1, cur + 1, max(cur - 1, 0), cur * 2 + 7, 0x7FFFFFFF, 0xFFFFFFFF, len(old),
                           rng.getrandbits(32)])

    body = f.start + 40
    if f.kind == 3 and f.count and rng.random() < 0.7:
        c = f.count
        at = rng.choice([body, body + 24 + 4 * rng.randrange(c), body + 24 + 4 * c + 4 * rng.randrange(c)])
        fmt, val = "<I", u32(struct.unpack_from("<I", b, at)[0])
    elif f.kind == 1 and f.count and rng.random() < 0.6:
        slot = body + 24 * rng.randrange(f.count)
        at = slot + rng.choice([0, 8, 12])
        fmt = "<Q" if at == slot else "<I"
        cur = struct.unpack_from(fmt, b, at)[0]
        val = rng.choice([cur + 1, cur - 1 if cur else 2, 0]) if fmt == "<Q" else u32(cur)
    else:
        at = f.start + rng.choice([0, 4, 8])
        fmt = {0: "<B", 4: "<I", 8: "<Q"}[at - f.start]
        cur = struct.unpack_from(fmt, b, at)[0]
        if fmt == "<B":
            val = rng.choice([x for x in (1, 2, 3) if x != cur])
        elif fmt == "<I":
            val = u32(cur)
        else:
            val = rng.choice([0, 1, cur + 1, max(cur - 1, 0), cur + 1000, 2**63, 2**64 - 1])
    val &= (1 << (8 * struct.calcsize(fmt))) - 1
    struct.pack_into(fmt, b, at, val)
    reseal(b, fr, k)
    return bytes(b), f"set the {fmt[1:]} at {at} (frame at {f.start}) to {val}, checksums recomputed"
