"""Range reads: batch-verified and entry-verified paths return the same entries and
name the same damage."""

from __future__ import annotations

from pathlib import Path

import pytest

from segwal.engine import CorruptionError, Entry, WalEngine


def payload(i: int) -> bytes:
    return i.to_bytes(4, "big") * (5 + i % 7)  # unique per index


def build(d: Path, batches: list[int], segment_size: int = 1 << 20) -> list[Entry]:
    """A log written in batches of the given sizes (one frame each)."""
    out: list[Entry] = []
    with WalEngine(d, segment_size=segment_size) as e:
        i = 1
        for size in batches:
            b = [Entry(k, 1 + k // 500, payload(k)) for k in range(i, i + size)]
            e.persist_entries(b)
            out += b
            i += size
    return out


@pytest.mark.parametrize("start,end", [(1, 1000), (37, 900), (300, 310), (250, 1000), (999, 1000), (1, 2000)])
def test_ranges_across_and_inside_batches(tmp_path: Path, start: int, end: int) -> None:
    want = build(tmp_path / "e", [256, 100, 300, 1, 343])
    with WalEngine(tmp_path / "e") as e:
        assert e.get_entries_range(start, end) == want[start - 1 : end]


def test_damage_outside_the_requested_entries_does_not_fail_the_range(tmp_path: Path) -> None:
    want = build(tmp_path / "e", [1000])
    seg = sorted((tmp_path / "e").glob("*.wal"))[0]
    data = bytearray(seg.read_bytes())
    pos = data.index(payload(900))  # inside entry 900's payload, same batch as the range
    data[pos + 3] ^= 0x01
    seg.write_bytes(bytes(data))
    with WalEngine(tmp_path / "e") as e:
        assert e.get_entries_range(1, 800) == want[:800]  # the batch CRC fails; entries verify one by one
        with pytest.raises(CorruptionError) as ei:
            e.get_entries_range(850, 950)
        assert ei.value.index == 900 and ei.value.path == str(seg)
        with pytest.raises(CorruptionError) as ei:
            e.get_entries_range(1, 1000)
        assert ei.value.index == 900


def test_random_ranges_match_the_model_through_overwrites(tmp_path: Path) -> None:
    """Seeded random batches, conflict overwrites and truncations; every range read
    (long ones take the batch-CRC path) equals the in-memory model's."""
    import random

    from segwal.storage.memory import InMemoryEngine

    rng = random.Random(7)
    model = InMemoryEngine()
    with WalEngine(tmp_path / "e", segment_size=64 << 10) as e:
        for step in range(120):
            last = model.last_index()
            op = rng.random()
            if op < 0.65 or last < 5:
                first = last + 1 if rng.random() < 0.8 or last == 0 else rng.randint(max(1, last - 60), last)
                term = max(1, (model.entry(first - 1).term if first > 1 else 1)) + (1 if first <= last else 0)
                batch = [Entry(i, term, payload(i + step)) for i in range(first, first + rng.choice((1, 3, 40, 200)))]
                e.persist_entries(batch)
                model.persist_entries(batch)
            elif op < 0.8:
                k = rng.randint(max(1, last - 80), last)
                e.truncate(k)
                model.truncate(k)
            for _ in range(3):
                a = rng.randint(1, max(1, model.last_index()))
                b = a + rng.choice((0, 10, 50, 300))
                assert e.get_entries_range(a, b) == model.get_entries_range(a, b), (step, a, b)
