"""FP8 loss parity in miniature (V3 §3.3: relative loss error < 0.25% vs BF16), over seeds.

Trains the same tiny MoE-MLA model on the same data with three recipes: BF16 (activations and
projections in bfloat16), fp8_v3 (1x128 / 128x128 E4M3 tiles, FP32 promotion) and
fp8_per_tensor (the coarse baseline). Seed s (of --seeds N) moves the init of all three together
(the data order stays), so each FP8 run is compared with the BF16 run of its own seed; the table
prints mean ± sample std over the seeds, the BF16 seed-to-seed spread a recipe difference must be
read against, and the machine. Plots the curves of seed 0.

  python experiments/fp8_loss_parity.py --workdir /tmp/fp8 [--steps 300] [--seeds 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments.cli import single_process_only  # noqa: E402
from r1jax.eval.tables import mean_std  # noqa: E402

RECIPES = ("bf16", "fp8_v3", "fp8_per_tensor")


def parity_rows(finals: dict[str, list[float]]) -> list[dict]:
    """finals: recipe -> final NLL per seed (same seed order). Each FP8 recipe's relative
    difference is taken against the BF16 run of the same seed, then summarised over seeds."""
    ref = np.asarray(finals["bf16"])
    rows = []
    for recipe, values in finals.items():
        rel = 100 * (np.asarray(values) - ref) / ref
        rows.append({"recipe": recipe, "final NLL": mean_std(values, ".4f"),
                     "rel. diff vs bf16, same seed (%)": mean_std(list(rel), "+.3f"),
                     "max |rel. diff| (%)": f"{np.max(np.abs(rel)):.3f}"})
    if len(ref) > 1:  # the spread of BF16 itself across seeds, relative to its mean
        rows.append({"recipe": "bf16 seed-to-seed spread", "final NLL": "",
                     "rel. diff vs bf16, same seed (%)": f"std {100 * np.std(ref, ddof=1) / np.mean(ref):.3f}",
                     "max |rel. diff| (%)": f"{100 * (ref.max() - ref.min()) / np.mean(ref):.3f} (range)"})
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--window", type=int, default=50, help="final loss = mean NLL of the last N steps")
    parser.add_argument("--seeds", type=int, default=3, help="init seeds 0..N-1")
    args = parser.parse_args()
    single_process_only("experiments/fp8_loss_parity.py")
    if args.seeds < 1 or args.steps < 1 or not 1 <= args.window <= args.steps:
        parser.error("need --seeds >= 1, --steps >= 1 and 1 <= --window <= --steps")

    from r1jax.eval.machine import describe
    from r1jax.eval.plots import plot_curves
    from r1jax.eval.tables import format_table
    from r1jax.train.experiment import TrainConfig, load_config
    from r1jax.train.supervised import run

    base = load_config(os.path.join(os.path.dirname(__file__), "..", "configs", "pretrain_tiny.py"))
    train = TrainConfig(steps=args.steps, log_every=1, ckpt_every=args.steps, async_checkpoint=False)
    histories = {}  # (recipe, seed) -> metrics records
    for seed in range(args.seeds):
        for recipe in RECIPES:
            model = dataclasses.replace(base.model, precision=recipe, dtype="bfloat16")
            cfg = dataclasses.replace(base, name=f"fp8_parity_{recipe}", model=model,
                                      train=dataclasses.replace(train, seed=train.seed + seed))
            workdir = os.path.join(args.workdir, f"seed_{seed}", recipe)
            run(cfg, workdir)
            with open(os.path.join(workdir, "metrics.jsonl")) as f:
                histories[recipe, seed] = [json.loads(line) for line in f]

    def final(recipe, seed):
        nll = [r["nll"] for r in histories[recipe, seed][-args.window:]]
        return sum(nll) / len(nll)

    finals = {r: [final(r, s) for s in range(args.seeds)] for r in RECIPES}
    table = format_table(parity_rows(finals), ["recipe", "final NLL", "rel. diff vs bf16, same seed (%)",
                                               "max |rel. diff| (%)"])
    text = (f"final NLL = mean of the last {args.window} of {args.steps} steps, {args.seeds} "
            f"seed(s)\n{table}\nmachine: {describe()}\n")
    print("\n" + text)
    with open(os.path.join(args.workdir, "table.md"), "w") as f:
        f.write(text)
    with open(os.path.join(args.workdir, "finals.json"), "w") as f:
        json.dump(finals, f, indent=2)
    histories = {r: histories[r, 0] for r in RECIPES}  # the curves of seed 0
    # Panel 2: per-step relative difference to BF16 (same data order, so step-wise comparable).
    merged = []
    for i, a in enumerate(histories["bf16"]):
        row = {"step": a["step"], **{r: histories[r][i]["nll"] for r in histories}}
        row.update({f"{r} vs bf16 (%)": 100 * (row[r] - row["bf16"]) / row["bf16"]
                    for r in histories if r != "bf16"})
        merged.append(row)
    plot_curves(merged, [("train NLL", list(histories)),
                         ("relative NLL difference (%)", [f"{r} vs bf16 (%)" for r in histories if r != "bf16"])],
                os.path.join(args.workdir, "fp8_parity.png"),
                title="FP8 recipes vs BF16 (tiny MoE-MLA)", smooth=25, xlabel="training step")

if __name__ == "__main__":
    main()
