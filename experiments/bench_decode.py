"""Decode throughput of the sampling engine on the latent MLA cache, and cache sizes.

  python experiments/bench_decode.py [--batch 64] [--new_tokens 64] [--size tiny]
      [--decode_buckets 1,4] [--rounds 3]

Prints a markdown table: rows x new tokens, seconds (median of `rounds` after a compile run),
decode tokens/s, and cache bytes per token (latent c_kv + k_rope vs a materialised K/V cache).
With several `decode_buckets` (1 = every step attends over all P + N slots; SamplingConfig), one
row each: all compile first, then the timed runs alternate (one of each per round), so machine
noise hits them alike.
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
from r1jax.eval.machine import describe  # noqa: E402
from r1jax.rollout.sampling import SamplingConfig, sample  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--prompt", type=int, default=32)
    parser.add_argument("--new_tokens", type=int, default=64)
    parser.add_argument("--decode_buckets", default="4",
                        help="comma-separated SamplingConfig.decode_buckets to compare, e.g. 1,4")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    buckets = [int(k) for k in args.decode_buckets.split(",")]
    single_process_only("experiments/bench_decode.py")
    cfg = config.get_model_config(args.size)
    params = models.init(cfg, jax.random.key(0))
    prompt = jax.random.randint(jax.random.key(1), (args.batch, args.prompt), 1, cfg.vocab_size)
    mask = jnp.ones_like(prompt, dtype=bool)
    scfgs = {k: SamplingConfig(max_new_tokens=args.new_tokens, temperature=1.0, decode_buckets=k)
             for k in buckets}
    times = {k: [] for k in buckets}
    for i in range(1 + args.rounds):  # the first call of each compiles
        for k in buckets:
            t0 = time.perf_counter()
            out = sample(cfg, scfgs[k], params, prompt, mask, jax.random.key(i))
            out["tokens"].block_until_ready()
            times[k].append(time.perf_counter() - t0)
    bytes_per = jnp.dtype(cfg.dtype).itemsize
    latent = cfg.latent_cache_values_per_token() * cfg.num_layers * bytes_per
    full = cfg.full_kv_cache_values_per_token() * cfg.num_layers * bytes_per
    print("| model | decode buckets | rows | prompt | new tokens | seconds | decode tokens/s | "
          "cache B/token (latent) | cache B/token (full K/V) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for k in buckets:
        secs = statistics.median(times[k][1:])
        print(f"| {args.size} | {k} | {args.batch} | {args.prompt} | {args.new_tokens} | "
              f"{secs:.3f} | {args.batch * args.new_tokens / secs:,.0f} | {latent:,} | {full:,} |")
    compiles = ", ".join(f"{times[k][0]:.1f}s ({k} buckets)" for k in buckets)
    print(f"\njax {jax.__version__}, {jax.devices()[0].platform}, {describe()}; compile runs {compiles}")
    for k in buckets:  # every timed run, in round order: a loaded machine shows here
        print(f"{k} buckets: " + " ".join(f"{t:.3f}" for t in times[k][1:]) + " s")


if __name__ == "__main__":
    main()
