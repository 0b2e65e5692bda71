"""segwal.raft: the Raft-log layer above any storage engine.

:class:`BufferedRaftLog` keeps recent entries in memory, applies Raft's
matching rule, and persists through a :class:`~segwal.types.StorageEngine`
either before an append returns (:class:`DiskFirst`) or by group commit from a
background writer (:class:`MemFirst`).
"""

from segwal.raft.log import BufferedRaftLog
from segwal.raft.strategy import DiskFirst, MemFirst

__all__ = ["BufferedRaftLog", "DiskFirst", "MemFirst"]
