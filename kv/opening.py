"""Opening the key/value store: choose its record files, check them against the manifest's list, replay them.

The engine's manifest lists the files that hold the store (``docs/format-kv.md``,
"Which files must exist"): each must be there, a sealed one at its exact size,
the active one intact up to its durable claim; any other file of the generation
is a leftover of an operation that never committed and is deleted.  A store
whose manifest predates the list is opened from what the directory holds.
Replay rebuilds the key directory from every frame.  O(records and bytes).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from segwal.errors import CorruptionError
from segwal.kv.codec import REC_TABLE, TOMBSTONE, decode_kv_body
from segwal.kv.files import KVFile, create_file, open_file, scan_file, select_files, select_tracked, torn_creation
from segwal.wal.format import FRAME_HEADER_SIZE, KIND_KV, FrameHeader
from segwal.wal.segment import SegmentFile

if TYPE_CHECKING:  # pragma: no cover - annotations only
    from segwal.kv.store import KVStore

__all__ = ["recover_store"]


def recover_store(self: KVStore, keep_others: bool = False) -> None:
    """Open ``self``'s files and replay them (the body of :meth:`KVStore.open`).  O(records and bytes).

    Raises:
        CorruptionError: a listed file missing, stale, of the wrong size or damaged.
        StorageIOError: an I/O call failed.
    """
    fs = self._fs
    if self._readonly and not fs.exists(self._dir):
        if self._tracked:
            select_tracked(fs, self._dir, self._gen, self._tracked, keep_others=True, readonly=True)
        return
    tracked = self._tracked
    self._kd = {}
    if tracked is None:  # a manifest from before the list: what the directory holds
        files, base = select_files(fs, self._dir, self._gen, keep_others=keep_others, readonly=self._readonly)
        if files and torn_creation(fs, self._dir, files[-1][1], readonly=self._readonly):
            files.pop()
        for i, (seq, name) in enumerate(files):
            _load(self, name, seq, last=i == len(files) - 1)
    else:
        names = select_tracked(fs, self._dir, self._gen, tracked, keep_others=keep_others,
                               readonly=self._readonly)
        base = tracked[-1].seq + 1 if tracked else 1
        for i, ((seq, name), rec) in enumerate(zip(names, tracked)):
            _load(self, name, seq, last=i == len(names) - 1, rec=rec)
    if self._files:
        self._active = self._files[-1]
    elif not self._readonly:
        self._active = create_file(
            self._fs, self._dir, engine_id=self._engine_id, generation=self._gen, seq=base, prealloc=self._prealloc
        )
        self._files.append(self._active)
    if self._commit is not None and (tracked is None or not tracked):
        self._commit_files(self._active.durable if self._active is not None else 0)



def _load(self: KVStore, name: str, seq: int, *, last: bool, rec: KVFile | None = None) -> None:
    seg = open_file(
        self._fs, self._dir, name, seq, engine_id=self._engine_id, generation=self._gen,
        readonly=self._readonly, prealloc=self._prealloc,
    )
    self._files.append(seg)  # closed by open() if the scan fails
    if last and self._readonly:
        seg.snapshot()  # a live writer may append to it or cut it: read a copy
    if rec is not None and seg.uid != rec.uid:
        raise CorruptionError(
            f"stale key/value file: uid {seg.uid:#x}, the manifest lists {rec.uid:#x}", path=seg.path, offset=24
        )
    buf, frames = scan_file(seg, last=last, readonly=self._readonly, length=None if rec is None else rec.length)
    for off, fh in frames:
        _replay(self, seg, buf, off, fh)

def _replay(self: KVStore, seg: SegmentFile, buf: Any, off: int, fh: FrameHeader) -> None:
    if fh.kind != KIND_KV:
        raise CorruptionError(f"frame of kind {fh.kind} in a key/value file", path=seg.path, offset=off)
    body = decode_kv_body(buf, off + FRAME_HEADER_SIZE, off + fh.frame_len, fh.count, seg.path)
    kd = self._kd
    assert isinstance(kd, dict)
    live = self._live
    dead = self._dead
    for k, vs, ve, vl, c in zip(body.keys, body.vstarts, body.vends, body.vlens, body.checks):
        if vl == TOMBSTONE:
            old = kd.pop(k, None)
            dead += REC_TABLE + len(k)
        else:
            old = kd.get(k)
            kd[k] = (seg, vs, ve, c)
            live += REC_TABLE + len(k) + vl
        if old is not None:
            sz = REC_TABLE + len(k) + old[2] - old[1]
            live -= sz
            dead += sz
    self._live, self._dead = live, dead
    if body.applied is not None:
        self._applied = body.applied

