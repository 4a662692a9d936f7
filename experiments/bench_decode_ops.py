"""The two decode-step operations of the DeepSeek-V3 sampler that XLA:CPU runs slowly in their
plain form, timed against the form the model uses, on the shapes of one decode step.

  taskset -c 0 python experiments/bench_decode_ops.py [--calls 300] [--rounds 5]

- latent attention's P x c_kv product (`mla.py`, xla_latent_attention): probs (B, H, T, S) times
  the latent cache (B, S, C), asked for as (B, T, H, C) directly ("plain") or as (B, H, T, C)
  then transposed ("model").
- the routed experts' SwiGLU on rows sorted by expert (`moe_dispatch.grouped_swiglu`) for a
  few decoding tokens: the row tiles of `ragged_tiles.tile_for` with each tile's expert weights
  gathered ("plain": no `max_group_size`), or one tile per expert with the weights read in
  place where `ragged_tiles.use_group_tiles` allows it ("model": `max_group_size` = tokens,
  which `local_expert_outputs` passes since each token's top-k experts are distinct).

Prints a markdown table: microseconds per call (median over `rounds` of `calls` calls each, the
two forms alternating), their ratio, and the largest difference of the outputs.
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
import numpy as np  # noqa: E402

from r1jax.eval.machine import describe  # noqa: E402
from r1jax.nn.kernels import XLA  # noqa: E402
from r1jax.nn.moe_dispatch import grouped_swiglu  # noqa: E402
from r1jax.nn.ragged_tiles import use_group_tiles  # noqa: E402


def per_call_us(fns, args, calls: int, rounds: int) -> list[float]:
    """Median microseconds per call of each jitted fn on args, the fns alternating each round."""
    for fn in fns:
        jax.block_until_ready(fn(*args))
    times = [[] for _ in fns]
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            for _ in range(calls):
                out = fn(*args)
            jax.block_until_ready(out)
            times[i].append((time.perf_counter() - start) / calls * 1e6)
    return [statistics.median(t) for t in times]


def latent_product_row(batch, heads, slots, latent, calls, rounds):
    keys = jax.random.split(jax.random.key(0))
    probs = jax.nn.softmax(jax.random.normal(keys[0], (batch, heads, 1, slots)), -1)  # (B,H,T,S)
    cache = jax.random.normal(keys[1], (batch, slots, latent))  # (B, S, C)
    plain = jax.jit(lambda p, c: jnp.einsum("bhts,bsc->bthc", p, c))
    model = jax.jit(lambda p, c: jnp.einsum("bhts,bsc->bhtc", p, c).transpose(0, 2, 1, 3))
    before, after = per_call_us((plain, model), (probs, cache), calls, rounds)
    diff = float(jnp.max(jnp.abs(plain(probs, cache) - model(probs, cache))))
    return (f"latent P x c_kv, B{batch} H{heads} T1 S{slots} C{latent}", "yes", before, after, diff)


def expert_swiglu_row(tokens, experts, top_k, hidden, ffn, calls, rounds):
    rng = np.random.default_rng(tokens)
    # Each token's top-k experts are distinct, as the router picks them.
    chosen = np.stack([rng.choice(experts, top_k, replace=False) for _ in range(tokens)])
    expert_of_row = np.sort(chosen.reshape(-1))  # (M,) rows sorted by expert
    group_sizes = jnp.asarray(np.bincount(expert_of_row, minlength=experts), jnp.int32)  # (G,)
    keys = jax.random.split(jax.random.key(1), 4)
    rows = jax.random.normal(keys[0], (tokens * top_k, hidden))  # (M, D)
    gate, up = (jax.random.normal(k, (experts, hidden, ffn)) * hidden ** -0.5 for k in keys[1:3])
    down = jax.random.normal(keys[3], (experts, ffn, hidden)) * ffn ** -0.5  # (G, F, D)

    def swiglu(bound):
        return jax.jit(lambda *a: grouped_swiglu(*a, "bf16", XLA, max_group_size=bound))

    plain, model = swiglu(None), swiglu(tokens)
    args = (rows, gate, up, down, group_sizes)
    before, after = per_call_us((plain, model), args, calls, rounds)
    diff = float(jnp.max(jnp.abs(plain(*args) - model(*args))))
    taken = "yes" if use_group_tiles(tokens * top_k, experts, tokens) else "no (rule)"
    return (f"routed SwiGLU, {tokens} tokens top-{top_k} of {experts}, D{hidden} F{ffn}", taken,
            before, after, diff)


def main(argv=None):
    single_process_only("experiments/bench_decode_ops.py")
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    rows = [latent_product_row(16, 8, 160, 64, args.calls, args.rounds)]
    rows += [expert_swiglu_row(n, 8, 2, 256, 128, args.calls, args.rounds)
             for n in (16, 32, 64, 128)]
    print("| operation (one decode step's shapes) | model form used | plain (us) | model (us) "
          "| plain / model | max abs difference |")
    print("|---|---|---:|---:|---:|---:|")
    for name, taken, before, after, diff in rows:
        print(f"| {name} | {taken} | {before:.1f} | {after:.1f} | {before / after:.2f}x "
              f"| {diff:.1e} |")
    print(f"\n{describe()}")


if __name__ == "__main__":
    main()
