"""Grouped matmul (MoE experts) for Hopper (sm_90) in Pallas Mosaic GPU.

Layout: rows are first gathered into a tile-aligned buffer in which every
group starts on a `block_m` boundary and is zero-padded to a whole number of
tiles (the MegaBlocks layout). Each row tile then belongs to exactly one
group, so the three kernels are dense tiled GEMMs driven by a small int32
table read from GMEM:

* `gmm_kernel`: out tile (t, n) = lhs tile t @ rhs[tile_group[t]] (forward, and
  dgrad with `transpose_rhs`, since dgrad = dout @ rhs[g]^T). TMA + mbarrier
  ring via `emit_pipeline`, bf16 wgmma into an fp32 accumulator.
* `tgmm_kernel`: dW[g] block (k, n) = sum over the tiles t of group g of
  lhs_t^T @ dout_t. The trip count is data-dependent, so the double-buffered
  TMA pipeline is written by hand with two mbarriers per stage; lhs^T comes
  from a transposed SMEM view (wgmma accepts transposed 16-bit operands).

Padding costs at most G partial tiles of extra MMA work and one gather of the
rows; the unused tail of the (statically sized) buffer is skipped, and empty
groups own no tiles (their dW block is zero).
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu

from pallas_kernels._common import cdiv, check_bf16, check_platform, round_up, swizzled


@dataclasses.dataclass(frozen=True)
class BlockSizes:
  block_m: int = 128
  block_n: int = 128
  block_k: int = 64
  max_concurrent_steps: int = 4


def check_support(lhs, rhs, *, interpret) -> None:
  """Raises NotImplementedError naming the rule when this kernel cannot run the call.

  lhs (M, K), rhs (G, K, N): arrays or anything with .shape and .dtype. Any M, K, N and group
  sizes: rows are gathered into whole tiles and K, N are zero-padded to the block sizes.
  """
  check_platform("grouped_matmul", interpret)
  # Measured by lowering for CUDA (jax 0.11.2): the dgrad's transposed rhs and the dW kernel's
  # transposed lhs need 16-bit wgmma operands (f32: "Only f16 WGMMA supports transposes").
  check_bf16("grouped_matmul", lhs=lhs, rhs=rhs)


def gmm_kernel(tile_group_gmem, lhs_gmem, rhs_gmem, out_gmem, *, block_m: int, block_n: int,
               block_k: int, transpose_rhs: bool, max_concurrent_steps: int):
  ti = lax.axis_index("m")
  ni = lax.axis_index("n")
  group = tile_group_gmem[ti]  # -1 past the last used tile: those rows are never read back
  k = lhs_gmem.shape[1]
  dtype = lhs_gmem.dtype
  rhs_block = (block_n, block_k) if transpose_rhs else (block_k, block_n)

  def acc_scope(acc_ref):
    def step(_, lhs_smem, rhs_smem):
      plgpu.wgmma(acc_ref, lhs_smem, rhs_smem.T if transpose_rhs else rhs_smem)
      plgpu.wgmma_wait(1)  # keep one wgmma in flight; delay_release=1 frees its stage a step later

    plgpu.emit_pipeline(
        step,
        grid=(k // block_k,),
        in_specs=[
            plgpu.BlockSpec((block_m, block_k), lambda kk: (ti, kk),
                            transforms=swizzled(dtype, block_k), delay_release=1),
            plgpu.BlockSpec(rhs_block, (lambda kk: (ni, kk)) if transpose_rhs else (lambda kk: (kk, ni)),
                            transforms=swizzled(dtype, rhs_block[1]), delay_release=1),
        ],
        max_concurrent_steps=max_concurrent_steps,
    )(lhs_gmem, rhs_gmem.at[group])
    return acc_ref[...]

  @pl.when(group >= 0)
  def _():
    acc = pl.run_scoped(acc_scope, plgpu.ACC((block_m, block_n), jnp.float32))  # (bm, bn)

    @functools.partial(pl.run_scoped, out_smem=plgpu.SMEM((block_m, block_n), out_gmem.dtype))
    def _store(out_smem):
      out_smem[...] = acc.astype(out_gmem.dtype)
      plgpu.commit_smem()
      plgpu.copy_smem_to_gmem(out_smem, out_gmem.at[pl.ds(ti * block_m, block_m), pl.ds(ni * block_n, block_n)])
      plgpu.wait_smem_to_gmem(0)


def tgmm_kernel(tile_start_gmem, lhs_gmem, dout_gmem, dw_gmem, *, block_m: int, block_n: int,
                block_k: int):
  g = lax.axis_index("g")
  ki = lax.axis_index("k")
  ni = lax.axis_index("n")
  first = tile_start_gmem[g]
  num_tiles = tile_start_gmem[g + 1] - first
  dtype = lhs_gmem.dtype

  def scope(lhs_smem, dout_smem, lhs_bar, dout_bar, out_smem):
    def fetch(i, slot):
      rows = pl.ds((first + i) * block_m, block_m)
      plgpu.copy_gmem_to_smem(lhs_gmem.at[rows, pl.ds(ki * block_k, block_k)], lhs_smem.at[slot], lhs_bar.at[slot])
      plgpu.copy_gmem_to_smem(dout_gmem.at[rows, pl.ds(ni * block_n, block_n)], dout_smem.at[slot], dout_bar.at[slot])

    def acc_scope(acc_ref):
      @pl.when(num_tiles > 0)
      def _():
        fetch(0, 0)

      @pl.loop(0, num_tiles)
      def _(i):
        slot = lax.rem(i, 2)

        @pl.when(i + 1 < num_tiles)
        def _():
          fetch(i + 1, 1 - slot)  # slot 1 - slot was released by the wgmma_wait(0) of step i - 1

        plgpu.barrier_wait(lhs_bar.at[slot])
        plgpu.barrier_wait(dout_bar.at[slot])
        plgpu.wgmma(acc_ref, lhs_smem.at[slot].T, dout_smem.at[slot])  # (bk, bm) @ (bm, bn)
        plgpu.wgmma_wait(0)

      return acc_ref[...]

    acc = pl.run_scoped(acc_scope, plgpu.ACC((block_k, block_n), jnp.float32))  # (bk, bn)
    out_smem[...] = acc.astype(dw_gmem.dtype)
    plgpu.commit_smem()
    plgpu.copy_smem_to_gmem(out_smem, dw_gmem.at[g, pl.ds(ki * block_k, block_k), pl.ds(ni * block_n, block_n)])
    plgpu.wait_smem_to_gmem(0)

  pl.run_scoped(
      scope,
      plgpu.SMEM((2, block_m, block_k), dtype, transforms=swizzled(dtype, block_k)),
      plgpu.SMEM((2, block_m, block_n), dtype, transforms=swizzled(dtype, block_n)),
      plgpu.Barrier(num_barriers=2),
      plgpu.Barrier(num_barriers=2),
      plgpu.SMEM((block_k, block_n), dw_gmem.dtype),
  )


# ---------------------------------------------------------------- tile layout


@dataclasses.dataclass(frozen=True)
class TileLayout:
  """Where each row lives in the tile-aligned buffer (all int32, traced)."""
  row_to_padded: jax.Array  # (M,) padded position of each row; num_padded for rows in no group
  padded_to_row: jax.Array  # (num_padded,) source row of each padded position; M for padding
  tile_group: jax.Array  # (num_tiles,) group of each row tile; -1 for unused tail tiles
  tile_start: jax.Array  # (G + 1,) first tile of each group, then the number of used tiles


def tile_layout(group_sizes, m: int, block_m: int) -> tuple[TileLayout, int]:
  g = group_sizes.shape[0]
  num_tiles = cdiv(m, block_m) + g  # sum_g ceil(size_g / bm) <= ceil(M / bm) + G
  group_sizes = group_sizes.astype(jnp.int32)
  tiles = (group_sizes + block_m - 1) // block_m  # (G,)
  tile_start = jnp.concatenate([jnp.zeros((1,), jnp.int32), jnp.cumsum(tiles)]).astype(jnp.int32)  # (G+1,)
  row_start = jnp.concatenate([jnp.zeros((1,), jnp.int32), jnp.cumsum(group_sizes)])  # (G+1,)
  rows = jnp.arange(m, dtype=jnp.int32)
  row_group = jnp.searchsorted(row_start[1:], rows, side="right")  # (M,)
  in_group = row_group < g
  gi = jnp.minimum(row_group, g - 1)
  row_to_padded = jnp.where(in_group, tile_start[gi] * block_m + rows - row_start[gi], num_tiles * block_m)
  t = jnp.arange(num_tiles, dtype=jnp.int32)
  tile_group = jnp.minimum(jnp.searchsorted(tile_start[1:], t, side="right"), g - 1).astype(jnp.int32)
  pos = jnp.arange(num_tiles * block_m, dtype=jnp.int32)
  pg = tile_group[pos // block_m]
  tile_group = jnp.where(t < tile_start[g], tile_group, -1)  # unused tail tiles are skipped
  offset = pos - tile_start[pg] * block_m
  valid = (offset < group_sizes[pg]) & (pos < tile_start[g] * block_m)
  padded_to_row = jnp.where(valid, row_start[pg] + offset, m).astype(jnp.int32)
  return TileLayout(row_to_padded.astype(jnp.int32), padded_to_row, tile_group, tile_start), num_tiles


def gather_rows(x, index):
  """x[index] with index == len(x) reading a zero row."""
  return jnp.take(x, index, axis=0, mode="fill", fill_value=0)


def gmm(lhs_padded, rhs, tile_group, *, transpose_rhs: bool, block_sizes: BlockSizes, interpret):
  """Tile-aligned grouped GEMM: (T*bm, K) x (G, K, N) [or (G, N, K)^T] -> (T*bm, N)."""
  mp, k = lhs_padded.shape
  n = rhs.shape[1] if transpose_rhs else rhs.shape[2]
  bs = block_sizes
  kernel = functools.partial(
      gmm_kernel, block_m=bs.block_m, block_n=bs.block_n, block_k=bs.block_k,
      transpose_rhs=transpose_rhs,
      max_concurrent_steps=max(2, min(bs.max_concurrent_steps, k // bs.block_k)))  # > delay_release
  return plgpu.kernel(
      kernel,
      out_type=jax.ShapeDtypeStruct((mp, n), lhs_padded.dtype),
      grid=(mp // bs.block_m, n // bs.block_n),
      grid_names=("m", "n"),
      interpret=interpret,
  )(tile_group, lhs_padded, rhs)


def tgmm(lhs_padded, dout_padded, tile_start, num_groups: int, *, out_dtype, block_sizes: BlockSizes,
         interpret):
  """dW[g] = sum over tiles of g of lhs^T @ dout: (T*bm, K), (T*bm, N) -> (G, K, N)."""
  k, n = lhs_padded.shape[1], dout_padded.shape[1]
  bs = block_sizes
  kernel = functools.partial(tgmm_kernel, block_m=bs.block_m, block_n=bs.block_n, block_k=bs.block_k)
  return plgpu.kernel(
      kernel,
      out_type=jax.ShapeDtypeStruct((num_groups, k, n), out_dtype),
      grid=(num_groups, k // bs.block_k, n // bs.block_n),
      grid_names=("g", "k", "n"),
      interpret=interpret,
  )(tile_start, lhs_padded, dout_padded)


# ---------------------------------------------------------------- public op


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _gmm_padded(lhs_padded, rhs, layout_arrays, block_sizes, interpret):
  tile_group, _ = layout_arrays
  return gmm(lhs_padded, rhs, tile_group, transpose_rhs=False, block_sizes=block_sizes, interpret=interpret)


def _gmm_padded_fwd(lhs_padded, rhs, layout_arrays, block_sizes, interpret):
  out = _gmm_padded(lhs_padded, rhs, layout_arrays, block_sizes, interpret)
  return out, (lhs_padded, rhs, layout_arrays)


def _gmm_padded_bwd(block_sizes, interpret, res, dout_padded):
  lhs_padded, rhs, layout_arrays = res
  tile_group, tile_start = layout_arrays
  # dgrad: dlhs tile = dout tile @ rhs[g]^T; its "N" is K, its contraction is N.
  dgrad_blocks = dataclasses.replace(block_sizes, block_n=block_sizes.block_k, block_k=block_sizes.block_n)
  dlhs = gmm(dout_padded, rhs, tile_group, transpose_rhs=True, block_sizes=dgrad_blocks, interpret=interpret)
  drhs = tgmm(lhs_padded, dout_padded, tile_start, rhs.shape[0], out_dtype=rhs.dtype,
              block_sizes=block_sizes, interpret=interpret)
  zero_layout = jax.tree.map(lambda x: jnp.zeros(x.shape, jax.dtypes.float0), layout_arrays)
  return dlhs, drhs, zero_layout


_gmm_padded.defvjp(_gmm_padded_fwd, _gmm_padded_bwd)


@functools.partial(jax.jit, static_argnames=("block_sizes", "interpret"))
def grouped_matmul(lhs, rhs, group_sizes, *, block_sizes: BlockSizes = BlockSizes(), interpret=None):
  """Mosaic GPU grouped matmul with custom_vjp; contract of `jax.lax.ragged_dot`."""
  check_support(lhs, rhs, interpret=interpret)
  m, k = lhs.shape
  n = rhs.shape[2]
  bs = block_sizes
  layout, _ = tile_layout(group_sizes, m, bs.block_m)
  kp, np_ = round_up(k, max(bs.block_k, bs.block_n)), round_up(n, max(bs.block_n, bs.block_k))
  lhs = jnp.pad(lhs, ((0, 0), (0, kp - k)))  # (M, Kp)
  rhs = jnp.pad(rhs, ((0, 0), (0, kp - k), (0, np_ - n)))  # (G, Kp, Np)
  lhs_padded = gather_rows(lhs, layout.padded_to_row)  # (T*bm, Kp)
  out_padded = _gmm_padded(lhs_padded, rhs, (layout.tile_group, layout.tile_start), bs, interpret)
  return gather_rows(out_padded, layout.row_to_padded)[:, :n]  # (M, N)
