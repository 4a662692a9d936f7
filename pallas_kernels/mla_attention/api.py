"""`mla_attention(..., implementation=None|"xla"|"mosaic_gpu")`: differentiable causal attention.

None runs the Mosaic GPU kernel where `mosaic_gpu.check_support` passes (sm_90 or the
interpreter, bf16, head dims that are multiples of 64) and the XLA reference elsewhere.
"""

from pallas_kernels._common import run_implementation
from pallas_kernels.mla_attention import mosaic_gpu, reference


def _check_shapes(q, k, v, lengths):
  if q.ndim != 4 or k.shape != q.shape:
    raise ValueError(f"q and k must both be (B, T, H, Dqk), got {q.shape=} {k.shape=}")
  if v.ndim != 4 or v.shape[:3] != q.shape[:3]:
    raise ValueError(f"{v.shape=} must be (B, T, H, Dv) matching {q.shape=}")
  if lengths is not None and lengths.shape != (q.shape[0],):
    raise ValueError(f"{lengths.shape=} must be ({q.shape[0]},)")
  if not (q.dtype == k.dtype == v.dtype):
    raise ValueError(f"{q.dtype=} {k.dtype=} {v.dtype=} must match")


def mla_attention(q, k, v, lengths=None, *, softmax_scale: float, causal: bool = True,
                  implementation=None, block_sizes: mosaic_gpu.BlockSizes | None = None, interpret=None):
  """Flash attention with Dqk != Dv; keys at or past lengths[b] are padding."""
  _check_shapes(q, k, v, lengths)
  blocks = block_sizes or mosaic_gpu.BlockSizes()
  return run_implementation(
      implementation,
      check_support=lambda: mosaic_gpu.check_support(q, k, v, block_sizes=blocks, interpret=interpret),
      mosaic_gpu=lambda: mosaic_gpu.mla_attention(q, k, v, lengths, softmax_scale=softmax_scale,
                                                  causal=causal, block_sizes=blocks,
                                                  interpret=interpret),
      xla=lambda: reference.mla_attention(q, k, v, lengths, softmax_scale=softmax_scale, causal=causal))
