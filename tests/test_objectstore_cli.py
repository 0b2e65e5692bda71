"""``segwal inspect|verify|dump`` on object-store URLs: read-only, so the live writer is never fenced.

On the session's SeaweedFS (with ``--store-option``), and on ``memory://``
stores for the damage cases.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from segwal.cli import main
from segwal.types import Entry, HardState, LogId

obstore = pytest.importorskip("obstore")
from segwal.storage.objectstore import ObjectStoreEngine  # noqa: E402
from segwal.storage.objectstore.urls import store_from_url  # noqa: E402


def batch(first: int, last: int) -> list[Entry]:
    return [Entry(i, 1, f"p{i}".encode()) for i in range(first, last + 1)]


def test_inspect_verify_dump_a_live_prefix_without_fencing_it(seaweedfs: Any, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"s3://{seaweedfs.bucket}/cli/{uuid.uuid4().hex[:10]}"
    opts = seaweedfs.url_options()
    flags = [x for k, v in opts.items() for x in ("--store-option", f"{k}={v}")]
    writer = ObjectStoreEngine.from_url(url, engine_options={"compact_slots": 4}, **opts)
    for i in range(1, 20, 3):
        writer.persist_entries(batch(i, i + 2))
    writer.save_hard_state(HardState(3))
    writer.purge_logs(LogId(1, 5))
    assert main(["inspect", url, "--json", *flags]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["first_index"] == 6 and info["last_index"] == 21 and info["hard_state"]["current_term"] == 3
    assert main(["verify", url, *flags]) == 0
    assert "clean" in capsys.readouterr().out
    assert main(["dump", url, "--from", "7", "--to", "8", "--encoding", "hex", *flags]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [(x["index"], bytes.fromhex(x["payload"])) for x in lines] == [(7, b"p7"), (8, b"p8")]
    writer.persist_entries(batch(22, 22))  # still the owner: the tools fenced nothing
    assert main(["inspect", url, *flags]) == 0
    assert "last 22" in capsys.readouterr().out
    writer.close()


def test_verify_reports_a_damaged_chunk(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"memory://cli-{uuid.uuid4().hex[:8]}/node"
    with ObjectStoreEngine.from_url(url, engine_options={"compact_slots": 2}) as e:
        e.persist_entries(batch(1, 10))
        e.compact()
    store, _prefix = store_from_url(url)
    name = next(m["path"] for chunk in obstore.list(store, "node/chunk/") for m in chunk)
    data = bytearray(obstore.get(store, name).bytes())
    data[-2] ^= 0x40
    obstore.put(store, name, bytes(data))
    assert main(["verify", url]) == 2
    out = capsys.readouterr().out
    assert name in out and "CORRUPTION" in out


def test_store_option_on_a_directory_is_an_error(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(tmp_path), "--store-option", "endpoint=x"]) == 1
    assert "only to an object-store URL" in capsys.readouterr().err
