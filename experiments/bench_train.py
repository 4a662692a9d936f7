"""Train-step throughput and MFU of a model size, and XLA's FLOP count of its expert GEMMs.

  python experiments/bench_train.py [--size moe_1b] [--batch 8] [--seq 2048] [--steps 10]
      [--dtype bfloat16] [--kernels xla] [--gemm 8192]
  python experiments/bench_train.py --size deepseek_v3_small --batch 8 --seq 256 --dtype float32 \
      --kernels xla_reference,xla --gemm 2048 --steps 9        # the CPU before/after of BENCHMARKS.md

Measures, in one run on the current device: the GEMM peak in `--dtype` (an n^3 matmul; `--gemm
0` skips it and MFU), then the jitted sft_step's median step time, tokens/s and MFU = train FLOPs
per token (r1jax.models.counting: 6 * activated matmul params + causal attention) * tokens/s /
measured peak. With several `--kernels` values (ModelConfig.kernels, e.g. "xla_reference,xla":
the plain formulations, then the per-backend ones), every step function is compiled first and the
timed steps interleave (one step of each per round), so machine noise hits them alike; the ratio
is to the first. Also prints XLA's cost analysis of the step and of the routed-expert GEMMs (one
MoE layer's `routed_experts`, forward + backward, times the MoE layers), next to the routed work
(3 GEMMs x 2*N*K*D*F x 3 for forward + backward, per MoE layer). Markdown tables for
BENCHMARKS.md with the device, jax version and date.
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
from r1jax.nn import kernels as kernel_dispatch  # noqa: E402
from r1jax.nn.moe_dispatch import routed_experts  # noqa: E402
from r1jax.sharding import MeshConfig, batch_sharding, make_mesh, replicated  # noqa: E402
from r1jax.train.optim import OptimConfig, make_optimizer  # noqa: E402
from r1jax.train.state import create_sharded_state  # noqa: E402
from r1jax.train.steps import sft_step_fn  # noqa: E402


def interleaved_medians(fns: dict, *args, repeats: int) -> dict[str, float]:
    """Median seconds per call of each fn; every round calls each fn once, in turn."""
    for fn in fns.values():
        jax.block_until_ready(fn(*args))  # compile + warm-up
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn(*args))
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def gemm_peak_tflops(n: int, dtype) -> float:
    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    b = jax.random.normal(jax.random.key(1), (n, n), dtype)
    secs = interleaved_medians({"gemm": jax.jit(lambda x, y: x @ y)}, a, b, repeats=10)["gemm"]
    return 2 * n**3 / secs / 1e12


def expert_gemm_gflop(cfg: config.ModelConfig, tokens: int) -> tuple[float, float]:
    """(XLA's count, routed work) in GFLOP of the routed-expert GEMMs of one train step: XLA's
    count for one MoE layer's `routed_experts` forward + backward (its GEMMs are all but a few
    MFLOP of it), times the MoE layers."""
    d, f, e, k = cfg.hidden_size, cfg.moe_intermediate_size, cfg.n_routed_experts, cfg.num_experts_per_tok
    dt = jnp.dtype(cfg.dtype)
    shapes = [jax.ShapeDtypeStruct(s, t) for s, t in [
        ((tokens, d), dt), ((tokens, k), jnp.float32), ((tokens, k), jnp.int32),
        ((e, d, f), dt), ((e, d, f), dt), ((e, f, d), dt)]]

    def loss(x, weights, indices, gate, up, down):
        y = routed_experts(x, weights, indices, gate, up, down, n_experts=e, precision=cfg.precision,
                           choice=kernel_dispatch.kernel_choice(cfg.kernels))
        return jnp.sum(y.astype(jnp.float32))

    grad = jax.jit(jax.grad(loss, argnums=(0, 1, 3, 4, 5)))
    counted = grad.lower(*shapes).compile().cost_analysis()["flops"]
    layers = cfg.num_moe_layers + cfg.num_mtp_modules
    routed = 3 * 2 * tokens * k * d * f * 3
    return counted * layers / 1e9, routed * layers / 1e9


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", default="moe_1b", choices=sorted(config.SIZES))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--gemm", type=int, default=8192, help="n of the peak GEMM; 0 skips it")
    parser.add_argument("--dtype", default="bfloat16", help="activation dtype: bfloat16 or float32")
    parser.add_argument("--kernels", default="xla", help="ModelConfig.kernels values, comma-separated")
    args = parser.parse_args()
    single_process_only("experiments/bench_train.py")

    choices = args.kernels.split(",")
    peak = gemm_peak_tflops(args.gemm, jnp.dtype(args.dtype)) if args.gemm else None
    base = config.get_model_config(args.size)
    cfgs = {c: dataclasses.replace(base, dtype=args.dtype, kernels=c) for c in choices}
    mesh = make_mesh(MeshConfig())
    tx = make_optimizer(OptimConfig(), 1000, models.param_roles(cfgs[choices[0]]))
    with jax.set_mesh(mesh):
        state, shardings = create_sharded_state(cfgs[choices[0]], tx, mesh, jax.random.key(0))
        rng = np.random.default_rng(0)
        tokens = rng.integers(1, cfgs[choices[0]].vocab_size, (args.batch, args.seq + 1)).astype(np.int32)
        batch = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:],
                 "loss_mask": np.ones((args.batch, args.seq), bool)}
        batch = jax.device_put(batch, batch_sharding(mesh))
        steps, step_gflop = {}, {}
        for c, cfg in cfgs.items():
            step = jax.jit(sft_step_fn(cfg, tx), in_shardings=(shardings, batch_sharding(mesh)),
                           out_shardings=(shardings, replicated(mesh)))
            compiled = step.lower(state, batch).compile()  # compiled once: counted and timed
            step_gflop[c] = compiled.cost_analysis()["flops"] / 1e9
            steps[c] = lambda s, b, step=compiled: step(s, b)[1]["loss"]
        secs = interleaved_medians(steps, state, batch, repeats=args.steps)
    flops = train_flops_per_token(cfgs[choices[0]], args.seq)
    device = jax.devices()[0].device_kind
    print(f"| model | kernels | batch x seq | step (s) | vs {choices[0]} | tokens/s | model TFLOP/s "
          f"| measured {args.dtype} peak | MFU |")
    print("|---|---|---|---|---|---|---|---|---|")
    for c in choices:
        tokens_per_s = args.batch * args.seq / secs[c]
        mfu = (f"{100 * flops * tokens_per_s / (peak * 1e12 * jax.device_count()):.1f}%" if peak
               else "n/a")
        print(f"| {args.size} {args.dtype} | {c} | {args.batch}x{args.seq} | {secs[c]:.3f} | "
              f"{secs[choices[0]] / secs[c]:.2f}x | {tokens_per_s:,.0f} | "
              f"{flops * tokens_per_s / 1e12:.3f} | {f'{peak:.2f} TFLOP/s' if peak else 'n/a'} | {mfu} |")
    print("\n| kernels | step GFLOP (XLA cost analysis) | expert GEMMs GFLOP (XLA) | routed work GFLOP |")
    print("|---|---|---|---|")
    for c, cfg in cfgs.items():
        counted, routed = expert_gemm_gflop(cfg, args.batch * args.seq)
        print(f"| {c} | {step_gflop[c]:.1f} | {counted:.1f} | {routed:.1f} |")
    print(f"\n{device} x{jax.device_count()}, jax {jax.__version__}, {datetime.date.today()}")


if __name__ == "__main__":
    main()
