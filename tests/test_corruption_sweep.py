"""Silent corruption, one fault per run: the API and ``segwal verify`` agree.

Table-driven (CORDS style): each case damages one copy of the same small
engine directory (two sealed segments, a tail with eight batches, a hard state
with commit index 80, two key/value files) and states what must happen:

* the API raises :class:`CorruptionError` naming the file, the offset and the
  first affected log index (``None`` where no log entry is involved), either
  at open (``api="open"``) or, for sealed segments that open does not read, on
  the first read of the damaged entry (``api="read"``), and never returns
  wrong bytes for any other entry;
* ``segwal verify DIR`` exits 2 and prints a finding naming file, offset and
  index;
* nothing is truncated or deleted on the engine's own initiative: the damaged
  file and every segment are byte-identical afterwards (after a failed open,
  every file is).

Recoverable kinds (a torn tail, an index failing its checksum, a stray
temporary file) make ``verify`` exit 1 and are repaired by a plain open.
``segwal repair`` refuses corruption without ``--force`` and, with it, names
the lost indexes.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from segwal.cli import main
from segwal.engine import CorruptionError, Entry, HardState, LogId, VotedFor, WalEngine
from segwal.engine.hardstate import encode_hard_state
from segwal.index.format import (
    OFFSETS_START,
    SLOT_B_OFFSET,
    decode_index_header,
    encode_index_header,
    offsets_hash,
)
from segwal.wal.format import SEGMENT_HEADER_SIZE, decode_frame_header

SEG = 4096
SEG1, SEG2, SEG3 = "0000000000000001.wal", "0000000000000002.wal", "0000000000000003.wal"
IDX1 = "0000000000000001.idx"
KV1 = "kv/kv-0000000000000001-0000000000000001.log"
KV2 = "kv/kv-0000000000000001-0000000000000002.log"
KEYS = [b"key%d" % j for j in range(8)]
LAST = 102
# Every batch is 3 entries of 60 bytes: a 296-byte frame.  In a segment, frame k
# starts at 64 + 296*k: header (40 bytes), 3 slots (24 bytes each), payloads.
FRAME2 = 64 + 296  # second frame: entries 4..6 in segment 1, 82..84 in the tail


def batch(k: int) -> list[Entry]:
    return [Entry(i, 1, bytes([i % 251]) * 60) for i in range(1 + 3 * k, 4 + 3 * k)]


@dataclass(frozen=True)
class World:
    base: Path  # the engine directory as a crash left it (no clean close)
    stale: Path  # segment 1 copied while it held only its first batch
    other: Path  # another engine directory with the same layout
    entries: tuple[Entry, ...]
    kv: dict[bytes, bytes]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("sweep")
    src = root / "src"
    e = WalEngine(src, segment_size=SEG)
    e.persist_entries(batch(0))
    shutil.copy(src / SEG1, root / "stale.wal")
    for k in range(1, 34):
        e.persist_entries(batch(k))
    kv = {b"key%d" % j: b"value%d" % j * 100 for j in range(8)}
    for j, (k, v) in enumerate(kv.items()):
        e.apply([(k, v)], LogId(1, 3 + j))
    e.save_hard_state(HardState(1, VotedFor(2, 1), 80))
    shutil.copytree(src, root / "base")
    (root / "base" / "LOCK").unlink()
    entries = tuple(e.get_entries_range(1, LAST))
    e.close()
    with WalEngine(root / "other", segment_size=SEG) as o:
        for k in range(34):
            o.persist_entries(batch(k))
    w = World(root / "base", root / "stale.wal", root / "other", entries, kv)
    assert [p.name for p in sorted(w.base.glob("*.wal"))] == [SEG1, SEG2, SEG3]
    assert (w.base / KV1).exists() and (w.base / KV2).exists()
    return w


# -- corruptions ------------------------------------------------------------------------

Corrupt = Callable[[Path, World], None]


def flip(rel: str, off: int, bit: int = 0x10) -> Corrupt:
    def f(d: Path, w: World) -> None:
        p = d / rel
        b = bytearray(p.read_bytes())
        b[off] ^= bit
        p.write_bytes(bytes(b))

    return f


def zero_sector(rel: str, off: int = 512) -> Corrupt:
    def f(d: Path, w: World) -> None:
        p = d / rel
        b = bytearray(p.read_bytes())
        n = len(b[off : off + 512])
        b[off : off + n] = bytes(n)
        p.write_bytes(bytes(b))

    return f


def both(*fs: Corrupt) -> Corrupt:
    def f(d: Path, w: World) -> None:
        for g in fs:
            g(d, w)

    return f


def remove(rel: str) -> Corrupt:
    return lambda d, w: (d / rel).unlink()


def foreign(rel: str) -> Corrupt:
    return lambda d, w: shutil.copy(w.other / rel, d / rel) and None


def stale_segment(d: Path, w: World) -> None:
    shutil.copy(w.stale, d / SEG1)


def index_disagrees(d: Path, w: World) -> None:
    """Swap the offsets of entries 5 and 6 and re-hash, so the index checksum is valid."""
    p = d / IDX1
    b = bytearray(p.read_bytes())
    o5 = OFFSETS_START + 4 * 4
    b[o5 : o5 + 4], b[o5 + 4 : o5 + 8] = b[o5 + 4 : o5 + 8], b[o5 : o5 + 4]
    rehashed = 0
    for slot in (0, SLOT_B_OFFSET):
        h = decode_index_header(b, str(p), slot)
        if h is not None:
            data = bytes(b[OFFSETS_START : OFFSETS_START + 4 * h.count])
            b[slot : slot + 80] = encode_index_header(replace(h, data_hash=offsets_hash(data)))
            rehashed += 1
    assert rehashed
    p.write_bytes(bytes(b))


def commit_beyond_last(d: Path, w: World) -> None:
    (d / "HARDSTATE").write_bytes(encode_hard_state(HardState(1, VotedFor(2, 1), 500)))


def frames_end(path: Path) -> int:
    data = path.read_bytes()
    off = SEGMENT_HEADER_SIZE
    while (h := decode_frame_header(data, off)) is not None:
        off += h.frame_len
    return off


def torn_tail(d: Path, w: World) -> None:
    p = d / SEG3
    data = p.read_bytes()
    end = frames_end(p)
    p.write_bytes(data[:end] + bytes(range(7, 207)) + data[end + 200 :])


@dataclass(frozen=True)
class Case:
    """One corruption and its documented result.

    ``file``/``offset``/``index``: what CorruptionError names.  ``vfile``/
    ``voffset``/``vindex``: what verify's finding names (default: the same).
    ``voffset=-1`` means "some offset" (not checked).  ``verify_bug``: a
    known engine bug that makes verify fail on this case (xfail).
    """

    name: str
    corrupt: Corrupt
    api: str
    file: str
    offset: int | None
    index: int | None
    vfile: str | None = None
    voffset: int | None | str = "same"
    vindex: int | None | str = "same"
    verify_bug: str | None = None



CASES = [
    Case("sealed-payload-bitflip", flip(SEG1, FRAME2 + 40 + 72 + 70), "read", SEG1, 424, 5),
    Case("sealed-payload-zeroed-sector", zero_sector(SEG1), "read", SEG1, 400, 4,
         voffset=-1),
    Case("sealed-slot-table-bitflip", flip(SEG1, FRAME2 + 40 + 24), "read", SEG1, 424, 5),
    Case("sealed-frame-header-bitflip", both(flip(SEG1, FRAME2 + 8), remove(IDX1)), "read", SEG1, FRAME2, 4,
         ),
    Case("tail-below-durable-claim-bitflip", flip(SEG3, FRAME2 + 40 + 72 + 5), "open", SEG3, FRAME2, 82),
    Case("tail-below-durable-claim-zeroed-sector", zero_sector(SEG3), "open", SEG3, FRAME2, 82),
    Case("index-valid-checksum-wrong-offsets", index_disagrees, "read", SEG1, 448, 5,
         vfile=IDX1, voffset=OFFSETS_START + 16),
    Case("hard-state-bitflip", flip("HARDSTATE", 20), "open", "HARDSTATE", 40, None),
    Case("hard-state-zeroed-sector", zero_sector("HARDSTATE", 0), "open", "HARDSTATE", 0, None),
    Case("kv-sealed-file-bitflip", flip(KV1, 300), "open", KV1, 64, None),
    Case("kv-sealed-file-zeroed-sector", zero_sector(KV1), "open", KV1, 64, None),
    Case("kv-active-file-bitflip", flip(KV2, 300), "open", KV2, 64, None),
    Case("manifest-bitflip", flip("MANIFEST", 50), "open", "MANIFEST", 216, None),  # offset of the CRC: 72 + 3 segments x 32 + 2 kv files x 24,
    Case("manifest-zeroed-sector", zero_sector("MANIFEST", 0), "open", "MANIFEST", 0, None),
    Case("missing-middle-segment", remove(SEG2), "open", SEG2, None, 40),
    Case("foreign-middle-segment", foreign(SEG2), "read", SEG2, 8, 40, voffset=0),
    Case("foreign-tail-segment", foreign(SEG3), "open", SEG3, 8, 79, voffset=0),
    Case("stale-segment", stale_segment, "read", SEG1, 400, 4, voffset=-1),
    Case("commit-index-beyond-last-entry", commit_beyond_last, "open", "HARDSTATE", 32, LAST + 1),
]


def files_of(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file() and p.name != "LOCK"}


def damaged_copy(w: World, case_corrupt: Corrupt, dest: Path) -> Path:
    shutil.copytree(w.base, dest)
    case_corrupt(dest, w)
    return dest


def read_everything(e: WalEngine, w: World) -> None:
    """Point-read every entry in order, then range-read, then every key: the first
    damaged one raises; every other one must come back intact."""
    for i in range(e.first_index(), e.last_index() + 1):
        got = e.entry(i)
        assert got == w.entries[i - 1], f"entry {i} silently wrong: {got}"
    e.get_entries_range(1, LAST)
    for k, v in w.kv.items():
        assert e.get(k) == v


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_api_raises_corruption_error_and_truncates_nothing(case: Case, world: World, tmp_path: Path) -> None:
    d = damaged_copy(world, case.corrupt, tmp_path / "d")
    before = files_of(d)
    with pytest.raises(CorruptionError) as ei:
        if case.api == "open":
            WalEngine(d, segment_size=SEG).close()
        else:
            with WalEngine(d, segment_size=SEG) as e:
                read_everything(e, world)
    err = ei.value
    assert (Path(err.path), err.offset, err.index) == (d / case.file, case.offset, case.index), str(err)
    assert str(d / case.file) in str(err)
    after = files_of(d)
    if case.api == "open":
        assert after == before, "a failed open changed files"
    else:
        # The engine opened and closed (a clean close rewrites the manifest and
        # checkpoints indexes) but cut or removed no segment and left the
        # damaged file as it was.
        for name, data in before.items():
            if name.endswith(".wal") or name == case.file:
                assert after.get(name) == data, f"{name} changed"
    if case.api == "read":
        with WalEngine(d, segment_size=SEG) as e, pytest.raises(CorruptionError):
            e.get_entries_range(1, LAST)  # a range read over the damage fails too


def _verify_params() -> list[object]:
    out: list[object] = []
    for c in CASES:
        marks = [pytest.mark.xfail(strict=True, reason=c.verify_bug)] if c.verify_bug else []
        out.append(pytest.param(c, id=c.name, marks=marks))
    return out


@pytest.mark.parametrize("case", _verify_params())
def test_verify_reports_corruption_with_file_offset_and_index(
    case: Case, world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = damaged_copy(world, case.corrupt, tmp_path / "d")
    before = files_of(d)
    status = main(["verify", str(d)])
    out = capsys.readouterr().out
    assert status == 2, out
    vfile = case.vfile or case.file
    voffset = case.offset if case.voffset == "same" else case.voffset
    vindex = case.index if case.vindex == "same" else case.vindex
    lines = [ln for ln in out.splitlines() if ln.startswith("corruption: ") and f"{d / vfile} " in ln + " "]
    assert lines, f"no corruption finding names {vfile}:\n{out}"

    def names_it(ln: str) -> bool:
        at = ln.split(": ", 2)[1]
        if voffset == -1:
            ok_off = " @" in at
        elif voffset is None:
            ok_off = " @" not in at
        else:
            ok_off = f"{d / vfile} @{voffset}" in ln
        ok_idx = (f"(log index {vindex})" in ln) if vindex is not None else "(log index" not in at
        return ok_off and ok_idx

    assert any(names_it(ln) for ln in lines), f"expected @{voffset} (log index {vindex}) in:\n{out}"
    assert files_of(d) == before, "verify changed files"


# -- recoverable findings ------------------------------------------------------------

RECOVERABLE = {
    "torn-tail": (torn_tail, SEG3),
    "index-checksum-mismatch": (flip(IDX1, OFFSETS_START + 10), IDX1),
    "index-missing": (remove(IDX1), IDX1),
    "stray-tmp-file": (lambda d, w: (d / "MANIFEST.tmp").write_bytes(b"half a manifest") and None, "MANIFEST.tmp"),
}


@pytest.mark.parametrize("kind", list(RECOVERABLE))
def test_recoverable_findings_exit_1_and_open_recovers(
    kind: str, world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corrupt, rel = RECOVERABLE[kind]
    d = damaged_copy(world, corrupt, tmp_path / "d")
    assert main(["verify", str(d)]) == 1
    out = capsys.readouterr().out
    findings = [ln for ln in out.splitlines() if ln.startswith(("recoverable: ", "corruption: "))]
    assert findings and all(ln.startswith("recoverable: ") for ln in findings), out
    assert any(str(d / rel) in ln for ln in findings), out
    with WalEngine(d, segment_size=SEG) as e:
        assert e.last_index() == LAST
        read_everything(e, world)
        assert e.load_hard_state() == HardState(1, VotedFor(2, 1), 80)
    assert main(["verify", str(d)]) == 0, capsys.readouterr().out


def test_clean_base_verifies_clean(world: World, tmp_path: Path) -> None:
    d = damaged_copy(world, lambda d, w: None, tmp_path / "d")
    assert main(["verify", str(d)]) == 0


# -- segwal repair -----------------------------------------------------------------------


def test_repair_refuses_corruption_without_force(world: World, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    d = damaged_copy(world, CASES[0].corrupt, tmp_path / "d")
    before = files_of(d)
    assert main(["repair", str(d)]) == 2
    out = capsys.readouterr().out
    assert "refusing" in out and "--force" in out and "from 5 on" in out
    assert files_of(d) == before


def test_repair_force_cuts_and_names_the_lost_indexes(world: World, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    d = damaged_copy(world, CASES[0].corrupt, tmp_path / "d")
    assert main(["repair", "--force", str(d)]) == 0
    out = capsys.readouterr().out
    assert f"entries 5..{LAST} were lost" in out
    assert "commit index from 80 to 4" in out
    with WalEngine(d, segment_size=SEG) as e:
        assert e.last_index() == 4 and e.get_entries_range(1, 4) == list(world.entries[:4])
        assert e.load_hard_state() == HardState(1, VotedFor(2, 1), 4)
    # The cut entries' damaged batch stays in the old segment: at most a recoverable note.
    assert main(["verify", str(d)]) in (0, 1)


def test_repair_cuts_a_torn_tail_keeping_a_broken_copy(world: World, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    d = damaged_copy(world, torn_tail, tmp_path / "d")
    torn = (d / SEG3).read_bytes()[frames_end(d / SEG3):].rstrip(b"\0")
    assert main(["repair", str(d)]) == 0
    out = capsys.readouterr().out
    assert "repaired" in out
    assert (d / (SEG3 + ".broken")).read_bytes() == torn
    with WalEngine(d, segment_size=SEG) as e:
        assert e.last_index() == LAST
    assert main(["verify", str(d)]) in (0, 1)  # the .broken copy is not a log file
