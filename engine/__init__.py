"""segwal.engine: the StorageEngine facade (``WalEngine``) and its value types.

``from segwal.engine import WalEngine, Entry, LogId, HardState, VotedFor``
"""

from segwal.engine.engine import DEFAULT_SEGMENT_SIZE, WalEngine
from segwal.errors import (
    CorruptionError,
    EngineClosedError,
    EnginePoisonedError,
    FormatVersionError,
    LockedError,
    OutOfSpaceError,
    SegwalError,
    StaleViewError,
    StorageIOError,
    SyncError,
)
from segwal.types import Entry, HardState, LogId, VotedFor

__all__ = [
    "WalEngine",
    "DEFAULT_SEGMENT_SIZE",
    "Entry",
    "LogId",
    "HardState",
    "VotedFor",
    "SegwalError",
    "CorruptionError",
    "FormatVersionError",
    "StorageIOError",
    "SyncError",
    "OutOfSpaceError",
    "EnginePoisonedError",
    "EngineClosedError",
    "LockedError",
    "StaleViewError",
]
