"""What every workload runs in: the sizes, the run's :class:`Config`, and :class:`Ctx` (data, stores, probes, notes).

:class:`Ctx` builds the entries every store gets (index ``1..N``, term
``1 + index // 10000``, a 256-byte payload drawn from a seeded pool of
incompressible bytes), makes peers, and reopens a store in a fresh interpreter
(:mod:`bench.probe`); :func:`rotate` and :func:`guard` give every workload the
same interleaving of stores and the same handling of a store that fails.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..peers import BasePeer, Entry, make_peer, term_of
from ..report import Results

__all__ = ["PAYLOAD", "RECORD", "BUILD_BATCH", "Sizes", "SIZES", "Config", "Ctx", "rotate", "guard", "close_quietly"]

T = TypeVar("T")

PAYLOAD = 256
RECORD = 280  # raw record size: 24-byte header + payload
BUILD_BATCH = 10_000
# The benchmark's package, where the probe lives: ``bench`` when run from a source
# checkout (``python -m bench``), ``segwal.bench`` when installed.
_BENCH = __name__.rsplit(".", 2)[0]


@dataclass(frozen=True)
class Sizes:
    append: tuple[tuple[int, int], ...]  # (batch, N)
    read_n: int
    point_reads: int
    ranges: int
    reopen: tuple[int, ...]
    reopen_big_peers: tuple[str, ...]  # stores taken to the sizes above 1M
    delete_n: int
    kv_batches: int
    kv_keys: int
    kv_gets: int
    sweep_mib: tuple[int, ...]
    sweep_append_n: int
    sweep_reopen_n: int


SIZES = {
    "full": Sizes(
        append=((1, 5_000), (64, 200_000), (1024, 200_000)),
        read_n=200_000,
        point_reads=100_000,
        ranges=200,
        reopen=(10_000, 100_000, 1_000_000, 10_000_000),
        reopen_big_peers=("segwal", "lmdb", "rocksdict"),
        delete_n=200_000,
        kv_batches=300,
        kv_keys=20_000,
        kv_gets=100_000,
        sweep_mib=(1, 4, 16, 64, 256),
        sweep_append_n=200_000,
        sweep_reopen_n=1_000_000,
    ),
    "quick": Sizes(
        append=((1, 300), (64, 6_400), (1024, 30_720)),
        read_n=20_000,
        point_reads=10_000,
        ranges=20,
        reopen=(10_000, 100_000),
        reopen_big_peers=(),
        delete_n=20_000,
        kv_batches=30,
        kv_keys=2_000,
        kv_gets=10_000,
        sweep_mib=(1, 16),
        sweep_append_n=20_480,
        sweep_reopen_n=50_000,
    ),
}


@dataclass
class Config:
    peers: list[str]
    workloads: list[str]
    repeat: int
    seed: int
    data_dir: str
    sizes: Sizes
    segwal_segment_size: int | None = None
    verbose: bool = True


@dataclass
class Ctx:
    cfg: Config
    res: Results
    notes: list[str] = field(default_factory=list)
    payloads: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        rng = random.Random(self.cfg.seed)
        pool = rng.randbytes(PAYLOAD * 4096)
        self.payloads = [pool[i * PAYLOAD : (i + 1) * PAYLOAD] for i in range(4096)]

    # -- helpers -----------------------------------------------------------------

    def log(self, msg: str) -> None:
        if self.cfg.verbose:
            print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    def note(self, msg: str) -> None:
        self.notes.append(msg)
        self.log("NOTE " + msg)

    def rng(self, tag: str) -> random.Random:
        return random.Random(f"{self.cfg.seed}:{tag}")

    def peer(self, name: str) -> BasePeer:
        if name == "segwal" and self.cfg.segwal_segment_size:
            return make_peer(name, segment_size=self.cfg.segwal_segment_size)
        if name == "segwal_16m":
            p = make_peer("segwal", segment_size=16 << 20)
            p.name = "segwal_16m"  # type: ignore[misc]
            p.label = "segwal, 16 MiB segments"  # type: ignore[misc]
            return p
        return make_peer(name)

    def peers_with(self, cap: str) -> list[str]:
        out = []
        for n in self.cfg.peers:
            base = "segwal" if n == "segwal_16m" else n
            p = make_peer(base)
            if cap in p.caps:
                out.append(n)
        return out

    def tmpdir(self, tag: str) -> str:
        return tempfile.mkdtemp(prefix=f"{tag}-", dir=self.cfg.data_dir)

    def entries(self, start: int, n: int) -> list[Entry]:
        pl = self.payloads
        new = tuple.__new__
        return [new(Entry, (i, 1 + i // 10000, pl[i % 4096])) for i in range(start, start + n)]

    def batches(self, start: int, n: int, size: int) -> Iterator[list[Entry]]:
        end = start + n
        for a in range(start, end, size):
            yield self.entries(a, min(size, end - a))

    def build(self, peer: BasePeer, start: int, n: int) -> float:
        """Append ``n`` entries from ``start`` in 10,000-entry batches; returns seconds."""
        t0 = time.perf_counter()
        for b in self.batches(start, n, BUILD_BATCH):
            peer.append(peer.prepare(b))
        return time.perf_counter() - t0

    def expect(self, e: Entry | None, i: int) -> None:
        if e is None or e[0] != i or e[1] != term_of(i) or bytes(e[2]) != self.payloads[i % 4096]:
            raise AssertionError(f"entry({i}) returned {None if e is None else (e[0], e[1], bytes(e[2][:8]))}")

    def probe(self, name: str, path: str, segment_size: int | None = None) -> dict[str, Any]:
        """Reopen ``path`` in a fresh interpreter (see :mod:`bench.probe`)."""
        if name == "segwal" and segment_size is None:
            segment_size = self.cfg.segwal_segment_size
        cmd = [sys.executable, "-m", f"{_BENCH}.probe", "--peer", name, "--path", path]
        if segment_size:
            cmd += ["--segment-size", str(segment_size)]
        env = dict(os.environ)
        if _BENCH == "bench":  # run from a source checkout: make ``bench`` importable
            root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
            env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        if proc.returncode != 0:
            tail = " | ".join((proc.stderr.strip() or proc.stdout.strip()).splitlines()[-4:])
            raise RuntimeError(f"probe of {name} failed (exit {proc.returncode}): {tail[-600:]}")
        data: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
        return data


def rotate(names: list[T], rep: int) -> list[T]:
    """``names`` started at position ``rep``: each repetition visits the stores in another order."""
    if not names:
        return names
    k = rep % len(names)
    return names[k:] + names[:k]


def guard(ctx: Ctx, dead: set[str], workload: str, name: str, fn: Callable[[], None]) -> None:
    """Run one store's part of a repetition; on error, note it and drop the store."""
    if name in dead:
        return
    try:
        fn()
    except Exception as exc:
        dead.add(name)
        tb = traceback.format_exc(limit=3).strip().splitlines()
        ctx.note(f"{workload}: {name} failed and was dropped: {type(exc).__name__}: {exc} ({' | '.join(tb[-3:])})")


def close_quietly(p: BasePeer) -> None:
    """Close ``p`` if it is open; an error while closing (after a failure) is ignored."""
    try:
        p.close()
    except Exception:
        pass
