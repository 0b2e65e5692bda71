"""A background thread that writes and syncs zeros ahead of each writer.

Why: an ``fdatasync`` that must also allocate blocks and grow the file costs
far more than one that overwrites space already written (measured on the
project machine: ~186 us against ~112 us for a 4 KiB append).  So each file
registered here is kept ``ahead`` bytes of zeros in front of its writer, in
``chunk``-byte steps, off the writer's critical path.

Correctness does not depend on it: zeros are what unwritten space looks like
anyway, the zeros are written only past the writer's end under the file's lock,
and a failed background sync is recorded on the file so the writer's next sync
fails too (the error may have consumed the writer's own dirty pages).
"""

from __future__ import annotations

import logging
import threading

from segwal.wal.segment import SegmentFile

__all__ = ["Preallocator"]

log = logging.getLogger("segwal")


class Preallocator:
    """Keeps registered files zero-filled ahead of their writers.

    Thread-safe.  ``wake()`` is cheap and may be called after every append.
    """

    def __init__(self, *, ahead: int = 4 << 20, chunk: int = 512 << 10) -> None:
        self.ahead = ahead
        self.chunk = chunk
        self._files: dict[int, tuple[SegmentFile, int]] = {}
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="segwal-prealloc", daemon=True)
        self._thread.start()

    def register(self, f: SegmentFile, limit: int) -> None:
        """Keep ``f`` zeroed ahead of its writer, up to byte ``limit`` (idempotent;
        also wakes the thread, so writers call it whenever they run low)."""
        with self._cond:
            if not self._stop:
                self._files[id(f)] = (f, limit)
            self._cond.notify()

    def unregister(self, f: SegmentFile) -> None:
        """Stop preallocating ``f`` (before sealing, trimming or closing it)."""
        with self._cond:
            self._files.pop(id(f), None)

    def wake(self) -> None:
        """Tell the thread a writer advanced."""
        with self._cond:
            self._cond.notify()

    def close(self) -> None:
        """Stop the thread and wait for it."""
        with self._cond:
            self._stop = True
            self._files.clear()
            self._cond.notify()
        self._thread.join()

    def _pick(self) -> tuple[SegmentFile, int] | None:
        for f, limit in self._files.values():
            if f.zeroed - f.end < self.ahead and max(f.zeroed, f.end) < limit and f.zero_failed is None:
                return f, limit
        return None

    def _run(self) -> None:
        while True:
            with self._cond:
                job = self._pick()
                while job is None and not self._stop:
                    self._cond.wait(0.05)
                    job = self._pick()
                if self._stop:
                    return
            assert job is not None
            f, limit = job
            try:
                f.zero_ahead(self.chunk, limit)
            except (OSError, ValueError) as e:
                # ENOSPC, EIO, or the file closed under us: stop preallocating it;
                # the writer falls back to growing the file itself.
                log.debug("preallocation of %s stopped: %s", f.path, e)
                self.unregister(f)
