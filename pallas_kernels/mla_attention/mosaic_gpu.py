"""Causal MLA flash attention (prefill / training) for Hopper (sm_90), Pallas Mosaic GPU.

Forward (`mla_attention_fwd_kernel`): one CTA per (batch, head, 64-query
block). Q lands once in swizzled SMEM by TMA; K and V blocks stream through a
double-buffered TMA ring with one mbarrier per stage and operand. S = Q K^T
is a bf16 wgmma into an fp32 accumulator, the online softmax runs in base 2
on registers, P is written back to SMEM as bf16 and P V is a second wgmma.
Causality and per-row key lengths bound the number of K/V blocks visited, so
masked-out blocks cost neither TMA traffic nor MMA time, and blocks wholly
below the diagonal skip the mask arithmetic. The base-2 log-sum-exp is saved
for the backward pass. With `p_in_registers`, P (and dS) feed wgmma straight
from registers as in FlashAttention-3.

Backward (FlashAttention-2 split): `mla_attention_dq_kernel` walks the K/V
blocks of one query block and accumulates dQ += dS K in a wgmma accumulator
that lives across the loop; `mla_attention_dkv_kernel` walks the query
blocks that can see one K/V block and accumulates dV += P^T dO and
dK += dS^T Q. delta = rowsum(dO * O) comes from a tiny XLA reduction.
"""

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu

from pallas_kernels._common import check_bf16, check_interpretable, check_platform, round_up, swizzled

NEG_INF = float("-inf")
M_INIT = -1e30  # finite start for the running max: fully masked rows stay NaN-free
LOG2E = math.log2(math.e)


@dataclasses.dataclass(frozen=True)
class BlockSizes:
  block_q: int = 64  # one wgmma M; 64x(192+128) fp32 accumulators fit a warpgroup's registers
  block_kv: int = 64  # P (bq, bkv) bf16 needs 128-byte rows for the swizzled register store
  # FlashAttention-3 style: P, dS (and their transposes) stay in registers as the
  # wgmma A operand and P V accumulates in place, saving an SMEM round trip and
  # 64 registers per thread. The interpreter cannot run register wgmma operands,
  # so this path is checked by lowering (and on a GPU), the SMEM path by both.
  p_in_registers: bool = False


def check_support(q, k, v, *, block_sizes: BlockSizes, interpret) -> None:
  """Raises NotImplementedError naming the rule when this kernel cannot run the call.

  q, k (B, T, H, Dqk), v (B, T, H, Dv): arrays or anything with .shape and .dtype.
  """
  check_platform("mla_attention", interpret)
  check_bf16("mla_attention", q=q, k=k, v=v)
  dqk, dv = q.shape[-1], v.shape[-1]
  # Measured by lowering for CUDA (jax 0.11.2): the dQ and dK/dV kernels need head dims that are
  # multiples of 64 (Dqk = 96 or 160 lower forward but not backward: no wgmma layout fits the
  # accumulators). The op is differentiable, so the backward's rule holds for every call.
  if dqk % 64 or dv % 64:
    raise NotImplementedError(f"mla_attention: head dims Dqk={dqk} (q.shape={tuple(q.shape)}) and "
                              f"Dv={dv} (v.shape={tuple(v.shape)}) must be multiples of 64 for the "
                              f"backward kernels; use implementation='xla'")
  check_interpretable("mla_attention", block_sizes.p_in_registers, interpret)


def _row(x, shape):
  return lax.broadcast_in_dim(x, shape, [0])


def _col(x, shape):
  return lax.broadcast_in_dim(x, shape, [1])


def _visible(q_first, k_first, length, shape, *, causal: bool):
  """WGMMA-layout mask of (query, key) pairs that attend, for a (rows=q, cols=k) tile."""
  q_ids = q_first + plgpu.broadcasted_iota(jnp.int32, shape, 0, layout=plgpu.Layout.WGMMA)
  k_ids = k_first + plgpu.broadcasted_iota(jnp.int32, shape, 1, layout=plgpu.Layout.WGMMA)
  mask = k_ids < length
  return (mask & (k_ids <= q_ids)) if causal else mask


def _visible_t(k_first, q_first, length, shape, *, causal: bool):
  """Same mask for a transposed (rows=k, cols=q) tile."""
  k_ids = k_first + plgpu.broadcasted_iota(jnp.int32, shape, 0, layout=plgpu.Layout.WGMMA)
  q_ids = q_first + plgpu.broadcasted_iota(jnp.int32, shape, 1, layout=plgpu.Layout.WGMMA)
  mask = k_ids < length
  return (mask & (k_ids <= q_ids)) if causal else mask


def _mma_from_values(acc_ref, a, a_smem, b, *, p_in_registers: bool):
  """acc_ref += a @ b for a register value `a`, staged through `a_smem` unless it can stay in registers."""
  if p_in_registers:
    plgpu.wgmma(acc_ref, a.astype(b.dtype), b)
  else:
    a_smem[...] = a.astype(a_smem.dtype)
    plgpu.commit_smem()  # make the generic-proxy write visible to the async proxy (wgmma)
    plgpu.wgmma(acc_ref, a_smem, b)


def _kv_blocks(qi, length, *, block_q: int, block_kv: int, causal: bool):
  """(number of K/V blocks query block `qi` must visit, how many of the first need no mask)."""
  end = jnp.minimum((qi + 1) * block_q, length) if causal else length
  num_blocks = pl.cdiv(jnp.maximum(end, 0), block_kv)
  # A block needs no mask if all its keys are valid and (causal) precede the block's first query.
  unmasked_end = jnp.minimum(qi * block_q, length) if causal else length
  return num_blocks, jnp.clip(unmasked_end // block_kv, 0, num_blocks)


def mla_attention_fwd_kernel(lengths_gmem, q_gmem, k_gmem, v_gmem, o_gmem, lse_gmem, *,
                             block_q: int, block_kv: int, scale_log2: float, causal: bool,
                             p_in_registers: bool):
  b, h, qi = lax.axis_index("b"), lax.axis_index("h"), lax.axis_index("q")
  dtype = q_gmem.dtype
  dqk, dv = q_gmem.shape[-1], v_gmem.shape[-1]
  length = lengths_gmem[b]
  q_rows = pl.ds(qi * block_q, block_q)
  num_blocks, unmasked_blocks = _kv_blocks(qi, length, block_q=block_q, block_kv=block_kv, causal=causal)
  prologue = min(2, q_gmem.shape[1] // block_kv)  # static slices must stay in bounds

  def scope(q_smem, k_smem, v_smem, p_smem, o_smem, lse_smem, q_bar, k_bar, v_bar):
    plgpu.copy_gmem_to_smem(q_gmem.at[b, q_rows, h], q_smem, q_bar.at[0])

    def fetch(i, slot):
      keys = pl.ds(i * block_kv, block_kv)
      plgpu.copy_gmem_to_smem(k_gmem.at[b, keys, h], k_smem.at[slot], k_bar.at[slot])
      plgpu.copy_gmem_to_smem(v_gmem.at[b, keys, h], v_smem.at[slot], v_bar.at[slot])

    for i in range(prologue):
      pl.when(num_blocks > i)(functools.partial(fetch, i, i))
    plgpu.barrier_wait(q_bar.at[0])

    def step(i, carry, *, masked: bool):
      acc, m_i, l_i = carry
      slot = lax.rem(i, 2)
      plgpu.barrier_wait(k_bar.at[slot])

      def qk(s_ref):
        plgpu.wgmma(s_ref, q_smem, k_smem.at[slot].T)
        return s_ref[...]

      s = pl.run_scoped(qk, plgpu.ACC((block_q, block_kv), jnp.float32)) * scale_log2  # (bq, bkv)
      if masked:
        s = jnp.where(_visible(qi * block_q, i * block_kv, length, s.shape, causal=causal), s, NEG_INF)
      m_new = jnp.maximum(m_i, s.max(axis=1))  # (bq,)
      alpha = jnp.exp2(m_i - m_new)
      p = jnp.exp2(s - _row(m_new, s.shape))  # (bq, bkv)
      l_i = l_i * alpha + p.sum(axis=1)
      acc = acc * _row(alpha, acc.shape)
      plgpu.barrier_wait(v_bar.at[slot])
      if p_in_registers:
        # run_state on an accumulator awaits its wgmmas before returning.
        acc = pl.run_state(lambda o_ref: plgpu.wgmma(o_ref, p.astype(dtype), v_smem.at[slot]))(plgpu.ACC.init(acc))
      else:
        def pv(o_ref):
          _mma_from_values(o_ref, p, p_smem, v_smem.at[slot], p_in_registers=False)
          return o_ref[...]

        acc = acc + pl.run_scoped(pv, plgpu.ACC((block_q, dv), jnp.float32))  # (bq, dv)
      pl.when(i + 2 < num_blocks)(functools.partial(fetch, i + 2, slot))  # stage drained: refill
      return acc, m_new, l_i

    acc = plgpu.layout_cast(jnp.zeros((block_q, dv), jnp.float32), plgpu.Layout.WGMMA)
    m_i = plgpu.layout_cast(jnp.full((block_q,), M_INIT, jnp.float32), plgpu.Layout.WGMMA.reduce(1))
    l_i = plgpu.layout_cast(jnp.zeros((block_q,), jnp.float32), plgpu.Layout.WGMMA.reduce(1))
    carry = lax.fori_loop(0, unmasked_blocks, functools.partial(step, masked=False), (acc, m_i, l_i))
    acc, m_i, l_i = lax.fori_loop(unmasked_blocks, num_blocks, functools.partial(step, masked=True), carry)

    safe_l = jnp.where(l_i > 0, l_i, 1.0)
    o_smem[...] = (acc / _row(safe_l, acc.shape)).astype(dtype)
    # +inf for rows that see no key makes exp2(s - lse) = 0 in the backward pass.
    lse_smem[...] = jnp.where(l_i > 0, m_i + jnp.log2(safe_l), float("inf"))
    plgpu.commit_smem()
    plgpu.copy_smem_to_gmem(o_smem, o_gmem.at[b, q_rows, h])
    plgpu.copy_smem_to_gmem(lse_smem, lse_gmem.at[b, h, q_rows])
    plgpu.wait_smem_to_gmem(0)

  pl.run_scoped(
      scope,
      plgpu.SMEM((block_q, dqk), dtype, transforms=swizzled(dtype, dqk)),
      plgpu.SMEM((2, block_kv, dqk), dtype, transforms=swizzled(dtype, dqk)),
      plgpu.SMEM((2, block_kv, dv), dtype, transforms=swizzled(dtype, dv)),
      plgpu.SMEM((block_q, block_kv), dtype, transforms=swizzled(dtype, block_kv)),
      plgpu.SMEM((block_q, dv), dtype),
      plgpu.SMEM((block_q,), jnp.float32),
      plgpu.Barrier(num_barriers=1),
      plgpu.Barrier(num_barriers=2),
      plgpu.Barrier(num_barriers=2),
  )


def mla_attention_dq_kernel(lengths_gmem, q_gmem, k_gmem, v_gmem, do_gmem, lse_gmem, delta_gmem, dq_gmem, *,
                            block_q: int, block_kv: int, scale_log2: float, scale: float, causal: bool,
                            p_in_registers: bool):
  b, h, qi = lax.axis_index("b"), lax.axis_index("h"), lax.axis_index("q")
  dtype = q_gmem.dtype
  dqk, dv = q_gmem.shape[-1], v_gmem.shape[-1]
  length = lengths_gmem[b]
  q_rows = pl.ds(qi * block_q, block_q)
  num_blocks, unmasked_blocks = _kv_blocks(qi, length, block_q=block_q, block_kv=block_kv, causal=causal)
  prologue = min(2, q_gmem.shape[1] // block_kv)  # static slices must stay in bounds

  def scope(q_smem, do_smem, k_smem, v_smem, ds_smem, dq_smem, lse_smem, delta_smem, in_bar, k_bar, v_bar):
    plgpu.copy_gmem_to_smem(q_gmem.at[b, q_rows, h], q_smem, in_bar.at[0])
    plgpu.copy_gmem_to_smem(do_gmem.at[b, q_rows, h], do_smem, in_bar.at[1])
    plgpu.copy_gmem_to_smem(lse_gmem.at[b, h, q_rows], lse_smem, in_bar.at[2])
    plgpu.copy_gmem_to_smem(delta_gmem.at[b, h, q_rows], delta_smem, in_bar.at[3])

    def fetch(i, slot):
      keys = pl.ds(i * block_kv, block_kv)
      plgpu.copy_gmem_to_smem(k_gmem.at[b, keys, h], k_smem.at[slot], k_bar.at[slot])
      plgpu.copy_gmem_to_smem(v_gmem.at[b, keys, h], v_smem.at[slot], v_bar.at[slot])

    for i in range(prologue):
      pl.when(num_blocks > i)(functools.partial(fetch, i, i))
    for i in range(4):
      plgpu.barrier_wait(in_bar.at[i])
    lse = plgpu.load(lse_smem, layout=plgpu.Layout.WGMMA.reduce(1))  # (bq,)
    delta = plgpu.load(delta_smem, layout=plgpu.Layout.WGMMA.reduce(1))  # (bq,)

    def dq_scope(dq_ref):
      def step(i, *, masked: bool):
        slot = lax.rem(i, 2)
        plgpu.barrier_wait(k_bar.at[slot])
        plgpu.barrier_wait(v_bar.at[slot])

        def qk(s_ref):
          plgpu.wgmma(s_ref, q_smem, k_smem.at[slot].T)
          return s_ref[...]

        def dov(dp_ref):
          plgpu.wgmma(dp_ref, do_smem, v_smem.at[slot].T)
          return dp_ref[...]

        s = pl.run_scoped(qk, plgpu.ACC((block_q, block_kv), jnp.float32)) * scale_log2  # (bq, bkv)
        p = jnp.exp2(s - _row(lse, s.shape))  # softmax probs, recomputed
        if masked:
          p = jnp.where(_visible(qi * block_q, i * block_kv, length, s.shape, causal=causal), p, 0.0)
        dp = pl.run_scoped(dov, plgpu.ACC((block_q, block_kv), jnp.float32))  # (bq, bkv)
        ds = p * (dp - _row(delta, dp.shape)) * scale  # d loss / d raw score
        # dQ += dS K: (bq, bkv) @ (bkv, dqk)
        _mma_from_values(dq_ref, ds, ds_smem, k_smem.at[slot], p_in_registers=p_in_registers)
        plgpu.wgmma_wait(0)  # ds_smem and this K stage are reused next
        pl.when(i + 2 < num_blocks)(functools.partial(fetch, i + 2, slot))

      pl.loop(0, unmasked_blocks)(functools.partial(step, masked=False))
      pl.loop(unmasked_blocks, num_blocks)(functools.partial(step, masked=True))
      return dq_ref[...]

    dq = pl.run_scoped(dq_scope, plgpu.ACC((block_q, dqk), jnp.float32))  # (bq, dqk)
    dq_smem[...] = dq.astype(dq_smem.dtype)
    plgpu.commit_smem()
    plgpu.copy_smem_to_gmem(dq_smem, dq_gmem.at[b, q_rows, h])
    plgpu.wait_smem_to_gmem(0)

  pl.run_scoped(
      scope,
      plgpu.SMEM((block_q, dqk), dtype, transforms=swizzled(dtype, dqk)),
      plgpu.SMEM((block_q, dv), dtype, transforms=swizzled(dtype, dv)),
      plgpu.SMEM((2, block_kv, dqk), dtype, transforms=swizzled(dtype, dqk)),
      plgpu.SMEM((2, block_kv, dv), dtype, transforms=swizzled(dtype, dv)),
      plgpu.SMEM((block_q, block_kv), dtype, transforms=swizzled(dtype, block_kv)),
      plgpu.SMEM((block_q, dqk), dq_gmem.dtype),
      plgpu.SMEM((block_q,), jnp.float32),
      plgpu.SMEM((block_q,), jnp.float32),
      plgpu.Barrier(num_barriers=4),
      plgpu.Barrier(num_barriers=2),
      plgpu.Barrier(num_barriers=2),
  )


def mla_attention_dkv_kernel(lengths_gmem, q_gmem, k_gmem, v_gmem, do_gmem, lse_gmem, delta_gmem,
                             dk_gmem, dv_gmem, *, block_q: int, block_kv: int, scale_log2: float,
                             scale: float, causal: bool, p_in_registers: bool):
  b, h, ki = lax.axis_index("b"), lax.axis_index("h"), lax.axis_index("k")
  dtype = q_gmem.dtype
  t = q_gmem.shape[1]
  dqk, dv = q_gmem.shape[-1], v_gmem.shape[-1]
  length = lengths_gmem[b]
  k_rows = pl.ds(ki * block_kv, block_kv)
  # Causal: only queries at or after this block's first key see it; none if the block is padding.
  first_q = (ki * block_kv) // block_q if causal else 0
  num_blocks = jnp.where(ki * block_kv < length, t // block_q - first_q, 0)
  prologue = min(2, t // block_q)  # static slices must stay in bounds

  def scope(k_smem, v_smem, q_smem, do_smem, lse_smem, delta_smem, pt_smem, dk_smem, dv_smem,
            kv_bar, q_bar, do_bar):
    plgpu.copy_gmem_to_smem(k_gmem.at[b, k_rows, h], k_smem, kv_bar.at[0])
    plgpu.copy_gmem_to_smem(v_gmem.at[b, k_rows, h], v_smem, kv_bar.at[1])

    def fetch(i, slot):
      rows = pl.ds((first_q + i) * block_q, block_q)
      plgpu.copy_gmem_to_smem(q_gmem.at[b, rows, h], q_smem.at[slot], q_bar.at[slot])
      plgpu.copy_gmem_to_smem(lse_gmem.at[b, h, rows], lse_smem.at[slot], q_bar.at[2 + slot])
      plgpu.copy_gmem_to_smem(do_gmem.at[b, rows, h], do_smem.at[slot], do_bar.at[slot])
      plgpu.copy_gmem_to_smem(delta_gmem.at[b, h, rows], delta_smem.at[slot], do_bar.at[2 + slot])

    for i in range(prologue):
      pl.when(num_blocks > i)(functools.partial(fetch, i, i))
    plgpu.barrier_wait(kv_bar.at[0])
    plgpu.barrier_wait(kv_bar.at[1])

    def dkv_scope(dk_ref, dv_ref):
      @pl.loop(0, num_blocks)
      def _(i):
        slot = lax.rem(i, 2)
        q_first = (first_q + i) * block_q
        plgpu.barrier_wait(q_bar.at[slot])
        plgpu.barrier_wait(q_bar.at[2 + slot])

        def kq(s_ref):
          plgpu.wgmma(s_ref, k_smem, q_smem.at[slot].T)
          return s_ref[...]

        st = pl.run_scoped(kq, plgpu.ACC((block_kv, block_q), jnp.float32)) * scale_log2  # (bkv, bq)
        lse = plgpu.load(lse_smem.at[slot], layout=plgpu.Layout.WGMMA.reduce(0))  # (bq,)
        mask = _visible_t(ki * block_kv, q_first, length, st.shape, causal=causal)
        pt = jnp.where(mask, jnp.exp2(st - _col(lse, st.shape)), 0.0)  # P^T, recomputed
        plgpu.barrier_wait(do_bar.at[slot])
        plgpu.barrier_wait(do_bar.at[2 + slot])
        # dV += P^T dO: (bkv, bq) @ (bq, dv)
        _mma_from_values(dv_ref, pt, pt_smem, do_smem.at[slot], p_in_registers=p_in_registers)

        def vdo(dp_ref):
          plgpu.wgmma(dp_ref, v_smem, do_smem.at[slot].T)
          return dp_ref[...]

        dpt = pl.run_scoped(vdo, plgpu.ACC((block_kv, block_q), jnp.float32))  # (bkv, bq)
        delta = plgpu.load(delta_smem.at[slot], layout=plgpu.Layout.WGMMA.reduce(0))  # (bq,)
        dst = pt * (dpt - _col(delta, dpt.shape)) * scale
        plgpu.wgmma_wait(0)  # the dV wgmma has finished reading pt_smem, reused for dS^T
        # dK += dS^T Q: (bkv, bq) @ (bq, dqk)
        _mma_from_values(dk_ref, dst, pt_smem, q_smem.at[slot], p_in_registers=p_in_registers)
        plgpu.wgmma_wait(0)  # this Q/dO stage is refilled below
        pl.when(i + 2 < num_blocks)(functools.partial(fetch, i + 2, slot))

      return dk_ref[...], dv_ref[...]

    dk, dv_ = pl.run_scoped(dkv_scope, plgpu.ACC((block_kv, dqk), jnp.float32),
                            plgpu.ACC((block_kv, dv), jnp.float32))
    dk_smem[...] = dk.astype(dk_smem.dtype)
    dv_smem[...] = dv_.astype(dv_smem.dtype)
    plgpu.commit_smem()
    plgpu.copy_smem_to_gmem(dk_smem, dk_gmem.at[b, k_rows, h])
    plgpu.copy_smem_to_gmem(dv_smem, dv_gmem.at[b, k_rows, h])
    plgpu.wait_smem_to_gmem(0)

  pl.run_scoped(
      scope,
      plgpu.SMEM((block_kv, dqk), dtype, transforms=swizzled(dtype, dqk)),
      plgpu.SMEM((block_kv, dv), dtype, transforms=swizzled(dtype, dv)),
      plgpu.SMEM((2, block_q, dqk), dtype, transforms=swizzled(dtype, dqk)),
      plgpu.SMEM((2, block_q, dv), dtype, transforms=swizzled(dtype, dv)),
      plgpu.SMEM((2, block_q), jnp.float32),
      plgpu.SMEM((2, block_q), jnp.float32),
      plgpu.SMEM((block_kv, block_q), dtype, transforms=swizzled(dtype, block_q)),
      plgpu.SMEM((block_kv, dqk), dk_gmem.dtype),
      plgpu.SMEM((block_kv, dv), dv_gmem.dtype),
      plgpu.Barrier(num_barriers=2),
      plgpu.Barrier(num_barriers=4),
      plgpu.Barrier(num_barriers=4),
  )


# ---------------------------------------------------------------- public op


def _call(kernel, out_type, grid, grid_names, interpret, *args):
  return plgpu.kernel(kernel, out_type=out_type, grid=grid, grid_names=grid_names,
                      interpret=interpret)(*args)


def _forward(q, k, v, lengths, softmax_scale, causal, block_sizes, interpret):
  bsz, t, h, _ = q.shape
  bq, bkv = block_sizes.block_q, block_sizes.block_kv
  kernel = functools.partial(mla_attention_fwd_kernel, block_q=bq, block_kv=bkv,
                             scale_log2=softmax_scale * LOG2E, causal=causal,
                             p_in_registers=block_sizes.p_in_registers)
  out_type = (jax.ShapeDtypeStruct((bsz, t, h, v.shape[-1]), q.dtype),
              jax.ShapeDtypeStruct((bsz, h, t), jnp.float32))
  return _call(kernel, out_type, (bsz, h, t // bq), ("b", "h", "q"), interpret, lengths, q, k, v)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6, 7))
def _attention(q, k, v, lengths, softmax_scale, causal, block_sizes, interpret):
  return _forward(q, k, v, lengths, softmax_scale, causal, block_sizes, interpret)[0]


def _attention_fwd(q, k, v, lengths, softmax_scale, causal, block_sizes, interpret):
  out, lse = _forward(q, k, v, lengths, softmax_scale, causal, block_sizes, interpret)
  return out, (q, k, v, lengths, out, lse)


def _attention_bwd(softmax_scale, causal, block_sizes, interpret, res, do):
  q, k, v, lengths, out, lse = res
  bsz, t, h, _ = q.shape
  bq, bkv = block_sizes.block_q, block_sizes.block_kv
  # rowsum(dO * O) elementwise in fp32 (an fp32 einsum may run in TF32 on the GPU).
  delta = jnp.sum(out.astype(jnp.float32) * do.astype(jnp.float32), axis=-1).transpose(0, 2, 1)  # (B, H, T)
  statics = dict(block_q=bq, block_kv=bkv, scale_log2=softmax_scale * LOG2E, scale=softmax_scale,
                 causal=causal, p_in_registers=block_sizes.p_in_registers)
  args = (lengths, q, k, v, do, lse, delta)
  dq = _call(functools.partial(mla_attention_dq_kernel, **statics),
             jax.ShapeDtypeStruct(q.shape, q.dtype), (bsz, h, t // bq), ("b", "h", "q"), interpret, *args)
  dk, dv = _call(functools.partial(mla_attention_dkv_kernel, **statics),
                 (jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype)),
                 (bsz, h, t // bkv), ("b", "h", "k"), interpret, *args)
  return dq, dk, dv, None


_attention.defvjp(_attention_fwd, _attention_bwd)


@functools.partial(jax.jit, static_argnames=("softmax_scale", "causal", "block_sizes", "interpret"))
def mla_attention(q, k, v, lengths=None, *, softmax_scale: float, causal: bool = True,
                  block_sizes: BlockSizes = BlockSizes(), interpret=None):
  """Mosaic GPU flash attention with custom_vjp; same contract as `reference.mla_attention`."""
  check_support(q, k, v, block_sizes=block_sizes, interpret=interpret)
  bsz, t = q.shape[:2]
  lengths = jnp.full((bsz,), t, jnp.int32) if lengths is None else jnp.minimum(lengths.astype(jnp.int32), t)
  tp = round_up(t, max(block_sizes.block_q, block_sizes.block_kv))
  pad = lambda x: jnp.pad(x, ((0, 0), (0, tp - t), (0, 0), (0, 0)))  # padded keys fall past `lengths`
  out = _attention(pad(q), pad(k), pad(v), lengths, softmax_scale, causal, block_sizes, interpret)
  return out[:, :t]
