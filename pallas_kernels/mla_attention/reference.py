"""Causal MLA attention for prefill / training in plain jnp (the truth for the kernels).

In MLA (DeepSeek-V2 sec. 2.1) the up-projected heads have a query/key dim of
qk_nope + qk_rope = 128 + 64 = 192 and a value dim of 128, so Q.K and P.V
contract over different widths; otherwise it is ordinary causal attention.
"""

import jax
import jax.numpy as jnp


def attention_mask(t: int, lengths, *, causal: bool):
  """(B, 1, T, T) bool: query i sees key j if j < lengths[b] (and j <= i when causal)."""
  q_idx = jnp.arange(t)[:, None]
  k_idx = jnp.arange(t)[None, :]
  mask = k_idx[None] < lengths[:, None, None]  # (B, T, T)
  if causal:
    mask = mask & (k_idx <= q_idx)[None]
  return mask[:, None]


def mla_attention(q, k, v, lengths=None, *, softmax_scale: float, causal: bool = True):
  """q, k (B,T,H,Dqk), v (B,T,H,Dv) -> (B,T,H,Dv); rows that see no key return zeros."""
  bsz, t = q.shape[:2]
  if lengths is None:
    lengths = jnp.full((bsz,), t, jnp.int32)
  hi = jax.lax.Precision.HIGHEST
  scores = jnp.einsum("bqhd,bkhd->bhqk", q.astype(jnp.float32), k.astype(jnp.float32),
                      precision=hi) * softmax_scale  # (B, H, T, T)
  mask = attention_mask(t, lengths, causal=causal)
  scores = jnp.where(mask, scores, -jnp.inf)
  m = jnp.max(scores, axis=-1, keepdims=True)
  p = jnp.where(mask, jnp.exp(scores - jnp.where(jnp.isfinite(m), m, 0.0)), 0.0)
  denom = jnp.sum(p, axis=-1, keepdims=True)
  p = p / jnp.where(denom > 0, denom, 1.0)
  out = jnp.einsum("bhqk,bkhd->bqhd", p, v.astype(jnp.float32), precision=hi)  # (B, T, H, Dv)
  return out.astype(q.dtype)
