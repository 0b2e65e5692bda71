"""`segwal repair --force` on a damaged key/value store and on a lost hard state.

A damaged store keeps the records before the damage, rolls ``last_applied``
back to the last one kept, and says which log entries to apply again; when
those are purged it empties the store and says a snapshot must be installed.
A lost hard state is never invented.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from segwal.cli import main
from segwal.engine import CorruptionError, Entry, HardState, LogId, VotedFor, WalEngine
from segwal.tools.repair import repair
from segwal.tools.verify import verify

SEG = 256  # each apply below overflows a key/value file: one file per apply


def build(path: Path, *, purge_to: int | None = None) -> None:
    with WalEngine(str(path), segment_size=SEG) as eng:
        eng.persist_entries([Entry(i, 1, b"e%d" % i) for i in range(1, 31)])
        eng.save_hard_state(HardState(1, VotedFor(1, 1), 30))
        for n, upto in enumerate((5, 10, 15)):
            eng.apply([(b"k%d-%d" % (n, j), b"v" * 100) for j in range(3)], applied=LogId(1, upto))
        if purge_to is not None:
            eng.purge_logs(LogId(1, purge_to))


def last_kv_file(path: Path) -> Path:
    return sorted((path / "kv").glob("kv-*.log"))[-1]


def damage_last_apply(path: Path) -> None:
    """Cut the key/value file holding the third apply (applied 15) short: acknowledged data gone."""
    files = sorted((path / "kv").glob("kv-*.log"))
    target = next(f for f in reversed(files) if b"k2-0" in f.read_bytes())
    data = target.read_bytes()
    target.write_bytes(data[: data.index(b"k2-0") - 40])


def test_damaged_store_is_rolled_back_and_says_what_to_apply_again(tmp_path: Path) -> None:
    d = tmp_path / "n"
    build(d)
    damage_last_apply(d)
    with pytest.raises(CorruptionError):
        WalEngine(str(d))
    assert verify(str(d)).exit_status == 2
    refused = repair(str(d))
    assert refused.exit_status == 2 and "without --force" in refused.lines[-1]
    result = repair(str(d), force=True)
    text = "\n".join(result.lines)
    assert result.exit_status == 0, text
    assert "rolled the key/value store back to last_applied LogId(term=1, index=10)" in text
    assert "apply log entries 11.. again" in text
    assert verify(str(d)).exit_status == 0
    with WalEngine(str(d)) as eng:
        assert eng.last_applied() == LogId(1, 10)
        assert eng.get(b"k1-2") == b"v" * 100 and eng.get(b"k2-0") is None
        assert eng.entry(11) == Entry(11, 1, b"e11")  # what must be applied again is there
        assert eng.load_hard_state() == HardState(1, VotedFor(1, 1), 30)
    assert list((d / "kv").glob("*.broken"))  # the evidence is kept


def test_damaged_store_whose_entries_are_purged_is_emptied(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "n"
    build(d, purge_to=20)
    damage_last_apply(d)
    assert main(["repair", "--force", str(d)]) == 0
    out = capsys.readouterr().out
    assert "purged" in out and "install a snapshot" in out
    with WalEngine(str(d)) as eng:
        assert eng.last_applied() is None
        assert eng.get(b"k0-0") is None and eng.get(b"k1-0") is None
        assert eng.first_index() == 21


def test_a_lost_hard_state_is_never_invented(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "n"
    build(d)
    os.unlink(d / "HARDSTATE")
    with pytest.raises(CorruptionError, match="hard state is missing"):
        WalEngine(str(d))
    assert main(["verify", str(d)]) == 2
    assert main(["repair", "--force", str(d)]) == 2
    out = capsys.readouterr().out
    assert "never invented" in out and "new member" in out
    assert not (d / "HARDSTATE").exists()
