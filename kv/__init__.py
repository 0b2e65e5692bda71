"""segwal.kv: the state machine's key/value store: record codec, store, compaction, snapshots.

``codec.py``: the KV frame body (pure); ``files.py``: the record files;
``store.py``: :class:`KVStore`; ``compaction.py``: rewriting the live data;
``snapshot.py``: snapshot files.  It stands on :mod:`segwal.wal`'s frame format
and segment files and never imports :mod:`segwal.engine`, which owns it.
"""

from segwal.kv.codec import MAX_BATCH_BYTES, MAX_KEY_SIZE, MAX_VALUE_SIZE
from segwal.kv.store import KVStats, KVStore

__all__ = ["MAX_BATCH_BYTES", "MAX_KEY_SIZE", "MAX_VALUE_SIZE", "KVStats", "KVStore"]
