"""The promoted FP8 GEMM under fp8_v3's three GEMMs: an XLA emulation or the fused Hopper kernel.

`promoted_dot` computes out[b, p, q] = sum_c (a[b, p, c] . b[b, q, c]) * a_scale * b_scale, every
128-chunk's E4M3 dot product accumulated in FP32, then scaled and summed in FP32 (the promotion of
V3 §3.3.2). b's scales come either per 128x128 block (the weight in Fprop and Dgrad) or per row per
chunk (the 1x128 token tiles of dy^T in Wgrad). It runs on one of two implementations, which its
`choice` (a `KernelChoice`, resolved by `kernels.block_scaled_gemm_choice`) names:

  emulation  XLA einsums that materialize the C chunk partials side by side (C x the output's
             memory), exact on any backend: kernels="xla", and kernels="pallas" where no kernel
             can run.
  kernel     pallas_kernels/fp8_block_gemm (Mosaic GPU, sm_90) through r1jax/nn/kernels.py, which
             keeps the running FP32 sum in registers: kernels="pallas" on a Hopper GPU, or
             "pallas_interpret" in the Mosaic GPU interpreter. The weight's batch dim B is vmapped:
             plgpu.kernel's batching rule adds B to the kernel's grid, so B GEMMs are one launch
             (checked in the interpreter and by lowering for CUDA).

Both compute the same quantized math; only the FP32 summation order differs (~1e-7 relative).

Axis glossary: B batch/expert dim of the weight, P rows of a, Q rows of b (the output's columns),
C number of 128-chunks of the contraction dim, T the 128 positions of one.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from r1jax.nn import kernels
from r1jax.nn.fp8_quant import TILE
from r1jax.nn.kernels import KernelChoice


def _emulated_dot(a_values, a_scales, b_values, b_scales) -> jax.Array:
    """The XLA emulation with per-row scales of both operands: (B, P, C*T) x (B, Q, C*T) -> (B, P, Q).

    Scaled like the `fp8_gemm` kernel of inference/kernel.py (`acc += dot(a, b) * a_s * b_s`).
    """
    batch, rows, width = a_values.shape
    chunks = width // TILE
    a = a_values.reshape(batch, rows, chunks, TILE)  # (B, P, C, T)
    b = b_values.reshape(batch, b_values.shape[1], chunks, TILE)  # (B, Q, C, T)
    partial = jnp.einsum("bpct,bqct->bcpq", a, b, preferred_element_type=jnp.float32)  # (B, C, P, Q)
    a_s = jnp.swapaxes(a_scales, 1, 2)[:, :, :, None]  # (B, C, P, 1)
    b_s = jnp.swapaxes(b_scales, 1, 2)[:, :, None, :]  # (B, C, 1, Q)
    return jnp.sum(partial * a_s * b_s, axis=1)  # (B, P, Q)


def promoted_dot(a_values, a_scales, b_values, b_scales, *, b_blocks: bool,
                 choice: KernelChoice = kernels.XLA) -> jax.Array:
    """out[b, p, q] = sum_c (a[b, p, c] . b[b, q, c]) * a_scale[b, p, c] * b_scale[b, q, c] in FP32.

    a_values (B, P, C*T) and b_values (B, Q, C*T): E4M3, contraction dim last, zero-padded to
    whole chunks. a_scales (B, P, C): one FP32 scale per row per chunk. b_scales (B, Q/T, C), one per
    128x128 block (`b_blocks`, Q a multiple of 128), or (B, Q, C), one per row per chunk.
    """
    if choice.pallas:  # resolved by kernels.block_scaled_gemm_choice: the kernel runs here
        return kernels.block_scaled_gemm(a_values, a_scales, b_values, b_scales,
                                         b_scale_rows=not b_blocks, choice=choice)  # (B, P, Q)
    if b_blocks:  # a block's scale applies to each of its 128 rows
        b_scales = jnp.repeat(b_scales, TILE, axis=1)  # (B, Q, C)
    return _emulated_dot(a_values, a_scales, b_values, b_scales)
