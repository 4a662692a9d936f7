"""`grouped_matmul(..., implementation=None|"xla"|"mosaic_gpu")`: differentiable MoE GEMM.

None runs the Mosaic GPU kernel where `mosaic_gpu.check_support` passes (sm_90 or the
interpreter, bf16 operands) and `jax.lax.ragged_dot` elsewhere.
"""

import jax

from pallas_kernels._common import run_implementation
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
  return run_implementation(
      implementation,
      check_support=lambda: mosaic_gpu.check_support(lhs, rhs, interpret=interpret),
      mosaic_gpu=lambda: mosaic_gpu.grouped_matmul(lhs, rhs, group_sizes,
                                                   block_sizes=block_sizes or mosaic_gpu.BlockSizes(),
                                                   interpret=interpret),
      xla=lambda: jax.lax.ragged_dot(lhs, rhs, group_sizes.astype("int32")))
