"""Opening an object-store engine: claim the writer epoch, place the fence, build the view from the manifest, chunk tables and slots.

Order for a writer (see ``docs/format-objectstore.md``, "Fencing"):

1. read the newest manifest ``m``; create manifest ``m + 1`` with epoch + 1
   and the claim flag (create-if-absent; on conflict re-read and retry);
2. list the slots after ``m.replay_after`` and create a fence object at the
   first free one (on conflict with an older writer's record, the next one);
3. re-read the newest manifest: if its epoch is not ours, a newer writer
   took over while we opened (FencedError);
4. replay exactly the slots ``(replay_after, fence]`` over the manifest's
   state and the chunks' slot tables (one ranged GET per chunk, in parallel).

A read-only engine does only step 4, replaying the contiguous slots it finds;
when a concurrent compaction deletes an object it was reading, it starts over.
"""

from __future__ import annotations

import errno
import functools
import os
from typing import TYPE_CHECKING, Final

from segwal.engine.hardstate import decode_hard_state
from segwal.errors import CorruptionError, FencedError, StaleViewError, StorageIOError
from segwal.storage.objectstore.layout import (
    K_CHECKPOINT,
    K_FENCE,
    K_INSTALL,
    OBJECT_HEADER_SIZE,
    ChunkRef,
    Manifest,
    checkpoint_name,
    chunk_name,
    decode_object_header,
    encode_manifest,
    encode_object,
    manifest_name,
    parse_id,
    slot_name,
)
from segwal.storage.objectstore.seam import ObjectExistsError
from segwal.storage.objectstore.view import Decoded, Run, View, decode_kv_frames, decode_runs, decode_slot
from segwal.wal.format import FRAME_HEADER_SIZE, SLOT_SIZE

if TYPE_CHECKING:
    from segwal.storage.objectstore.engine import ObjectStoreEngine

__all__ = ["open_engine", "load_view", "apply_decoded", "load_checkpoint", "Vanished"]

_OPEN_ATTEMPTS: Final = 20


def _wid() -> bytes:
    return os.urandom(16)


def open_engine(eng: ObjectStoreEngine) -> None:
    """Open ``eng``: a writer claims the next epoch and places its fence, then the view is built."""
    if eng.readonly:
        load_view(eng)
        return
    io = eng._io
    probe_create_if_absent(eng)
    for _ in range(_OPEN_ATTEMPTS):
        m = io.latest_manifest()
        wid = _wid()
        claim = Manifest(
            mid=m.mid + 1, epoch=m.epoch + 1, write_id=wid, claim=True, replay_after=m.replay_after,
            last_index=m.last_index, boundary=m.boundary, applied=m.applied, hard_state=m.hard_state,
            checkpoint=m.checkpoint, checkpoint_size=m.checkpoint_size, chunks=m.chunks,
        )
        if io.create(manifest_name(io.prefix, claim.mid), encode_manifest(claim), wid.hex()) is None:
            break
    else:
        raise StorageIOError(5, "could not claim a writer epoch (the manifest kept changing)", io.prefix)
    eng._epoch = claim.epoch
    fence = place_fence(eng, claim)
    latest = io.latest_manifest()
    if latest.epoch != eng._epoch:
        raise FencedError(f"{io.prefix!r}: epoch {latest.epoch} took over while epoch {eng._epoch} opened")
    load_view(eng, claim, fence)


def probe_create_if_absent(eng: ObjectStoreEngine) -> None:
    """Check that the store refuses a second create of one name (``If-None-Match: *``).

    Some S3-compatible stores ignore the condition and overwrite: fencing
    would then be silently void, so such a store is refused at open.  Three
    requests on a probe object under ``<prefix>probe/`` (deleted afterwards).

    Raises:
        StorageIOError: (``EOPNOTSUPP``) the store overwrote the probe.
    """
    io = eng._io
    name = f"{io.prefix}probe/{os.urandom(8).hex()}"
    if io.create(name, b"1", os.urandom(16).hex()) is not None:
        raise CorruptionError("a fresh probe name is taken", path=name)
    try:
        io.seam.put(name, b"2", create=True)
    except ObjectExistsError:
        pass
    except StorageIOError:
        pass  # inconclusive (a failed request): the next open probes again
    else:
        raise StorageIOError(
            errno.EOPNOTSUPP,
            "the object store does not enforce create-if-absent (If-None-Match: *): writers cannot be fenced",
            name,
        )
    finally:
        try:
            io.seam.delete([name])
        except StorageIOError:
            pass  # a stray probe object is harmless


def place_fence(eng: ObjectStoreEngine, m: Manifest) -> int:
    """Create the fence object at the first free slot after the manifest; return its slot."""
    io = eng._io
    listed = [parse_id(i.name, "log", ".slot") for i in io.list_folder("log", slot_name(io.prefix, m.replay_after))]
    seqs = [s for s in listed if s is not None and s > m.replay_after]
    seq = (max(seqs) if seqs else m.replay_after) + 1
    while True:
        wid = _wid()
        head, _crc = encode_object(K_FENCE, eng._epoch, seq, wid)
        other = io.create(slot_name(io.prefix, seq), head, wid.hex())
        if other is None:
            return seq
        eng._check_not_newer(slot_name(io.prefix, seq), other)
        seq += 1  # the old writer's last record: the fence goes after it


def load_view(eng: ObjectStoreEngine, m: Manifest | None = None, fence: int | None = None) -> None:
    """Build the view: the manifest's state, its chunks' tables, then the slots after it replayed."""
    io = eng._io
    for _ in range(_OPEN_ATTEMPTS):
        mm = io.latest_manifest() if m is None else m
        try:
            build(eng, mm, fence)
            return
        except Vanished:
            if m is not None:
                raise CorruptionError("an object of the log vanished while this writer opened", path=io.prefix)
            io.clear()  # a writer compacted under this read-only view: start over
    raise StaleViewError(f"{io.prefix!r}: the writer kept moving while this view opened")


def build(eng: ObjectStoreEngine, m: Manifest, fence: int | None) -> None:
    """Set ``eng``'s view to manifest ``m`` plus the slots after it: up to ``fence``
    (a writer: all must exist) or the contiguous ones listed (a read-only view).

    Raises Vanished when a named object is gone, CorruptionError for damage.
    O(chunks + slots) requests, in parallel.
    """
    io = eng._io
    view = View()
    view.last, view.first = m.last_index, m.last_index + 1
    view.boundary, view.applied = m.boundary, m.applied
    if m.hard_state is not None:
        view.hard = decode_hard_state(m.hard_state, manifest_name(io.prefix, m.mid))
    if m.checkpoint is not None:
        view.kv = load_checkpoint(eng, m.checkpoint)
    chunks: dict[str, ChunkRef] = {}
    runs = io.map(functools.partial(chunk_run, eng), list(m.chunks))
    for ref, run in zip(m.chunks, runs):
        run.count = ref.live
        view.runs.append(run)
        view.firsts.append(run.first)
        chunks[run.name] = ref
    if view.runs:
        view.first = max(view.runs[0].first, (m.boundary.index + 1) if m.boundary else 0)
    view.kv_dirty = False
    if fence is None:
        listed = io.list_folder("log", slot_name(io.prefix, m.replay_after))
        seqs = sorted(s for s in (parse_id(i.name, "log", ".slot") for i in listed)
                      if s is not None and s > m.replay_after)
        contiguous = [s for k, s in enumerate(seqs) if s == m.replay_after + 1 + k]
        end = contiguous[-1] + 1 if contiguous else m.replay_after + 1
    else:
        end = fence + 1
    names = [slot_name(io.prefix, s) for s in range(m.replay_after + 1, end)]
    tail: list[tuple[int, int, str]] = []
    for seq, name, data in zip(range(m.replay_after + 1, end), names, io.get_many(names)):
        if data is None:
            raise Vanished(name)
        d = decode_slot(data, name)
        if d.hdr.seq != seq:
            raise CorruptionError(f"slot object says slot {d.hdr.seq}", path=name, offset=16)
        apply_decoded(eng, view, d)
        tail.append((seq, d.hdr.kind, name))
    eng._manifest, eng._view, eng._chunks, eng._tail = m, view, chunks, tail
    eng._next_slot = end


def chunk_run(eng: ObjectStoreEngine, ref: ChunkRef) -> Run:
    """The run of a chunk object, from one ranged GET of its header and slot table."""
    io = eng._io
    name = chunk_name(io.prefix, ref.first, ref.uniq)
    got = io.get_range(name, 0, OBJECT_HEADER_SIZE + FRAME_HEADER_SIZE + SLOT_SIZE * ref.count)
    if got is None:
        raise Vanished(name)
    data = bytes(got[0])
    hdr = decode_object_header(data, name)
    runs = decode_runs(data, hdr, name, limit=len(data))
    if len(runs) != 1 or runs[0].first != ref.first or runs[0].count != ref.count:
        raise CorruptionError("chunk does not hold what the manifest says", path=name, offset=hdr.body)
    return runs[0]


def load_checkpoint(eng: ObjectStoreEngine, uniq: int) -> dict[bytes, bytes]:
    """The key/value data of checkpoint ``uniq`` (one GET, checked).  O(bytes)."""
    name = checkpoint_name(eng._io.prefix, uniq)
    data = eng._io.get(name)
    if data is None:
        raise Vanished(name)
    hdr = decode_object_header(data, name)
    if hdr.kind != K_CHECKPOINT:
        raise CorruptionError(f"object kind {hdr.kind} is not a checkpoint", path=name, offset=6)
    kv: dict[bytes, bytes] = {}
    for keys, values, _applied in decode_kv_frames(data, hdr, name):
        for k, v in zip(keys, values):
            if v is not None:
                kv[k] = bytes(v)
    return kv


def apply_decoded(eng: ObjectStoreEngine, view: View, d: Decoded) -> None:
    """Replay one decoded slot on ``view`` (an INSTALL loads its checkpoint).  O(record)."""
    if d.hdr.kind == K_INSTALL:
        assert d.install is not None
        applied, uniq = d.install
        view.install(applied, load_checkpoint(eng, uniq), uniq)
    else:
        view.apply_slot(d)


class Vanished(Exception):
    """An object named by the manifest or listing was gone when read (a concurrent compaction)."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(name)
