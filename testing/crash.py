"""Crash-state generation: the disk states a crash could leave, from a recording.

Strategy: replay a :class:`~segwal.testing.recording.Recording` through a small
model of a POSIX file system with a page cache, and at each *crash point* ``k``
(the crash happens after ``ops[:k]`` were issued and before ``ops[k]``) ask
each *generator* for the states a crash there could leave.  The model, and what
its *current*, *pending* and *durable* contents and names mean, is
:class:`~segwal.testing.fsmodel.FsModel` (POSIX rules, not one file system's
leniency).

Generators (each names its states ``<generator>``):

``process_kill``
    Everything issued so far, as the page cache holds it (kill -9: the kernel
    survives).  Run at every crash point.
``lose_unsynced``
    Durable names and durable contents only (power loss, nothing written back).
``torn``
    Current names; each file's durable content plus its pending writes, each
    cut at ``sector_size`` boundaries into pieces that are kept, dropped,
    zero-filled or garbage-filled; pending truncates kept or dropped.  Some
    structured cases (each pending write cut after each sector, capped) then
    seeded random mixes.
``reorder``
    Current names; durable content plus a *subset* of the pending writes and
    truncates, applied in issue order (so a later write to the same bytes
    still wins, as the page cache merges them): every subset when there are
    few, else every prefix, every single omission and seeded random subsets.
``dir_ops``
    Durable names plus a subset of the pending directory operations, applied in
    order (an op whose precondition fails, e.g. a rename whose source create
    was lost, is skipped), with durable contents and again with current
    contents: a create lost, a rename reverted, an unlink reverted.

The power-loss generators run at the *sync points* (just before each
fdatasync/fsync/fsync_dir, where the most is pending, and at the end) or, with
``points="all"``, at every op.  States are deduplicated by a hash of their
content (names, directory set and bytes) *and* the number of marks made
before the crash point (the same bytes must be checked again against more
acknowledged calls); the first generator to produce a state keeps it.  Random choices come from a generator seeded with
``(seed, point, generator)``, so any one state can be regenerated alone with
:meth:`CrashSimulator.states` and ``only_points=[k]``.

Budget: ``per_point`` bounds how many states each sampled generator yields at
one crash point; ``max_states`` stops the whole run after that many unique
states.  The defaults explore a few thousand states for a workload of a few
hundred operations.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from segwal.testing.fsmodel import FsModel, apply_data, apply_dirop, reachable
from segwal.testing.recording import SYNC_KINDS, Op, OpKind, Recording

__all__ = [
    "GENERATORS",
    "CrashState",
    "CrashSimulator",
    "SimulationStats",
    "generate_states",
]

#: The generator names, in the order they run at each crash point.
GENERATORS: tuple[str, ...] = ("process_kill", "lose_unsynced", "torn", "reorder", "dir_ops")

_PIECE_MODES = ("keep", "drop", "zero", "garbage")


@dataclass(frozen=True, slots=True, kw_only=True)
class CrashState:
    """One disk state a crash could leave.

    Attributes:
        point: the crash happened after ``ops[:point]`` were issued.
        generator: which generator made it (see the module docstring).
        variant: what the generator chose, in words (which writes torn how...).
        seed: the simulator's seed.
        files: relative path -> content.
        dirs: relative directory paths present (root excluded).
        digest: hash of names, directories and contents.
        acked: number of marks made at or before ``point``.  Two states are
            duplicates when both their digest and ``acked`` match: the same
            bytes must be checked again against a different set of marks.
        next_op: the operation the crash interrupted (``ops[point]``), if any.
    """

    point: int
    generator: str
    variant: str
    seed: int
    files: Mapping[str, bytes]
    dirs: frozenset[str]
    digest: str
    acked: int = 0
    next_op: Op | None = None

    def describe(self) -> str:
        """One line to print on failure: point, generator, variant, seed. O(1)."""
        nxt = f", before {self.next_op.describe()}" if self.next_op is not None else ", at the end"
        return f"crash point {self.point}{nxt}; generator {self.generator} ({self.variant}); seed {self.seed}"

    def materialize(self, dest: str | os.PathLike[str]) -> Path:
        """Write the state into directory ``dest`` (created; must be empty or missing).

        Complexity: O(total bytes).  Returns ``dest`` as a :class:`Path`.
        """
        root = Path(dest)
        root.mkdir(parents=True, exist_ok=True)
        if any(root.iterdir()):
            raise FileExistsError(f"{root} is not empty")
        for d in sorted(self.dirs, key=lambda p: p.count(os.sep)):
            (root / d).mkdir(parents=True, exist_ok=True)
        for rel, content in self.files.items():
            p = root / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(content)
        return root


@dataclass(slots=True)
class SimulationStats:
    """Counters of one simulation run (mutable; read after iterating).

    Attributes:
        points: crash points visited.
        generated: states generated, duplicates included.
        unique: states yielded after deduplication.
        per_generator: unique states per generator name.
    """

    points: int = 0
    generated: int = 0
    unique: int = 0
    per_generator: dict[str, int] = field(default_factory=dict)

    @property
    def duplicates(self) -> int:
        """States dropped as duplicates."""
        return self.generated - self.unique


# -- building states --------------------------------------------------------------


def _digest(files: Mapping[str, bytes], dirs: Iterable[str]) -> str:
    h = hashlib.blake2b(digest_size=20)
    for d in sorted(dirs):
        h.update(b"D" + d.encode() + b"\0")
    for rel in sorted(files):
        c = files[rel]
        h.update(b"F" + rel.encode() + b"\0" + len(c).to_bytes(8, "little"))
        h.update(c)
    return h.hexdigest()


def _pieces(op: Op, sector: int) -> list[tuple[int, bytes]]:
    """Split a write at absolute sector boundaries of its file."""
    out: list[tuple[int, bytes]] = []
    off, data = op.offset, op.data
    pos = 0
    while pos < len(data):
        nxt = min(len(data), ((off + pos) // sector + 1) * sector - off)
        out.append((off + pos, data[pos:nxt]))
        pos = nxt
    return out


def _write_at(buf: bytearray, offset: int, data: bytes) -> None:
    if offset > len(buf):
        buf.extend(bytes(offset - len(buf)))
    buf[offset : offset + len(data)] = data


class CrashSimulator:
    """Generate the crash states of a recording (see the module docstring).

    Args:
        recording: what to replay.
        generators: names from :data:`GENERATORS` to run.
        sector_size: torn-write granularity in bytes (512 by default).
        seed: seeds every random choice.
        points: ``"sync"`` (power-loss generators at sync points) or ``"all"``.
        per_point: cap on states per sampled generator per crash point.
        exhaustive: enumerate every subset (reorder, dir_ops) when there are at
            most this many (2**n states); sample beyond.
        max_states: stop after this many unique states (``None``: no cap).
        min_point: skip crash points below this (e.g. the setup phase).

    Iterate :meth:`states`; read :attr:`stats` afterwards.
    """

    def __init__(
        self,
        recording: Recording,
        *,
        generators: Sequence[str] = GENERATORS,
        sector_size: int = 512,
        seed: int = 0,
        points: str = "sync",
        per_point: int = 8,
        exhaustive: int = 64,
        max_states: int | None = None,
        min_point: int = 0,
    ) -> None:
        unknown = set(generators) - set(GENERATORS)
        if unknown:
            raise ValueError(f"unknown generators {sorted(unknown)}; known: {GENERATORS}")
        if points not in ("sync", "all"):
            raise ValueError(f"points must be 'sync' or 'all', not {points!r}")
        if sector_size <= 0:
            raise ValueError(f"sector_size must be positive, not {sector_size}")
        self.recording = recording
        self.generators = tuple(g for g in GENERATORS if g in generators)
        self.sector_size = sector_size
        self.seed = seed
        self.points = points
        self.per_point = per_point
        self.exhaustive = exhaustive
        self.max_states = max_states
        self.min_point = min_point
        self.stats = SimulationStats()

    def crash_points(self) -> list[int]:
        """The power-loss crash points: before each sync op and at the end. O(ops)."""
        ops = self.recording.ops
        if self.points == "all":
            return list(range(len(ops) + 1))
        pts = [i for i, op in enumerate(ops) if op.kind in SYNC_KINDS]
        pts.append(len(ops))
        return pts

    def states(
        self, *, only_points: Iterable[int] | None = None, only_generators: Iterable[str] | None = None
    ) -> Iterator[CrashState]:
        """Yield the unique crash states, point by point.

        Args:
            only_points: restrict to these crash points (to reproduce one failure).
            only_generators: restrict to these generators.

        Complexity: O(ops * file bytes) for the replay, plus O(total bytes) per
        state generated.  Resets :attr:`stats`.
        """
        self.stats = stats = SimulationStats()
        ops = self.recording.ops
        sync_points = set(self.crash_points())
        wanted = set(only_points) if only_points is not None else None
        gens = tuple(g for g in self.generators if only_generators is None or g in set(only_generators))
        seen: set[tuple[str, int]] = set()
        model = FsModel(self.recording)
        mark_pos = sorted(m.position for m in self.recording.marks)
        acked = 0
        for k in range(len(ops) + 1):
            while acked < len(mark_pos) and mark_pos[acked] <= k:
                acked += 1
            if k >= self.min_point and (wanted is None or k in wanted):
                at_sync = k in sync_points
                if at_sync or "process_kill" in gens:
                    stats.points += 1
                nxt = ops[k] if k < len(ops) else None
                for gen in gens:
                    if gen != "process_kill" and not at_sync:
                        continue
                    for variant, files, dirs in self._generate(gen, model, k):
                        stats.generated += 1
                        digest = _digest(files, dirs)
                        if (digest, acked) in seen:
                            continue
                        seen.add((digest, acked))
                        stats.unique += 1
                        stats.per_generator[gen] = stats.per_generator.get(gen, 0) + 1
                        yield CrashState(
                            point=k,
                            generator=gen,
                            variant=variant,
                            seed=self.seed,
                            files=MappingProxyType(files),
                            dirs=dirs,
                            digest=digest,
                            acked=acked,
                            next_op=nxt,
                        )
                        if self.max_states is not None and stats.unique >= self.max_states:
                            return
            if k < len(ops):
                model.step(ops[k])

    # -- generators ------------------------------------------------------------

    def _rng(self, point: int, gen: str) -> random.Random:
        return random.Random(f"{self.seed}:{point}:{gen}")

    def _generate(self, gen: str, m: FsModel, k: int) -> Iterator[tuple[str, dict[str, bytes], frozenset[str]]]:
        if gen == "process_kill":
            ns, dirs = reachable(m.ns, m.dirs)
            yield "all issued ops applied", {p: bytes(m.cur[i]) for p, i in ns.items()}, dirs
        elif gen == "lose_unsynced":
            ns, dirs = reachable(m.dns, m.ddirs)
            yield "durable state only", {p: m.dur[i] for p, i in ns.items()}, dirs
        elif gen == "torn":
            yield from self._torn(m, k)
        elif gen == "reorder":
            yield from self._reorder(m, k)
        elif gen == "dir_ops":
            yield from self._dir_ops(m, k)

    def _with_data(
        self, m: FsModel, chosen: Callable[[bytearray, int], None]
    ) -> tuple[dict[str, bytes], frozenset[str]]:
        """Current names; each reachable file = durable content + chosen(buf, ino)."""
        ns, dirs = reachable(m.ns, m.dirs)
        files: dict[str, bytes] = {}
        for p, ino in ns.items():
            if ino in m.pending:
                buf = bytearray(m.dur[ino])
                chosen(buf, ino)
                files[p] = bytes(buf)
            else:
                files[p] = m.dur[ino]
        return files, dirs

    def _torn(self, m: FsModel, k: int) -> Iterator[tuple[str, dict[str, bytes], frozenset[str]]]:
        pend = m.pending_ops()
        writes = [op for op in pend if op.kind is OpKind.WRITE and op.data]
        if not writes:
            return
        sector = self.sector_size
        rng = self._rng(k, "torn")
        budget = self.per_point
        pieces = {op.seq: _pieces(op, sector) for op in writes}

        def build(
            modes: Mapping[int, Sequence[str]], drop_trunc: frozenset[int], gbytes: random.Random
        ) -> tuple[dict[str, bytes], frozenset[str]]:
            def chosen(buf: bytearray, ino: int) -> None:
                for op in m.pending[ino]:
                    if op.kind is OpKind.TRUNCATE:
                        if op.seq not in drop_trunc:
                            apply_data(buf, op)
                        continue
                    ms = modes.get(op.seq)
                    if ms is None:
                        apply_data(buf, op)
                        continue
                    for (off, data), mode in zip(pieces[op.seq], ms):
                        if mode == "keep":
                            _write_at(buf, off, data)
                        elif mode == "zero":
                            _write_at(buf, off, bytes(len(data)))
                        elif mode == "garbage":
                            _write_at(buf, off, gbytes.randbytes(len(data)))

            return self._with_data(m, chosen)

        # Structured: the last pending write of each file cut after j sectors
        # (the rest dropped), the classic torn append.
        last_by_ino: dict[int, Op] = {}
        for op in writes:
            last_by_ino[op.ino] = op
        cuts: list[tuple[Op, int]] = []
        for op in last_by_ino.values():
            n = len(pieces[op.seq])
            for j in range(n):
                cuts.append((op, j))
        if len(cuts) > budget // 2:
            cuts = rng.sample(cuts, budget // 2)
        for op, j in cuts:
            n = len(pieces[op.seq])
            modes = {op.seq: ["keep"] * j + ["drop"] * (n - j)}
            # Later pending writes of other files are kept; later writes of the
            # same file do not exist (op is its last).
            files, dirs = build(modes, frozenset(), random.Random(0))
            budget -= 1
            yield f"{op.describe()} cut after {j} of {n} sectors", files, dirs
        # Random mixes of piece modes over every pending write.
        trunc = [op.seq for op in pend if op.kind is OpKind.TRUNCATE]
        while budget > 0:
            budget -= 1
            modes = {}
            desc = []
            for op in writes:
                ms = [rng.choice(_PIECE_MODES) for _ in pieces[op.seq]]
                modes[op.seq] = ms
                if any(x != "keep" for x in ms):
                    desc.append(f"#{op.seq}:" + "".join(x[0] for x in ms))
            dropped = frozenset(s for s in trunc if rng.random() < 0.5)
            gseed = rng.getrandbits(32)
            files, dirs = build(modes, dropped, random.Random(gseed))
            text = "sectors k=keep d=drop z=zero g=garbage " + (" ".join(desc) or "all kept")
            if dropped:
                text += f"; truncates dropped {sorted(dropped)}"
            yield text, files, dirs

    def _subsets(self, n: int, rng: random.Random) -> Iterator[tuple[frozenset[int], str]]:
        """Index subsets of range(n): all of them if small, else structured + sampled."""
        if n == 0:
            return
        if (1 << n) <= self.exhaustive:
            for mask in range(1 << n):
                yield frozenset(i for i in range(n) if mask >> i & 1), f"subset mask {mask:#x}"
            return
        budget = self.per_point
        for j in range(n):  # prefixes and single omissions, interleaved
            if budget <= 0:
                return
            yield frozenset(range(j)), f"first {j} of {n}"
            yield frozenset(range(n)) - {j}, f"all of {n} but #{j}"
            budget -= 2
        while budget > 0:
            budget -= 1
            yield frozenset(i for i in range(n) if rng.random() < 0.5), "random subset"

    def _reorder(self, m: FsModel, k: int) -> Iterator[tuple[str, dict[str, bytes], frozenset[str]]]:
        pend = m.pending_ops()
        if len(pend) < 2:
            return
        rng = self._rng(k, "reorder")
        for chosen_idx, how in self._subsets(len(pend), rng):
            keep = {pend[i].seq for i in chosen_idx}

            def chosen(buf: bytearray, ino: int) -> None:
                for op in m.pending[ino]:
                    if op.seq in keep:
                        apply_data(buf, op)

            files, dirs = self._with_data(m, chosen)
            kept = ",".join(str(s) for s in sorted(keep))
            yield f"{how}: pending writes kept [{kept}] of {len(pend)}", files, dirs

    def _dir_ops(self, m: FsModel, k: int) -> Iterator[tuple[str, dict[str, bytes], frozenset[str]]]:
        pdir = list(m.pdir)
        if not pdir:
            return
        rng = self._rng(k, "dir_ops")
        for chosen_idx, how in self._subsets(len(pdir), rng):
            ns = dict(m.dns)
            dirs = set(m.ddirs)
            applied = []
            for i, d in enumerate(pdir):
                if i in chosen_idx and apply_dirop(ns, dirs, d):
                    applied.append(f"{d.kind} {d.path}" + (f"->{d.dst}" if d.dst else ""))
            lost = [f"{d.kind} {d.path}" + (f"->{d.dst}" if d.dst else "") for i, d in enumerate(pdir) if i not in chosen_idx]
            rns, rdirs = reachable(ns, dirs)
            text = f"{how}: dir ops lost [{'; '.join(lost)}]"
            yield text + ", durable data", {p: m.dur[i] for p, i in rns.items()}, rdirs
            yield text + ", current data", {p: bytes(m.cur[i]) for p, i in rns.items()}, rdirs


def generate_states(recording: Recording, **options: object) -> Iterator[CrashState]:
    """Shorthand for ``CrashSimulator(recording, **options).states()``."""
    return CrashSimulator(recording, **options).states()  # type: ignore[arg-type]

