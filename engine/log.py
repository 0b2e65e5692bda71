"""The segmented log: segments listed by the manifest, an offset index each, one tail.

Strategy (the commit point of each operation; ``docs/format.md`` has the steps):

* append into the tail segment: the frame's fdatasync;
* overwrite or truncate at or above the tail's base: a frame in the tail (an
  ENTRIES frame starting at ``k`` replaces everything from ``k``; a TRUNCATE
  frame cuts at ``k``), committed by its fdatasync;
* everything that changes which segments exist (rotation, an overwrite or a
  truncate below the tail's base, purge, reset): the manifest's atomic rename.
  A new segment is written and synced before the manifest names it, so an
  unnamed segment file is always a leftover and is deleted at open.

Readers never lock: they read an immutable :class:`_View` that the writer
replaces after each change, and segment maps are never closed under them.

The parts: ``segments`` (the live segment records and their file names),
``view`` (the state and the reads), ``recovery`` (open), ``writer`` (every change).
"""

from __future__ import annotations

from segwal.engine.recovery import LogRecovery
from segwal.engine.writer import LogWriter

__all__ = ["SegmentedLog"]


class SegmentedLog(LogWriter, LogRecovery):
    """The log part of the engine.  Arguments are validated by the facade;
    this class assumes them valid and enforces durability and crash safety.

    One writer at a time (the facade holds a lock); readers concurrent.
    State and reads come from :class:`~segwal.engine.view.LogReader`, opening
    from :class:`~segwal.engine.recovery.LogRecovery`, writes from
    :class:`~segwal.engine.writer.LogWriter`.
    """
