"""The soak's PNG: the gateway's RSS (with the baseline and the +5 % limit), open fds, and
request latency p50/p99 per type over time; reloads as dotted vertical lines."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display: write files only
    import matplotlib.pyplot as plt

    samples = result["samples"]
    minutes = [s["t_s"] / 60 for s in samples]
    fig, (ax_rss, ax_fds, ax_lat) = plt.subplots(
        3, 1, figsize=(11, 10), sharex=True, gridspec_kw={"height_ratios": [2, 1, 3]}
    )
    verdict = result.get("verdict", {})
    fig.suptitle(f"dify-gateway soak, {result['meta']['started']}: {verdict.get('result', 'running')}")

    ax_rss.plot(minutes, [s["rss_mb"] for s in samples], label="gateway process RSS")
    # The embedded models' processes (Whisper, ~200 MB) would flatten the gateway's own line: own axis.
    ax_tree = ax_rss.twinx()
    ax_tree.plot(minutes, [s["tree_rss_mb"] for s in samples], color="tab:orange", alpha=0.5)
    ax_tree.set_ylabel("MB with embedded-model processes (orange)", fontsize="small")
    baseline = verdict.get("rss_baseline_mb")
    if baseline:
        limit = baseline * (1 + result["meta"]["rss_tolerance"])
        ax_rss.axhline(baseline, color="grey", linestyle="--", linewidth=0.8, label="baseline")
        ax_rss.axhline(limit, color="red", linestyle="--", linewidth=0.8, label="fail above")
        ax_rss.axvline(verdict["baseline_t_s"] / 60, color="grey", linewidth=0.8)
    ax_rss.set_ylabel("MB")
    ax_rss.legend(loc="lower right", fontsize="small")

    ax_fds.plot(minutes, [s["fds_own"] for s in samples], color="tab:green", label="open fds (judged)")
    ax_fds.plot(minutes, [s["fds"] for s in samples], color="tab:green", alpha=0.4, label="with inbound connections")
    ax_fds.set_ylabel("fds")
    ax_fds.legend(loc="lower right", fontsize="small")

    names = sorted({name for s in samples for name in s["types"]})
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, name in enumerate(names):
        color = colors[i % len(colors)]
        for q, style in (("p50", "-"), ("p99", ":")):
            points = [
                (m, s["types"][name][q])
                for m, s in zip(minutes, samples, strict=True)
                if s["types"].get(name, {}).get(q)
            ]
            if points:
                xs, ys = zip(*points, strict=True)
                ax_lat.plot(xs, ys, style, color=color, label=f"{name} {q}")
    ax_lat.set_yscale("log")
    ax_lat.set_ylabel("latency, ms (log)")
    ax_lat.set_xlabel("minutes")
    ax_lat.legend(loc="upper left", fontsize="x-small", ncol=4)
    for reload in result.get("reloads", []):
        for ax in (ax_rss, ax_fds, ax_lat):
            ax.axvline(reload["t_s"] / 60, color="purple", linestyle=":", linewidth=0.6, alpha=0.5)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
