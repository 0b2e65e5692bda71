"""The archive against the session's SeaweedFS S3 server and a local store (obstore LocalStore): the archiver thread and the ``segwal archive run`` sidecar beside a node that rotates, overwrites and purges; SIGKILL of the sidecar mid-run, resume; the node killed, then restore; re-seeding after a restore.

Each test uses its own prefix of the shared bucket.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from segwal.engine import WalEngine
from segwal.storage.archive import Archiver, read_archived_position, restore
from segwal.storage.archive.catalog import read_catalog
from segwal.storage.archive.verify import verify_archive
from segwal.storage.objectstore.seam import as_seam
from segwal.types import Entry, HardState, LogId

pytest.importorskip("obstore")

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from archive_node_child import payload

ROOT = HERE.parent


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _store(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if kind == "s3":
        return request.getfixturevalue("seaweedfs").store()
    from obstore.store import LocalStore

    return LocalStore(str(tmp_path / "bucket"), mkdir=True)


@pytest.mark.parametrize("kind", ["s3", "local"])
def test_thread_archiver_beside_a_rotating_purging_node(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    store = _store(kind, request, tmp_path)
    prefix = f"thread-{uuid.uuid4().hex[:8]}"
    node = WalEngine(tmp_path / "node", segment_size=16 << 10)
    model: dict[int, Entry] = {}  # every index's newest version, purged or not: what the archive must hold
    arch = Archiver(node, store, prefix, tail_interval=0.05, max_held_bytes=64 << 20, kv_snapshot_interval=None)
    with arch:
        term, last = 1, 0
        for n in range(1, 301):
            if n % 50 == 0:  # a conflict overwrite of the last 7 entries
                term += 1
                last -= 7
                for i in list(model):
                    if i > last:
                        del model[i]
            batch = [Entry(i, term, payload(i, term)) for i in range(last + 1, last + 11)]
            node.persist_entries(batch)
            model.update((e.index, e) for e in batch)
            last += 10
            if n % 20 == 0:
                node.purge_logs(LogId(node.term_of(last - 200) or term, last - 200))
            if n % 60 == 0:
                time.sleep(0.1)  # let a pass or two run against the node as it is
        node.save_hard_state(HardState(term, None, last - 3))
        shipped = arch.sync_now()
    st = arch.status()
    assert shipped == last and st.gaps == () and st.held_bytes == 0
    assert st.bytes_uploaded < 1.3 * st.bytes_written_by_node + 64 * st.objects_uploaded + 4096
    assert node.first_index() > 2000  # the node purged most of it meanwhile
    node.close()
    assert read_archived_position(store, prefix) == last
    res = restore(store, prefix, tmp_path / "r")
    with WalEngine(tmp_path / "r", readonly=True) as r:
        assert r.get_entries_range(1, last) == [model[i] for i in range(1, last + 1)]
        assert r.load_hard_state() == HardState(term, None, last - 3)
    assert res.last_index == last
    # after a restore, an archiver on the restored node re-seeds its position from the bucket
    before = {o.name for o in as_seam(store).list(prefix + "/log/")}
    with WalEngine(tmp_path / "r") as again, Archiver(again, store, prefix, kv_snapshot_interval=None) as a2:
        assert a2.sync_now() == last
        assert {o.name for o in as_seam(store).list(prefix + "/log/")} == before  # nothing shipped twice
        again.persist_entries([Entry(last + 1, term, payload(last + 1, term))])
        assert a2.sync_now() == last + 1


def _sidecar(options: dict[str, object], node_dir: Path, url: str) -> subprocess.Popen[str]:
    opts = [a for k, v in options.items() for a in ("--store-option", f"{k}={v}")]
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "segwal",
            "archive",
            "run",
            str(node_dir),
            url,
            "--tail-interval",
            "0.1",
            "--kv-snapshot-interval",
            "0",
            *opts,
        ],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=_env(),
        cwd=str(ROOT),
    )


class _Lines:
    """Status lines of a sidecar, read by a thread: ``archived X of Y ...``."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.reported: list[int] = []
        self.other: list[str] = []
        self.t = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self.t.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.startswith("archived "):
                self.reported.append(int(line.split()[1]))
            else:
                self.other.append(line)

    def wait(self, n: int, timeout: float = 60.0) -> int:
        deadline = time.monotonic() + timeout
        start = len(self.reported)
        while len(self.reported) < start + n:
            assert time.monotonic() < deadline, f"sidecar made no progress: {self.other[-5:]}"
            time.sleep(0.02)
        return self.reported[-1]


@pytest.mark.parametrize("kind", ["s3", "local"])
def test_sidecar_killed_mid_upload_resumes_and_node_killed_then_restore(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    node_dir = tmp_path / "node"
    if kind == "s3":
        server = request.getfixturevalue("seaweedfs")
        url, options = f"s3://{server.bucket}/side-{uuid.uuid4().hex[:8]}", server.url_options()
        store, prefix = server.store(), url.split("/", 3)[3]
    else:
        from obstore.store import LocalStore

        url, options = f"file://{tmp_path / 'bucket'}", {}
        store, prefix = LocalStore(str(tmp_path / "bucket"), mkdir=True), ""
    node = subprocess.Popen(
        [sys.executable, str(HERE / "archive_node_child.py"), str(node_dir)],
        stdout=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        assert node.stdout is not None and node.stdout.readline().startswith("last ")
        side = _sidecar(options, node_dir, url)
        lines = _Lines(side)
        lines.wait(4)
        side.send_signal(signal.SIGKILL)  # while the node writes: mid-upload, or between uploads
        side.wait()
        side = _sidecar(options, node_dir, url)
        lines = _Lines(side)
        lines.wait(3)
        while int(node.stdout.readline().split()[1]) < 2500:  # rotations, overwrites and purges under way
            pass
    finally:
        node.send_signal(signal.SIGKILL)
        node.wait()
    try:
        lines.wait(3)  # passes after the node died: the archive catches up with its final log
        last_report = lines.reported[-1]
    finally:
        side.send_signal(signal.SIGKILL)
        side.wait()
    rep = verify_archive(store, prefix)
    assert rep.exit_status in (0, 1), rep.findings  # no damage, no doubled object after the kill
    res = restore(store, prefix, tmp_path / "r")
    assert res.last_index >= last_report  # everything the archiver reported is restorable
    with WalEngine(node_dir, readonly=True) as n, WalEngine(tmp_path / "r", readonly=True) as r:
        final = n.last_index()
        assert n.first_index() > 1, "the node purged while the sidecar ran"
        assert res.last_index == final == last_report
        lo = max(r.first_index(), n.first_index())
        assert r.get_entries_range(lo, final) == n.get_entries_range(lo, final)
        for e in r.get_entries_range(r.first_index(), final):
            assert e.payload == payload(e.index, e.term)
        applied = r.last_applied()
        assert applied is not None and r.get(b"applied") == str(applied.index).encode()
        assert r.first_index() == applied.index + 1
    cat = read_catalog(as_seam(store), prefix)
    assert len({o.seq for o in cat.logs}) == len(cat.logs)
