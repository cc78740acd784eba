"""PNG plots of a results dict (matplotlib, no display)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def throughput_plot(rates: dict[str, float], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(8, 4))
    names = list(rates)
    bars = ax.barh(names, [rates[n] for n in names], color="tab:blue")
    ax.bar_label(bars, fmt="%.1f")
    ax.set_xlabel("clips/s (same run, same machine)")
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def latency_plot(latencies: list[float], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4))
    xs = sorted(latencies)
    ax.plot(xs, [(i + 1) / len(xs) for i in range(len(xs))], drawstyle="steps-post")
    ax.axvline(0.5, color="tab:red", linestyle="--", label="p95 target 0.5 s")
    ax.set_xlabel("enqueue → tag latency (s)")
    ax.set_ylabel("fraction of tracks")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def sweep_plot(series: dict[str, dict[int, float]], xlabel: str, ylabel: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, points in series.items():
        xs = sorted(points)
        ax.plot(xs, [points[x] for x in xs], marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
