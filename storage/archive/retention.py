"""Retention of an archive: remove what no restore target inside the retention window needs, never what a restore in progress reads.

Rule (``retain_seconds`` = R; docs/archive.md section 6): a *window target* is an index that
was the archive's latest at some instant in the last R seconds (today's history, or an older
generation overwritten since).  The floor ``F`` is the lowest sequence number any window
target's restore plan reads (its log objects, the object holding its entry, its key/value
snapshot's sequence number + 1; a snapshot counts only if it fits that target's history).
A pass removes the log objects and seal records below ``F`` and the snapshots no window
target uses, after planning every target again on the archive as it will be.

Handshake with restores (restore.py): a pass first writes its own marker
``retention/<id>.json`` (with an expiry), then reads the live leases and
spares every object they name, then writes the floor object (readers ignore
log objects below it from then on), then deletes, then removes its marker.
A restore writes its lease, then looks for markers: if it sees one it waits
and plans again; if it does not, the pass began after the lease was written
and sees it.  So no restore ever loses an object it planned to read.
"""

from __future__ import annotations

import json
import logging
import math
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any

from segwal.storage.archive.catalog import Catalog, Replay, _kv_candidates, plan_restore, read_catalog, replay
from segwal.storage.archive.format import HEADER_SIZE, K_FLOOR, encode_object, floor_name, join, object_hash
from segwal.storage.archive.restore import active_json
from segwal.storage.objectstore.seam import ObjectStoreSeam, as_seam

__all__ = ["RetentionResult", "apply_retention"]

_PASS_SECONDS = 600.0
log = logging.getLogger("segwal.archive")


@dataclass(frozen=True)
class RetentionResult:
    """What a pass removed (full keys), what leases spared, and the new floor (0: none)."""

    deleted: list[str]
    spared: list[str]
    floor: int


def apply_retention(store: Any, prefix: str, retain_seconds: float, *, now: float | None = None) -> RetentionResult:
    """One retention pass over the archive at ``prefix`` (module docstring).

    Durability: each delete is acknowledged by the store; an interrupted pass
    leaves a floor and some objects below it, removed by the next pass.
    Complexity: one LIST, O(log objects) ranged GETs of log object headers, O(objects) per
    window target above today's last index, the deletes.

    Raises:
        ValueError: ``retain_seconds`` < 0.  StorageIOError: the store failed.
    """
    if not isinstance(retain_seconds, (int, float)) or retain_seconds < 0:
        raise ValueError(f"retain_seconds must be a number >= 0, got {retain_seconds!r}")
    seam = as_seam(store)
    prefix = prefix.strip("/")
    now = time.time() if now is None else now
    marker = join(prefix, f"retention/{uuid.uuid4().hex}.json")
    seam.put(marker, json.dumps({"expires": time.time() + _PASS_SECONDS}).encode(), create=True)
    try:
        cat = read_catalog(seam, prefix)
        leased: set[str] = set()
        for _name, doc in active_json(seam, cat.leases):
            leased.update(o for o in doc.get("objects", []) if isinstance(o, str))
        floor, base = _floor(seam, cat, (now - retain_seconds) * 1000)
        floor = max(floor, cat.floor)
        if floor <= 1:
            return RetentionResult([], [], cat.floor)
        doomed = [cat.full(o.name) for o in cat.logs if o.seq < floor]
        doomed += [cat.full(t.name) for o in cat.logs if o.seq < floor for t in cat.twins.get(o.name, [])]
        # a snapshot below every window target's snapshot is used by none; one written before the
        # floor's predecessor can no longer be checked against the log objects written after it
        doomed += [k.name for k in cat.kvs if k.seq < floor - 1 or k.index < base]
        doomed += [s for s in cat.seals if _seal_seq(s) < floor - 1]
        below = [name for _n, seq, name, _d in cat.states if seq < floor - 1]
        doomed += below[:-1]  # the newest state written before the floor stays
        doomed += cat.floors
        if floor > cat.floor:
            data = encode_object(K_FLOOR, floor, 0, 0, 0, b"")
            new_floor = join(prefix, floor_name(floor, object_hash(data)))
            seam.put(new_floor, data, create=True)
            doomed = [d for d in doomed if d != new_floor]
        else:  # an earlier pass's floor: finish what it began
            doomed = [d for d in doomed if d not in cat.floors[-1:]]
        spared = [d for d in doomed if d in leased]
        gone = [d for d in doomed if d not in leased]
        if gone:
            seam.delete(gone)
        return RetentionResult(gone, spared, max(floor, cat.floor))
    finally:
        seam.delete([marker])


def _time_ms(seam: ObjectStoreSeam, name: str) -> float:
    """An object's ``time_ms`` from a ranged GET of its header (unreadable: the future, kept)."""
    head = seam.get_range(name, 0, HEADER_SIZE)
    if head is None or len(head) < HEADER_SIZE:
        return math.inf
    try:
        return _header_time(head)
    except ValueError:
        return math.inf


def _targets(seam: ObjectStoreSeam, cat: Catalog, rp: Replay, cutoff_ms: float) -> list[int]:
    """Every index that was the archive's latest at some instant after ``cutoff_ms``: the last
    index after each log object from the one that was the newest at the cutoff on (found by a
    binary search over the objects' header times, written in sequence order).  O(log objects) GETs."""
    logs = [o for o in cat.logs if o.seq >= cat.floor]
    lo, hi = 0, len(logs)  # logs[:lo] written at or before the cutoff
    while lo < hi:
        mid = (lo + hi) // 2
        if _time_ms(seam, cat.full(logs[mid].name)) <= cutoff_ms:
            lo = mid + 1
        else:
            hi = mid
    start = max(lo - 1, 0)
    return sorted({rp.lasts[o.seq] for o in logs[start:] if rp.lasts.get(o.seq)})


def _floor(seam: ObjectStoreSeam, cat: Catalog, cutoff_ms: float) -> tuple[int, int]:
    """The lowest log sequence number any target in the window needs (module docstring),
    ``cat.floor`` when nothing can go; and the lowest key/value snapshot index any of them
    uses (0: one restores from index 1).  O(objects x targets above today's last index)."""
    rp = replay(cat)
    targets = _targets(seam, cat, rp, cutoff_ms)
    today = [t for t in targets if t <= rp.last]
    older = [t for t in targets if t > rp.last]  # latest points of generations overwritten since
    need: list[int] = []
    bases: list[int] = []
    checked: list[int] = []
    if today:
        t_lo = today[0]
        try:
            plan = plan_restore(cat, t_lo)
        except ValueError:
            plan = None
        if plan is not None:
            checked += [t_lo, rp.last]
            base = plan.base
            bases.append(base)
            # every target t_lo..last: its snapshot is one of these (the newest fitting one <= t), its
            # entries above that snapshot are in these runs, and the object holding t_lo itself
            need += [k.seq + 1 for k in _kv_candidates(cat, rp.last, rp.seq) if k.index >= base]
            need += [r.obj.seq for r in rp.runs if r.last > base and r.obj.seq]
            need += [r.obj.seq for r in rp.runs if r.first <= t_lo <= r.last and r.obj.seq]
    for t in older:
        try:
            plan = plan_restore(cat, t)
        except ValueError:
            continue
        checked.append(t)
        bases.append(plan.base)
        run = replay(cat, plan.seq)
        need += [r.obj.seq for r in run.runs if r.last > plan.base and r.first <= t and r.obj.seq]
        if plan.kv is not None:
            need.append(plan.kv.seq + 1)
    if not need:
        return cat.floor, 0
    floor, base = min(need), min(bases)
    if floor <= cat.floor:
        return cat.floor, base
    # the floor must leave every checked target restorable: plan them on the catalog as it will be
    kvs = [k for k in cat.kvs if k.seq >= floor - 1 and k.index >= base]
    after = replace(cat, logs=[o for o in cat.logs if o.seq >= floor], kvs=kvs, floor=floor)
    for t in checked:
        try:
            plan_restore(after, t)
        except ValueError:
            log.warning("retention: a floor at %d would make index %d unrestorable: nothing removed", floor, t)
            return cat.floor, 0
    return floor, base


def _header_time(head: bytes) -> int:
    """The ``time_ms`` field of an object header (offset 40)."""
    if head[:4] != b"SWAR":
        raise ValueError("not an archive object")
    return int.from_bytes(head[40:48], "little")


def _seal_seq(name: str) -> int:
    tail = name.rsplit("/", 1)[-1]
    try:
        return int(tail.split("-", 1)[0])
    except ValueError:
        return 1 << 64
