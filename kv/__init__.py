"""segwal.kv: the state machine's key/value store: record codec, store, compaction, snapshots.

It stands on :mod:`segwal.wal`'s frame format and segment files and never
imports :mod:`segwal.engine`, which owns it.
"""
