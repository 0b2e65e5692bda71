"""Retention of an archive: remove what no restore target inside the retention window needs, never what a restore in progress reads.

Rule (``retain_seconds`` = R): let K be the newest key/value snapshot written
more than R seconds ago.  Every target that was the archive's latest within
the last R seconds is at or above K's index and needs K (or a newer snapshot)
and log objects from the first one that holds an entry above K's index.  So a
pass removes the key/value snapshots older than K, and the log objects (and
seal records) numbered below ``F`` = the lowest sequence number among the
objects still holding an entry above K's index and those written after K.
Nothing is removed without such a K (default: keep everything).

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
import time
import uuid
from dataclasses import dataclass
from typing import Any

from segwal.storage.archive.catalog import read_catalog, replay
from segwal.storage.archive.format import HEADER_SIZE, K_FLOOR, encode_object, floor_name, join, object_hash
from segwal.storage.archive.restore import active_json
from segwal.storage.objectstore.seam import as_seam

__all__ = ["RetentionResult", "apply_retention"]

_PASS_SECONDS = 600.0


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
    Complexity: one LIST, a ranged GET per key/value snapshot header, the deletes.

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
        cutoff_ms = (now - retain_seconds) * 1000
        old = []
        for k in cat.kvs:
            head = seam.get_range(k.name, 0, HEADER_SIZE)
            if head is None or len(head) < HEADER_SIZE:
                continue
            try:
                h = _header_time(head)
            except ValueError:
                continue
            if h <= cutoff_ms:
                old.append(k)
        if not old:
            return RetentionResult([], [], cat.floor)
        keep_kv = old[-1]
        rp = replay(cat)
        needed = [r.obj.seq for r in rp.runs if r.last > keep_kv.index and r.obj.seq]
        floor = min([keep_kv.seq + 1, *needed])
        doomed = [cat.full(o.name) for o in cat.logs if o.seq < floor]
        doomed += [
            k.name for k in cat.kvs if k.index < keep_kv.index or (k.index == keep_kv.index and k.seq < keep_kv.seq)
        ]
        doomed += [s for s in cat.seals if _seal_seq(s) < floor - 1]
        below = [name for _n, seq, name, _d in cat.states if seq < floor - 1]
        doomed += below[:-1]  # the newest state written before the floor stays
        doomed += cat.floors
        if floor > cat.floor:
            data = encode_object(K_FLOOR, floor, 0, 0, 0, b"")
            new_floor = join(prefix, floor_name(floor, object_hash(data)))
            seam.put(new_floor, data, create=True)
            doomed = [d for d in doomed if d != new_floor]
        else:
            doomed = [d for d in doomed if d not in cat.floors[-1:]]
        spared = [d for d in doomed if d in leased]
        gone = [d for d in doomed if d not in leased]
        if gone:
            seam.delete(gone)
        return RetentionResult(gone, spared, max(floor, cat.floor))
    finally:
        seam.delete([marker])


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
