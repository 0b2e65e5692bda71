"""What an archive holds, from one LIST: the log objects replayed into runs, gaps, snapshots and states, and the restore plan for a target index.

The log objects (deltas and gaps) form one sequence numbered from 1 (or from
the retention floor).  Replaying them in sequence order, like the frames of a
segment (docs/format.md section 2.5), gives the archived log: a delta starting
at ``f`` replaces everything from ``f`` on, an empty delta cuts at ``f``, a gap
says entries were lost.  A missing or doubled sequence number, or an object
that cannot follow the ones before it, is damage (``CorruptionError`` naming
the object); restore never crosses it.  Two objects with one sequence number that
name the same entries and kind (a retried upload of a version-1 object) are *twins*:
the one with the lowest name is replayed, and whoever reads it compares the others'
content with it (equal: harmless; different: damage, named).
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from segwal.errors import CorruptionError
from segwal.storage.archive.format import (
    LogName,
    parse_floor_name,
    parse_kv_name,
    parse_log_name,
    parse_state_name,
)
from segwal.storage.objectstore.seam import ObjectStoreSeam

__all__ = ["Catalog", "KvRef", "Plan", "Replay", "Run", "plan_restore", "read_catalog", "replay", "restorable_end"]

_SEAL_RE = re.compile(r"seal/\d{20}-\d{20}-\d{20}-[0-9a-f]{16}")
_FOLDERS = ("log/", "state/", "kv/", "seal/", "floor/", "lease/", "retention/")


@dataclass(frozen=True, slots=True)
class Run:
    """Entries ``first..last`` of the archived log live in log object ``obj`` (a gap when ``obj.gap``),
    at positions ``first - obj.first ..`` of it."""

    first: int
    last: int
    obj: LogName


@dataclass(frozen=True, slots=True)
class KvRef:
    """A key/value snapshot object: state applied up to ``index``/``term``, written after log object ``seq``."""

    name: str
    index: int
    term: int
    seq: int
    digest: int


@dataclass
class Catalog:
    """Every archive object under a prefix, by kind (names are full keys)."""

    prefix: str
    logs: list[LogName] = field(default_factory=list)  # names relative to the prefix, by seq
    states: list[tuple[int, int, str, int]] = field(default_factory=list)  # (n, seq, full name, digest)
    kvs: list[KvRef] = field(default_factory=list)
    floor: int = 0  # log objects below this seq were removed by retention
    seals: list[str] = field(default_factory=list)
    leases: list[str] = field(default_factory=list)
    passes: list[str] = field(default_factory=list)
    floors: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    sizes: dict[str, int] = field(default_factory=dict)
    # log objects with the same sequence number, entries and kind as the one in ``logs`` (a
    # retried upload of version 1, whose name hashed its write time): equal content or damage
    twins: dict[str, list[LogName]] = field(default_factory=dict)

    def full(self, rel: str) -> str:
        """The full key of a name relative to the prefix."""
        return f"{self.prefix}/{rel}" if self.prefix else rel


def read_catalog(seam: ObjectStoreSeam, prefix: str) -> Catalog:
    """LIST the prefix and sort every object by kind.  Names that are not archive
    names are kept in ``unknown`` (never read).  O(objects), one LIST per 1000.

    Raises:
        StorageIOError: the store failed.
    """
    prefix = prefix.strip("/")
    cat = Catalog(prefix)
    lead = prefix + "/" if prefix else ""
    for info in seam.list(lead):
        rel = info.name.removeprefix(lead)
        cat.sizes[info.name] = info.size
        if not rel.startswith(_FOLDERS):
            continue  # not ours (another tool's objects beside the archive)
        ln = parse_log_name(rel)
        if ln is not None:
            cat.logs.append(ln)
            continue
        st = parse_state_name(rel)
        if st is not None:
            cat.states.append((st[0], st[1], info.name, st[2]))
            continue
        kv = parse_kv_name(rel)
        if kv is not None:
            cat.kvs.append(KvRef(info.name, kv[0], kv[1], kv[2], kv[3]))
            continue
        fl = parse_floor_name(rel)
        if fl is not None:
            cat.floor = max(cat.floor, fl[0])
            cat.floors.append(info.name)
            continue
        if _SEAL_RE.fullmatch(rel):
            cat.seals.append(info.name)
        elif rel.startswith("lease/") and rel.endswith(".json") and "/" not in rel[6:]:
            cat.leases.append(info.name)
        elif rel.startswith("retention/") and rel.endswith(".json") and "/" not in rel[10:]:
            cat.passes.append(info.name)
        else:
            cat.unknown.append(info.name)
    cat.logs.sort(key=lambda n: (n.seq, n.name))
    kept: list[LogName] = []
    for o in cat.logs:  # the lowest name of a seq stands for its twins (their content is compared on read)
        if (
            kept
            and kept[-1].seq == o.seq
            and (kept[-1].first, kept[-1].count, kept[-1].gap) == (o.first, o.count, o.gap)
        ):
            cat.twins.setdefault(kept[-1].name, []).append(o)
        else:
            kept.append(o)
    cat.logs = kept
    cat.states.sort()
    cat.kvs.sort(key=lambda k: (k.index, k.seq))
    return cat


@dataclass
class Replay:
    """The archived log after replaying log objects up to ``seq``."""

    seq: int  # last log object applied (0: none)
    runs: list[Run]
    last: int  # highest index (0 when empty)
    lasts: dict[int, int]  # seq -> last index after it

    def gaps(self) -> list[Run]:
        """The gap runs of this state."""
        return [r for r in self.runs if r.obj.gap]


def replay(cat: Catalog, upto: int | None = None) -> Replay:
    """Replay the catalog's log objects in sequence order (up to seq ``upto``).  O(objects).

    Raises:
        CorruptionError: a missing or doubled sequence number, or an object that
            cannot follow the ones before it (naming it).
    """
    runs: list[Run] = []
    last = 0
    lasts: dict[int, int] = {}
    expect = cat.floor or 1
    done = 0
    for o in cat.logs:
        if o.seq < cat.floor:
            continue  # below the retention floor: being removed
        if o.seq != expect:
            what = "appears twice (two archivers on one prefix?)" if o.seq < expect else "is missing"
            raise CorruptionError(
                f"log object {min(expect, o.seq)} {what} (before {cat.full(o.name)})", path=cat.full(o.name)
            )
        if upto is not None and o.seq > upto:
            break
        if done == 0:
            last = o.first - 1  # the first object (or the first after the floor) starts the log
            if last > 0:
                runs.append(Run(1, last, LogName("(before the archive)", 0, 1, last, True, 0)))
        if not 1 <= o.first <= last + 1:
            raise CorruptionError(
                f"log object starts at index {o.first}, after the archived log's end {last}",
                path=cat.full(o.name),
                index=o.first,
            )
        while runs and runs[-1].first >= o.first:
            runs.pop()
        if runs and runs[-1].last >= o.first:
            r = runs.pop()
            runs.append(Run(r.first, o.first - 1, r.obj))
        if o.count:
            runs.append(Run(o.first, o.last, o))
        last = o.last
        lasts[o.seq] = last
        done = o.seq
        expect += 1
    return Replay(done, runs, last, lasts)


@dataclass
class Plan:
    """What a restore at ``target`` reads: the key/value snapshot (if any) at ``base``,
    then ``runs`` covering ``base+1 .. target``; ``seq``: the log objects replayed."""

    target: int
    base: int
    kv: KvRef | None
    runs: list[Run]
    seq: int
    state: str | None

    def objects(self) -> list[str]:
        """The log objects this plan reads (names relative to the prefix).  O(runs)."""
        return [r.obj.name for r in self.runs]


def _kv_candidates(cat: Catalog, target: int, upto: int) -> Iterator[KvRef]:
    """Key/value snapshots at or below ``target`` that fit the history replayed up to log
    object ``upto``, newest first: no log object written between the snapshot and
    ``upto`` (in either order) rewrote an entry at or below its applied index, so the
    entries it was applied from are the ones this history holds.  O(objects) per
    snapshot looked at."""
    seqs = [o.seq for o in cat.logs]
    firsts = np.array([o.first for o in cat.logs], dtype=np.uint64)
    for k in reversed(cat.kvs):
        if k.index > target:
            continue
        a, b = sorted((k.seq, upto))
        i, j = bisect_right(seqs, a), bisect_right(seqs, b)
        if i < j and int(firsts[i:j].min()) <= k.index:
            continue  # the log it was applied from was cut or overwritten in between
        yield k


def plan_restore(cat: Catalog, target: int | None = None) -> Plan:
    """The plan for restoring at ``target`` (``None``: the archived log's last index).  O(objects).

    Raises:
        CorruptionError: damage in the sequence of log objects.
        ValueError: ``target`` is not restorable (beyond the archive, or across a
            gap that no key/value snapshot covers: the gap is named).
    """
    full = replay(cat)
    if target is None:  # the latest: never silently an older point before a gap
        if not full.last:
            raise ValueError("the archive holds no log entries")
        target = full.last
    if target < 0:
        raise ValueError(f"to_index must be >= 0, got {target}")
    if target > full.last:
        past = [s for s, last in full.lasts.items() if last >= target]
        if not past:
            raise ValueError(
                f"to_index {target} is beyond every archived log (highest {max(full.lasts.values(), default=0)})"
            )
        rp = replay(cat, max(past))
    else:
        rp = full
    kv = next(_kv_candidates(cat, target, rp.seq), None)
    base = kv.index if kv is not None else 0
    blocking = [r for r in rp.runs if r.obj.gap and r.last > base and r.first <= target]
    if blocking:
        raise ValueError(_gap_text(cat, rp, target, base))
    runs = []
    for r in rp.runs:
        a, b = max(r.first, base + 1), min(r.last, target)
        if a <= b:
            runs.append(Run(a, b, r.obj))
    state = cat.states[-1][2] if cat.states else None
    return Plan(target, base, kv, runs, rp.seq, state)


def _gap_text(cat: Catalog, rp: Replay, target: int, base: int = 0) -> str:
    g = [r for r in rp.runs if r.obj.gap and r.last > base and r.first <= target]
    if not g:
        return f"index {target} is not restorable"
    r = g[-1]
    where = cat.full(r.obj.name) if r.obj.seq else "entries below the archive's first object"
    return (
        f"cannot restore at {target}: entries {r.first}..{r.last} are a gap in the archive ({where}: "
        f"the node dropped them before they were archived) and no key/value snapshot at or after {r.last} "
        f"and at or below {target} covers them"
    )


def restorable_end(cat: Catalog, rp: Replay) -> int | None:
    """The highest index a restore can reach from the replayed state ``rp`` (entries
    contiguous down to a key/value snapshot or to index 1), or ``None``.  O(runs)."""
    runs = rp.runs
    k = len(runs)
    while k > 0:
        # the contiguous region of data runs ending at runs[k-1]
        if runs[k - 1].obj.gap:
            k -= 1
            continue
        j = k - 1
        while j > 0 and not runs[j - 1].obj.gap:
            j -= 1
        lo, hi = runs[j].first, runs[k - 1].last
        if lo == 1 or any(lo - 1 <= s.index for s in _kv_candidates(cat, hi, rp.seq)):
            return hi
        # a snapshot inside a gap, or past it, may still cover it
        k = j
    if rp.last and any(s.index == rp.last for s in _kv_candidates(cat, rp.last, rp.seq)):
        return rp.last
    return None
