"""FP8 grouped GEMM for MoE experts: `jax.lax.ragged_dot` under the V3 recipe [V3 §3.3].

Tokens arrive sorted by expert: rows [start_g, start_g + group_sizes[g]) of x use w[g]; rows past
sum(group_sizes) give zeros (ragged_dot semantics). Under "fp8_v3" each expert's three GEMMs are
exactly those of `fp8_matmul` on its own rows: Fprop and Dgrad tiles are per token, so grouping
does not change them; Wgrad contracts over the expert's tokens, so its 128-token tiles start at the
expert's first token and never straddle two experts (as in a grouped GEMM whose expert segments
are padded to 128 rows). Public through `r1jax.nn.fp8`. The grouped dots are
`kernels.xla_ragged_dot`: on CPU a batched GEMM over group-aligned row tiles, whose cost follows
the rows (r1jax/nn/ragged_tiles.py), elsewhere `jax.lax.ragged_dot`.

The weight may also arrive already in E4M3 (a 128x128 `QuantizedArray` (G, K, N), e.g. the expert
weights of a released FP8 checkpoint): Fprop and Dgrad then use its values and scales as they are,
with the same promotion math, and the weight is frozen (zero gradient), like `fp8_matmul`'s
pre-quantized path.

Axis glossary: M tokens (sorted by group), G groups (experts), K in features, N out features,
T the 128 positions of a chunk; R = rows of the 128-aligned per-group token layout.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from r1jax.nn.fp8_quant import (
    TILE,
    QuantizedArray,
    check_recipe,
    quantize_128x128,
    quantize_1x128,
    quantize_per_tensor,
)
from r1jax.nn.kernels import XLA, KernelChoice, xla_ragged_dot
from r1jax.nn.ragged_tiles import group_tiled_rows


def _scan_chunks(step, init, *chunked):
    """acc = init; acc = step(acc, chunk_c...) for each 128-chunk c in order: V3's promotion loop."""
    return jax.lax.scan(lambda acc, chunk: (step(acc, *chunk), None), init, chunked)[0]


def _grouped_promoted_dot(a: QuantizedArray, b_values, b_scales, group_sizes, group_of_row,
                          choice: KernelChoice) -> jax.Array:
    """out[m] = sum_c (a[m, c] . b[g(m), c]) * a_scale[m, c] * b_scale[g(m), c]: Fprop and Dgrad.

    a (M, C*T) in 1x128 tiles; b_values (G, C*T, Q) with its block scales b_scales (G, C, Q/128).
    """
    rows, width = a.values.shape
    chunks, cols = width // TILE, b_values.shape[-1]
    a_v = jnp.moveaxis(a.values.reshape(rows, chunks, TILE), 1, 0)  # (C, M, T)
    b_v = jnp.moveaxis(b_values.reshape(b_values.shape[0], chunks, TILE, cols), 1, 0)  # (C, G, T, Q)
    a_s = jnp.moveaxis(a.scales, 1, 0)  # (C, M)
    b_s = jnp.moveaxis(jnp.repeat(b_scales, TILE, axis=-1), 1, 0)  # (C, G, Q): each block over its 128 cols

    def step(acc, a_c, b_c, a_s_c, b_s_c):
        partial = xla_ragged_dot(a_c, b_c, group_sizes, choice=choice,
                                 preferred_element_type=jnp.float32)  # (M, Q)
        return acc + partial * a_s_c[:, None] * b_s_c[group_of_row]

    return _scan_chunks(step, jnp.zeros((rows, cols), jnp.float32), a_v, b_v, a_s, b_s)  # (M, Q)


def _aligned_token_tiles(a, row, n_rows, power_of_two) -> QuantizedArray:
    """a (M, D) scattered to the group-aligned layout, quantized in 128-token x 1-column tiles."""
    aligned = jnp.zeros((n_rows, a.shape[1]), a.dtype).at[row].set(a, mode="drop")  # (R, D)
    return quantize_1x128(aligned.T, power_of_two_scales=power_of_two)  # (D, R)


def _grouped_wgrad(qx_t: QuantizedArray, qdy_t: QuantizedArray, group_of_tile, n_groups) -> jax.Array:
    """dW[g] = x_g^T dy_g from (K, R) and (N, R) token tiles of the aligned layout -> (G, K, N).

    Every 128-token tile belongs to one group, so each tile's FP32 partial product is scaled and
    added into its group's accumulator; empty tiles at the end add zeros.
    """
    x_v = qx_t.values.reshape(qx_t.shape[0], -1, TILE)  # (K, R/T, T)
    dy_v = qdy_t.values.reshape(qdy_t.shape[0], -1, TILE)  # (N, R/T, T)
    partial = jnp.einsum("kct,nct->ckn", x_v, dy_v, preferred_element_type=jnp.float32)  # (R/T, K, N)
    scaled = partial * qx_t.scales.T[:, :, None] * qdy_t.scales.T[:, None, :]  # (R/T, K, N)
    return jax.ops.segment_sum(scaled, group_of_tile, num_segments=n_groups)  # (G, K, N)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _fp8_v3_ragged_dot(choice, power_of_two, w_dtype, x, w, group_sizes):
    return _fp8_v3_ragged_fwd(choice, power_of_two, w_dtype, x, w, group_sizes)[0]


def _fp8_v3_ragged_fwd(choice, power_of_two, w_dtype, x, w, group_sizes):  # x (M, K), w (G, K, N)
    group_of_row = jnp.repeat(jnp.arange(w.shape[0]), group_sizes, total_repeat_length=x.shape[0])  # (M,)
    qx = quantize_1x128(x, power_of_two_scales=power_of_two)  # (M, Kp)
    qw = quantize_128x128(w, power_of_two_scales=power_of_two)  # (G, Kp, Np)
    y = _grouped_promoted_dot(qx, qw.values, qw.scales, group_sizes, group_of_row, choice)[:, : w.shape[2]]
    # The FP8 Wgrad cache [§3.3.1]: x in per-expert 128-token tiles.
    row, group_of_tile = group_tiled_rows(group_sizes, x.shape[0], TILE)
    qx_t = _aligned_token_tiles(x, row, group_of_tile.shape[0] * TILE, power_of_two)  # (K, R)
    return y.astype(x.dtype), (qx_t, qw, group_sizes, group_of_row, row, group_of_tile)


def _fp8_v3_ragged_bwd(choice, power_of_two, w_dtype, residuals, dy):  # dy (M, N)
    qx_t, qw, group_sizes, group_of_row, row, group_of_tile = residuals
    qdy = quantize_1x128(dy, power_of_two_scales=power_of_two)  # (M, Np)
    w_t = jnp.swapaxes(qw.values, 1, 2)  # (G, Np, Kp)
    dx = _grouped_promoted_dot(qdy, w_t, jnp.swapaxes(qw.scales, 1, 2), group_sizes, group_of_row,
                               choice)  # (M, Kp)
    qdy_t = _aligned_token_tiles(dy, row, group_of_tile.shape[0] * TILE, power_of_two)  # (N, R)
    dw = _grouped_wgrad(qx_t, qdy_t, group_of_tile, qw.values.shape[0])  # (G, K, N)
    return dx[:, : qx_t.shape[0]].astype(dy.dtype), dw.astype(w_dtype), None


_fp8_v3_ragged_dot.defvjp(_fp8_v3_ragged_fwd, _fp8_v3_ragged_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _fp8_v3_ragged_dot_prequantized(choice, power_of_two, x, qw: QuantizedArray, group_sizes):
    return _fp8_v3_ragged_prequantized_fwd(choice, power_of_two, x, qw, group_sizes)[0]


def _fp8_v3_ragged_prequantized_fwd(choice, power_of_two, x, qw, group_sizes):  # x (M, K), qw (G, Kp, Np)
    group_of_row = jnp.repeat(jnp.arange(qw.shape[0]), group_sizes, total_repeat_length=x.shape[0])  # (M,)
    qx = quantize_1x128(x, power_of_two_scales=power_of_two)  # (M, Kp)
    y = _grouped_promoted_dot(qx, qw.values, qw.scales, group_sizes, group_of_row, choice)[:, : qw.shape[2]]
    return y.astype(x.dtype), (qw, group_sizes, group_of_row)


def _fp8_v3_ragged_prequantized_bwd(choice, power_of_two, residuals, dy):  # dy (M, N)
    qw, group_sizes, group_of_row = residuals
    qdy = quantize_1x128(dy, power_of_two_scales=power_of_two)  # (M, Np)
    w_t = jnp.swapaxes(qw.values, 1, 2)  # (G, Np, Kp)
    dx = _grouped_promoted_dot(qdy, w_t, jnp.swapaxes(qw.scales, 1, 2), group_sizes, group_of_row,
                               choice)  # (M, Kp)
    return dx[:, : qw.shape[1]].astype(dy.dtype), jax.tree.map(jnp.zeros_like, qw), None


_fp8_v3_ragged_dot_prequantized.defvjp(_fp8_v3_ragged_prequantized_fwd, _fp8_v3_ragged_prequantized_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _fp8_per_tensor_ragged_dot(choice, power_of_two, w_dtype, x, w, group_sizes):
    return _fp8_per_tensor_ragged_fwd(choice, power_of_two, w_dtype, x, w, group_sizes)[0]


def _fp8_per_tensor_ragged_fwd(choice, power_of_two, w_dtype, x, w, group_sizes):  # x (M, K), w (G, K, N)
    qx = quantize_per_tensor(x, power_of_two_scales=power_of_two)
    qw = quantize_per_tensor(w, power_of_two_scales=power_of_two)
    y = xla_ragged_dot(qx.values, qw.values, group_sizes, choice=choice,
                       preferred_element_type=jnp.float32)  # (M, N)
    return (y * qx.scales * qw.scales).astype(x.dtype), (qx, qw, group_sizes)


def _fp8_per_tensor_ragged_bwd(choice, power_of_two, w_dtype, residuals, dy):  # dy (M, N)
    qx, qw, group_sizes = residuals
    qdy = quantize_per_tensor(dy, power_of_two_scales=power_of_two)
    w_t = jnp.swapaxes(qw.values, 1, 2)  # (G, N, K)
    dx = xla_ragged_dot(qdy.values, w_t, group_sizes, choice=choice,
                        preferred_element_type=jnp.float32)  # (M, K)
    # dW[g] = x_g^T dy_g is the transpose of ragged_dot in its rhs; the E4M3 values are exact in FP32.
    ragged_in_w = lambda w32: xla_ragged_dot(qx.values.astype(jnp.float32), w32, group_sizes,
                                             choice=choice)
    _, transpose = jax.vjp(ragged_in_w, qw.values.astype(jnp.float32))
    (dw,) = transpose(qdy.values.astype(jnp.float32))  # (G, K, N)
    dx = (dx * qdy.scales * qw.scales).astype(dy.dtype)
    return dx, (dw * qx.scales * qdy.scales).astype(w_dtype), None


_fp8_per_tensor_ragged_dot.defvjp(_fp8_per_tensor_ragged_fwd, _fp8_per_tensor_ragged_bwd)


@functools.partial(jax.jit, static_argnames=("recipe", "power_of_two_scales", "choice"))
def fp8_ragged_dot(
    x: jax.Array, w: jax.Array | QuantizedArray, group_sizes: jax.Array, recipe: str, *,
    power_of_two_scales: bool = False, choice: KernelChoice = XLA
) -> jax.Array:
    """`jax.lax.ragged_dot(x, w, group_sizes)` under a precision recipe: x (M, K), w (G, K, N) -> (M, N).

    Rows of x are sorted by group; group g owns group_sizes[g] consecutive rows. The output has
    x.dtype; gradients reach x and w in their own dtypes (none to the integer group_sizes).
    w may also be a 128x128 QuantizedArray (G, K, N) under "fp8_v3" only: it is frozen (zero gradient).
    `choice` (r1jax/nn/kernels.py) picks the grouped dots' formulation: `kernels.xla_ragged_dot`.
    """
    check_recipe(recipe)
    if isinstance(w, QuantizedArray) and (recipe != "fp8_v3" or w.tile != (TILE, TILE)):
        raise ValueError(
            f"a pre-quantized weight ({w.tile=}) needs 128x128 blocks and recipe 'fp8_v3', not {recipe!r}"
        )
    if x.ndim != 2 or len(w.shape) != 3 or x.shape[1] != w.shape[1] or group_sizes.shape != (w.shape[0],):
        raise ValueError(f"{x.shape=}, {w.shape=}, {group_sizes.shape=}: need (M, K), (G, K, N), (G,)")
    if isinstance(w, QuantizedArray):
        return _fp8_v3_ragged_dot_prequantized(choice, power_of_two_scales, x, w, group_sizes)  # (M, N)
    if recipe == "bf16":
        y = xla_ragged_dot(x, w.astype(x.dtype), group_sizes, choice=choice,
                           preferred_element_type=jnp.float32)
        return y.astype(x.dtype)  # (M, N)
    ragged = _fp8_v3_ragged_dot if recipe == "fp8_v3" else _fp8_per_tensor_ragged_dot
    return ragged(choice, power_of_two_scales, jnp.dtype(w.dtype), x, w, group_sizes)  # (M, N)
