"""segwal as PySyncObj's journal: one line in the configuration, durable by default and at full speed.

`PySyncObj <https://github.com/bakwc/PySyncObj>`_ keeps its Raft log in a
*journal*: ``pysyncobj.journal.FileJournal`` holds every entry in memory,
appends unchecksummed records to one mmap'd file that SyncObj never syncs, and
rewrites the whole file on every log compaction.  :class:`SegwalJournal` has
the same interface (written against pysyncobj 0.3.17) and keeps the log in a
segwal storage engine: checksummed records, durable batches, log compaction
that deletes whole segment files, and the newest entries in memory for reads.

Usage (importing this package installs the hooks)::

    from segwal.integrations.pysyncobj import segwal_journal
    conf = SyncObjConf(journalFile=segwal_journal("/var/lib/node1/raft"), fullDumpFile="/var/lib/node1/dump")

``segwal_journal(target)`` takes a directory path, or a zero-argument factory
returning an open :class:`~segwal.types.StorageEngine` (only the protocol's
methods are used); a URL string raises a ``ValueError`` for now.

Durability (``sync=``)
----------------------
``"always"`` (default): Raft's rules hold across a power cut.  ``add`` only
buffers the entry in memory; the buffered entries are written in one
``persist_entries`` batch and fdatasynced (one sync for many entries: persist
before send, as etcd's Ready loop does) before any message that promises them
leaves the node:

* a follower's ``next_node_idx`` acknowledgement (after ``append_entries`` and
  after a snapshot install);
* the leader counting itself toward a commit (the start of every tick);
* a granted vote and any term change (``setCurrentTerm`` syncs the log, then
  saves term and vote durably before it returns);
* log compaction and a snapshot install: PySyncObj writes ``fullDumpFile`` with
  a plain rename and no fsync, so the dump file and its directory are fsynced
  before ``deleteEntriesTo`` purges the log and before ``clear()`` empties it
  for a snapshot install.  This mode requires ``SyncObjConf(fullDumpFile=...)``
  and says so at construction when it is missing.

``"flush"``: the same points write the batch to the operating system without
waiting for a sync, so an acknowledgement survives ``kill -9`` of any number
of nodes (the page cache outlives the process) but not a power cut of a
majority; the one-second timer, ``flush()`` and close fsync the log.

What is wrapped (:func:`install`, idempotent, on import)
--------------------------------------------------------
SyncObj has no option for a custom journal and no hook around its sends, so
these PySyncObj 0.3.17 functions are wrapped.  Each wrapper does nothing for a
SyncObj whose journal is not segwal's, so other SyncObjs in the process are
unaffected.  If the installed PySyncObj is not 0.3.17 or lacks one of them,
the import fails with ``ImportError`` (never a silent fallback):

* ``pysyncobj.syncobj.createJournal``: a :class:`SegwalJournalFile` (what
  :func:`segwal_journal` returns) opens a :class:`SegwalJournal`, given the
  SyncObj's ``fullDumpFile``; anything else goes to the original.
* ``SyncObj.__init__``: checks the configuration (``fullDumpFile`` in durable
  mode; ``useFork=False`` with ``fs=``) before anything starts, and makes it
  visible to the two factories.
* ``SyncObj._onTick``: syncs the buffered entries before the tick, whose
  commit computation counts the leader itself (``count = 1``).
* ``SyncObj.__sendNextNodeIdx``: syncs before a follower's acknowledgement.
* ``SyncObj.__getEntries``: a call with ``count=None`` and ``maxSizeBytes``
  (the leader building an ``append_entries`` batch) reads only up to
  ``maxSizeBytes`` (:meth:`SegwalJournal.entries_from`) instead of slicing to
  the end of the log first -- a lagging follower's catch-up no longer reads
  the whole log per message.
* ``pysyncobj.syncobj.Serializer``: only with ``fs=``, the dump is written and
  read through that file system (:class:`~.dump.FsSerializer`, no fork).
* ``SyncObj.__setCurrentTerm`` is not wrapped but required: it calls the
  journal's ``setCurrentTerm``, which is durable on return.

Mapping of PySyncObj's journal onto the engine
----------------------------------------------
* Positions: PySyncObj addresses its journal by *position* (``journal[0]`` is
  the oldest entry still kept, ``journal[-1]`` the newest), with list
  semantics: negative indexes, slices (also with steps), ``IndexError`` out of
  range.  Position ``i`` is log index ``first + i``; an item is the tuple
  ``(command: bytes, idx, term)``, slices are lists of them.
* ``add(command, idx, term)``: ``idx`` must be ``last idx + 1`` (what SyncObj
  always does); on an empty journal any ``idx`` is accepted, as in
  PySyncObj's journals (the engine is reset first when ``idx`` would not
  follow the purge boundary).  ``str`` commands are stored UTF-8 encoded.
* ``deleteEntriesFrom(k)``: buffered entries are dropped, the engine is
  truncated at ``first + k`` when it holds any of them.
* ``deleteEntriesTo(k)`` (log compaction): ``purge_logs`` up to position
  ``k-1``; whole segment files below it are unlinked, so the cost does not
  grow with the entries kept (``FileJournal`` rewrites all of them).
* ``clear()``: the engine's ``reset()`` (the hard state is kept).
* ``setRaftCommitIndex``: kept in memory and saved in the hard state by
  ``onOneSecondTimer`` / ``flush`` / ``_destroy`` / the next ``setCurrentTerm``,
  like ``FileJournal`` does, clamped to the last entry on disk (the engine
  refuses a hard state claiming entries it does not have).  A journal that
  never saved one returns 1, like PySyncObj's journals.
* Node ids of votes: see :mod:`.nodeids` (``"ipv4:port"`` ids in the u64
  itself, others pickled in the engine's key/value store, written durably
  before the hard state that refers to them).

Threading: SyncObj calls the journal from its tick thread; ``len()``, reads and
``sync()``/``flush()`` from other threads are safe.
"""

from __future__ import annotations

from .hooks import SUPPORTED_VERSION, SegwalJournalFile, install, segwal_journal
from .journal import DEFAULT_CACHE_ENTRIES, SegwalJournal
from .nodeids import decode_node_id, encode_node_id

__all__ = [
    "DEFAULT_CACHE_ENTRIES",
    "SUPPORTED_VERSION",
    "SegwalJournal",
    "SegwalJournalFile",
    "decode_node_id",
    "encode_node_id",
    "install",
    "segwal_journal",
]

install()
