"""segwal.kv: the state machine's key/value store: record codec, store, compaction, snapshots.

``store.py``: :class:`KVStore`; ``snapshot.py``: snapshot files.  It stands on
:mod:`segwal.wal`'s frame format and segment files and never imports :mod:`segwal.engine`, which owns it.
"""

from segwal.kv.codec import MAX_BATCH_BYTES, MAX_KEY_SIZE, MAX_VALUE_SIZE
from segwal.kv.store import KVStats, KVStore

__all__ = ["KVStore", "KVStats", "MAX_KEY_SIZE", "MAX_VALUE_SIZE", "MAX_BATCH_BYTES"]
