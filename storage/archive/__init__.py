"""segwal.storage.archive: continuous archiving of a node's log, hard state and key/value snapshots to an object store, and point-in-time restore.

:class:`Archiver` ships a running ``WalEngine`` from a thread (holding its
purges back until archived); ``segwal archive run DIR URL`` does the same
from a sidecar process over a read-only view.  :func:`restore` builds an
engine directory from the archive; :func:`read_archived_position` says how
far a restore can reach.  The object layout is in docs/archive.md.  Talking
to a real store needs ``obstore`` (``pip install segwal[cloud]``).
"""

from segwal.storage.archive.archiver import Archiver, ArchiveStatus
from segwal.storage.archive.restore import RestoreResult, read_archived_position, restore

__all__ = ["ArchiveStatus", "Archiver", "RestoreResult", "read_archived_position", "restore"]
