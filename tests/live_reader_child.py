"""Reader process for ``tests/test_live_readers.py``: a read-only view of a directory that
the test process writes, checked and refreshed until told to stop.

Usage: ``python tests/live_reader_child.py DIR STOP FINAL``.  Prints ``READY`` once
its view is open; reads, checks (``live_support.check_view``) and refreshes until
the file ``STOP`` exists, then refreshes once more and compares its view with the
writer's final state in ``FINAL``.  Prints its counts as JSON; any failed check
exits non-zero with the traceback.
"""

from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path

from live_support import Journal, check_view, final_state

from segwal.engine import StaleViewError, WalEngine


def main(path: str, stop: str, final: str) -> None:
    rng = random.Random(7)
    journal = Journal(Path(path))
    stats = {"views": 0, "progress": 0, "stale": 0, "opens": 0}
    seen = (-1, -1)
    with WalEngine(path, readonly=True) as r:
        print("READY", flush=True)
        while not os.path.exists(stop):
            try:
                got = check_view(r, rng, journal)
            except StaleViewError:
                stats["stale"] += 1
                r.refresh()
                continue
            stats["views"] += 1
            stats["progress"] += got != seen
            seen = got
            if rng.random() < 0.1:
                with WalEngine(path, readonly=True) as fresh:
                    stats["opens"] += 1
                    try:
                        check_view(fresh, rng, journal)
                    except StaleViewError:
                        stats["stale"] += 1
            r.refresh()
        r.refresh()
        assert final_state(r) == json.loads(Path(final).read_text()), "the view after the writer stopped"
    print(json.dumps(stats), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
