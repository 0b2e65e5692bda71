"""The one-entry append path writes exactly what the batch path writes, and falls back to it whenever it must."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segwal.engine import Entry, LogId, WalEngine
from segwal.wal.format import (
    SEGMENT_HEADER_SIZE,
    decode_segment_header,
    encode_entries_frame,
    encode_single_entry_frame,
    scan_frames,
)

U64 = st.integers(0, (1 << 64) - 1)


@settings(max_examples=200)
@given(index=st.integers(1, (1 << 64) - 2), term=U64, payload=st.binary(max_size=64),
       offset=st.integers(64, 1 << 20).map(lambda x: x & ~7), durable=st.integers(0, 1 << 20),
       prev=st.integers(0, (1 << 32) - 1))
def test_the_single_entry_frame_is_the_batch_frame(index: int, term: int, payload: bytes, offset: int,
                                                   durable: int, prev: int) -> None:
    one = encode_single_entry_frame(index, term, payload, offset=offset, durable=durable, prev_crc=prev)
    batch = encode_entries_frame(index, [term], [payload], offset=offset, durable=durable, prev_crc=prev)
    assert b"".join(one.buffers) == b"".join(batch.buffers)
    assert (one.frame_len, one.header_crc, list(one.slot_offsets)) == (  # type: ignore[arg-type]
        batch.frame_len, batch.header_crc, list(batch.slot_offsets))  # type: ignore[arg-type]


def frames(path: Path) -> list[tuple[int, int, int, int, int, bytes]]:
    """Every frame of a segment: offset, kind, first index, count, durable claim and body bytes."""
    buf = path.read_bytes()
    h = decode_segment_header(buf[:SEGMENT_HEADER_SIZE], str(path))
    assert h is not None
    res = scan_frames(buf, SEGMENT_HEADER_SIZE, h.crc)
    return [(off, fh.kind, fh.first_index, fh.count, fh.durable, buf[off + 40 : off + fh.frame_len])
            for off, fh in res.frames]


def test_single_appends_leave_the_same_files_as_batches(tmp_path: Path) -> None:
    entries = [Entry(i, 1 + i // 50, b"payload %d" % i * (i % 7)) for i in range(1, 301)]
    with WalEngine(str(tmp_path / "one"), segment_size=2048, preallocate=False) as a:
        for e in entries:
            a.persist_entries([e])
    with WalEngine(str(tmp_path / "batch"), segment_size=2048, preallocate=False) as b:
        for e in entries:
            b.persist_entries((e,))  # a tuple: the general path
    for p in sorted((tmp_path / "one").glob("*.wal")):
        assert frames(p) == frames(tmp_path / "batch" / p.name), p.name  # ids and chain values differ per directory
    with WalEngine(str(tmp_path / "one")) as a:
        assert a.get_entries_range(1, 300) == entries


def test_every_other_case_takes_the_checked_path(tmp_path: Path) -> None:
    with WalEngine(str(tmp_path / "e"), segment_size=1024) as eng:
        eng.persist_entries([Entry(5, 2, b"a")])  # empty log: any first index
        eng.persist_entries([Entry(6, 2, b"b")])
        with pytest.raises(ValueError, match="term 1 is lower"):
            eng.persist_entries([Entry(7, 1, b"c")])
        with pytest.raises(ValueError, match="entry 9"):
            eng.persist_entries([Entry(9, 2, b"gap")])
        with pytest.raises(TypeError):
            eng.persist_entries([Entry(7, 2, "text")])  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            eng.persist_entries([Entry(0, 2, b"zero")])
        eng.persist_entries([Entry(6, 3, b"overwrite")])  # a conflict: replaces 6
        assert eng.last_index() == 6 and eng.entry(6) == Entry(6, 3, b"overwrite")
        eng.purge_logs(LogId(3, 6))
        eng.persist_entries([Entry(7, 3, b"after purge")])
        assert (eng.first_index(), eng.last_index()) == (7, 7)
    with WalEngine(str(tmp_path / "e"), readonly=True) as ro:
        with pytest.raises(PermissionError):
            ro.persist_entries([Entry(8, 3, b"x")])
