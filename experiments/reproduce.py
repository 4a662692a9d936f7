"""Paper tables in miniature: runs (or resumes) the pipeline stages a table needs, then prints
it as markdown and writes workdir/table_<name>.md.

  python experiments/reproduce.py --table stages --config configs/r1_pipeline_tiny.py --workdir runs/r1_pipeline
  python experiments/reproduce.py --table distill_vs_rl --config configs/r1_pipeline_tiny.py --workdir runs/r1_pipeline

stages:        base, R1-Zero, Dev1 (cold-start SFT), Dev2 (+ reasoning RL), Dev3 (+ rejection
               sampling SFT), R1 (+ all-scenario RL): the Nature paper's Table 2.
distill_vs_rl: the dense student with GRPO alone vs distilled from R1 at matched student
               FLOPs: R1's Table 6.
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

    args, cfg = parse_args(argv, description=__doc__, add_arguments=flags)
    from r1jax.recipe.pipeline import run
    from r1jax.recipe.tables import needed

    results = run(cfg, args.workdir, needed(args.table))
    write_tables(cfg, results, args.workdir, (args.table,))


if __name__ == "__main__":
    main()
