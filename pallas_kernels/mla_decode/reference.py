"""MLA decode attention on the latent cache, plain jnp (the truth for the kernel).

With the absorbed projections (DeepSeek-V2 sec. 2.1.3 / V3 sec. 2.1.1), each
query head attends over the shared latent cache: keys are [c_kv, k_rope] and
values are c_kv itself, so all heads share one KV stream (MQA-like).

Row b's valid keys are the contiguous slots [starts[b], lengths[b]): `starts`
skips left padding (rollouts left-pad prompts), and the Tq new tokens are the
last Tq valid slots, each seeing the keys up to itself.
"""

import jax
import jax.numpy as jnp


def visible_keys(lengths, tq: int, s: int, starts=None):
  """(B, Tq, S) mask: query t of row b sees keys starts[b] <= s < lengths[b] - Tq + t + 1."""
  limit = lengths[:, None] - tq + 1 + jnp.arange(tq)[None, :]  # (B, Tq)
  key = jnp.arange(s)[None, None, :]  # (1, 1, S)
  mask = key < limit[:, :, None]
  if starts is not None:
    mask &= key >= starts[:, None, None]
  return mask


def mla_decode(q, c_kv, k_rope, lengths, starts=None, *, softmax_scale: float, latent_dim: int = 512):
  """q (B,Tq,H,latent+rope), c_kv (B,S,latent), k_rope (B,S,rope) -> (B,Tq,H,latent).

  lengths, starts (B,) int (starts None: zeros). Rows with no visible key return zeros.
  """
  q32 = q.astype(jnp.float32)
  scores = (jnp.einsum("bthc,bsc->bths", q32[..., :latent_dim], c_kv.astype(jnp.float32),
                       precision=jax.lax.Precision.HIGHEST)
            + jnp.einsum("bthr,bsr->bths", q32[..., latent_dim:], k_rope.astype(jnp.float32),
                         precision=jax.lax.Precision.HIGHEST)) * softmax_scale  # (B, Tq, H, S)
  mask = visible_keys(lengths, q.shape[1], c_kv.shape[1], starts)[:, :, None, :]  # (B, Tq, 1, S)
  scores = jnp.where(mask, scores, -jnp.inf)
  m = jnp.max(scores, axis=-1, keepdims=True)
  p = jnp.where(mask, jnp.exp(scores - jnp.where(jnp.isfinite(m), m, 0.0)), 0.0)
  denom = jnp.sum(p, axis=-1, keepdims=True)
  p = p / jnp.where(denom > 0, denom, 1.0)
  out = jnp.einsum("bths,bsc->bthc", p, c_kv.astype(jnp.float32), precision=jax.lax.Precision.HIGHEST)
  return out.astype(q.dtype)
