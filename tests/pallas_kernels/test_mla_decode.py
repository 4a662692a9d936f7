"""mla_decode: interpreter vs reference (ragged lengths, start offsets, Tq > 1, split-K), the
reference vs float64 numpy, lowering, dispatch."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pallas_kernels._common
from pallas_kernels import mla_decode as dec
from pallas_kernels.mla_decode import mosaic_gpu, reference
from tests.pallas_kernels.kernel_testing import (
    BF16_TOL, F32_TOL, lower_for_cuda, mosaic_calls, record_kernel_runs, rel_err)

# Reduced dims keep the interpreter fast; the real 512/64 dims are exercised by the lowering test.
# The interpreter runs the SMEM-staged P path (it has no rule for register wgmma operands).
LATENT, ROPE = 128, 64
SMALL = dec.BlockSizes(block_q=64, block_kv=64, block_dv=64, num_splits=2, p_in_registers=False)


def _operands(b, tq, h, s, seed=0, latent=LATENT, rope=ROPE):
  kq, kc, kr = jax.random.split(jax.random.key(seed), 3)
  q = jax.random.normal(kq, (b, tq, h, latent + rope), jnp.bfloat16)
  c_kv = jax.random.normal(kc, (b, s, latent), jnp.bfloat16)
  k_rope = jax.random.normal(kr, (b, s, rope), jnp.bfloat16)
  return q, c_kv, k_rope


@pytest.mark.parametrize("b,tq,h,s,lengths", [
    (2, 1, 32, 320, [320, 70]),  # two splits of 3 blocks (ring reuse), ragged second row
    (2, 2, 16, 100, [77, 1]),  # Tq=2 causal; row 1 query 0 sees no key; S not a block multiple
    (1, 3, 8, 192, [150]),  # Tq*H = 24 rows padded to one 64-row block; three splits of one block
])
def test_interpret_matches_reference(b, tq, h, s, lengths, interpret):
  q, c_kv, k_rope = _operands(b, tq, h, s)
  lengths = jnp.asarray(lengths, jnp.int32)
  scale = (LATENT + ROPE) ** -0.5
  blocks = SMALL if s != 192 else dec.BlockSizes(64, 64, 64, 3, p_in_registers=False)
  out = dec.mla_decode(q, c_kv, k_rope, lengths, softmax_scale=scale, latent_dim=LATENT,
                       implementation="mosaic_gpu", block_sizes=blocks, interpret=interpret)
  ref = reference.mla_decode(q.astype(jnp.float32), c_kv, k_rope, lengths, softmax_scale=scale, latent_dim=LATENT)
  assert out.shape == (b, tq, h, LATENT) and out.dtype == jnp.bfloat16
  assert rel_err(out, ref) <= BF16_TOL


def _random_rows(b, s, seed):
  """Lengths and starts drawn over [0, S]: some starts land past their row's length (empty rows)."""
  rng = np.random.default_rng(seed)
  return rng.integers(0, s + 1, b).tolist(), rng.integers(0, s + 1, b).tolist()


def _poison_unread_blocks(x, lengths, starts, block_kv):
  """x (B, S, C) with NaN in every whole block outside [start_block, end_block) of its row, and
  in all of an empty row (start >= length).

  A NaN key that reached the kernel would come out through P @ V (0 * NaN), so a finite output
  shows those blocks were never fetched: left padding costs no bandwidth.
  """
  block = jnp.arange(x.shape[1]) // block_kv  # (S,)
  first, end = starts // block_kv, -(-lengths // block_kv)  # (B,)
  fetched = (block[None] >= first[:, None]) & (block[None] < end[:, None])  # (B, S)
  fetched &= (starts < lengths)[:, None]
  return jnp.where(fetched[..., None], x, jnp.nan)


@pytest.mark.parametrize("b,tq,h,s,lengths,starts", [
    # Block 0 untouched, start inside block 1; start on a block's last slot; start past the length
    # (no visible key: zeros); a full row for contrast. Each row's blocks are split over 2 CTAs.
    (4, 1, 32, 320, [320, 300, 130, 320], [75, 63, 150, 0]),
    # Start in the last block (one block for two splits); Tq=3: row 1 queries 0 and 1 see nothing.
    (2, 3, 16, 200, [200, 90], [190, 89]),
    (6, 1, 16, 256, *_random_rows(6, 256, seed=4)),
])
def test_interpret_with_starts_matches_reference(b, tq, h, s, lengths, starts, interpret):
  q, c_kv, k_rope = _operands(b, tq, h, s, seed=2)
  lengths, starts = jnp.asarray(lengths, jnp.int32), jnp.asarray(starts, jnp.int32)
  scale = (LATENT + ROPE) ** -0.5
  poisoned = [_poison_unread_blocks(x, lengths, starts, SMALL.block_kv) for x in (c_kv, k_rope)]
  out = dec.mla_decode(q, *poisoned, lengths, starts, softmax_scale=scale, latent_dim=LATENT,
                       implementation="mosaic_gpu", block_sizes=SMALL, interpret=interpret)
  ref = reference.mla_decode(q.astype(jnp.float32), c_kv, k_rope, lengths, starts, softmax_scale=scale,
                             latent_dim=LATENT)
  assert rel_err(out, ref) <= BF16_TOL  # also asserts a finite output
  empty = ~reference.visible_keys(lengths, tq, s, starts).any(-1)  # (B, Tq)
  np.testing.assert_array_equal(np.asarray(out, np.float32)[np.asarray(empty)], 0.0)


@pytest.mark.parametrize("start,length,want", [
    (75, 300, [(1, 2), (3, 2)]),  # blocks 1-4 of a 320-slot cache: two each, block 0 skipped
    (300, 320, [(4, 1), (5, 0)]),  # start in the last block: one block, the other split idles
    (150, 130, [(2, 0), (2, 0)]),  # start past the length: nothing fetched
    (0, 320, [(0, 3), (3, 2)]),
])
def test_split_blocks_cover_only_the_rows_blocks(start, length, want):
  got = [tuple(int(x) for x in mosaic_gpu.split_blocks(jnp.int32(start), jnp.int32(length), jnp.int32(i),
                                                       block_kv=64, num_splits=2)) for i in range(2)]
  assert got == want


def test_reference_with_starts_matches_float64_numpy():
  b, tq, h, s, latent, rope, scale = 3, 2, 4, 40, 16, 8, 0.3
  rng = np.random.default_rng(5)
  q = rng.standard_normal((b, tq, h, latent + rope)).astype(np.float32)
  c_kv = rng.standard_normal((b, s, latent)).astype(np.float32)
  k_rope = rng.standard_normal((b, s, rope)).astype(np.float32)
  lengths, starts = np.array([40, 25, 12]), np.array([7, 0, 12])  # row 2 sees nothing
  out = reference.mla_decode(jnp.asarray(q), jnp.asarray(c_kv), jnp.asarray(k_rope), jnp.asarray(lengths),
                             jnp.asarray(starts), softmax_scale=scale, latent_dim=latent)
  want = np.zeros((b, tq, h, latent))
  q64, c64, r64 = q.astype(np.float64), c_kv.astype(np.float64), k_rope.astype(np.float64)
  for i in range(b):
    for t in range(tq):
      keys = np.arange(starts[i], lengths[i] - tq + 1 + t)  # the visible slots, written out
      if keys.size:
        scores = (q64[i, t, :, :latent] @ c64[i, keys].T + q64[i, t, :, latent:] @ r64[i, keys].T) * scale
        p = np.exp(scores - scores.max(-1, keepdims=True))  # (H, keys)
        want[i, t] = (p / p.sum(-1, keepdims=True)) @ c64[i, keys]
  assert rel_err(out, want) <= F32_TOL
  np.testing.assert_array_equal(np.asarray(out[2]), 0.0)


def test_interpret_no_races_and_empty_rows_are_zero(race_checked_interpret):
  q, c_kv, k_rope = _operands(1, 2, 32, 128, seed=1)
  lengths = jnp.array([1], jnp.int32)  # query 0 (of 2) sees nothing, query 1 sees key 0
  out = dec.mla_decode(q, c_kv, k_rope, lengths, softmax_scale=0.1, latent_dim=LATENT,
                       implementation="mosaic_gpu", block_sizes=SMALL, interpret=race_checked_interpret)
  np.testing.assert_array_equal(np.asarray(out[0, 0], np.float32), 0.0)
  want = jnp.broadcast_to(c_kv[0, 0], (32, LATENT))  # a single visible key: its value, exactly
  np.testing.assert_array_equal(np.asarray(out[0, 1]), np.asarray(want))


def test_interpret_no_races_with_starts(race_checked_interpret):
  q, c_kv, k_rope = _operands(2, 2, 32, 192, seed=3)
  # Row 0: slots [70, 190) are blocks 1 and 2, one per split, the start inside block 1.
  # Row 1: the single slot 100 is valid; query 0 sees nothing, query 1 sees exactly that key.
  lengths, starts = jnp.array([190, 101], jnp.int32), jnp.array([70, 100], jnp.int32)
  out = dec.mla_decode(q, c_kv, k_rope, lengths, starts, softmax_scale=0.1, latent_dim=LATENT,
                       implementation="mosaic_gpu", block_sizes=SMALL, interpret=race_checked_interpret)
  ref = reference.mla_decode(q.astype(jnp.float32), c_kv, k_rope, lengths, starts, softmax_scale=0.1,
                             latent_dim=LATENT)
  assert rel_err(out[0], ref[0]) <= BF16_TOL
  np.testing.assert_array_equal(np.asarray(out[1, 0], np.float32), 0.0)
  np.testing.assert_array_equal(np.asarray(out[1, 1]), np.asarray(jnp.broadcast_to(c_kv[1, 100], (32, LATENT))))


@pytest.mark.parametrize("with_starts", [False, True])
@pytest.mark.parametrize("p_in_registers", [False, True])
def test_lowers_for_cuda_deepseek_dims(p_in_registers, with_starts, hopper):
  b, h, s = 2, 128, 2048
  blocks = dec.BlockSizes(block_dv=256 if p_in_registers else 128, p_in_registers=p_in_registers)
  args = (jax.ShapeDtypeStruct((b, 1, h, 576), jnp.bfloat16), jax.ShapeDtypeStruct((b, s, 512), jnp.bfloat16),
          jax.ShapeDtypeStruct((b, s, 64), jnp.bfloat16), jax.ShapeDtypeStruct((b,), jnp.int32))
  args += (jax.ShapeDtypeStruct((b,), jnp.int32),) if with_starts else ()  # starts
  text = lower_for_cuda(lambda *x: dec.mla_decode(*x, softmax_scale=0.1, implementation="mosaic_gpu",
                                                  block_sizes=blocks), *args)
  assert mosaic_calls(text) == 1


@pytest.mark.skip(reason="the Mosaic GPU interpreter has no rule for wgmma with a register A operand "
                         "(check_support raises NotImplementedError); covered by lowering and GPU tests")
def test_interpret_p_in_registers(interpret):
  q, c_kv, k_rope = _operands(1, 1, 64, 128)
  lengths = jnp.array([100], jnp.int32)
  blocks = dec.BlockSizes(64, 64, 64, 2, p_in_registers=True)
  out = dec.mla_decode(q, c_kv, k_rope, lengths, softmax_scale=0.1, latent_dim=LATENT,
                       implementation="mosaic_gpu", block_sizes=blocks, interpret=interpret)
  ref = reference.mla_decode(q.astype(jnp.float32), c_kv, k_rope, lengths, softmax_scale=0.1, latent_dim=LATENT)
  assert rel_err(out, ref) <= BF16_TOL


def test_xla_dispatch_and_validation():
  q, c_kv, k_rope = _operands(1, 1, 4, 16)
  lengths = jnp.array([9], jnp.int32)
  out = dec.mla_decode(q, c_kv, k_rope, lengths, softmax_scale=0.1, latent_dim=LATENT, implementation="xla")
  ref = reference.mla_decode(q, c_kv, k_rope, lengths, softmax_scale=0.1, latent_dim=LATENT)
  np.testing.assert_array_equal(out, ref)
  starts = jnp.array([4], jnp.int32)
  out = dec.mla_decode(q, c_kv, k_rope, lengths, starts, softmax_scale=0.1, latent_dim=LATENT,
                       implementation="xla")
  np.testing.assert_array_equal(out, reference.mla_decode(q, c_kv, k_rope, lengths, starts, softmax_scale=0.1,
                                                          latent_dim=LATENT))
  with pytest.raises(ValueError, match="k_rope.shape"):
    dec.mla_decode(q, c_kv, k_rope[..., :32], lengths, softmax_scale=0.1, latent_dim=LATENT)
  with pytest.raises(ValueError, match=r"starts.shape=\(1, 1\) must be \(1,\)"):
    dec.mla_decode(q, c_kv, k_rope, lengths, starts[:, None], softmax_scale=0.1, latent_dim=LATENT)


@pytest.fixture
def kernel_runs(monkeypatch):
  """The calls that reach the Mosaic GPU kernel (not the reference), as the block sizes they ran."""
  return record_kernel_runs(monkeypatch, mosaic_gpu, "mla_decode", what=lambda a, kw: kw["block_sizes"])


def test_implementation_none_runs_the_kernel_where_it_supports_the_call(interpret, kernel_runs):
  q, c_kv, k_rope = _operands(1, 1, 8, 64)
  lengths = jnp.array([50], jnp.int32)
  out = dec.mla_decode(q, c_kv, k_rope, lengths, softmax_scale=0.1, latent_dim=LATENT, interpret=interpret)
  # block_sizes=None: the interpreter's default stages P through SMEM, 128 value columns per CTA.
  assert kernel_runs == [dec.BlockSizes(block_dv=128, p_in_registers=False)]
  ref = reference.mla_decode(q.astype(jnp.float32), c_kv, k_rope, lengths, softmax_scale=0.1, latent_dim=LATENT)
  assert rel_err(out, ref) <= BF16_TOL


def test_default_block_sizes_follow_the_latent_width():
  assert dec.default_block_sizes(512) == dec.BlockSizes()  # V3: P in registers, 256 columns
  assert dec.default_block_sizes(512, interpret=True) == dec.BlockSizes(block_dv=128, p_in_registers=False)
  assert dec.default_block_sizes(384) == dec.BlockSizes(block_dv=128, p_in_registers=False)
  assert dec.default_block_sizes(192) == dec.BlockSizes(block_dv=64, p_in_registers=False)


@pytest.mark.parametrize("latent,rope,dtype,device,blocks,rule", [
    (LATENT, 8, jnp.bfloat16, "interpreter", None, r"rope width 8 .* must be a multiple of 16"),
    (96, ROPE, jnp.bfloat16, "interpreter", None, r"latent_dim=96 must be a multiple of bs.block_dv=64"),
    (LATENT, ROPE, jnp.bfloat16, "interpreter", dec.BlockSizes(block_dv=32, p_in_registers=False),
     r"bs.block_dv=32, itself a multiple of 64"),
    (256, ROPE, jnp.bfloat16, "hopper", dec.BlockSizes(block_dv=256, p_in_registers=False),
     r"bs.block_dv=256 > 128 needs p_in_registers=True"),
    (LATENT, ROPE, jnp.bfloat16, "interpreter", dec.BlockSizes(block_dv=64), r"interpreter cannot run"),
    (LATENT, ROPE, jnp.float32, "interpreter", None, r"q.dtype=float32 must be bfloat16"),
    (LATENT, ROPE, jnp.bfloat16, "not hopper", None, r"compiles for sm_90 \(Hopper\) only"),
])
def test_unsupported_calls_take_the_reference(latent, rope, dtype, device, blocks, rule, interpret,
                                              kernel_runs, monkeypatch):
  """implementation=None gives the XLA reference where check_support names a rule the call breaks;
  implementation="mosaic_gpu" raises that rule."""
  monkeypatch.setattr(pallas_kernels._common, "on_hopper", lambda: device == "hopper")
  q, c_kv, k_rope = (x.astype(dtype) for x in _operands(2, 1, 4, 80, latent=latent, rope=rope))
  lengths, starts = jnp.array([80, 41], jnp.int32), jnp.array([0, 7], jnp.int32)
  kwargs = dict(softmax_scale=0.1, latent_dim=latent, block_sizes=blocks,
                interpret=interpret if device == "interpreter" else None)
  out = dec.mla_decode(q, c_kv, k_rope, lengths, starts, **kwargs)
  ref = reference.mla_decode(q, c_kv, k_rope, lengths, starts, softmax_scale=0.1, latent_dim=latent)
  np.testing.assert_array_equal(out, ref)
  with pytest.raises(NotImplementedError, match=rule):
    dec.mla_decode(q, c_kv, k_rope, lengths, starts, implementation="mosaic_gpu", **kwargs)
  assert not kernel_runs


@pytest.mark.gpu
@pytest.mark.parametrize("starts", [None, [100, 999, 17, 2990]])  # row 2: start == length, empty
@pytest.mark.parametrize("p_in_registers", [False, True])
def test_gpu_matches_reference(p_in_registers, starts):
  q, c_kv, k_rope = _operands(4, 1, 128, 4096, latent=512, rope=64)
  lengths = jnp.array([4096, 1000, 17, 3000], jnp.int32)
  starts = None if starts is None else jnp.asarray(starts, jnp.int32)
  out = dec.mla_decode(q, c_kv, k_rope, lengths, starts, softmax_scale=576 ** -0.5, implementation="mosaic_gpu",
                       block_sizes=dec.BlockSizes(block_dv=256 if p_in_registers else 128,
                                                  p_in_registers=p_in_registers))
  ref = reference.mla_decode(q.astype(jnp.float32), c_kv, k_rope, lengths, starts, softmax_scale=576 ** -0.5)
  assert rel_err(out, ref) <= BF16_TOL
