"""FP8 block-scaled GEMM for Hopper (sm_90) in Pallas Mosaic GPU.

One CTA (one warpgroup) owns a (block_m, block_n) output tile. `emit_pipeline`
streams 128-wide K chunks of A and B with TMA into swizzled SMEM ring buffers
guarded by mbarriers; each chunk is one e4m3 wgmma into a fresh fp32
accumulator, which is then scaled by a_scale (a per-row vector) times b_scale
(a scalar per 128x128 weight block) and added to the running fp32 sum held in
registers. Promoting every 128 K elements is what DeepSeek-V3 sec. 3.3.2 asks
for: the tensor core's fp8 accumulation keeps only ~14 bits.

With `b_scale_rows` (the weight gradient, whose operands are both 1x128 tiles
along tokens) b_scale holds one scale per row of b per chunk; it streams
through the pipeline like a_scale and each chunk is scaled by the outer
product a_scale[:, None] * b_scale[None, :] (DeepGEMM's "1D1D" kernel).
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu

from pallas_kernels._common import check_platform, round_up, swizzled

SCALE_BLOCK = 128


@dataclasses.dataclass(frozen=True)
class BlockSizes:
  # Two (bm, bn) fp32 tiles live in registers (running sum and the chunk's
  # wgmma result): 64x128 keeps them at 2 x 64 registers per thread.
  block_m: int = 64
  block_n: int = 128  # must divide 128 so one weight scale covers the tile
  max_concurrent_steps: int = 4

  def __post_init__(self):
    if SCALE_BLOCK % self.block_n:
      raise ValueError(f"{self.block_n=} must divide {SCALE_BLOCK}")
    if self.block_m % 64:
      raise ValueError(f"{self.block_m=} must be a multiple of 64 (wgmma M)")


def check_support(*, interpret) -> None:
  """Raises NotImplementedError naming the rule when this kernel cannot run the call.

  Any M, N, K: the operands are zero-padded to whole tiles and 128-chunks. E4M3 operands and the
  scale layouts are the op's contract, checked with a ValueError in api.py (the reference needs
  them too), so the platform is the one rule here.
  """
  check_platform("fp8_block_gemm", interpret)


def fp8_block_gemm_kernel(a_gmem, a_scale_t_gmem, b_gmem, b_scale_gmem, out_gmem, *,
                          block_m: int, block_n: int, k_chunks: int, max_concurrent_steps: int,
                          b_scale_rows: bool):
  mi = lax.axis_index("m")
  ni = lax.axis_index("n")
  n_scale_row = ni * block_n // SCALE_BLOCK

  def chunk(idx, a_smem, b_smem, a_scale_smem, *b_scale_smem_and_acc):
    (k,) = idx
    *b_scale_smem, acc = b_scale_smem_and_acc  # b_scale_smem: one slot with b_scale_rows, else none
    # Along the rows of the (bm, bn) WGMMA tile: reduce(1) leaves the row axis.
    a_scale = plgpu.load(a_scale_smem.at[0], layout=plgpu.Layout.WGMMA.reduce(1))  # (bm,)
    if b_scale_rows:
      # Along the columns: reduce(0) leaves the column axis.
      b_scale = plgpu.load(b_scale_smem[0].at[0], layout=plgpu.Layout.WGMMA.reduce(0))  # (bn,)
    # The pipeline refills these slots by TMA (async proxy) after the step: fence
    # so the generic-proxy reads above are ordered before that write.
    plgpu.commit_smem()

    def mma(acc_ref):
      plgpu.wgmma(acc_ref, a_smem, b_smem.T)  # both operands K-major, as fp8 wgmma requires
      return acc_ref[...]

    partial = pl.run_scoped(mma, plgpu.ACC((block_m, block_n), jnp.float32))  # (bm, bn)
    if b_scale_rows:
      # 1D1D (Wgrad): the chunk's scale is the outer product a_s[:, None] * b_s[None, :].
      return (acc + partial * lax.broadcast_in_dim(a_scale, partial.shape, [0])
              * lax.broadcast_in_dim(b_scale, partial.shape, [1]))
    scale = a_scale * b_scale_gmem[n_scale_row, k]  # (bm,): one weight scale covers the tile
    return acc + partial * lax.broadcast_in_dim(scale, partial.shape, [0])

  in_specs = [
      plgpu.BlockSpec((block_m, SCALE_BLOCK), lambda k: (mi, k),
                      transforms=swizzled(a_gmem.dtype, SCALE_BLOCK)),
      plgpu.BlockSpec((block_n, SCALE_BLOCK), lambda k: (ni, k),
                      transforms=swizzled(b_gmem.dtype, SCALE_BLOCK)),
      plgpu.BlockSpec((1, block_m), lambda k: (k, mi)),
  ]
  operands = [a_gmem, b_gmem, a_scale_t_gmem]
  if b_scale_rows:  # b's scales stream like a's: a (1, bn) slice of b_scale^T per K step
    in_specs.append(plgpu.BlockSpec((1, block_n), lambda k: (k, ni)))
    operands.append(b_scale_gmem)
  zeros = plgpu.layout_cast(jnp.zeros((block_m, block_n), jnp.float32), plgpu.Layout.WGMMA)
  acc = plgpu.emit_pipeline(
      chunk,
      grid=(k_chunks,),
      in_specs=in_specs,
      max_concurrent_steps=max_concurrent_steps,
      init_carry=zeros,
  )(*operands)

  @functools.partial(pl.run_scoped, out_smem=plgpu.SMEM((block_m, block_n), out_gmem.dtype))
  def _store(out_smem):
    out_smem[...] = acc.astype(out_gmem.dtype)
    plgpu.commit_smem()
    plgpu.copy_smem_to_gmem(out_smem, out_gmem.at[pl.ds(mi * block_m, block_m), pl.ds(ni * block_n, block_n)])
    plgpu.wait_smem_to_gmem(0)


@functools.partial(jax.jit, static_argnames=("out_dtype", "block_sizes", "interpret", "b_scale_rows"))
def fp8_block_gemm(a, a_scale, b, b_scale, *, out_dtype=jnp.bfloat16,
                   block_sizes: BlockSizes = BlockSizes(), interpret=None, b_scale_rows=False):
  """Mosaic GPU FP8 GEMM; same contract as `reference.fp8_block_gemm`."""
  check_support(interpret=interpret)
  m, k = a.shape
  n = b.shape[0]
  bm, bn = block_sizes.block_m, block_sizes.block_n
  kb = a_scale.shape[1]
  # Zero padding keeps every TMA box in bounds; padded rows/cols are sliced off.
  mp, np_, kp = round_up(m, bm), round_up(n, bn), kb * SCALE_BLOCK
  a = jnp.pad(a, ((0, mp - m), (0, kp - k)))  # (Mp, Kp)
  b = jnp.pad(b, ((0, np_ - n), (0, kp - k)))  # (Np, Kp)
  a_scale_t = jnp.pad(a_scale.T, ((0, 0), (0, mp - m)))  # (KB, Mp): a tile's scales are contiguous
  if b_scale_rows:
    b_scale = jnp.pad(b_scale.T, ((0, 0), (0, np_ - n)))  # (KB, Np), like a_scale_t
  kernel = functools.partial(
      fp8_block_gemm_kernel, block_m=bm, block_n=bn, k_chunks=kb,
      max_concurrent_steps=min(block_sizes.max_concurrent_steps, kb), b_scale_rows=b_scale_rows)
  out = plgpu.kernel(
      kernel,
      out_type=jax.ShapeDtypeStruct((mp, np_), out_dtype),
      grid=(mp // bm, np_ // bn),
      grid_names=("m", "n"),
      interpret=interpret,
  )(a, a_scale_t, b, b_scale.astype(jnp.float32))
  return out[:m, :n]
