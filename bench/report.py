"""Results: samples per (workload, case, metric, peer), medians, ratios, tables, targets.

A *figure* is one metric of one store in one case, e.g. ``append / B=1024 /
entries_per_s / lmdb``; it holds every repetition's sample and reports the
median.  Ratios are always taken between medians of the same run:

- ``vs raw``: the figure over the raw limit's figure (writes only);
- ``vs best peer``: how many times *better* than the best real peer (kind
  ``peer``, chosen by median) the figure is, so ``> 1`` means faster than every
  peer, whether the metric is a throughput (higher is better) or a time (lower
  is better).

Both ratios are *paired*: the median, over the repetitions, of the ratio
between the two stores within one repetition (:func:`paired_ratio`).  On a
shared machine whose speed drifts by 2x from one minute to the next, this is
much steadier than the ratio of the two medians.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Figure",
    "Results",
    "format_summary",
    "format_tables",
    "evaluate_targets",
    "format_targets",
    "results_from_json",
    "main",
]


@dataclass
class Figure:
    workload: str
    case: str
    metric: str
    unit: str
    higher_is_better: bool
    peer: str
    label: str
    kind: str
    samples: list[float] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def median(self) -> float:
        return statistics.median(self.samples) if self.samples else float("nan")

    @property
    def spread(self) -> float:
        """``(max - min) / median`` over the repetitions."""
        if len(self.samples) < 2 or not self.median:
            return 0.0
        return (max(self.samples) - min(self.samples)) / abs(self.median)

    def to_json(self) -> dict[str, Any]:
        return {
            "workload": self.workload,
            "case": self.case,
            "metric": self.metric,
            "unit": self.unit,
            "higher_is_better": self.higher_is_better,
            "peer": self.peer,
            "label": self.label,
            "kind": self.kind,
            "samples": self.samples,
            "median": self.median,
            "spread": self.spread,
            "extra": self.extra,
        }


class Results:
    """Ordered collection of figures, keyed by (workload, case, metric, peer)."""

    def __init__(self) -> None:
        self._figs: dict[tuple[str, str, str, str], Figure] = {}

    def add(
        self,
        workload: str,
        case: str,
        metric: str,
        peer: Any,
        value: float,
        *,
        unit: str,
        higher_is_better: bool,
        kind: str | None = None,
        label: str | None = None,
        **extra: Any,
    ) -> Figure:
        key = (workload, case, metric, peer.name)
        fig = self._figs.get(key)
        if fig is None:
            fig = Figure(
                workload, case, metric, unit, higher_is_better, peer.name, label or peer.label, kind or peer.kind
            )
            self._figs[key] = fig
        fig.samples.append(value)
        for k, v in extra.items():
            fig.extra.setdefault(k, []).append(v)
        return fig

    def figures(self) -> list[Figure]:
        return list(self._figs.values())

    def get(self, workload: str, case: str, metric: str, peer: str) -> Figure | None:
        return self._figs.get((workload, case, metric, peer))

    def median(self, workload: str, case: str, metric: str, peer: str) -> float | None:
        f = self.get(workload, case, metric, peer)
        return f.median if f and f.samples else None

    def groups(self) -> dict[tuple[str, str, str], list[Figure]]:
        out: dict[tuple[str, str, str], list[Figure]] = {}
        for (w, c, m, _p), f in self._figs.items():
            out.setdefault((w, c, m), []).append(f)
        return out

    def best_peer(self, workload: str, case: str, metric: str) -> Figure | None:
        figs = [f for f in self.groups().get((workload, case, metric), []) if f.kind == "peer" and f.samples]
        if not figs:
            return None
        return max(figs, key=lambda f: f.median) if figs[0].higher_is_better else min(figs, key=lambda f: f.median)

    def to_json(self) -> list[dict[str, Any]]:
        return [f.to_json() for f in self._figs.values()]


def better_ratio(value: float, ref: float, higher_is_better: bool) -> float:
    """How many times better ``value`` is than ``ref`` (> 1 = better)."""
    if not ref or not value:
        return float("nan")
    return value / ref if higher_is_better else ref / value


def paired_ratio(fig: Figure, ref: Figure) -> float:
    """How many times better ``fig`` is than ``ref``, as the median over the
    repetitions of the ratio *within* each repetition (both were measured
    within seconds of each other there).  Falls back to the ratio of medians
    when the sample lists do not line up (a store dropped part-way)."""
    hib = fig.higher_is_better
    if len(fig.samples) == len(ref.samples) and fig.samples:
        return statistics.median(better_ratio(a, b, hib) for a, b in zip(fig.samples, ref.samples, strict=True))
    return better_ratio(fig.median, ref.median, hib)


def _fmt(v: float, unit: str) -> str:
    if v != v:  # nan
        return "—"
    if unit in ("entries/s", "changes/s", "batches/s"):
        return f"{v:,.0f}"
    if unit == "ns":
        return f"{v:,.0f}"
    if unit in ("ms", "MB"):
        return f"{v:,.3g}" if abs(v) < 100 else f"{v:,.0f}"
    if unit == "%":
        return f"{v:.0f}"
    return f"{v:.3g}"


QUIET_METRICS = frozenset({"build_s"})


def _ratio(r: float) -> str:
    return "—" if r != r else f"{r:.2f}x"


def format_tables(res: Results, markdown: bool = False) -> str:
    """One table per (workload, case, metric), rows sorted best first."""
    out: list[str] = []
    for (w, c, m), figs in res.groups().items():
        if m in QUIET_METRICS:  # kept in the JSON, not worth a table
            continue
        figs = [f for f in figs if f.samples]
        if not figs:
            continue
        hib = figs[0].higher_is_better
        unit = figs[0].unit
        raw = res.get(w, c, m, "raw")
        best = res.best_peer(w, c, m)
        figs.sort(key=lambda f: f.median, reverse=hib)
        title = f"{w} · {c} · {m} ({unit}, {'higher' if hib else 'lower'} is better)"
        head = ["store", unit, "spread", "vs raw", "vs best peer"]
        rows: list[list[str]] = []
        for f in figs:
            vs_raw = paired_ratio(f, raw) if raw and raw.samples else float("nan")
            vs_best = paired_ratio(f, best) if best else float("nan")
            if unit == "%":  # a share, not a speed: ratios of it mean nothing
                vs_raw = vs_best = float("nan")
            name = f.label
            if f.peer == "segwal" or f.peer.startswith("segwal"):
                name = f"**{name}**" if markdown else f"> {name}"
            rows.append([name, _fmt(f.median, unit), f"{f.spread * 100:.0f}%", _ratio(vs_raw), _ratio(vs_best)])
        if best is not None:
            title += f"; best peer: {best.peer}"
        if markdown:
            out.append(f"#### {title}\n")
            out.append("| " + " | ".join(head) + " |")
            out.append("|---|" + "---:|" * (len(head) - 1))
            out.extend("| " + " | ".join(r) + " |" for r in rows)
        else:
            widths = [max(len(head[i]), *(len(r[i]) for r in rows)) for i in range(len(head))]
            out.append(title)
            out.append("  ".join(h.ljust(widths[i]) if i == 0 else h.rjust(widths[i]) for i, h in enumerate(head)))
            for r in rows:
                out.append("  ".join(x.ljust(widths[i]) if i == 0 else x.rjust(widths[i]) for i, x in enumerate(r)))
        out.append("")
    return "\n".join(out)


SUMMARY_ROWS = (
    ("append B=1", "append", "B=1", "entries_per_s"),
    ("append B=64", "append", "B=64", "entries_per_s"),
    ("append B=1024", "append", "B=1024", "entries_per_s"),
    ("entry(i) after reopen", "read", "point", "ns_per_read"),
    ("range of 1000", "read", "range1000", "entries_per_s"),
    ("reopen at 100k", "reopen", "N=100000", "open_ms"),
    ("reopen at 1M", "reopen", "N=1000000", "open_ms"),
    ("reopen at 10M", "reopen", "N=10000000", "open_ms"),
    ("RSS of the open log at 10M", "reopen", "N=10000000", "rss_mb"),
    ("purge first 50% of 200k", "delete", "purge50", "ms"),
    ("truncate last 10%", "delete", "truncate10", "ms"),
    ("kv apply, 100 changes/batch", "kv", "apply100", "changes_per_s"),
    ("kv get after reopen", "kv", "get", "ns_per_get"),
)


def format_summary(res: Results, markdown: bool = False) -> str:
    """One line per headline figure: segwal, the raw limit, the best peer, ratios."""
    head = ["figure", "unit", "segwal", "raw limit", "best peer", "segwal vs raw", "segwal vs best peer"]
    rows: list[list[str]] = []
    for title, w, c, m in SUMMARY_ROWS:
        sf, raw, best = res.get(w, c, m, "segwal"), res.get(w, c, m, "raw"), res.best_peer(w, c, m)
        if sf is None or not sf.samples:
            continue
        unit = sf.unit
        rows.append(
            [
                title,
                ("ns" if unit == "ns" else unit) + (" ↑" if sf.higher_is_better else " ↓"),
                _fmt(sf.median, unit),
                _fmt(raw.median, unit) if raw and raw.samples else "—",
                f"{_fmt(best.median, unit)} ({best.peer})" if best else "—",
                _ratio(paired_ratio(sf, raw)) if raw and raw.samples else "—",
                _ratio(paired_ratio(sf, best)) if best else "—",
            ]
        )
    if not rows:
        return ""
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(head[i]), *(len(r[i]) for r in rows)) for i in range(len(head))]
    lines = ["  ".join(h.ljust(widths[i]) if i < 2 else h.rjust(widths[i]) for i, h in enumerate(head))]
    lines += ["  ".join(x.ljust(widths[i]) if i < 2 else x.rjust(widths[i]) for i, x in enumerate(r)) for r in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------- targets


def evaluate_targets(res: Results) -> list[dict[str, Any]]:
    """Check the issue's targets against this run's medians.  Missing data gives
    ``ok = None`` (not measured), never a pass."""
    med = res.median
    out: list[dict[str, Any]] = []

    def check(name: str, target: str, measured: float | None, need: float, op: str = ">=") -> None:
        ok: bool | None
        if measured is None or measured != measured:
            ok = None
        else:
            ok = measured >= need if op == ">=" else measured <= need
        out.append({"workload": name, "target": target, "measured": measured, "ok": ok})

    def ratio(w: str, c: str, m: str, ref: str | None) -> float | None:
        s = med(w, c, m, "segwal")
        if s is None:
            return None
        sf = res.get(w, c, m, "segwal")
        r = res.best_peer(w, c, m) if ref is None else res.get(w, c, m, ref)
        if sf is None or r is None or not r.samples:
            return None
        return paired_ratio(sf, r)

    a = "append"
    check("append B=1024", "≥ 2× best peer", ratio(a, "B=1024", "entries_per_s", None), 2.0)
    check("append B=1024", "≥ 0.9× raw limit", ratio(a, "B=1024", "entries_per_s", "raw"), 0.9)
    check("append B=64", "≥ 1.5× best peer", ratio(a, "B=64", "entries_per_s", None), 1.5)
    check("append B=1", "≥ 1.2× raw limit", ratio(a, "B=1", "entries_per_s", "raw"), 1.2)
    check("entry(i)", "no slower than lmdb get + Entry (ratio ≥ 1)", ratio("read", "point", "ns_per_read", "lmdb"), 1.0)
    check("range of 1000", "≥ 2× lmdb cursor + Entry", ratio("read", "range1000", "entries_per_s", "lmdb"), 2.0)
    check(
        "reopen 1M", "no slower than rocksdict (ratio ≥ 1)", ratio("reopen", "N=1000000", "open_ms", "rocksdict"), 1.0
    )
    r1m, r100k = med("reopen", "N=1000000", "open_ms", "segwal"), med("reopen", "N=100000", "open_ms", "segwal")
    check(
        "reopen 1M / 100k",
        "≤ 2",
        (r1m / r100k) if (r1m is not None and r100k) else None,
        2.0,
        "<=",
    )
    check("purge 50%", "≤ 1/5 of lmdb's time (ratio ≥ 5)", ratio("delete", "purge50", "ms", "lmdb"), 5.0)
    check("truncate 10%", "≤ 1/5 of lmdb's time (ratio ≥ 5)", ratio("delete", "truncate10", "ms", "lmdb"), 5.0)
    s16, l16 = res.get("delete", "purge50", "ms", "segwal_16m"), res.get("delete", "purge50", "ms", "lmdb")
    check(
        "purge 50%, 16 MiB segments",
        "≤ 1/5 of lmdb's time where whole segments are freed (ratio ≥ 5)",
        paired_ratio(s16, l16) if s16 and l16 and l16.samples else None,
        5.0,
    )
    freed = None
    for p in ("segwal", "segwal_16m"):
        f = res.get("delete", "disk", "freed_pct", p)
        if f is not None and f.samples:
            freed = max(freed or 0.0, f.median)
    check("purge frees space", "> 0% of the store freed on disk (best segwal variant)", freed, 0.001)
    check(
        "memory 10M",
        "< 100 MB above the interpreter",
        med("reopen", "N=10000000", "rss_mb", "segwal"),
        100.0,
        "<=",
    )
    check("kv get", "no slower than lmdb (ratio ≥ 1)", ratio("kv", "get", "ns_per_get", "lmdb"), 1.0)
    check("kv apply 100", "≥ 1.5× rocksdict", ratio("kv", "apply100", "changes_per_s", "rocksdict"), 1.5)
    return out


def format_targets(targets: list[dict[str, Any]], markdown: bool = False) -> str:
    rows = []
    for t in targets:
        m = t["measured"]
        meas = "not measured" if m is None or m != m else f"{m:.3g}"
        status = {True: "MET", False: "missed", None: "n/a"}[t["ok"]]
        rows.append([t["workload"], t["target"], meas, status])
    head = ["workload", "target", "measured", "status"]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|---|---|---:|---|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(head[i]), *(len(r[i]) for r in rows)) for i in range(4)]
    lines = ["  ".join(h.ljust(widths[i]) for i, h in enumerate(head))]
    lines += ["  ".join(x.ljust(widths[i]) for i, x in enumerate(r)) for r in rows]
    return "\n".join(lines)


def results_from_json(doc: dict[str, Any]) -> Results:
    """Rebuild :class:`Results` from a saved run (``figures`` of the JSON)."""
    res = Results()
    for f in doc["figures"]:
        fig = Figure(
            f["workload"],
            f["case"],
            f["metric"],
            f["unit"],
            f["higher_is_better"],
            f["peer"],
            f["label"],
            f["kind"],
            list(f["samples"]),
            dict(f.get("extra", {})),
        )
        res._figs[(fig.workload, fig.case, fig.metric, fig.peer)] = fig
    return res


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.report RUN.json [--text]``: re-print a saved run's tables
    (markdown by default, for ``docs/benchmarks.md``)."""
    import argparse
    import json

    ap = argparse.ArgumentParser(prog="python -m bench.report")
    ap.add_argument("json")
    ap.add_argument("--text", action="store_true", help="plain-text tables instead of markdown")
    args = ap.parse_args(argv)
    with open(args.json, encoding="utf-8") as f:
        doc = json.load(f)
    res = results_from_json(doc)
    md = not args.text
    summary = format_summary(res, markdown=md)
    if summary:
        print(
            ("#### Summary (medians; ratios paired, > 1 = segwal better)\n\n" if md else "Summary:\n") + summary + "\n"
        )
    print(format_tables(res, markdown=md))
    print("#### Targets of issue 4\n" if md else "Targets of issue 4:")
    print(format_targets(evaluate_targets(res), markdown=md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
