"""Paper tables in miniature: runs (or resumes) the pipeline stages a table needs, for one seed or
several, then prints it as markdown (mean ± sample standard deviation over the seeds, and the
machine it ran on) and writes workdir/table_<name>.md.

  python experiments/reproduce.py --table stages --config configs/r1_pipeline_tiny.py --workdir runs/r1_pipeline
  python experiments/reproduce.py --table distill_vs_rl --config configs/r1_pipeline_tiny.py --workdir runs/r1_pipeline --seeds 3

stages:        base, R1-Zero, Dev1 (cold-start SFT), Dev2 (+ reasoning RL), Dev3 (+ rejection
               sampling SFT), R1 (+ all-scenario RL): the Nature paper's Table 2.
distill_vs_rl: the dense student with GRPO alone vs distilled from R1 at matched student
               FLOPs: R1's Table 6.
r1_zero_curve: R1-Zero's rollouts during GRPO (accuracy, response length, the share that check
               or revise), first vs last steps; also draws workdir/r1_zero_curves.png.
--seeds N:     runs seeds 0..N-1 (r1jax/recipe/seeds.py: seed 0 in the workdir, seed s in
               workdir/seed_<s>); each finished run is reused, so adding seeds costs only the new
               ones. Each seed takes as long as one pipeline run.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments.cli import parse_args  # noqa: E402
from experiments.r1_pipeline import write_tables  # noqa: E402


def main(argv=None):
    def flags(parser):
        from r1jax.recipe.tables import TABLES

        parser.add_argument("--table", required=True, choices=TABLES)
        parser.add_argument("--seeds", type=int, default=1, help="runs with seeds 0..N-1")

    args, cfg = parse_args(argv, description=__doc__, add_arguments=flags)
    if args.seeds < 1:
        raise SystemExit(f"--seeds={args.seeds} must be >= 1")
    from r1jax.distributed import is_main
    from r1jax.recipe.pipeline import run
    from r1jax.recipe.seeds import seed_workdir, seeded
    from r1jax.recipe.tables import needed

    runs = [run(seeded(cfg, s), seed_workdir(args.workdir, s), needed(args.table))
            for s in range(args.seeds)]
    write_tables(cfg, runs, args.workdir, (args.table,))
    if args.table == "r1_zero_curve" and is_main():
        from r1jax.recipe.curves import plot_seed_curves
        from r1jax.train.metrics_log import read_metrics

        per_seed = [read_metrics(os.path.join(seed_workdir(args.workdir, s), "r1_zero"))
                    for s in range(args.seeds)]
        path = os.path.join(args.workdir, "r1_zero_curves.png")
        plot_seed_curves(per_seed, path, title=f"R1-Zero in miniature ({cfg.r1_zero.task}): "
                         f"GRPO rollouts, {args.seeds} seed(s)")
        print(f"figure: {path}")


if __name__ == "__main__":
    main()
