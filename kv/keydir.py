"""The key directory of the key/value store: a mapped key index (checkpoint) under an in-memory overlay of recent changes.

:class:`KeyDir` answers "where is the value of this key": first from ``over``, a
dict of the keys changed since the key index was last written (``None`` marks
a key deleted since), then from ``table``, the mapped :class:`KeyTable` of
``kv-G.index`` (``kv/keyindex.py``).  Without an index (a small or new store,
or one whose index was missing or damaged) everything lives in ``over``.
:func:`checkpoint` folds the overlay into a new index file and returns a new
directory with an empty overlay; the store swaps it in with one assignment,
readers holding the old one keep a consistent view.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np
import xxhash

from segwal.errors import CorruptionError
from segwal.fs import OsFileSystem
from segwal.kv.codec import REC_TABLE, TOMBSTONE, decode_kv_body
from segwal.kv.keyindex import IndexDamaged, IndexHeader, KeyTable, build_table, index_name, load_index, write_index
from segwal.wal.format import (
    FRAME_HEADER_SIZE,
    KIND_KV,
    SEGMENT_HEADER_SIZE,
    FrameHeader,
    decode_frame_header,
    decode_segment_header,
    scan_frames,
)
from segwal.wal.segment import SegmentFile

if TYPE_CHECKING:  # pragma: no cover - annotations only
    from segwal.kv.store import KVStore
    from segwal.types import LogId

__all__ = [
    "BG_CHECKPOINT_KEYS",
    "Checkpoint",
    "KVStats",
    "KeyDir",
    "Refusing",
    "checkpoint_store",
    "commit_locks",
    "freeze_store",
    "index_damaged",
    "maybe_checkpoint",
    "open_table",
    "publish_slow",
    "rebuild_keydir",
    "replay",
    "stop_checkpoint",
]

#: A key index of at least this many keys is built and written in a background thread
#: (:func:`maybe_checkpoint`); a smaller one under the write lock (milliseconds).
BG_CHECKPOINT_KEYS = 1 << 16

log = logging.getLogger("segwal.kv")

_xxh3 = xxhash.xxh3_64_intdigest
_MISS: Any = object()
Loc = tuple[SegmentFile, int, int, int]


@dataclass(frozen=True, slots=True)
class KVStats:
    """Sizes of the store.

    Attributes:
        keys: live keys.
        live_bytes: bytes of live records (16-byte table slot + key + value each).
        dead_bytes: bytes of records that no longer count (overwritten values,
            deleted values, tombstones); compaction reclaims them.
        files: record files in use.
    """

    keys: int
    live_bytes: int
    dead_bytes: int
    files: int


class Refusing:
    """Stands in for the key directory once the store is closed or lost data:
    every read raises the given error (keeps the hot :meth:`KVStore.get` path free
    of state checks)."""

    __slots__ = ("_exc", "_n")

    def __init__(self, exc: Exception, n: int) -> None:
        self._exc = exc
        self._n = n

    def get(self, key: bytes) -> NoReturn:
        raise self._exc

    def items(self) -> NoReturn:
        raise self._exc

    def value(self, key: bytes) -> NoReturn:
        raise self._exc

    def __len__(self) -> int:
        return self._n


class KeyDir:
    """Key -> :data:`Loc` of its value: ``over`` (recent changes) over ``table`` (the index).

    ``n`` is the number of live keys.  One writer (the store's lock); readers
    call :meth:`get` concurrently (dict reads and the immutable table).
    """

    __slots__ = ("n", "over", "retired", "table")

    def __init__(self, table: KeyTable | None = None, n: int = 0) -> None:
        self.over: dict[bytes, Loc | None] = {}
        self.table = table
        self.n = n
        # files a compaction replaced: readers of the previous directory may still
        # pread them, so they are closed at the next compaction or at close
        self.retired: list[SegmentFile] = []

    def get(self, key: bytes) -> Loc | None:
        """Where ``key``'s value is, or ``None``.  O(1): a dict lookup, then at most a table probe.

        Raises:
            IndexDamaged: a block of the index failed its checksum (the store rebuilds).
            CorruptionError: a record the index points at is damaged.
        """
        v = self.over.get(key, _MISS)
        if v is not _MISS:
            return v  # type: ignore[no-any-return]
        t = self.table
        return None if t is None else t.lookup(key)

    def get_many(self, keys: Sequence[bytes]) -> list[Loc | None]:
        """:meth:`get` of each key, in order: one C-level pass over ``over``, then the
        keys it does not hold looked up in the table together (:meth:`KeyTable.lookup_many`).

        Raises:
            IndexDamaged / CorruptionError: as :meth:`get`.
        """
        over = self.over
        t = self.table
        if t is None:
            return list(map(over.get, keys))
        olds: list[Any] = list(map(over.get, keys, repeat(_MISS)))
        miss = [i for i, o in enumerate(olds) if o is _MISS]
        if miss:
            for i, loc in zip(miss, t.lookup_many([keys[i] for i in miss])):
                olds[i] = loc
        return olds

    def value(self, key: bytes) -> bytes | None:
        """The value of ``key`` or ``None``, its xxh3 verified (the body of :meth:`KVStore.get`).

        Raises:
            IndexDamaged: a block of the index failed its checksum (the store rebuilds).
            CorruptionError: the stored value or key no longer matches its checksum.
            TypeError: ``key`` is not bytes.
        """
        loc = self.over.get(key, _MISS)
        if loc is _MISS:
            t = self.table
            v = None if t is None else t.value(key)
            if v is None and type(key) is not bytes:
                raise TypeError(f"key must be bytes, got {type(key).__name__}")
            return v
        if loc is None:
            return None
        seg, s, e, h = loc
        v = seg.map[s:e]
        if _xxh3(v) != h:
            raise CorruptionError("key/value value checksum mismatch", path=seg.path, offset=s)
        return v  # type: ignore[no-any-return]

    def __len__(self) -> int:
        return self.n

    def put(self, key: bytes, loc: Loc, was_live: bool) -> None:
        """Set ``key``'s location (``was_live``: it had a value before)."""
        self.over[key] = loc
        if not was_live:
            self.n += 1

    def put_many(self, pairs: Iterable[tuple[bytes, Loc]], added: int) -> None:
        """Set many locations at C speed; ``added`` of the keys had no value before."""
        self.over.update(pairs)
        self.n += added

    def delete(self, key: bytes, was_live: bool) -> None:
        """Remove ``key`` (a marker shadows the table's entry)."""
        if self.table is None:
            self.over.pop(key, None)
        else:
            self.over[key] = None
        if was_live:
            self.n -= 1

    def items(self) -> Iterator[tuple[bytes, Loc]]:
        """Every live ``(key, loc)``.  O(keys); the table's keys are read from the record files.

        Raises:
            IndexDamaged: a block of the index failed its checksum.
        """
        over = self.over
        if self.table is not None:
            for k, loc in self.table.items():
                if k not in over:
                    yield k, loc
        for k, v in over.items():
            if v is not None:
                yield k, v

    def rows(self) -> Any:
        """Every live key as an ``(n, 4)`` uint64 array of index slots (see :func:`build_table`).
        O(table) in numpy plus O(overlay) in Python.

        Raises:
            IndexDamaged: a block of the index failed its checksum.
        """
        over = self.over
        parts = []
        t = self.table
        if t is not None:
            rows = t.rows()
            if over and len(rows):
                oh = np.fromiter(map(_xxh3, over), np.uint64, len(over))
                cand = np.flatnonzero(np.isin(rows[:, 0], oh)).tolist()
                drop = [i for i in cand if t.key_at(rows[i]) in over]
                if drop:
                    rows = np.delete(rows, drop, axis=0)
            parts.append(rows)
        live = [(k, v) for k, v in over.items() if v is not None]
        if live:
            n = len(live)
            hs = np.fromiter((_xxh3(k) for k, _ in live), np.uint64, n)
            klen = np.fromiter((len(k) for k, _ in live), np.uint64, n)
            seq = np.fromiter((v[0].seq for _, v in live), np.uint64, n)
            vs = np.fromiter((v[1] for _, v in live), np.uint64, n)
            ve = np.fromiter((v[2] for _, v in live), np.uint64, n)
            chk = np.fromiter((v[3] for _, v in live), np.uint64, n)
            w1 = seq | ((vs - klen) << np.uint64(32))
            w2 = klen | ((ve - vs) << np.uint64(32))
            parts.append(np.stack([hs, w1, w2, chk], axis=1))
        return np.concatenate(parts) if parts else np.zeros((0, 4), dtype="<u8")


def freeze_store(store: KVStore) -> tuple[KeyDir | Refusing, LogId | None]:
    """A consistent view of ``store`` for a snapshot, cheap to take: a key directory
    later writes do not change (the immutable key index under a copy of the overlay
    of changes since it was written), and ``last_applied``.  O(overlay) in one
    C-level dict copy; no key or value is read.

    The caller holds off writers during the call (the engine's write lock); the
    view's ``items()`` (O(keys)) and ``store.read_values`` then run without it
    (files a compaction or checkpoint replaces stay mapped while referenced).
    ``items()`` may raise ``IndexDamaged``: the caller then falls back to
    ``store.capture()`` under the lock, which rebuilds the directory.
    """
    kd = store._kd
    if not isinstance(kd, KeyDir):
        return kd, store._applied  # a closed or poisoned store: its items() raises its error
    view = KeyDir(kd.table, kd.n)
    view.over = dict(kd.over)
    return view, store._applied


def open_table(store: KVStore, segs: dict[int, SegmentFile], path: str | None = None) -> KeyTable | str:
    """The store's key index if it can be used with the record files ``segs``
    (opened, headers checked, not yet scanned), else why not.

    Usable means: its header and file list check out, every file it names is
    open with the same uid, and the frame ending at its covered offset is
    there with the chain value it recorded.  O(files + blocks / 512).  ``path``:
    another file than ``kv-G.index`` (a compaction's, before it is renamed).
    """
    got = load_index(store._fs, store._dir, engine_id=store._engine_id, generation=store._gen, path=path)
    if isinstance(got, str):
        return got
    head, buf, sums = got
    for seq, uid in head.files:
        seg = segs.get(seq)
        if seg is None or seg.uid != uid:
            return f"record file {seq} is not the one it indexed"
    if head.covered_seq not in segs or max(segs) < head.covered_seq:
        return "covered file missing"
    seg = segs[head.covered_seq]
    fb = seg.buffer()
    if len(fb) < head.covered_off:
        return "covered position beyond the file"
    if head.last_frame_off == head.covered_off:
        if head.covered_off != SEGMENT_HEADER_SIZE or seg.last_crc != head.covered_crc:
            return "covered position does not match the file"
    else:
        try:
            fh = decode_frame_header(fb, head.last_frame_off)
        except Exception:  # noqa: BLE001 - any doubt: not usable
            fh = None
        if fh is None or fh.header_crc != head.covered_crc or head.last_frame_off + fh.frame_len != head.covered_off:
            return "covered frame does not match the file"
    path = path or f"{store._dir}/{index_name(store._gen)}"
    fio = None
    if type(store._fs) is OsFileSystem:  # point reads by pread (see KeyTable); closed when the table is dropped
        try:
            fio = open(path, "rb", buffering=0)  # noqa: SIM115
        except OSError as e:
            return f"unreadable ({e})"
    return KeyTable(path, head, buf, sums, dict(segs), fio)


def _checkpoint(store: KVStore) -> None:
    """Write a new key index covering everything applied so far and switch the store
    to it (empty overlay).  Caller holds the write lock; the active file's frames
    are durable (the caller flushed).  A failed write is logged and the store goes
    on with its overlay.  O(keys) in numpy, O(overlay) in Python, O(table bytes) I/O.
    """
    kd = store._kd
    assert isinstance(kd, KeyDir)
    act = store._active
    assert act is not None
    if act.seq >= 1 << 32:
        return  # slots hold 32-bit sequences: stay in memory
    rows = kd.rows()
    nslots, slots = build_table(rows)
    files = tuple((f.seq, f.uid) for f in store._files)
    head = IndexHeader(
        store._engine_id, store._gen, nslots, len(slots), len(rows), act.seq, act.end, store._last_off,
        act.last_crc, files, store._live, store._dead, store._applied,
    )
    try:
        write_index(store._fs, store._dir, head, slots)
    except OSError as e:
        log.warning("key index of %s not written (%s); the store keeps its changes in memory", store._dir, e)
        return
    got = open_table(store, {f.seq: f for f in store._files})
    if isinstance(got, str):
        log.warning("key index of %s unusable right after writing it (%s)", store._dir, got)
        return
    new = KeyDir(got, len(rows))
    new.retired = kd.retired
    store._kd = new  # readers switch here


def checkpoint_store(store: KVStore, *, closing: bool = False) -> None:
    """Write the key index and switch the store to it, flushing first (it must cover
    only durable frames).  When ``closing``, only if the store has an index with
    changes over it, or none and at least ``index_min_keys`` keys.  Under the write lock.
    """
    kd = store._kd
    if store._last_off < 0 or store._poisoned is not None or not isinstance(kd, KeyDir):
        return
    if closing and not (kd.over if kd.table is not None else len(kd) >= store._index_min):
        return
    store._flush()
    try:
        _checkpoint(store)
    except IndexDamaged as e:
        index_damaged(store, e)


class Checkpoint:
    """A key index being written in the background (``store._ckpt`` while it runs)."""

    __slots__ = ("abort", "changed", "head", "kd", "segs", "snap", "thread")

    def __init__(self, store: KVStore, kd: KeyDir) -> None:
        act = store._active
        assert act is not None
        self.kd = kd  # the key directory it folds (the switch needs the same one)
        self.snap = KeyDir(kd.table, kd.n)  # the table and a copy of the overlay
        self.snap.over = dict(kd.over)
        self.segs = {f.seq: f for f in store._files}
        self.head = (act.seq, act.end, store._last_off, act.last_crc, tuple((f.seq, f.uid) for f in store._files),
                     store._live, store._dead, store._applied)
        self.changed: list[bytes] = []  # keys applied since (KVStore.apply appends)
        self.abort = False
        self.thread: threading.Thread | None = None


def maybe_checkpoint(store: KVStore) -> None:
    """Write the key index after an ``apply`` that changed enough keys (caller holds
    the write lock): under the lock for a store of fewer than :data:`BG_CHECKPOINT_KEYS`
    keys, else in a thread that builds and writes it from a snapshot (the lock is
    held for a flush and the O(overlay) copy, then for the switch: O(keys applied
    meanwhile)).  The commit point is the rename, as for :func:`checkpoint_store`."""
    kd = store._kd
    if len(kd) < BG_CHECKPOINT_KEYS:
        checkpoint_store(store)
        return
    if store._last_off < 0 or store._poisoned is not None or not isinstance(kd, KeyDir):
        return
    act = store._active
    if act is None or act.seq >= 1 << 32:
        return
    store._flush()  # the index covers durable frames only
    c = Checkpoint(store, kd)
    store._ckpt = c
    c.thread = threading.Thread(target=_run_checkpoint, args=(store, c), name="segwal-kv-checkpoint", daemon=True)
    c.thread.start()


def stop_checkpoint(store: KVStore, *, wait_only: bool = False) -> None:
    """Wait for a background checkpoint (asking it to stop unless ``wait_only``).  Without the lock."""
    c = store._ckpt
    if c is None or c.thread is None or c.thread is threading.current_thread():
        return
    if not wait_only:
        c.abort = True
    c.thread.join()


class _Stop(Exception):
    pass


@contextlib.contextmanager
def commit_locks(store: KVStore, aborted: Callable[[], bool]) -> Iterator[None]:
    """For a background thread's commit step: the engine's write lock (``outer_lock``),
    then the store's, in the order every writer takes them.  While waiting for the
    engine's lock it polls ``aborted`` (a closer may hold that lock while it waits
    for this thread) and raises :class:`_Stop` when it says so."""
    outer = store._outer
    if outer is not None:
        while not outer.acquire(timeout=0.02):
            if aborted():
                raise _Stop
    try:
        with store._wlock:
            yield
    finally:
        if outer is not None:
            outer.release()


def _run_checkpoint(store: KVStore, c: Checkpoint) -> None:
    fs = store._fs
    final = f"{store._dir}/{index_name(store._gen)}"
    tmp = final + ".tmp"
    wrote = False
    try:
        rows = c.snap.rows()
        nslots, slots = build_table(rows)
        head = IndexHeader(store._engine_id, store._gen, nslots, len(slots), len(rows), *c.head)
        del rows
        if c.abort:
            raise _Stop
        write_index(fs, store._dir, head, slots, rename=False)
        wrote = True
        del slots
        got = open_table(store, c.segs, path=tmp)
        if isinstance(got, str):
            raise OSError(f"key index unusable right after writing it ({got})")
        with commit_locks(store, lambda: c.abort):
            kd = store._kd
            if store._closed or store._poisoned is not None or kd is not c.kd or c.abort:
                raise _Stop
            fs.rename(tmp, final)  # the commit point
            wrote = False
            got.path = final
            new = KeyDir(got, kd.n)
            over = kd.over
            for k in c.changed:  # applied meanwhile: laid over the table (None shadows a deleted key)
                new.over[k] = over.get(k)
            new.retired = kd.retired
            store._ckpt = None
            store._kd = new  # readers switch here
    except BaseException as e:  # noqa: BLE001 - the index is a cache: logged, the store goes on with its overlay
        if wrote:
            try:
                fs.unlink(tmp)
            except OSError:
                pass
        with store._wlock:
            if store._ckpt is c:
                store._ckpt = None
        if not isinstance(e, _Stop):
            log.warning("key index of %s not written in the background (%s)", store._dir, e)


def index_damaged(store: KVStore, e: IndexDamaged) -> KeyDir:
    """The key index failed a check: drop it, rebuild the key directory from the
    record files (WARNING), and return the new one.  Under the write lock.
    O(records and bytes).
    """
    kd = store._kd
    if not isinstance(kd, KeyDir):
        kd.get(b"")  # raises the recorded error (closed, poisoned)
    assert isinstance(kd, KeyDir)
    if kd.table is None:
        return kd  # already rebuilt
    log.warning("%s; rebuilding the key directory from the record files", e)
    if not store._readonly:
        store._discard(e.path.rsplit("/", 1)[1])
    try:
        return rebuild_keydir(store)
    except CorruptionError as err:  # acknowledged records are damaged too: every read reports it
        store._kd = Refusing(err, len(kd))
        raise


def publish_slow(
    store: KVStore, seg: SegmentFile, pos: int, keys: list[bytes], vals: list[bytes | None], checks: list[int],
    olds: list[Any],
) -> None:
    """Publish a written batch that holds deletes or repeated keys, change by change
    (``olds``: what each change replaced, ``(None, i)`` for change ``i`` of the batch)."""
    kd = store._kd
    assert isinstance(kd, KeyDir)
    live = store._live
    dead = store._dead
    for k, v, c, old in zip(keys, vals, checks, olds):
        pos += len(k)
        if v is None:
            kd.delete(k, old is not None)
            dead += REC_TABLE + len(k)
        else:
            end = pos + len(v)
            kd.put(k, (seg, pos, end, c), old is not None)
            live += REC_TABLE + len(k) + len(v)
            pos = end
        if old is not None:
            sz = REC_TABLE + len(k) + (len(vals[old[1]]) if old[0] is None else old[2] - old[1])
            live -= sz
            dead += sz
    store._live = live
    store._dead = dead


def rebuild_keydir(self: KVStore) -> KeyDir:
    """Replay every frame of the open record files into a new in-memory key directory
    and switch the store to it (after its key index failed a check).  Caller holds
    the write lock.  O(records and bytes).

    Raises:
        CorruptionError: a record file is damaged.
    """
    kd = KeyDir()
    if isinstance(self._kd, KeyDir):
        kd.retired = self._kd.retired
    acc: list[Any] = [0, 0, self._applied]
    for seg in self._files:
        buf = seg.buffer()
        head = decode_segment_header(buf[:SEGMENT_HEADER_SIZE], seg.path)
        if head is None:
            raise CorruptionError("key/value file header is missing or zeroed", path=seg.path, offset=0)
        res = scan_frames(buf, SEGMENT_HEADER_SIZE, head.crc, seg.end)
        if res.end != seg.end:
            raise CorruptionError("damaged frame in a key/value file", path=seg.path, offset=res.end)
        for off, fh in res.frames:
            replay(kd, acc, seg, buf, off, fh)
    self._kd = kd
    self._live, self._dead = acc[0], acc[1]
    return kd


def replay(kd: KeyDir, acc: list[Any], seg: SegmentFile, buf: Any, off: int, fh: FrameHeader) -> None:
    if fh.kind != KIND_KV:
        raise CorruptionError(f"frame of kind {fh.kind} in a key/value file", path=seg.path, offset=off)
    body = decode_kv_body(buf, off + FRAME_HEADER_SIZE, off + fh.frame_len, fh.count, seg.path)
    live, dead = acc[0], acc[1]
    for k, vs, ve, vl, c in zip(body.keys, body.vstarts, body.vends, body.vlens, body.checks):
        old = kd.get(k)
        if vl == TOMBSTONE:
            kd.delete(k, old is not None)
            dead += REC_TABLE + len(k)
        else:
            kd.put(k, (seg, vs, ve, c), old is not None)
            live += REC_TABLE + len(k) + vl
        if old is not None:
            sz = REC_TABLE + len(k) + old[2] - old[1]
            live -= sz
            dead += sz
    acc[0], acc[1] = live, dead
    if body.applied is not None:
        acc[2] = body.applied
