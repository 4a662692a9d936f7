"""Where HF transformers' train step spends its time, on the weights r1jax's profile runs.

  python experiments/profile_peer_step.py [--batch 8] [--seq 256] [--steps 3] [--threads 1]
      [--top 20]

The peer side of `experiments/profile_train_step.py` for the DeepSeek-V3 small model of
`experiments/bench_peers.py`: r1jax initialises it, `interop.hf.save_checkpoint` writes it, HF
`transformers` reads it back (the logits are compared first), then `--steps` steps of
loss.backward() and torch.optim.AdamW run under torch's profiler, after two warm-up steps.
Prints each torch operation's own time per step, its share, and for the GEMMs (mm, addmm, bmm;
torch's grouped expert product runs them per expert on CPU) their GFLOP and rate, with the
rate of one 2048x256x1024 float32 GEMM on the same threads. The FLOPs are counted in a step of
their own: counting records every operation's shapes, which slowed a step by half. Beside the
r1jax profile it says which part of the step each side is faster at. Pin the process
(`taskset -c 0`) with `--threads 1` for the one-core picture.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from experiments.cli import single_process_only  # noqa: E402
from experiments.peers.common import deepseek_small  # noqa: E402
from experiments.peers.measure import same_weights  # noqa: E402
from experiments.profile_train_step import best_seconds, print_shares  # noqa: E402
from r1jax import models  # noqa: E402
from r1jax.eval.machine import describe  # noqa: E402

GEMMS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")


def torch_gemm_rate(m: int = 2048, k: int = 256, n: int = 1024) -> float:
    """GFLOP/s of one float32 (m, k) x (k, n) torch GEMM at its best."""
    x, w = torch.ones(m, k), torch.ones(k, n)
    return 2 * m * k * n / best_seconds(lambda: x @ w) / 1e9


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch's intra-op threads")
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args(argv)
    single_process_only("experiments/profile_peer_step.py")
    torch.set_num_threads(args.threads)
    peak = torch_gemm_rate()
    cfg = deepseek_small()
    with tempfile.TemporaryDirectory() as d:
        model, diff = same_weights(cfg, models.init(cfg, jax.random.key(0)), d)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    tokens = np.random.default_rng(0).integers(1, cfg.vocab_size, (args.batch, args.seq + 1))
    inputs = torch.as_tensor(tokens[:, :-1], dtype=torch.long)
    labels = torch.as_tensor(tokens[:, 1:], dtype=torch.long)

    def step():
        opt.zero_grad()
        model(input_ids=inputs, labels=labels).loss.backward()
        opt.step()

    for _ in range(2):  # warm-up: allocator, optimizer moments
        step()
    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as counted:
        step()
    flops = collections.Counter({e.key: e.flops for e in counted.key_averages()
                                 if e.key in GEMMS and e.flops})
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t = time.perf_counter()
        for _ in range(args.steps):
            step()
        wall = (time.perf_counter() - t) / args.steps
    ms = collections.Counter()
    for e in prof.key_averages():
        ms[e.key] += e.self_cpu_time_total / 1e3 / args.steps
    gemm_ms = sum(ms[k] for k in GEMMS)
    gflop = sum(flops.values()) / 1e9
    print(f"HF transformers DeepSeek-V3 small float32 {args.batch}x{args.seq}, loss.backward() + "
          f"AdamW, {args.steps} profiled steps, {args.threads} torch threads; {describe()}; "
          f"torch {torch.__version__}")
    print(f"max |logit difference| vs r1jax {diff:.1e}; {wall * 1e3:.1f} ms per step under the "
          f"profiler; torch operations' own time {sum(ms.values()):.1f} ms: GEMMs {gemm_ms:.1f} ms "
          f"({gflop:.2f} GFLOP, {gflop / max(gemm_ms, 1e-9) * 1e3:.0f} GFLOP/s), the others "
          f"{sum(ms.values()) - gemm_ms:.1f} ms; one 2048x256x1024 float32 GEMM: {peak:.0f} "
          f"GFLOP/s\n")
    print_shares(ms, "step", args.top, flops=flops, label="torch operation")


if __name__ == "__main__":
    main()
