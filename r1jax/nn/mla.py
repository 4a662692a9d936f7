"""Multi-head Latent Attention [V3 eqs. 1-11] with a naive path and an absorbed decode path.

Axis glossary: B batch, T query tokens, S key tokens, D hidden, H heads, Q q_lora_rank,
C kv_lora_rank (the cached latent), N qk_nope_head_dim, R qk_rope_head_dim, V v_head_dim.

Naive path (training, prefill without cache): expand the latent into per-head keys and values.
Absorbed path (decoding on the latent cache): fold W_UK into the query and W_UV into the output,
so attention runs directly over the cached c_kv (C) and k_rope (R): 576 values per token per
layer for V3 instead of H*(N+R+V). Both compute the same function.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from r1jax.config import ModelConfig
from r1jax.nn.linear import project, project_in
from r1jax.nn.norms import RMSNorm
from r1jax.nn.params import normal_param
from r1jax.nn.rope import apply_rope


def masked_softmax(scores: jax.Array, mask: jax.Array) -> jax.Array:
    """Softmax in float32 over the last axis; fully masked rows give zeros, not NaNs."""
    scores = jnp.where(mask, scores.astype(jnp.float32), -jnp.inf)
    row_max = jnp.max(scores, axis=-1, keepdims=True)
    row_max = jnp.where(jnp.isfinite(row_max), row_max, 0.0)
    p = jnp.where(mask, jnp.exp(scores - row_max), 0.0)
    return p / jnp.maximum(jnp.sum(p, axis=-1, keepdims=True), 1e-30)


class MLA(nnx.Module):
    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        d, h, std, pd = cfg.hidden_size, cfg.num_heads, cfg.init_std, cfg.param_dtype
        c, n, r, v = cfg.kv_lora_rank, cfg.qk_nope_head_dim, cfg.qk_rope_head_dim, cfg.v_head_dim
        if cfg.q_lora_rank is None:
            self.q_proj = normal_param(rngs, (d, h, n + r), ("embed", "heads", None), std, pd)
        else:
            q = cfg.q_lora_rank
            self.q_a = normal_param(rngs, (d, q), ("embed", "q_lora"), std, pd)
            self.q_norm = RMSNorm(q, eps=cfg.rms_norm_eps, axis_name="q_lora", param_dtype=pd)
            self.q_b = normal_param(rngs, (q, h, n + r), ("q_lora", "heads", None), std, pd)
        self.kv_a = normal_param(rngs, (d, c + r), ("embed", None), std, pd)
        self.kv_norm = RMSNorm(c, eps=cfg.rms_norm_eps, axis_name="kv_lora", param_dtype=pd)
        self.kv_b = normal_param(rngs, (c, h, n + v), ("kv_lora", "heads", None), std, pd)
        self.o = normal_param(rngs, (h, v, d), ("heads", None, "embed"), std, pd)

    def queries(self, x: jax.Array, cos: jax.Array, sin: jax.Array):
        """(q_nope (B, T, H, N), q_rope (B, T, H, R) rotated)."""
        cfg, r = self.cfg, self.cfg.precision
        if cfg.q_lora_rank is None:
            q = project(x, self.q_proj[...], r)  # (B, T, H, N+R)
        else:
            c_q = self.q_norm(project(x, self.q_a[...], r))  # (B, T, Q)
            q = project(c_q, self.q_b[...], r)  # (B, T, H, N+R)
        q_nope, q_rope = jnp.split(q, [cfg.qk_nope_head_dim], axis=-1)
        return q_nope, apply_rope(q_rope, cos, sin, interleave=cfg.rope_interleave)

    def latents(self, x: jax.Array, cos: jax.Array, sin: jax.Array):
        """(c_kv (B, T, C) normalised, k_rope (B, T, R) rotated): what the cache stores."""
        cfg = self.cfg
        kv = project(x, self.kv_a[...], cfg.precision)  # (B, T, C+R)
        c_kv, k_rope = jnp.split(kv, [cfg.kv_lora_rank], axis=-1)
        # RMSNorm on the latent only; the rope key is not normalised [V3 §1.2 code mapping].
        return self.kv_norm(c_kv), apply_rope(k_rope, cos, sin, interleave=cfg.rope_interleave)

    def __call__(self, x, cos, sin, mask, cache_layer=None, cache_index=None):
        """x (B, T, D); cos/sin (B, T, R/2); mask (B, T, S) True where key s is visible.

        Without a cache S = T (naive path). With `cache_layer` = (c_kv (B, S, C), k_rope (B, S, R))
        the new latents are written at `cache_index` and attention runs absorbed over the cache.
        Returns (out (B, T, D), updated cache_layer or None).
        """
        cfg, dt = self.cfg, x.dtype
        n = cfg.qk_nope_head_dim
        q_nope, q_rope = self.queries(x, cos, sin)
        c_kv, k_rope = self.latents(x, cos, sin)
        w_kv = self.kv_b[...].astype(dt)  # (C, H, N+V)
        w_uk, w_uv = w_kv[..., :n], w_kv[..., n:]
        if cache_layer is None:
            kv = project(c_kv, self.kv_b[...], cfg.precision)  # (B, S, H, N+V)
            k_nope, v = kv[..., :n], kv[..., n:]
            scores = (jnp.einsum("bthn,bshn->bhts", q_nope, k_nope)
                      + jnp.einsum("bthr,bsr->bhts", q_rope, k_rope))  # (B, H, T, S)
            probs = masked_softmax(scores * cfg.softmax_scale, mask[:, None]).astype(dt)
            o = jnp.einsum("bhts,bshv->bthv", probs, v)  # (B, T, H, V)
            new_cache = None
        else:
            cache_c, cache_r = cache_layer
            cache_c = jax.lax.dynamic_update_slice_in_dim(cache_c, c_kv.astype(cache_c.dtype),
                                                          cache_index, axis=1)
            cache_r = jax.lax.dynamic_update_slice_in_dim(cache_r, k_rope.astype(cache_r.dtype),
                                                          cache_index, axis=1)
            q_lat = jnp.einsum("bthn,chn->bthc", q_nope, w_uk)  # (B, T, H, C) absorbed W_UK
            scores = (jnp.einsum("bthc,bsc->bhts", q_lat, cache_c.astype(dt))
                      + jnp.einsum("bthr,bsr->bhts", q_rope, cache_r.astype(dt)))  # (B, H, T, S)
            probs = masked_softmax(scores * cfg.softmax_scale, mask[:, None]).astype(dt)
            o_lat = jnp.einsum("bhts,bsc->bthc", probs, cache_c.astype(dt))  # (B, T, H, C)
            o = jnp.einsum("bthc,chv->bthv", o_lat, w_uv)  # (B, T, H, V) absorbed W_UV
            new_cache = (cache_c, cache_r)
        return project_in(o, self.o[...], cfg.precision, 2), new_cache  # (B, T, D)
