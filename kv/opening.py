"""Opening the key/value store: choose its record files, check them against the manifest's list, replay them.

The engine's manifest lists the files that hold the store (``docs/format-kv.md``,
"Which files must exist"): each must be there, a sealed one at its exact size,
the active one intact up to its durable claim; any other file of the generation
is a leftover of an operation that never committed and is deleted.  A store
whose manifest predates the list is opened from what the directory holds.
With a usable key index (``kv/keyindex.py``) only the frames written after its
checkpoint are replayed; otherwise every frame is.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

from segwal.errors import CorruptionError
from segwal.kv.files import KVFile, create_file, open_file, scan_file, select_files, select_tracked, torn_creation
from segwal.kv.keydir import KeyDir, open_table, replay
from segwal.kv.keyindex import IndexDamaged, KeyTable, index_name
from segwal.wal.format import SEGMENT_HEADER_SIZE

if TYPE_CHECKING:  # pragma: no cover - annotations only
    from segwal.kv.store import KVStore

__all__ = ["recover_store"]

log = logging.getLogger("segwal.kv")

_INDEX = re.compile(r"^kv-([0-9a-f]{16})\.index(\.tmp)?$")


def recover_store(self: KVStore, keep_others: bool = False, use_index: bool = True) -> None:
    """Open ``self``'s files and replay them (the body of :meth:`KVStore.open`); a key
    index found damaged while replaying over it is dropped (WARNING) and the
    files are replayed again without it (the index is a cache).

    Raises:
        CorruptionError: a listed file missing, stale, of the wrong size or damaged.
        StorageIOError: an I/O call failed.
    """
    try:
        _recover(self, keep_others, use_index)
    except IndexDamaged as e:
        log.warning("%s; replaying the record files without it", e)
        for seg in self._files:
            seg.file.close()
        self._files, self._active, self._last_off = [], None, SEGMENT_HEADER_SIZE
        if not self._readonly:
            self._discard(index_name(self._gen))
        _recover(self, keep_others, False)


def _recover(self: KVStore, keep_others: bool, use_index: bool) -> None:
    """The body of :func:`recover_store`.

    With a usable key index (:func:`segwal.kv.keydir.open_table`), files below
    the position it covers are checked by size only and only the frames after
    it are replayed: O(files + frames after the checkpoint).  Otherwise every
    frame is replayed: O(records and bytes).

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
    self._kd = KeyDir()
    plan: list[tuple[int, str, KVFile | None]]
    if tracked is None:  # a manifest from before the list: what the directory holds
        files, base = select_files(fs, self._dir, self._gen, keep_others=keep_others, readonly=self._readonly)
        if files and torn_creation(fs, self._dir, files[-1][1], readonly=self._readonly):
            files.pop()
        plan = [(seq, name, None) for seq, name in files]
    else:
        names = select_tracked(fs, self._dir, self._gen, tracked, keep_others=keep_others,
                               readonly=self._readonly)
        base = tracked[-1].seq + 1 if tracked else 1
        plan = [(seq, name, rec) for (seq, name), rec in zip(names, tracked)]
    _remove_stale_indexes(self, keep_others)
    for seq, name, rec in plan:
        seg = open_file(
            self._fs, self._dir, name, seq, engine_id=self._engine_id, generation=self._gen,
            readonly=self._readonly, prealloc=self._prealloc,
        )
        self._files.append(seg)  # closed by open() if anything fails
        if self._readonly and seq == plan[-1][0]:
            seg.snapshot()  # a live writer may append to it or cut it: read a copy
        if rec is not None and seg.uid != rec.uid:
            raise CorruptionError(
                f"stale key/value file: uid {seg.uid:#x}, the manifest lists {rec.uid:#x}", path=seg.path, offset=24
            )
    table = open_table(self, {f.seq: f for f in self._files}) if self._files and use_index else "missing"
    acc: list[Any] = [0, 0, None]
    cseq, coff, ccrc = 0, SEGMENT_HEADER_SIZE, 0
    if isinstance(table, KeyTable):
        h = table.head
        self._kd = KeyDir(table, h.nkeys)
        acc = [h.live, h.dead, h.applied]
        cseq, coff, ccrc = h.covered_seq, h.covered_off, h.covered_crc
        self._last_off = h.last_frame_off
    elif table != "missing":
        log.warning("key index in %s not used (%s): replaying the record files", self._dir, table)
        if not self._readonly:
            self._discard(index_name(self._gen))
    kd = self._kd
    assert isinstance(kd, KeyDir)
    for i, (seg, (_s, _n, rec)) in enumerate(zip(self._files, plan)):
        last = i == len(plan) - 1
        length = None if rec is None else rec.length
        if seg.seq < cseq:  # below the checkpoint: sealed, checked by size (its frames are read when used)
            size = seg.file.size()
            if length is not None and size != length:
                raise CorruptionError(
                    f"sealed key/value file is {size} bytes, the manifest says {length}", path=seg.path,
                    offset=min(size, length),
                )
            seg.end = seg.durable = size
            continue
        if seg.seq == cseq:
            buf, frames = scan_file(seg, last=last, readonly=self._readonly, length=length, start=coff, prev_crc=ccrc)
        else:
            buf, frames = scan_file(seg, last=last, readonly=self._readonly, length=length)
        for off, fh in frames:
            replay(kd, acc, seg, buf, off, fh)
        if last:
            if frames:
                self._last_off = frames[-1][0]
            elif seg.seq != cseq:
                self._last_off = SEGMENT_HEADER_SIZE
    self._live, self._dead, self._applied = acc
    if self._files:
        self._active = self._files[-1]
    elif not self._readonly:
        self._active = create_file(
            self._fs, self._dir, engine_id=self._engine_id, generation=self._gen, seq=base, prealloc=self._prealloc
        )
        self._files.append(self._active)
    if self._commit is not None and (tracked is None or not tracked):
        self._commit_files(self._active.durable if self._active is not None else 0)


def _remove_stale_indexes(self: KVStore, keep_others: bool) -> None:
    """Delete key index files of other generations (unless ``keep_others``) and unfinished ``.tmp`` ones."""
    if self._readonly:
        return
    try:
        names = self._fs.listdir(self._dir)
    except OSError:
        return
    mine = index_name(self._gen)
    for name in names:
        m = _INDEX.match(name)
        if m is None or name == mine or (keep_others and int(m.group(1), 16) != self._gen):
            continue
        self._discard(name)
