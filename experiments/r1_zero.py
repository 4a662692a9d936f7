"""R1-Zero in miniature: pretrain a tiny MoE-MLA base, then GRPO with accuracy + format rewards.

  python experiments/r1_zero.py --config configs/r1_zero_tiny.py --workdir /tmp/r1_zero

Prints the before/after held-out table (pass@1 over k samples at T=0.6, top-p 0.95; cons@k),
writes metrics.jsonl, eval.json, table.md and the R1-Zero figures in miniature:
reward_accuracy.png (reward and accuracy vs step) and response_length.png.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments.cli import parse_args  # noqa: E402


def main(argv=None):
    args, cfg = parse_args(argv, description=__doc__)
    from r1jax.eval.plots import plot_curves
    from r1jax.eval.tables import format_table
    from r1jax.rl.r1_zero import run
    from r1jax.train.metrics_log import read_metrics

    results = run(cfg, args.workdir)
    k = cfg.rl.eval.k
    rows = [{"model": name, **{key: results[name][key] for key in ("pass@1", f"cons@{k}", "response_length")}}
            for name in ("base", "r1_zero")]
    table = format_table(rows, ["model", "pass@1", f"cons@{k}", "response_length"])
    title = (f"{cfg.rl.task}: held-out {results['base']['problems']} problems, k={k}, "
             f"T={cfg.rl.eval.temperature}, top-p={cfg.rl.eval.top_p}")
    with open(os.path.join(args.workdir, "table.md"), "w") as f:
        f.write(f"{title}\n\n{table}\n")
    records = read_metrics(args.workdir)
    plot_curves(records, [("reward", ["reward", "accuracy"])],
                os.path.join(args.workdir, "reward_accuracy.png"), title=f"R1-Zero miniature ({cfg.rl.task})", xlabel="GRPO step")
    plot_curves(records, [("tokens", ["response_length"])],
                os.path.join(args.workdir, "response_length.png"), title="mean response length", xlabel="GRPO step")
    print(f"\n{title}\n{table}\nplots and logs in {args.workdir}")


if __name__ == "__main__":
    main()
