"""`fp8_block_gemm(..., implementation=None|"xla"|"mosaic_gpu")`.

None runs the Mosaic GPU kernel where `mosaic_gpu.check_support` passes (sm_90 or the
interpreter) and the XLA reference elsewhere.
"""

import jax.numpy as jnp

from pallas_kernels._common import cdiv, run_implementation
from pallas_kernels.fp8_block_gemm import mosaic_gpu, reference

SCALE_BLOCK = reference.SCALE_BLOCK


def _check_shapes(a, a_scale, b, b_scale, b_scale_rows):
  if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
    raise ValueError(f"expected a (M, K) and b (N, K) with equal K, got {a.shape=} {b.shape=}")
  m, k = a.shape
  n = b.shape[0]
  kb = cdiv(k, SCALE_BLOCK)
  if a_scale.shape != (m, kb):
    raise ValueError(f"{a_scale.shape=} must be (M, ceil(K/128)) = {(m, kb)}")
  if b_scale_rows and b_scale.shape != (n, kb):
    raise ValueError(f"{b_scale.shape=} must be (N, ceil(K/128)) = {(n, kb)} with b_scale_rows=True "
                     f"(one scale per row of b per 128-chunk)")
  if not b_scale_rows and b_scale.shape != (cdiv(n, SCALE_BLOCK), kb):
    raise ValueError(f"{b_scale.shape=} must be (ceil(N/128), ceil(K/128)) = "
                     f"{(cdiv(n, SCALE_BLOCK), kb)} (one per 128x128 block); pass "
                     f"b_scale_rows=True for (N, ceil(K/128)) per-row scales")
  for name, x in (("a", a), ("b", b)):
    if x.dtype != jnp.float8_e4m3fn:
      raise ValueError(f"{name}.dtype={x.dtype} must be float8_e4m3fn")


def fp8_block_gemm(a, a_scale, b, b_scale, *, out_dtype=jnp.bfloat16, b_scale_rows=False,
                   implementation=None, block_sizes: mosaic_gpu.BlockSizes | None = None,
                   interpret=None):
  """Block-scaled e4m3 GEMM: a (M,K) @ b (N,K)^T, promoted to fp32 every 128 K.

  a_scale (M, ceil(K/128)): 1x128 tiles of a. b_scale (ceil(N/128), ceil(K/128)):
  128x128 blocks of b (Fprop, Dgrad); or, with `b_scale_rows=True`,
  (N, ceil(K/128)): 1x128 tiles of b, as in Wgrad where both operands are
  activation tiles along the token (contraction) dim.
  """
  _check_shapes(a, a_scale, b, b_scale, b_scale_rows)
  if jnp.dtype(out_dtype) not in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float32)):
    raise ValueError(f"{out_dtype=} must be bfloat16 or float32")
  return run_implementation(
      implementation,
      check_support=lambda: mosaic_gpu.check_support(interpret=interpret),
      mosaic_gpu=lambda: mosaic_gpu.fp8_block_gemm(a, a_scale, b, b_scale, out_dtype=out_dtype,
                                                   block_sizes=block_sizes or mosaic_gpu.BlockSizes(),
                                                   interpret=interpret, b_scale_rows=b_scale_rows),
      xla=lambda: reference.fp8_block_gemm(a, a_scale, b, b_scale, out_dtype=out_dtype,
                                           b_scale_rows=b_scale_rows))
