"""Pictures of a run: accuracy against size and latency (Pareto front marked), training curves."""

from __future__ import annotations

import csv
import math
import os
from typing import Any

from tfimgopt._io import write_with


def pareto_front(rows: list[dict[str, Any]], cost: str) -> list[str]:
    """Names of the variants no other variant beats on both `cost` (lower) and accuracy (higher)."""
    front = []
    for row in rows:
        dominated = any(
            other[cost] <= row[cost] and other["accuracy"] >= row["accuracy"]
            and (other[cost] < row[cost] or other["accuracy"] > row["accuracy"])
            for other in rows
        )
        if not dominated:
            front.append(row["variant"])
    return front


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def tradeoff_plot(rows: list[dict[str, Any]], cost: str, path: str, *, chosen: str | None = None) -> str:
    """Scatter of accuracy against `cost` ("size_bytes" or "latency_ms_median"), front joined."""
    plt = _plt()
    scale = 1 / 1024 if cost == "size_bytes" else 1.0
    label = "model file size (KiB, log scale)" if cost == "size_bytes" else "median latency per image (ms)"
    front = set(pareto_front(rows, cost))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    seen: dict[tuple, int] = {}
    for row in rows:
        on_front = row["variant"] in front
        ax.scatter(row[cost] * scale, 100 * row["accuracy"], s=60 if on_front else 30,
                   c="tab:red" if on_front else "tab:gray", zorder=3)
        # Variants often coincide (e.g. int8 and dynamic sizes): stack their labels.
        spot = (round(math.log10(max(row[cost], 1e-9)), 1), round(100 * row["accuracy"], 1))
        seen[spot] = seen.get(spot, -1) + 1
        ax.annotate(row["variant"] + (" *" if row["variant"] == chosen else ""),
                    (row[cost] * scale, 100 * row["accuracy"]), textcoords="offset points",
                    xytext=(4, 4 - 9 * seen[spot]), fontsize=7)
    points = sorted((r[cost] * scale, 100 * r["accuracy"]) for r in rows if r["variant"] in front)
    if points:
        ax.step([p[0] for p in points], [p[1] for p in points], where="post", c="tab:red", lw=1,
                label="Pareto front")
    if cost == "size_bytes":
        ax.set_xscale("log")
    ax.set_xlabel(label)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"accuracy vs {'size' if cost == 'size_bytes' else 'latency'} (* = selected)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return path


def training_curves(histories: dict[str, str], path: str) -> str | None:
    """Loss and accuracy per epoch from the `history.csv` files of the training stages."""
    series = {}
    for name, csv_path in histories.items():
        if os.path.isfile(csv_path):
            with open(csv_path, newline="") as f:
                rows = list(csv.DictReader(f))
            if rows:
                series[name] = rows
    if not series:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name, rows in series.items():
        epochs = [int(r["epoch"]) + 1 for r in rows]
        for ax, key in zip(axes, ("loss", "accuracy"), strict=True):
            if key in rows[0]:
                ax.plot(epochs, [float(r[key]) for r in rows], marker="o", ms=3, label=f"{name} train")
            if f"val_{key}" in rows[0]:
                ax.plot(epochs, [float(r[f"val_{key}"]) for r in rows], ls="--", label=f"{name} val")
    for ax, key in zip(axes, ("loss", "accuracy"), strict=True):
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("training curves")
    fig.tight_layout()
    write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return path
