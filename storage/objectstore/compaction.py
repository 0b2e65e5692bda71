"""Compaction and garbage collection of an object-store engine: fold the slots into chunks and a checkpoint, publish a manifest, delete what it no longer names.

Order (the commit point is the manifest's create-if-absent):

1. write the live entries held by slot objects (and the last chunk, when it
   is smaller than half of ``chunk_bytes``) as new chunk objects under
   unique names;
2. when the key/value data changed since the last checkpoint, write a new
   checkpoint object under a unique name;
3. create manifest ``id + 1`` naming them, ``replay_after`` = the last slot;
   a crash before this leaves orphans only, never a changed state;
4. delete the folded slot objects (fence objects are kept: a fenced writer's
   next write goes exactly to a fence slot and must keep failing), chunks and
   checkpoints no longer named, and retire older manifests: epoch-claim
   manifests are overwritten by an empty object (their names stay taken for
   the same reason), the others deleted.  Failures here are logged and
   leave garbage, never damage.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from segwal.engine.hardstate import encode_hard_state
from segwal.errors import CorruptionError, FencedError, StorageIOError
from segwal.storage.objectstore.io import write_id_of
from segwal.storage.objectstore.layout import (
    K_CHUNK,
    K_ENTRIES,
    K_FENCE,
    K_INSTALL,
    K_KV,
    K_RESET,
    ChunkRef,
    Manifest,
    checkpoint_name,
    chunk_name,
    decode_manifest,
    decode_object_header,
    encode_manifest,
    manifest_name,
)
from segwal.storage.objectstore.view import Run, decode_runs, encode_checkpoint, encode_entries
from segwal.types import Entry, LogId

if TYPE_CHECKING:
    from segwal.storage.objectstore.engine import ObjectStoreEngine

__all__ = ["Background", "compact", "compact_concurrently", "purge_frees_objects", "plan", "upload", "publish", "Plan"]

log = logging.getLogger("segwal.objectstore")

_F_CLAIM = 16


def purge_frees_objects(eng: ObjectStoreEngine) -> bool:
    """Whether a purge left whole objects (chunks or entry slots) with no live entry.  O(objects)."""
    live = {r.name for r in eng._view.runs}
    if any(name not in live for name in eng._chunks):
        return True
    return any(kind == K_ENTRIES and name not in live for _seq, kind, name in eng._tail)


def _read_run(eng: ObjectStoreEngine, run: Run, lo: int, hi: int) -> list[Entry]:
    k, kj = lo - run.first, hi - run.first
    got = eng._io.get_range(run.name, run.pstart[k], run.pstart[kj] + run.plen[kj])
    if got is None:
        newer = eng._io.latest_manifest().epoch
        if newer > eng._epoch:  # a new owner compacted this writer's slots away: not damage
            eng._fenced = FencedError(f"{eng._io.prefix!r}: writer epoch {newer} took over from epoch {eng._epoch}")
            raise eng._fenced
        raise CorruptionError("object named by the log is missing", path=run.name)
    return eng._view.entries_of(run, lo, hi, got[0], got[1])


@dataclass
class Plan:
    """What a compaction folds, captured under the engine's lock: the state after slot ``upto``."""

    m: Manifest
    upto: int
    tail: list[tuple[int, int, str]]
    kept: list[tuple[ChunkRef, Run]]
    rewrite: list[tuple[Run, int, int]]  # run, first and last index to rewrite
    kv: dict[bytes, bytes] | None  # None: the key/value data did not change since m
    installed: list[int]
    last: int
    boundary: LogId | None
    applied: LogId | None
    hard: bytes | None


def plan(eng: ObjectStoreEngine) -> Plan | None:
    """Capture what to fold (under the engine's lock); ``None`` when there is nothing.  O(runs + kv)."""
    if eng._manifest_doubt is not None:
        _settle_manifest(eng)
    view = eng._view
    if not eng._tail and not purge_frees_objects(eng):
        return None
    kept: list[tuple[ChunkRef, Run]] = []
    rewrite: list[Run] = []
    for run in view.runs:
        ref = eng._chunks.get(run.name)
        if ref is not None and not rewrite:
            kept.append((ChunkRef(ref.first, ref.count, run.count, ref.uniq, ref.size), run))
        else:
            rewrite.append(run)
    if rewrite and kept and kept[-1][0].size < eng.chunk_bytes // 2:
        rewrite.insert(0, kept.pop()[1])  # grow the last small chunk instead of adding another
    spans = [(r, max(r.first, view.first), r.first + r.count - 1) for r in rewrite]
    return Plan(
        m=eng._manifest, upto=eng._next_slot - 1, tail=list(eng._tail), kept=kept,
        rewrite=[(r, lo, hi) for r, lo, hi in spans if lo <= hi],
        kv=dict(view.kv) if view.kv_dirty else None, installed=list(view.installed), last=view.last,
        boundary=view.boundary, applied=view.applied,
        hard=None if view.hard is None else encode_hard_state(view.hard),
    )


def upload(eng: ObjectStoreEngine, p: Plan) -> tuple[list[tuple[ChunkRef, Run]], int | None, int]:
    """Write the new chunks and checkpoint (unique names: no lock needed).  O(bytes folded + kv)."""
    io = eng._io
    out: list[tuple[ChunkRef, Run]] = []
    batch: list[Entry] = []
    size = 0

    def flush() -> None:
        nonlocal batch, size
        if not batch:
            return
        first = batch[0].index
        uniq = int.from_bytes(os.urandom(8), "little")
        wid = os.urandom(16)
        name = chunk_name(io.prefix, first, uniq)
        data = encode_entries(K_CHUNK, eng._epoch, first, wid, first, [e.term for e in batch],
                              [e.payload for e in batch])
        if io.create(name, data, wid.hex()) is not None:
            raise CorruptionError("a fresh chunk name is taken", path=name)
        io.remember(name, data)
        run = decode_runs(data, decode_object_header(data, name), name)[0]
        out.append((ChunkRef(first, run.count, run.count, uniq, len(data)), run))
        batch, size = [], 0

    for run, lo, hi in p.rewrite:
        for e in _read_run(eng, run, lo, hi):
            batch.append(e)
            size += len(e.payload) + 24
            if size >= eng.chunk_bytes:
                flush()
    flush()
    ckpt, ckpt_size = p.m.checkpoint, p.m.checkpoint_size
    if p.kv is not None:
        if p.kv:
            ckpt = int.from_bytes(os.urandom(8), "little")
            wid = os.urandom(16)
            data = encode_checkpoint(eng._epoch, wid, p.kv, p.applied)
            if io.create(checkpoint_name(io.prefix, ckpt), data, wid.hex()) is not None:
                raise CorruptionError("a fresh checkpoint name is taken", path=checkpoint_name(io.prefix, ckpt))
            ckpt_size = len(data)
        else:
            ckpt, ckpt_size = None, 0
    return out, ckpt, ckpt_size


def publish(eng: ObjectStoreEngine, p: Plan, written: list[tuple[ChunkRef, Run]], ckpt: int | None,
            ckpt_size: int) -> list[str]:
    """Create the next manifest (the commit point; under the engine's lock) and switch the view
    to the new objects, keeping what was written after slot ``p.upto``.  Returns the garbage."""
    io, view, m = eng._io, eng._view, p.m
    pairs = p.kept + written
    wid = os.urandom(16)
    nm = Manifest(
        mid=m.mid + 1, epoch=eng._epoch, write_id=wid, claim=False, replay_after=p.upto, last_index=p.last,
        boundary=p.boundary, applied=p.applied, hard_state=p.hard, checkpoint=ckpt, checkpoint_size=ckpt_size,
        chunks=tuple(ref for ref, _run in pairs),
    )
    name = manifest_name(io.prefix, nm.mid)
    try:
        other = io.create(name, encode_manifest(nm), wid.hex())
    except StorageIOError:
        eng._manifest_doubt = (nm.mid, wid.hex())  # it may have landed: settled by the next compaction
        raise
    if other is not None:
        eng._check_not_newer(name, other)
        raise CorruptionError(f"manifest {nm.mid} is taken by a writer not newer than epoch {eng._epoch}", path=name)
    # Published.  The view's runs over folded slots and old chunks (a prefix of the runs:
    # later writes append or cut) are replaced by the new chunk runs, cut where they are.
    folded = {n for _s, _k, n in p.tail} | set(eng._chunks)
    npre = 0
    while npre < len(view.runs) and view.runs[npre].name in folded:
        npre += 1
    runs: list[Run] = []
    if npre:
        hi = view.runs[npre - 1].first + view.runs[npre - 1].count - 1
        for _ref, run in pairs:
            run.count = min(run.count, hi - run.first + 1)
            if run.count > 0 and run.first + run.count - 1 >= view.first:
                runs.append(run)
    view.runs = runs + view.runs[npre:]
    view.firsts = [run.first for run in view.runs]
    later = [t for t in eng._tail if t[0] > p.upto]
    view.kv_dirty = any(kind in (K_KV, K_RESET, K_INSTALL) for _s, kind, _n in later)
    view.installed = [u for u in view.installed if u not in p.installed]
    old_chunks = eng._chunks
    eng._chunks = {run.name: ref for ref, run in pairs}
    eng._tail = later
    eng._manifest = nm
    dead = [n for _seq, kind, n in p.tail if kind != K_FENCE]
    dead += [n for n in old_chunks if n not in eng._chunks]
    for u in {m.checkpoint, *p.installed} - {ckpt, None}:
        assert u is not None
        dead.append(checkpoint_name(io.prefix, u))
    return dead


def compact(eng: ObjectStoreEngine) -> None:
    """Fold the slots after the manifest into chunks and a checkpoint; publish; collect garbage.

    Runs entirely under the engine's lock (the caller holds it).  Durable on
    return (the new manifest is acknowledged).  Raises FencedError when a
    newer writer published first; StorageIOError when the store keeps
    failing before the manifest is published (then nothing changed).
    Complexity: O(bytes folded + key/value bytes when they changed).
    """
    p = plan(eng)
    if p is None:
        return
    written, ckpt, size = upload(eng, p)
    _collect(eng, publish(eng, p, written, ckpt, size), p.m.mid + 1)


def compact_concurrently(eng: ObjectStoreEngine) -> None:
    """:func:`compact` holding the engine's lock only to plan and to publish: writers go on
    meanwhile (their slots stay after the new manifest).  The caller holds
    :attr:`Background.lock` so that compactions never overlap."""
    with eng._mutex:
        if eng._closed or eng._fenced is not None:
            return
        p = plan(eng)
    if p is None:
        return
    written, ckpt, size = upload(eng, p)
    with eng._mutex:
        if eng._closed or eng._fenced is not None or eng._manifest is not p.m:
            return  # the uploads are orphans under unique names
        dead = publish(eng, p, written, ckpt, size)
    _collect(eng, dead, p.m.mid + 1)


def _collect(eng: ObjectStoreEngine, dead: list[str], current: int) -> None:
    """Delete ``dead`` objects and retire manifests below ``current``; failures only log."""
    io = eng._io
    io.forget(dead)
    try:
        if dead:
            io.retry(lambda: io.seam.delete(dead))
        _retire_manifests(eng, current)
    except StorageIOError as e:
        log.warning("garbage collection of %r failed (garbage stays, state is safe): %s", io.prefix, e)


def _settle_manifest(eng: ObjectStoreEngine) -> None:
    """A compaction's manifest create failed: if it landed after all, adopt it (re-read
    the state from the store, which it describes) and collect the garbage it made."""
    from segwal.storage.objectstore import opening

    assert eng._manifest_doubt is not None
    mid, wid = eng._manifest_doubt
    io = eng._io
    name = manifest_name(io.prefix, mid)
    obj = io.retry(lambda: io.seam.get(name))
    eng._manifest_doubt = None
    if obj is None or write_id_of(obj, name) != wid:
        return  # it did not land (someone else's object there is found by the next create)
    landed = decode_manifest(obj.data, name)
    old_m, old_chunks, old_tail = eng._manifest, eng._chunks, eng._tail
    opening.build(eng, landed, eng._next_slot - 1)
    dead = [n for seq, kind, n in old_tail if kind != K_FENCE and seq <= landed.replay_after]
    dead += [n for n in old_chunks if n not in eng._chunks]
    if old_m.checkpoint is not None and old_m.checkpoint != landed.checkpoint:
        dead.append(checkpoint_name(io.prefix, old_m.checkpoint))
    _collect(eng, dead, landed.mid)


def _retire_manifests(eng: ObjectStoreEngine, current: int) -> None:
    """Delete manifests older than ``current``; overwrite epoch claims with an empty object."""
    io = eng._io
    for mid, size in io.manifest_ids():
        if mid >= current or size == 0:
            continue
        name = manifest_name(io.prefix, mid)
        head = io.retry(lambda: io.seam.get_range(name, 0, 8))
        if head is None:
            continue
        if len(head) >= 8 and int.from_bytes(head[6:8], "little") & _F_CLAIM:
            io.retry(lambda: io.seam.put(name, b""))
        else:
            io.retry(lambda: io.seam.delete([name]))


class Background:
    """The background compactor of one engine: a thread, started on first use, that runs
    :func:`compact_concurrently` each time it is poked.  ``lock`` keeps compactions from
    overlapping; it is always taken before the engine's lock."""

    def __init__(self, eng: ObjectStoreEngine) -> None:
        self.eng = eng
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.thread: threading.Thread | None = None

    def poke(self) -> None:
        """Ask for a compaction (starting the thread if needed).  O(1); never blocks."""
        if self.thread is None:
            self.thread = threading.Thread(target=self._loop, name="segwal-compactor", daemon=True)
            self.thread.start()
        self.wake.set()

    def run_once(self) -> None:
        """One compaction now, in the caller's thread (waits for a running one first)."""
        with self.lock:
            compact_concurrently(self.eng)

    def _loop(self) -> None:
        while True:
            self.wake.wait()
            self.wake.clear()
            if self.eng._closed:
                return
            try:
                self.run_once()
            except (StorageIOError, FencedError) as e:  # fenced: every later call of the engine says so
                log.warning("background compaction of %r failed: %s", self.eng._io.prefix, e)
            except Exception:  # noqa: BLE001 - compaction is retried later; writes never depend on it
                log.exception("background compaction of %r failed", self.eng._io.prefix)

    def stop(self) -> None:
        """Let a running compaction finish, mark the engine closed, end the thread."""
        with self.lock:
            with self.eng._mutex:
                self.eng._closed = True
        self.wake.set()
        if self.thread is not None:
            self.thread.join()
