"""Rotary position embedding for the decoupled RoPE dims of MLA, with YaRN [V3 §4.3], and for
whole heads of the dense decoders (Qwen2, Llama), with Llama 3's frequency scaling.

Axis glossary: B batch, T query length, H heads, R rope dim (qk_rope_head_dim).

Layout: the released DeepSeek weights store each rotated pair as adjacent channels (x0, x1),
(x2, x3), ... ("interleaved"); other checkpoints use the half-split layout (x_i, x_{i+R/2}).
Both are rotated here, and the output is always half-split: queries and keys are permuted the
same way, so their dot product (the only thing attention sees) is unchanged.
"""

from __future__ import annotations

import dataclasses
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


@dataclasses.dataclass(frozen=True)
class Llama3RopeScaling:
    """Llama 3.1's RoPE scaling (HF rope_type "llama3"): wavelengths longer than
    original_max_position_embeddings / low_freq_factor are stretched by `factor`, those shorter
    than original_max_position_embeddings / high_freq_factor are kept, and those between are
    interpolated smoothly. Defaults: Llama 3.1 (factor 8 over an 8192-token pretraining context)."""

    factor: float = 8.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192

    def __post_init__(self):
        if not self.factor >= 1.0:
            raise ValueError(f"rope_scaling.factor={self.factor} must be >= 1")
        if not 0 < self.low_freq_factor < self.high_freq_factor:
            raise ValueError(f"rope_scaling: need 0 < low_freq_factor={self.low_freq_factor} < "
                             f"high_freq_factor={self.high_freq_factor}")
        if self.original_max_position_embeddings < 1:
            raise ValueError(f"rope_scaling.original_max_position_embeddings="
                             f"{self.original_max_position_embeddings} must be >= 1")


def llama3_scaled_inv_freq(inv_freq: np.ndarray, scaling: Llama3RopeScaling) -> np.ndarray:
    """Inverse frequencies (dim/2,) after Llama 3 scaling, in float32 step by step like the HF
    reference (transformers' _compute_llama3_parameters), so the angles round identically."""
    inv_freq = inv_freq.astype(np.float32)
    context = scaling.original_max_position_embeddings
    low_freq_wavelen = context / scaling.low_freq_factor  # longer: scaled by 1/factor
    high_freq_wavelen = context / scaling.high_freq_factor  # shorter: kept
    wavelen = (2 * math.pi / inv_freq).astype(np.float32)
    scaled = np.where(wavelen > low_freq_wavelen, inv_freq / np.float32(scaling.factor), inv_freq)
    smooth = (context / wavelen - scaling.low_freq_factor) / (
        scaling.high_freq_factor - scaling.low_freq_factor)
    smoothed = (1 - smooth) * scaled / np.float32(scaling.factor) + smooth * scaled
    medium = ~(wavelen < high_freq_wavelen) & ~(wavelen > low_freq_wavelen)
    return np.where(medium, smoothed, scaled).astype(np.float32)


def plain_rope_cos_sin(positions: jax.Array, dim: int, theta: float,
                       scaling: Llama3RopeScaling | None = None) -> tuple[jax.Array, jax.Array]:
    """cos, sin (B, T, dim/2) float32 of RoPE over a whole head of size `dim` (Qwen2, Llama):
    inverse frequencies theta^(-2i/dim), rounded in float32 like the HF reference, then Llama 3
    scaled when `scaling` is given."""
    exponents = np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim)
    inv_freq = (1.0 / theta ** exponents).astype(np.float32)  # (dim/2,)
    if scaling is not None:
        inv_freq = llama3_scaled_inv_freq(inv_freq, scaling)
    angles = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)  # (B, T, dim/2)
    return jnp.cos(angles), jnp.sin(angles)
