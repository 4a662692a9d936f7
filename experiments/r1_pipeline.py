"""The R1 recipe in miniature: base -> R1-Zero; cold-start SFT -> reasoning RL -> rejection
sampling + SFT -> all-scenario RL; and a dense student distilled from the result vs trained with
GRPO alone. The stages and what each reads: r1jax/recipe/stages.py.

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


def write_tables(cfg, runs: dict | list[dict], workdir: str, tables) -> None:
    """Print and write the tables of one run's results or several seeds' (process 0 only)."""
    from r1jax.distributed import is_main
    from r1jax.eval.machine import describe
    from r1jax.recipe.tables import make_table, title

    if not is_main():
        return
    runs = [runs] if isinstance(runs, dict) else runs
    seeds = "seed 0" if len(runs) == 1 else f"mean ± std over seeds 0-{len(runs) - 1}"
    for name in tables:
        try:
            table = make_table(name, runs)
        except ValueError as e:  # e.g. a workdir recorded before the table's data was kept
            print(f"\n{name}: not written: {e}")
            continue
        text = f"{name}: {title(name, cfg)}; {seeds}\n\n{table}\n{describe()}\n"
        with open(os.path.join(workdir, f"table_{name}.md"), "w") as f:
            f.write(text)
        print(f"\n{text}")


def main(argv=None):
    def flags(parser):
        parser.add_argument("--stages", default="", help="comma-separated stages (default: all)")

    args, cfg = parse_args(argv, description=__doc__, add_arguments=flags)
    from r1jax.distributed import is_main
    from r1jax.recipe.pipeline import run
    from r1jax.recipe.stages import STAGE_NAMES
    from r1jax.recipe.tables import TABLES

    stages = tuple(s for s in args.stages.split(",") if s) or STAGE_NAMES
    t0 = time.perf_counter()
    results = run(cfg, args.workdir, stages)
    write_tables(cfg, results, args.workdir, TABLES)
    if is_main():
        print(f"\n{time.perf_counter() - t0:.0f} s; logs, checkpoints and tables in {args.workdir}")


if __name__ == "__main__":
    main()
