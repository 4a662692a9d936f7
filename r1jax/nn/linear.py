"""Projections under the model's precision recipe.

"bf16" is a plain matmul in the activation dtype (float32 activations give float32 matmuls);
"fp8_v3" / "fp8_per_tensor" run the projection through `fp8_matmul` (r1jax/nn/fp8.py). Only the
projections V3 runs in FP8 call this: MLA's q/kv/o projections, dense and expert FFNs [V3 §3.3].
Embedding, output head, MoE gate, norms and the attention core stay in BF16/FP32.

A weight may also be a 128x128 `QuantizedArray` (K, N): an FP8 checkpoint's E4M3 values and block
scales, kept as they are (`r1jax.interop.hf.load_checkpoint(..., keep_fp8=True)`). Its N is the
flattened output (heads included): the HF block grid covers the (K, N) matrix, so its heads cannot
be unflattened before the matmul, and callers reshape the output. Only "fp8_v3" computes on such
a weight; other recipes raise rather than silently dequantize. Modules therefore read projection
weights with `.get_value()` (a Variable's `[...]` indexes, which a QuantizedArray cannot).

`kernels` is `ModelConfig.kernels`, handed to `fp8_matmul`: "pallas" / "pallas_interpret" run the
fp8_v3 GEMMs on the fused block-scaled kernel where one can run (r1jax/nn/kernels.py decides);
"bf16" and "fp8_per_tensor" projections ignore it.

The "bf16" matmul has its own backward (`matmul`): the weight gradient is asked for as
x^T dy = einsum("...k,...n->kn"), which XLA:CPU runs as one GEMM over the operands as stored.
Autodiff of the einsum asks for it as (N, K) and transposes: XLA:CPU then copies dy into a
transposed layout before a slower dot (a (8, 256, 256) x (256, 1024) projection's forward +
backward: 33.5 ms against 24.0 ms on one core). The input gradient is autodiff's, bit for bit;
the weight gradient equals it to float32 rounding (another GEMM, another summation order).
x reaches that GEMM through an optimization barrier, so its transposed copy is a plain
transpose rather than a recomputation of the ops that made x (`_matmul_bwd`). The untied output
head takes it too for float32 activations (r1jax/models/deepseek_v3.py `output_logits`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from r1jax.nn.fp8 import fp8_matmul
from r1jax.nn.fp8_quant import QuantizedArray


def check_prequantized(w, recipe: str) -> None:
    """A QuantizedArray weight is computed on only by "fp8_v3": say so instead of dequantizing."""
    if isinstance(w, QuantizedArray) and recipe != "fp8_v3":
        raise ValueError(f"precision={recipe!r} cannot compute with an FP8 checkpoint weight kept in "
                         f"E4M3 ({w.shape=}, {w.tile=}): use precision='fp8_v3', or load the "
                         f"checkpoint with keep_fp8=False to get float weights")


@jax.custom_vjp
def matmul(x: jax.Array, w: jax.Array) -> jax.Array:
    """x (..., K) @ w (K, N) -> (..., N) in x.dtype (w cast to it), with the backward above."""
    return jnp.einsum("...k,kn->...n", x, w.astype(x.dtype))


def _matmul_fwd(x, w):
    return matmul(x, w), (x, w)


def _matmul_bwd(residuals, dy):
    x, w = residuals  # dy (..., N) in x.dtype, as autodiff of the einsum would see it
    dx = jnp.einsum("...n,kn->...k", dy, w.astype(x.dtype))  # (..., K)
    # XLA:CPU's GEMM wants x^T (K, rows) laid out with the rows minor, a transposed copy of x.
    # Unbarriered, it fuses that copy with the ops that made x (an RMSNorm, SwiGLU's product)
    # and recomputes them in transposed order, 3-4x slower than norm + plain transpose; the
    # barrier leaves a pure transpose (values unchanged: DeepSeek-V3 small's loss and gradients
    # bit-identical, the train step's non-GEMM work 17-22 ms lower of ~230 on one core).
    x = jax.lax.optimization_barrier(x)
    dw = jnp.einsum("...k,...n->kn", x, dy)  # (K, N): x^T dy, one GEMM over the rows
    return dx, dw.astype(w.dtype)


matmul.defvjp(_matmul_fwd, _matmul_bwd)


def project(x: jax.Array, w: jax.Array | QuantizedArray, recipe: str, kernels: str = "xla") -> jax.Array:
    """x (..., K) @ w (K, ...) -> (..., *w.shape[1:]); multi-dim outputs (heads) are flattened for
    the matmul and restored after. A QuantizedArray w is (K, N) already, giving (..., N)."""
    check_prequantized(w, recipe)
    if isinstance(w, QuantizedArray):
        return fp8_matmul(x, w, recipe, kernels=kernels)  # (..., N)
    out_shape = w.shape[1:]
    w2 = w.reshape(w.shape[0], -1)
    if recipe == "bf16":
        y = matmul(x, w2)
    else:
        y = fp8_matmul(x, w2, recipe, kernels=kernels)
    return y.reshape(*x.shape[:-1], *out_shape)


def project_in(x: jax.Array, w: jax.Array | QuantizedArray, recipe: str, n_in: int,
               kernels: str = "xla") -> jax.Array:
    """Contract the last `n_in` dims of x with the first `n_in` dims of w (e.g. (B, T, H, V) with
    the output projection (H, V, D)). A QuantizedArray w is (H*V, D), its in-dims already flat."""
    k = 1
    for d in x.shape[-n_in:]:
        k *= d
    w2 = w if isinstance(w, QuantizedArray) else w.reshape(k, *w.shape[n_in:])
    return project(x.reshape(*x.shape[:-n_in], k), w2, recipe, kernels)
