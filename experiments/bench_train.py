"""Train-step throughput and MFU of a model size (default moe_1b, bf16, XLA path).

  python experiments/bench_train.py [--size moe_1b] [--batch 8] [--seq 2048] [--steps 10]

Measures, in one run on the current device: the bf16 GEMM peak (8192^3 matmul), then the jitted
sft_step's median step time, tokens/s and MFU = train FLOPs per token (r1jax.models.counting:
6 * activated matmul params + causal attention) * tokens/s / measured peak. Prints a markdown
table for BENCHMARKS.md with the device, jax version and date.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments.cli import single_process_only  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from r1jax import config, models  # noqa: E402
from r1jax.models.counting import train_flops_per_token  # noqa: E402
from r1jax.sharding import MeshConfig, batch_sharding, make_mesh, replicated  # noqa: E402
from r1jax.train.optim import OptimConfig, make_optimizer  # noqa: E402
from r1jax.train.state import create_sharded_state  # noqa: E402
from r1jax.train.steps import sft_step_fn  # noqa: E402


def timed(fn, *args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))  # compile + warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def gemm_peak_tflops(n: int = 8192) -> float:
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.bfloat16)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.bfloat16)
    secs = timed(jax.jit(lambda x, y: x @ y), a, b, repeats=10)
    return 2 * n**3 / secs / 1e12


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", default="moe_1b")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--gemm", type=int, default=8192)
    args = parser.parse_args()
    single_process_only("experiments/bench_train.py")

    peak = gemm_peak_tflops(args.gemm)
    cfg = dataclasses.replace(config.get_model_config(args.size), dtype="bfloat16")
    mesh = make_mesh(MeshConfig())
    tx = make_optimizer(OptimConfig(), 1000, models.param_roles(cfg))
    with jax.set_mesh(mesh):
        state, shardings = create_sharded_state(cfg, tx, mesh, jax.random.key(0))
        rng = np.random.default_rng(0)
        tokens = rng.integers(1, cfg.vocab_size, (args.batch, args.seq + 1)).astype(np.int32)
        batch = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:],
                 "loss_mask": np.ones((args.batch, args.seq), bool)}
        batch = jax.device_put(batch, batch_sharding(mesh))
        step = jax.jit(sft_step_fn(cfg, tx), in_shardings=(shardings, batch_sharding(mesh)),
                       out_shardings=(shardings, replicated(mesh)))
        secs = timed(lambda s, b: step(s, b)[1]["loss"], state, batch, repeats=args.steps)
    tokens_per_s = args.batch * args.seq / secs
    flops = train_flops_per_token(cfg, args.seq)
    mfu = flops * tokens_per_s / (peak * 1e12 * jax.device_count())
    device = jax.devices()[0].device_kind
    print("| model | batch x seq | step (s) | tokens/s | model TFLOP/s | measured bf16 peak | MFU |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {args.size} bf16 | {args.batch}x{args.seq} | {secs:.3f} | {tokens_per_s:,.0f} | "
          f"{flops * tokens_per_s / 1e12:.1f} | {peak:.0f} TFLOP/s | {100 * mfu:.1f}% |")
    print(f"\n{device} x{jax.device_count()}, jax {jax.__version__}, {datetime.date.today()}")


if __name__ == "__main__":
    main()
