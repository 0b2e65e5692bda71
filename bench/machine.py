"""Machine record for the JSON: CPU, memory, kernel, file system, versions, fsync latency."""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from typing import Any

__all__ = ["machine_info", "fdatasync_latency", "rss_bytes", "allocated_bytes"]


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def _cpu() -> dict[str, Any]:
    info = _read("/proc/cpuinfo")
    model = family = cpu_model = ""
    hypervisor = "hypervisor" in info.split("flags", 1)[-1].split("\n", 1)[0]
    for line in info.splitlines():
        key, _, val = line.partition(":")
        key, val = key.strip(), val.strip()
        if key == "model name" and not model:
            model = val
        elif key == "cpu family" and not family:
            family = val
        elif key == "model" and not cpu_model:
            cpu_model = val
    return {
        "model": model or platform.processor(),
        "family": family,
        "model_number": cpu_model,
        "logical_cpus": os.cpu_count(),
        "hypervisor_flag": hypervisor,
    }


def _mem_total() -> int:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return 0


def filesystem_of(path: str) -> dict[str, str]:
    """The /proc/mounts line whose mount point is the longest prefix of ``path``."""
    path = os.path.realpath(path)
    best: list[str] = []
    for line in _read("/proc/mounts").splitlines():
        parts = line.split()
        if len(parts) < 4:
            continue
        mnt = parts[1]
        if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best[1] if best else ""):
            best = parts
    if not best:
        return {}
    return {"device": best[0], "mount": best[1], "type": best[2], "options": best[3]}


def fdatasync_latency(directory: str, samples: int = 200) -> dict[str, float]:
    """Median and p99 of ``fdatasync`` after a 4 KiB append, and after a 4 KiB
    overwrite of a pre-zeroed file, in microseconds."""
    block = os.urandom(4096)
    out: dict[str, float] = {}
    path = os.path.join(directory, "fsync-probe.bin")
    for mode in ("append", "overwrite"):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            if mode == "overwrite":
                zero = b"\0" * (1 << 20)
                total = samples * 4096
                for off in range(0, total, len(zero)):
                    os.pwrite(fd, zero, off)
                os.fsync(fd)
            lat: list[float] = []
            for i in range(samples):
                os.pwrite(fd, block, i * 4096)
                t0 = time.perf_counter()
                os.fdatasync(fd)
                lat.append(time.perf_counter() - t0)
        finally:
            os.close(fd)
            os.unlink(path)
        lat.sort()
        out[f"{mode}_median_us"] = statistics.median(lat) * 1e6
        out[f"{mode}_p99_us"] = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e6
    out["samples"] = samples
    return out


def rss_bytes() -> int:
    """Resident set size of this process (``VmRSS``)."""
    for line in _read("/proc/self/status").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def allocated_bytes(path: str) -> int:
    """Disk blocks actually allocated under ``path`` (``st_blocks * 512``), files only."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                pass
    return total


def machine_info(data_dir: str, versions: dict[str, str], fsync_samples: int) -> dict[str, Any]:
    u = os.uname()
    return {
        "cpu": _cpu(),
        "memory_bytes": _mem_total(),
        "kernel": f"{u.sysname} {u.release}",
        "machine": u.machine,
        "filesystem": filesystem_of(data_dir),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "versions": versions,
        "fdatasync": fdatasync_latency(data_dir, fsync_samples),
        "load_average_at_start": list(os.getloadavg()),
    }
