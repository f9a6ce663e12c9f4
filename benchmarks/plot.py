"""PNG figures of a result document (matplotlib, Agg backend):

* ``throughput.png``: ops/s per workload, one bar per engine (log scale).
* ``latency_fillsync.png``: latency distribution (CDF, log x) of
  ``fillsync`` and ``fillsync_threads`` per engine, from the stored
  percentiles (``extra.latency_cdf_us``), with the disk's own
  ``limits`` fdatasync latencies dashed when they were measured.
* ``timeline_fillrandom.png``: ops/s in each 100 ms interval during
  ``fillrandom``; write stalls show as dips.
"""

from __future__ import annotations

import os

LIMIT_LINES = {
    "limits.append_fdatasync": "append+fdatasync",
    "limits.prealloc_fdatasync": "prealloc+fdatasync",
}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_all(doc: dict, directory: str) -> list[str]:
    """Write the figures the results allow; return the paths written."""
    os.makedirs(directory, exist_ok=True)
    written = []
    for fn in (throughput, latency_cdf, timeline_fillrandom):
        path = fn(doc, directory)
        if path:
            written.append(path)
    return written


def _title(doc: dict, what: str) -> str:
    cfg = doc["header"].get("config", {})
    if not cfg:
        return what
    return f"{what}\n{cfg['num']:,} keys, {cfg['key_size']} B keys, {cfg['value_size']} B values"


def throughput(doc: dict, directory: str) -> str | None:
    # limits measure the disk, not a workload: they are in the latency figure.
    results = [r for r in doc["results"] if r["ops_per_sec"] > 0 and not r["workload"].startswith("limits")]
    if not results:
        return None
    plt = _pyplot()
    workloads = list(dict.fromkeys(r["workload"] for r in results))
    engines = list(dict.fromkeys(r["engine"] for r in results))
    by = {(r["engine"], r["workload"]): r["ops_per_sec"] for r in results}
    width = 0.8 / max(1, len(engines))
    fig, ax = plt.subplots(figsize=(max(8, 1.1 * len(workloads) + 2), 5))
    for i, eng in enumerate(engines):
        xs = [j + (i - (len(engines) - 1) / 2) * width for j, w in enumerate(workloads) if (eng, w) in by]
        ys = [by[(eng, w)] for w in workloads if (eng, w) in by]
        ax.bar(xs, ys, width, label=eng)
    ax.set_yscale("log")
    ax.set_xticks(range(len(workloads)))
    ax.set_xticklabels(workloads, rotation=35, ha="right")
    ax.set_ylabel("ops/s (log scale)")
    ax.set_title(_title(doc, "Throughput per workload"))
    ax.grid(axis="y", which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = os.path.join(directory, "throughput.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def latency_cdf(doc: dict, directory: str) -> str | None:
    names = [
        w
        for w in ("fillsync", "fillsync_threads")
        if any(r["workload"] == w and r["extra"].get("latency_cdf_us") for r in doc["results"])
    ]
    if not names:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(names), figsize=(6.5 * len(names), 4.5), squeeze=False)
    for ax, name in zip(axes[0], names):
        for r in doc["results"]:
            cdf = r["extra"].get("latency_cdf_us")
            if r["workload"] != name or not cdf:
                continue
            xs = [max(us, 0.01) for _p, us in cdf]
            ys = [p for p, _us in cdf]
            ax.step(xs, ys, where="post", label=r["engine"])
        for r in doc["results"]:
            cdf = r["extra"].get("latency_cdf_us")
            if r["workload"] in LIMIT_LINES and cdf:
                ax.step(
                    [max(us, 0.01) for _p, us in cdf],
                    [p for p, _us in cdf],
                    where="post",
                    linestyle="--",
                    linewidth=1,
                    color="grey" if "append" in r["workload"] else "black",
                    label=f"{r['engine']}: {LIMIT_LINES[r['workload']]}",
                )
        ax.set_xscale("log")
        ax.set_xlabel("latency per commit (us, log scale)")
        ax.set_ylabel("percentile")
        ax.set_ylim(0, 100.5)
        ax.grid(which="both", alpha=0.3)
        ax.set_title(name)
        ax.legend()
    fig.suptitle(_title(doc, "Synced write latency (CDF)"))
    fig.tight_layout()
    path = os.path.join(directory, "latency_fillsync.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def timeline_fillrandom(doc: dict, directory: str) -> str | None:
    runs = [r for r in doc["results"] if r["workload"] == "fillrandom" and r["extra"].get("timeline_ops")]
    if not runs:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for r in runs:
        step = r["extra"].get("timeline_interval_ms", 100) / 1000.0
        counts = r["extra"]["timeline_ops"]
        # The last bucket is partial: divide by its real width.
        widths = [step] * (len(counts) - 1) + [max(r["seconds"] - step * (len(counts) - 1), 1e-6)]
        rates = [c / w for c, w in zip(counts, widths)]
        xs = [i * step for i in range(len(counts))] + [r["seconds"]]
        ax.step(xs, rates + rates[-1:], where="post", label=r["engine"], linewidth=1)
    ax.set_xlabel("seconds since start of fillrandom")
    ax.set_ylabel("ops/s (per 100 ms)")
    ax.set_ylim(bottom=0)
    ax.grid(which="both", alpha=0.3)
    ax.set_title(_title(doc, "fillrandom throughput over time (dips are stalls)"))
    ax.legend()
    fig.tight_layout()
    path = os.path.join(directory, "timeline_fillrandom.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
