"""The V3 FP8 recipe against an independent float64 numpy model of the same quantized math.

Bounds used below (u32 = 2**-24, the FP32 unit roundoff):

* Quantizing one element x of a tile with scale s: t = fl32(x / s), q = e4m3(t), deq = fl32(q * s).
  E4M3 keeps 3 mantissa bits, so rounding a normal t moves it by at most half an ulp <= 2**-4 |t|;
  below 2**-6 (subnormals, spacing 2**-9) by at most 2**-10. With the two FP32 roundings:
      |deq - x| <= (2**-4 + 2**-22) |x| + 2**-10 s (1 + 2**-22)          (QUANT_REL, QUANT_ABS)
  and, as |x| <= amax and s = amax / 448 per tile, each tile's worst error is ~2**-4 * amax.
* An FP8 GEMM with FP32 promotion sums exact E4M3 x E4M3 products in FP32 within 128-chunks, scales
  each chunk twice and sums the chunks: at most n = K_padded + C + 2 roundings on any path, so
      |got - ref64| <= gamma(n) * (|A| @ |B|),   gamma(n) = n u32 / (1 - n u32),
  where A, B are the dequantized operands and ref64 = A @ B in float64 (the "same quantized math").
* Against the unquantized product a @ b, with ea, eb the elementwise bounds of the first item:
      |got - a @ b| <= ea @ |b| + |a| @ eb + ea @ eb + gamma(n) * (|A| @ |B|).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from r1jax.interop.hf import dequantize_block_fp8
from r1jax.nn import fp8
from r1jax.nn.kernels import XLA, xla_ragged_dot

U32 = 2.0**-24
QUANT_REL = 2.0**-4 + 2.0**-22
QUANT_ABS = 2.0**-10 * (1 + 2.0**-22)
BF16_U = 2.0**-8


def gamma(n: int) -> float:
    return n * U32 / (1 - n * U32)


# ---------------------------------------------------------------------------------------------
# Numpy model of the quantizers (independent of the jnp code: loops over tiles, ml_dtypes casts,
# and V3's own 2**ceil(log2 s) for power-of-two scales)
# ---------------------------------------------------------------------------------------------


def np_scale(amax, power_of_two):
    scale = np.maximum(np.asarray(amax, np.float32), np.float32(1e-4)) / np.float32(448)
    if power_of_two:
        scale = (2.0 ** np.ceil(np.log2(scale.astype(np.float64)))).astype(np.float32)
    return scale


def np_e4m3(t):
    return np.asarray(t, np.float32).astype(ml_dtypes.float8_e4m3fn).astype(np.float64)


def np_quantize_rows(x, power_of_two=False):
    """1x128 tiles along the last dim of (R, D) -> (E4M3 values (R, D), scales (R, C), per-element scale)."""
    x = np.asarray(x, np.float32)
    rows, width = x.shape
    chunks = math.ceil(width / 128)
    values = np.zeros(x.shape, np.float64)
    scales = np.zeros((rows, chunks), np.float32)
    for c in range(chunks):
        tile = x[:, c * 128 : (c + 1) * 128]
        scales[:, c] = np_scale(np.abs(tile).max(axis=1), power_of_two)
        values[:, c * 128 : (c + 1) * 128] = np_e4m3(tile / scales[:, c : c + 1])
    return values, scales, np.repeat(scales, 128, axis=1)[:, :width].astype(np.float64)


def np_quantize_blocks(w, power_of_two=False):
    """128x128 blocks of (K, N) -> (E4M3 values (K, N), scales (Kc, Nc), per-element scale)."""
    w = np.asarray(w, np.float32)
    k, n = w.shape
    scales = np.zeros((math.ceil(k / 128), math.ceil(n / 128)), np.float32)
    values = np.zeros(w.shape, np.float64)
    for i in range(scales.shape[0]):
        for j in range(scales.shape[1]):
            block = w[i * 128 : (i + 1) * 128, j * 128 : (j + 1) * 128]
            scales[i, j] = np_scale(np.abs(block).max(), power_of_two)
            values[i * 128 : (i + 1) * 128, j * 128 : (j + 1) * 128] = np_e4m3(block / scales[i, j])
    elem = np.repeat(np.repeat(scales, 128, axis=0), 128, axis=1)[:k, :n].astype(np.float64)
    return values, scales, elem


def np_quantize_tensor(x, power_of_two=False):
    x = np.asarray(x, np.float32)
    scale = np_scale(np.abs(x).max(), power_of_two)
    return np_e4m3(x / scale), scale, np.full(x.shape, scale, np.float64)


def quant_error_bound(x, elem_scale):
    return QUANT_REL * np.abs(np.asarray(x, np.float64)) + QUANT_ABS * elem_scale


# ---------------------------------------------------------------------------------------------
# Quantizers
# ---------------------------------------------------------------------------------------------


def random_activations(shape, seed):
    # Log-normal magnitudes spread over ~2**12 so tiles have different scales and subnormals occur.
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * np.exp(rng.normal(0.0, 1.5, shape))).astype(np.float32)


def random_weights(shape, seed):
    return (np.random.default_rng(seed).standard_normal(shape) * 0.05).astype(np.float32)


@pytest.mark.parametrize("power_of_two", [False, True])
@pytest.mark.parametrize("shape", [(4, 256), (5, 300), (2, 3, 130)])
def test_quantize_1x128_matches_numpy_bitwise(shape, power_of_two):
    x = random_activations(shape, seed=3)
    q = fp8.quantize_1x128(jnp.asarray(x), power_of_two_scales=power_of_two)
    k_padded = math.ceil(shape[-1] / 128) * 128
    assert q.values.shape == (*shape[:-1], k_padded) and q.values.dtype == jnp.float8_e4m3fn
    assert q.scales.shape == (*shape[:-1], k_padded // 128) and q.scales.dtype == jnp.float32
    values, scales, _ = np_quantize_rows(x.reshape(-1, shape[-1]), power_of_two)
    got_values = np.asarray(q.values, np.float64).reshape(-1, k_padded)
    np.testing.assert_array_equal(got_values[:, : shape[-1]], values)
    np.testing.assert_array_equal(got_values[:, shape[-1] :], 0.0)  # padding is zeros
    np.testing.assert_array_equal(np.asarray(q.scales).reshape(scales.shape), scales)


@pytest.mark.parametrize("power_of_two", [False, True])
@pytest.mark.parametrize("shape", [(256, 128), (300, 200), (130, 260)])
def test_quantize_128x128_matches_numpy_bitwise(shape, power_of_two):
    w = random_activations(shape, seed=4)
    q = fp8.quantize_128x128(jnp.asarray(w), power_of_two_scales=power_of_two)
    values, scales, _ = np_quantize_blocks(w, power_of_two)
    np.testing.assert_array_equal(np.asarray(q.values, np.float64)[: shape[0], : shape[1]], values)
    np.testing.assert_array_equal(np.asarray(q.scales), scales)


def test_quantize_per_tensor_matches_numpy_bitwise():
    x = random_activations((5, 300), seed=5)
    q = fp8.quantize_per_tensor(jnp.asarray(x))
    values, scale, _ = np_quantize_tensor(x)
    np.testing.assert_array_equal(np.asarray(q.values, np.float64), values)
    assert q.scales.shape == () and float(q.scales) == float(scale)


@pytest.mark.parametrize("power_of_two", [False, True])
@pytest.mark.parametrize(
    "quantize,shape",
    [
        (fp8.quantize_1x128, (5, 300)),  # ragged last tile of 44
        (fp8.quantize_1x128, (2, 3, 130)),  # ragged tile of 2, leading dims
        (fp8.quantize_128x128, (300, 200)),  # ragged in both dims
        (fp8.quantize_128x128, (2, 130, 260)),  # a leading expert dim
        (fp8.quantize_per_tensor, (5, 300)),
    ],
)
def test_round_trip_error_bound(quantize, shape, power_of_two):
    x = random_activations(shape, seed=6)
    q = quantize(jnp.asarray(x), power_of_two_scales=power_of_two)
    deq = np.asarray(fp8.dequantize(q), np.float64)
    assert deq.shape == x.shape  # padding removed, nothing dropped
    unit_values = fp8.QuantizedArray(jnp.ones_like(q.values), q.scales, q.shape, q.tile)
    elem_scale = np.asarray(fp8.dequantize(unit_values))  # each element's tile scale
    err = np.abs(deq - x)
    assert np.all(err <= quant_error_bound(x, elem_scale))
    # The bound is not vacuous: normal-range elements do see E4M3 rounding near 2**-4.
    normal = np.abs(x) >= 2.0**-6 * elem_scale
    assert (err[normal] / np.abs(x[normal])).max() > 2.0**-5
    # The ragged tail is quantized like any tile: its error is bounded by its own (small) scale.
    tail = (..., slice(128 * (shape[-1] // 128), shape[-1]))
    assert np.all(err[tail] <= quant_error_bound(x[tail], elem_scale[tail]))


def test_round_trip_tile_bound_per_tile():
    """Each 1x128 tile's worst error is bounded by its own amax, not the row's or the tensor's."""
    x = random_activations((8, 512), seed=7)
    x[:, :128] *= 1000.0  # the first tile of every row is much larger than the rest
    q = fp8.quantize_1x128(jnp.asarray(x))
    err = np.abs(np.asarray(fp8.dequantize(q), np.float64) - x).reshape(8, 4, 128)
    amax = np.abs(x).reshape(8, 4, 128).max(axis=-1)
    assert np.all(err.max(axis=-1) <= (QUANT_REL + QUANT_ABS / 448) * amax)


def test_power_of_two_scales_are_powers_of_two_and_round_up():
    x = random_activations((16, 512), seed=8)
    exact = fp8.quantize_1x128(jnp.asarray(x)).scales
    q = fp8.quantize_1x128(jnp.asarray(x), power_of_two_scales=True)
    mantissa, _ = np.frexp(np.asarray(q.scales))
    np.testing.assert_array_equal(mantissa, 0.5)
    assert np.all(np.asarray(q.scales) >= np.asarray(exact))  # rounded up: x / s never exceeds 448
    assert np.all(np.asarray(q.scales) < 2 * np.asarray(exact))
    assert np.all(np.isfinite(np.asarray(q.values, np.float32)))


def test_all_zero_tile_gets_the_floor_scale():
    q = fp8.quantize_1x128(jnp.zeros((2, 200)))
    np.testing.assert_array_equal(np.asarray(q.scales), np.float32(1e-4) / np.float32(448))
    np.testing.assert_array_equal(np.asarray(fp8.dequantize(q)), 0.0)


def test_outlier_ruins_per_tensor_scaling_but_not_1x128_tiles():
    """One outlier 1e5x the typical value per row: beyond E4M3's normal range 2**-6..448 (~2**15).

    Per-tensor: s = 1e5 / 448, so typical values land in E4M3 subnormals or flush to zero. 1x128
    tiles: only the outlier's own tile shares its scale; the other 7 tiles of the row keep 2**-4.
    """
    x = np.random.default_rng(1).standard_normal((16, 1024)).astype(np.float32)
    x[:, 5] = 1e5
    rest = np.ones(x.shape, bool)
    rest[:, :128] = False  # every tile except the outlier's
    own_tile = ~rest
    own_tile[:, 5] = False

    def errors(quantize):
        deq = np.asarray(fp8.dequantize(quantize(jnp.asarray(x))), np.float64)
        rel_rms = lambda m: np.linalg.norm((deq - x)[m]) / np.linalg.norm(x[m])
        return deq, rel_rms(rest), rel_rms(own_tile), np.mean(deq[rest] == 0)

    tiled, tiled_rest, tiled_own, tiled_zeros = errors(fp8.quantize_1x128)
    tensor, tensor_rest, tensor_own, tensor_zeros = errors(fp8.quantize_per_tensor)
    print(
        f"rel RMS error off the outlier tile: 1x128 {tiled_rest:.4f}, per-tensor {tensor_rest:.4f}; "
        f"flushed to zero: {tiled_zeros:.4f} vs {tensor_zeros:.4f}; "
        f"outlier's own tile: {tiled_own:.4f} vs {tensor_own:.4f}"
    )
    # 1x128: every element off the outlier tile is within the elementwise E4M3 bound.
    tile_scale = np.repeat(np.abs(x).reshape(16, 8, 128).max(-1) / 448, 128, axis=1)
    assert np.all(np.abs(tiled - x)[rest] <= quant_error_bound(x, tile_scale)[rest])
    assert tiled_rest < 2.0**-5 and tiled_zeros < 1e-3  # measured: 0.0256 and none
    # Per-tensor: the same elements lose ~5x more (measured 0.128), and a sixth of them vanish.
    assert tensor_rest > 0.1 and tensor_zeros > 0.1
    assert tensor_rest > 4 * tiled_rest
    # The tile that holds the outlier is as bad with 1x128 tiles: the damage is confined to it.
    assert tiled_own > 0.1


# ---------------------------------------------------------------------------------------------
# Recipes and HF interop
# ---------------------------------------------------------------------------------------------


def test_check_recipe():
    for name in fp8.PRECISION_RECIPES:
        assert fp8.check_recipe(name) == name
    with pytest.raises(ValueError, match="bf16, fp8_v3, fp8_per_tensor"):
        fp8.check_recipe("fp8")
    with pytest.raises(ValueError, match="unknown"):
        fp8.fp8_matmul(jnp.ones((2, 4)), jnp.ones((4, 3)), "int8")


def test_hf_block_layout_convention():
    """weight[o, i] = weight_fp8[o, i] * scale_inv[o // 128, i // 128].

    scale_inv has shape (ceil(out/128), ceil(in/128)) for weight_block_size [128, 128].
    """
    out_features, in_features = 200, 300
    weight_fp8 = jnp.ones((out_features, in_features), jnp.float8_e4m3fn)
    scale_inv = jnp.arange(1.0, 7.0, dtype=jnp.float32).reshape(2, 3)
    dense = dequantize_block_fp8(np.asarray(weight_fp8), np.asarray(scale_inv))  # the loader's
    assert dense.shape == (out_features, in_features) and dense.dtype == np.float32
    o, i = np.meshgrid(np.arange(out_features), np.arange(in_features), indexing="ij")
    np.testing.assert_array_equal(dense, np.asarray(scale_inv)[o // 128, i // 128])
    q = fp8.from_weight_scale_inv(weight_fp8, scale_inv)
    assert q.shape == (in_features, out_features) and q.tile == (128, 128)
    np.testing.assert_array_equal(np.asarray(fp8.dequantize(q)), dense.T)
    with pytest.raises(ValueError, match="ceil"):
        fp8.from_weight_scale_inv(weight_fp8, scale_inv.T)


def test_from_weight_scale_inv_is_our_quantizer_transposed():
    w = random_activations((300, 200), seed=9)  # (K=in, N=out)
    ours = fp8.quantize_128x128(jnp.asarray(w))
    hf_weight = ours.values[:300, :200].T  # (out, in), as stored in the checkpoint
    hf_scale_inv = ours.scales.T  # (ceil(out/128), ceil(in/128))
    theirs = fp8.from_weight_scale_inv(hf_weight, hf_scale_inv)
    np.testing.assert_array_equal(np.asarray(theirs.values, np.float32), np.asarray(ours.values, np.float32))
    np.testing.assert_array_equal(np.asarray(theirs.scales), np.asarray(ours.scales))
    np.testing.assert_array_equal(
        dequantize_block_fp8(np.asarray(hf_weight), np.asarray(hf_scale_inv)), np.asarray(fp8.dequantize(ours)).T
    )
    # A checkpoint weight drives fp8_matmul directly: same output and dx as quantizing w online.
    x = jnp.asarray(random_activations((70, 300), seed=10))
    dy = jnp.asarray(random_activations((70, 200), seed=11))
    y_loaded, dx_loaded, dw_loaded = matmul_and_grads(x, theirs, dy, "fp8_v3", False)
    y_online, dx_online, _ = matmul_and_grads(x, jnp.asarray(w), dy, "fp8_v3", False)
    np.testing.assert_array_equal(np.asarray(y_loaded), np.asarray(y_online))
    np.testing.assert_array_equal(np.asarray(dx_loaded), np.asarray(dx_online))
    assert not np.any(np.asarray(dw_loaded.scales))  # a loaded FP8 weight is frozen


# ---------------------------------------------------------------------------------------------
# fp8_matmul: forward, dgrad and wgrad against float64 numpy
# ---------------------------------------------------------------------------------------------


def assert_gemm(got, a, qa, b, qb, *, out_u=0.0):
    """got ~= A @ B (the quantized operands, float64) to FP32 rounding, and ~= a @ b within E4M3's bound.

    qa = (dequantized A (P, C), per-element scale (P, C)); qb likewise for B (C, Q).
    out_u: unit roundoff of the output dtype when it is narrower than FP32.
    """
    (deq_a, scale_a), (deq_b, scale_b) = qa, qb
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    contraction = a.shape[1]
    chunks = math.ceil(contraction / 128)
    got = np.asarray(got, np.float64)
    ref = deq_a @ deq_b
    fp32_bound = gamma(chunks * 128 + chunks + 2) * (np.abs(deq_a) @ np.abs(deq_b))
    same_math_bound = fp32_bound + out_u * (np.abs(ref) + fp32_bound)
    assert np.all(np.abs(got - ref) <= same_math_bound), np.max(np.abs(got - ref) / same_math_bound)
    ea, eb = quant_error_bound(a, scale_a), quant_error_bound(b, scale_b)
    unquantized = a @ b
    unquantized_bound = ea @ np.abs(b) + np.abs(a) @ eb + ea @ eb + same_math_bound
    assert np.all(np.abs(got - unquantized) <= unquantized_bound)
    if out_u == 0.0:  # The tolerance is far below the quantization effect: the first check pins the tiling.
        assert np.max(np.abs(ref - unquantized)) > 100 * np.max(same_math_bound)


def dequantized(quantized):
    values, scales, elem_scale = quantized
    return values * elem_scale, elem_scale


def transposed(q):
    return q[0].T, q[1].T


def check_fp8_v3_gemms(x, w, dy, y, dx, dw, power_of_two, out_u=0.0):
    """One (M, K) x (K, N) slice: Fprop, Dgrad, Wgrad with V3's tiles, modelled in numpy."""
    qx = dequantized(np_quantize_rows(x, power_of_two))  # 1x128 along K
    qw = dequantized(np_quantize_blocks(w, power_of_two))  # 128x128
    qdy = dequantized(np_quantize_rows(dy, power_of_two))  # 1x128 along N
    qx_t = dequantized(np_quantize_rows(x.T, power_of_two))  # 1x128 along tokens
    qdy_t = dequantized(np_quantize_rows(dy.T, power_of_two))  # 1x128 along tokens
    assert_gemm(y, x, qx, w, qw, out_u=out_u)
    assert_gemm(dx, dy, qdy, w.T, transposed(qw), out_u=out_u)
    assert_gemm(dw, x.T, qx_t, dy, transposed(qdy_t))


def check_fp8_per_tensor_gemms(x, w, dy, y, dx, dw, power_of_two, out_u=0.0):
    qx = dequantized(np_quantize_tensor(x, power_of_two))
    qw = dequantized(np_quantize_tensor(w, power_of_two))
    qdy = dequantized(np_quantize_tensor(dy, power_of_two))
    assert_gemm(y, x, qx, w, qw, out_u=out_u)
    assert_gemm(dx, dy, qdy, w.T, transposed(qw), out_u=out_u)
    assert_gemm(dw, x.T, transposed(qx), dy, qdy)


@functools.partial(jax.jit, static_argnames=("recipe", "power_of_two"))
def matmul_and_grads(x, w, dy, recipe, power_of_two):
    y, vjp = jax.vjp(lambda x, w: fp8.fp8_matmul(x, w, recipe, power_of_two_scales=power_of_two), x, w)
    return (y, *vjp(dy))


def run_matmul(x, w, recipe, power_of_two=False, seed=99):
    """y, dy, dx, dw of fp8_matmul for a random output cotangent dy (in y's dtype)."""
    dy = jnp.asarray(random_activations((*x.shape[:-1], w.shape[-1]), seed), x.dtype)
    y, dx, dw = matmul_and_grads(x, w, dy, recipe, power_of_two)
    return y, dy, dx, dw


@pytest.mark.parametrize(
    "recipe,x_shape,w_shape,power_of_two",
    [
        ("fp8_v3", (128, 256), (256, 128), False),  # aligned
        ("fp8_v3", (70, 300), (300, 200), False),  # ragged M, K, N
        ("fp8_v3", (2, 35, 300), (300, 200), True),  # leading dims, power-of-two scales
        ("fp8_per_tensor", (2, 35, 300), (300, 200), True),  # (False: the bf16-activation test)
    ],
)
def test_fp8_matmul_matches_numpy(recipe, x_shape, w_shape, power_of_two):
    x = random_activations(x_shape, seed=1)
    w = random_weights(w_shape, seed=2)
    y, dy, dx, dw = run_matmul(jnp.asarray(x), jnp.asarray(w), recipe, power_of_two)
    assert y.shape == (*x_shape[:-1], w_shape[-1]) and y.dtype == jnp.float32
    assert dx.shape == x.shape and dw.shape == w.shape
    check = check_fp8_v3_gemms if recipe == "fp8_v3" else check_fp8_per_tensor_gemms
    tokens = lambda a: np.asarray(a, np.float32).reshape(-1, a.shape[-1])  # leading dims are tokens
    check(tokens(x), w, tokens(dy), tokens(y), tokens(dx), np.asarray(dw), power_of_two)


def test_fp8_v3_matmul_per_expert_weights():
    x = random_activations((3, 50, 260), seed=1)  # (B, M, K)
    w = random_weights((3, 260, 130), seed=2)  # (B, K, N)
    y, dy, dx, dw = run_matmul(jnp.asarray(x), jnp.asarray(w), "fp8_v3")
    assert y.shape == (3, 50, 130)
    for e in range(3):  # each expert is its own GEMM: its own tiles, its own token groups for Wgrad
        check_fp8_v3_gemms(x[e], w[e], np.asarray(dy[e]), y[e], dx[e], dw[e], power_of_two=False)


@pytest.mark.parametrize("recipe", ["fp8_v3", "fp8_per_tensor"])
def test_fp8_matmul_bf16_activations_fp32_master_weights(recipe):
    """Output and dx in the activation dtype (bf16), dW in the master-weight dtype (fp32)."""
    x = jnp.asarray(random_activations((70, 300), seed=1), jnp.bfloat16)
    w = jnp.asarray(random_weights((300, 200), seed=2))
    y, dy, dx, dw = run_matmul(x, w, recipe)
    assert (y.dtype, dx.dtype, dw.dtype) == (jnp.bfloat16, jnp.bfloat16, jnp.float32)
    check = check_fp8_v3_gemms if recipe == "fp8_v3" else check_fp8_per_tensor_gemms
    f32 = lambda a: np.asarray(a, np.float32)
    check(f32(x), f32(w), f32(dy), f32(y), f32(dx), f32(dw), power_of_two=False, out_u=BF16_U)


def test_bf16_recipe_is_a_plain_dot_in_the_activation_dtype():
    x = jnp.asarray(random_activations((2, 35, 300), seed=1), jnp.bfloat16)
    w = jnp.asarray(random_weights((300, 200), seed=2))
    y, dy, dx, dw = run_matmul(x, w, "bf16")
    assert (y.dtype, dx.dtype, dw.dtype) == (jnp.bfloat16, jnp.bfloat16, jnp.float32)

    def plain(x, w):
        y = jnp.einsum("...k,kn->...n", x, w.astype(x.dtype), preferred_element_type=jnp.float32)
        return y.astype(x.dtype)

    y_ref, vjp_ref = jax.vjp(jax.jit(plain), x, w)
    dx_ref, dw_ref = vjp_ref(dy)
    for got, want in [(y, y_ref), (dx, dx_ref), (dw, dw_ref)]:
        np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32))


def test_fp8_matmul_shape_errors():
    with pytest.raises(ValueError, match="in-features"):
        fp8.fp8_matmul(jnp.ones((2, 5)), jnp.ones((4, 3)), "fp8_v3")
    with pytest.raises(ValueError, match="batch dim"):
        fp8.fp8_matmul(jnp.ones((2, 7, 4)), jnp.ones((3, 4, 3)), "fp8_v3")


# ---------------------------------------------------------------------------------------------
# fp8_ragged_dot: MoE experts with jax.lax.ragged_dot semantics
# ---------------------------------------------------------------------------------------------

GROUP_SIZES = (150, 0, 37, 200)  # an empty expert; expert 2 starts mid-tile of the global token axis
TRAILING_ROWS = 5  # rows past sum(group_sizes): ragged_dot gives them zeros


def run_ragged(recipe, x, w):
    group_sizes = jnp.asarray(GROUP_SIZES, jnp.int32)
    dy = jnp.asarray(random_activations((x.shape[0], w.shape[-1]), seed=99), x.dtype)

    @jax.jit
    def ragged_and_grads(x, w, dy):
        y, vjp = jax.vjp(lambda x, w: fp8.fp8_ragged_dot(x, w, group_sizes, recipe), x, w)
        return (y, *vjp(dy))

    y, dx, dw = ragged_and_grads(x, w, dy)
    assert (y.dtype, dx.dtype, dw.dtype) == (x.dtype, x.dtype, w.dtype)
    return [np.asarray(a, np.float32) for a in (y, dy, dx, dw)]


def expert_rows():
    starts = np.cumsum((0,) + GROUP_SIZES)
    return [slice(start, start + size) for start, size in zip(starts, GROUP_SIZES)]


def test_fp8_v3_ragged_dot_is_fp8_v3_per_expert():
    """Each expert's Fprop, Dgrad and Wgrad use its own rows only: Wgrad tiles restart at its first token."""
    x = random_activations((sum(GROUP_SIZES) + TRAILING_ROWS, 200), seed=1)  # (M, K)
    w = random_weights((len(GROUP_SIZES), 200, 130), seed=2)  # (G, K, N)
    y, dy, dx, dw = run_ragged("fp8_v3", jnp.asarray(x), jnp.asarray(w))
    for g, rows in enumerate(expert_rows()):
        if rows.stop == rows.start:
            np.testing.assert_array_equal(dw[g], 0.0)
            continue
        check_fp8_v3_gemms(x[rows], w[g], dy[rows], y[rows], dx[rows], dw[g], power_of_two=False)
    np.testing.assert_array_equal(y[-TRAILING_ROWS:], 0.0)
    np.testing.assert_array_equal(dx[-TRAILING_ROWS:], 0.0)


def test_fp8_per_tensor_ragged_dot_matches_numpy():
    x = random_activations((sum(GROUP_SIZES) + TRAILING_ROWS, 200), seed=1)
    w = random_weights((len(GROUP_SIZES), 200, 130), seed=2)
    y, dy, dx, dw = run_ragged("fp8_per_tensor", jnp.asarray(x), jnp.asarray(w))
    qx, qw, qdy = (dequantized(np_quantize_tensor(a)) for a in (x, w, dy))  # one scale per whole tensor
    rows_of = lambda q, rows: (q[0][rows], q[1][rows])
    for g, rows in enumerate(expert_rows()):
        if rows.stop == rows.start:
            np.testing.assert_array_equal(dw[g], 0.0)
            continue
        qw_g = (qw[0][g], qw[1][g])
        assert_gemm(y[rows], x[rows], rows_of(qx, rows), w[g], qw_g)
        assert_gemm(dx[rows], dy[rows], rows_of(qdy, rows), w[g].T, transposed(qw_g))
        assert_gemm(dw[g], x[rows].T, transposed(rows_of(qx, rows)), dy[rows], rows_of(qdy, rows))
    np.testing.assert_array_equal(y[-TRAILING_ROWS:], 0.0)


def test_bf16_ragged_dot_is_plain_ragged_dot():
    """The bf16 recipe is the plain grouped dot (`kernels.xla_ragged_dot`: on CPU the tiled GEMM,
    which tests/nn/test_ragged_tiles.py checks against jax.lax.ragged_dot) in the activation dtype."""
    x = jnp.asarray(random_activations((sum(GROUP_SIZES), 200), seed=1), jnp.bfloat16)
    w = jnp.asarray(random_weights((len(GROUP_SIZES), 200, 130), seed=2))
    y, dy, dx, dw = run_ragged("bf16", x, w)
    group_sizes = jnp.asarray(GROUP_SIZES, jnp.int32)

    def plain(x, w):
        y = xla_ragged_dot(x, w.astype(x.dtype), group_sizes, choice=XLA,
                           preferred_element_type=jnp.float32)
        return y.astype(x.dtype)

    y_ref, vjp_ref = jax.vjp(jax.jit(plain), x, w)
    refs = (y_ref, *vjp_ref(jnp.asarray(dy, jnp.bfloat16)))
    for got, want in zip((y, dx, dw), refs):
        np.testing.assert_array_equal(got, np.asarray(want, np.float32))
