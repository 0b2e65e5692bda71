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
from typing import TYPE_CHECKING

from segwal.engine.hardstate import encode_hard_state
from segwal.errors import CorruptionError, StorageIOError
from segwal.storage.objectstore.io import write_id_of
from segwal.storage.objectstore.layout import (
    K_CHUNK,
    K_ENTRIES,
    K_FENCE,
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
from segwal.types import Entry

if TYPE_CHECKING:
    from segwal.storage.objectstore.engine import ObjectStoreEngine

__all__ = ["compact", "purge_frees_objects"]

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
        raise CorruptionError("object named by the log is missing", path=run.name)
    return eng._view.entries_of(run, lo, hi, got[0], got[1])


def _write_chunks(eng: ObjectStoreEngine, runs: list[Run]) -> list[tuple[ChunkRef, Run]]:
    """Write the live entries of ``runs`` as chunk objects of about ``chunk_bytes`` each."""
    io, view = eng._io, eng._view
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

    for run in runs:
        lo = max(run.first, view.first)
        hi = run.first + run.count - 1
        if lo > hi:
            continue
        for e in _read_run(eng, run, lo, hi):
            batch.append(e)
            size += len(e.payload) + 24
            if size >= eng.chunk_bytes:
                flush()
    flush()
    return out


def compact(eng: ObjectStoreEngine) -> None:
    """Fold the slots after the manifest into chunks and a checkpoint; publish; collect garbage.

    Durable on return (the new manifest is acknowledged).  Raises FencedError
    when a newer writer published first; StorageIOError when the store keeps
    failing before the manifest is published (then nothing changed).
    Complexity: O(bytes folded + key/value bytes when they changed).
    """
    if eng._manifest_doubt is not None:
        _settle_manifest(eng)
    io, view, m = eng._io, eng._view, eng._manifest
    if not eng._tail and not purge_frees_objects(eng):
        return
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
    written = _write_chunks(eng, rewrite)
    ckpt, ckpt_size = m.checkpoint, m.checkpoint_size
    if view.kv_dirty:
        if view.kv:
            ckpt = int.from_bytes(os.urandom(8), "little")
            wid = os.urandom(16)
            data = encode_checkpoint(eng._epoch, wid, view.kv, view.applied)
            if io.create(checkpoint_name(io.prefix, ckpt), data, wid.hex()) is not None:
                raise CorruptionError("a fresh checkpoint name is taken", path=checkpoint_name(io.prefix, ckpt))
            ckpt_size = len(data)
        else:
            ckpt, ckpt_size = None, 0
    pairs = kept + written
    wid = os.urandom(16)
    nm = Manifest(
        mid=m.mid + 1, epoch=eng._epoch, write_id=wid, claim=False, replay_after=eng._next_slot - 1,
        last_index=view.last, boundary=view.boundary, applied=view.applied,
        hard_state=None if view.hard is None else encode_hard_state(view.hard),
        checkpoint=ckpt, checkpoint_size=ckpt_size, chunks=tuple(ref for ref, _run in pairs),
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
    # published: switch the view to the new objects
    old_chunks, old_tail, installed = eng._chunks, eng._tail, list(view.installed)
    view.runs = [run for _ref, run in pairs]
    view.firsts = [run.first for run in view.runs]
    view.kv_dirty = False
    view.installed.clear()
    eng._chunks = {run.name: ref for ref, run in pairs}
    eng._tail = []
    eng._manifest = nm
    dead = [n for _seq, kind, n in old_tail if kind != K_FENCE]
    dead += [n for n in old_chunks if n not in eng._chunks]
    for u in {m.checkpoint, *installed} - {ckpt, None}:
        assert u is not None
        dead.append(checkpoint_name(io.prefix, u))
    _collect(eng, dead, nm.mid)


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
