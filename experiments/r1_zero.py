"""R1-Zero in miniature: the first two stages of the R1 recipe (r1jax/recipe/stages.py), base
(pretraining the tiny MoE-MLA model) and r1_zero (GRPO with accuracy + format rewards).

  python experiments/r1_zero.py --config configs/r1_pipeline_tiny.py --workdir runs/r1_zero

Prints the before/after held-out table (pass@1 over k samples at T=0.6, top-p 0.95; cons@k),
then R1-Zero's training curves (rollout accuracy, response length and, on Countdown, the share of
responses that check and revise an attempt: first vs last GRPO steps); writes table.md and the
figures reward_accuracy.png (reward and accuracy vs GRPO step) and r1_zero_curves.png (accuracy,
length and revisions vs GRPO step, the paper's R1-Zero figures in miniature). The workdir is a
pipeline workdir: experiments/r1_pipeline.py on the same workdir and config continues from these
two stages.
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
    from r1jax.recipe.curves import plot_seed_curves
    from r1jax.recipe.tables import make_table
    from r1jax.recipe.tables import title as title_of
    from r1jax.train.metrics_log import read_metrics

    results = run(cfg, args.workdir, STAGES)
    if not is_main():
        return
    ev = cfg.r1_zero.eval
    columns = ["model", "pass@1", f"cons@{ev.k}", "response_length"]
    columns += ["revisions"] if all("revisions" in results[name] for name in STAGES) else []
    rows = [{"model": name, **{key: results[name][key] for key in columns[1:]}} for name in STAGES]
    title = (f"{ev.task} {dict(ev.task_kwargs)}: held-out {ev.num_problems} problems, k={ev.k}, "
             f"T={ev.temperature}, top-p={ev.top_p}")
    table = (f"{format_table(rows, columns)}\n{title_of('r1_zero_curve', cfg)}\n\n"
             f"{make_table('r1_zero_curve', results)}")
    with open(os.path.join(args.workdir, "table.md"), "w") as f:
        f.write(f"{title}\n\n{table}\n")
    records = read_metrics(os.path.join(args.workdir, "r1_zero"))
    plot_curves(records, [("reward", ["reward", "accuracy"])],
                os.path.join(args.workdir, "reward_accuracy.png"),
                title=f"R1-Zero miniature ({cfg.r1_zero.task})", xlabel="GRPO step")
    plot_seed_curves([records], os.path.join(args.workdir, "r1_zero_curves.png"),
                     title=f"R1-Zero miniature ({cfg.r1_zero.task}): rollouts during GRPO")
    print(f"\n{title}\n{table}\nplots and logs in {args.workdir}")


if __name__ == "__main__":
    main()
