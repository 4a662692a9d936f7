"""R1-Zero in miniature: the first two stages of the R1 recipe (r1jax/recipe/stages.py), base
(pretraining the tiny MoE-MLA model) and r1_zero (GRPO with accuracy + format rewards).

  python experiments/r1_zero.py --config configs/r1_pipeline_tiny.py --workdir runs/r1_zero

Prints the before/after held-out table (pass@1 over k samples at T=0.6, top-p 0.95; cons@k),
writes table.md and the R1-Zero figures in miniature: reward_accuracy.png (reward and accuracy vs
GRPO step) and response_length.png. The workdir is a pipeline workdir: experiments/r1_pipeline.py
on the same workdir and config continues from these two stages.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments.cli import parse_args  # noqa: E402

STAGES = ("base", "r1_zero")


def main(argv=None):
    args, cfg = parse_args(argv, description=__doc__)
    from r1jax.distributed import is_main
    from r1jax.eval.plots import plot_curves
    from r1jax.eval.tables import format_table
    from r1jax.recipe.pipeline import run
    from r1jax.train.metrics_log import read_metrics

    results = run(cfg, args.workdir, STAGES)
    if not is_main():
        return
    ev = cfg.r1_zero.eval
    columns = ["model", "pass@1", f"cons@{ev.k}", "response_length"]
    rows = [{"model": name, **{key: results[name][key] for key in columns[1:]}} for name in STAGES]
    table = format_table(rows, columns)
    title = (f"{ev.task} {dict(ev.task_kwargs)}: held-out {ev.num_problems} problems, k={ev.k}, "
             f"T={ev.temperature}, top-p={ev.top_p}")
    with open(os.path.join(args.workdir, "table.md"), "w") as f:
        f.write(f"{title}\n\n{table}\n")
    records = read_metrics(os.path.join(args.workdir, "r1_zero"))
    plot_curves(records, [("reward", ["reward", "accuracy"])],
                os.path.join(args.workdir, "reward_accuracy.png"),
                title=f"R1-Zero miniature ({cfg.r1_zero.task})", xlabel="GRPO step")
    plot_curves(records, [("tokens", ["response_length"])],
                os.path.join(args.workdir, "response_length.png"), title="mean response length",
                xlabel="GRPO step")
    print(f"\n{title}\n{table}\nplots and logs in {args.workdir}")


if __name__ == "__main__":
    main()
