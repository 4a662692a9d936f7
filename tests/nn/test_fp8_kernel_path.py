"""fp8_matmul(kernels="pallas") runs fp8_v3's three GEMMs on pallas_kernels/fp8_block_gemm and
equals the XLA emulation; without a kernel it is the emulation, bit for bit.

The kernel runs in the Mosaic GPU interpreter on CPU (`kernels="pallas_interpret"`); "pallas" is
lowered for CUDA. Both paths compute the same quantized math: identical E4M3 operands and scales,
every product exact in FP32 (4-bit significands), so only the FP32 summation order differs (within
a 128-chunk, and across chunks).
Measured, that is ~6e-8 relative (Frobenius); the tolerance is F32_TOL = 1e-6 relative Frobenius
for FP32 results, ~16x above it and far below any indexing or scaling bug (>= 1e-2). A BF16
result rounds those FP32 values, which can land on opposite sides of a rounding boundary: such an
element differs by one BF16 ulp (at most 2^-7 relative), so BF16 results must agree to a relative
Frobenius error of 2^-7 with at most 1% of their elements differing. The MLP chains three GEMMs
in BF16, where one flipped element can move a 1x128 tile's amax and so re-round a whole tile: it
gets the bound tests/models/test_kernels_in_model.py uses for BF16 kernels, 1e-2 (measured: 0 for
the output and dx, <= 5e-9 for the FP32 weight gradients).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import pallas_kernels._common
import pallas_kernels.fp8_block_gemm
from r1jax import config
from r1jax.nn import kernels
from r1jax.nn.fp8 import fp8_matmul, from_weight_scale_inv, quantize_128x128
from r1jax.nn.mlp import SwiGLU
from tests.pallas_kernels.kernel_testing import (fresh_interpreter_state, lower_for_cuda, mosaic_calls,
                                                  rel_err)

F32_TOL = 1e-6
BF16_ULP = 2.0**-7
MODEL_BF16_TOL = 1e-2


@pytest.fixture
def interpreter():
    with fresh_interpreter_state():
        yield


@pytest.fixture
def gemm_calls(monkeypatch):
    """The distinct GEMMs traced into the kernel, as (a.shape, b.shape, b_scale_rows).

    A set: how often JAX traces one GEMM (custom_vjp fwd, jit caches) is not what is tested.
    """
    calls = set()
    kernel = pallas_kernels.fp8_block_gemm.fp8_block_gemm

    def counted(a, a_scale, b, b_scale, **kwargs):
        calls.add((a.shape, b.shape, kwargs["b_scale_rows"]))
        return kernel(a, a_scale, b, b_scale, **kwargs)

    monkeypatch.setattr(pallas_kernels.fp8_block_gemm, "fp8_block_gemm", counted)
    jax.clear_caches()  # a jit cache entry from another test would skip the trace
    return calls


def _inputs(x_shape, w_shape, dtype, seed=0):
    kx, kw, kd = jax.random.split(jax.random.key(seed), 3)
    x = jax.random.normal(kx, x_shape, jnp.float32).astype(dtype)
    w = jax.random.normal(kw, w_shape, jnp.float32) * 0.05  # FP32 master weight
    dy = jax.random.normal(kd, (*x_shape[:-1], w_shape[-1]), jnp.float32).astype(dtype)
    return x, w, dy


def _y_dx_dw(x, w, dy, kernels_choice, power_of_two=False):
    f = lambda x, w: fp8_matmul(x, w, "fp8_v3", kernels=kernels_choice, power_of_two_scales=power_of_two)
    y, vjp = jax.vjp(f, x, w)
    return (y, *vjp(dy))


def _assert_same_math(got, ref):
    assert got.shape == ref.shape and got.dtype == ref.dtype
    if ref.dtype == jnp.float32:
        assert rel_err(got, ref) <= F32_TOL
        return
    assert rel_err(got, ref) <= BF16_ULP
    assert np.mean(np.asarray(got != ref)) <= 0.01


@pytest.mark.parametrize(
    "x_shape,w_shape,dtype,power_of_two",
    [
        ((100, 200), (200, 150), jnp.float32, False),  # (K, N) weight, ragged M, K, N
        ((2, 70, 130), (2, 130, 260), jnp.float32, False),  # (B, K, N): B vmapped into the grid
        ((3, 50, 200), (200, 140), jnp.bfloat16, True),  # ue8m0 scales, BF16 activations
    ],
)
def test_kernel_matches_emulation(x_shape, w_shape, dtype, power_of_two, interpreter, gemm_calls):
    x, w, dy = _inputs(x_shape, w_shape, dtype)
    ref = _y_dx_dw(x, w, dy, "xla", power_of_two)
    assert not gemm_calls
    got = _y_dx_dw(x, w, dy, "pallas_interpret", power_of_two)
    for g, r in zip(got, ref):
        _assert_same_math(g, r)
    # Fprop, Dgrad and Wgrad all ran on the kernel, with the operands of fp8.py's docstring.
    k, n = w_shape[-2:]
    m = int(np.prod(x_shape[:-1])) // (w_shape[0] if len(w_shape) == 3 else 1)  # tokens per batch
    kp, np_, mp = (-(-d // 128) * 128 for d in (k, n, m))  # padded to whole 128-chunks
    assert gemm_calls == {((m, kp), (np_, kp), False),  # Fprop: x (1x128) @ (W^T in 128x128 blocks)
                          ((m, np_), (kp, np_), False),  # Dgrad: dy (1x128) @ (W in the same blocks)
                          ((k, mp), (n, mp), True)}  # Wgrad: x^T @ dy^T^T, both 1x128 along tokens


def test_prequantized_weight_on_the_kernel(interpreter, gemm_calls):
    x, w, dy = _inputs((90, 200), (200, 150), jnp.float32, seed=1)
    hf = quantize_128x128(w.T)  # a checkpoint's (out, in) E4M3 weight and its weight_scale_inv
    qw = from_weight_scale_inv(hf.values[:150, :200], hf.scales)  # (K, N) = (200, 150)

    def y_dx(kernels_choice):
        y, vjp = jax.vjp(lambda x: fp8_matmul(x, qw, "fp8_v3", kernels=kernels_choice), x)
        return (y, *vjp(dy))

    ref = y_dx("xla")
    got = y_dx("pallas_interpret")
    for g, r in zip(got, ref):
        _assert_same_math(g, r)
    # Fprop (x @ W^T) and Dgrad (dy @ W) have the same operand shapes here: K, N both pad to 256.
    assert gemm_calls == {((90, 256), (256, 256), False)}


def test_pallas_without_a_kernel_is_the_emulation(gemm_calls):
    # CPU: fp8_block_gemm's platform rule (sm_90) sends kernels="pallas" to the emulation.
    assert kernels.block_scaled_gemm_choice(kernels.kernel_choice("pallas")) == kernels.XLA
    x, w, dy = _inputs((2, 40, 200), (2, 200, 150), jnp.bfloat16, seed=2)
    for got, ref in zip(_y_dx_dw(x, w, dy, "pallas"), _y_dx_dw(x, w, dy, "xla")):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(ref))
    assert not gemm_calls
    with pytest.raises(ValueError, match=r"kernels='triton' must be one of \('xla', 'pallas', "):
        fp8_matmul(x, w, "fp8_v3", kernels="triton")


def test_model_mlp_matches_xla(interpreter, gemm_calls):
    interpret_cfg = config.tiny(precision="fp8_v3", dtype="bfloat16", kernels="pallas_interpret")

    def build(cfg):
        return SwiGLU(cfg.hidden_size, cfg.intermediate_size, std=cfg.init_std,
                      param_dtype=cfg.param_dtype, rngs=nnx.Rngs(0), precision=cfg.precision,
                      kernels=cfg.kernels)

    x = jax.random.normal(jax.random.key(3), (2, 24, interpret_cfg.hidden_size), jnp.bfloat16)  # (B, T, D)

    def output_and_grads(cfg):
        graph, params = nnx.split(build(cfg))

        def loss(params, x):
            y = nnx.merge(graph, params)(x)  # (B, T, D)
            return jnp.mean(jnp.square(y.astype(jnp.float32))), y

        (_, y), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(params, x)
        return y, grads

    y_ref, grads_ref = output_and_grads(interpret_cfg.replace(kernels="xla"))
    y, grads = output_and_grads(interpret_cfg)
    d, f, tokens = interpret_cfg.hidden_size, interpret_cfg.intermediate_size, x.shape[0] * x.shape[1]
    assert (d, f, tokens) == (64, 128, 48)  # D and M pad to one 128-chunk, F is one
    # Fprop and Dgrad of gate, up and down (all (48, 128) @ (128, 128)^T once padded), then the
    # Wgrads of gate/up (x^T dy: (D, M) @ (F, M)^T) and of down (h^T dy: (F, M) @ (D, M)^T).
    assert gemm_calls == {((48, 128), (128, 128), False), ((64, 128), (128, 128), True),
                          ((128, 128), (64, 128), True)}
    assert rel_err(y, y_ref) <= MODEL_BF16_TOL
    for g, r in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_ref), strict=True):
        assert rel_err(g, r) <= MODEL_BF16_TOL


@pytest.mark.parametrize("batch", [(), (2,)])  # w (K, N) and (B, K, N)
def test_lowers_for_hopper(batch, monkeypatch):
    """On an sm_90 GPU (faked on this host) fwd + bwd lower to one Mosaic GPU kernel per GEMM."""
    monkeypatch.setattr(pallas_kernels._common, "on_hopper", lambda: True)
    x = jax.ShapeDtypeStruct((*batch, 256, 384), jnp.bfloat16)  # (B, M, K)
    w = jax.ShapeDtypeStruct((*batch, 384, 512), jnp.float32)  # (B, K, N)

    def loss(x, w):
        return fp8_matmul(x, w, "fp8_v3", kernels="pallas").astype(jnp.float32).sum()

    # The value keeps Fprop alive; a fresh function per lowering, so no jit cache entry is reused.
    fwd_bwd = lambda: jax.value_and_grad(loss, argnums=(0, 1))
    assert mosaic_calls(lower_for_cuda(fwd_bwd(), x, w)) == 3  # Fprop, Dgrad, Wgrad
    monkeypatch.setattr(pallas_kernels._common, "on_hopper", lambda: False)
    assert mosaic_calls(lower_for_cuda(fwd_bwd(), x, w)) == 0
