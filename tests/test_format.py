"""Framing as pure functions over bytes: round trips, every prefix, garbage."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segwal.errors import CorruptionError, FormatVersionError
from segwal.types import Entry
from segwal.wal.format import (
    FRAME_HEADER_SIZE,
    KIND_TRUNCATE,
    SEGMENT_HEADER_SIZE,
    EntryColumns,
    decode_frame_header,
    decode_segment_header,
    encode_entries_columns,
    encode_entries_frame,
    encode_frame,
    encode_segment_header,
    entry_check,
    find_valid_frames,
    scan_frames,
)
from segwal.wal.reader import read_entries, read_entry
from segwal.wal.segment import recover_tail


def build(batches: list[list[bytes]], *, first: int = 1, term: int = 1) -> tuple[bytes, list[int], list[np.ndarray]]:
    """A segment image holding one ENTRIES frame per batch; returns (bytes, frame ends, slot offsets)."""
    head = encode_segment_header(7, 1, 99, first)
    buf = bytearray(head)
    crc = int.from_bytes(head[60:], "little")
    ends, slots = [], []
    idx = first
    for payloads in batches:
        terms = [term] * len(payloads)
        fr = encode_entries_frame(idx, terms, payloads, offset=len(buf), durable=len(buf), prev_crc=crc)
        buf += b"".join(fr.buffers)
        assert len(buf) % 8 == 0
        crc = fr.header_crc
        ends.append(len(buf))
        assert fr.slot_offsets is not None
        slots.append(np.asarray(fr.slot_offsets, dtype=np.uint32))
        idx += len(payloads)
    return bytes(buf), ends, slots


def test_segment_header_round_trip() -> None:
    raw = encode_segment_header(1, 2, 3, 4)
    h = decode_segment_header(raw, "seg")
    assert h is not None and (h.engine_id, h.seq, h.uid, h.base_index) == (1, 2, 3, 4)
    assert decode_segment_header(bytes(64), "seg") is None


def test_segment_header_damage_and_future_version() -> None:
    raw = bytearray(encode_segment_header(1, 2, 3, 4))
    raw[20] ^= 1
    with pytest.raises(CorruptionError, match="checksum"):
        decode_segment_header(bytes(raw), "seg")
    from segwal.wal.format import SEGMENT_HEADER, crc32c

    future = SEGMENT_HEADER.pack(b"SWSG", 99, 0, 1, 2, 3, 4, 0)
    future = future[:60] + crc32c(future[:60]).to_bytes(4, "little")
    with pytest.raises(FormatVersionError, match="newer"):
        decode_segment_header(future, "seg")


def test_entries_round_trip_point_and_range() -> None:
    payloads = [b"", b"a", b"hello world", bytes(range(256))]
    buf, _, slots = build([payloads], first=10, term=3)
    for i, p in enumerate(payloads):
        assert read_entry(buf, int(slots[0][i]), 10 + i, "seg") == Entry(10 + i, 3, p)
    assert read_entries(buf, slots[0][1:], 11, "seg") == [Entry(11 + i, 3, p) for i, p in enumerate(payloads[1:])]


def test_point_read_detects_wrong_index_and_flipped_payload() -> None:
    buf, _, slots = build([[b"abc", b"def"]])
    with pytest.raises(CorruptionError) as ei:
        read_entry(buf, int(slots[0][0]), 2, "seg")  # slot of entry 1 read as entry 2
    assert ei.value.index == 2 and ei.value.offset == int(slots[0][0])
    bad = bytearray(buf)
    pos = buf.index(b"def")
    bad[pos] ^= 1
    with pytest.raises(CorruptionError, match="checksum"):
        read_entry(bytes(bad), int(slots[0][1]), 2, "seg")


def test_scan_stops_at_zeros_and_reports_chain() -> None:
    buf, ends, _ = build([[b"x"] * 3, [b"y"] * 2])
    image = buf + bytes(256)
    res = scan_frames(image, SEGMENT_HEADER_SIZE, int.from_bytes(buf[60:64], "little"))
    assert [h.first_index for _, h in res.frames] == [1, 4]
    assert res.end == ends[-1] and res.stop == "zero"


def test_truncate_frame_round_trip() -> None:
    fr = encode_frame(KIND_TRUNCATE, 42, b"", offset=64, durable=64, prev_crc=5)
    raw = b"".join(fr.buffers)
    h = decode_frame_header(raw, 0)
    assert h is not None and h.kind == KIND_TRUNCATE and h.first_index == 42 and h.frame_len == FRAME_HEADER_SIZE


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.binary(max_size=40), min_size=1, max_size=4), min_size=1, max_size=4), st.data())
def test_every_prefix_yields_a_prefix_of_frames(batches: list[list[bytes]], data: st.DataObject) -> None:
    """Cutting the image anywhere recovers exactly the whole frames before the cut."""
    buf, ends, _ = build(batches)
    seed = int.from_bytes(buf[60:64], "little")
    cut = data.draw(st.integers(SEGMENT_HEADER_SIZE, len(buf)))
    rec = recover_tail(buf[:cut], SEGMENT_HEADER_SIZE, seed)
    whole = [e for e in ends if e <= cut]
    assert len(rec.frames) == len(whole)
    assert rec.end == (whole[-1] if whole else SEGMENT_HEADER_SIZE)
    assert rec.torn == (cut != rec.end)
    assert not rec.corrupt


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=0, max_size=600))
def test_garbage_never_parses_and_never_raises(garbage: bytes) -> None:
    head = encode_segment_header(7, 1, 99, 1)
    rec = recover_tail(head + garbage, SEGMENT_HEADER_SIZE, int.from_bytes(head[60:], "little"))
    assert rec.frames == []


def test_damaged_middle_frame_with_later_claim_is_corruption() -> None:
    buf, ends, _ = build([[b"a" * 30], [b"b" * 30], [b"c" * 30]])
    bad = bytearray(buf)
    bad[ends[0] + FRAME_HEADER_SIZE + 30] ^= 0xFF  # inside the second frame's body
    rec = recover_tail(bytes(bad), SEGMENT_HEADER_SIZE, int.from_bytes(buf[60:64], "little"))
    assert rec.end == ends[0]
    assert rec.corrupt  # the third frame claims the second was durable
    assert [h.first_index for _, h in rec.later] == [3]


def test_find_valid_frames_locates_frames_anywhere() -> None:
    buf, ends, _ = build([[b"a"], [b"bb"], [b"ccc"]])
    found = find_valid_frames(buf, SEGMENT_HEADER_SIZE)
    assert [off for off, _ in found] == [SEGMENT_HEADER_SIZE, ends[0], ends[1]]


@settings(max_examples=80, deadline=None)
@given(
    payloads=st.integers(0, 150).flatmap(lambda n: st.lists(st.binary(max_size=40), min_size=n, max_size=n)),
    first=st.integers(1, 2**63),
    base_term=st.integers(0, 2**64 - 200),
    steps=st.data(),
    offset=st.integers(8, 1 << 20).map(lambda x: x & ~7),
    durable=st.integers(0, 2**32 - 1),
    prev_crc=st.integers(0, 2**32 - 1),
)
def test_columns_encoder_equals_encode_entries_frame_byte_for_byte(
    payloads: list[bytes], first: int, base_term: int, steps: st.DataObject, offset: int, durable: int, prev_crc: int
) -> None:
    # both sides of SMALL_BATCH (64): the struct path and the numpy path of encode_entries_frame
    n = len(payloads)
    bumps = steps.draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))
    terms = [base_term + sum(bumps[: i + 1]) for i in range(n)]
    want = encode_entries_frame(first, terms, payloads, offset=offset, durable=durable, prev_crc=prev_crc)
    checks = np.array([entry_check(p, first + i, t) for i, (t, p) in enumerate(zip(terms, payloads))], dtype=np.uint64)
    blob = memoryview(b"pre" + b"".join(payloads) + b"post")[3:-4]  # a view inside a larger object, as restore has
    cols = EntryColumns(
        np.array(terms, dtype=np.uint64), np.array([len(p) for p in payloads], dtype=np.uint32), checks, blob
    )
    got = encode_entries_columns(first, cols, offset=offset, durable=durable, prev_crc=prev_crc)
    assert b"".join(got.buffers) == b"".join(want.buffers)
    assert (got.frame_len, got.header_crc) == (want.frame_len, want.header_crc)
    assert want.slot_offsets is not None and got.slot_offsets is not None
    assert list(got.slot_offsets) == list(want.slot_offsets)
    assert len(cols) == n


def test_columns_encoder_refuses_columns_that_disagree() -> None:
    t = np.array([1, 1], dtype=np.uint64)
    ok = EntryColumns(t, np.array([1, 2], dtype=np.uint32), np.zeros(2, dtype=np.uint64), b"abc")
    assert encode_entries_columns(5, ok, offset=64, durable=64, prev_crc=0).frame_len == 40 + 48 + 8
    with pytest.raises(ValueError, match="lengths add up to 3"):
        encode_entries_columns(5, EntryColumns(t, ok.plens, ok.checks, b"abcd"), offset=64, durable=64, prev_crc=0)
    with pytest.raises(ValueError, match="2 terms, 1 lengths"):
        encode_entries_columns(5, EntryColumns(t, ok.plens[:1], ok.checks, b"a"), offset=64, durable=64, prev_crc=0)
    with pytest.raises(ValueError, match="4 GiB"):
        encode_entries_columns(5, ok, offset=(1 << 32) - 64, durable=0, prev_crc=0)
