"""A node process for the archive tests: appends, overwrites, applies key/value changes, rotates and purges until killed.

Usage: ``python tests/archive_node_child.py DIR``.  Prints ``last N`` after
each acknowledged batch (``sync="always"``: durable on return).  Payloads are
:func:`payload` of (index, term), so any reader can check an entry alone.
"""

from __future__ import annotations

import sys
import time

from segwal.engine import WalEngine
from segwal.types import Entry, HardState, LogId


def payload(index: int, term: int) -> bytes:
    """The payload of entry ``index`` written in ``term``."""
    return f"{index}:{term}:".encode() + b"x" * (40 + index % 200)


def main() -> None:
    eng = WalEngine(sys.argv[1], segment_size=32 << 10)
    term, last, n = 1, eng.last_index(), 0
    while True:
        n += 1
        if n % 40 == 0 and last > 10:  # a conflict overwrite: a new term rewrites the last 5 entries
            term += 1
            eng.save_hard_state(HardState(term, None, last - 10))
            last -= 5
        batch = [Entry(i, term, payload(i, term)) for i in range(last + 1, last + 21)]
        eng.persist_entries(batch)
        last += 20
        at = last - 10
        eng.apply([(b"applied", str(at).encode())], applied=LogId(eng.term_of(at) or term, at))
        if n % 25 == 0 and last > 1500:
            eng.purge_logs(LogId(eng.term_of(last - 1500) or term, last - 1500))
        print(f"last {last}", flush=True)
        time.sleep(0.01)


if __name__ == "__main__":
    main()
