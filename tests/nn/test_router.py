"""Group-limited routing vs a straightforward numpy implementation; bias balancing in a toy loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax.nn.balance import sequence_balance_loss, update_routing_bias
from r1jax.nn.moe import route_tokens


def numpy_route(scores, bias, top_k, n_group, topk_group, norm, scaling):
    """Token by token, written from V3 eqs. 13/16 and the group rule; ties -> lower index."""
    n, e = scores.shape
    size = e // n_group
    weights, indices = np.zeros((n, top_k)), np.zeros((n, top_k), np.int64)
    for t in range(n):
        biased = scores[t] + bias
        group_score = [sum(sorted(biased[g * size:(g + 1) * size], reverse=True)[:2])
                       for g in range(n_group)]
        kept_groups = sorted(range(n_group), key=lambda g: (-group_score[g], g))[:topk_group]
        candidates = [i for i in range(e) if i // size in kept_groups]
        chosen = sorted(candidates, key=lambda i: (-biased[i], i))[:top_k]
        w = scores[t, chosen]
        if norm:
            w = w / (w.sum() + 1e-20)
        weights[t], indices[t] = w * scaling, chosen
    return weights, indices


@pytest.mark.parametrize("n_group,topk_group,top_k", [(4, 2, 3), (8, 4, 8), (1, 1, 2), (2, 1, 4)])
@pytest.mark.parametrize("ties", [False, True])
def test_route_tokens_matches_numpy(n_group, topk_group, top_k, ties):
    rng = np.random.default_rng(n_group * 10 + top_k)
    n, e = 64, 32
    if ties:  # coarse values make equal scores and equal group sums frequent
        scores = rng.integers(0, 4, (n, e)).astype(np.float32) / 4
        bias = np.zeros(e, np.float32)
    else:
        scores = 1 / (1 + np.exp(-rng.normal(size=(n, e)))).astype(np.float32)
        bias = rng.normal(0, 0.1, e).astype(np.float32)
    w, idx = route_tokens(jnp.asarray(scores), jnp.asarray(bias), top_k=top_k, n_group=n_group,
                          topk_group=topk_group, method="noaux_tc", norm_topk_prob=True, scaling=2.5)
    ref_w, ref_idx = numpy_route(scores.astype(np.float64), bias.astype(np.float64), top_k,
                                 n_group, topk_group, True, 2.5)
    np.testing.assert_array_equal(np.asarray(idx), ref_idx)
    np.testing.assert_allclose(np.asarray(w), ref_w, rtol=1e-6, atol=1e-7)


def test_bias_selects_but_does_not_weight():
    scores = jnp.array([[0.9, 0.8, 0.1, 0.2]])
    bias = jnp.array([0.0, 0.0, 1.0, 0.0])
    w, idx = route_tokens(scores, bias, top_k=2, n_group=1, topk_group=1, method="noaux_tc",
                          norm_topk_prob=False, scaling=1.0)
    assert sorted(np.asarray(idx)[0].tolist()) == [0, 2]  # expert 2 chosen thanks to its bias
    assert np.isclose(float(w[0, list(np.asarray(idx)[0]).index(2)]), 0.1)  # weighted by s, not s+b


def test_bias_update_moves_load_toward_uniform():
    """Skewed router: with the aux-loss-free rule the max/mean load ratio falls toward 1."""
    e, n = 16, 2048
    skew = jnp.asarray(np.linspace(-2, 2, e), jnp.float32)  # experts at the end are favoured
    bias = jnp.zeros(e)

    def imbalance(bias, key):
        logits = jax.random.normal(key, (n, e)) + skew
        _, idx = route_tokens(jax.nn.sigmoid(logits), bias, top_k=2, n_group=4, topk_group=2,
                              method="noaux_tc", norm_topk_prob=True, scaling=1.0)
        load = jnp.bincount(idx.reshape(-1), length=e)
        return load, float(load.max() / load.mean())

    _, start = imbalance(bias, jax.random.key(0))
    for step in range(300):
        load, _ = imbalance(bias, jax.random.key(step + 1))
        bias = update_routing_bias(bias, load, speed=0.01)
    _, end = imbalance(bias, jax.random.key(10_000))
    assert start > 3.0 and end < 1.3, (start, end)


def test_sequence_balance_loss_matches_numpy():
    rng = np.random.default_rng(1)
    b, t, e, k = 2, 6, 8, 2
    scores = rng.uniform(0.05, 1, (b, t, e)).astype(np.float32)
    idx = np.argsort(-scores, axis=-1)[..., :k]
    mask = np.ones((b, t), np.float32)
    mask[1, 4:] = 0
    got = sequence_balance_loss(jnp.asarray(scores), jnp.asarray(idx), jnp.asarray(mask), alpha=1e-4)
    ref = 0.0
    for bi in range(b):
        valid = [ti for ti in range(t) if mask[bi, ti]]
        tt = len(valid)
        f = np.zeros(e)
        p = np.zeros(e)
        for ti in valid:
            for i in idx[bi, ti]:
                f[i] += e / (k * tt)
            p += scores[bi, ti] / scores[bi, ti].sum() / tt
        ref += 1e-4 * np.sum(f * p) / b
    np.testing.assert_allclose(float(got), ref, rtol=1e-5)
