"""`jax.lax.ragged_dot` as one batched GEMM over group-aligned row tiles: cost follows the rows.

Axis glossary: M rows (sorted by group), G groups (experts), K contraction dim, N output dim,
R rows of the group-aligned layout (R = P * tile), P tiles, L rows of a tile.

XLA:CPU lowers `ragged_dot` (forward and both transposes) to a dense product over every group
with the rows of other groups masked out: M*G*K*N multiply-adds for M*K*N of real work. Measured
(jax 0.11.2, 2 shared CPU cores; M=4096 rows, K=256, N=128, G=8, the three GEMMs of a SwiGLU,
forward and backward, median of 9 interleaved runs): XLA's cost analysis counts 19.4 GFLOP for
`ragged_dot` and 3.0 GFLOP here, and they take 547 ms against 124 ms (tiles of 32, 64, 256 rows:
163, 137, 136 ms).

Here every group starts on a tile of `tile` rows, so each of the P = ceil(M / tile) + G tiles
holds rows of one group only (the last tile of a group is zero-padded). One batched GEMM
(P, L, K) x (P, K, N) with each tile's expert weight gathered runs at most M + G*(tile - 1)
rows. The backward pass (custom_vjp) runs the same tiles: dX is the batched GEMM with the
transposed weights, and dW one float32 (K, N) product per tile summed into its group, so it
costs what the forward does.

One tile per group: when the caller knows a bound on every group's size (`max_group_size`:
routed experts of N tokens, each token's K experts distinct, hold at most N rows each), groups
of few rows (decoding) start at fixed tiles g * L with L = that bound, and the GEMM reads the
(G, K, N) weights in place: no gather. Measured on the small model's expert SwiGLU (D=256,
F=128, G=8, top-2; one core, jax 0.11.2, medians of 30): 16 tokens 521 -> 426 us, 32 tokens
995 -> 823 us, 64 tokens equal, 128 tokens 2252 -> 2664 us. `use_group_tiles` takes it where its
G * L rows cost no more than the tiled layout's rows plus the gather, which costs about 8 GEMM
rows per tile.

Memory: each GEMM gathers one weight per tile, P*K*N values (and dW holds P float32 (K, N)
partials): 40 tiles of 256x128 (5 MB) for the small model's 4096 routed rows, but about 1 GB for
moe_1b's 65536 rows per MoE layer. Chunking the tiles (a scan over groups of tiles) would bound
that for large models on CPU; none is trained on CPU here.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

MAX_TILE = 128  # rows per tile: the fastest of 32/64/128/256 in the measurement above
MIN_TILE = 8


def tile_for(rows: int, groups: int) -> int:
    """Rows per tile: MAX_TILE, or for few rows per group (decoding: M = batch * K) the power of
    two >= M / G, so the G padded tiles (M + G*tile rows at most) stay within twice the rows
    rather than G*MAX_TILE."""
    per_group = max(1, -(-rows // groups))
    return max(MIN_TILE, min(MAX_TILE, 1 << (per_group - 1).bit_length()))


def use_group_tiles(rows: int, groups: int, max_group_size: int | None) -> bool:
    """Whether one tile of `max_group_size` rows per group (weights read in place) costs no more
    than `tile_for`'s tiles, counting each tile's weight gather as 8 GEMM rows (measured above)."""
    if max_group_size is None:
        return False
    tile = tile_for(rows, groups)
    return groups * max_group_size <= (math.ceil(rows / tile) + groups) * (tile + 8)


def group_tiled_rows(group_sizes: jax.Array, rows: int, tile: int,
                     one_tile_per_group: bool = False) -> tuple[jax.Array, jax.Array]:
    """Row of each of the M sorted rows in a layout where every group starts on a tile, and each
    tile's group: (row (M,), group_of_tile (P,)), P = ceil(M / tile) + G.

    sum_g ceil(size_g / tile) never exceeds P. Rows past sum(group_sizes) belong to no group and
    get row R = P * tile (out of range: scatters drop them, gathers fill zeros); tiles past the
    last group's are empty and carry the last group id (their rows are zeros).
    `one_tile_per_group`: group g fills tile g alone (P = G; every group size <= tile).
    """
    n_groups = group_sizes.shape[0]
    if one_tile_per_group:
        n_tiles, tiles_per_group = n_groups, jnp.ones_like(group_sizes)
    else:
        n_tiles, tiles_per_group = math.ceil(rows / tile) + n_groups, -(-group_sizes // tile)  # ceil
    group_start = jnp.cumsum(group_sizes) - group_sizes  # (G,) first sorted row of each group
    aligned_start = (jnp.cumsum(tiles_per_group) - tiles_per_group) * tile  # (G,) its first row
    index = jnp.arange(rows)  # (M,)
    group = jnp.repeat(jnp.arange(n_groups), group_sizes, total_repeat_length=rows)  # (M,)
    row = aligned_start[group] + index - group_start[group]  # (M,)
    row = jnp.where(index < jnp.sum(group_sizes), row, n_tiles * tile)
    group_of_tile = jnp.repeat(jnp.arange(n_groups), tiles_per_group, total_repeat_length=n_tiles)
    return row, group_of_tile


def _row_tiles(x, row, n_tiles, tile):
    """x (M, C) scattered to the group-aligned layout: (P, L, C), zeros where no row lands."""
    return (jnp.zeros((n_tiles * tile, x.shape[1]), x.dtype).at[row].set(x, mode="drop")
            .reshape(n_tiles, tile, x.shape[1]))


def _tile_rows(tiles, row):
    """The inverse of `_row_tiles`: (P, L, C) -> (M, C), zeros for rows that belong to no group."""
    return tiles.reshape(-1, tiles.shape[-1]).at[row].get(mode="fill", fill_value=0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _tiled_ragged_dot(lhs, rhs, group_sizes, tile, out_dtype, per_group):
    return _tiled_ragged_dot_fwd(lhs, rhs, group_sizes, tile, out_dtype, per_group)[0]


def _tile_weights(rhs, group_of_tile, per_group):
    """Each tile's (K, N) weight: rhs itself with one tile per group, else gathered (P, K, N)."""
    return rhs if per_group else rhs[group_of_tile]


def _tiled_ragged_dot_fwd(lhs, rhs, group_sizes, tile, out_dtype, per_group):
    row, group_of_tile = group_tiled_rows(group_sizes, lhs.shape[0], tile, per_group)
    tiles = _row_tiles(lhs, row, group_of_tile.shape[0], tile)  # (P, L, K)
    out = jnp.einsum("plk,pkn->pln", tiles, _tile_weights(rhs, group_of_tile, per_group),
                     preferred_element_type=out_dtype)
    return _tile_rows(out, row), (lhs, rhs, row, group_of_tile)  # (M, N)


def _tiled_ragged_dot_bwd(tile, out_dtype, per_group, residuals, d_out):  # d_out (M, N)
    lhs, rhs, row, group_of_tile = residuals
    n_tiles, f32 = group_of_tile.shape[0], jnp.float32
    d_out_tiles = _row_tiles(d_out, row, n_tiles, tile)  # (P, L, N)
    d_lhs = jnp.einsum("pln,pkn->plk", d_out_tiles, _tile_weights(rhs, group_of_tile, per_group),
                       preferred_element_type=f32)  # (P, L, K)
    # Each tile's dW in float32, summed into its group in float32 and rounded once, as ragged_dot's
    # transpose does over the group's rows.
    d_rhs_tiles = jnp.einsum("plk,pln->pkn", _row_tiles(lhs, row, n_tiles, tile), d_out_tiles,
                             preferred_element_type=f32)  # (P, K, N)
    d_rhs = (d_rhs_tiles if per_group else
             jax.ops.segment_sum(d_rhs_tiles, group_of_tile, num_segments=rhs.shape[0]))  # (G, K, N)
    d_lhs = _tile_rows(d_lhs, row).astype(lhs.dtype)
    return _sum_over_extra_axes(d_lhs, lhs), _sum_over_extra_axes(d_rhs.astype(rhs.dtype), rhs), None


def _sum_over_extra_axes(cotangent, primal):
    """Inside shard_map: the cotangent summed over the mesh axes it varies over and its primal
    does not (an operand shared by the shards of the other, e.g. expert weights over the token
    axes), which is the transpose of the implicit broadcast autodiff would insert."""
    varying = lambda x: jax.typeof(x).manual_axis_type.varying  # noqa: E731
    extra = tuple(sorted(varying(cotangent) - varying(primal)))
    return jax.lax.psum(cotangent, extra) if extra else cotangent


_tiled_ragged_dot.defvjp(_tiled_ragged_dot_fwd, _tiled_ragged_dot_bwd)


def tiled_ragged_dot(lhs: jax.Array, rhs: jax.Array, group_sizes: jax.Array, *,
                     tile: int | None = None, preferred_element_type=None,
                     max_group_size: int | None = None) -> jax.Array:
    """`jax.lax.ragged_dot(lhs, rhs, group_sizes, preferred_element_type=...)`: lhs (M, K) rows
    sorted by group, rhs (G, K, N) -> (M, N); rows past sum(group_sizes) give zeros.

    Differentiable in lhs and rhs; group_sizes is an integer input. `tile` None: `tile_for`, or
    one tile of `max_group_size` rows per group where `use_group_tiles`. `max_group_size`: a
    bound the caller guarantees on every group's size (a larger group would spill into the next
    group's tile).
    """
    if (lhs.ndim != 2 or rhs.ndim != 3 or lhs.shape[1] != rhs.shape[1]
            or group_sizes.shape != rhs.shape[:1]):
        raise ValueError(f"{lhs.shape=}, {rhs.shape=}, {group_sizes.shape=}: need (M, K), "
                         f"(G, K, N), (G,)")
    out_dtype = jnp.dtype(preferred_element_type or jnp.result_type(lhs.dtype, rhs.dtype))
    if tile is None and use_group_tiles(lhs.shape[0], rhs.shape[0], max_group_size):
        return _tiled_ragged_dot(lhs, rhs, group_sizes, int(max_group_size), out_dtype, True)
    tile = tile_for(lhs.shape[0], rhs.shape[0]) if tile is None else int(tile)
    return _tiled_ragged_dot(lhs, rhs, group_sizes, tile, out_dtype, False)
