"""Rotary position embedding for the decoupled RoPE dims of MLA, with YaRN [V3 §4.3].

Axis glossary: B batch, T query length, H heads, R rope dim (qk_rope_head_dim).

Layout: the released DeepSeek weights store each rotated pair as adjacent channels (x0, x1),
(x2, x3), ... ("interleaved"); other checkpoints use the half-split layout (x_i, x_{i+R/2}).
Both are rotated here, and the output is always half-split: queries and keys are permuted the
same way, so their dot product (the only thing attention sees) is unchanged.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from r1jax.config import ModelConfig, yarn_mscale


def rope_inv_freq(cfg: ModelConfig) -> tuple[np.ndarray, float]:
    """Inverse frequencies (R/2,) and the cos/sin attention factor, as the HF reference."""
    dim, base = cfg.qk_rope_head_dim, cfg.rope_theta
    # float32 like the reference, so positions x freqs round identically.
    pos_freqs = base ** (np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim))
    inv_freq = (1.0 / pos_freqs).astype(np.float32)
    y = cfg.yarn
    if y is None:
        return inv_freq, 1.0
    # YaRN: keep high-frequency dims, interpolate low-frequency dims by 1/factor, with a linear
    # ramp between the dims that rotate beta_fast and beta_slow times over the original context.
    def correction_dim(rotations: float) -> float:
        return dim * math.log(y.original_max_position_embeddings / (rotations * 2 * math.pi)) / (
            2 * math.log(base))

    low = max(math.floor(correction_dim(y.beta_fast)), 0)
    high = min(math.ceil(correction_dim(y.beta_slow)), dim - 1)
    if low == high:
        high += 0.001  # avoid a zero-width ramp
    ramp = np.clip((np.arange(dim // 2, dtype=np.float32) - low) / (high - low), 0, 1)
    extrapolation = (1 - ramp).astype(np.float32)
    inv_interp = (1.0 / (y.factor * pos_freqs)).astype(np.float32)
    inv_freq = inv_interp * (1 - extrapolation) + inv_freq * extrapolation
    if y.mscale and y.mscale_all_dim:
        attention_factor = yarn_mscale(y.factor, y.mscale) / yarn_mscale(y.factor, y.mscale_all_dim)
    else:
        attention_factor = yarn_mscale(y.factor)
    return inv_freq.astype(np.float32), float(attention_factor)


def rope_cos_sin(cfg: ModelConfig, positions: jax.Array) -> tuple[jax.Array, jax.Array]:
    """cos, sin of shape (B, T, R/2) in float32 for integer positions (B, T)."""
    inv_freq, factor = rope_inv_freq(cfg)
    angles = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)  # (B, T, R/2)
    return jnp.cos(angles) * factor, jnp.sin(angles) * factor


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array, *, interleave: bool) -> jax.Array:
    """Rotate x (B, T, [H,] R) by cos/sin (B, T, R/2); returns the half-split layout."""
    if x.ndim == cos.ndim + 1:  # per-head queries: broadcast over H
        cos, sin = cos[:, :, None, :], sin[:, :, None, :]
    if interleave:
        x1, x2 = x[..., 0::2], x[..., 1::2]
    else:
        half = x.shape[-1] // 2
        x1, x2 = x[..., :half], x[..., half:]
    cos, sin = cos.astype(x.dtype), sin.astype(x.dtype)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def plain_rope_cos_sin(positions: jax.Array, dim: int, theta: float) -> tuple[jax.Array, jax.Array]:
    """cos, sin (B, T, dim/2) float32 of unscaled RoPE over a whole head of size `dim` (Qwen2,
    Llama): inverse frequencies theta^(-2i/dim), rounded in float32 like the HF reference."""
    exponents = np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim)
    inv_freq = (1.0 / theta ** exponents).astype(np.float32)  # (dim/2,)
    angles = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)  # (B, T, dim/2)
    return jnp.cos(angles), jnp.sin(angles)
