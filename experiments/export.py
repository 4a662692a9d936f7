"""Export a pipeline stage as a Hugging Face directory (config.json + safetensors + tokenizer)
that `transformers` loads and `experiments/evaluate.py` evaluates.

  python experiments/export.py --config configs/r1_pipeline_tiny.py --workdir runs/r1_pipeline \
      --stage final_rl --out runs/r1_hf

The recipe and its --config.x overrides must be those the pipeline ran with: a stage whose saved
model config differs is refused, naming the fields. The pipeline's workdir is only read.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments.cli import parse_args  # noqa: E402


def main(argv=None):
    def flags(parser):
        parser.add_argument("--stage", required=True, help="a training stage of the recipe")
        parser.add_argument("--out", required=True, help="the HF directory to write")
        parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))

    args, cfg = parse_args(argv, description=__doc__, add_arguments=flags,
                           single_process="experiments/export.py")
    from r1jax.recipe.export import export_stage
    from r1jax.recipe.stages import STAGE_NAMES

    if args.stage not in STAGE_NAMES:
        raise SystemExit(f"--stage={args.stage!r} is not a stage; stages: {', '.join(STAGE_NAMES)}")
    try:
        out = export_stage(cfg, args.workdir, args.stage, args.out, dtype=args.dtype)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"export: {e}") from None
    print(f"{args.stage} of {args.workdir} written to {out}")


if __name__ == "__main__":
    main()
