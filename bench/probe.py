"""Reopen probe, run in a fresh interpreter so resident memory means something.

``python -m bench.probe --peer NAME --path DIR [--segment-size BYTES]`` prints one
JSON object:

- ``rss_python``: resident memory right after start (interpreter + this module);
- ``rss_imported``: after importing the store's package;
- ``rss_open``: after opening the store and reading its first and last index;
- ``open_s``: time of ``open`` + ``bounds()`` (ready to serve);
- ``first_read_s``: the first ``entry(last)`` after that;
- ``first`` / ``last``: the bounds it saw;
- ``open_read_bytes`` / ``open_minor_faults`` / ``open_major_faults``: what the
  open read through syscalls and how many pages it faulted in (evidence that an
  open does not read the whole log).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time


def _rchar() -> int:
    """Bytes this process got from read()-family syscalls so far (``/proc/self/io``)."""
    try:
        with open("/proc/self/io", encoding="ascii") as f:
            for line in f:
                if line.startswith("rchar:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _rss() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def main(argv: list[str] | None = None) -> int:
    rss_python = _rss()
    ap = argparse.ArgumentParser(prog="python -m bench.probe")
    ap.add_argument("--peer", required=True)
    ap.add_argument("--path", required=True)
    ap.add_argument("--segment-size", type=int, default=None)
    args = ap.parse_args(argv)

    from .peers import make_peer

    kw = {"segment_size": args.segment_size} if args.segment_size else {}
    peer = make_peer(args.peer, **kw)
    if peer.module:
        __import__(peer.module)
    rss_imported = _rss()

    ru0, rc0 = resource.getrusage(resource.RUSAGE_SELF), _rchar()
    t0 = time.perf_counter()
    peer.open(args.path)
    first, last = peer.bounds()
    t1 = time.perf_counter()
    ru1, rc1 = resource.getrusage(resource.RUSAGE_SELF), _rchar()
    rss_open = _rss()
    t2 = time.perf_counter()
    e = peer.entry(last) if "read" in peer.caps and last else None
    t3 = time.perf_counter()
    if e is not None and e.index != last:
        print(json.dumps({"error": f"entry({last}) returned index {e.index}"}))
        return 1
    peer.close()
    json.dump(
        {
            "open_s": t1 - t0,
            "first_read_s": t3 - t2,
            "first": first,
            "last": last,
            "rss_python": rss_python,
            "rss_imported": rss_imported,
            "rss_open": rss_open,
            # what the open touched: bytes through read()/pread(), and page faults
            # (an mmap'd file read at open shows up as faults, not as rchar)
            "open_read_bytes": rc1 - rc0,
            "open_minor_faults": ru1.ru_minflt - ru0.ru_minflt,
            "open_major_faults": ru1.ru_majflt - ru0.ru_majflt,
            "pid": os.getpid(),
        },
        sys.stdout,
    )
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
