"""Evaluate a checkpoint directory on a held-out set, as R1 reports it: k samples per problem at
temperature 0.6 / top-p 0.95; pass@1 averaged over the k samples, unbiased pass@k, cons@k
(majority vote), mean response length.

  python experiments/evaluate.py --checkpoint runs/r1_hf --data arithmetic --workdir runs/eval \
      [--k 4] [--pass_k 1,4] [--temperature 0.6] [--top_p 0.95] [--max_new_tokens 64] \
      [--num_problems 64] [--config.eval.task_kwargs='[["max_digits", 2]]'] [--config.mesh.data=1]

--checkpoint: a Hugging Face directory (config.json + safetensors + tokenizer) of DeepSeek-V3 or
a dense student, or a pipeline stage written by experiments/export.py. --data: an embedded task's
name (its held-out split; --num_problems of them, default 64) or a test file: JSONL, Parquet or a
`datasets` save_to_disk directory in the GSM8K or MATH layout, or mapped with
--config.eval.fields.prompt_field=... (every row, or the first --num_problems). Writes problems.jsonl (each problem's samples and verdicts),
summary.json and eval.md (the table) into --workdir.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments.cli import single_process_only  # noqa: E402

# Flag -> the eval config field it sets.
SAMPLING_FLAGS = {"k": int, "temperature": float, "top_p": float, "max_new_tokens": int,
                  "num_problems": int}


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a checkpoint directory")
    parser.add_argument("--data", required=True, help="an embedded task's name or a data file")
    parser.add_argument("--workdir", required=True, help="where the report is written")
    parser.add_argument("--pass_k", default="", help="comma-separated k for pass@k (default: k)")
    for flag, kind in SAMPLING_FLAGS.items():
        parser.add_argument(f"--{flag}", type=kind, default=None)
    args, rest = parser.parse_known_args(argv)
    bad = [r for r in rest if not r.startswith("--config.")]
    if bad:
        parser.error(f"unrecognized arguments: {bad}")
    return args, rest


def config_from(args, overrides):
    from r1jax.eval.checkpoint_eval import CheckpointEvalConfig
    from r1jax.train.experiment import apply_overrides

    cfg = apply_overrides(CheckpointEvalConfig(), overrides)
    for flag in SAMPLING_FLAGS:
        if getattr(args, flag) is not None:
            cfg = apply_overrides(cfg, [f"eval.{flag}={getattr(args, flag)}"])
    pass_k = args.pass_k or str(cfg.eval.k)
    try:
        ks = tuple(sorted({1, *(int(k) for k in pass_k.split(","))}))
    except ValueError:
        raise ValueError(f"--pass_k={args.pass_k!r}: expected comma-separated integers") from None
    return apply_overrides(cfg, [f"pass_k={list(ks)}"])


def main(argv=None):
    single_process_only("experiments/evaluate.py")
    args, overrides = parse(argv)
    try:
        cfg = config_from(args, overrides)
    except ValueError as e:
        raise SystemExit(f"evaluate: {e}") from None
    from r1jax.eval.checkpoint_eval import prepare, run
    from r1jax.eval.report import TABLE_FILE

    try:
        every_row = args.num_problems is None and not any(
            o.startswith("--config.eval.num_problems=") for o in overrides)
        evaluation = prepare(args.checkpoint, args.data, cfg, all_rows=every_row)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"evaluate: {e}") from None
    run(evaluation, args.workdir, cfg)
    with open(os.path.join(args.workdir, TABLE_FILE)) as f:
        print(f.read())


if __name__ == "__main__":
    main()
