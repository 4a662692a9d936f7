"""`mla_decode(..., implementation=None|"xla"|"mosaic_gpu")`: attention on the latent cache."""

from pallas_kernels._common import resolve_implementation
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
  if resolve_implementation(implementation, interpret) == "xla":
    return reference.mla_decode(q, c_kv, k_rope, lengths, starts, softmax_scale=softmax_scale,
                                latent_dim=latent_dim)
  return mosaic_gpu.mla_decode(q, c_kv, k_rope, lengths, starts, softmax_scale=softmax_scale,
                               latent_dim=latent_dim, block_sizes=block_sizes or mosaic_gpu.BlockSizes(),
                               interpret=interpret)
