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
