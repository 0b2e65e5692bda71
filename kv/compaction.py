"""Compaction of the key/value store: rewrite the live records into one file, commit it, retire the old files.

A store whose files the engine's manifest lists compacts in the background
(:func:`start_compaction`): under the write lock, the active file is rolled over
to sequence ``S + 2`` and the key directory snapshotted (the table is immutable,
the overlay copied); a thread then writes the live records of the snapshot to
``kv-G-(S+1).tmp``, seals it, renames it ``.merged`` and writes its key index
as ``kv-G.index.tmp``, while writers go on appending to ``S + 2`` and later
files; under the lock again, the manifest's list becomes the merged file plus
the files written meanwhile (the commit point), the index is renamed in, and
the keys changed since the snapshot are laid over the new table (O(changes
meanwhile)).  Writers wait for the lock at most for the rollover and the swap.
A store without the list (``files=None``) compacts in the caller
(:func:`compact_store`).

The new file ``kv-G-S.merged`` (``S`` one past the active file) is written as
``kv-G-S.tmp`` in frames of about :data:`COMPACT_CHUNK` bytes of live records,
ends with a ``FLAG_COMPACT_END`` frame carrying ``last_applied``, is
fdatasynced and renamed; the fsync of the directory after the rename is the
commit point (``docs/format-kv.md``).  At open, :func:`segwal.kv.files.select_files`
deletes the files such a commit made obsolete.

These functions work on a :class:`~segwal.kv.store.KVStore`'s internals and run
under its write lock; they are never on the read path, and :meth:`KVStore.apply`
calls :func:`auto_compact` only when dead bytes pass the store's threshold.
"""

from __future__ import annotations

import errno
import logging
import random
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import xxhash

from segwal.errors import CorruptionError, StorageIOError, SyncError
from segwal.kv.codec import BODY_HEAD_SIZE, FLAG_COMPACT_END, REC_TABLE, TOMBSTONE, decode_kv_body, encode_kv_body
from segwal.kv.files import Loc, file_name, move_zeroing, read_locs
from segwal.kv.keydir import KeyDir, _Stop, commit_locks, open_table
from segwal.kv.keyindex import IndexHeader, build_table, index_name, write_index
from segwal.types import LogId
from segwal.wal.format import (
    FRAME_HEADER_SIZE,
    KIND_KV,
    SEGMENT_HEADER_SIZE,
    encode_frame,
    scan_frames,
)
from segwal.wal.segment import SegmentFile

if TYPE_CHECKING:
    from segwal.kv.store import KVStore

__all__ = ["COMPACT_CHUNK", "auto_compact", "compact_store"]

log = logging.getLogger("segwal.kv")

#: Bytes of live records per frame written by a compaction.
COMPACT_CHUNK: Final = 1 << 20
#: Rounds of catching up without the lock, and the size of a round under which the next is the locked one.
CATCH_UP_ROUNDS: Final = 8
CATCH_UP_DONE: Final = 64 << 10


def auto_compact(store: KVStore) -> None:
    """Compact after an apply that left too many dead bytes; failures are logged, never raised.

    The batch that triggered it is already committed: a failed compaction is
    reported in the log (WARNING, or ERROR for damaged data), never as a failure
    of that apply.  A failure after the rename has poisoned the store (the next
    write says so).  Caller holds the store's write lock.  O(live bytes).
    """
    try:
        start_compaction(store)
    except (StorageIOError, OSError) as e:
        log.warning("key/value compaction in %s failed, will retry later: %s", store._dir, e)
    except CorruptionError as e:
        log.error("key/value compaction in %s stopped at damaged data: %s", store._dir, e)


def compact_store(store: KVStore) -> None:
    """Rewrite the live data of ``store`` into one new file, switch to it and delete
    the old files (the body of :meth:`KVStore.compact`; caller holds the write lock
    and has checked the store is writable).  O(live bytes).

    Durability: the new file is fdatasynced before its rename and the directory
    fsynced after it (the commit point); readers switch to the new key directory
    in one assignment and keep using the old files' maps until then.

    Raises:
        OutOfSpaceError / StorageIOError: the new file could not be written;
            the old files stay in use, nothing lost.
        SyncError: the directory fsync after the rename failed; poisoned.
        CorruptionError: a live value failed its checksum; nothing changed.
    """
    fs = store._fs
    act = store._active
    assert act is not None
    kd = store._kd
    assert isinstance(kd, KeyDir)
    seq = act.seq + 1
    tmp = store._path(file_name(store._gen, seq, "tmp"))
    final = store._path(file_name(store._gen, seq, "merged"))
    try:
        seg = SegmentFile.create(
            fs, tmp, engine_id=store._engine_id, seq=seq, uid=random.getrandbits(64), base=store._gen,
            prealloc=store._prealloc,
        )
    except BaseException:
        store._discard(tmp.rsplit("/", 1)[1])
        raise
    renamed = False
    applied = store._applied
    try:
        new_kd: dict[bytes, Loc] = {}
        live = 0
        keys: list[bytes] = []
        locs: list[Loc] = []
        size = 0
        for k, loc in kd.items():
            keys.append(k)
            locs.append(loc)
            size += REC_TABLE + len(k) + loc[2] - loc[1]
            if size >= COMPACT_CHUNK:
                vals = list(read_locs(locs))
                checks = [loc[3] for loc in locs]
                live += _write_chunk(seg, keys, vals, checks, new_kd, 0, applied)
                keys, locs, size = [], [], 0
        if keys:
            vals = list(read_locs(locs))
            checks = [loc[3] for loc in locs]
            live += _write_chunk(seg, keys, vals, checks, new_kd, 0, applied)
        # Last frame: carries last_applied, and claims everything before it durable
        # (true at the commit point, which comes only after the fdatasync below).
        end_off = seg.end
        _write_chunk(seg, [], [], [], new_kd, FLAG_COMPACT_END, applied, durable=seg.end)
        seg.sync()
        fs.rename(tmp, final)
        renamed = True
        seg.path = final
        seg.file.path = final
        try:
            fs.fsync_dir(store._dir)  # the commit point, when the manifest does not list the files
        except OSError as e:
            err = SyncError(e.errno or errno.EIO, f"fsync of directory failed: {e.strerror or e}", store._dir)
            store._poison(err)
            raise err from e
        seg.durable = seg.end
        store._commit_files(seg.end, [seg])  # the commit point, when it does
    except SyncError as e:
        seg.discard()
        if not renamed:
            store._discard(tmp.rsplit("/", 1)[1])
        store._poison(e)
        raise
    except BaseException:
        seg.discard()
        store._discard((final if renamed else tmp).rsplit("/", 1)[1])
        raise
    old_files = store._files
    move_zeroing(store._pa, store._active, None, store._file_size)
    new = KeyDir(None, len(new_kd))
    new.over.update(new_kd)
    new.retired = old_files
    for old in kd.retired:
        old.file.close()  # retired by the compaction before: no reader still looks there
    store._kd = new  # readers switch here; old maps and files stay valid while referenced
    store._files = [seg]
    store._active = seg
    store._last_off = end_off
    move_zeroing(store._pa, None, seg, store._file_size)
    store._live = live
    store._dead = 0
    try:
        for old in old_files:
            fs.unlink(old.path)
        fs.fsync_dir(store._dir)
    except OSError as e:
        log.warning("key/value compaction in %s: removing old files failed (retried at open): %s", store._dir, e)
    if len(new) >= store._index_min:
        store._checkpoint()  # the old key index points into the files just removed
    elif fs.exists(store._path(index_name(store._gen))):
        store._discard(index_name(store._gen))


def _write_chunk(
    seg: SegmentFile,
    keys: list[bytes],
    vals: Sequence[bytes | None],
    checks: list[int],
    new_kd: dict[bytes, Loc],
    flags: int,
    applied: LogId | None,
    durable: int = 0,
) -> int:
    n = len(keys)
    body = encode_kv_body(keys, list(vals), checks, applied, flags)
    off = seg.end
    seg.append(encode_frame(KIND_KV, 0, body, offset=off, durable=durable, prev_crc=seg.last_crc, count=n))
    pos = off + FRAME_HEADER_SIZE + BODY_HEAD_SIZE + REC_TABLE * n
    live = 0
    for k, v, c in zip(keys, vals, checks):
        pos += len(k)
        end = pos + len(v)  # type: ignore[arg-type]
        new_kd[k] = (seg, pos, end, c)
        live += REC_TABLE + len(k) + len(v)  # type: ignore[arg-type]
        pos = end
    return live


# -- in the background -----------------------------------------------------------------


class _Aborted(Exception):
    """The store closed, lost its key index or was poisoned while a compaction ran."""


class Compaction:
    """A compaction running in the background (``store._compaction`` while it runs)."""

    __slots__ = ("abort", "applied", "crc", "dead0", "error", "kd", "last", "old", "pos", "seq", "snap", "src", "thread")

    def __init__(self, store: KVStore, kd: KeyDir) -> None:
        act = store._active
        assert act is not None
        self.kd = kd  # the store's key directory when it started (the switch needs the same one)
        self.snap = KeyDir(kd.table, kd.n)  # what it copies: the table and a copy of the overlay
        self.snap.over = dict(kd.over)
        self.old = list(store._files)  # the files it replaces
        self.src = act  # the active file: writers go on appending to it (no rollover meanwhile)
        self.pos = act.end  # its frames from here on are copied after the snapshot ("catch up")
        self.crc = act.last_crc  # the chain value at pos
        self.seq = act.seq + 1  # the sequence of the output
        self.applied = store._applied
        self.dead0 = store._dead
        self.abort = False
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None
        self.last = SEGMENT_HEADER_SIZE  # start of the output's last frame


def compact_now(store: KVStore) -> None:
    """The body of :meth:`KVStore.compact`: wait for a background key index checkpoint,
    then run a compaction in the calling thread, holding no lock while it copies
    (writers go on), and raise its error.  The caller may hold the engine's
    (reentrant) write lock: the commit step takes it again."""
    from segwal.kv.keydir import stop_checkpoint

    c: Compaction | None
    while True:
        stop_checkpoint(store, wait_only=True)
        with store._wlock:
            store._writable()
            if store._ckpt is not None:
                continue
            if store._compaction is not None:
                c = store._compaction
                break
            c = start_compaction(store, threaded=False)
            break
    if c is None:
        return
    if c.thread is not None:  # one started by an apply: wait for it
        stop_compaction(store, wait_only=True)
    else:
        _run(store, c)
    if c.error is not None:
        raise c.error


def start_compaction(store: KVStore, *, threaded: bool = True) -> Compaction | None:
    """Start compacting ``store`` in a thread (caller holds the write lock, store
    writable): O(overlay), the snapshot of the key directory.  Returns it, or the
    one already running; ``None`` when the store has no manifest list (compacted
    here by :func:`compact_store`)."""
    if store._compaction is not None:
        return store._compaction
    if store._ckpt is not None:  # a key index is being written: a later apply starts it
        return None
    if store._commit is None:
        compact_store(store)
        return None
    kd = store._kd
    assert isinstance(kd, KeyDir)
    c = Compaction(store, kd)
    store._compaction = c
    if threaded:
        c.thread = threading.Thread(target=_run, args=(store, c), name="segwal-kv-compaction", daemon=True)
        c.thread.start()
    return c


def stop_compaction(store: KVStore, *, wait_only: bool = False) -> None:
    """Wait for a running compaction (asking it to stop first unless ``wait_only``).
    Call without the write lock (its last step takes it)."""
    c = store._compaction
    if c is None:
        return
    if not wait_only:
        c.abort = True  # one run by a compact() caller stops at its next check
    if c.thread is not None and c.thread is not threading.current_thread():
        c.thread.join()


def _run(store: KVStore, c: Compaction) -> None:
    """The thread: copy the snapshot, write its key index, catch up twice without the
    lock, then catch up the rest and switch under it (:func:`_switch`)."""
    fs = store._fs
    tmp = store._path(file_name(store._gen, c.seq, "tmp"))
    final = store._path(file_name(store._gen, c.seq, "merged"))
    itmp = store._path(index_name(store._gen) + ".tmp")
    seg: SegmentFile | None = None
    renamed = wrote_index = committing = False
    try:
        seg = SegmentFile.create(
            fs, tmp, engine_id=store._engine_id, seq=c.seq, uid=random.getrandbits(64), base=store._gen,
            prealloc=store._prealloc,
        )
        rows: list[Any] = []
        new_kd: dict[bytes, Loc] = {}
        use_index = c.snap.n >= store._index_min and c.seq < 1 << 32
        keys: list[bytes] = []
        locs: list[Loc] = []
        size = live = 0
        for k, loc in c.snap.items():
            keys.append(k)
            locs.append(loc)
            size += REC_TABLE + len(k) + loc[2] - loc[1]
            if size >= COMPACT_CHUNK:
                live += _chunk(seg, keys, locs, new_kd, rows, c.applied)
                keys, locs, size = [], [], 0
                if use_index:
                    new_kd.clear()  # the index will hold them
                if c.abort:
                    raise _Aborted
        if keys:
            live += _chunk(seg, keys, locs, new_kd, rows, c.applied)
        end_off = seg.end
        # Last frame of the snapshot: carries its last_applied and claims everything before it
        # durable (true at the commit point, which comes after the file's fdatasync).
        _write_chunk(seg, [], [], [], {}, FLAG_COMPACT_END, c.applied, durable=seg.end)
        c.last = end_off
        n = sum(len(r) for r in rows)
        if use_index:
            allrows = np.concatenate(rows) if rows else np.zeros((0, 4), dtype="<u8")
            del rows
            nslots, slots = build_table(allrows)
            head = IndexHeader(store._engine_id, store._gen, nslots, len(slots), n, c.seq, seg.end, end_off,
                               seg.last_crc, ((c.seq, seg.uid),), live, 0, c.applied)
            write_index(fs, store._dir, head, slots, rename=False)
            wrote_index = True
            del slots, allrows
            got = open_table(store, {c.seq: seg}, path=itmp)
            if isinstance(got, str):
                raise StorageIOError(errno.EIO, f"key index written by the compaction not usable ({got})", itmp)
            new = KeyDir(got, n)
        else:
            new = KeyDir(None, n)
            new.over.update(new_kd)
        new_kd = {}
        acc: list[Any] = [live, 0, c.applied]
        for _ in range(CATCH_UP_ROUNDS):  # catch up what writers appended meanwhile, without the lock
            if c.abort:
                raise _Aborted
            if _catch_up(c, seg, new, acc) <= CATCH_UP_DONE:
                break
        seg.sync()
        fs.rename(tmp, final)  # the name is durable before a manifest lists it
        renamed = True
        seg.path = seg.file.path = final
        fs.fsync_dir(store._dir)
        with commit_locks(store, lambda: c.abort):
            if store._closed or store._poisoned is not None or store._kd is not c.kd or c.abort:
                raise _Aborted
            _catch_up(c, seg, new, acc)  # the last batches: O(bytes appended since the last round)
            if seg.durable < seg.end:
                seg.sync()
            committing = True
            store._commit_files(seg.end, [seg])  # the commit point
            committing = False
            _switch(store, c, seg, new, acc, itmp if wrote_index else None)
        try:  # unlisted now: removed without the lock (open removes them too)
            for old in c.old:
                fs.unlink(old.path)
            fs.fsync_dir(store._dir)
        except OSError as e:
            log.warning("key/value compaction in %s: removing old files failed (retried at open): %s", store._dir, e)
    except BaseException as e:  # noqa: BLE001 - reported by compact() or logged; the old files stay in use
        if seg is not None:
            seg.discard()
            if not committing:  # a failed manifest write may have landed: then the output is listed
                store._discard((final if renamed else tmp).rsplit("/", 1)[1])
        if wrote_index and not committing:
            store._discard(itmp.rsplit("/", 1)[1])
        with store._wlock:
            if store._compaction is c:
                store._compaction = None
            if committing and isinstance(e, SyncError):
                store._poison(e)
        c.error = e
        if not isinstance(e, (_Aborted, _Stop)):
            log.warning("key/value compaction in %s failed, will retry later: %s", store._dir, e)


def _catch_up(c: Compaction, seg: SegmentFile, new: KeyDir, acc: list[Any]) -> int:
    """Copy the frames appended to the source file since ``c.pos`` to the output (the
    same bodies) and lay their changes over ``new``; returns the bytes copied.
    O(bytes appended): no lookup per key (the switch takes the key count from the store).

    Raises:
        CorruptionError: a frame appended meanwhile does not read back.
    """
    src = c.src
    with src.lock:  # end and map as of one moment (append moves end, then remaps)
        end = src.end
        buf = src.buffer()
    if end <= c.pos:
        return 0
    res = scan_frames(buf, c.pos, c.crc, end)
    if res.end != end:
        raise CorruptionError("frame appended during compaction does not read back", path=src.path, offset=res.end)
    over = new.over
    keep_deletes = new.table is not None  # a marker must shadow the table's entry
    for off, fh in res.frames:
        if fh.kind != KIND_KV:
            raise CorruptionError(f"frame of kind {fh.kind} in a key/value file", path=src.path, offset=off)
        body = bytes(buf[off + FRAME_HEADER_SIZE : off + fh.frame_len])
        at = seg.end
        seg.append(encode_frame(KIND_KV, 0, body, offset=at, durable=0, prev_crc=seg.last_crc, count=fh.count))
        kb = decode_kv_body(seg.buffer(), at + FRAME_HEADER_SIZE, at + fh.frame_len, fh.count, seg.path)
        for k, vs, ve, vl, chk in zip(kb.keys, kb.vstarts, kb.vends, kb.vlens, kb.checks):
            if vl != TOMBSTONE:
                over[k] = (seg, vs, ve, chk)
            elif keep_deletes:
                over[k] = None
            else:
                over.pop(k, None)
        if kb.applied is not None:
            acc[2] = kb.applied
        c.last = at
    c.pos, c.crc = end, res.last_crc
    return end - res.frames[0][0] if res.frames else 0


def _switch(store: KVStore, c: Compaction, seg: SegmentFile, new: KeyDir, acc: list[Any], itmp: str | None) -> None:
    """After the commit: the output becomes the active file, its index and key
    directory the store's; the old files go.  Under the write lock.  O(files)."""
    fs = store._fs
    kd = c.kd
    store._compaction = None
    if itmp is not None and new.table is not None:
        try:
            fs.rename(itmp, store._path(index_name(store._gen)))
            new.table.path = store._path(index_name(store._gen))
        except OSError as e:  # the index is a cache: the next checkpoint writes one
            log.warning("key index of %s after compaction not renamed (%s)", store._dir, e)
    move_zeroing(store._pa, store._active, None, store._file_size)
    new.retired = c.old
    for old in kd.retired:
        old.file.close()  # retired by the compaction before: no reader still looks there
    seg.durable = seg.end
    store._kd = new  # readers switch here; old files stay open while readers may use them
    store._files = [seg]
    store._active = seg
    store._last_off = c.last
    new.n = len(kd)  # the store's count is exact; the copy laid changes over without lookups
    store._dead = max(0, store._dead - c.dead0)  # dead since the snapshot: now in the output
    store._applied = acc[2]
    move_zeroing(store._pa, None, seg, store._file_size)
    if itmp is None:
        store._discard(index_name(store._gen))  # it pointed into the files about to be removed


def _chunk(seg: SegmentFile, keys: list[bytes], locs: list[Loc], new_kd: dict[bytes, Loc], rows: list[Any],
           applied: LogId | None) -> int:
    """Write one frame of live records; add their key index rows (``new_kd`` is filled
    too, for a store too small for an index).  O(bytes)."""
    vals = read_locs(locs)
    checks = [loc[3] for loc in locs]
    off = seg.end
    live = _write_chunk(seg, keys, vals, checks, new_kd, 0, applied)
    n = len(keys)
    klen = np.fromiter(map(len, keys), np.uint64, n)
    vlen = np.fromiter(map(len, vals), np.uint64, n)
    data = off + FRAME_HEADER_SIZE + BODY_HEAD_SIZE + REC_TABLE * n
    ends = np.cumsum(klen + vlen) + np.uint64(data)
    koff = ends - vlen - klen
    hs = np.fromiter(map(_xxh3, keys), np.uint64, n)
    w1 = np.uint64(seg.seq) | (koff << np.uint64(32))
    w2 = klen | (vlen << np.uint64(32))
    rows.append(np.stack([hs, w1, w2, np.fromiter(checks, np.uint64, n)], axis=1))
    return live


_xxh3 = xxhash.xxh3_64_intdigest

