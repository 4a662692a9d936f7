"""`mla_decode(..., implementation=None|"xla"|"mosaic_gpu")`: attention on the latent cache.

None runs the Mosaic GPU kernel where `mosaic_gpu.check_support` passes (sm_90 or the
interpreter, bf16, a rope width that is a multiple of 16, a latent width that the value chunk
divides) and the XLA reference elsewhere. `block_sizes=None` picks
`mosaic_gpu.default_block_sizes` for the latent width.
"""

from pallas_kernels._common import run_implementation
from pallas_kernels.mla_decode import mosaic_gpu, reference


def _check_shapes(q, c_kv, k_rope, lengths, starts, latent_dim):
  if q.ndim != 4:
    raise ValueError(f"{q.shape=} must be (B, Tq, H, latent+rope)")
  bsz, _, _, d = q.shape
  if c_kv.ndim != 3 or c_kv.shape[0] != bsz or c_kv.shape[2] != latent_dim:
    raise ValueError(f"{c_kv.shape=} must be (B, S, {latent_dim}) with B={bsz}")
  if k_rope.shape != (bsz, c_kv.shape[1], d - latent_dim):
    raise ValueError(f"{k_rope.shape=} must be {(bsz, c_kv.shape[1], d - latent_dim)} given {q.shape=}")
  if lengths.shape != (bsz,):
    raise ValueError(f"{lengths.shape=} must be ({bsz},)")
  if starts is not None and starts.shape != (bsz,):
    raise ValueError(f"{starts.shape=} must be ({bsz},): one first valid cache slot per row "
                     "(or starts=None for rows that begin at slot 0)")


def mla_decode(q, c_kv, k_rope, lengths, starts=None, *, softmax_scale: float, latent_dim: int = 512,
               implementation=None, block_sizes: mosaic_gpu.BlockSizes | None = None, interpret=None):
  """Absorbed MLA attention of Tq new tokens over the cache slots [starts, lengths) of each row.

  Query t of row b sees keys starts[b] <= s < lengths[b] - Tq + 1 + t; starts None means zeros.
  """
  _check_shapes(q, c_kv, k_rope, lengths, starts, latent_dim)
  blocks = block_sizes or mosaic_gpu.default_block_sizes(latent_dim, interpret)
  return run_implementation(
      implementation,
      check_support=lambda: mosaic_gpu.check_support(q, c_kv, k_rope, latent_dim=latent_dim,
                                                     block_sizes=blocks, interpret=interpret),
      mosaic_gpu=lambda: mosaic_gpu.mla_decode(q, c_kv, k_rope, lengths, starts,
                                               softmax_scale=softmax_scale, latent_dim=latent_dim,
                                               block_sizes=blocks, interpret=interpret),
      xla=lambda: reference.mla_decode(q, c_kv, k_rope, lengths, starts, softmax_scale=softmax_scale,
                                       latent_dim=latent_dim))
