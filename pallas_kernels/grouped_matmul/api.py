"""`grouped_matmul(..., implementation=None|"xla"|"mosaic_gpu")`: differentiable MoE GEMM."""

import jax

from pallas_kernels._common import resolve_implementation
from pallas_kernels.grouped_matmul import mosaic_gpu


def _check_shapes(lhs, rhs, group_sizes):
  if lhs.ndim != 2 or rhs.ndim != 3 or lhs.shape[1] != rhs.shape[1]:
    raise ValueError(f"expected lhs (M, K) and rhs (G, K, N), got {lhs.shape=} {rhs.shape=}")
  if group_sizes.shape != (rhs.shape[0],):
    raise ValueError(f"{group_sizes.shape=} must be (G,) with G={rhs.shape[0]}")
  if lhs.dtype != rhs.dtype:
    raise ValueError(f"{lhs.dtype=} must equal {rhs.dtype=}")


def grouped_matmul(lhs, rhs, group_sizes, *, implementation=None,
                   block_sizes: mosaic_gpu.BlockSizes | None = None, interpret=None):
  """out[i] = lhs[i] @ rhs[group(i)] with rows sorted by group; differentiable in lhs and rhs."""
  _check_shapes(lhs, rhs, group_sizes)
  if resolve_implementation(implementation, interpret) == "xla":
    return jax.lax.ragged_dot(lhs, rhs, group_sizes.astype("int32"))
  return mosaic_gpu.grouped_matmul(lhs, rhs, group_sizes, block_sizes=block_sizes or mosaic_gpu.BlockSizes(),
                                   interpret=interpret)
