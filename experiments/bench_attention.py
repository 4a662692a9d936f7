"""Training attention on CPU for grouped-query heads (Qwen2, Llama): the model's form against K/V
repeated to every query head, forward and forward + backward.

  taskset -c 0 python experiments/bench_attention.py [--shapes 32x127x8x2x32,...] [--calls 5]
      [--rounds 9]

Each shape is B x T x H x K x D (batch, tokens, query heads, key/value heads, head dim), causal
with every token valid. Forms (`r1jax/nn/attention.py`):
- "grouped": `causal_attention` on K key/value heads, the G = H / K query heads of a key head
  sharing each block's GEMMs (the model's form);
- "repeated": K/V repeated to H heads, then `causal_attention` (the form before);
- "dense": K/V repeated, then the (B, H, T, S) masked softmax (`dense_causal_attention`).
Prints a markdown table: milliseconds per call (median over `rounds` of `calls` calls each, the
forms alternating), the ratio of "repeated" over "grouped", and the largest difference of the
output and of the three gradients from the dense form's.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments.bench_decode_ops import per_call_us  # noqa: E402
from experiments.cli import single_process_only  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from r1jax.eval.machine import describe  # noqa: E402
from r1jax.nn.attention import CausalMask, causal_attention, dense_causal_attention  # noqa: E402

# Qwen2 small's GRPO step (experiments/bench_peers.py: 8 prompts x 4 samples, 32 + 96 tokens, the
# last one shifted off), then a longer sequence at 2 and 4 query heads per key head.
DEFAULT_SHAPES = "32x127x8x2x32,8x256x8x2x32,8x256x8x4x64"


def forms(b: int, t: int, h: int, kv: int) -> dict:
    """name -> attention(q, k, v) of q (B, T, H, D), k and v (B, T, K, D)."""
    mask, g = CausalMask(jnp.ones((b, t), bool)), h // kv

    def repeated(attend):
        def fn(q, k, v):
            k, v = (jnp.repeat(a, g, axis=2) for a in (k, v))  # (B, T, H, D)
            return attend(q, k, v, mask, softmax_scale=q.shape[-1] ** -0.5)
        return fn

    return {"grouped": lambda q, k, v: causal_attention(q, k, v, mask,
                                                        softmax_scale=q.shape[-1] ** -0.5),
            "repeated": repeated(causal_attention), "dense": repeated(dense_causal_attention)}


def parse_shape(shape: str) -> tuple[int, ...]:
    """"BxTxHxKxD" -> (B, T, H, K, D), or exit saying what is wrong."""
    try:
        b, t, h, kv, d = (int(n) for n in shape.split("x"))
    except ValueError:
        raise SystemExit(f"--shapes {shape!r}: give B x T x H x K x D, e.g. 32x127x8x2x32") from None
    if min(b, t, h, kv, d) < 1 or h % kv:
        raise SystemExit(f"--shapes {shape}: sizes must be positive and K={kv} must divide H={h}")
    return b, t, h, kv, d


def shape_rows(shape: tuple[int, ...], calls: int, rounds: int) -> list[str]:
    b, t, h, kv, d = shape
    keys = jax.random.split(jax.random.key(0), 4)
    q, d_out = (jax.random.normal(key, (b, t, h, d)) for key in keys[:2])
    k, v = (jax.random.normal(key, (b, t, kv, d)) for key in keys[2:])
    fns = forms(b, t, h, kv)
    forward = {n: jax.jit(f) for n, f in fns.items()}
    # Forward + backward: the output and the three gradients of <out, d_out>.
    both = {n: jax.jit(lambda q, k, v, f=f: jax.value_and_grad(
        lambda *a: jnp.sum(f(*a) * d_out), argnums=(0, 1, 2))(q, k, v)) for n, f in fns.items()}
    with jax.default_matmul_precision("highest"):
        want = jax.tree.leaves((forward["dense"](q, k, v), both["dense"](q, k, v)[1]))
    got = jax.tree.leaves((forward["grouped"](q, k, v), both["grouped"](q, k, v)[1]))
    diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(got, want, strict=True))
    rows = []
    for what, table in (("forward", forward), ("forward + backward", both)):
        names = list(table)
        us = dict(zip(names, per_call_us([table[n] for n in names], (q, k, v), calls, rounds)))
        rows.append(f"| {b}x{t} H{h} K{kv} D{d} | {what} | {us['grouped'] / 1e3:.2f} | "
                    f"{us['repeated'] / 1e3:.2f} | {us['dense'] / 1e3:.2f} | "
                    f"{us['repeated'] / us['grouped']:.2f}x | {diff:.1e} |")
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default=DEFAULT_SHAPES, help="comma-separated BxTxHxKxD")
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args(argv)
    single_process_only("experiments/bench_attention.py")
    shapes = [parse_shape(s) for s in args.shapes.split(",")]
    print("| shape | pass | grouped (ms) | repeated (ms) | dense (ms) | repeated / grouped | "
          "max diff vs dense |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for shape in shapes:
        for row in shape_rows(shape, args.calls, args.rounds):
            print(row, flush=True)
    print(f"\nfloat32; {describe()}")


if __name__ == "__main__":
    main()
