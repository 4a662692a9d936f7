"""fp8_block_gemm: interpreter vs reference, CUDA lowering, API dispatch, real-GPU parity.

Both scale layouts of b: 128x128 blocks (Fprop, Dgrad) and, with `b_scale_rows=True`, one scale
per row per 128-chunk (Wgrad, where both operands are 1x128 activation tiles).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels import fp8_block_gemm as fp8
from pallas_kernels.fp8_block_gemm import mosaic_gpu, reference
from tests.pallas_kernels.kernel_testing import (
    BF16_TOL, F32_TOL, lower_for_cuda, mosaic_calls, record_kernel_runs, rel_err)

SMALL = fp8.BlockSizes(block_m=64, block_n=64, max_concurrent_steps=2)


def _operands(m, n, k, seed=0):
  kx, kw = jax.random.split(jax.random.key(seed))
  x = jax.random.normal(kx, (m, k), jnp.float32)
  w = jax.random.normal(kw, (n, k), jnp.float32) * 0.05
  a, a_scale = fp8.quantize_1x128(x)
  b, b_scale = fp8.quantize_128x128(w)
  return a, a_scale, b, b_scale


def _row_operands(m, n, k, seed=0):
  """Wgrad-like operands: both quantized in 1x128 tiles along K, so b_scale is (N, ceil(K/128))."""
  kx, kdy = jax.random.split(jax.random.key(seed))
  a, a_scale = fp8.quantize_1x128(jax.random.normal(kx, (m, k), jnp.float32))
  b, b_scale = fp8.quantize_1x128(jax.random.normal(kdy, (n, k), jnp.float32) * 0.05)
  return a, a_scale, b, b_scale


def test_quantizers_roundtrip():
  x = jax.random.normal(jax.random.key(0), (32, 300), jnp.float32)
  w = jax.random.normal(jax.random.key(1), (200, 300), jnp.float32)
  a, a_scale = fp8.quantize_1x128(x)
  b, b_scale = fp8.quantize_128x128(w)
  assert a.shape == (32, 300) and a_scale.shape == (32, 3)
  assert b.shape == (200, 300) and b_scale.shape == (2, 3)
  deq_a = a.astype(jnp.float32) * jnp.repeat(a_scale, 128, axis=1)[:, :300]
  deq_b = b.astype(jnp.float32) * jnp.repeat(jnp.repeat(b_scale, 128, axis=0), 128, axis=1)[:200, :300]
  assert rel_err(deq_a, x) < 0.05  # e4m3 keeps 3 mantissa bits
  assert rel_err(deq_b, w) < 0.05


@pytest.mark.parametrize("m,n,k", [(64, 64, 128), (100, 192, 300), (8, 128, 256)])
def test_interpret_fp32_out_matches_reference(m, n, k, interpret):
  a, a_scale, b, b_scale = _operands(m, n, k)
  out = fp8.fp8_block_gemm(a, a_scale, b, b_scale, out_dtype=jnp.float32, implementation="mosaic_gpu",
                           block_sizes=SMALL, interpret=interpret)
  ref = reference.fp8_block_gemm(a, a_scale, b, b_scale, out_dtype=jnp.float32)
  assert out.shape == (m, n) and out.dtype == jnp.float32
  assert rel_err(out, ref) <= F32_TOL


def test_interpret_bf16_out_no_races(race_checked_interpret):
  a, a_scale, b, b_scale = _operands(64, 128, 384, seed=1)
  out = fp8.fp8_block_gemm(a, a_scale, b, b_scale, implementation="mosaic_gpu",
                           block_sizes=fp8.BlockSizes(64, 128, 2), interpret=race_checked_interpret)
  ref = reference.fp8_block_gemm(a, a_scale, b, b_scale, out_dtype=jnp.float32)
  assert out.dtype == jnp.bfloat16
  assert rel_err(out, ref) <= BF16_TOL


def test_scales_are_applied_per_chunk(interpret):
  # Different scales in the two K chunks: a kernel that scaled once at the end would be wrong.
  a, a_scale, b, b_scale = _operands(64, 64, 256, seed=2)
  a_scale = a_scale * jnp.array([1.0, 8.0])
  b_scale = b_scale * jnp.array([[3.0, 0.25]])
  out = fp8.fp8_block_gemm(a, a_scale, b, b_scale, out_dtype=jnp.float32, implementation="mosaic_gpu",
                           block_sizes=SMALL, interpret=interpret)
  ref = reference.fp8_block_gemm(a, a_scale, b, b_scale, out_dtype=jnp.float32)
  assert rel_err(out, ref) <= F32_TOL


def test_reference_matches_dequantized_matmul():
  a, a_scale, b, b_scale = _operands(48, 130, 260, seed=3)
  deq_a = a.astype(jnp.float32) * jnp.repeat(a_scale, 128, axis=1)[:, :260]
  deq_b = b.astype(jnp.float32) * jnp.repeat(jnp.repeat(b_scale, 128, axis=0), 128, axis=1)[:130, :260]
  expected = jnp.dot(deq_a, deq_b.T, precision=jax.lax.Precision.HIGHEST)
  got = reference.fp8_block_gemm(a, a_scale, b, b_scale, out_dtype=jnp.float32)
  assert rel_err(got, expected) <= F32_TOL


def test_lowers_for_cuda(hopper):
  m, n, k = 256, 512, 1024
  args = (jax.ShapeDtypeStruct((m, k), jnp.float8_e4m3fn), jax.ShapeDtypeStruct((m, k // 128), jnp.float32),
          jax.ShapeDtypeStruct((n, k), jnp.float8_e4m3fn), jax.ShapeDtypeStruct((n // 128, k // 128), jnp.float32))
  text = lower_for_cuda(lambda *x: fp8.fp8_block_gemm(*x, implementation="mosaic_gpu"), *args)
  assert mosaic_calls(text) == 1


def test_xla_dispatch_and_validation():
  a, a_scale, b, b_scale = _operands(16, 64, 128)
  out = fp8.fp8_block_gemm(a, a_scale, b, b_scale, implementation="xla")
  np.testing.assert_array_equal(out, reference.fp8_block_gemm(a, a_scale, b, b_scale))
  if jax.devices()[0].platform == "cpu":  # None means XLA off Hopper
    np.testing.assert_array_equal(fp8.fp8_block_gemm(a, a_scale, b, b_scale), out)
  with pytest.raises(ValueError, match="implementation"):
    fp8.fp8_block_gemm(a, a_scale, b, b_scale, implementation="triton")
  with pytest.raises(ValueError, match="a_scale.shape"):
    fp8.fp8_block_gemm(a, a_scale[:, :0], b, b_scale)
  with pytest.raises(ValueError, match="float8_e4m3fn"):
    fp8.fp8_block_gemm(a.astype(jnp.bfloat16), a_scale, b, b_scale)


@pytest.fixture
def kernel_runs(monkeypatch):
  """The calls that reach the Mosaic GPU kernel (not the reference)."""
  return record_kernel_runs(monkeypatch, mosaic_gpu, "fp8_block_gemm")


def test_implementation_none_runs_the_kernel_in_the_interpreter(interpret, kernel_runs):
  a, a_scale, b, b_scale = _operands(64, 64, 128)
  out = fp8.fp8_block_gemm(a, a_scale, b, b_scale, out_dtype=jnp.float32, block_sizes=SMALL,
                           interpret=interpret)
  assert kernel_runs == [a.shape]
  assert rel_err(out, reference.fp8_block_gemm(a, a_scale, b, b_scale, out_dtype=jnp.float32)) <= F32_TOL


def test_off_hopper_takes_the_reference(not_hopper, kernel_runs):
  """Compiled, the kernel runs on sm_90 only: implementation=None gives the reference elsewhere,
  implementation="mosaic_gpu" raises the platform rule."""
  a, a_scale, b, b_scale = _operands(16, 64, 128)
  np.testing.assert_array_equal(fp8.fp8_block_gemm(a, a_scale, b, b_scale),
                                reference.fp8_block_gemm(a, a_scale, b, b_scale))
  with pytest.raises(NotImplementedError, match=r"compiles for sm_90 \(Hopper\) only.*interpret="):
    fp8.fp8_block_gemm(a, a_scale, b, b_scale, implementation="mosaic_gpu")
  assert not kernel_runs


@pytest.mark.parametrize("m,n,k", [(64, 64, 128), (100, 130, 300), (8, 192, 256)])
def test_interpret_row_scales_match_reference(m, n, k, interpret):
  a, a_scale, b, b_scale = _row_operands(m, n, k)
  assert b_scale.shape == (n, -(-k // 128))
  out = fp8.fp8_block_gemm(a, a_scale, b, b_scale, out_dtype=jnp.float32, b_scale_rows=True,
                           implementation="mosaic_gpu", block_sizes=SMALL, interpret=interpret)
  ref = reference.fp8_block_gemm(a, a_scale, b, b_scale, out_dtype=jnp.float32, b_scale_rows=True)
  assert out.shape == (m, n) and out.dtype == jnp.float32
  assert rel_err(out, ref) <= F32_TOL


def test_interpret_row_scales_no_races(race_checked_interpret):
  a, a_scale, b, b_scale = _row_operands(64, 128, 384, seed=1)
  out = fp8.fp8_block_gemm(a, a_scale, b, b_scale, b_scale_rows=True, implementation="mosaic_gpu",
                           block_sizes=fp8.BlockSizes(64, 128, 2), interpret=race_checked_interpret)
  ref = reference.fp8_block_gemm(a, a_scale, b, b_scale, out_dtype=jnp.float32, b_scale_rows=True)
  assert out.dtype == jnp.bfloat16
  assert rel_err(out, ref) <= BF16_TOL


def test_interpret_vmaps_over_a_batch(interpret):
  # plgpu.kernel's batching rule adds a grid axis: one launch for a stack of GEMMs.
  ops = [_row_operands(64, 64, 256, seed=s) for s in (4, 5)]
  a, a_scale, b, b_scale = (jnp.stack(xs) for xs in zip(*ops))  # (2, ...)
  gemm = lambda *x: fp8.fp8_block_gemm(*x, out_dtype=jnp.float32, b_scale_rows=True,
                                       implementation="mosaic_gpu", block_sizes=SMALL,
                                       interpret=interpret)
  out = jax.vmap(gemm)(a, a_scale, b, b_scale)  # (2, 64, 64)
  for i, op in enumerate(ops):
    ref = reference.fp8_block_gemm(*op, out_dtype=jnp.float32, b_scale_rows=True)
    assert rel_err(out[i], ref) <= F32_TOL


def test_reference_row_scales_match_float64():
  a, a_scale, b, b_scale = _row_operands(48, 130, 260, seed=3)
  a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)  # e4m3 values are exact in f64
  deq_a = a64 * np.repeat(np.asarray(a_scale, np.float64), 128, axis=1)[:, :260]
  deq_b = b64 * np.repeat(np.asarray(b_scale, np.float64), 128, axis=1)[:, :260]
  got = reference.fp8_block_gemm(a, a_scale, b, b_scale, out_dtype=jnp.float32, b_scale_rows=True)
  assert rel_err(got, deq_a @ deq_b.T) <= F32_TOL


def test_row_scales_lower_for_cuda(hopper):
  m, n, k = 256, 512, 1024
  args = (jax.ShapeDtypeStruct((m, k), jnp.float8_e4m3fn), jax.ShapeDtypeStruct((m, k // 128), jnp.float32),
          jax.ShapeDtypeStruct((n, k), jnp.float8_e4m3fn), jax.ShapeDtypeStruct((n, k // 128), jnp.float32))
  gemm = lambda *x: fp8.fp8_block_gemm(*x, b_scale_rows=True, implementation="mosaic_gpu")
  assert mosaic_calls(lower_for_cuda(gemm, *args)) == 1
  batched = [jax.ShapeDtypeStruct((3, *x.shape), x.dtype) for x in args]
  assert mosaic_calls(lower_for_cuda(jax.vmap(gemm), *batched)) == 1  # one launch, batch in the grid


def test_row_scale_validation():
  a, a_scale, b, b_scale = _row_operands(16, 200, 128)
  with pytest.raises(ValueError, match=r"b_scale.shape=\(200, 1\) must be \(ceil\(N/128\)"):
    fp8.fp8_block_gemm(a, a_scale, b, b_scale)  # per-row scales without b_scale_rows
  with pytest.raises(ValueError, match=r"must be \(N, ceil\(K/128\)\) = \(200, 1\)"):
    fp8.fp8_block_gemm(a, a_scale, b, b_scale[:128], b_scale_rows=True)


@pytest.mark.gpu
def test_gpu_row_scales_match_reference():
  a, a_scale, b, b_scale = _row_operands(1024, 512, 2048)
  out = fp8.fp8_block_gemm(a, a_scale, b, b_scale, out_dtype=jnp.float32, b_scale_rows=True,
                           implementation="mosaic_gpu")
  ref = reference.fp8_block_gemm(a, a_scale, b, b_scale, out_dtype=jnp.float32, b_scale_rows=True)
  assert rel_err(out, ref) <= F32_TOL


@pytest.mark.gpu
def test_gpu_matches_reference():
  a, a_scale, b, b_scale = _operands(512, 1024, 2048)
  out = fp8.fp8_block_gemm(a, a_scale, b, b_scale, out_dtype=jnp.float32, implementation="mosaic_gpu")
  ref = reference.fp8_block_gemm(a, a_scale, b, b_scale, out_dtype=jnp.float32)
  assert rel_err(out, ref) <= F32_TOL
