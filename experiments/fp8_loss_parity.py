"""FP8 loss parity in miniature (V3 §3.3: relative loss error < 0.25% vs BF16).

Trains the same tiny MoE-MLA model on the same data three times: BF16 (activations and
projections in bfloat16), fp8_v3 (1x128 / 128x128 E4M3 tiles, FP32 promotion) and
fp8_per_tensor (the coarse baseline), then prints a table and plots the curves.

  python experiments/fp8_loss_parity.py --workdir /tmp/fp8 [--steps 300] [--seed_reference]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments.cli import single_process_only  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--window", type=int, default=50, help="final loss = mean NLL of the last N steps")
    parser.add_argument("--seed_reference", action="store_true",
                        help="also train BF16 from another init seed: the run-to-run spread that "
                             "a recipe difference must be read against")
    args = parser.parse_args()
    single_process_only("experiments/fp8_loss_parity.py")

    from r1jax.eval.plots import plot_curves
    from r1jax.eval.tables import format_table
    from r1jax.train.experiment import TrainConfig, load_config
    from r1jax.train.supervised import run

    base = load_config(os.path.join(os.path.dirname(__file__), "..", "configs", "pretrain_tiny.py"))
    train = TrainConfig(steps=args.steps, log_every=1, ckpt_every=args.steps, async_checkpoint=False)
    runs = [(recipe, recipe, train.seed) for recipe in ("bf16", "fp8_v3", "fp8_per_tensor")]
    if args.seed_reference:
        runs.append(("bf16 (init seed +1)", "bf16", train.seed + 1))
    histories = {}
    for name, recipe, seed in runs:
        model = dataclasses.replace(base.model, precision=recipe, dtype="bfloat16")
        cfg = dataclasses.replace(base, name=f"fp8_parity_{recipe}", model=model,
                                  train=dataclasses.replace(train, seed=seed))
        workdir = os.path.join(args.workdir, recipe if seed == train.seed else f"{recipe}_seed{seed}")
        run(cfg, workdir)
        with open(os.path.join(workdir, "metrics.jsonl")) as f:
            histories[name] = [json.loads(line) for line in f]

    def final(recipe):
        nll = [r["nll"] for r in histories[recipe][-args.window:]]
        return sum(nll) / len(nll)

    ref = final("bf16")
    rows = [{"recipe": r, "final NLL": final(r), "rel. diff vs bf16 (%)": 100 * (final(r) - ref) / ref}
            for r in histories]
    table = format_table(rows, ["recipe", "final NLL", "rel. diff vs bf16 (%)"], float_format="{:.4f}")
    print(f"\nfinal NLL = mean of the last {args.window} of {args.steps} steps\n{table}")
    with open(os.path.join(args.workdir, "table.md"), "w") as f:
        f.write(table + "\n")
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
