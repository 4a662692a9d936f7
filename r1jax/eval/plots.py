"""PNG curves of a run's metrics.jsonl (matplotlib, no display needed)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_curves(records: list[dict], panels: list[tuple[str, list[str]]], path: str,
                title: str = "", smooth: int = 5, xlabel: str = "step") -> None:
    """One panel per (ylabel, metric keys) vs step; a running mean over `smooth` steps is drawn
    over the raw values."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6))
    axes = [axes] if len(panels) == 1 else axes
    steps = [r["step"] for r in records]
    for ax, (ylabel, keys) in zip(axes, panels):
        for key in keys:
            ys = [r[key] for r in records]
            line, = ax.plot(steps, ys, alpha=0.3)
            if len(ys) >= smooth:
                avg = [sum(ys[max(0, i - smooth + 1):i + 1]) / len(ys[max(0, i - smooth + 1):i + 1])
                       for i in range(len(ys))]
                ax.plot(steps, avg, color=line.get_color(), label=key)
            else:
                line.set_label(key)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
