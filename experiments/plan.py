"""Sharding, memory and communication plan of a model on a cluster mesh, on paper.

  python experiments/plan.py --size deepseek_v3_671b --mesh data=1,fsdp=32,expert=64,tensor=1 \\
      [--batch 16384] [--seq 4096] [--micro_batches 8] [--precision fp8_v3] [--hardware h800]

Prints per-device bytes (params, gradients, AdamW state, activations per layer, the latent
cache for decoding), each collective's bytes and seconds per step, FLOPs and step time at the
hardware's rates (r1jax/plan/). Everything comes from abstract shapes and the project's own
shardings on a jax.sharding.AbstractMesh: nothing is allocated, any size runs on a laptop in
about a minute. For deepseek_v3_671b the DeepSeek-V3 report's statements are printed beside
the plan (r1jax/plan/paper.py). docs/scaling.md explains the numbers and which mesh to pick.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments.cli import single_process_only  # noqa: E402

from r1jax import config, plan  # noqa: E402
from r1jax.sharding import MESH_AXES  # noqa: E402


def parse_mesh(text: str) -> tuple[int, ...]:
    """"data=1,fsdp=32,expert=64,tensor=1" -> (1, 32, 64, 1); an axis left out has size 1."""
    sizes = dict.fromkeys(MESH_AXES, 1)
    for item in filter(None, text.split(",")):
        name, _, value = item.partition("=")
        if name not in sizes or not value.isdigit() or int(value) < 1:
            raise argparse.ArgumentTypeError(
                f"--mesh item {item!r}: write axis=size with axis in {MESH_AXES} and size >= 1")
        sizes[name] = int(value)
    return tuple(sizes[a] for a in MESH_AXES)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="deepseek_v3_671b", choices=sorted(config.SIZES))
    parser.add_argument("--mesh", type=parse_mesh, default=(1, 32, 64, 1),
                        help="data=..,fsdp=..,expert=..,tensor=.. (default V3's 2048 GPUs)")
    parser.add_argument("--batch", type=int, default=16384, help="sequences per step, whole mesh")
    parser.add_argument("--seq", type=int, default=4096)
    parser.add_argument("--micro_batches", type=int, default=8, help="gradient accumulation")
    parser.add_argument("--precision", default="fp8_v3", choices=["bf16", "fp8_v3", "fp8_per_tensor"])
    parser.add_argument("--dtype", default="bfloat16", help="compute dtype of activations")
    parser.add_argument("--kernels", default="pallas", choices=list(config.KERNEL_CHOICES))
    parser.add_argument("--moments", default="bf16", choices=["bf16", "f32"],
                        help="AdamW moment dtype (V3 keeps them in BF16)")
    parser.add_argument("--dispatch", default="all_gather", choices=list(plan.DISPATCHES))
    parser.add_argument("--remat", default="none", choices=["none", "block"])
    parser.add_argument("--decode_batch", type=int, default=2048)
    parser.add_argument("--decode_context", type=int, default=32768)
    parser.add_argument("--hardware", default="h800", choices=sorted(plan.HARDWARE))
    parser.add_argument("--no_paper", action="store_true", help="leave out the V3 report comparison")
    args = parser.parse_args(argv)
    single_process_only("experiments/plan.py")
    model = config.get_model_config(args.size, precision=args.precision, dtype=args.dtype,
                                    kernels=args.kernels)
    try:
        setup = plan.Setup(model=model, mesh=args.mesh, batch=args.batch, seq=args.seq,
                           micro_batches=args.micro_batches, bf16_moments=args.moments == "bf16",
                           dispatch=args.dispatch, remat=args.remat,
                           decode_batch=args.decode_batch, decode_context=args.decode_context,
                           hardware=plan.HARDWARE[args.hardware])
    except ValueError as e:
        parser.error(str(e))
    result = plan.make_plan(setup)
    print(plan.format_plan(result))
    if args.size == "deepseek_v3_671b" and not args.no_paper:
        print()
        print(plan.format_paper_comparison(plan.paper_comparison(result)))


if __name__ == "__main__":
    main()
