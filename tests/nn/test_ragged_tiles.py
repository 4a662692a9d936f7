"""tiled_ragged_dot equals jax.lax.ragged_dot (forward, dX, dW), and the CPU dispatch uses it.

Tolerance: float32 with highest matmul precision, |tiled - ragged_dot| <= 1e-5 * (1 + |ragged_dot|)
elementwise (the two sum the same products in a different order). Rows past sum(group_sizes)
and the dW of an empty group are exactly zero on both.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax.nn import kernels
from r1jax.nn.fp8_ragged import fp8_ragged_dot
from r1jax.nn.ragged_tiles import group_tiled_rows, tile_for, tiled_ragged_dot, use_group_tiles
from tests import numerics

TOL = 1e-5
REFERENCE = kernels.kernel_choice("xla_reference")

# An empty group first and in the middle, groups larger than a tile of 8 rows (19, 30), groups
# of exactly a tile and of one row, and 3 rows past sum(group_sizes).
GROUP_SIZES = (0, 19, 8, 0, 30, 1, 5)
TRAILING_ROWS = 3


def problem(group_sizes=GROUP_SIZES, trailing=TRAILING_ROWS, k=12, n=10, seed=0):
    rng = np.random.default_rng(seed)
    m = sum(group_sizes) + trailing
    lhs = rng.normal(size=(m, k)).astype(np.float32)
    rhs = rng.normal(size=(len(group_sizes), k, n)).astype(np.float32)
    d_out = rng.normal(size=(m, n)).astype(np.float32)
    sizes = jnp.asarray(group_sizes, jnp.int32)
    return jnp.asarray(lhs), jnp.asarray(rhs), sizes, jnp.asarray(d_out)


def value_and_grads(dot, lhs, rhs, group_sizes, d_out):
    out, vjp = jax.vjp(lambda a, b: dot(a, b, group_sizes), lhs, rhs)
    return (out, *vjp(d_out))


def assert_close(got, want, name):
    numerics.assert_close(got, want, name, TOL)


def test_group_tiled_rows_puts_every_group_on_its_own_tiles():
    row, group_of_tile = group_tiled_rows(jnp.asarray(GROUP_SIZES), sum(GROUP_SIZES) + 2, 8)
    # ceil(M / 8) + G = 9 + 7 tiles; groups 1, 2, 4, 5, 6 take 3, 1, 4, 1, 1 of them.
    assert group_of_tile.shape == (16,)
    assert group_of_tile[:10].tolist() == [1, 1, 1, 2, 4, 4, 4, 4, 5, 6]
    assert row[:19].tolist() == list(range(19))  # group 1 starts at tile 0
    assert row[19:27].tolist() == list(range(24, 32))  # group 2 starts on the next tile
    assert row[27:57].tolist() == list(range(32, 62))
    assert row[-2:].tolist() == [16 * 8] * 2  # rows in no group land past the layout


@pytest.mark.parametrize("tile", [8, 128])
def test_tiled_ragged_dot_matches_ragged_dot_with_gradients(tile):
    lhs, rhs, group_sizes, d_out = problem()
    with jax.default_matmul_precision("highest"):
        want = jax.jit(lambda *a: value_and_grads(jax.lax.ragged_dot, *a))(lhs, rhs, group_sizes,
                                                                           d_out)
        tiled = lambda a, b, g: tiled_ragged_dot(a, b, g, tile=tile)  # noqa: E731
        got = jax.jit(lambda *a: value_and_grads(tiled, *a))(lhs, rhs, group_sizes, d_out)
    for name, g, w in zip(["out", "d_lhs", "d_rhs"], got, want, strict=True):
        assert g.shape == w.shape and g.dtype == w.dtype, name
        assert_close(g, w, name)
    out, d_lhs, d_rhs = got
    np.testing.assert_array_equal(out[-TRAILING_ROWS:], 0.0)  # rows in no group
    np.testing.assert_array_equal(d_lhs[-TRAILING_ROWS:], 0.0)
    np.testing.assert_array_equal(d_rhs[0], 0.0)  # empty groups get no gradient
    np.testing.assert_array_equal(d_rhs[3], 0.0)


def test_one_tile_per_group_reads_the_weights_in_place():
    """With a bound on the group sizes (decoding), group g fills tile g; values and gradients
    equal ragged_dot's, and the program gathers no weight (no (P, K, N) copy of rhs)."""
    sizes = (0, 7, 3, 0, 9, 1, 5)  # the largest group holds 9 rows
    lhs, rhs, group_sizes, d_out = problem(sizes, seed=4)
    row, group_of_tile = group_tiled_rows(jnp.asarray(sizes), sum(sizes) + 3, 9, True)
    assert group_of_tile.tolist() == list(range(7))
    assert row[:7].tolist() == list(range(9, 16)) and row[10:19].tolist() == list(range(36, 45))
    assert use_group_tiles(lhs.shape[0], rhs.shape[0], max_group_size=9)
    with jax.default_matmul_precision("highest"):
        want = jax.jit(lambda *a: value_and_grads(jax.lax.ragged_dot, *a))(lhs, rhs, group_sizes,
                                                                           d_out)
        in_place = lambda a, b, g: tiled_ragged_dot(a, b, g, max_group_size=9)  # noqa: E731
        got = jax.jit(lambda *a: value_and_grads(in_place, *a))(lhs, rhs, group_sizes, d_out)
        hlo = jax.jit(in_place).lower(lhs, rhs, group_sizes).as_text()
    for name, g, w in zip(["out", "d_lhs", "d_rhs"], got, want, strict=True):
        assert_close(g, w, name)
    np.testing.assert_array_equal(got[0][-TRAILING_ROWS:], 0.0)
    np.testing.assert_array_equal(got[2][0], 0.0)
    assert "gather" in hlo  # the rows are gathered back from their tiles ...
    assert f"tensor<7x{rhs.shape[1]}x{rhs.shape[2]}xf32>" in hlo  # ... the weights enter as they are
    tiled_hlo = jax.jit(lambda a, b, g: tiled_ragged_dot(a, b, g)).lower(lhs, rhs, group_sizes)
    p = tiled_hlo.as_text().count(f"x{rhs.shape[1]}x{rhs.shape[2]}xf32>")
    assert p > hlo.count(f"x{rhs.shape[1]}x{rhs.shape[2]}xf32>")  # the tiled one gathers (P, K, N)


def test_one_tile_per_group_only_for_few_rows():
    """Decoding (16 or 32 tokens x top-2 over 8 experts) takes one tile per expert; training
    (2048 tokens), where the bound is far above the mean group, keeps the tiles; no bound: tiles."""
    assert use_group_tiles(32, 8, max_group_size=16)
    assert use_group_tiles(64, 8, max_group_size=32)
    assert not use_group_tiles(4096, 8, max_group_size=2048)
    assert not use_group_tiles(32, 8, max_group_size=None)


def test_tiled_ragged_dot_preferred_element_type():
    """bf16 operands with a float32 result, as the bf16 expert GEMMs of the FP8 module ask."""
    lhs, rhs, group_sizes, _ = problem(seed=1)
    lhs, rhs = lhs.astype(jnp.bfloat16), rhs.astype(jnp.bfloat16)
    want = jax.lax.ragged_dot(lhs, rhs, group_sizes, preferred_element_type=jnp.float32)
    got = tiled_ragged_dot(lhs, rhs, group_sizes, tile=8, preferred_element_type=jnp.float32)
    assert got.dtype == jnp.float32
    assert_close(got, want, "bf16 -> f32")


def test_tiled_ragged_dot_on_e4m3_operands_is_exact():
    """E4M3 products are exact in float32 and these sums are short: both give the same bits."""
    lhs, rhs, group_sizes, _ = problem(seed=2)
    lhs, rhs = lhs.astype(jnp.float8_e4m3fn), rhs.astype(jnp.float8_e4m3fn)
    want = jax.lax.ragged_dot(lhs, rhs, group_sizes, preferred_element_type=jnp.float32)
    got = tiled_ragged_dot(lhs, rhs, group_sizes, tile=8, preferred_element_type=jnp.float32)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_tile_follows_the_rows_per_group():
    assert tile_for(4096, 8) == 128  # training: the largest tile
    assert tile_for(128, 8) == 16  # decoding 64 rows x top-2: tiles of the rows per group
    assert tile_for(100, 8) == 16
    assert tile_for(5, 8) == 8


@pytest.mark.parametrize("m", [2048, 128])
def test_cpu_dispatch_runs_the_tiles_and_its_cost_follows_the_rows(m):
    """On CPU `kernels.xla_ragged_dot` is the tiled GEMM: XLA counts about M*K*N multiply-adds
    (plus the padding of G tiles: at most 2x with `tile_for`), not the G times as many of the
    masked dense ragged_dot."""
    assert kernels.ragged_dot_is_dense()  # the test machine is a CPU
    k, n, g = 64, 32, 8
    lhs = jax.ShapeDtypeStruct((m, k), jnp.float32)
    rhs = jax.ShapeDtypeStruct((g, k, n), jnp.float32)
    sizes = jax.ShapeDtypeStruct((g,), jnp.int32)

    def flops(choice):
        fn = jax.jit(lambda a, b, s: kernels.xla_ragged_dot(a, b, s, choice=choice))
        return fn.lower(lhs, rhs, sizes).compile().cost_analysis()["flops"]

    real = 2 * m * k * n
    assert flops(kernels.XLA) <= 2.1 * real
    assert flops(REFERENCE) >= g * real


@pytest.mark.parametrize("recipe", ["bf16", "fp8_v3", "fp8_per_tensor"])
def test_fp8_ragged_dot_tiles_match_ragged_dot(recipe):
    """The FP8 grouped GEMMs give the same values and gradients through the tiles as through
    jax.lax.ragged_dot ("xla_reference"). K = 256 runs fp8_v3's promotion over two chunks."""
    lhs, rhs, group_sizes, d_out = problem((0, 150, 37, 0, 90), trailing=5, k=256, n=130, seed=3)

    def run(choice):
        dot = lambda a, b, g: fp8_ragged_dot(a, b, g, recipe, choice=choice)  # noqa: E731
        return jax.jit(lambda *a: value_and_grads(dot, *a))(lhs, rhs, group_sizes, d_out)

    with jax.default_matmul_precision("highest"):
        got, want = run(kernels.XLA), run(REFERENCE)
    for name, g, w in zip(["out", "d_lhs", "d_rhs"], got, want, strict=True):
        assert_close(g, w, f"{recipe} {name}")
