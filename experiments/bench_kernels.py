"""Benchmark the Pallas Mosaic GPU kernels against their XLA / cuDNN baselines on one H100.

  python experiments/bench_kernels.py            # all ops
  python experiments/bench_kernels.py --ops mla_decode,grouped_matmul

First measures this GPU's copy bandwidth and bf16 GEMM throughput, then times
each kernel and baseline (median of --iters runs after warm-up) and prints a
markdown table: time, TFLOP/s, GB/s, % of the measured peak (compute-bound ops
against GEMM peak, mla_decode against copy bandwidth) and speed-up over the
baseline of each row group. Needs a Hopper GPU; nothing is printed for ops
that fail to run (the error is shown instead).
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from experiments.cli import single_process_only  # noqa: E402
from pallas_kernels.fp8_block_gemm import fp8_block_gemm, quantize_128x128, quantize_1x128
from pallas_kernels.grouped_matmul import grouped_matmul
from pallas_kernels.mla_attention import BlockSizes as AttentionBlocks
from pallas_kernels.mla_attention import mla_attention
from pallas_kernels.mla_decode import BlockSizes as DecodeBlocks
from pallas_kernels.mla_decode import mla_decode


def time_ms(fn, *args, iters: int) -> float:
  """Median wall time of a jitted call in ms (outputs blocked on, compile excluded)."""
  fn = jax.jit(fn)
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(iters):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append((time.perf_counter() - start) * 1e3)
  return statistics.median(times)


def normal(key, shape, dtype=jnp.bfloat16, scale=1.0):
  return (jax.random.normal(key, shape, jnp.float32) * scale).astype(dtype)


# ----------------------------------------------------------------- peaks


def measure_peaks(iters):
  x = jnp.ones((1 << 29,), jnp.bfloat16)  # 1 GiB
  copy_ms = time_ms(jnp.negative, x, iters=iters)
  gbps = 2 * x.nbytes / copy_ms / 1e6
  n = 8192
  a = normal(jax.random.key(0), (n, n))
  b = normal(jax.random.key(1), (n, n))
  gemm_ms = time_ms(jnp.dot, a, b, iters=iters)
  tflops = 2 * n ** 3 / gemm_ms / 1e9
  return gbps, tflops


# ----------------------------------------------------------------- ops


def bench_fp8_block_gemm(iters):
  rows = []
  m = 4096
  for n, k in [(2112, 7168), (7168, 2048), (24576, 1536)]:
    ka, kb = jax.random.split(jax.random.key(n + k))
    a, a_scale = quantize_1x128(normal(ka, (m, k), jnp.float32))
    b, b_scale = quantize_128x128(normal(kb, (n, k), jnp.float32, scale=0.05))
    flops, shape = 2 * m * n * k, f"M={m} N={n} K={k}"
    ms = time_ms(lambda *x: fp8_block_gemm(*x, implementation="mosaic_gpu"), a, a_scale, b, b_scale, iters=iters)
    a16, b16 = a.astype(jnp.bfloat16), b.astype(jnp.bfloat16)
    base = time_ms(lambda x, y: jnp.dot(x, y.T), a16, b16, iters=iters)
    rows.append(("fp8_block_gemm", shape, "bf16 jnp.dot", base, flops, None, base))
    rows.append(("fp8_block_gemm", shape, "mosaic_gpu", ms, flops, None, base))
  return rows


def bench_grouped_matmul(iters):
  rows = []
  m, k, n, g = 16384, 7168, 2048, 16
  keys = jax.random.split(jax.random.key(0), 3)
  x, w = normal(keys[0], (m, k)), normal(keys[1], (g, k, n), scale=k ** -0.5)
  # Uneven routing with two empty experts, as after a top-k router.
  weights = jax.random.uniform(keys[2], (g,)).at[jnp.array([3, 11])].set(0.0)
  sizes = jnp.floor(weights / weights.sum() * m).astype(jnp.int32)
  sizes = sizes.at[0].add(m - sizes.sum())
  flops, shape = 2 * m * k * n, f"M={m} K={k} N={n} G={g}"
  dense = time_ms(jnp.dot, x, w[0], iters=iters)
  rows.append(("grouped_matmul fwd", shape, "dense GEMM, same FLOPs", dense, flops, None, dense))
  base = time_ms(jax.lax.ragged_dot, x, w, sizes, iters=iters)
  rows.append(("grouped_matmul fwd", shape, "jax.lax.ragged_dot", base, flops, None, dense))
  ms = time_ms(lambda x, w, s: grouped_matmul(x, w, s, implementation="mosaic_gpu"), x, w, sizes, iters=iters)
  rows.append(("grouped_matmul fwd", shape, "mosaic_gpu", ms, flops, None, dense))
  for impl in ("xla", "mosaic_gpu"):
    loss = lambda x, w, s, impl=impl: jnp.sum(grouped_matmul(x, w, s, implementation=impl).astype(jnp.float32))
    ms = time_ms(jax.grad(loss, argnums=(0, 1)), x, w, sizes, iters=iters)
    label = "jax.lax.ragged_dot" if impl == "xla" else impl
    rows.append(("grouped_matmul bwd", shape, label, ms, 2 * flops, None, None))
  return rows


def bench_mla_decode(iters):
  rows = []
  bsz, h, s, latent, rope = 64, 128, 4096, 512, 64
  keys = jax.random.split(jax.random.key(0), 3)
  q = normal(keys[0], (bsz, 1, h, latent + rope))
  c_kv, k_rope = normal(keys[1], (bsz, s, latent)), normal(keys[2], (bsz, s, rope))
  lengths = jnp.full((bsz,), s, jnp.int32)
  scale = (latent + rope) ** -0.5
  flops = 2 * bsz * h * s * (latent + rope + latent)
  nbytes = c_kv.nbytes + k_rope.nbytes + q.nbytes + bsz * h * latent * 2
  shape = f"B={bsz} H={h} S={s} Tq=1"

  def xla_absorbed(q, c_kv, k_rope, lengths):
    f32 = jnp.float32
    scores = (jnp.einsum("bthc,bsc->bths", q[..., :latent], c_kv, preferred_element_type=f32)
              + jnp.einsum("bthr,bsr->bths", q[..., latent:], k_rope, preferred_element_type=f32)) * scale
    scores = jnp.where(jnp.arange(s) < lengths[:, None, None, None], scores, -jnp.inf)
    p = jax.nn.softmax(scores, axis=-1).astype(q.dtype)
    return jnp.einsum("bths,bsc->bthc", p, c_kv, preferred_element_type=f32).astype(q.dtype)

  base = time_ms(xla_absorbed, q, c_kv, k_rope, lengths, iters=iters)
  rows.append(("mla_decode", shape, "XLA absorbed einsum", base, flops, nbytes, base))
  for p_in_registers in (False, True):
    # The SMEM-staged P path keeps two accumulators live, so it needs the narrower value chunk.
    blocks = DecodeBlocks(block_dv=256 if p_in_registers else 128, p_in_registers=p_in_registers)
    ms = time_ms(lambda *a, blocks=blocks: mla_decode(*a, softmax_scale=scale, implementation="mosaic_gpu",
                                                      block_sizes=blocks), q, c_kv, k_rope, lengths, iters=iters)
    label = "mosaic_gpu, P in registers" if p_in_registers else "mosaic_gpu, P via SMEM"
    rows.append(("mla_decode", shape, label, ms, flops, nbytes, base))
  return rows


def bench_mla_attention(iters):
  rows = []
  bsz, t, h, dqk, dv = 4, 4096, 16, 192, 128
  keys = jax.random.split(jax.random.key(0), 3)
  q, k = normal(keys[0], (bsz, t, h, dqk)), normal(keys[1], (bsz, t, h, dqk))
  v = normal(keys[2], (bsz, t, h, dv))
  scale = dqk ** -0.5
  flops = bsz * h * t * t * (dqk + dv)  # causal: half of 2 * T^2 per matmul
  shape = f"B={bsz} T={t} H={h} Dqk={dqk} Dv={dv}"
  impls = {
      "cuDNN": lambda q, k, v: jax.nn.dot_product_attention(q, k, v, scale=scale, is_causal=True,
                                                            implementation="cudnn"),
      "XLA": lambda q, k, v: jax.nn.dot_product_attention(q, k, v, scale=scale, is_causal=True,
                                                          implementation="xla"),
      "mosaic_gpu, P via SMEM": lambda q, k, v: mla_attention(q, k, v, softmax_scale=scale,
                                                              implementation="mosaic_gpu"),
      "mosaic_gpu, P in registers": lambda q, k, v: mla_attention(
          q, k, v, softmax_scale=scale, implementation="mosaic_gpu",
          block_sizes=AttentionBlocks(p_in_registers=True)),
  }
  # Backward recomputes S and adds dP, dV, dQ, dK: (3 Dqk + 2 Dv) against the forward's (Dqk + Dv).
  bwd_mult = 1 + (3 * dqk + 2 * dv) / (dqk + dv)
  for direction, mult in (("fwd", 1.0), ("fwd+bwd", bwd_mult)):
    base = None
    for name, fn in impls.items():
      if direction == "fwd+bwd":
        fn = jax.grad(lambda q, k, v, fn=fn: jnp.sum(fn(q, k, v).astype(jnp.float32)), argnums=(0, 1, 2))
      try:
        ms = time_ms(fn, q, k, v, iters=iters)
      except Exception as e:  # cuDNN may reject Dqk != Dv on some versions
        print(f"mla_attention {direction} {name}: {type(e).__name__}: {str(e)[:200]}")
        continue
      base = base or ms
      rows.append((f"mla_attention {direction}", shape, name, ms, mult * flops, None, base))
  return rows


BENCHES = {
    "fp8_block_gemm": bench_fp8_block_gemm,
    "grouped_matmul": bench_grouped_matmul,
    "mla_decode": bench_mla_decode,
    "mla_attention": bench_mla_attention,
}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--ops", default=",".join(BENCHES), help="comma-separated subset of " + ",".join(BENCHES))
  parser.add_argument("--iters", type=int, default=20)
  args = parser.parse_args()
  single_process_only("experiments/bench_kernels.py")
  print(f"device: {jax.devices()[0].device_kind}")
  gbps, tflops = measure_peaks(args.iters)
  print(f"measured copy bandwidth {gbps:.0f} GB/s, bf16 GEMM {tflops:.0f} TFLOP/s (8192^3)\n")
  print("| op | shape | implementation | time (ms) | TFLOP/s | GB/s | % of measured peak | speed-up vs first row |")
  print("|---|---|---|---|---|---|---|---|")
  for name in args.ops.split(","):
    try:
      rows = BENCHES[name](args.iters)
    except Exception as e:
      print(f"| {name} | | failed: {type(e).__name__}: {str(e)[:120]} | | | | | |")
      continue
    for op, shape, impl, ms, flops, nbytes, base in rows:
      tf = flops / ms / 1e9
      bw = f"{nbytes / ms / 1e6:.0f}" if nbytes else ""
      peak = f"{100 * nbytes / ms / 1e6 / gbps:.0f}% BW" if nbytes else f"{100 * tf / tflops:.0f}% bf16"
      speedup = f"{base / ms:.2f}x" if base else ""
      print(f"| {op} | {shape} | {impl} | {ms:.3f} | {tf:.0f} | {bw} | {peak} | {speedup} |")


if __name__ == "__main__":
  main()
