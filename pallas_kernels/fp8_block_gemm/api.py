"""`fp8_block_gemm(..., implementation=None|"xla"|"mosaic_gpu")`."""

import jax.numpy as jnp

from pallas_kernels._common import cdiv, resolve_implementation
from pallas_kernels.fp8_block_gemm import mosaic_gpu, reference

SCALE_BLOCK = reference.SCALE_BLOCK


def _check_shapes(a, a_scale, b, b_scale):
  if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
    raise ValueError(f"expected a (M, K) and b (N, K) with equal K, got {a.shape=} {b.shape=}")
  m, k = a.shape
  n = b.shape[0]
  if a_scale.shape != (m, cdiv(k, SCALE_BLOCK)):
    raise ValueError(f"{a_scale.shape=} must be (M, ceil(K/128)) = {(m, cdiv(k, SCALE_BLOCK))}")
  if b_scale.shape != (cdiv(n, SCALE_BLOCK), cdiv(k, SCALE_BLOCK)):
    raise ValueError(f"{b_scale.shape=} must be (ceil(N/128), ceil(K/128)) = "
                     f"{(cdiv(n, SCALE_BLOCK), cdiv(k, SCALE_BLOCK))}")
  for name, x in (("a", a), ("b", b)):
    if x.dtype != jnp.float8_e4m3fn:
      raise ValueError(f"{name}.dtype={x.dtype} must be float8_e4m3fn")


def fp8_block_gemm(a, a_scale, b, b_scale, *, out_dtype=jnp.bfloat16, implementation=None,
                   block_sizes: mosaic_gpu.BlockSizes | None = None, interpret=None):
  """Block-scaled e4m3 GEMM: a (M,K) @ b (N,K)^T with 1x128 / 128x128 scales."""
  _check_shapes(a, a_scale, b, b_scale)
  if jnp.dtype(out_dtype) not in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float32)):
    raise ValueError(f"{out_dtype=} must be bfloat16 or float32")
  if resolve_implementation(implementation, interpret) == "xla":
    return reference.fp8_block_gemm(a, a_scale, b, b_scale, out_dtype=out_dtype)
  return mosaic_gpu.fp8_block_gemm(a, a_scale, b, b_scale, out_dtype=out_dtype,
                                   block_sizes=block_sizes or mosaic_gpu.BlockSizes(),
                                   interpret=interpret)
