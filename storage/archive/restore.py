"""Restore an engine directory from an archive, at the latest point or at log index N, verifying every object; and the archive's restorable position.

The archive is input from outside.  Object names are never turned into file
paths: restore writes only through ``WalEngine`` into a new private temporary
directory beside ``dest`` (mode 0700, files 0600), which is synced and renamed
onto ``dest`` at the end.  Every object read is checked against the hash its
name carries, its header and body checksums, every entry's check value, and
its place in the sequence (``catalog``); lengths and counts are checked
against the object's size before use.  A missing or damaged object, or a gap,
makes the restore refuse and name it; nothing is left behind.

A restore first writes a lease (``lease/<id>.json``: expiry and the objects
its plan reads); a retention pass skips what a live lease names, and a
restore that finds a retention pass at work waits for it and plans again
(``retention.py`` has the other half of this handshake).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from segwal.engine import WalEngine
from segwal.engine.tap import append_columns
from segwal.errors import CorruptionError
from segwal.fs import DEFAULT_DIR_MODE, DEFAULT_FILE_MODE
from segwal.storage.archive.catalog import Catalog, Plan, plan_restore, read_catalog, replay, restorable_end
from segwal.storage.archive.format import (
    HEADER_SIZE,
    K_KV,
    MAX_OBJECT,
    LogName,
    decode_delta_columns,
    decode_object,
    decode_state,
    join,
    object_hash,
)
from segwal.storage.objectstore.seam import ObjectStoreSeam, as_seam
from segwal.types import HardState

__all__ = ["LEASE_SECONDS", "RestoreResult", "active_json", "read_archived_position", "restore"]

#: How long a restore's lease protects its plan from retention (renewed never: a restore is shorter).
LEASE_SECONDS = 3600.0
_BATCH = 1 << 15
#: A log object's columns: terms, payload lengths, check values, payloads back to back.
_Columns = tuple[np.ndarray, np.ndarray, np.ndarray, memoryview]
_AHEAD = 8  # objects downloaded ahead of the one being restored
log = logging.getLogger("segwal.archive")


@dataclass(frozen=True)
class RestoreResult:
    """What :func:`restore` built."""

    path: str
    target: int
    first_index: int
    last_index: int
    kv_snapshot_index: int
    hard_state: HardState
    objects_read: int
    bytes_read: int
    message: str


def active_json(seam: ObjectStoreSeam, names: list[str], now: float | None = None) -> list[tuple[str, dict[str, Any]]]:
    """The lease or retention-pass objects among ``names`` that have not expired,
    with their contents (an unreadable one counts as active for its default life).  One GET each."""
    now = time.time() if now is None else now
    out = []
    for name in names:
        got = seam.get(name)
        if got is None:
            continue
        try:
            doc = json.loads(got.data)
            expires = float(doc["expires"])
        except (ValueError, KeyError, TypeError):
            doc, expires = {"objects": []}, now + 1
        if expires > now:
            out.append((name, doc))
    return out


def read_archived_position(store: Any, prefix: str = "") -> int:
    """The highest log index a restore can reach from the archive now (0: none):
    log objects in sequence without a gap down to a key/value snapshot or to
    index 1, and the newest of them read whole and verified.

    Cost: one LIST and one GET.  Raises CorruptionError on damage found.
    """
    seam = as_seam(store)
    cat = read_catalog(seam, prefix)
    rp = replay(cat)
    end = restorable_end(cat, rp)
    if end is None:
        return 0
    run = next((r for r in reversed(rp.runs) if r.first <= end <= r.last), None)
    if run is not None and not run.obj.gap:
        _read_delta(cat, run.obj, _get(seam, cat, run.obj))
    return end


def _bounded(cat: Catalog, name: str) -> None:
    """Refuse, before any GET, a log or state object whose listed size is beyond what an archiver writes."""
    size = cat.sizes.get(name)
    if size is not None and not HEADER_SIZE <= size <= MAX_OBJECT:
        raise CorruptionError(
            f"archive object of {size} bytes listed: expected {HEADER_SIZE} to {MAX_OBJECT} bytes", path=name
        )


def _get(seam: ObjectStoreSeam, cat: Catalog, obj: LogName) -> bytes:
    name = cat.full(obj.name)
    _bounded(cat, name)
    got = seam.get(name)
    if got is None:
        raise CorruptionError("archive object is missing (listed, or named by the plan, but not found)", path=name)
    return got.data


def _read_delta(cat: Catalog, obj: LogName, data: bytes) -> _Columns:
    """Log object ``obj`` (its bytes ``data``) checked (module docstring): its terms, payload
    lengths, check values (each verified against its payload) and payloads back to back."""
    name = cat.full(obj.name)
    if object_hash(data) != obj.digest:
        raise CorruptionError(
            "archive object does not match the hash in its name (damaged or replaced)", path=name, offset=0
        )
    head, terms, plens, checks, blob = decode_delta_columns(data, name)
    if (head.seq, head.first, head.count) != (obj.seq, obj.first, obj.count):
        raise CorruptionError(
            f"object header says seq {head.seq} entries {head.first}+{head.count}, "
            f"its name seq {obj.seq} entries {obj.first}+{obj.count}",
            path=name,
            offset=8,
        )
    return terms, plens, checks, blob


def _same_twin(cat: Catalog, obj: LogName, data: bytes, twin: LogName, other: bytes) -> None:
    """Twin log objects (catalog) must hold the same entries: checked, and compared body to body."""
    _read_delta(cat, twin, other)
    if memoryview(data)[HEADER_SIZE:] != memoryview(other)[HEADER_SIZE:]:
        raise CorruptionError(
            f"log object {obj.seq} appears twice with different content ({cat.full(obj.name)})",
            path=cat.full(twin.name),
            offset=HEADER_SIZE,
            index=obj.first,
        )


def _check_dest(dest: str) -> tuple[str, str]:
    dest = os.path.abspath(os.fspath(dest))
    if os.path.islink(dest):
        raise ValueError(f"dest_dir {dest!r} is a symbolic link: restore writes only into a real directory")
    if os.path.exists(dest):
        if not os.path.isdir(dest):
            raise ValueError(f"dest_dir {dest!r} exists and is not a directory")
        if os.listdir(dest):
            raise ValueError(f"dest_dir {dest!r} is not empty: restore builds a new engine directory")
    parent = os.path.dirname(dest)
    os.makedirs(parent, mode=DEFAULT_DIR_MODE, exist_ok=True)
    return dest, parent


def _lease_objects(cat: Catalog, plan: Plan) -> list[str]:
    """Every object ``plan`` reads (full names): its log objects, key/value snapshot and state object."""
    return (
        [cat.full(o) for o in plan.objects()]
        + [cat.full(t.name) for o in plan.objects() for t in cat.twins.get(o, [])]
        + ([plan.kv.name] if plan.kv else [])
        + ([plan.state] if plan.state is not None else [])
    )


def _lease(seam: ObjectStoreSeam, cat: Catalog, plan: Plan, seconds: float) -> str:
    name = join(cat.prefix, f"lease/{uuid.uuid4().hex}.json")
    doc = {"expires": time.time() + seconds, "target": plan.target, "objects": _lease_objects(cat, plan)}
    seam.put(name, json.dumps(doc).encode(), create=True)
    return name


def _planned(
    seam: ObjectStoreSeam, prefix: str, to_index: int | None, lease_seconds: float
) -> tuple[Catalog, Plan, str]:
    """List, plan, lease; then make sure no retention pass that could miss the lease is at work."""
    deadline = time.monotonic() + 600
    while True:
        cat = read_catalog(seam, prefix)
        plan = plan_restore(cat, to_index)
        lease = _lease(seam, cat, plan, lease_seconds)
        now = read_catalog(seam, prefix)
        passes = active_json(seam, now.passes)
        gone = [n for n in _lease_objects(cat, plan) if n not in now.sizes]
        if not passes and not gone:
            return cat, plan, lease
        # a pass began before it could see the lease, or one ran between the LIST and the lease:
        # wait for it, then plan again
        seam.delete([lease])
        if time.monotonic() > deadline:
            raise TimeoutError(f"retention passes kept the archive busy for 600 s ({passes[:1] or gone[:1]})")
        time.sleep(0.2 if passes else 0.0)


def restore(
    store: Any,
    prefix: str,
    dest_dir: str | os.PathLike[str],
    *,
    to_index: int | None = None,
    lease_seconds: float = LEASE_SECONDS,
) -> RestoreResult:
    """Build the engine directory ``dest_dir`` (absent or empty) from the archive at
    ``prefix``: at the latest restorable index, or at ``to_index`` = N (the newest
    archived version of entries <= N; the newest key/value snapshot at M <= N,
    ``last_applied`` = M; entries M+1..N).  The hard state keeps the archived
    term, records no vote, and its commit index is clamped to N.

    Durability: ``dest_dir`` appears whole (temporary directory, fsync, rename,
    parent fsync) or not at all.  Complexity: O(objects + bytes); the objects
    are fetched 8 at a time.

    Raises:
        CorruptionError: a missing or damaged object (named), or a broken sequence.
        ValueError: a bad argument, or a target that is not restorable (a gap named).
        StorageIOError: the store failed.
    """
    if to_index is not None and (type(to_index) is not int or to_index < 0):
        raise ValueError(f"to_index must be an int >= 0 or None, got {to_index!r}")
    seam = as_seam(store)
    dest, parent = _check_dest(os.fspath(dest_dir))
    cat, plan, lease = _planned(seam, prefix.strip("/"), to_index, lease_seconds)
    tmp = os.path.join(parent, f".{os.path.basename(dest)}.restore-{uuid.uuid4().hex[:12]}")
    os.mkdir(tmp, DEFAULT_DIR_MODE)
    try:
        result = _build(seam, cat, plan, tmp, dest)
        dfd = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        if os.path.isdir(dest) and not os.path.islink(dest):
            os.rmdir(dest)  # empty (checked): the rename takes its place
        os.rename(tmp, dest)
        pfd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(pfd)
        finally:
            os.close(pfd)
        return result
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        try:
            seam.delete([lease])
        except Exception as e:  # noqa: BLE001 - it expires anyway
            log.warning("restore lease %s not removed (it expires): %s", lease, e)


def _fetch(seam: ObjectStoreSeam, cat: Catalog, plan: Plan) -> Iterator[tuple[LogName, _Columns, int]]:
    """The plan's log objects in order, checked: downloaded 8 at a time ahead (the
    threads only wait for the store), verified and decoded in the caller's thread."""
    objs: list[LogName] = []
    for r in plan.runs:
        if not objs or objs[-1] is not r.obj:
            objs.append(r.obj)
    with ThreadPoolExecutor(_AHEAD) as pool:
        futures = [pool.submit(_get, seam, cat, o) for o in objs[:_AHEAD]]
        try:
            for k, o in enumerate(objs):
                data = futures[k].result()
                futures[k] = None  # type: ignore[call-overload]
                if k + _AHEAD < len(objs):
                    futures.append(pool.submit(_get, seam, cat, objs[k + _AHEAD]))
                cols = _read_delta(cat, o, data)
                for t in cat.twins.get(o.name, []):
                    _same_twin(cat, o, data, t, _get(seam, cat, t))
                yield o, cols, len(data)
        finally:
            for fut in futures:
                if fut is not None:
                    fut.cancel()


def _build(seam: ObjectStoreSeam, cat: Catalog, plan: Plan, tmp: str, dest: str) -> RestoreResult:
    nread = nbytes = 0
    kv_term = 0
    eng = WalEngine(tmp, sync="flush", file_mode=DEFAULT_FILE_MODE, dir_mode=DEFAULT_DIR_MODE)
    try:
        if plan.kv is not None:
            kv_term = _install_kv(seam, eng, plan, tmp)
            nread += 1
        expect = plan.base + 1
        prev_term = kv_term
        by_obj: dict[str, list[tuple[int, int]]] = {}
        for r in plan.runs:
            by_obj.setdefault(r.obj.name, []).append((r.first, r.last))
        for obj, (terms, plens, checks, blob), size in _fetch(seam, cat, plan):
            nread += 1
            nbytes += size
            # offsets of the payloads in ``blob``: a batch is one slice of it
            offs = np.zeros(len(plens) + 1, dtype=np.int64)
            np.cumsum(plens, out=offs[1:])
            for a, b in by_obj.pop(obj.name, []):
                lo, hi = a - obj.first, b - obj.first + 1
                if a != expect or lo < 0 or hi > len(plens):
                    raise CorruptionError(
                        f"object does not hold entries {a}..{b} the sequence places in it",
                        path=cat.full(obj.name),
                        index=expect,
                    )
                if int(terms[lo]) < prev_term:
                    raise CorruptionError(
                        f"entry {a} has term {int(terms[lo])}, below {prev_term} of the entry before it",
                        path=cat.full(obj.name),
                        index=a,
                    )
                for i in range(lo, hi, _BATCH):
                    j = min(hi, i + _BATCH)
                    # the check values were verified against the payloads by _read_delta:
                    # the engine writes them as they are, hashing nothing again
                    append_columns(
                        eng, obj.first + i, terms[i:j], plens[i:j], checks[i:j], blob[int(offs[i]) : int(offs[j])]
                    )
                expect = b + 1
                prev_term = int(terms[hi - 1])
        if expect != plan.target + 1:
            raise CorruptionError(f"the plan stops at {expect - 1}, not at the target {plan.target}", path=cat.prefix)
        term, commit = prev_term, 0
        if plan.state is not None:
            _bounded(cat, plan.state)
            got = seam.get(plan.state)
            if got is None:
                raise CorruptionError("archive object is missing", path=plan.state)
            n, seq, digest = next((n, q, d) for n, q, name, d in cat.states if name == plan.state)
            if object_hash(got.data) != digest:
                raise CorruptionError(
                    "archive object does not match the hash in its name (damaged or replaced)",
                    path=plan.state,
                    offset=0,
                )
            head, rec = decode_state(got.data, plan.state)
            if (head.seq, head.first) != (n, seq):
                raise CorruptionError(
                    f"state object header says {head.seq} after {head.first}, its name {n} after {seq}",
                    path=plan.state,
                    offset=8,
                )
            nread += 1
            if rec.hard is not None:
                term, commit = max(term, rec.hard.current_term), rec.hard.commit_index
        hs = HardState(term, None, min(commit, plan.target))
        eng.save_hard_state(hs)
        eng.flush()
        first, last = eng.first_index(), eng.last_index()
    finally:
        eng.close()
    msg = (
        f"restored entries {plan.base + 1}..{plan.target}"
        + (f" over the key/value snapshot at {plan.base}" if plan.kv else "")
        + f" into {dest}: term {hs.current_term}, no vote, commit index {hs.commit_index}. "
        "The restored node is safe to start as a NEW member of a cluster (add it by a membership change) "
        "or, with every member restored from archives, for a whole-cluster rebuild; it must not rejoin "
        "under the identity of a live member."
    )
    return RestoreResult(dest, plan.target, first, last, plan.base, hs, nread, nbytes, msg)


def _install_kv(seam: ObjectStoreSeam, eng: WalEngine, plan: Plan, tmp: str) -> int:
    kv = plan.kv
    assert kv is not None
    got = seam.get(kv.name)
    if got is None:
        raise CorruptionError("archive object is missing", path=kv.name)
    if object_hash(got.data) != kv.digest:
        raise CorruptionError("archive object does not match the hash in its name", path=kv.name, offset=0)
    head, body = decode_object(got.data, kv.name, K_KV)
    if (head.first, head.count) != (kv.index, kv.term):
        raise CorruptionError("key/value snapshot header does not match its name", path=kv.name, offset=16)
    snap = os.path.join(tmp, "restore.kvsnap")
    fd = os.open(snap, os.O_WRONLY | os.O_CREAT | os.O_EXCL, DEFAULT_FILE_MODE)
    with os.fdopen(fd, "wb") as f:
        f.write(body)
    try:
        try:
            at = eng.install_snapshot(snap)
        except CorruptionError as e:
            raise CorruptionError(f"key/value snapshot in the archive is damaged: {e}", path=kv.name) from e
    finally:
        os.unlink(snap)
    if (at.index, at.term) != (kv.index, kv.term):
        raise CorruptionError(f"key/value snapshot is at {at}, its name says {kv.index}/{kv.term}", path=kv.name)
    return at.term
