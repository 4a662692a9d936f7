"""Decode throughput of the sampling engine on the latent MLA cache, and cache sizes.

  python experiments/bench_decode.py [--batch 64] [--new_tokens 64] [--size tiny]

Prints a markdown table: rows x new tokens, seconds (median of 3 after a compile run), decode
tokens/s, and cache bytes per token (latent c_kv + k_rope vs a materialised K/V cache).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments.cli import single_process_only  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from r1jax import config, models  # noqa: E402
from r1jax.rollout.sampling import SamplingConfig, sample  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--prompt", type=int, default=32)
    parser.add_argument("--new_tokens", type=int, default=64)
    args = parser.parse_args()
    single_process_only("experiments/bench_decode.py")
    cfg = config.get_model_config(args.size)
    params = models.init(cfg, jax.random.key(0))
    prompt = jax.random.randint(jax.random.key(1), (args.batch, args.prompt), 1, cfg.vocab_size)
    mask = jnp.ones_like(prompt, dtype=bool)
    scfg = SamplingConfig(max_new_tokens=args.new_tokens, temperature=1.0)
    times = []
    for i in range(4):  # the first call compiles
        t0 = time.perf_counter()
        out = sample(cfg, scfg, params, prompt, mask, jax.random.key(i))
        out["tokens"].block_until_ready()
        times.append(time.perf_counter() - t0)
    secs = statistics.median(times[1:])
    bytes_per = jnp.dtype(cfg.dtype).itemsize
    latent = cfg.latent_cache_values_per_token() * cfg.num_layers * bytes_per
    full = cfg.full_kv_cache_values_per_token() * cfg.num_layers * bytes_per
    print("| model | rows | prompt | new tokens | seconds | decode tokens/s | cache B/token (latent) | cache B/token (full K/V) |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {args.size} | {args.batch} | {args.prompt} | {args.new_tokens} | {secs:.3f} | "
          f"{args.batch * args.new_tokens / secs:,.0f} | {latent:,} | {full:,} |")
    print(f"\njax {jax.__version__}, {jax.devices()[0].platform}, compile run {times[0]:.1f}s")


if __name__ == "__main__":
    main()
