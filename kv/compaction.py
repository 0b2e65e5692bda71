"""Compaction of the key/value store: rewrite the live records into one file, commit it, retire the old files.

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
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from segwal.errors import CorruptionError, StorageIOError, SyncError
from segwal.kv.codec import BODY_HEAD_SIZE, FLAG_COMPACT_END, REC_TABLE, encode_kv_body
from segwal.kv.files import Loc, file_name, move_zeroing, read_locs
from segwal.kv.keydir import KeyDir
from segwal.kv.keyindex import index_name
from segwal.types import LogId
from segwal.wal.format import FRAME_HEADER_SIZE, KIND_KV, encode_frame
from segwal.wal.segment import SegmentFile

if TYPE_CHECKING:
    from segwal.kv.store import KVStore

__all__ = ["COMPACT_CHUNK", "auto_compact", "compact_store"]

log = logging.getLogger("segwal.kv")

#: Bytes of live records per frame written by a compaction.
COMPACT_CHUNK: Final = 1 << 20


def auto_compact(store: KVStore) -> None:
    """Compact after an apply that left too many dead bytes; failures are logged, never raised.

    The batch that triggered it is already committed: a failed compaction is
    reported in the log (WARNING, or ERROR for damaged data), never as a failure
    of that apply.  A failure after the rename has poisoned the store (the next
    write says so).  Caller holds the store's write lock.  O(live bytes).
    """
    try:
        compact_store(store)
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
