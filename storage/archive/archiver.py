"""The in-process archiver: a thread that ships a running ``WalEngine``'s log to an object store every tail interval and holds its purges back until what they remove is archived.

Nothing runs on the engine's append path: the thread polls at
``tail_interval`` (reading slots and new entries, as any reader does), and the
only hook is one the engine calls inside ``purge_logs``
(:func:`segwal.engine.tap.set_purge_hold`).  There the archiver maps the
segments the purge is about to unlink whose entries it has not shipped yet,
as long as the mapped total stays within ``max_held_bytes``; an unlinked file
stays readable while mapped, and its space is freed once shipped.  Past the
bound (the store down for long) it lets the purge go, warns, and the archive
records the gap: the node's disk never fills on the archiver's account.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from segwal.engine import WalEngine
from segwal.engine.tap import SegmentRef, hold_segment, set_purge_hold
from segwal.storage.archive.shipper import Shipper
from segwal.storage.objectstore.seam import as_seam

__all__ = ["DEFAULT_MAX_HELD_BYTES", "ArchiveStatus", "Archiver"]

log = logging.getLogger("segwal.archive")

#: Default bound on purged-but-unarchived segment bytes the archiver keeps mapped.
DEFAULT_MAX_HELD_BYTES = 4 * (64 << 20)


@dataclass(frozen=True)
class ArchiveStatus:
    """What the archiver has done (a snapshot; :meth:`Archiver.status`).

    ``shipped_index``: the archive's last index; ``node_index``: the node's last
    index at the last pass; ``lag_seconds``: since when the archive lacks
    entries the node has, counted from the first pass that saw them (0 when
    the last pass caught up; a write also waits up to ``tail_interval`` for
    that pass);
    ``bytes_uploaded`` / ``bytes_written_by_node``: object bytes put, and the
    node's log bytes (slots and payloads) they carry; ``gaps``: index ranges
    the node dropped before they were archived; ``held_bytes``: purged segment
    bytes kept mapped until shipped; ``last_error``: the last failed pass.
    """

    shipped_index: int
    node_index: int
    lag_seconds: float
    bytes_uploaded: int
    bytes_written_by_node: int
    objects_uploaded: int
    gaps: tuple[tuple[int, int], ...]
    held_bytes: int
    passes: int
    last_error: str | None
    last_report: float


class Archiver:
    """Ship ``engine``'s log to ``store`` under ``prefix`` (see the module docstring).

    Args:
        engine: an open ``WalEngine`` (a writer: its purges are held; or a
            read-only view, refreshed at each pass, which cannot hold purges).
        store: an obstore store or an ``ObjectStoreSeam``.
        prefix: key prefix of the archive in the store.
        tail_interval: seconds between passes.
        max_held_bytes: bound on purged-but-unshipped segment bytes kept mapped.
        kv_snapshot_interval: seconds between key/value snapshots (``None``: never).

    ``start()``/``stop()`` or a ``with`` block run the thread; ``sync_now()``
    ships everything written so far from the caller's thread.
    """

    def __init__(
        self,
        engine: WalEngine,
        store: Any,
        prefix: str = "",
        *,
        tail_interval: float = 1.0,
        max_held_bytes: int = DEFAULT_MAX_HELD_BYTES,
        kv_snapshot_interval: float | None = 60.0,
    ) -> None:
        if not isinstance(engine, WalEngine):
            raise TypeError(f"engine must be a WalEngine, got {type(engine).__name__}")
        if not isinstance(tail_interval, (int, float)) or not tail_interval > 0:
            raise ValueError(f"tail_interval must be a number of seconds > 0, got {tail_interval!r}")
        if type(max_held_bytes) is not int or max_held_bytes < 0:
            raise ValueError(f"max_held_bytes must be an int >= 0, got {max_held_bytes!r}")
        if kv_snapshot_interval is not None and not kv_snapshot_interval >= 0:
            raise ValueError(f"kv_snapshot_interval must be >= 0 seconds or None, got {kv_snapshot_interval!r}")
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")
        self.engine = engine
        self.seam = as_seam(store)
        self.tail_interval = float(tail_interval)
        self.max_held_bytes = max_held_bytes
        self._ship = Shipper(engine, self.seam, prefix, kv_snapshot_interval=kv_snapshot_interval)
        self._lock = threading.Lock()  # one pass at a time
        self._hold_lock = threading.Lock()
        self._held_bytes = 0
        self._sizes: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._passes = 0
        self._error: str | None = None

    # ---------------------------------------------------------------- control

    def start(self) -> Self:
        """Start the thread (and the purge hold of a writer engine).  Returns self."""
        if self._thread is not None:
            raise RuntimeError("archiver already started")
        if not self.engine._readonly:
            set_purge_hold(self.engine, self._hold)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="segwal-archiver", daemon=True)
        self._thread.start()
        return self

    def stop(self, final_pass: bool = True) -> None:
        """Stop the thread after one last pass (``final_pass``) and remove the purge hold.
        Idempotent.  Segments still held are let go (their entries become a gap if
        the archive never gets them)."""
        t = self._thread
        if t is None:
            return
        self._stop.set()
        t.join()
        self._thread = None
        if not self.engine._readonly:
            try:
                set_purge_hold(self.engine, None)
            except Exception as e:  # noqa: BLE001 - the engine may be closed already
                log.debug("archiver: purge hold not removed: %s", e)
        if final_pass:
            try:
                self.sync_now()
            except Exception as e:  # noqa: BLE001
                log.warning("archiver: final pass failed: %s", e)
        with self._hold_lock:
            self._ship.held = []
            self._held_bytes = 0

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def sync_now(self) -> int:
        """Run one pass now, from the calling thread: ship everything the node wrote
        before the call.  Returns the archive's last index.  Durable on return
        (the store acknowledged every object).  O(new bytes + tail slots).

        Raises:
            StorageIOError: the store failed; CorruptionError: damage found.
        """
        with self._lock:
            try:
                got = self._ship.cycle()
            except Exception as e:
                self._error = f"{type(e).__name__}: {e}"
                raise
            self._passes += 1
            self._error = None
            self._release_shipped()
            return got

    def status(self) -> ArchiveStatus:
        """A snapshot of the counters.  O(gaps)."""
        s = self._ship
        since = s.pending_since
        return ArchiveStatus(
            shipped_index=s.last,
            node_index=s.node_hi,
            lag_seconds=0.0 if since is None else max(0.0, time.monotonic() - since),
            bytes_uploaded=s.stats.bytes_uploaded,
            bytes_written_by_node=s.stats.bytes_written_by_node,
            objects_uploaded=s.stats.objects_uploaded,
            gaps=tuple(s.stats.gaps),
            held_bytes=self._held_bytes,
            passes=self._passes,
            last_error=self._error,
            last_report=s.report_time,
        )

    # ---------------------------------------------------------------- thread

    def _run(self) -> None:
        failures = 0
        while not self._stop.wait(self.tail_interval if not failures else min(30.0, self.tail_interval * 2**failures)):
            try:
                self.sync_now()
                failures = 0
            except Exception as e:  # noqa: BLE001 - the thread must live on; status() shows it
                failures = min(failures + 1, 5)
                log.warning("archiver pass failed (%s); retrying", e)

    # ------------------------------------------------------------ purge hold

    def _hold(self, refs: Sequence[SegmentRef]) -> None:
        """The engine's purge hook (writer thread, under its lock): map what is not shipped."""
        last = self._ship.last
        with self._hold_lock:
            for ref in refs:
                if ref.last <= last or ref.last < ref.base:
                    continue
                size = _size(ref)
                if self._held_bytes + size > self.max_held_bytes:
                    log.warning(
                        "archiver: letting the purge of %s (entries %d..%d) go unarchived: %d bytes already held "
                        "(max_held_bytes %d); the archive will record a gap",
                        ref.handle.path,
                        max(ref.base, last + 1),
                        ref.last,
                        self._held_bytes,
                        self.max_held_bytes,
                    )
                    continue
                try:
                    size = hold_segment(self.engine, ref)
                except Exception as e:  # noqa: BLE001
                    log.warning("archiver: could not hold %s: %s", ref.handle.path, e)
                    continue
                self._held_bytes += size
                self._sizes[id(ref.handle)] = size
                self._ship.held.append(ref)

    def _release_shipped(self) -> None:
        with self._hold_lock:
            keep = [h for h in self._ship.held if h.last > self._ship.last]
            for h in self._ship.held:
                if h not in keep:
                    self._held_bytes -= self._sizes.pop(id(h.handle), 0)
            self._ship.held = keep


def _size(ref: SegmentRef) -> int:
    """The segment file's size (0 if unknown).  O(1)."""
    try:
        return os.stat(ref.handle.path).st_size
    except OSError:
        return 0
