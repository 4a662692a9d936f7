"""R1-Zero's training curves in miniature: rollout accuracy, response length and the share of
responses that check and revise a step, per GRPO step (the paper's Fig. 1 and the length and
"aha" figures, REFERENCE §4.1), summarised and plotted over seeds.

A GRPO stage's record in eval.json keeps `rollouts`: each metric's mean over the first and the
last `WINDOW` steps of its metrics.jsonl, so the table is written from eval.json alone (as every
recipe table is) and a stored eval file reproduces it.
"""

from __future__ import annotations

import numpy as np

from r1jax.eval.tables import format_table, mean_std

CURVE_METRICS = (("rollout accuracy (%)", "accuracy", 100.0),
                 ("response length (tokens)", "response_length", 1.0),
                 ("responses that check or revise (%)", "revisions", 1.0))  # (label, metrics key, scale)
WINDOW = 10  # steps averaged at each end of the run


def by_step(records: list[dict]) -> list[dict]:
    """One record per step, the last one logged (a resumed run may log a step twice), in order."""
    last = {r["step"]: r for r in records if "step" in r}
    return [last[s] for s in sorted(last)]


def summarize_curve(records: list[dict], window: int = WINDOW) -> dict:
    """{metric key: {"first": mean of the first `window` steps, "last": of the last}}, plus
    `steps`; only the metrics the run logged."""
    records = by_step(records)
    out = {"steps": len(records), "window": window}
    for _, key, scale in CURVE_METRICS:
        values = [scale * r[key] for r in records if key in r]
        if len(values) == len(records) and values:
            out[key] = {"first": float(np.mean(values[:window])),
                        "last": float(np.mean(values[-window:]))}
    return out


def curve_table(runs: list[dict], stage: str = "r1_zero") -> str:
    """First vs last steps of `stage`'s rollouts over the runs (seeds): mean ± sample std."""
    summaries = [r[stage]["rollouts"] for r in runs if "rollouts" in r.get(stage, {})]
    if len(summaries) != len(runs):
        raise ValueError(f"{stage}: rollout curves recorded by {len(summaries)} of {len(runs)} "
                         "runs (a run recorded before curves were kept: rerun that stage)")
    window = summaries[0]["window"]
    rows = []
    for label, key, _ in CURVE_METRICS:
        if not all(key in s for s in summaries):
            continue
        first = [s[key]["first"] for s in summaries]
        last = [s[key]["last"] for s in summaries]
        rows.append({"GRPO rollouts": label, f"first {window} steps": mean_std(first),
                     f"last {window} steps": mean_std(last),
                     "change": mean_std([b - a for a, b in zip(first, last)], "+.1f"),
                     "runs where it rose": f"{sum(b > a for a, b in zip(first, last))} of {len(runs)}"})
    columns = ["GRPO rollouts", f"first {window} steps", f"last {window} steps", "change",
               "runs where it rose"]
    return format_table(rows, columns)


def plot_seed_curves(per_seed: list[list[dict]], path: str, title: str, smooth: int = 5) -> None:
    """One panel per curve metric: each seed's running mean (thin) and their mean (bold)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_seed = [by_step(records) for records in per_seed]
    panels = [(label, key, scale) for label, key, scale in CURVE_METRICS
              if all(key in r for records in per_seed for r in records)]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.6), squeeze=False)
    for ax, (label, key, scale) in zip(axes[0], panels):
        smoothed = []
        for records in per_seed:
            ys = np.asarray([scale * r[key] for r in records])
            kernel = np.ones(min(smooth, len(ys))) / min(smooth, len(ys))
            ys = np.convolve(ys, kernel, mode="valid")
            smoothed.append(ys)
            ax.plot(np.arange(len(ys)) + len(kernel), ys, color="tab:blue", alpha=0.3, lw=1)
        n = min(len(ys) for ys in smoothed)
        mean = np.mean([ys[:n] for ys in smoothed], axis=0)
        ax.plot(np.arange(n) + len(kernel), mean, color="tab:blue", lw=2.2,
                label=f"mean of {len(per_seed)} seed(s)")
        ax.set_xlabel("GRPO step")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
