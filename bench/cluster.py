"""The 3-node PySyncObj cluster benchmark (``segwal bench --cluster``): commits/s per journal.

    segwal bench --cluster               # 5 interleaved runs of 20,000 commands per journal
    segwal bench --cluster --quick       # 1 run of 2,000 commands per journal (well under a minute)
    segwal bench --cluster --runs 7 --commands 30000 --journals file,segwal,segwal-flush
    segwal bench --cluster --runs 1 --commands 40000 --journals file,segwal --profile /tmp/prof   # py-spy

The setup of issue 11: three PySyncObj 0.3.17 processes on 127.0.0.1, the same
``SyncObjConf`` for every journal (defaults, ``dynamicMembershipChange=False``,
``fullDumpFile`` set); the leader drives a ``@replicated`` counter increment
with up to ``--inflight`` (1,000) commands in flight; commits/s is the number
of commands divided by the time from the first submit to the last success
callback.  Journals: PySyncObj's ``FileJournal`` (never fsyncs), segwal
durable (``segwal_journal(path)``), segwal flush (``sync="flush"``) and
PySyncObj's in-memory journal.  Each run starts a fresh cluster on fresh
directories; the journals are interleaved run by run (A B C D A B C D ...) so
that drift of the shared machine hits all of them alike.  Reported: median,
min and max per journal, and each median relative to ``FileJournal``'s.  The
JSON goes to ``<out>/cluster-<mode>-<stamp>.json`` (and ``cluster-latest-<mode>.json``).

Each node is this module run with ``--node`` (a child process speaking JSON
lines on stdin/stdout).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

__all__ = ["JOURNALS", "main", "run_node"]

JOURNALS = {
    "file": "PySyncObj FileJournal (no fsync)",
    "segwal": "segwal_journal(path) (durable)",
    "segwal-flush": 'segwal_journal(path, sync="flush")',
    "memory": "PySyncObj in-memory journal",
}
DEADLINE = 120.0


# ------------------------------------------------------------------ the node


def _journal_file(kind: str, d: str) -> Any:
    if kind == "file":
        return os.path.join(d, "journal.bin")
    if kind == "memory":
        return None
    from segwal.integrations.pysyncobj import segwal_journal

    return segwal_journal(os.path.join(d, "raft"), sync="flush" if kind == "segwal-flush" else "always")


def run_node(self_addr: str, peers: list[str], d: str, kind: str) -> int:
    """One benchmark node: serve ``status``, ``run <n> <inflight>`` and ``quit`` on stdin."""
    from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated

    class Counter(SyncObj):  # type: ignore[misc]
        def __init__(self) -> None:
            conf = SyncObjConf(
                journalFile=_journal_file(kind, d),
                fullDumpFile=os.path.join(d, "dump.bin"),
                dynamicMembershipChange=False,
            )
            super().__init__(self_addr, peers, conf)
            self.value = 0

        @replicated  # type: ignore[misc]
        def incr(self) -> int:
            self.value += 1
            return int(self.value)

    os.makedirs(d, exist_ok=True)
    obj = Counter()

    def emit(o: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(o) + "\n")
        sys.stdout.flush()

    emit({"event": "started"})
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "status":
            emit({"leader": obj._isLeader(), "ready": obj.isReady(), "has_quorum": obj.hasQuorum})
        elif words[0] == "run":
            n, inflight = int(words[1]), int(words[2])
            sem = threading.Semaphore(inflight)
            done = threading.Event()
            counts = [0, 0]
            last = [0.0]
            reasons: dict[str, int] = {}

            def cb(res: Any, err: Any) -> None:
                counts[0 if err == FAIL_REASON.SUCCESS else 1] += 1
                if err != FAIL_REASON.SUCCESS:
                    reasons[str(err)] = reasons.get(str(err), 0) + 1
                last[0] = time.perf_counter()
                sem.release()
                if counts[0] + counts[1] == n:
                    done.set()

            t0 = time.perf_counter()
            submitted = 0
            for _ in range(n):
                if not sem.acquire(timeout=DEADLINE):
                    break  # nothing completes any more: report what was done
                obj.incr(callback=cb)
                submitted += 1
            if submitted < n:
                n = submitted
                if counts[0] + counts[1] >= n:
                    done.set()
            finished = done.wait(DEADLINE)
            emit({"ok": counts[0], "failed": counts[1], "fail_reasons": reasons, "elapsed": last[0] - t0,
                  "finished": finished})
        elif words[0] == "quit":
            break
    obj.destroy_synchronous()
    emit({"event": "stopped"})
    return 0


# ---------------------------------------------------------------- the driver


class _Proc:
    def __init__(self, args: list[str], log: str) -> None:
        import segwal

        root = os.path.dirname(os.path.dirname(os.path.abspath(segwal.__file__)))  # the segwal measured
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
        with open(log, "w") as err:
            self.p = subprocess.Popen(
                [sys.executable, "-m", "segwal.bench.cluster", *args],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True, bufsize=1, env=env,
            )
        self.q: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            try:
                self.q.put(json.loads(line))
            except ValueError:
                pass
        self.q.put({"eof": True})

    def ask(self, cmd: str, timeout: float = DEADLINE) -> dict[str, Any]:
        assert self.p.stdin is not None
        if cmd:
            self.p.stdin.write(cmd + "\n")
            self.p.stdin.flush()
        m = self.q.get(timeout=timeout)
        if m.get("eof"):
            raise RuntimeError(f"benchmark node exited ({self.p.poll()})")
        return m

    def stop(self) -> None:
        try:
            self.ask("quit", 30)
            self.p.wait(30)
        except Exception:
            self.p.kill()
            self.p.wait()


def _ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def run_once(kind: str, base: str, commands: int, inflight: int, profile: str | None = None) -> dict[str, Any]:
    """Start a fresh 3-node cluster with journal ``kind``, drive ``commands`` from the
    leader, stop it; returns the leader's figures.  With ``profile`` (a directory),
    py-spy samples the leader and a follower during the run (raw files there)."""
    d = tempfile.mkdtemp(prefix=f"cluster-{kind}-", dir=base)
    addrs = [f"127.0.0.1:{p}" for p in _ports(3)]
    procs: list[_Proc] = []
    r: dict[str, Any] | None = None
    try:
        for i, a in enumerate(addrs):
            nd = os.path.join(d, f"node{i}")
            os.makedirs(nd)
            peers = ",".join(x for x in addrs if x != a)
            procs.append(_Proc(["--node", a, peers, nd, kind], os.path.join(d, f"node{i}.log")))
        for p in procs:
            p.ask("")  # "started"
        end = time.monotonic() + DEADLINE
        leader = None
        while leader is None:
            if time.monotonic() > end:
                raise RuntimeError("no leader elected")
            sts = [p.ask("status") for p in procs]
            leads = [p for p, s in zip(procs, sts) if s["leader"] and s["ready"] and s["has_quorum"]]
            leader = leads[0] if len(leads) == 1 else None
            if leader is None:
                time.sleep(0.1)
        spies = []
        if profile:
            for role, p in (("leader", leader), ("follower", next(x for x in procs if x is not leader))):
                out = os.path.join(profile, f"{kind}-{role}-{os.getpid()}-{time.time():.0f}.txt")
                spies.append(subprocess.Popen(["py-spy", "record", "-p", str(p.p.pid), "-f", "raw", "-r", "200",
                                               "-o", out], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            time.sleep(1.0)  # py-spy attaches
        r = leader.ask(f"run {commands} {inflight}", timeout=3 * DEADLINE + commands / 100)
        for spy in spies:
            spy.send_signal(signal.SIGINT)
            spy.wait(60)
        r["commits_per_s"] = r["ok"] / r["elapsed"] if r["elapsed"] > 0 else 0.0
        return r
    finally:
        for p in procs:
            p.stop()
        if r is not None:  # PySyncObj's own warnings of a diverging or lossy node, if any
            r["node_warnings"] = _warnings(d)
        shutil.rmtree(d, ignore_errors=True)


def _warnings(d: str) -> list[str]:
    out: list[str] = []
    for i in range(3):
        try:
            with open(os.path.join(d, f"node{i}.log")) as f:
                out += [f"node{i}: {line.strip()}"[:300] for line in f if "diverged" in line or "exceeds" in line]
        except OSError:
            pass
    return out[:20]


def _table(res: dict[str, list[float]], markdown: bool) -> str:
    base = res.get("file")
    ref = statistics.median(base) if base else None
    rows = []
    for kind, xs in res.items():
        med = statistics.median(xs)
        ratio = f"{med / ref:.2f}x" if ref else "-"
        # the same run of each journal is interleaved: the median of the run-by-run ratios
        paired = f"{statistics.median(x / b for x, b in zip(xs, base)):.2f}x" if base else "-"
        runs = " / ".join(f"{x:,.0f}" for x in xs)
        rows.append((JOURNALS[kind], f"{med:,.0f}", f"{min(xs):,.0f} - {max(xs):,.0f}", ratio, paired, runs))
    head = ("journal", "median commits/s", "min - max", "vs FileJournal", "paired ratio", "runs (in order)")
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    w = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w[i]) for i, c in enumerate(r)) for r in [head, *rows])


def main(argv: list[str] | None = None) -> int:
    """``segwal bench --cluster``: run the cluster benchmark, print the table, write the JSON."""
    ap = argparse.ArgumentParser(prog="segwal bench --cluster", description=__doc__.split("\n\n")[0])
    ap.add_argument("--cluster", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="1 run of 2,000 commands per journal (smoke)")
    ap.add_argument("--runs", type=int, default=None, help="interleaved runs per journal (default 5; quick 1)")
    ap.add_argument("--commands", type=int, default=None, help="commands per run (default 20000; quick 2000)")
    ap.add_argument("--inflight", type=int, default=1000, help="commands in flight (default 1000)")
    ap.add_argument("--journals", default=",".join(JOURNALS), help=f"subset of {','.join(JOURNALS)}")
    ap.add_argument("--out", default=None, help="directory for the JSON (default: bench/results in a checkout)")
    ap.add_argument("--markdown", action="store_true", help="print a markdown table")
    ap.add_argument("--label", default="", help="free text stored in the JSON")
    ap.add_argument("--plot", default=None, help="also draw a PNG bar chart (median, min-max) at this path")
    ap.add_argument("--profile", default=None, help="directory for py-spy raw profiles of a leader and a follower")
    args = ap.parse_args(argv)
    from .runner import DEFAULT_OUT

    runs = args.runs or (1 if args.quick else 5)
    commands = args.commands or (2000 if args.quick else 20000)
    kinds = [k for k in args.journals.split(",") if k]
    bad = [k for k in kinds if k not in JOURNALS]
    if bad or runs < 1:
        print(f"unknown journal(s) {bad}; choose from {','.join(JOURNALS)}", file=sys.stderr)
        return 2
    out = args.out or DEFAULT_OUT
    os.makedirs(out, exist_ok=True)
    if args.profile:
        if shutil.which("py-spy") is None:
            print("--profile needs py-spy (pip install py-spy)", file=sys.stderr)
            return 2
        os.makedirs(args.profile, exist_ok=True)
    base = tempfile.mkdtemp(prefix="tmp-cluster-", dir=out)
    res: dict[str, list[float]] = {k: [] for k in kinds}
    raw: list[dict[str, Any]] = []
    started = time.time()
    try:
        for r in range(runs):
            for k in kinds:
                fig = run_once(k, base, commands, args.inflight, args.profile)
                fig.update(journal=k, run=r)
                raw.append(fig)
                res[k].append(fig["commits_per_s"])
                print(f"run {r + 1}/{runs} {k}: {fig['commits_per_s']:,.0f} commits/s "
                      f"({fig['ok']} ok, {fig['failed']} failed {fig['fail_reasons'] or ''}"
                      f"{'; PySyncObj warnings: %d' % len(fig['node_warnings']) if fig['node_warnings'] else ''})", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(_table(res, args.markdown))
    from .machine import machine_info

    mode = "quick" if args.quick else "full"
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started))
    doc = {
        "schema": 1,
        "command": "segwal bench --cluster " + " ".join(argv if argv is not None else sys.argv[1:]),
        "mode": mode, "runs": runs, "commands": commands, "inflight": args.inflight, "label": args.label,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "elapsed_s": time.time() - started,
        "medians": {k: statistics.median(v) for k, v in res.items()},
        "commits_per_s": res, "raw": raw,
        "machine": machine_info(out, {}, 20),
    }
    path = os.path.join(out, f"cluster-{mode}-{stamp}.json")
    for dest in (path, os.path.join(out, f"cluster-latest-{mode}.json")):
        with open(dest, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1, default=str)
    print(f"wrote {path}")
    if args.plot:
        try:
            plot(doc, args.plot)
            print(f"plot: {args.plot}")
        except ImportError as exc:
            print(f"plot skipped: {exc}")
    return 0


def plot(doc: dict[str, Any], dest: str) -> None:
    """Bar chart of a run's medians with min-max whiskers (needs matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = list(doc["commits_per_s"])
    xs = [doc["commits_per_s"][k] for k in kinds]
    med = [statistics.median(x) for x in xs]
    err = [[m - min(x) for m, x in zip(med, xs)], [max(x) - m for m, x in zip(med, xs)]]
    fig, ax = plt.subplots(figsize=(8.5, 3.2))
    ax.barh([JOURNALS[k] for k in kinds], med, xerr=err, color=["#888", "#2a7", "#7c4", "#bbb"][: len(kinds)])
    ax.invert_yaxis()
    ax.set_xlabel("commits/s (median of %d runs, whiskers min-max)" % doc["runs"])
    title = "3-node PySyncObj cluster, %d commands per run, %d in flight" % (doc["commands"], doc["inflight"])
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(dest, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--node":
        a = sys.argv[2:]
        sys.exit(run_node(a[0], [p for p in a[1].split(",") if p], a[2], a[3]))
    sys.exit(main())
