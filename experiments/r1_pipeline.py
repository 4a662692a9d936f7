"""The R1 recipe in miniature: base -> R1-Zero; cold-start SFT -> reasoning RL -> rejection
sampling + SFT -> all-scenario RL; and a dense student distilled from the result vs trained with
GRPO alone. Stage list and starting points: r1jax/recipe/config.py.

  python experiments/r1_pipeline.py --config configs/r1_pipeline_tiny.py --workdir runs/r1_pipeline
  python experiments/r1_pipeline.py ... --stages cold_start,reasoning_rl   # these and what they need

Resumable: rerun the same command after an interruption; finished stages are skipped. Prints and
writes (workdir/table_<name>.md) both paper tables; each stage's eval is in <stage>/eval.md.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments.cli import parse_args  # noqa: E402


def write_tables(cfg, results: dict, workdir: str, tables) -> None:
    from r1jax.recipe.tables import make_table

    title = (f"{cfg.task} {dict(cfg.task_kwargs)}: held-out {cfg.eval.num_problems} problems, "
             f"pass@1 over k={cfg.eval.k} at T={cfg.eval.temperature}, top-p={cfg.eval.top_p}")
    for name in tables:
        text = f"{name}: {title}\n\n{make_table(name, results)}"
        with open(os.path.join(workdir, f"table_{name}.md"), "w") as f:
            f.write(text)
        print(f"\n{text}")


def main(argv=None):
    def flags(parser):
        parser.add_argument("--stages", default="", help="comma-separated stages (default: all)")

    args, cfg = parse_args(argv, description=__doc__, add_arguments=flags)
    from r1jax.recipe.config import STAGES
    from r1jax.recipe.pipeline import run
    from r1jax.recipe.tables import TABLES

    stages = tuple(s for s in args.stages.split(",") if s) or STAGES
    t0 = time.perf_counter()
    results = run(cfg, args.workdir, stages)
    write_tables(cfg, results, args.workdir, TABLES)
    print(f"\n{time.perf_counter() - t0:.0f} s; logs, checkpoints and tables in {args.workdir}")


if __name__ == "__main__":
    main()
