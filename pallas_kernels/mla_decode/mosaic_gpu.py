"""MLA decode (absorbed, latent cache) for Hopper (sm_90) in Pallas Mosaic GPU.

All heads share one latent KV stream, so the Tq*H query rows of a batch row
form the M side of the wgmmas (64 rows per CTA). Row b's valid keys are the
slots [starts[b], lengths[b]); the kernel is bandwidth bound, so only the
blocks that hold them, [start_block, end_block), are fetched (left padding
never leaves HBM) and keys before the start are masked inside the first block.
Each row's own block range is split into `num_splits` equal chunks (split-K /
flash-decoding; the chunk size is per row, at run time) so that long caches
fill the GPU and short or offset rows keep every split busy; each CTA keeps an
online softmax over its chunk and writes a normalized partial output plus its
log-sum-exp, and a small XLA epilogue merges them.

Per CTA: Q (latent and rope parts) lands once in swizzled SMEM via TMA; the
cache blocks stream through a double-buffered TMA ring with one mbarrier per
stage and operand. Scores = q_lat @ c_kv^T + q_rope @ k_rope^T are two bf16
wgmmas into one fp32 accumulator; P @ c_kv is a third wgmma with P either
kept in registers (default) or staged through SMEM (what the interpreter can
run). The fp32 output accumulator for all 512 latent columns would need 256
registers per thread, so the value columns are split over a grid axis
(`block_dv`), which recomputes the scores once per value chunk; SMEM is tight
(Q 72 KiB + two 72 KiB cache stages), so the output tile reuses the drained
cache ring through a `RefUnion`.
"""

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu

from pallas_kernels._common import (check_bf16, check_interpretable, check_platform, cdiv, round_up,
                                    swizzled)

NEG_INF = float("-inf")
M_INIT = -1e30  # finite start for the running max: fully masked rows stay NaN-free


@dataclasses.dataclass(frozen=True)
class BlockSizes:
  block_q: int = 64  # query rows (Tq * H flattened) per CTA: one wgmma M
  block_kv: int = 64  # keys per stage; P (bq, bkv) bf16 needs 128-byte rows for the swizzled store
  block_dv: int = 256  # latent (value) columns per CTA; 64x256 fp32 = 128 regs/thread
  num_splits: int = 4  # sequence chunks combined by log-sum-exp
  # FlashAttention-3 style: P stays in registers as the wgmma A operand and
  # P c_kv accumulates in place, so one 64x256 fp32 accumulator (128 registers
  # per thread) is live; staging P through SMEM (False) also keeps the chunk's
  # P V result live, which only fits with block_dv <= 128. The interpreter
  # cannot run register wgmma operands: False is what the CPU tests run, True
  # is checked by lowering (and by the GPU tests).
  p_in_registers: bool = True


def default_block_sizes(latent_dim: int, interpret=None) -> BlockSizes:
  """The tuned blocks for a latent width: 256 value columns per CTA with P in registers where 256
  divides the latent (V3: C = 512); otherwise, and in the interpreter, P staged through SMEM with
  at most 128 value columns (the two live accumulators must fit in registers)."""
  if interpret is None and latent_dim % 256 == 0:
    return BlockSizes()
  return BlockSizes(block_dv=128 if latent_dim % 128 == 0 else 64, p_in_registers=False)


def check_support(q, c_kv, k_rope, *, latent_dim: int, block_sizes: BlockSizes, interpret) -> None:
  """Raises NotImplementedError naming the rule when this kernel cannot run the call.

  q (B, Tq, H, latent+rope), c_kv (B, S, latent), k_rope (B, S, rope): arrays or anything with
  .shape and .dtype.
  """
  check_platform("mla_decode", interpret)
  check_bf16("mla_decode", q=q, c_kv=c_kv, k_rope=k_rope)
  rope, bs = k_rope.shape[-1], block_sizes
  # Measured by lowering for CUDA (jax 0.11.2): an SMEM swizzle needs rows of a multiple of 32
  # bytes, i.e. a rope width that is a multiple of 16 bf16 values (8 fails: "Swizzle 16 is not
  # supported"; 16 and 48 lower).
  if (rope * jnp.dtype(k_rope.dtype).itemsize) % 32:
    raise NotImplementedError(f"mla_decode: the rope width {rope} (k_rope.shape={tuple(k_rope.shape)}) "
                              f"must be a multiple of 16 (SMEM rows of a multiple of 32 bytes); "
                              f"use implementation='xla'")
  # Measured likewise: value chunks of 32 columns fail to lower (no wgmma layout fits); 64 lower.
  if bs.block_dv % 64 or latent_dim % bs.block_dv:
    raise NotImplementedError(f"mla_decode: {latent_dim=} must be a multiple of {bs.block_dv=}, itself "
                              f"a multiple of 64; pick BlockSizes(block_dv=64 or 128), or use "
                              f"implementation='xla'")
  # Staging P through SMEM keeps the chunk's P V result live next to the running accumulator: two
  # (64, block_dv) fp32 tiles over a warpgroup's 128 threads are block_dv registers per thread,
  # over the 255 a thread can hold at block_dv = 256 (P in registers accumulates in place).
  if not bs.p_in_registers and bs.block_dv > 128:
    raise NotImplementedError(f"mla_decode: {bs.block_dv=} > 128 needs p_in_registers=True (two fp32 "
                              f"accumulators of block_dv columns do not fit in registers); use "
                              f"block_dv=128")
  check_interpretable("mla_decode", bs.p_in_registers, interpret)


def split_blocks(start, length, split, *, block_kv: int, num_splits: int):
  """(first block, block count) of `split`'s chunk of the row's keys [start, length), 0 <= start.

  The row's own blocks [start_block, end_block) are cut into `num_splits` equal chunks (the
  last ones may be shorter or empty), so blocks before the start are never fetched and an
  offset or short row still spreads over every split. An empty row fetches nothing.
  """
  start_block = lax.div(start, block_kv)
  row_blocks = jnp.where(start < length, pl.cdiv(length, block_kv) - start_block, 0)
  blocks_per_split = pl.cdiv(row_blocks, num_splits)
  first_block = start_block + split * blocks_per_split
  return first_block, jnp.clip(start_block + row_blocks - first_block, 0, blocks_per_split)


def mla_decode_kernel(starts_gmem, lengths_gmem, row_limit_gmem, q_lat_gmem, q_rope_gmem, c_kv_gmem,
                      k_rope_gmem, o_gmem, lse_gmem, *, block_q: int, block_kv: int, block_dv: int,
                      num_splits: int, scale_log2: float, p_in_registers: bool):
  b = lax.axis_index("b")
  qi = lax.axis_index("q")
  dv = lax.axis_index("dv")
  split = lax.axis_index("split")
  dtype = q_lat_gmem.dtype
  latent, rope = q_lat_gmem.shape[-1], q_rope_gmem.shape[-1]
  rows = pl.ds(qi * block_q, block_q)
  start = starts_gmem[b]
  first_block, num_blocks = split_blocks(start, lengths_gmem[b], split, block_kv=block_kv,
                                         num_splits=num_splits)

  def scope(q_lat_smem, q_rope_smem, ring_or_out, p_or_limit, q_bar, ckv_bar, krope_bar):
    # Disjoint lifetimes share SMEM: the output tile reuses the drained KV ring,
    # and the row limits are read into registers before P is first written.
    (ckv_smem, krope_smem), (o_smem, lse_smem) = ring_or_out
    p_smem, limit_smem = p_or_limit
    plgpu.copy_gmem_to_smem(q_lat_gmem.at[b, rows], q_lat_smem, q_bar.at[0])
    plgpu.copy_gmem_to_smem(row_limit_gmem.at[b, rows], limit_smem, q_bar.at[2])
    plgpu.copy_gmem_to_smem(q_rope_gmem.at[b, rows], q_rope_smem, q_bar.at[1])

    def fetch(i, slot):
      keys = pl.ds((first_block + i) * block_kv, block_kv)
      plgpu.copy_gmem_to_smem(c_kv_gmem.at[b, keys], ckv_smem.at[slot], ckv_bar.at[slot])
      plgpu.copy_gmem_to_smem(k_rope_gmem.at[b, keys], krope_smem.at[slot], krope_bar.at[slot])

    @pl.when(num_blocks > 0)
    def _():
      fetch(0, 0)

    plgpu.barrier_wait(q_bar.at[0])
    plgpu.barrier_wait(q_bar.at[1])
    plgpu.barrier_wait(q_bar.at[2])
    row_limit = plgpu.load(limit_smem, layout=plgpu.Layout.WGMMA.reduce(1))  # (bq,)

    def step(i, carry):
      acc, m_i, l_i = carry
      slot = lax.rem(i, 2)
      plgpu.barrier_wait(ckv_bar.at[slot])
      plgpu.barrier_wait(krope_bar.at[slot])

      def scores(s_ref):
        plgpu.wgmma(s_ref, q_lat_smem, ckv_smem.at[slot].T)
        plgpu.wgmma(s_ref, q_rope_smem, krope_smem.at[slot].T)
        return s_ref[...]

      s = pl.run_scoped(scores, plgpu.ACC((block_q, block_kv), jnp.float32)) * scale_log2  # (bq, bkv)
      key = (first_block + i) * block_kv + plgpu.broadcasted_iota(
          jnp.int32, (block_q, block_kv), 1, layout=plgpu.Layout.WGMMA)
      # Only the first block can hold keys before the start; one compare everywhere is cheaper
      # than a second code path (the kernel waits on HBM, not on ALUs).
      visible = (key >= start) & (key < lax.broadcast_in_dim(row_limit, s.shape, [0]))
      s = jnp.where(visible, s, NEG_INF)
      m_new = jnp.maximum(m_i, s.max(axis=1))  # (bq,)
      alpha = jnp.exp2(m_i - m_new)
      p = jnp.exp2(s - lax.broadcast_in_dim(m_new, s.shape, [0]))  # (bq, bkv)
      l_i = l_i * alpha + p.sum(axis=1)
      acc = acc * lax.broadcast_in_dim(alpha, acc.shape, [0])
      values = ckv_smem.at[slot, :, pl.ds(dv * block_dv, block_dv)]  # (bkv, bdv)
      if p_in_registers:
        # run_state on an accumulator awaits its wgmmas before returning.
        acc = pl.run_state(lambda o_ref: plgpu.wgmma(o_ref, p.astype(dtype), values))(plgpu.ACC.init(acc))
      else:
        p_smem[...] = p.astype(dtype)
        plgpu.commit_smem()  # P must be visible to the async proxy before wgmma reads it

        def pv(o_ref):
          plgpu.wgmma(o_ref, p_smem, values)
          return o_ref[...]

        acc = acc + pl.run_scoped(pv, plgpu.ACC((block_q, block_dv), jnp.float32))  # (bq, bdv)

      @pl.when(i + 2 < num_blocks)
      def _():
        fetch(i + 2, slot)  # this stage's wgmmas have completed: refill it

      return acc, m_new, l_i

    @pl.when(num_blocks > 1)
    def _():
      fetch(1, 1)

    acc = plgpu.layout_cast(jnp.zeros((block_q, block_dv), jnp.float32), plgpu.Layout.WGMMA)
    m_i = plgpu.layout_cast(jnp.full((block_q,), M_INIT, jnp.float32), plgpu.Layout.WGMMA.reduce(1))
    l_i = plgpu.layout_cast(jnp.zeros((block_q,), jnp.float32), plgpu.Layout.WGMMA.reduce(1))
    acc, m_i, l_i = lax.fori_loop(0, num_blocks, step, (acc, m_i, l_i))

    safe_l = jnp.where(l_i > 0, l_i, 1.0)
    o_smem[...] = acc / lax.broadcast_in_dim(safe_l, acc.shape, [0])
    lse_smem[...] = jnp.where(l_i > 0, m_i + jnp.log2(safe_l), NEG_INF)  # base-2 log-sum-exp
    plgpu.commit_smem()
    plgpu.copy_smem_to_gmem(o_smem, o_gmem.at[b, split, rows, pl.ds(dv * block_dv, block_dv)])

    @pl.when(dv == 0)
    def _():
      plgpu.copy_smem_to_gmem(lse_smem, lse_gmem.at[b, split, rows])

    plgpu.wait_smem_to_gmem(0)

  pl.run_scoped(
      scope,
      plgpu.SMEM((block_q, latent), dtype, transforms=swizzled(dtype, latent)),
      plgpu.SMEM((block_q, rope), dtype, transforms=swizzled(dtype, rope)),
      plgpu.RefUnion(
          (plgpu.SMEM((2, block_kv, latent), dtype, transforms=swizzled(dtype, latent)),
           plgpu.SMEM((2, block_kv, rope), dtype, transforms=swizzled(dtype, rope))),
          (plgpu.SMEM((block_q, block_dv), jnp.float32), plgpu.SMEM((block_q,), jnp.float32)),
      ),
      plgpu.RefUnion(plgpu.SMEM((block_q, block_kv), dtype, transforms=swizzled(dtype, block_kv)),
                     plgpu.SMEM((block_q,), jnp.int32)),
      plgpu.Barrier(num_barriers=3),
      plgpu.Barrier(num_barriers=2),
      plgpu.Barrier(num_barriers=2),
  )


@functools.partial(jax.jit, static_argnames=("softmax_scale", "latent_dim", "block_sizes", "interpret"))
def mla_decode(q, c_kv, k_rope, lengths, starts=None, *, softmax_scale: float, latent_dim: int = 512,
               block_sizes: BlockSizes = BlockSizes(), interpret=None):
  """Mosaic GPU MLA decode; same contract as `reference.mla_decode` (starts None: zeros)."""
  bsz, tq, h, d = q.shape
  s = c_kv.shape[1]
  check_support(q, c_kv, k_rope, latent_dim=latent_dim, block_sizes=block_sizes, interpret=interpret)
  bs = block_sizes
  rows = tq * h
  rows_p = round_up(rows, bs.block_q)
  q = jnp.pad(q.reshape(bsz, rows, d), ((0, 0), (0, rows_p - rows), (0, 0)))  # (B, Rp, D); row = t*H + h
  q_lat, q_rope = q[..., :latent_dim], q[..., latent_dim:]  # (B, Rp, latent), (B, Rp, rope)
  s_p = round_up(s, bs.block_kv)
  if s_p != s:  # a cache allocated in multiples of block_kv avoids this copy
    c_kv = jnp.pad(c_kv, ((0, 0), (0, s_p - s), (0, 0)))
    k_rope = jnp.pad(k_rope, ((0, 0), (0, s_p - s), (0, 0)))
  lengths = jnp.clip(lengths.astype(jnp.int32), 0, s)
  starts = jnp.zeros_like(lengths) if starts is None else jnp.clip(starts.astype(jnp.int32), 0, s)
  t_of_row = jnp.arange(rows_p, dtype=jnp.int32) // h
  row_limit = lengths[:, None] - tq + 1 + t_of_row[None, :]  # (B, Rp): keys visible to each row
  row_limit = jnp.where(jnp.arange(rows_p)[None, :] < rows, row_limit, 0).astype(jnp.int32)
  num_splits = max(1, min(bs.num_splits, cdiv(s_p, bs.block_kv)))
  kernel = functools.partial(
      mla_decode_kernel, block_q=bs.block_q, block_kv=bs.block_kv, block_dv=bs.block_dv,
      num_splits=num_splits, scale_log2=softmax_scale * math.log2(math.e),
      p_in_registers=bs.p_in_registers)
  o, lse = plgpu.kernel(
      kernel,
      out_type=(jax.ShapeDtypeStruct((bsz, num_splits, rows_p, latent_dim), jnp.float32),
                jax.ShapeDtypeStruct((bsz, num_splits, rows_p), jnp.float32)),
      grid=(bsz, rows_p // bs.block_q, latent_dim // bs.block_dv, num_splits),
      grid_names=("b", "q", "dv", "split"),
      interpret=interpret,
  )(starts, lengths, row_limit, q_lat, q_rope, c_kv, k_rope)
  # Merge the splits: weights 2^(lse_s - max) over splits; rows with no key stay zero.
  lse_max = jnp.max(lse, axis=1, keepdims=True)  # (B, 1, Rp)
  w = jnp.where(jnp.isfinite(lse), jnp.exp2(lse - jnp.where(jnp.isfinite(lse_max), lse_max, 0.0)), 0.0)
  # Elementwise, not einsum: an fp32 dot may run in TF32 on the GPU.
  out = (o * w[..., None]).sum(axis=1) / jnp.maximum(w.sum(axis=1), 1e-30)[..., None]  # (B, Rp, latent)
  return out[:, :rows].reshape(bsz, tq, h, latent_dim).astype(q.dtype)
