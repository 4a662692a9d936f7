"""The DeepSeek-V3 FP8 training recipe [V3 §3.3, App. B], emulated exactly in JAX.

A projection `x @ w` (w stored (in, out)) becomes `fp8_matmul(x, w, recipe)`. Under "fp8_v3" all
three GEMMs of a Linear (Fprop, Dgrad, Wgrad) take E4M3 inputs with fine-grained scales
[V3 §3.3.1, Fig. 6-7]:
  Fprop  y  = x W     x: 1x128 tiles along K (per token);  W: 128x128 blocks
  Dgrad  dx = dy W^T  dy: 1x128 tiles along N (per token); W: the same 128x128 blocks, transposed
  Wgrad  dW = x^T dy  x and dy: 1x128 tiles of x^T / dy^T, i.e. 128 tokens x 1 channel, because
                      the tokens are this GEMM's contraction dim. x is quantized in that layout
                      at Fprop time and cached in FP8 ("activations are cached in FP8 for
                      Wgrad", §3.3.1).
Every tile lies along its GEMM's contraction dim, so each 128-long chunk of a dot product has one
scale per operand. Each chunk's partial product is computed from the E4M3 values in FP32, multiplied
by its two scales and summed in FP32: the promotion every N_C = 128 elements of V3 §3.3.2 and of
the `fp8_gemm` kernel in inference/kernel.py. That GEMM (r1jax/nn/fp8_gemm.py) is an XLA emulation
by default; with `kernels="pallas"` (or "pallas_interpret") it runs on the fused Hopper kernel
pallas_kernels/fp8_block_gemm (Fprop and Dgrad with 128x128 weight-block scales, Wgrad with
per-row scales of dy^T). Scales are computed online from the current amax (s = max(amax, 1e-4) /
448, no delayed scaling); E4M3 everywhere, gradients included (§3.3.2).
Activation gradients are never quantized in 128x128 blocks: that diverged a 16B MoE (App. B.2).

Kept in BF16/FP32 by V3 (§3.3.1), so models call plain einsums there, not `fp8_matmul`:
the embedding, the output head, the MoE gate (router), normalization operators and the attention
core (QK^T, softmax, PV). Master weights, weight gradients and accumulation are FP32; AdamW moments
are BF16. The FP8 recipe covers the Linear projections around them (MLA down/up projections,
attention output, dense and expert FFNs).

MoE experts call `fp8_ragged_dot(x, w, group_sizes, recipe)` (jax.lax.ragged_dot semantics), whose
Wgrad token tiles restart at every expert's first token.

Both also take a weight already in E4M3, a 128x128 `QuantizedArray` (e.g. from
`from_weight_scale_inv`: a released checkpoint's weight, loaded by
`r1jax.interop.hf.load_checkpoint(..., keep_fp8=True)`), under "fp8_v3" only: Fprop and Dgrad use
its blocks as they are and the weight is frozen (zero gradient, no Wgrad).

Recipes (`PRECISION_RECIPES`): "bf16" (plain dot in the activation dtype with FP32 accumulation),
"fp8_v3" (the above), "fp8_per_tensor" (one online E4M3 scale per tensor: the baseline that
fine-grained scaling beats on activations with outliers).

Not reproduced: the ~14-bit accumulator of H800 tensor cores inside a 128-chunk (a hardware detail,
§3.3.2), the E5M6 cache of the attention-output input and the recomputed SwiGLU (memory tricks).

Axis glossary: B leading batch/expert dim of the weight, M tokens, K in features (the contraction
of Fprop), N out features, C number of 128-chunks of a contraction dim, T the 128 positions of one.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp

from r1jax.nn.fp8_gemm import promoted_dot
from r1jax.nn.fp8_quant import (
    AMAX_FLOOR,
    E4M3_MAX,
    PRECISION_RECIPES,
    TILE,
    QuantizedArray,
    check_recipe,
    dequantize,
    from_weight_scale_inv,
    quantize_128x128,
    quantize_1x128,
    quantize_per_tensor,
)
from r1jax.nn.fp8_ragged import fp8_ragged_dot
from r1jax.nn.kernels import XLA, KernelChoice, block_scaled_gemm_choice, kernel_choice

# ---------------------------------------------------------------------------------------------
# The three FP8 GEMMs of fp8_v3, batched over B: every operand is quantized along its contraction dim
# ---------------------------------------------------------------------------------------------


def _fprop(qx: QuantizedArray, qw: QuantizedArray, gemm: KernelChoice) -> jax.Array:
    """y = x W: qx (B, M, Kp) in 1x128 tiles along K, qw (B, Kp, Np) in 128x128 blocks -> (B, M, N)."""
    w_t = jnp.swapaxes(qw.values, 1, 2)  # (B, Np, Kp): K-major, as the FP8 tensor cores read it
    w_t_scales = jnp.swapaxes(qw.scales, 1, 2)  # (B, Nc, Kc)
    y = promoted_dot(qx.values, qx.scales, w_t, w_t_scales, b_blocks=True, choice=gemm)
    return y[:, :, : qw.shape[-1]]


def _dgrad(qdy: QuantizedArray, qw: QuantizedArray, gemm: KernelChoice) -> jax.Array:
    """dx = dy W^T: qdy (B, M, Np) in 1x128 tiles along N, the same 128x128 qw -> (B, M, K).

    Square blocks are transpose-invariant, so the Fprop weight quantization serves Dgrad as is.
    """
    dx = promoted_dot(qdy.values, qdy.scales, qw.values, qw.scales, b_blocks=True, choice=gemm)
    return dx[:, :, : qw.shape[-2]]


def _wgrad(qx_t: QuantizedArray, qdy_t: QuantizedArray, gemm: KernelChoice) -> jax.Array:
    """dW = x^T dy: qx_t (B, K, Mp) and qdy_t (B, N, Mp), both 1x128 along tokens -> (B, K, N)."""
    return promoted_dot(qx_t.values, qx_t.scales, qdy_t.values, qdy_t.scales, b_blocks=False,
                        choice=gemm)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _fp8_v3_matmul(power_of_two: bool, w_dtype, gemm: KernelChoice, x: jax.Array,
                   w: jax.Array) -> jax.Array:
    return _fp8_v3_fwd(power_of_two, w_dtype, gemm, x, w)[0]


def _fp8_v3_fwd(power_of_two, w_dtype, gemm, x, w):  # x (B, M, K), w (B, K, N)
    qx = quantize_1x128(x, power_of_two_scales=power_of_two)  # (B, M, Kp)
    qw = quantize_128x128(w, power_of_two_scales=power_of_two)  # (B, Kp, Np)
    y = _fprop(qx, qw, gemm).astype(x.dtype)  # (B, M, N)
    # The FP8 activation cache for Wgrad [§3.3.1], tiled along tokens (Wgrad's contraction dim) and
    # quantized from x itself, not re-quantized from the 1x128 copy.
    qx_t = quantize_1x128(jnp.swapaxes(x, 1, 2), power_of_two_scales=power_of_two)  # (B, K, Mp)
    return y, (qx_t, qw)


def _fp8_v3_bwd(power_of_two, w_dtype, gemm, residuals, dy):  # dy (B, M, N)
    qx_t, qw = residuals
    # Activation gradients get per-token 1x128 tiles: 128x128 blocks on dy diverged (App. B.2).
    qdy = quantize_1x128(dy, power_of_two_scales=power_of_two)  # (B, M, Np)
    qdy_t = quantize_1x128(jnp.swapaxes(dy, 1, 2), power_of_two_scales=power_of_two)  # (B, N, Mp)
    dx = _dgrad(qdy, qw, gemm).astype(dy.dtype)  # (B, M, K)
    dw = _wgrad(qx_t, qdy_t, gemm).astype(w_dtype)  # (B, K, N)
    return dx, dw


_fp8_v3_matmul.defvjp(_fp8_v3_fwd, _fp8_v3_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _fp8_v3_matmul_prequantized(power_of_two: bool, gemm: KernelChoice, x: jax.Array,
                                qw: QuantizedArray) -> jax.Array:
    """fp8_v3 with a weight already in E4M3 (e.g. a released checkpoint): frozen, no gradient to it."""
    return _fp8_v3_prequantized_fwd(power_of_two, gemm, x, qw)[0]


def _fp8_v3_prequantized_fwd(power_of_two, gemm, x, qw):  # x (B, M, K), qw (B, Kp, Np)
    qx = quantize_1x128(x, power_of_two_scales=power_of_two)  # (B, M, Kp)
    return _fprop(qx, qw, gemm).astype(x.dtype), qw


def _fp8_v3_prequantized_bwd(power_of_two, gemm, qw, dy):  # dy (B, M, N)
    qdy = quantize_1x128(dy, power_of_two_scales=power_of_two)  # (B, M, Np)
    return _dgrad(qdy, qw, gemm).astype(dy.dtype), jax.tree.map(jnp.zeros_like, qw)


_fp8_v3_matmul_prequantized.defvjp(_fp8_v3_prequantized_fwd, _fp8_v3_prequantized_bwd)


# ---------------------------------------------------------------------------------------------
# The per-tensor baseline: the same three E4M3 GEMMs with one scale per tensor
# ---------------------------------------------------------------------------------------------


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _fp8_per_tensor_matmul(power_of_two: bool, w_dtype, x: jax.Array, w: jax.Array) -> jax.Array:
    return _fp8_per_tensor_fwd(power_of_two, w_dtype, x, w)[0]


def _fp8_per_tensor_fwd(power_of_two, w_dtype, x, w):  # x (B, M, K), w (B, K, N)
    qx = quantize_per_tensor(x, power_of_two_scales=power_of_two)
    qw = quantize_per_tensor(w, power_of_two_scales=power_of_two)
    # One scale per operand factors out of the whole sum, so a single FP32-accumulated dot is exact.
    y = jnp.einsum("bmk,bkn->bmn", qx.values, qw.values, preferred_element_type=jnp.float32)  # (B, M, N)
    return (y * qx.scales * qw.scales).astype(x.dtype), (qx, qw)


def _fp8_per_tensor_bwd(power_of_two, w_dtype, residuals, dy):  # dy (B, M, N)
    qx, qw = residuals
    qdy = quantize_per_tensor(dy, power_of_two_scales=power_of_two)
    dx = jnp.einsum("bmn,bkn->bmk", qdy.values, qw.values, preferred_element_type=jnp.float32)  # (B, M, K)
    dw = jnp.einsum("bmk,bmn->bkn", qx.values, qdy.values, preferred_element_type=jnp.float32)  # (B, K, N)
    return (dx * qdy.scales * qw.scales).astype(dy.dtype), (dw * qx.scales * qdy.scales).astype(w_dtype)


_fp8_per_tensor_matmul.defvjp(_fp8_per_tensor_fwd, _fp8_per_tensor_bwd)


# ---------------------------------------------------------------------------------------------
# The entry point models call
# ---------------------------------------------------------------------------------------------


def fp8_matmul(
    x: jax.Array,
    w: jax.Array | QuantizedArray,
    recipe: str,
    *,
    kernels: str = "xla",
    power_of_two_scales: bool = False,
) -> jax.Array:
    """x @ w under a precision recipe, for a projection whose weight is stored (in, out).

    x (..., K) with w (K, N) -> (..., N); or per expert/batch x (B, ..., K) with w (B, K, N) ->
    (B, ..., N). The output has x.dtype; gradients reach x and w in their own dtypes (FP32 master
    weights get FP32 weight gradients). w may also be a 128x128 QuantizedArray (K, N) or (B, K, N),
    e.g. from `from_weight_scale_inv`, under "fp8_v3" only: it is frozen (zero gradient).
    `power_of_two_scales` rounds every scale up to a power of two ("ue8m0").
    `kernels` is `ModelConfig.kernels`: "pallas" runs fp8_v3's Fprop, Dgrad and Wgrad on the fused
    block-scaled kernel (pallas_kernels/fp8_block_gemm) where one can run, "pallas_interpret" in the
    Mosaic GPU interpreter (r1jax/nn/kernels.py, r1jax/nn/fp8_gemm.py); other recipes, and places
    without a kernel, keep the XLA path. Static, like `recipe`.
    """
    check_recipe(recipe)
    choice = kernel_choice(kernels)
    # Resolved here, outside the jit: whether the kernel runs depends on the platform too, which the
    # jit cache key holds only through this static argument.
    gemm = block_scaled_gemm_choice(choice) if recipe == "fp8_v3" else XLA
    return _fp8_matmul(x, w, recipe, power_of_two_scales, gemm)


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _fp8_matmul(x, w, recipe: str, power_of_two_scales: bool, gemm: KernelChoice) -> jax.Array:
    if isinstance(w, QuantizedArray):
        if recipe != "fp8_v3" or w.tile != (TILE, TILE):
            raise ValueError(
                f"a pre-quantized weight ({w.tile=}) needs 128x128 blocks and recipe 'fp8_v3', not {recipe!r}"
            )
    w_shape = w.shape
    if len(w_shape) not in (2, 3):
        raise ValueError(f"{w_shape=} must be (K, N) or (B, K, N)")
    in_features, out_features = w_shape[-2:]
    if x.ndim < 1 or x.shape[-1] != in_features:
        raise ValueError(f"{x.shape=} must end in w's in-features dim: {w_shape=}")
    if len(w_shape) == 3 and (x.ndim < 2 or x.shape[0] != w_shape[0]):
        raise ValueError(f"{x.shape=} must lead with w's batch dim: {w_shape=}")

    batch = w_shape[0] if len(w_shape) == 3 else 1
    tokens = math.prod(x.shape[len(w_shape) - 2 : -1])
    x3 = x.reshape(batch, tokens, in_features)  # (B, M, K)
    if isinstance(w, QuantizedArray):
        w3 = w if len(w_shape) == 3 else jax.tree.map(lambda a: a[None], w)
        w3 = dataclasses.replace(w3, shape=(batch, in_features, out_features))  # (B, Kp, Np)
        y3 = _fp8_v3_matmul_prequantized(power_of_two_scales, gemm, x3, w3)
    else:
        w3 = w.reshape(batch, in_features, out_features)  # (B, K, N)
        if recipe == "bf16":
            y3 = jnp.einsum("bmk,bkn->bmn", x3, w3.astype(x.dtype), preferred_element_type=jnp.float32)
            y3 = y3.astype(x.dtype)
        elif recipe == "fp8_v3":
            y3 = _fp8_v3_matmul(power_of_two_scales, jnp.dtype(w.dtype), gemm, x3, w3)
        else:
            y3 = _fp8_per_tensor_matmul(power_of_two_scales, jnp.dtype(w.dtype), x3, w3)
    return y3.reshape(*x.shape[:-1], out_features)  # (..., N)


__all__ = [
    "AMAX_FLOOR",
    "E4M3_MAX",
    "PRECISION_RECIPES",
    "TILE",
    "QuantizedArray",
    "check_recipe",
    "dequantize",
    "fp8_matmul",
    "fp8_ragged_dot",
    "from_weight_scale_inv",
    "quantize_128x128",
    "quantize_1x128",
    "quantize_per_tensor",
]
