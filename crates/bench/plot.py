"""Draws roomstate-bench's results.json as PNG plots (run by roomstate-bench after a run).

    python3 crates/bench/plot.py bench-results/results.json bench-results/
"""
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

results = json.loads(Path(sys.argv[1]).read_text())
out = Path(sys.argv[2])
colors = {"floor": "#888888", "roomstate": "#1f6fd1", "roomstate_cluster": "#2ca02c", "y_websocket": "#d1501f"}
labels = {
    "floor": "floor (bare fan-out)",
    "roomstate": "roomstate (1 node)",
    "roomstate_cluster": "roomstate (2 nodes + Redis)",
    "y_websocket": "y-websocket (Y.Map)",
}
w1 = results.get("propagation", [])


def finish(figure, axes, title, xlabel, ylabel, name):
    """Labels, grid and legend, then saves `name` in the output folder."""
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(out / name, dpi=120)


if w1:
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for system in colors:
        runs = sorted((r for r in w1 if r["system"] == system), key=lambda r: r["observers"])
        if not runs:
            continue
        n = [r["observers"] for r in runs]
        axes.plot(n, [r["until_all"]["p50_us"] / 1000 for r in runs], "-o", color=colors[system], label=f"{labels[system]} p50")
        axes.plot(n, [r["until_all"]["p99_us"] / 1000 for r in runs], "--", color=colors[system], label=f"{labels[system]} p99")
    axes.set_xscale("log")
    axes.set_yscale("log")
    finish(figure, axes, "W1: one writer at 20 Hz, 64-byte value", "observers (N)",
           "until all N have the write (ms)", "w1-latency-vs-n.png")

    largest = max(r["observers"] for r in w1)
    for n in sorted({100, largest}):
        figure, axes = plt.subplots(figsize=(7, 4.5))
        for r in (r for r in w1 if r["observers"] == n):
            cdf = r["per_delivery"].get("cdf", [])
            if cdf:
                axes.plot([us / 1000 for _, us in cdf], [q for q, _ in cdf], color=colors[r["system"]], label=labels[r["system"]])
        axes.set_xscale("log")
        finish(figure, axes, f"W1 latency CDF, N = {n}", "delivery latency (ms)",
               "fraction of deliveries", f"w1-cdf-n{n}.png")

w2 = results.get("throughput", [])
if w2:
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for r in w2:
        steps = r["steps"]
        style = "-o" if not r["one_key"] else "--s"
        axes.plot([s["deliveries_per_second"] for s in steps], [s["per_delivery"]["p99_us"] / 1000 for s in steps], style,
                  color=colors[r["system"]], label=f"{labels[r['system']]}, {'one key' if r['one_key'] else 'distinct keys'}")
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.axhline(100, color="#cc0000", linewidth=0.8, linestyle=":")
    finish(figure, axes, "W2: 10 writers, 10 observers of every key", "deliveries per second",
           "p99 delivery latency (ms)", "w2-throughput.png")

w4 = results.get("idle_connections", [])
if w4:
    figure, axes = plt.subplots(figsize=(7, 4.5))
    counts = sorted({r["connections"] for r in w4})
    systems = [system for system in colors if any(r["system"] == system for r in w4)]
    width = 0.8 / len(systems)
    for i, system in enumerate(systems):
        by_count = {r["connections"]: r["bytes_per_connection"] for r in w4 if r["system"] == system}
        axes.bar([c + (i - (len(systems) - 1) / 2) * width for c in range(len(counts))],
                 [by_count.get(count, 0) for count in counts], width, color=colors[system], label=labels[system])
    axes.set_xticks(range(len(counts)), [f"{count:,} connections" for count in counts])
    axes.axhline(8192, color="#cc0000", linewidth=0.8, linestyle=":")
    axes.set_ylim(0, max(r["bytes_per_connection"] for r in w4) * 1.45)  # room for the legend
    finish(figure, axes, "W4: idle connections (rooms of 50, one key observed)", "",
           "resident bytes per idle connection", "w4-idle-memory.png")

print("plots written to", out)
