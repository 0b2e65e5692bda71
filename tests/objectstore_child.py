"""A writer process for the object-store kill -9 and read-only tests: appends, votes, applies and purges under load.

Usage: ``python tests/objectstore_child.py ENDPOINT BUCKET PREFIX``.  After each
acknowledged call it prints one line and flushes: ``entries LAST``,
``hard TERM``, ``kv KEY``, ``purge INDEX``.  It never stops by itself.
"""

from __future__ import annotations

import sys
from datetime import timedelta

from obstore.store import S3Store

from segwal.storage.objectstore import ObjectStoreEngine
from segwal.types import Entry, HardState, LogId, VotedFor


def payload(index: int) -> bytes:
    """The payload every test expects at ``index``."""
    return f"entry {index} ".encode() * (1 + index % 7)


def main() -> None:
    endpoint, bucket, prefix = sys.argv[1:4]
    store = S3Store(bucket, endpoint=endpoint, region="us-east-1", access_key_id="segwal",
                    secret_access_key="segwal", client_options={"allow_http": True, "timeout": "5s"},
                    retry_config={"max_retries": 2, "retry_timeout": timedelta(seconds=5)})
    engine = ObjectStoreEngine(store, prefix, compact_slots=6, chunk_bytes=8192)
    out = sys.stdout
    i = engine.last_index() + 1
    step = 0
    while True:
        n = 1 + step % 5
        engine.persist_entries([Entry(k, 1, payload(k)) for k in range(i, i + n)])
        i += n
        print(f"entries {i - 1}", file=out, flush=True)
        step += 1
        if step % 3 == 0:
            engine.save_hard_state(HardState(step, VotedFor(1, step), i - 1))
            print(f"hard {step}", file=out, flush=True)
        if step % 4 == 0:
            engine.apply([(f"k{step}".encode(), b"v")], applied=LogId(1, i - 1))
            print(f"kv k{step}", file=out, flush=True)
        if step % 10 == 0 and i > 30:
            engine.purge_logs(LogId(1, i - 25))
            print(f"purge {i - 25}", file=out, flush=True)


if __name__ == "__main__":
    main()
