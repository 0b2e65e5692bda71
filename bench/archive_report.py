"""The table and the target checks of ``segwal bench --archive`` (its figures' JSON in, text out)."""

from __future__ import annotations

from typing import Any

__all__ = ["format_table", "plot", "targets"]


def targets(res: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """``(target, measured, met)`` of issue 14's three targets, for the figures in ``res``."""
    out: list[tuple[str, str, bool]] = []
    if "restore" in res:
        r = res["restore"]
        out.append(
            (
                f"restore of {r['entries']:,} entries no slower than Litestream's",
                f"{r['segwal_median_s']:.2f} s vs {r['litestream_median_s']:.2f} s",
                r["segwal_median_s"] <= r["litestream_median_s"],
            )
        )
    if "lag" in res:
        g = res["lag"]
        p99 = g["segwal"]["lag"]["p99"]
        ok = p99 <= g["tail_interval"] + 1.0 and g["segwal"]["missing"] == 0
        out.append(
            (
                f"archive lag p99 <= tail interval + 1 s = {g['tail_interval'] + 1:g} s",
                f"{p99:.3f} s ({g['segwal']['missing']} never seen)",
                ok,
            )
        )
    if "cpu" in res:
        c = res["cpu"]
        out.append(
            (
                f"writer CPU per append with archiver <= 1.05x without ({c['pairs']} pairs)",
                f"{c['ratio_median']:.3f}x",
                c["ratio_median"] <= 1.05,
            )
        )
    return out


def format_table(res: dict[str, Any], markdown: bool) -> str:
    """The figures as rows ``figure | segwal | Litestream | note``, plain or markdown."""
    rows: list[tuple[str, str, str, str]] = []
    if "restore" in res:
        r = res["restore"]
        rows.append(
            (
                f"restore, {r['entries']:,} entries x {r['payload']} B (median of {r['rounds']}; all runs)",
                f"{r['segwal_median_s']:.2f} s ({', '.join(f'{x:.2f}' for x in r['segwal_s'])})",
                f"{r['litestream_median_s']:.2f} s ({', '.join(f'{x:.2f}' for x in r['litestream_s'])})",
                f"paired ratio segwal/Litestream {r['paired_ratio_median']:.2f}",
            )
        )
        rows.append(
            (
                "bytes in the bucket per payload byte (restore log)",
                f"{r['segwal_uploaded_per_payload']:.2f}",
                f"{r['litestream_bucket_per_payload']:.2f}",
                f"segwal uploaded/written by node {r['segwal_uploaded_per_written']:.2f}",
            )
        )
    if "lag" in res:
        g = res["lag"]
        for key in ("median", "p90", "p99", "max"):
            load = f"{g['rate']:g} calls/s x {g['per_call']}, {g['seconds']:g} s, poll {g['poll_s'] * 1000:g} ms"
            rows.append(
                (
                    f"archive lag {key} ({load})",
                    f"{g['segwal']['lag'][key]:.3f} s",
                    f"{g['litestream']['lag'][key]:.3f} s",
                    f"tail interval {g['tail_interval']:g} s; Litestream sync interval 1 s",
                )
            )
        sc = g.get("segwal_sidecar")
        if sc is not None:
            rows.append(
                (
                    f"archive lag p99, segwal as a sidecar (`segwal archive run`) ({load})",
                    f"{sc['lag']['p99']:.3f} s (median {sc['lag']['median']:.3f}, max {sc['lag']['max']:.3f})",
                    f"{g['litestream']['lag']['p99']:.3f} s",
                    f"{sc['missing']} appends never seen",
                )
            )
        rows.append(
            (
                "lag load: appends never seen in the archive",
                str(g["segwal"]["missing"]),
                str(g["litestream"]["missing"]),
                "",
            )
        )
        rows.append(
            (
                "bytes uploaded per byte written by the node (lag run)",
                f"{g['segwal']['uploaded_per_written']:.2f}",
                "",
                "per payload byte: segwal {:.2f}, Litestream L0 {:.2f}".format(
                    g["segwal"]["uploaded_per_payload"], g["litestream"]["l0_uploaded_per_payload"]
                ),
            )
        )
    if "cpu" in res:
        c = res["cpu"]
        rows.append(
            (
                f"writer CPU per 1-entry append, with/without archiver ({c['pairs']} pairs)",
                f"{c['ratio_median']:.3f}x (min {c['ratio_min']:.3f}, max {c['ratio_max']:.3f})",
                "",
                f"without {c['without_median_us']:.1f} us, with {c['with_median_us']:.1f} us (medians)",
            )
        )
    head = ("figure", "segwal", "Litestream 0.5", "note")
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
    else:
        w = [max(len(r[i]) for r in [head, *rows]) for i in range(4)]
        lines = ["  ".join(c.ljust(w[i]) for i, c in enumerate(r)).rstrip() for r in [head, *rows]]
    return "\n".join(lines)


def plot(res: dict[str, Any], path: str) -> None:
    """A PNG at ``path``: the lag percentiles of each archiver, and every restore time.  Needs matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [k for k in ("lag", "restore") if k in res]
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.6), squeeze=False)
    for ax, key in zip(axes[0], panels, strict=True):
        if key == "lag":
            g = res["lag"]
            for who, label, color in (
                ("segwal", "segwal Archiver (thread)", "#2a7"),
                ("segwal_sidecar", "segwal archive run (sidecar)", "#7c4"),
                ("litestream", "Litestream 0.5", "#888"),
            ):
                pct = g.get(who, {}).get("percentiles") or []
                if pct:
                    ax.plot(pct, range(len(pct)), label=label, color=color)
            ax.axvline(g["tail_interval"] + 1, color="#c33", linestyle="--", linewidth=1, label="target p99")
            ax.set_xlabel("archive lag, s (durable append -> visible in the bucket)")
            ax.set_ylabel("percentile")
            ax.set_title(f"{g['rate']:g} appends/s of {g['per_call']} entries, {g['seconds']:g} s", fontsize=9)
            ax.legend(fontsize=8)
        else:
            r = res["restore"]
            names = ["segwal restore", "litestream restore"]
            vals = [r["segwal_s"], r["litestream_s"]]
            for i, v in enumerate(vals):
                ax.scatter([i] * len(v), v, color=["#2a7", "#888"][i])
                ax.hlines(sorted(v)[len(v) // 2], i - 0.25, i + 0.25, color="black")
            ax.set_xticks(range(2), names)
            ax.set_xlim(-0.6, 1.6)
            ax.set_ylim(bottom=0)
            ax.set_ylabel("seconds (each run; bar: median)")
            ax.set_title(f"restore of {r['entries']:,} entries x {r['payload']} B", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
