"""What the live-reader tests share between the test process and the reader child:
the checks a view must pass (``tests/test_live_readers.py`` explains them)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from live_writer_child import KEYS, parse

from segwal.engine import WalEngine


class Journal:
    """The writer's key/value journal: the exact state after each batch."""

    def __init__(self, path: Path) -> None:
        self.path = Path(str(path) + ".kv.jsonl")
        self.batches: dict[int, list[list[str | None]]] = {}
        self.pos = 0

    def state_after(self, n: int) -> dict[bytes, bytes]:
        if any(m not in self.batches for m in range(1, n + 1)):
            with open(self.path) as f:
                f.seek(self.pos)
                for line in f:
                    if not line.endswith("\n"):
                        break
                    self.pos += len(line.encode())
                    if line.strip():
                        m, changes = json.loads(line)
                        self.batches[m] = changes
        state: dict[bytes, bytes] = {}
        for m in range(1, n + 1):
            for k, v in self.batches[m]:
                assert k is not None
                if v is None:
                    state.pop(k.encode(), None)
                else:
                    state[k.encode()] = v.encode()
        return state


def check_view(r: WalEngine, rng: random.Random, journal: Journal | None = None) -> tuple[int, int]:
    """Check one view (see the module docstring); returns (last index, kv batch number)."""
    first, last = r.first_index(), r.last_index()
    ents = r.get_entries_range(first, last)
    assert [e.index for e in ents] == list(range(first, first + len(ents)))
    assert not ents or ents[-1].index == last, (first, last, len(ents))
    prev = None
    for e in ents:
        i, t, v, p = parse(e.payload)
        assert (i, t) == (e.index, e.term), f"entry {e.index} (term {e.term}) holds {e.payload[:40]!r}"
        if prev is not None:
            assert e.term >= prev[0], f"term goes down at {e.index}"
            assert p == prev[1], f"entry {e.index} follows version {p}, the view has {prev[1]} before it"
        prev = (e.term, v)
    for i in rng.sample(range(first, last + 1), min(5, len(ents))):
        assert r.entry(i) == ents[i - first]
    hs = r.load_hard_state()
    if hs is not None:
        assert hs.commit_index <= last
    seq_v = r.get(b"seq")
    n = int(seq_v) if seq_v is not None else 0
    kv = {k: v for k in [*KEYS, b"seq"] if (v := r.get(k)) is not None}
    for k, val in kv.items():
        assert int(val.split(b":")[0]) <= n, f"{k!r} holds batch {val[:12]!r}, newer than the view's {n}"
    if journal is not None:
        assert kv == journal.state_after(n), f"the key/value data is not the state after batch {n}"
    return last, n


def final_state(r: WalEngine) -> dict[str, Any]:
    hs = r.load_hard_state()
    la = r.last_applied()
    return {
        "entries": [[x.index, x.term, x.payload.decode()] for x in r.get_entries_range(r.first_index(), r.last_index())],
        "kv": {k.decode(): v.decode() for k in sorted([*KEYS, b"seq"]) if (v := r.get(k)) is not None},
        "hard": None if hs is None else [hs.current_term, hs.commit_index],
        "applied": None if la is None else [la.term, la.index],
    }
