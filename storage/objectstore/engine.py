"""``ObjectStoreEngine``: the :class:`~segwal.types.StorageEngine` contract kept in an object store (S3, GCS, Azure, S3-compatible, local, memory).

Every mutating call is ONE immutable object, the record of that call, created
with create-if-absent at the next slot number (``log/<slot>.slot``): that PUT
is the call's commit point, and it is fenced.  At open a writer raises the
writer epoch by creating the next manifest, then claims the next free slot
with a fence object; a slot it expected free but finds taken by a newer epoch
makes it raise :class:`~segwal.errors.FencedError` for that call and every
later one.  Compaction (:mod:`segwal.storage.objectstore.compaction`) folds
the slots into chunk objects and a key/value checkpoint named by a new
manifest.  ``docs/format-objectstore.md`` has the format, every commit point
and the fencing argument.

Reads come from an index built at open (manifest, slots after it, each chunk's
slot table) and bounded caches: a cold ``entry(i)`` is one ranged GET.  Hard
state and key/value data live in memory.  Calls are serialised by a lock.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable
from typing import Any

from segwal.engine.hardstate import encode_hard_state
from segwal.errors import CorruptionError, EngineClosedError, FencedError, StaleViewError, StorageIOError
from segwal.storage.objectstore import compaction, opening, snapshots
from segwal.storage.objectstore.io import EntryCache, Store, write_id_of
from segwal.storage.objectstore.layout import (
    K_ENTRIES,
    K_HARDSTATE,
    K_INSTALL,
    K_PURGE,
    K_RESET,
    MANIFEST_MAGIC,
    ChunkRef,
    Manifest,
    decode_manifest,
    decode_object_header,
    encode_install,
    encode_logid,
    encode_object,
    slot_name,
)
from segwal.storage.objectstore.seam import StoredObject, as_seam
from segwal.storage.objectstore.urls import store_from_url
from segwal.storage.objectstore.view import (
    View,
    decode_runs,
    decode_slot,
    encode_entries,
    encode_kv,
    encode_truncate,
)
from segwal.storage.rules import (
    ContextManagerMixin,
    check_batch,
    check_bytes,
    check_changes,
    check_hard_state,
    check_int,
    clip_range,
    purge_needed,
    stage_changes,
    truncate_needed,
)
from segwal.types import Entry, HardState, LogId

__all__ = ["ObjectStoreEngine"]

log = logging.getLogger("segwal.objectstore")

def _wid() -> bytes:
    return os.urandom(16)


class ObjectStoreEngine(ContextManagerMixin):
    """A durable :class:`~segwal.types.StorageEngine` whose every byte lives in an object store.

    Args:
        store: an obstore store (``S3Store``, ``GCSStore``, ``AzureStore``,
            ``LocalStore``, ``MemoryStore``) or any
            :class:`~segwal.storage.objectstore.seam.ObjectStoreSeam`.
        prefix: the folder of the engine's objects in the store ("" = the root).
        readonly: never write (no epoch bump, no manifest, no compaction): for
            tools looking at a live node's prefix without fencing it.
        retries, retry_delay: extra attempts after a failed request, and the
            first pause (doubling) before them.
        compact_slots: compact when this many slots follow the manifest.
        chunk_bytes: target size of a compacted chunk object (the knob for
            request count versus rewrite cost; see the format doc).
        cache_bytes: bound of the cache of recent objects (a quarter of it
            again for decoded entries).
        background: compact in a background thread (writers go on meanwhile;
            the lock is held only to plan and to publish) instead of inside
            the call that crosses ``compact_slots``.

    Raises at open: FencedError (a newer writer took over while this one
    opened), CorruptionError (damage, naming the object), StorageIOError.

    Durability: every mutating call returns once the object store
    acknowledged its record; :meth:`is_write_durable` is ``True``.
    """

    def __init__(
        self,
        store: object,
        prefix: str = "",
        *,
        readonly: bool = False,
        retries: int = 4,
        retry_delay: float = 0.05,
        compact_slots: int = 256,
        chunk_bytes: int = 8 << 20,
        cache_bytes: int = 64 << 20,
        background: bool = False,
    ) -> None:
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")
        for flag, given in (("readonly", readonly), ("background", background)):
            if type(given) is not bool:
                raise TypeError(f"{flag} must be a bool, got {type(given).__name__}")
        for name, value, low in (("retries", retries, 0), ("compact_slots", compact_slots, 2),
                                 ("chunk_bytes", chunk_bytes, 4096), ("cache_bytes", cache_bytes, 0)):
            if check_int(name, value) < low:
                raise ValueError(f"{name} must be >= {low}, got {value}")
        if not isinstance(retry_delay, (int, float)) or retry_delay < 0:
            raise ValueError(f"retry_delay must be a number >= 0, got {retry_delay!r}")
        seam = as_seam(store)
        p = prefix.strip("/")
        self._closed = True
        self._io = Store(seam, f"{p}/" if p else "", retries=retries, retry_delay=float(retry_delay),
                         cache_bytes=cache_bytes)
        self.prefix = p
        self.readonly = readonly
        self.compact_slots = compact_slots
        self.chunk_bytes = chunk_bytes
        self._mutex = threading.RLock()
        self.background = background and not readonly
        self._bg = compaction.Background(self) if self.background else None
        self._fenced: FencedError | None = None
        #: records of failed calls that may have landed at slot ``_doubt[0]``, by write id
        self._doubt: tuple[int, dict[str, bytes]] | None = None
        #: ``(id, write id)`` of a manifest whose create failed but may have landed
        self._manifest_doubt: tuple[int, str] | None = None
        self._epoch = 0
        self._manifest = Manifest()
        self._view = View()
        self._chunks: dict[str, ChunkRef] = {}
        self._hot = EntryCache(cache_bytes // 4)
        self._tail: list[tuple[int, int, str]] = []
        self._next_slot = 1
        opening.open_engine(self)
        self._closed = False

    @classmethod
    def from_url(cls, url: str, *, readonly: bool = False, engine_options: dict[str, Any] | None = None,
                 **store_options: object) -> ObjectStoreEngine:
        """Open the engine at a store URL (``s3://bucket/prefix``, ``gs://``, ``az://``, ``file://``, ``memory://``).

        ``store_options`` configure the store (see
        :mod:`segwal.storage.objectstore.urls`: ``endpoint=...``,
        ``client.allow_http=True`` ...); ``engine_options`` are the other
        keyword arguments of the constructor.  Needs obstore (``segwal[cloud]``).
        """
        store, prefix = store_from_url(url, **store_options)
        return cls(store, prefix, readonly=readonly, **(engine_options or {}))

    def refresh(self) -> None:
        """Move a read-only view forward to the writer's latest state (no-op for a writer).

        Complexity: as an open.  Raises StaleViewError if the writer keeps moving.
        """
        with self._mutex:
            self._check_open()
            if self.readonly:
                self._hot.clear()
                opening.load_view(self)

    def _check_open(self) -> None:
        if self._closed:
            raise EngineClosedError("ObjectStoreEngine is closed")
        if self._fenced is not None:
            raise FencedError(str(self._fenced))

    def _check_writable(self) -> None:
        self._check_open()
        if self.readonly:
            raise PermissionError(f"the engine on {self._io.prefix!r} is read-only")

    def _check_not_newer(self, name: str, other: StoredObject) -> None:
        """``name`` holds another writer's object: raise FencedError (and stay fenced)
        when that writer, or the newest manifest, has a newer epoch than this engine."""
        theirs = 0
        try:
            data = other.data
            theirs = decode_manifest(data, name).epoch if data[:4] == MANIFEST_MAGIC else decode_object_header(data, name).epoch
        except CorruptionError:
            pass
        newer = max(theirs, self._io.latest_manifest().epoch)
        if newer > self._epoch:
            self._fenced = FencedError(
                f"{self._io.prefix!r}: writer epoch {newer} took over from epoch {self._epoch} ({name} is taken)"
            )
            raise self._fenced

    # -- the write path ---------------------------------------------------

    def _write(self, prepare: Callable[[], tuple[Callable[[int, bytes], bytes], Callable[[bytes], None]] | None]) -> None:
        """Commit one record: ``prepare()`` validates against the view and returns
        ``(encode(seq, wid), apply(data))``, or ``None`` for a no-op."""
        io = self._io
        while True:
            step = prepare()
            if step is None:
                return
            encode, apply = step
            seq = self._next_slot
            wid = _wid()
            data = encode(seq, wid)
            name = slot_name(io.prefix, seq)
            try:
                other = io.create(name, data, wid.hex())
            except StorageIOError:
                if self._doubt is None or self._doubt[0] != seq:
                    self._doubt = (seq, {})
                self._doubt[1][wid.hex()] = data
                raise
            if other is not None:
                doubt = self._doubt
                landed = None if doubt is None or doubt[0] != seq else doubt[1].get(write_id_of(other, name) or "")
                if landed is not None:
                    self._committed(seq, name, landed, None)  # a failed call's record did land
                    continue
                self._check_not_newer(name, other)
                raise CorruptionError(f"slot {seq} is taken by a write of an epoch not newer than {self._epoch}",
                                      path=name)
            self._committed(seq, name, data, apply)
            return

    def _committed(self, seq: int, name: str, data: bytes, apply: Callable[[bytes], None] | None) -> None:
        self._doubt = None
        self._next_slot = seq + 1
        kind = int.from_bytes(data[6:8], "little")
        if apply is None:
            self._hot.clear()
            opening.apply_decoded(self, self._view, decode_slot(data, name))
        else:
            apply(data)
        self._tail.append((seq, kind, name))
        self._io.remember(name, data)
        if len(self._tail) >= self.compact_slots:
            self._auto_compact()

    def _rewrite(self, change: Callable[..., None], *args: Any) -> None:
        """Apply a change that can alter the entry at an existing index: forget cached entries first."""
        self._hot.clear()
        change(*args)

    def _auto_compact(self) -> None:
        """Compact now (the caller holds the lock), or wake the background compactor."""
        if self._bg is not None:
            self._bg.poke()
            return
        try:
            compaction.compact(self)
        except StorageIOError as e:  # the acknowledged write stands; compaction runs again later
            log.warning("compaction of %r failed, will retry: %s", self._io.prefix, e)

    def persist_entries(self, entries: Iterable[Entry], /) -> None:
        """Append a batch, or overwrite the suffix from its first index, as ONE slot object.

        Raises ValueError/TypeError (naming the index) changing nothing;
        FencedError when a newer writer owns the prefix; StorageIOError when
        the store keeps failing (the batch may then still appear at reopen,
        whole: it is atomic).  Durable on return.  Complexity: O(batch), one PUT.
        """
        with self._mutex:
            self._check_writable()
            view = self._view
            batch = check_batch(entries, first_index=view.first, last_index=view.last, boundary=view.boundary,
                                term_before=view.term_at)
            if not batch:
                return
            first = batch[0].index
            terms = [e.term for e in batch]
            payloads = [e.payload for e in batch]

            checked = [True]  # validated against the current view; again after adopting a record

            def prepare() -> tuple[Callable[[int, bytes], bytes], Callable[[bytes], None]]:
                if not checked[0]:
                    check_batch(batch, first_index=view.first, last_index=view.last, boundary=view.boundary,
                                term_before=view.term_at)
                checked[0] = False

                def encode(seq: int, wid: bytes) -> bytes:
                    return encode_entries(K_ENTRIES, self._epoch, seq, wid, first, terms, payloads)

                def apply(data: bytes) -> None:
                    name = slot_name(self._io.prefix, self._next_slot - 1)
                    if first <= view.last:
                        self._hot.clear()  # an overwrite: entries change
                    # our own bytes: the slot table is read back without a second CRC pass
                    view.add_run(decode_runs(data, decode_object_header(data, name), name, limit=len(data))[0])
                    self._hot.add(batch)

                return encode, apply

            self._write(prepare)

    def truncate(self, from_index: int, /) -> None:
        """Remove every entry >= ``from_index`` (one TRUNCATE slot).  Durable on return.  O(1) requests."""
        with self._mutex:
            self._check_writable()
            view = self._view

            def prepare() -> tuple[Callable[[int, bytes], bytes], Callable[[bytes], None]] | None:
                if not truncate_needed(from_index, last_index=view.last, boundary=view.boundary):
                    return None
                return (lambda seq, wid: encode_truncate(self._epoch, seq, wid, from_index),
                        lambda data: self._rewrite(view.truncate, from_index))

            self._write(prepare)

    def purge_logs(self, cutoff: LogId, /) -> None:
        """Record the purge boundary (one PURGE slot, the commit point), then compact so
        that whole objects below it are deleted.  Durable on return.
        Complexity: one PUT, plus a compaction when objects fall wholly below the boundary."""
        with self._mutex:
            self._check_writable()
            view = self._view

            def prepare() -> tuple[Callable[[int, bytes], bytes], Callable[[bytes], None]] | None:
                if not purge_needed(cutoff, first_index=view.first, boundary=view.boundary, term_at=view.term_at):
                    return None
                aux = encode_logid(cutoff)
                return (lambda seq, wid: encode_object(K_PURGE, self._epoch, seq, wid, aux)[0],
                        lambda data: self._rewrite(view.purge, cutoff))

            self._write(prepare)
            if self._fenced is None and compaction.purge_frees_objects(self):
                self._auto_compact()

    def flush(self) -> None:
        """Nothing to do: every call is durable on return.  O(1)."""
        with self._mutex:
            self._check_open()

    def reset(self) -> None:
        """Clear log, boundary, key/value data and last applied (one RESET slot); keep the hard state.

        Durable on return; then compacts to delete the old objects.
        """
        with self._mutex:
            self._check_writable()
            view = self._view
            self._write(lambda: (lambda seq, wid: encode_object(K_RESET, self._epoch, seq, wid)[0],
                                 lambda data: self._rewrite(view.reset)))
            self._auto_compact()

    def compact(self) -> None:
        """Fold the slots after the manifest into chunk objects and a key/value checkpoint,
        publish a new manifest (the commit point) and delete what it no longer names.

        Durable on return.  Complexity: O(bytes of the folded slots + key/value data).
        """
        if self._bg is not None:
            with self._mutex:
                self._check_writable()
            self._bg.run_once()
            return
        with self._mutex:
            self._check_writable()
            compaction.compact(self)

    # -- log reads --------------------------------------------------------

    def _missing(self, name: str) -> CorruptionError | StaleViewError:
        """A named object is gone: the writer moved on (stale view) or it is damage."""
        if self.readonly and self._io.latest_manifest().mid != self._manifest.mid:
            return StaleViewError(f"{name} was removed by the writer; call refresh()")
        return CorruptionError("object named by the manifest or log is missing", path=name)

    def entry(self, index: int, /) -> Entry | None:
        """The entry at ``index`` or ``None``.  Warm: a cache slice; cold: one ranged GET.

        Raises CorruptionError (check value mismatch, missing object) or, for
        a read-only view the writer moved past, StaleViewError.
        """
        with self._mutex:
            if self._closed or self._fenced is not None:
                self._check_open()
            if type(index) is not int:
                check_int("index", index)  # raises TypeError naming it (bool included)
            hot = self._hot.map.get(index)
            if hot is not None:
                return hot
            hit = self._view.locate(index)
            if hit is None:
                return None
            run, k = hit
            a = run.pstart[k]
            got = self._io.get_range(run.name, a, a + run.plen[k])
            if got is None:
                raise self._missing(run.name)
            e = self._view.entries_of(run, index, index, got[0], got[1])
            self._hot.add(e)
            return e[0]

    def get_entries_range(self, start: int, end: int, /) -> list[Entry]:
        """Entries ``start..end`` in the log, ascending: at most one request per object.  O(returned)."""
        with self._mutex:
            self._check_open()
            view = self._view
            clipped = clip_range(start, end, view.first, view.last)
            if clipped is None:
                return []
            lo, hi = clipped
            hot = self._hot.map
            if lo in hot and hi in hot:
                try:
                    return [hot[j] for j in range(lo, hi + 1)]
                except KeyError:
                    pass
            out: list[Entry] = []
            i = lo
            while i <= hi:
                hit = view.locate(i)
                if hit is None:
                    break
                run, k = hit
                j = min(hi, run.first + run.count - 1)
                kj = j - run.first
                got = self._io.get_range(run.name, run.pstart[k], run.pstart[kj] + run.plen[kj])
                if got is None:
                    raise self._missing(run.name)
                out.extend(view.entries_of(run, i, j, got[0], got[1]))
                i = j + 1
            self._hot.add(out)
            return out

    def last_index(self) -> int:
        """Highest index of the log; 0 when new; never lowered by a purge.  O(1)."""
        with self._mutex:
            self._check_open()
            return self._view.last

    def first_index(self) -> int:
        """Lowest readable index; ``last_index() + 1`` when the log is empty.  O(1)."""
        with self._mutex:
            self._check_open()
            return self._view.first if not self._view.entries_empty() else self._view.last + 1

    def purge_boundary(self) -> LogId | None:
        """The last purged :class:`LogId`, or ``None``.  O(1)."""
        with self._mutex:
            self._check_open()
            return self._view.boundary

    def term_of(self, index: int) -> int | None:
        """The term of the entry at ``index`` if it is in the log, from the index (no request).  O(log runs)."""
        with self._mutex:
            self._check_open()
            return self._view.term_at(check_int("index", index))

    # -- hard state -------------------------------------------------------

    def load_hard_state(self) -> HardState | None:
        """The last saved hard state, or ``None``.  O(1) (read and verified at open)."""
        with self._mutex:
            self._check_open()
            return self._view.hard

    def save_hard_state(self, hs: HardState, /) -> None:
        """Replace the hard state: one HARDSTATE slot, fenced like every write (a fenced
        node never records a vote).  Durable on return.  O(1) requests."""
        with self._mutex:
            self._check_writable()
            check_hard_state(hs)
            aux = encode_hard_state(hs)
            view = self._view

            def apply(data: bytes) -> None:
                view.hard = hs

            self._write(lambda: (lambda seq, wid: encode_object(K_HARDSTATE, self._epoch, seq, wid, aux)[0], apply))

    # -- key/value data ---------------------------------------------------

    def insert(self, key: bytes, value: bytes, /) -> bytes | None:
        """Set ``key``; return the previous value.  One KV slot; durable on return.  O(len)."""
        k = check_bytes("key", key)
        v = check_bytes("value", value)
        return self.apply([(k, v)])[0]

    def get(self, key: bytes, /) -> bytes | None:
        """The value of ``key`` or ``None`` (from memory).  O(1)."""
        with self._mutex:
            self._check_open()
            return self._view.kv.get(check_bytes("key", key))

    def delete(self, key: bytes, /) -> bytes | None:
        """Remove ``key``; return the previous value.  One KV slot; durable on return."""
        return self.apply([(check_bytes("key", key), None)])[0]

    def apply(self, changes: Iterable[tuple[bytes, bytes | None]], /, applied: LogId | None = None
              ) -> list[bytes | None]:
        """Apply changes and record ``applied`` atomically: one KV slot (the commit point).

        Returns the previous value of each change's key.  Durable on return.
        Complexity: O(total size), one PUT.
        """
        with self._mutex:
            self._check_writable()
            staged = check_changes(changes, applied)
            view = self._view
            result: list[list[bytes | None]] = []
            keys = [k for k, _v in staged]
            values = [v for _k, v in staged]

            def prepare() -> tuple[Callable[[int, bytes], bytes], Callable[[bytes], None]]:
                previous, _overlay = stage_changes(staged, view.kv.get)
                result[:] = [previous]

                def apply_(data: bytes) -> None:
                    view.apply_kv(keys, values, applied)

                return (lambda seq, wid: encode_kv(self._epoch, seq, wid, keys, values, applied)), apply_

            self._write(prepare)
            return result[0]

    def last_applied(self) -> LogId | None:
        """The :class:`LogId` last recorded by :meth:`apply`, or ``None``.  O(1)."""
        with self._mutex:
            self._check_open()
            return self._view.applied

    def keys(self) -> list[bytes]:
        """All keys, sorted.  O(n log n)."""
        with self._mutex:
            self._check_open()
            return sorted(self._view.kv)

    # -- snapshots --------------------------------------------------------

    def snapshot(self, dest: str | os.PathLike[str]) -> LogId:
        """Write the key/value data at ``last_applied()`` as a segwal snapshot file to ``dest``:
        a local path, or a URL with a scheme (``s3://``, ``file://``...) for an object.

        Durable on return (file: fsync + rename; object: the store acknowledged it).
        Raises ValueError when no ``last_applied`` was recorded.  O(bytes).
        """
        with self._mutex:
            self._check_open()
            applied = self._view.applied
            items = sorted(self._view.kv.items())
        if applied is None:
            raise ValueError("no last_applied LogId recorded: record one with apply(..., applied=...) first")
        snapshots.write_to(os.fspath(dest), applied, items)
        return applied

    def install_snapshot(self, src: str | os.PathLike[str]) -> LogId:
        """Replace log, boundary, key/value data and last applied by the snapshot at ``src``
        (a local path or a URL); the hard state is kept.

        The whole snapshot is verified first; then a checkpoint object is
        uploaded under a unique name and one INSTALL slot naming it is the
        commit point.  Durable on return.  Complexity: O(bytes).
        """
        applied, kv = snapshots.read_from(os.fspath(src))
        with self._mutex:
            self._check_writable()
            uniq = snapshots.upload_checkpoint(self._io, self._epoch, kv, applied)
            aux = encode_install(applied, uniq)
            view = self._view
            self._write(lambda: (lambda seq, wid: encode_object(K_INSTALL, self._epoch, seq, wid, aux)[0],
                                 lambda data: self._rewrite(view.install, applied, kv, uniq)))
            self._auto_compact()
        return applied

    # -- lifecycle --------------------------------------------------------

    def is_write_durable(self) -> bool:
        """``True``: every mutating call returns after the store acknowledged it.  O(1)."""
        return True

    def close(self) -> None:
        """Release the engine (nothing to flush; a running background compaction is
        finished or abandoned first).  Idempotent; later calls raise EngineClosedError."""
        if self._bg is not None:
            self._bg.stop()  # lets a running compaction finish, then marks the engine closed
        with self._mutex:
            self._closed = True
            self._io.clear()

