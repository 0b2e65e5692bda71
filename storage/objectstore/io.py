"""Conditional writes, retries and fencing over the object-store seam: how one create-if-absent becomes "mine", "someone else's" or an I/O error.

Every write the engine makes that must not be overwritten (a slot, a
manifest, a fence) goes through :meth:`Store.create`.  It tags the object
with a fresh write id, kept across retries (in the object's header and its
user metadata); a failed condition is followed by a read-back, and the write
counts as ours exactly when the stored write id is ours.  Never ETag or
content: every fence object of one epoch is alike.  Also here: finding the
latest manifest, ranged reads with the bounded object cache, and parallel
reads for open.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from segwal.errors import CorruptionError, StorageIOError
from segwal.storage.objectstore.layout import (
    MANIFEST_MAGIC,
    Manifest,
    decode_manifest,
    decode_object_header,
    manifest_name,
    parse_id,
)
from segwal.storage.objectstore.seam import ObjectExistsError, ObjectInfo, ObjectStoreSeam, StoredObject
from segwal.types import Entry

__all__ = ["Store", "EntryCache", "retry_io", "write_id_of"]

T = TypeVar("T")
R = TypeVar("R")


def write_id_of(obj: StoredObject, name: str) -> str | None:
    """The write id of a stored object: its metadata, else its header (slots, chunks, manifests).  O(1)."""
    if obj.write_id:
        return obj.write_id
    data = obj.data
    if data[:4] == MANIFEST_MAGIC and len(data) >= 40:
        return data[24:40].hex()
    if data[:4] == b"SWOB":
        try:
            return decode_object_header(data, name).write_id.hex()
        except CorruptionError:
            return None
    return None


def retry_io(call: Callable[[], T], retries: int, delay: float) -> T:
    """``call()``, retried on StorageIOError up to ``retries`` times, the pause
    doubling from ``delay`` seconds; the last error is raised.  Idempotent calls
    only.  Durability: whatever ``call`` gives.  O(retries) calls at most.
    """
    for attempt in range(retries + 1):
        try:
            return call()
        except StorageIOError:
            if attempt == retries:
                raise
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


class Store:
    """The engine's view of its prefix: retried conditional writes, manifest lookup, cached reads.

    ``retries`` extra attempts follow a failed request (``retry_delay``
    seconds, doubling); then the :class:`~segwal.errors.StorageIOError`
    escapes.  ``cache_bytes`` bounds the object cache (least recently used
    objects go first).
    """

    def __init__(
        self, seam: ObjectStoreSeam, prefix: str, *, retries: int, retry_delay: float, cache_bytes: int
    ) -> None:
        self.seam = seam
        self.prefix = prefix
        self.retries = retries
        self.retry_delay = retry_delay
        self.cache_bytes = cache_bytes
        self._cache: OrderedDict[str, bytes] = OrderedDict()
        self._cached = 0
        self._lock = threading.Lock()  # the cache is shared with a background compaction

    # -- retries ------------------------------------------------------------

    def retry(self, call: Callable[[], T]) -> T:
        """``call()``, retried on StorageIOError up to ``retries`` times (:func:`retry_io`).  Idempotent calls only."""
        return retry_io(call, self.retries, self.retry_delay)

    def create(self, name: str, data: bytes, wid: str) -> StoredObject | None:
        """Create ``name`` if absent; ``None`` when the object is ours (also after a lost reply).

        Returns the object found instead when someone else's write holds the
        name.  Durable on return of ``None``: the store acknowledged it (or
        shows our write id).  Raises StorageIOError when the store keeps
        failing: then the write may or may not exist.  O(1) requests + retries.
        """
        delay = self.retry_delay
        for attempt in range(self.retries + 1):
            try:
                self.seam.put(name, data, create=True, write_id=wid)
                return None
            except ObjectExistsError:
                other = self.retry(lambda: self.seam.get(name))
                if other is None:
                    continue  # removed in between (a retired name cannot be: those are kept)
                if write_id_of(other, name) == wid:
                    return None  # our own attempt landed and its reply was lost
                return other
            except StorageIOError:
                if attempt == self.retries:
                    raise
                time.sleep(delay)
                delay *= 2
        raise StorageIOError(5, "object store kept refusing a conditional write", name)

    # -- manifests ------------------------------------------------------------

    def manifest_ids(self) -> list[tuple[int, int]]:
        """``(id, size)`` of every manifest, ascending (retired ones have size 0).  One LIST."""
        infos = self.retry(lambda: self.seam.list(f"{self.prefix}manifest/"))
        out = []
        for info in infos:
            mid = parse_id(info.name, "manifest", ".manifest")
            if mid is not None:
                out.append((mid, info.size))
        out.sort()
        return out

    def latest_manifest(self) -> Manifest:
        """The newest live manifest, or an empty one (id 0, epoch 0) on a new prefix.

        A manifest listed but gone when read (retired in between) is re-listed.
        Raises CorruptionError for a damaged newest manifest.  O(manifests).
        """
        for _attempt in range(20):
            live = [mid for mid, size in self.manifest_ids() if size > 0]
            if not live:
                return Manifest()
            name = manifest_name(self.prefix, live[-1])
            obj = self.retry(lambda: self.seam.get(name))
            if obj is None or not obj.data:
                continue
            m = decode_manifest(obj.data, name)
            if m.mid != live[-1]:
                raise CorruptionError(f"manifest holds id {m.mid}", path=name, offset=8)
            return m
        raise StorageIOError(5, "the newest manifest kept disappearing while read", f"{self.prefix}manifest/")

    # -- reads ----------------------------------------------------------------

    def list_folder(self, folder: str, after: str | None = None) -> list[ObjectInfo]:
        """The objects of ``<prefix><folder>/`` (after ``after``), by name.  Retried LIST."""
        return self.retry(lambda: self.seam.list(f"{self.prefix}{folder}/", after))

    def get(self, name: str) -> bytes | None:
        """The whole object (cached when small enough), or ``None`` if absent.  Retried GET."""
        data = self._cached_copy(name)
        if data is not None:
            return data
        obj = self.retry(lambda: self.seam.get(name))
        if obj is None:
            return None
        self.remember(name, obj.data)
        return obj.data

    def get_range(self, name: str, start: int, end: int) -> tuple[bytes | memoryview, int] | None:
        """``(data, base)``: the object's bytes from offset ``base`` on, covering ``[start, end)``.

        From the cache when the object is there (then ``base`` is 0), else one
        ranged GET.  ``None`` if the object is absent.
        """
        data = self._cached_copy(name)
        if data is not None:
            return data, 0
        if start >= end:
            return b"", start
        got = self.retry(lambda: self.seam.get_range(name, start, end))
        return None if got is None else (got, start)

    def get_many(self, names: Sequence[str], workers: int = 16) -> list[bytes | None]:
        """Whole objects, fetched in parallel (open's replay), then cached.  O(len(names)) requests."""

        def fetch(name: str) -> bytes | None:
            cached = self._cached_copy(name)
            if cached is not None:
                return cached
            obj = self.retry(lambda: self.seam.get(name))
            return None if obj is None else obj.data

        out = self.map(fetch, names, workers)
        for name, data in zip(names, out):
            if data is not None:
                self.remember(name, data)
        return out

    def map(self, fn: Callable[[T], R], items: Sequence[T], workers: int = 16) -> list[R]:
        """``[fn(x) for x in items]`` on a thread pool (independent reads)."""
        if len(items) <= 1:
            return [fn(x) for x in items]
        with ThreadPoolExecutor(max_workers=min(workers, len(items))) as pool:
            return list(pool.map(fn, items))

    def remember(self, name: str, data: bytes) -> None:
        """Put an object's bytes in the cache (if it fits), evicting the least recent.  O(1) amortised."""
        if len(data) > self.cache_bytes // 4:
            return
        with self._lock:
            if name in self._cache:
                return
            self._cache[name] = data
            self._cached += len(data)
            while self._cached > self.cache_bytes:
                _n, old = self._cache.popitem(last=False)
                self._cached -= len(old)

    def _cached_copy(self, name: str) -> bytes | None:
        """The cached bytes of ``name`` (marked recent), or ``None``.  O(1)."""
        with self._lock:
            data = self._cache.get(name)
            if data is not None:
                self._cache.move_to_end(name)
            return data

    def forget(self, names: Sequence[str]) -> None:
        """Drop objects from the cache (deleted ones).  O(len(names))."""
        with self._lock:
            for n in names:
                old = self._cache.pop(n, None)
                if old is not None:
                    self._cached -= len(old)

    def clear(self) -> None:
        """Empty the cache.  O(1)."""
        with self._lock:
            self._cache.clear()
            self._cached = 0


class EntryCache:
    """Recently written or read entries by index, bounded by ``limit`` bytes (payload + 64 each).

    The warm path of ``entry(i)`` is one dict lookup.  The engine clears it
    whenever an entry at an index could change (truncate, overwrite, purge,
    reset, install, refresh); compaction moves entries but never changes one.
    Oldest entries are evicted first.
    """

    __slots__ = ("map", "size", "limit")

    def __init__(self, limit: int) -> None:
        self.map: dict[int, Entry] = {}
        self.size = 0
        self.limit = limit

    def add(self, entries: Iterable[Entry]) -> None:
        """Remember ``entries`` (already verified).  O(len(entries)) amortised."""
        if self.limit <= 0:
            return
        m = self.map
        size = self.size
        for e in entries:
            old = m.pop(e.index, None)
            if old is not None:
                size -= len(old.payload) + 64
            m[e.index] = e
            size += len(e.payload) + 64
        while size > self.limit and m:
            old = m.pop(next(iter(m)))
            size -= len(old.payload) + 64
        self.size = size

    def clear(self) -> None:
        """Forget everything.  O(1)."""
        self.map = {}
        self.size = 0
