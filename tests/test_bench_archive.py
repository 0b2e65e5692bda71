"""The pure parts of `segwal bench --archive`: Litestream object names and LTX headers, and lag from polls."""

from __future__ import annotations

import pytest

from segwal.bench.archive_load import Commit, lags, quantile
from segwal.bench.peers.litestream import LtxObject, ltx_timestamp_ms, parse_ltx_name


def test_ltx_names_parse_level_and_txids_and_reject_others() -> None:
    key = "bench-litestream/ab/0009/0000000000000001-00000000000000ff.ltx"
    assert parse_ltx_name(key, 7) == LtxObject(9, 1, 255, 7, key)
    assert parse_ltx_name("p/0001/0000000000000002-0000000000000003.ltx", 1) == LtxObject(
        1, 2, 3, 1, "p/0001/0000000000000002-0000000000000003.ltx"
    )
    for bad in ("p/0000/x-y.ltx", "p/1/0000000000000001-0000000000000001.ltx", "p/0000/00-01.txt", "nothing"):
        assert parse_ltx_name(bad, 1) is None


def test_ltx_header_timestamp_is_bytes_32_to_40_of_an_ltx1_header() -> None:
    header = b"LTX1" + bytes(28) + (1_764_800_000_123).to_bytes(8, "big") + bytes(60)
    assert ltx_timestamp_ms(header) == 1_764_800_000_123
    with pytest.raises(ValueError, match="not an LTX header"):
        ltx_timestamp_ms(b"SQLite format 3\x00" + bytes(84))
    with pytest.raises(ValueError, match="not an LTX header"):
        ltx_timestamp_ms(b"LTX1")


def test_lag_is_the_first_poll_covering_the_commit_minus_its_return() -> None:
    commits = [Commit(10, 100.0), Commit(20, 100.5), Commit(30, 101.0), Commit(40, 102.0)]
    seen = [(100.2, 5), (100.9, 20), (101.1, 30)]  # 40 never seen
    xs, missing = lags(commits, seen)
    assert missing == 1
    assert xs == pytest.approx([0.9, 0.4, 0.1])
    # an archive that had the entries before the call returned: lag 0, never negative
    assert lags([Commit(5, 100.3)], seen) == ([0.0], 0)


def test_quantile_nearest_rank() -> None:
    xs = [float(i) for i in range(1, 101)]
    assert quantile(xs, 0.99) == 99.0 and quantile(xs, 0.5) in (50.0, 51.0) and quantile(xs, 1.0) == 100.0
    assert quantile([], 0.5) != quantile([], 0.5)  # NaN


def test_litestream_poller_counts_only_commits_returned_before_an_objects_timestamp() -> None:
    from segwal.bench.archive_load import LitestreamPoller

    class FakeLitestream:
        """Level-0 objects with given header timestamps (ms)."""

        def __init__(self) -> None:
            self.listed: list[tuple[LtxObject, int]] = []

        def objects(self, store: object, level: int | None = None) -> list[LtxObject]:
            return [o for o, _ in self.listed]

        def header_timestamp_ms(self, store: object, obj: LtxObject) -> int:
            return {o.key: ts for o, ts in self.listed}[obj.key]

    ls = FakeLitestream()
    commits = [Commit(10, 100.0), Commit(20, 100.5), Commit(30, 101.0)]
    poller = LitestreamPoller(ls, None, commits, poll_s=1.0)
    assert poller.probe() == -1  # nothing uploaded yet
    ls.listed.append((LtxObject(0, 2, 2, 50, "p/0000/a.ltx"), 100_300))
    assert poller.probe() == 10
    ls.listed.append((LtxObject(0, 3, 3, 50, "p/0000/b.ltx"), 100_500))  # at the very millisecond: not before it
    assert poller.probe() == 10
    ls.listed.append((LtxObject(0, 4, 4, 50, "p/0000/c.ltx"), 101_001))
    assert poller.probe() == 30
    assert poller.bytes_listed == 150
