"""grouped_matmul: interpreter vs reference (forward and custom_vjp gradients), lowering, dispatch."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels import grouped_matmul as gmm
from pallas_kernels.grouped_matmul import mosaic_gpu, reference
from tests.pallas_kernels.kernel_testing import (
    BF16_TOL, lower_for_cuda, mosaic_calls, record_kernel_runs, rel_err)

SMALL = gmm.BlockSizes(block_m=64, block_n=64, block_k=64, max_concurrent_steps=2)


def _operands(m, k, n, group_sizes, seed=0):
  kx, kw, kd = jax.random.split(jax.random.key(seed), 3)
  x = jax.random.normal(kx, (m, k), jnp.bfloat16)
  w = (jax.random.normal(kw, (len(group_sizes), k, n), jnp.float32) * k ** -0.5).astype(jnp.bfloat16)
  dout = jax.random.normal(kd, (m, n), jnp.float32)
  return x, w, jnp.asarray(group_sizes, jnp.int32), dout


# Ragged cases: empty groups (first, middle, last), M not a multiple of the tile,
# rows past sum(group_sizes) (they must come out zero), K and N not tile multiples.
CASES = [
    (150, 256, 64, [70, 0, 50, 30]),  # 4 K steps through a 2-slot ring
    (64, 64, 128, [0, 64, 0]),
    (97, 96, 80, [10, 1, 63, 0]),  # 23 trailing rows in no group
]


@pytest.mark.parametrize("m,k,n,group_sizes", CASES)
def test_interpret_forward_matches_reference(m, k, n, group_sizes, interpret):
  x, w, gs, _ = _operands(m, k, n, group_sizes)
  out = gmm.grouped_matmul(x, w, gs, implementation="mosaic_gpu", block_sizes=SMALL, interpret=interpret)
  ref = reference.grouped_matmul(x, w, gs, preferred_element_type=jnp.float32)
  assert out.shape == (m, n) and out.dtype == jnp.bfloat16
  assert rel_err(out, ref) <= BF16_TOL
  tail = int(sum(group_sizes))
  np.testing.assert_array_equal(np.asarray(out[tail:], np.float32), 0.0)


def test_interpret_gradients_match_reference(race_checked_interpret):
  x, w, gs, dout = _operands(230, 128, 64, [140, 0, 50, 20])  # group 0 spans 3 tiles: ring reuse in tgmm

  def loss(f):
    return lambda x, w: jnp.sum(f(x, w).astype(jnp.float32) * dout)

  kernel = loss(lambda x, w: gmm.grouped_matmul(x, w, gs, implementation="mosaic_gpu", block_sizes=SMALL,
                                                 interpret=race_checked_interpret))
  ref = loss(lambda x, w: reference.grouped_matmul(x.astype(jnp.float32), w.astype(jnp.float32), gs))
  dx, dw = jax.grad(kernel, argnums=(0, 1))(x, w)
  rdx, rdw = jax.grad(ref, argnums=(0, 1))(x, w)
  assert rel_err(dx, rdx) <= BF16_TOL
  assert rel_err(dw, rdw) <= BF16_TOL
  np.testing.assert_array_equal(np.asarray(dw[1], np.float32), 0.0)  # the empty group gets no gradient
  np.testing.assert_array_equal(np.asarray(dx[210:], np.float32), 0.0)  # rows in no group


def test_tile_layout_places_every_row_once():
  gs = jnp.array([5, 0, 130, 1], jnp.int32)
  layout, num_tiles = mosaic_gpu.tile_layout(gs, 140, 64)
  assert num_tiles == 3 + 4
  np.testing.assert_array_equal(layout.tile_start, [0, 1, 1, 4, 5])
  np.testing.assert_array_equal(layout.tile_group, [0, 2, 2, 2, 3, -1, -1])  # unused tail tiles: -1
  p2r = np.asarray(layout.padded_to_row)
  r2p = np.asarray(layout.row_to_padded)
  np.testing.assert_array_equal(p2r[r2p[:136]], np.arange(136))  # every grouped row round-trips
  assert np.all(r2p[136:] == num_tiles * 64)  # rows past the groups read the zero row
  assert sorted(p2r[p2r < 140].tolist()) == list(range(136))


def test_lowers_for_cuda_forward_and_backward(hopper):
  m, k, n, g = 512, 256, 256, 4
  x = jax.ShapeDtypeStruct((m, k), jnp.bfloat16)
  w = jax.ShapeDtypeStruct((g, k, n), jnp.bfloat16)
  gs = jax.ShapeDtypeStruct((g,), jnp.int32)

  def fwd_bwd(x, w, gs):
    f = lambda x, w: jnp.sum(gmm.grouped_matmul(x, w, gs, implementation="mosaic_gpu").astype(jnp.float32))
    return jax.value_and_grad(f, argnums=(0, 1))(x, w)  # value keeps the forward kernel live

  text = lower_for_cuda(fwd_bwd, x, w, gs)
  assert mosaic_calls(text) == 3  # forward, dgrad, wgrad


def test_xla_dispatch_and_validation():
  x, w, gs, _ = _operands(40, 32, 16, [10, 30])
  out = gmm.grouped_matmul(x, w, gs, implementation="xla")
  np.testing.assert_array_equal(out, jax.lax.ragged_dot(x, w, gs))
  with pytest.raises(ValueError, match="group_sizes.shape"):
    gmm.grouped_matmul(x, w, gs[:1])
  with pytest.raises(ValueError, match="lhs.shape"):
    gmm.grouped_matmul(x[:, :8], w, gs)


@pytest.fixture
def kernel_runs(monkeypatch):
  """The calls that reach the Mosaic GPU kernel (not ragged_dot)."""
  return record_kernel_runs(monkeypatch, mosaic_gpu, "grouped_matmul")


def test_implementation_none_runs_the_kernel_where_it_supports_the_call(interpret, kernel_runs):
  x, w, gs, _ = _operands(64, 64, 64, [40, 24])
  out = gmm.grouped_matmul(x, w, gs, block_sizes=SMALL, interpret=interpret)
  assert kernel_runs == [x.shape]
  assert rel_err(out, reference.grouped_matmul(x, w, gs, preferred_element_type=jnp.float32)) <= BF16_TOL


@pytest.mark.parametrize("dtype,device,rule", [
    (jnp.float32, "interpreter", r"lhs.dtype=float32 must be bfloat16"),
    (jnp.bfloat16, "not hopper", r"compiles for sm_90 \(Hopper\) only"),
])
def test_unsupported_calls_take_ragged_dot(dtype, device, rule, interpret, not_hopper, kernel_runs):
  """implementation=None gives jax.lax.ragged_dot where check_support names a rule the call
  breaks; implementation="mosaic_gpu" raises that rule."""
  x, w, gs, _ = _operands(40, 32, 16, [10, 30])
  x, w = x.astype(dtype), w.astype(dtype)
  kwargs = dict(block_sizes=SMALL, interpret=interpret if device == "interpreter" else None)
  np.testing.assert_array_equal(gmm.grouped_matmul(x, w, gs, **kwargs), jax.lax.ragged_dot(x, w, gs))
  with pytest.raises(NotImplementedError, match=rule):
    gmm.grouped_matmul(x, w, gs, implementation="mosaic_gpu", **kwargs)
  assert not kernel_runs


@pytest.mark.gpu
def test_gpu_forward_and_gradients_match_reference():
  x, w, gs, dout = _operands(2048, 1024, 512, [512, 0, 700, 300, 536, 0, 0, 0])
  f = lambda x, w: jnp.sum(gmm.grouped_matmul(x, w, gs, implementation="mosaic_gpu").astype(jnp.float32) * dout)
  r = lambda x, w: jnp.sum(reference.grouped_matmul(x.astype(jnp.float32), w.astype(jnp.float32), gs) * dout)
  assert rel_err(gmm.grouped_matmul(x, w, gs, implementation="mosaic_gpu"),
                 reference.grouped_matmul(x, w, gs, preferred_element_type=jnp.float32)) <= BF16_TOL
  for got, want in zip(jax.grad(f, argnums=(0, 1))(x, w), jax.grad(r, argnums=(0, 1))(x, w)):
    assert rel_err(got, want) <= BF16_TOL
