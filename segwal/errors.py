"""The one exception tree of segwal.

Every error segwal raises on purpose derives from :class:`SegwalError`; each
leaf also inherits the built-in it refines, so callers may catch either::

    SegwalError
    ├── CorruptionError(SegwalError, ValueError)   damaged or inconsistent files
    ├── FormatVersionError(CorruptionError)        a file from a newer segwal
    ├── StorageIOError(SegwalError, OSError)       an I/O call failed
    │   ├── SyncError                              fsync/fdatasync failed: engine poisoned
    │   └── OutOfSpaceError                        ENOSPC or short write: batch rolled back
    ├── EnginePoisonedError(SegwalError, RuntimeError)  refused after a failed sync
    ├── EngineClosedError(SegwalError, RuntimeError)    used after close()
    ├── LockedError(SegwalError, OSError)          directory already open elsewhere
    ├── FencedError(SegwalError, RuntimeError)     a newer writer owns the storage
    └── StaleViewError(SegwalError, RuntimeError)  a read-only view cannot be served any more

Invalid arguments raise plain :class:`ValueError` / :class:`TypeError` that name
the argument; those change nothing.  Anything else escaping a public method is
a bug.
"""

from __future__ import annotations

__all__ = [
    "SegwalError",
    "CorruptionError",
    "FormatVersionError",
    "StorageIOError",
    "SyncError",
    "OutOfSpaceError",
    "EnginePoisonedError",
    "EngineClosedError",
    "LockedError",
    "FencedError",
    "StaleViewError",
]


class SegwalError(Exception):
    """Base class of every error segwal raises on purpose."""


class CorruptionError(SegwalError, ValueError):
    """Stored data is damaged or inconsistent, and was not a torn tail.

    Attributes:
        path: the file where the damage was found.
        offset: byte offset of the damage in that file, or ``None``.
        index: first log index affected, or ``None`` when no log entry is
            (hard state, key/value files, manifest).
        reason: what check failed, in words.
    """

    def __init__(
        self,
        reason: str,
        *,
        path: str,
        offset: int | None = None,
        index: int | None = None,
    ) -> None:
        self.reason = reason
        self.path = path
        self.offset = offset
        self.index = index
        where = path
        if offset is not None:
            where += f" at offset {offset}"
        if index is not None:
            where += f" (first affected log index {index})"
        super().__init__(f"{where}: {reason}")


class FormatVersionError(CorruptionError):
    """A file was written by a newer on-disk format version than this segwal reads."""


class StorageIOError(SegwalError, OSError):
    """An operating-system I/O call failed (read or write); nothing was truncated.

    Carries ``errno``, ``strerror`` and ``filename`` like :class:`OSError`.
    """


class SyncError(StorageIOError):
    """fsync/fdatasync failed.  The batch was not acknowledged; the engine is
    poisoned and refuses further writes until it is reopened (a failed sync is
    never retried and trusted)."""


class OutOfSpaceError(StorageIOError):
    """ENOSPC or a short write.  The batch was rolled back; the engine stays usable."""


class EnginePoisonedError(SegwalError, RuntimeError):
    """A previous sync failed; reopen the engine to recover what is durable."""


class EngineClosedError(SegwalError, RuntimeError):
    """The engine was closed."""


class LockedError(SegwalError, OSError):
    """The directory is locked by another open engine (this or another process)."""


class FencedError(SegwalError, RuntimeError):
    """A writer with a newer epoch has taken over the same storage (an object-store prefix).

    Raised by the call that found out and by every later call of the fenced
    engine: nothing it attempts after the new owner's fence object exists is
    visible to anyone.  Open a new engine to write again (which fences the other).
    """


class StaleViewError(SegwalError, RuntimeError):
    """A read-only view can no longer be served: the writer removed what it shows.

    Not damage: call the engine's ``refresh()`` to move the view forward.
    """
