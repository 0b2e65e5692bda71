"""The write-ahead log layer: frame format (pure functions over bytes) and segment files.

``segwal.wal`` never imports ``segwal.engine``.
"""

from segwal.types import Entry, LogId

__all__ = ["Entry", "LogId"]
