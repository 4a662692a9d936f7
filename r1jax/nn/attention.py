"""Causal self-attention without a (B, T, S) mask: query blocks with a recomputing backward.

Axis glossary: B batch, T query tokens, S key tokens (S = T), H heads, Dk query/key head dim,
Dv value head dim, L query rows of a block.

The visibility of training and prefill without a cache is structured: key s is visible to query
t iff s <= t (causal), key s is a real token (`key_valid`) and both lie in the same packed
segment (`segment_ids`). `CausalMask` carries those (B, S) and (B, T) arrays; `dense()` builds
the (B, T, S) boolean only for code that needs it (the dense reference, the kernels' run-time
mask check).

`causal_attention` splits the queries into blocks of L rows; block i sees only the keys
[0, (i + 1) L), so the blocks above the diagonal are never computed (5/8 of the full product at
L = T/4), and each block's mask is built from iotas and the two small arrays. The forward keeps
the output and the log-sum-exp (B, H, T) only; the backward (custom_vjp) recomputes each block's
probabilities and forms dS = P * (dP - rowsum(dO * O)) in one pass, as flash attention does,
instead of differentiating the masked softmax's several elementwise passes. Measured (jax 0.11.2,
2 shared CPU cores, float32, B=8 T=256 H=4 Dk=192 Dv=128, forward + backward, median of 11
interleaved runs): 92 ms against 170 ms for the dense masked softmax (L=64: 142 ms, L=32: 133 ms).
Small heads favour smaller blocks (`block_for`): at the small model's Dk=48, Dv=32 (H=8) L=64 is
the fastest of 32/64/128, while at Dk=192, Dv=128 (H=4) L=128 is (one core, CPU time of forward +
backward, medians of 15 interleaved runs).

Grouped-query attention (Qwen2, Llama: K key/value heads, each read by G = H / K query heads)
runs with the G query heads of a key head as rows of one GEMM against that key head's keys:
(B, K, G*L, Dk) x (B, K, S_i, Dk), no K/V repeated to H heads, and GEMMs with G times the rows;
the backward sums dK and dV over the G heads inside its GEMMs. With G > 1 a block has L =
DEFAULT_BLOCK / G query rows (G*L = 128 GEMM rows; at G = 4, L = 32 was the fastest of 16, 32,
64 and 128). Measured against K/V repeated (`experiments/bench_attention.py`, one core, float32):
1.26x forward and 1.28x forward + backward at Qwen2 small's GRPO shapes (B=32 T=127 H=8 K=2
Dh=32), 1.02-1.13x at B=8 T=256.

Queries that see no key (a left-padded row's pad tokens) give zeros, as `masked_softmax` does.

Why not `jax.nn.dot_product_attention`: its XLA implementation builds the same (B, H, T, S)
logits and combined mask, asks for a value of the key's shape (MLA's d_v = 128 is not d_qk =
192), and averages the values of a query that sees no key; its cuDNN implementation runs on
NVIDIA GPUs only, where the Pallas kernel (pallas_kernels/mla_attention) is this path's GPU form.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

DEFAULT_BLOCK = 128  # query rows per block: the fastest of 32/64/128 on CPU at Dk >= 128
SMALL_HEAD_BLOCK = 64  # the fastest at Dk < 128 (measurements above)


def block_for(qk_head_dim: int, groups: int = 1) -> int:
    """Query rows per block for a query/key head dim and G query heads per key head: smaller heads
    make cheaper GEMMs, so the masked work above the diagonal that smaller blocks skip weighs
    more; G heads share a block's GEMM, which then has G*L rows."""
    if groups > 1:
        return max(DEFAULT_BLOCK // groups, 16)
    return DEFAULT_BLOCK if qk_head_dim >= 128 else SMALL_HEAD_BLOCK


def masked_softmax(scores: jax.Array, mask: jax.Array) -> jax.Array:
    """Softmax in float32 over the last axis; fully masked rows give zeros, not NaNs."""
    scores = jnp.where(mask, scores.astype(jnp.float32), -jnp.inf)
    row_max = jnp.max(scores, axis=-1, keepdims=True)
    row_max = jnp.where(jnp.isfinite(row_max), row_max, 0.0)
    # Masked scores are -inf and row_max is finite, so exp gives exactly 0 there: no second mask.
    p = jnp.exp(scores - row_max)
    return p / jnp.maximum(jnp.sum(p, axis=-1, keepdims=True), 1e-30)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class CausalMask:
    """Key s visible to query t iff s <= t and key_valid[b, s] and (without segment_ids, or)
    segment_ids[b, t] == segment_ids[b, s]. key_valid (B, S) bool; segment_ids (B, T) int or
    None."""

    key_valid: jax.Array
    segment_ids: jax.Array | None = None

    def block(self, lo: int, hi: int) -> jax.Array:
        """The visibility of queries [lo, hi) over keys [0, hi): (B, hi - lo, hi) bool."""
        causal = jnp.arange(hi)[None, :] <= jnp.arange(lo, hi)[:, None]  # (L, S_i)
        mask = causal[None] & self.key_valid[:, None, :hi]  # (B, L, S_i)
        if self.segment_ids is not None:
            mask &= self.segment_ids[:, lo:hi, None] == self.segment_ids[:, None, :hi]
        return mask

    def dense(self) -> jax.Array:
        """(B, T, S) bool."""
        return self.block(0, self.key_valid.shape[1])


def _blocks(t: int, block: int) -> list[tuple[int, int]]:
    return [(lo, min(lo + block, t)) for lo in range(0, t, block)]


def _einsum(spec: str, *xs, **kw):
    """jnp.einsum whose "g" (query heads per key head) appears only in grouped-query operands:
    queries (B, K, G, T, D) when G > 1, (B, H, T, D) when K = H. Multi-head attention keeps its
    4-d GEMMs: with a unit G dim XLA:CPU ran its forward + backward slower (at the small
    DeepSeek-V3's B=8 T=256 H=8 Dk=48, one core) and summed dK, dV in another order."""
    grouped = any(x.ndim == 5 for x in xs)
    return jnp.einsum(spec if grouped else spec.replace("g", ""), *xs, **kw)


def _block_scores(q, k, lo, hi, softmax_scale):
    """Scaled float32 scores of queries [lo, hi) over keys [0, hi): q (B, K, G, T, Dk),
    k (B, K, S, Dk) -> (B, K, G, L, S_i)."""
    return _einsum("bkgtd,bksd->bkgts", q[..., lo:hi, :], k[:, :, :hi],
                   preferred_element_type=jnp.float32) * softmax_scale


def _block_mask(mask, lo: int, hi: int, ndim: int) -> jax.Array:
    """mask.block(lo, hi) (B, L, S_i) broadcast against scores of `ndim` dims."""
    visible = mask.block(lo, hi)
    return visible.reshape(visible.shape[0], *[1] * (ndim - 3), *visible.shape[1:])


def _heads_major(x, kv_heads: int | None = None):
    """(B, T, H, D) -> (B, H, T, D), or for queries with kv_heads = K < H (B, K, G, T, D): every
    block's GEMMs then batch over leading (B, K) without a transpose of their own (10-25% faster
    on CPU than transposing inside each einsum)."""
    x = jnp.swapaxes(x, 1, 2)
    b, h, t, d = x.shape
    return x if kv_heads in (None, h) else x.reshape(b, kv_heads, h // kv_heads, t, d)


def _tokens_major(x):
    """(B, K, G, T, D) or (B, H, T, D) -> (B, T, H, D): the inverse of `_heads_major`."""
    return jnp.swapaxes(x.reshape(x.shape[0], -1, *x.shape[-2:]), 1, 2)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _causal_attention(q, k, v, mask, softmax_scale, block):
    return _causal_attention_fwd(q, k, v, mask, softmax_scale, block)[0]


def _causal_attention_fwd(q, k, v, mask, softmax_scale, block):
    q = _heads_major(q, k.shape[2])  # (B, K, G, T, Dk); (B, H, T, Dk) when K = H
    k, v = _heads_major(k), _heads_major(v)  # (B, K, S, Dk), (B, K, S, Dv)
    outs, lses = [], []
    for lo, hi in _blocks(q.shape[-2], block):
        visible = _block_mask(mask, lo, hi, q.ndim)  # (B, 1, 1, L, S_i)
        scores = jnp.where(visible, _block_scores(q, k, lo, hi, softmax_scale), -jnp.inf)
        row_max = jnp.max(scores, axis=-1, keepdims=True)  # (B, K, G, L, 1)
        row_max = jnp.where(jnp.isfinite(row_max), row_max, 0.0)  # rows that see nothing
        p = jnp.exp(scores - row_max)  # (B, K, G, L, S_i), exactly 0 where masked
        total = jnp.maximum(jnp.sum(p, axis=-1, keepdims=True), 1e-30)
        probs = (p / total).astype(v.dtype)
        outs.append(_einsum("bkgts,bksv->bkgtv", probs, v[:, :, :hi]))  # (B, K, G, L, Dv)
        lses.append((row_max + jnp.log(total))[..., 0])  # (B, K, G, L)
    out = jnp.concatenate(outs, axis=-2)  # (B, K, G, T, Dv)
    residuals = (q, k, v, mask, out, jnp.concatenate(lses, axis=-1))
    return _tokens_major(out), residuals  # (B, T, H, Dv)


def _causal_attention_bwd(softmax_scale, block, residuals, d_out):
    q, k, v, mask, out, lse = residuals  # heads-major as in the forward; lse (B, K, G, T)
    f32 = jnp.float32
    d_out = _heads_major(d_out, k.shape[1])  # (B, K, G, T, Dv)
    # rowsum(dO * O) = sum_s P dP: the softmax Jacobian's correction term, once for all blocks.
    correction = jnp.sum(d_out.astype(f32) * out.astype(f32), axis=-1)  # (B, K, G, T)
    dq, dk, dv = [], jnp.zeros(k.shape, f32), jnp.zeros(v.shape, f32)
    for lo, hi in _blocks(q.shape[-2], block):
        visible = _block_mask(mask, lo, hi, q.ndim)  # (B, 1, 1, L, S_i)
        scores = _block_scores(q, k, lo, hi, softmax_scale)
        probs = jnp.where(visible, jnp.exp(scores - lse[..., lo:hi, None]), 0.0)  # (B, K, G, L, S_i)
        d_probs = _einsum("bkgtv,bksv->bkgts", d_out[..., lo:hi, :], v[:, :, :hi],
                          preferred_element_type=f32)  # (B, K, G, L, S_i)
        d_scores = probs * (d_probs - correction[..., lo:hi, None]) * softmax_scale
        # The GEMMs take their operands in the input dtype with float32 sums (bf16 ones run at
        # the bf16 GEMM rate; a float32 operand would turn them into float32 GEMMs).
        d_scores, probs = d_scores.astype(q.dtype), probs.astype(v.dtype)
        dq.append(_einsum("bkgts,bksd->bkgtd", d_scores, k[:, :, :hi],
                          preferred_element_type=f32))  # (B, K, G, L, Dk)
        # dK and dV sum over the G query heads of each key head inside the GEMM.
        dk = dk.at[:, :, :hi].add(_einsum("bkgts,bkgtd->bksd", d_scores, q[..., lo:hi, :],
                                          preferred_element_type=f32))
        dv = dv.at[:, :, :hi].add(_einsum("bkgts,bkgtv->bksv", probs, d_out[..., lo:hi, :],
                                          preferred_element_type=f32))
    dq = _tokens_major(jnp.concatenate(dq, axis=-2))  # (B, T, H, Dk)
    dk, dv = _tokens_major(dk), _tokens_major(dv)  # (B, S, K, D)
    # The mask's leaves are boolean and integer: no cotangent.
    return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), None


_causal_attention.defvjp(_causal_attention_fwd, _causal_attention_bwd)


def causal_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: CausalMask, *,
                     softmax_scale: float, block: int | None = None) -> jax.Array:
    """softmax(q k^T * scale, visible by `mask`) v: q (B, T, H, Dk), k (B, T, K, Dk),
    v (B, T, K, Dv) -> (B, T, H, Dv) in v.dtype, where query head h reads key/value head
    h // (H / K) (K = H: multi-head; K < H: grouped-query). Scores and softmax in float32;
    probabilities meet v in v.dtype. `block` query rows at a time (default: `block_for`)."""
    b, t, h, dk = q.shape
    if (k.shape[:2] != (b, t) or k.shape[3] != dk or h % k.shape[2] or v.shape[:3] != k.shape[:3]
            or mask.key_valid.shape != (b, t)):
        raise ValueError(f"{q.shape=}, {k.shape=}, {v.shape=}, {mask.key_valid.shape=}: need q "
                         f"(B, T, H, Dk), k (B, T, K, Dk), v (B, T, K, Dv) with K dividing H, "
                         f"key_valid (B, T)")
    block = block_for(dk, h // k.shape[2]) if block is None else block
    return _causal_attention(q, k, v, mask, float(softmax_scale), int(block))


def dense_causal_attention(q, k, v, mask: CausalMask, *, softmax_scale: float) -> jax.Array:
    """The same function through the (B, H, T, S) masked softmax, for K = H heads: the reference
    (grouped-query callers repeat K/V to H heads first, as the tests and bench_attention do)."""
    scores = jnp.einsum("bthd,bshd->bhts", q, k)  # (B, H, T, S)
    probs = masked_softmax(scores * softmax_scale, mask.dense()[:, None]).astype(v.dtype)
    return jnp.einsum("bhts,bshv->bthv", probs, v)  # (B, T, H, Dv)
