"""Issue 10's three findings, one focused test each: damage after a clean close that
the engine accepted silently.  Each must raise ``CorruptionError`` naming the damaged
file, from open or from the first read that needs it (they fail on the code before
the fix).

1. a key/value file deleted: ``get`` returned ``None`` for every key, ``last_applied`` ``None``;
2. a key/value file truncated, or a range of it zeroed: cut as a torn tail although a
   clean close had recorded where it ends;
3. ``HARDSTATE`` deleted while the log and the key/value store hold data:
   ``load_hard_state()`` returned ``None`` (a node could vote twice in one term).

And what the damaged-directory fuzzer found besides: a sealed key/value file cut at a
frame boundary, a last one cut inside its header (taken for a torn creation and
removed), and a snapshot whose chunk count was rewritten (a plain ``ValueError``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from damage_oracle import frames

from segwal.engine import CorruptionError, Entry, HardState, LogId, VotedFor, WalEngine

SEG = 1024
VALUES = {b"k%02d" % i: bytes([65 + i]) * (40 + 7 * i) for i in range(24)}


def build(path: Path) -> list[Path]:
    """A cleanly closed engine: 40 entries, hard state committed at 30, key/value data in
    several files, last applied (1, 30).  Returns the key/value files in order."""
    with WalEngine(path, segment_size=SEG) as e:
        e.persist_entries([Entry(i, 1, b"entry %d" % i * 5) for i in range(1, 41)])
        e.save_hard_state(HardState(1, VotedFor(2, 1), 30))
        items = list(VALUES.items())
        for n in range(0, len(items), 3):
            e.apply(items[n:n + 3], LogId(1, 2 + n))
        e.apply([], LogId(1, 30))
    files = sorted((path / "kv").glob("kv-*.log"))
    assert len(files) >= 3
    return files


def open_and_read_all(path: Path) -> None:
    """Open and read everything; returns only if everything is exactly as written."""
    with WalEngine(path, segment_size=SEG) as e:
        assert e.get_entries_range(1, 40) == [Entry(i, 1, b"entry %d" % i * 5) for i in range(1, 41)]
        assert e.load_hard_state() == HardState(1, VotedFor(2, 1), 30)
        assert {k: e.get(k) for k in VALUES} == VALUES
        assert e.last_applied() == LogId(1, 30)


def test_the_undamaged_directory_reads_back(tmp_path: Path) -> None:
    build(tmp_path / "e")
    open_and_read_all(tmp_path / "e")


def test_deleted_key_value_file_is_reported(tmp_path: Path) -> None:
    """The last file: a missing first or middle file already shows as a gap in the sequence."""
    gone = build(tmp_path / "e")[-1]
    gone.unlink()
    with pytest.raises(CorruptionError) as ei:
        open_and_read_all(tmp_path / "e")
    assert gone.name in str(ei.value)


@pytest.mark.parametrize(
    "damage", ["truncate-last-at-frame", "zero-last-to-end", "truncate-sealed-at-frame", "truncate-last-into-header"]
)
def test_truncated_or_zeroed_key_value_file_is_reported(tmp_path: Path, damage: str) -> None:
    files = build(tmp_path / "e")
    f = files[0] if damage == "truncate-sealed-at-frame" else files[-1]
    data = f.read_bytes()
    fr = frames(data)
    assert len(fr) >= 2
    if damage == "zero-last-to-end":  # every frame after the first one, and the rest of the file
        f.write_bytes(data[: fr[1].start] + bytes(len(data) - fr[1].start))
    elif damage == "truncate-last-into-header":  # was taken for a rollover torn before its header
        f.write_bytes(data[:10])
    else:  # the end of the first frame: what is left is a clean chain of whole frames
        f.write_bytes(data[: fr[0].end])
    with pytest.raises(CorruptionError) as ei:
        open_and_read_all(tmp_path / "e")
    assert ei.value.path == str(f) and ei.value.offset is not None, ei.value


def test_snapshot_with_a_crafted_chunk_count_is_refused_as_corrupt(tmp_path: Path) -> None:
    """Found by the fuzzer: a chunk's pair count (no checksum covers it) larger than its body
    made ``install_snapshot`` raise numpy's plain ``ValueError``, not ``CorruptionError``."""
    build(tmp_path / "e")
    snap = tmp_path / "snap"
    with WalEngine(tmp_path / "e", segment_size=SEG) as e:
        e.snapshot(snap)
    data = bytearray(snap.read_bytes())
    data[48:52] = (0xFFFFFFFF).to_bytes(4, "little")  # the first chunk's pair count
    snap.write_bytes(bytes(data))
    with WalEngine(tmp_path / "e", segment_size=SEG) as e:
        with pytest.raises(CorruptionError) as ei:
            e.install_snapshot(snap)
        assert ei.value.path == str(snap)
    open_and_read_all(tmp_path / "e")  # nothing changed


def test_deleted_hard_state_is_reported(tmp_path: Path) -> None:
    build(tmp_path / "e")
    (tmp_path / "e" / "HARDSTATE").unlink()
    with pytest.raises(CorruptionError) as ei:
        open_and_read_all(tmp_path / "e")
    assert "HARDSTATE" in str(ei.value)
