"""The session-scoped SeaweedFS fixture of the object-store tests (server code: :mod:`segwal.testing.seaweedfs`).

:func:`seaweedfs` starts one S3 server for the whole session and stops it at
the end.  With ``CI=true`` a server that does not start fails the tests that
need it instead of skipping them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest

from segwal.testing.seaweedfs import SeaweedServer, start_seaweedfs


@pytest.fixture(scope="session")
def seaweedfs() -> Iterator[SeaweedServer]:
    """One SeaweedFS S3 server for the whole session (skipped without it, failed under CI=true)."""
    pytest.importorskip("obstore")
    workdir = tempfile.mkdtemp(prefix="segwal-seaweedfs-")
    try:
        server = start_seaweedfs(workdir)
    except RuntimeError as e:
        shutil.rmtree(workdir, ignore_errors=True)
        if os.environ.get("CI"):
            pytest.fail(f"SeaweedFS is required under CI: {e}")
        pytest.skip(f"SeaweedFS not available: {e}")
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
