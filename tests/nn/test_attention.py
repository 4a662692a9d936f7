"""Blockwise causal attention equals the dense masked softmax: values and gradients.

Tolerance: float32 with highest matmul precision, |blockwise - dense| <= 1e-5 * (1 + |dense|)
elementwise (the same sums in another order). The masks are the model's: causal, right and
left padding, packed segments; queries that see no key give zeros on both paths. The model
check runs the whole DeepSeek-V3 forward and its parameter gradients with kernels="xla" against
"xla_reference", where also the routed experts' tiled GEMM meets jax.lax.ragged_dot, under the
whole-model rule: 1e-4 of each gradient tensor's largest entry.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax import config, models
from r1jax.models.deepseek_v3 import attention_mask_for
from r1jax.nn.attention import (CausalMask, block_for, causal_attention,
                                dense_causal_attention, masked_softmax)
from tests import numerics

TOL = 1e-5
B, T, H, DK, DV = 3, 20, 2, 12, 8  # T = 20 with blocks of 8: the last block is partial


def assert_close(got, want, name):
    numerics.assert_close(got, want, name, TOL)


def masks():
    valid = np.ones((B, T), bool)
    valid[1, 13:] = False  # right padding
    valid[2, :5] = False  # left padding: queries 0-4 of row 2 see no key
    segments = np.zeros((B, T), np.int32)
    segments[0, 7:] = 1  # row 0 packs three documents
    segments[0, 16:] = 2
    segments[2, 12:] = 1
    return {"causal": CausalMask(jnp.ones((B, T), bool)),
            "padded": CausalMask(jnp.asarray(valid)),
            "padded+segments": CausalMask(jnp.asarray(valid), jnp.asarray(segments))}


def qkv(seed=0):
    rng = np.random.default_rng(seed)
    shapes = [(B, T, H, DK), (B, T, H, DK), (B, T, H, DV), (B, T, H, DV)]
    return [jnp.asarray(rng.normal(size=s).astype(np.float32)) for s in shapes]


def test_causal_mask_is_visibility_by_position_validity_and_segment():
    """An independent oracle (loops over numpy arrays) for the mask every path here builds from."""
    for name, mask in masks().items():
        valid = np.asarray(mask.key_valid)
        segments = np.zeros((B, T)) if mask.segment_ids is None else np.asarray(mask.segment_ids)
        want = np.array([[[s <= t and valid[b, s] and segments[b, s] == segments[b, t]
                           for s in range(T)] for t in range(T)] for b in range(B)])
        np.testing.assert_array_equal(mask.dense(), want, err_msg=name)
        for lo, hi in [(0, 8), (8, 16), (16, 20)]:
            np.testing.assert_array_equal(mask.block(lo, hi), want[:, lo:hi, :hi], err_msg=name)
        # The model builds the same mask without a cache.
        np.testing.assert_array_equal(
            attention_mask_for(mask.key_valid, mask.segment_ids, None, None, T), want)
    row_0_query_8 = masks()["padded+segments"].dense()[0, 8].tolist()
    assert row_0_query_8 == [False] * 7 + [True, True] + [False] * 11  # its segment began at 7


@pytest.mark.parametrize("name", list(masks()))
@pytest.mark.parametrize("block", [8, 128])
def test_blockwise_matches_dense_values_and_gradients(name, block):
    mask = masks()[name]
    q, k, v, d_out = qkv()
    scale = DK**-0.5

    def value_and_grads(attend):
        out, vjp = jax.vjp(lambda q, k, v: attend(q, k, v, mask, softmax_scale=scale), q, k, v)
        return (out, *vjp(d_out))

    blockwise = lambda *a, **kw: causal_attention(*a, block=block, **kw)  # noqa: E731
    with jax.default_matmul_precision("highest"):
        got = jax.jit(lambda: value_and_grads(blockwise))()
        want = jax.jit(lambda: value_and_grads(dense_causal_attention))()
    for what, g, w in zip(["out", "dq", "dk", "dv"], got, want, strict=True):
        assert g.shape == w.shape and g.dtype == w.dtype, what
        assert_close(g, w, f"{name} {what}")
    if name != "causal":  # left-padded queries see nothing: zeros, not NaNs, and no gradient
        np.testing.assert_array_equal(got[0][2, :5], 0.0)
        np.testing.assert_array_equal(got[1][2, :5], 0.0)


def test_blockwise_bf16_values_and_gradients():
    """bf16 operands keep their dtype and stay within the bf16 kernel tests' bound (relative
    Frobenius error <= 1e-2) of the float32 dense values and gradients."""
    q, k, v, d_out = qkv(1)
    mask = masks()["padded"]

    def value_and_grads(attend, dtype):
        args = [a.astype(dtype) for a in (q, k, v)]
        out, vjp = jax.vjp(lambda q, k, v: attend(q, k, v, mask, softmax_scale=DK**-0.5), *args)
        return (out, *vjp(d_out.astype(dtype)))

    got = value_and_grads(lambda *a, **kw: causal_attention(*a, block=8, **kw), jnp.bfloat16)
    want = value_and_grads(dense_causal_attention, jnp.float32)
    for what, g, w in zip(["out", "dq", "dk", "dv"], got, want, strict=True):
        assert g.dtype == jnp.bfloat16, what
        rel = float(jnp.linalg.norm(g.astype(jnp.float32) - w) / jnp.linalg.norm(w))
        assert rel <= 1e-2, f"{what}: {rel:.2e}"


@pytest.mark.parametrize("heads,kv_heads", [(4, 2), (6, 2), (4, 1)])
@pytest.mark.parametrize("block", [None, 8])
def test_grouped_query_attention_matches_dense_with_repeated_heads(heads, kv_heads, block):
    """K < H key/value heads (query head h reads head h // (H / K)): values and gradients equal
    the dense masked softmax over K/V repeated to H heads, dK and dV summed over each group."""
    rng = np.random.default_rng(3)
    q, d_out = (jnp.asarray(rng.normal(size=(B, T, heads, DK)), jnp.float32) for _ in range(2))
    k = jnp.asarray(rng.normal(size=(B, T, kv_heads, DK)), jnp.float32)
    v = jnp.asarray(rng.normal(size=(B, T, kv_heads, DK)), jnp.float32)
    mask = masks()["padded+segments"]

    def value_and_grads(attend):
        out, vjp = jax.vjp(lambda q, k, v: attend(q, k, v, mask, softmax_scale=DK**-0.5), q, k, v)
        return (out, *vjp(d_out))

    def repeated_dense(q, k, v, mask, softmax_scale):  # the reference, written out here
        g = heads // kv_heads
        k, v = (jnp.repeat(a, g, axis=2) for a in (k, v))
        return dense_causal_attention(q, k, v, mask, softmax_scale=softmax_scale)

    with jax.default_matmul_precision("highest"):
        got = jax.jit(lambda: value_and_grads(
            lambda *a, **kw: causal_attention(*a, block=block, **kw)))()
        want = jax.jit(lambda: value_and_grads(repeated_dense))()
    for what, g, w in zip(["out", "dq", "dk", "dv"], got, want, strict=True):
        assert g.shape == w.shape, what
        assert_close(g, w, f"H={heads} K={kv_heads} {what}")


def _dot_batch_sizes(jaxpr) -> set[tuple[int, ...]]:
    """The batch dimension sizes of every dot_general in a jaxpr, its sub-jaxprs included."""
    sizes = set()
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            (_, _), (lhs_batch, _) = eqn.params["dimension_numbers"]
            sizes.add(tuple(eqn.invars[0].aval.shape[d] for d in lhs_batch))
        for param in eqn.params.values():
            inner = getattr(param, "jaxpr", param)
            if hasattr(inner, "eqns"):
                sizes |= _dot_batch_sizes(inner)
    return sizes


def test_grouped_query_gemms_run_per_key_head_without_repeating_keys():
    """The G query heads of a key head share each block's GEMMs: forward and backward dots batch
    over (B, K), never over (B, H) (which repeating K/V to H heads would give)."""
    rng = np.random.default_rng(4)
    q = jnp.asarray(rng.normal(size=(B, T, 4, DK)), jnp.float32)
    k, v = (jnp.asarray(rng.normal(size=(B, T, 2, DK)), jnp.float32) for _ in range(2))
    mask = masks()["padded"]

    def loss(q, k, v):
        return jnp.sum(causal_attention(q, k, v, mask, softmax_scale=1.0, block=8) ** 2)

    jaxpr = jax.make_jaxpr(jax.grad(loss, argnums=(0, 1, 2)))(q, k, v).jaxpr
    assert _dot_batch_sizes(jaxpr) == {(B, 2)}


def test_block_for_grouped_heads_keeps_128_gemm_rows():
    assert [block_for(32, g) for g in (2, 4, 8, 16)] == [64, 32, 16, 16]


def test_shape_errors_name_the_shapes():
    q, k, v, _ = qkv()
    with pytest.raises(ValueError, match=r"q.shape=\(3, 20, 2, 12\), k.shape=\(3, 19, 2, 12\)"):
        causal_attention(q, k[:, :19], v, masks()["causal"], softmax_scale=1.0)
    three_heads = jnp.zeros((B, T, 3, DK))
    with pytest.raises(ValueError, match=r"k.shape=\(3, 20, 3, 12\).*K dividing H"):
        causal_attention(jnp.zeros((B, T, 4, DK)), three_heads, three_heads, masks()["causal"],
                         softmax_scale=1.0)


def test_model_loss_and_gradients_match_the_reference_formulations():
    """The tiny model (MLA, MoE, MTP) on padded, packed rows: kernels="xla" (blockwise attention,
    tiled expert GEMMs on CPU) against "xla_reference" (dense masked softmax, ragged_dot)."""
    cfg = config.tiny()
    params = models.init(cfg, jax.random.key(0))
    rng = np.random.default_rng(2)
    tokens = jnp.asarray(rng.integers(0, cfg.vocab_size, (B, T)))
    mask = masks()["padded+segments"]
    weight = mask.key_valid[..., None].astype(jnp.float32)

    def loss(cfg):
        def fn(params):
            logits, aux = models.forward(cfg, params, tokens, attention_mask=mask.key_valid,
                                         segment_ids=mask.segment_ids)
            mtp = aux["mtp_logits"][0]
            return jnp.sum(weight * (jnp.tanh(logits) + 0.5 * jnp.tanh(mtp)) ** 2)
        return jax.jit(jax.value_and_grad(fn))

    with jax.default_matmul_precision("highest"):
        got_loss, got = loss(cfg)(params)
        want_loss, want = loss(cfg.replace(kernels="xla_reference"))(params)
    assert_close(got_loss, want_loss, "loss")
    flat_got, flat_want = jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want)
    for (path, g), w in zip(flat_got, flat_want, strict=True):
        scale = float(jnp.abs(w).max()) + 1e-30  # gradients of each tensor, relative to its size
        err = float(jnp.abs(g - w).max()) / scale
        assert err <= 1e-4, f"{jax.tree_util.keystr(path)}: {err:.2e}"



def test_masked_softmax_is_the_float64_softmax_over_visible_keys_and_zero_elsewhere():
    """Tolerance 1e-6 relative: one float32 softmax of 7 entries against float64."""
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(3, 2, 7)) * 4
    mask = rng.random((3, 2, 7)) < 0.6
    mask[1, 0] = False  # a query that sees no key: zeros, not NaNs
    mask[2, 1] = True
    mask[2, 1, 0] = False
    scores[2, 1, 0] = np.inf  # a hidden score of any value is ignored
    probs = np.asarray(masked_softmax(jnp.asarray(scores, jnp.float32), jnp.asarray(mask)))
    want = np.zeros_like(scores)
    for row in np.ndindex(*scores.shape[:2]):
        seen = scores[row][mask[row]]
        if seen.size:
            want[row][mask[row]] = np.exp(seen - seen.max()) / np.exp(seen - seen.max()).sum()
    np.testing.assert_allclose(probs, want, rtol=1e-6, atol=1e-7)
    assert not probs[~mask].any() and not probs[1, 0].any()

    def weighted(s):
        return jnp.sum(masked_softmax(s, jnp.asarray(mask)) * jnp.arange(7.0))
    grad = np.asarray(jax.grad(weighted)(jnp.asarray(np.where(mask, scores, 0), jnp.float32)))
    assert np.isfinite(grad).all() and not grad[~mask].any()  # no gradient to hidden keys
