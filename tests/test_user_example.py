"""The example of docs/crash-testing.md, run as a user would run it.

The block between the ``example`` markers is copied verbatim into the doc;
``test_doc_shows_this_example`` keeps the two from drifting apart.
"""

from pathlib import Path

# --- example start
from segwal.engine import Entry, HardState, LogId


def test_my_node_survives_every_crash(crash_fs):
    with crash_fs.engine(segment_size=1024) as wal:    # a WalEngine on a recording FS
        wal.save_hard_state(HardState(1, None, 0))
        wal.persist_entries([Entry(i, 1, b"cmd%d" % i) for i in range(1, 9)])
        wal.save_hard_state(HardState(1, None, 5))     # commit 5
        wal.truncate(7)                                # a new leader overrides 7..8
        wal.persist_entries([Entry(7, 2, b"new")])
        wal.purge_logs(LogId(1, 3))                    # after a snapshot at 3
        wal.apply([(b"last", b"cmd5")], LogId(1, 5))
    report = crash_fs.check_all()      # every crash point, every generator
    assert report.explored > 50        # check_all fails the test on a bad state
# --- example end


def test_doc_shows_this_example() -> None:
    here = Path(__file__).read_text()
    example = here.split("# --- example start\n")[1].split("# --- example end")[0]
    doc = (Path(__file__).parents[1] / "docs" / "crash-testing.md").read_text()
    assert example.strip() in doc
    assert len(example.strip().splitlines()) < 20


def test_doc_faultyfs_example_runs(tmp_path: Path) -> None:
    import re

    doc = (Path(__file__).parents[1] / "docs" / "crash-testing.md").read_text()
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", doc, re.DOTALL) if "FaultyFS(OsFileSystem())" in b]
    exec(compile(block, "docs/crash-testing.md", "exec"), {"path": str(tmp_path / "db")})  # noqa: S102
