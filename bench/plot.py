"""PNG plots from a benchmark JSON (matplotlib, from the ``bench`` extra).

``python -m bench.plot bench/results/latest-full.json --out docs/img`` redraws
the plots of a saved run; :func:`bench.runner.main` calls :func:`plot_all`
after each run.  Plots are drawn only from the JSON, never from printed tables.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

__all__ = ["plot_all", "main"]

COLORS = {
    "segwal": "#d62728",
    "raw": "#444444",
    "raw_prezeroed": "#999999",
    "sqlite": "#1f77b4",
    "lmdb": "#2ca02c",
    "rocksdict": "#ff7f0e",
    "plyvel": "#9467bd",
    "pysyncobj": "#8c564b",
    "pysyncobj_nosync": "#c49c94",
    "dict": "#bcbd22",
    "segwal_16m": "#ff9896",
}


def _figs(doc: dict[str, Any], workload: str, metric: str) -> list[dict[str, Any]]:
    return [f for f in doc["figures"] if f["workload"] == workload and f["metric"] == metric and f["samples"]]


def _bars(ax: Any, figs: list[dict[str, Any]], log: bool) -> None:
    figs = sorted(figs, key=lambda f: f["median"], reverse=figs[0]["higher_is_better"])
    names = [f["peer"] for f in figs]
    vals = [f["median"] for f in figs]
    lo = [f["median"] - min(f["samples"]) for f in figs]
    hi = [max(f["samples"]) - f["median"] for f in figs]
    ax.barh(names, vals, xerr=[lo, hi], color=[COLORS.get(n, "#17becf") for n in names], capsize=2)
    ax.invert_yaxis()
    if log:
        from matplotlib.ticker import NullFormatter

        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
    for name, v in zip(names, vals, strict=True):
        if name.startswith("segwal"):
            text = f"{v:,.0f}" if v >= 100 else f"{v:.3g}"
            ax.annotate(text, (v, names.index(name)), xytext=(4, 8), textcoords="offset points", fontsize=8)
    ax.grid(axis="x", alpha=0.3)


def plot_all(doc: dict[str, Any], out: str) -> list[str]:
    """Draw every plot the JSON has data for into ``out``; returns the file paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(out, exist_ok=True)
    made: list[str] = []
    title_sfx = " (--quick)" if doc.get("mode") == "quick" else ""

    def save(fig: Any, name: str) -> None:
        path = os.path.join(out, name)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        made.append(path)

    # 1. append
    figs = _figs(doc, "append", "entries_per_s")
    cases = sorted({f["case"] for f in figs}, key=lambda c: int(c.split("=")[1]))
    if cases:
        fig, axes = plt.subplots(1, len(cases), figsize=(5 * len(cases), 4.2), squeeze=False)
        for ax, case in zip(axes[0], cases, strict=True):
            _bars(ax, [f for f in figs if f["case"] == case], log=True)
            ax.set_title(f"durable append, batch {case[2:]}")
            ax.set_xlabel("entries/s (log), median and min..max")
        fig.suptitle("Durable append of 256-byte entries, one sync per batch" + title_sfx)
        save(fig, "bench-append.png")

    # 2-3. reads
    pts, rng = _figs(doc, "read", "ns_per_read"), _figs(doc, "read", "entries_per_s")
    if pts or rng:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), squeeze=False)
        if pts:
            _bars(axes[0][0], pts, log=True)
            axes[0][0].set_title("random entry(i) after reopen")
            axes[0][0].set_xlabel("ns per read (log; lower is better)")
        if rng:
            _bars(axes[0][1], rng, log=True)
            axes[0][1].set_title("range of 1000 consecutive entries")
            axes[0][1].set_xlabel("entries/s (log)")
        fig.suptitle("Reads" + title_sfx)
        save(fig, "bench-read.png")

    # 4. reopen + RSS
    opens, rss = _figs(doc, "reopen", "open_ms"), _figs(doc, "reopen", "rss_mb")
    if opens:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), squeeze=False)
        for ax, data, label in (
            (axes[0][0], opens, "reopen time, ms"),
            (axes[0][1], rss, "RSS above bare interpreter, MB"),
        ):
            for peer in sorted({f["peer"] for f in data}):
                pts_ = sorted((int(f["case"].split("=")[1]), f["median"]) for f in data if f["peer"] == peer)
                ax.plot([p[0] for p in pts_], [p[1] for p in pts_], "o-", label=peer, color=COLORS.get(peer))
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("entries in the log")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3, which="both")
        axes[0][0].legend(fontsize=8)
        fig.suptitle("Reopen (ready to serve first/last index), fresh process" + title_sfx)
        save(fig, "bench-reopen.png")

    # 5. delete
    pur, tru, freed = _figs(doc, "delete", "ms"), None, _figs(doc, "delete", "freed_pct")
    if pur:
        fig, axes = plt.subplots(1, 3, figsize=(14, 4.2), squeeze=False)
        _bars(axes[0][0], [f for f in pur if f["case"] == "purge50"], log=True)
        axes[0][0].set_title("purge first 50%")
        axes[0][0].set_xlabel("ms (log; lower is better)")
        tru = [f for f in pur if f["case"] == "truncate10"]
        if tru:
            _bars(axes[0][1], tru, log=True)
            axes[0][1].set_title("truncate last 10%")
            axes[0][1].set_xlabel("ms (log)")
        if freed:
            _bars(axes[0][2], freed, log=False)
            axes[0][2].set_title("disk space freed by both")
            axes[0][2].set_xlabel("% of allocated bytes")
        fig.suptitle("Purge and truncate, durable" + title_sfx)
        save(fig, "bench-delete.png")

    # 6. kv
    app, get = _figs(doc, "kv", "changes_per_s"), _figs(doc, "kv", "ns_per_get")
    if app or get:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), squeeze=False)
        if app:
            _bars(axes[0][0], app, log=True)
            axes[0][0].set_title("durable apply, 100 changes per batch")
            axes[0][0].set_xlabel("changes/s (log)")
        if get:
            _bars(axes[0][1], get, log=True)
            axes[0][1].set_title("random get after reopen")
            axes[0][1].set_xlabel("ns per get (log; lower is better)")
        fig.suptitle("Key/value" + title_sfx)
        save(fig, "bench-kv.png")

    # 7. sweep
    sa, so = _figs(doc, "sweep", "append_entries_per_s"), _figs(doc, "sweep", "reopen_ms")
    if sa:
        fig, ax = plt.subplots(figsize=(6.5, 4.2))
        xs = sorted((f["extra"]["segment_mib"][0], f["median"]) for f in sa)
        ax.plot([x for x, _ in xs], [y for _, y in xs], "o-", color=COLORS["segwal"], label="append B=1024 (entries/s)")
        ax.set_xscale("log", base=2)
        ax.set_xticks([x for x, _ in xs], [str(x) for x, _ in xs])
        ax.yaxis.set_major_formatter(lambda v, _pos: f"{v / 1e6:.1f}M")
        ax.set_xlabel("segment size, MiB")
        ax.set_ylabel("append entries/s", color=COLORS["segwal"])
        ax.set_ylim(bottom=0)
        if so:
            ax2 = ax.twinx()
            ys = sorted((f["extra"]["segment_mib"][0], f["median"]) for f in so)
            ax2.plot([x for x, _ in ys], [y for _, y in ys], "s--", color="#1f77b4", label="reopen (ms)")
            ax2.set_ylabel("reopen ms", color="#1f77b4")
            ax2.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.set_title("segwal segment-size sweep" + title_sfx)
        save(fig, "bench-sweep.png")
    return made


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.plot")
    ap.add_argument("json")
    ap.add_argument("--out", default="docs/img")
    args = ap.parse_args(argv)
    with open(args.json, encoding="utf-8") as f:
        doc = json.load(f)
    for p in plot_all(doc, args.out):
        print(p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
