"""E4M3 quantizers of the DeepSeek-V3 FP8 recipe [V3 §3.3.2], the recipe names, and the HF
block-FP8 weight format.

Public through `r1jax.nn.fp8`, whose docstring states the recipe. A tensor is stored as E4M3
values times one FP32 scale per tile, s = max(amax, 1e-4) / 448 computed online from the tile
(inference/kernel.py act_quant / weight_quant); ragged dims are zero-padded, never cut.

This module is the one home of E4M3_MAX and TILE in r1jax and of the 128x128 block quantizer:
the HF checkpoint loader and saver (r1jax/interop/checkpoint_io.py) run `quantize_128x128` and
`dequantize` on the host CPU through `from_weight_scale_inv` / `to_weight_scale_inv`, so the
released format and fp8_v3 share one rounding. pallas_kernels/ stands alone and keeps its own
SCALE_BLOCK; tests/interop/test_fp8_block_quantizer.py checks that it equals TILE.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp

TILE = 128  # V3 N_C: the quantization tile edge and the FP32 promotion interval [§3.3.2]
E4M3_MAX = 448.0  # largest finite float8_e4m3fn
AMAX_FLOOR = 1e-4  # keeps the scale of an all-zero tile finite (inference/kernel.py act_quant)
PRECISION_RECIPES = ("bf16", "fp8_v3", "fp8_per_tensor")


def check_recipe(name: str) -> str:
    """Returns `name` if it is one of PRECISION_RECIPES, else raises a ValueError listing them."""
    if name not in PRECISION_RECIPES:
        raise ValueError(f"precision recipe {name!r} is unknown; use one of {', '.join(PRECISION_RECIPES)}")
    return name


# ---------------------------------------------------------------------------------------------
# Quantized arrays
# ---------------------------------------------------------------------------------------------


@functools.partial(
    jax.tree_util.register_dataclass, data_fields=("values", "scales"), meta_fields=("shape", "tile")
)
@dataclasses.dataclass(frozen=True)
class QuantizedArray:
    """E4M3 values with one FP32 scale per tile: array ~= values * scales, broadcast over each tile.

    values: float8_e4m3fn; its trailing len(tile) dims are zero-padded up to multiples of the tile.
    scales: float32; values.shape with each tiled dim divided by its tile edge; () per tensor.
    shape:  the unpadded shape (static).
    tile:   tile edges over the trailing dims: (128,) = 1x128 tiles along the last dim,
            (128, 128) = 128x128 blocks of the last two dims, () = one scale for the whole tensor.
    """

    values: jax.Array
    scales: jax.Array
    shape: tuple[int, ...]
    tile: tuple[int, ...]


def _ieee_divide(numerator: jax.Array, denominator) -> jax.Array:
    """numerator / denominator, correctly rounded like the `x / s` of V3's kernels.

    XLA rewrites a division by a constant or a broadcast into a multiplication by the rounded
    reciprocal, one ulp off for about a quarter of the quotients, which then flips some E4M3
    roundings. Materializing the divisor behind a barrier keeps the true division.
    """
    denominator = jnp.broadcast_to(jnp.asarray(denominator, numerator.dtype), numerator.shape)
    return numerator / jax.lax.optimization_barrier(denominator)


def _scale_from_amax(amax: jax.Array, power_of_two: bool) -> jax.Array:
    scale = _ieee_divide(jnp.maximum(amax, AMAX_FLOOR), E4M3_MAX)
    if power_of_two:
        # "ue8m0" scales (V3.1 config): round s up to 2**ceil(log2 s). frexp makes it exact, so
        # x / s never exceeds 448 (E4M3 has no inf: an overflow would become NaN).
        mantissa, exponent = jnp.frexp(scale)  # scale = mantissa * 2**exponent, mantissa in [0.5, 1)
        scale = jnp.where(mantissa == 0.5, scale, jnp.ldexp(jnp.ones_like(scale), exponent))
    return scale


def _quantize_tiles(x: jax.Array, tile: tuple[int, ...], power_of_two: bool) -> QuantizedArray:
    """One scale per tile over the trailing len(tile) dims; ragged dims are zero-padded, not cut."""
    n_tiled = len(tile)
    if x.ndim < n_tiled:
        raise ValueError(f"{x.shape=} has fewer dims than the tile {tile}")
    lead = x.shape[: x.ndim - n_tiled]
    padding = [(0, 0)] * len(lead) + [(0, -d % t) for d, t in zip(x.shape[len(lead) :], tile)]
    padded = jnp.pad(x.astype(jnp.float32), padding)  # (..., D1p, D2p)
    split_shape = lead + sum(((d // t, t) for d, t in zip(padded.shape[len(lead) :], tile)), ())
    tiles = padded.reshape(split_shape)  # (..., D1p/t1, t1, D2p/t2, t2)
    within_tile = tuple(len(lead) + 2 * i + 1 for i in range(n_tiled))
    # Zero padding cannot raise a tile's amax, so a ragged tile scales exactly like a full one.
    scales = _scale_from_amax(jnp.max(jnp.abs(tiles), axis=within_tile, keepdims=True), power_of_two)
    values = _ieee_divide(tiles, scales).astype(jnp.float8_e4m3fn)  # act_quant's y = x / s
    values = values.reshape(padded.shape)  # (..., D1p, D2p)
    return QuantizedArray(values, jnp.squeeze(scales, within_tile), tuple(x.shape), tuple(tile))


@functools.partial(jax.jit, static_argnames="power_of_two_scales")
def quantize_1x128(x: jax.Array, *, power_of_two_scales: bool = False) -> QuantizedArray:
    """Activations and gradients: one scale per 1x128 tile along the last (contraction) dim."""
    return _quantize_tiles(x, (TILE,), power_of_two_scales)


@functools.partial(jax.jit, static_argnames="power_of_two_scales")
def quantize_128x128(w: jax.Array, *, power_of_two_scales: bool = False) -> QuantizedArray:
    """Weights (..., K, N): one scale per 128x128 block of the last two dims [§3.3.2, Fig. 7a]."""
    return _quantize_tiles(w, (TILE, TILE), power_of_two_scales)


@functools.partial(jax.jit, static_argnames="power_of_two_scales")
def quantize_per_tensor(x: jax.Array, *, power_of_two_scales: bool = False) -> QuantizedArray:
    """The coarse baseline: one online scale for the whole tensor."""
    x32 = x.astype(jnp.float32)
    scale = _scale_from_amax(jnp.max(jnp.abs(x32)), power_of_two_scales)  # ()
    values = _ieee_divide(x32, scale).astype(jnp.float8_e4m3fn)  # x.shape
    return QuantizedArray(values, scale, tuple(x.shape), ())


@functools.partial(jax.jit, static_argnames="dtype")
def dequantize(q: QuantizedArray, dtype=jnp.float32) -> jax.Array:
    """values * scales in FP32 with each scale broadcast over its tile, padding removed."""
    scales = q.scales
    first_tiled = q.values.ndim - len(q.tile)
    for i, edge in enumerate(q.tile):
        scales = jnp.repeat(scales, edge, axis=first_tiled + i)  # one scale per element
    full = q.values.astype(jnp.float32) * scales  # padded shape
    return full[tuple(slice(0, d) for d in q.shape)].astype(dtype)


# ---------------------------------------------------------------------------------------------
# Hugging Face checkpoints (quantization_config: e4m3, weight_block_size [128, 128])
# ---------------------------------------------------------------------------------------------


def _check_hf_block_fp8(weight_fp8: jax.Array, scale_inv: jax.Array) -> None:
    if weight_fp8.ndim != 2 or weight_fp8.dtype != jnp.float8_e4m3fn:
        raise ValueError(f"{weight_fp8.shape=} {weight_fp8.dtype=}: expected a 2-D float8_e4m3fn (out, in)")
    out_features, in_features = weight_fp8.shape
    expected = (math.ceil(out_features / TILE), math.ceil(in_features / TILE))
    if tuple(scale_inv.shape) != expected:
        raise ValueError(f"{scale_inv.shape=} must be (ceil(out/128), ceil(in/128)) = {expected}")


def from_weight_scale_inv(weight_fp8: jax.Array, scale_inv: jax.Array) -> QuantizedArray:
    """HF `weight` (out, in) E4M3 + `weight_scale_inv` -> a 128x128 QuantizedArray in (K=in, N=out).

    The released V3 format stores weight[o, i] ~= weight_fp8[o, i] * scale_inv[o // 128, i // 128]
    (inference/kernel.py weight_dequant), so scale_inv is our `scales`, transposed like the weight.
    The E4M3 values are kept as they are: no dequantize/requantize round trip.
    """
    _check_hf_block_fp8(weight_fp8, scale_inv)
    out_features, in_features = weight_fp8.shape
    values = jnp.pad(weight_fp8.T, ((0, -in_features % TILE), (0, -out_features % TILE)))  # (Kp, Np)
    scales = scale_inv.T.astype(jnp.float32)  # (Kp/128, Np/128)
    return QuantizedArray(values, scales, (in_features, out_features), (TILE, TILE))


def to_weight_scale_inv(q: QuantizedArray) -> tuple[jax.Array, jax.Array]:
    """A 128x128 QuantizedArray (K=in, N=out) -> HF (`weight` (out, in) E4M3, `weight_scale_inv`).

    The inverse of `from_weight_scale_inv`: the padding is cut and values and scales are transposed,
    so `to_weight_scale_inv(quantize_128x128(w))` writes w (in, out) in the released format with
    the amax/448 block scales of fp8_v3 (what makes a kept weight equal its requantization).
    """
    if q.tile != (TILE, TILE) or len(q.shape) != 2:
        raise ValueError(f"{q.shape=} {q.tile=}: expected a 2-D (in, out) weight in {TILE}x{TILE} blocks")
    in_features, out_features = q.shape
    return q.values[:in_features, :out_features].T, q.scales.T  # (out, in), (Np/128, Kp/128)
