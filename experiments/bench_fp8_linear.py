"""FP8 linear (`fp8_matmul`, recipe fp8_v3) on the default device vs BF16, and vs the CPU emulation.

  python experiments/bench_fp8_linear.py                          # V3 shapes, on the GPU
  python experiments/bench_fp8_linear.py --shapes 256x512x384     # any MxKxN; runs on CPU too

For each shape x (M, K) @ w (K, N): the device result of the FP8 forward and of its two
gradients (dgrad, wgrad) against the same function run on the CPU backend (the exact
emulation the tests check against float64), as max |diff| / max |ref|; then the median time of
the forward and of forward + backward for fp8_v3 and for a BF16 matmul of the same shape, and
their ratio. Prints a markdown table for BENCHMARKS.md with the device, jax version and date.

Two fp8_v3 paths:
  fp8     `kernels="xla"`: E4M3 dots with FP32 accumulation per 128-chunk, then the scaled sum.
          It materializes K/128 partial products of the output (15 GB at 4096x7168x16384).
  kernel  `kernels="pallas"`: the same three GEMMs on the fused block-scaled Mosaic GPU kernel
          (pallas_kernels/fp8_block_gemm), which keeps the FP32 sum in registers. Its columns
          ("kernel ...", incl. its own errors against the CPU emulation) appear only where the
          kernel runs compiled (`r1jax.nn.kernels.block_scaled_gemm_choice`: a Hopper GPU);
          elsewhere the table has the XLA and BF16 columns alone.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from experiments.bench_kernels import time_ms  # noqa: E402
from experiments.cli import single_process_only  # noqa: E402
from r1jax.nn import kernels  # noqa: E402
from r1jax.nn.fp8 import fp8_matmul  # noqa: E402

V3_SHAPES = ("4096x7168x2048", "4096x2048x7168", "4096x7168x16384")  # MoE up, down; a wide dense


def functions(recipe: str, kernels_choice: str = "xla"):
    """(forward, forward + backward) of y = x @ w under `recipe`, jitted."""
    def forward(x, w):
        return fp8_matmul(x, w, recipe, kernels=kernels_choice)

    def loss(x, w, dy):
        return jnp.sum(forward(x, w).astype(jnp.float32) * dy)

    return jax.jit(forward), jax.jit(jax.grad(loss, argnums=(0, 1)))


def relative_error(device_out, cpu_out) -> float:
    got, ref = np.asarray(device_out, np.float32), np.asarray(cpu_out, np.float32)
    return float(np.max(np.abs(got - ref)) / max(np.max(np.abs(ref)), 1e-30))


def bench_shape(m: int, k: int, n: int, iters: int) -> dict:
    keys = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(keys[0], (m, k), jnp.float32).astype(jnp.bfloat16)  # (M, K)
    w = jax.random.normal(keys[1], (k, n), jnp.float32) * k ** -0.5  # (K, N) fp32 master
    dy = jax.random.normal(keys[2], (m, n), jnp.float32).astype(jnp.bfloat16)  # (M, N)
    fwd8, grad8 = functions("fp8_v3")
    fwd16, grad16 = functions("bf16")

    # The kernel path, only where the kernel runs compiled (else it would time the XLA path twice).
    paths = {"fp8": (fwd8, grad8)}
    if kernels.block_scaled_gemm_choice(kernels.kernel_choice("pallas")).pallas:
        paths["kernel"] = functions("fp8_v3", "pallas")

    cpu = jax.devices("cpu")[0]
    on_cpu = [jax.device_put(a, cpu) for a in (x, w, dy)]
    y_cpu, (dx_cpu, dw_cpu) = fwd8(*on_cpu[:2]), grad8(*on_cpu)  # the emulation, kernels="xla"
    row = {"shape": f"{m}x{k}x{n}"}
    for path, (fwd, grad) in paths.items():
        suffix = "" if path == "fp8" else f" {path}"  # "err y" stays the XLA path's column
        dx, dw = grad(x, w, dy)
        row[f"err y{suffix}"] = relative_error(fwd(x, w), y_cpu)
        row[f"err dx{suffix}"] = relative_error(dx, dx_cpu)
        row[f"err dw{suffix}"] = relative_error(dw, dw_cpu)
    for path, (fwd, grad) in paths.items():
        row[f"{path} fwd ms"] = time_ms(fwd, x, w, iters=iters)
        row[f"{path} fwd+bwd ms"] = time_ms(grad, x, w, dy, iters=iters)
    row["bf16 fwd ms"] = time_ms(fwd16, x, w, iters=iters)
    row["bf16 fwd+bwd ms"] = time_ms(grad16, x, w, dy, iters=iters)
    for path in paths:
        prefix = "" if path == "fp8" else f"{path} "  # BF16 time / FP8 time
        row[f"{prefix}fwd speed-up"] = row["bf16 fwd ms"] / row[f"{path} fwd ms"]
        row[f"{prefix}fwd+bwd speed-up"] = row["bf16 fwd+bwd ms"] / row[f"{path} fwd+bwd ms"]
    for path in paths:
        row[f"{path} fwd TFLOP/s"] = 2 * m * k * n / row[f"{path} fwd ms"] / 1e9
    return row


def number(value: float) -> str:
    """Three decimals, or three significant digits where those would round a small value to 0
    (an emulated FP8 GEMM on CPU runs at well under 0.001 TFLOP/s)."""
    return f"{value:.3f}" if abs(value) >= 0.1 else f"{value:.3g}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default=",".join(V3_SHAPES), help="comma-separated MxKxN")
    parser.add_argument("--iters", type=int, default=20)
    args = parser.parse_args(argv)
    single_process_only("experiments/bench_fp8_linear.py")
    rows = []
    for spec in args.shapes.split(","):
        try:
            m, k, n = (int(d) for d in spec.lower().split("x"))
        except ValueError:
            parser.error(f"--shapes entry {spec!r} must look like 4096x7168x2048")
        rows.append(bench_shape(m, k, n, args.iters))

    columns = list(rows[0])
    device = jax.devices()[0]
    print(f"\n{device.platform}: {device.device_kind}, jax {jax.__version__}, "
          f"{datetime.date.today().isoformat()}; err = max|device - cpu emulation| / max|cpu|\n")
    print("| " + " | ".join(columns) + " |")
    print("|" + "|".join("---" if c == "shape" else "---:" for c in columns) + "|")
    for row in rows:
        cells = [row[c] if c == "shape" else (f"{row[c]:.2e}" if c.startswith("err") else number(row[c]))
                 for c in columns]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
