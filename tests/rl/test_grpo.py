"""GRPO math vs float64 numpy references written from the formulas (loops, not the jnp code).

Tolerance rule: jax runs in float32, the references in float64 on the same float32-rounded
inputs, so the only difference is float32 rounding of O(1) quantities: rtol 1e-5 on values,
plus atol 1e-7 on per-token gradients (which are O(1/(N*T)) and can cross zero).
"""

import functools
import math
import statistics

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax.rl import grpo

RTOL = 1e-5
GRAD_ATOL = 1e-7


def f32(x):
    """Round to float32 and back, so the float64 reference sees exactly what jax sees."""
    return np.asarray(x, np.float32).astype(np.float64)


# ----------------------------------------------------------------------------- references


def ref_advantages(rewards, group_size, normalize_std, eps=1e-6):
    flat = list(np.ravel(rewards))
    out = []
    for start in range(0, len(flat), group_size):
        group = flat[start : start + group_size]
        mean = sum(group) / group_size
        std = statistics.stdev(group)  # sample std, the documented convention
        for r in group:
            out.append((r - mean) / (std + eps) if normalize_std else r - mean)
    return np.array(out).reshape(np.shape(rewards))


def ref_grpo_loss_and_grad(logp, old, ref, adv, mask, eps_low, eps_high, beta, aggregation, norm):
    """Loss and its analytic gradient w.r.t. logp, token by token.

    d/dlogp min(ρA, clip(ρ)A) = ρA where the unclipped branch is the minimum, else 0 (the clipped
    branch is constant in logp outside the clip range); d/dlogp k3 = 1 - exp(ref - logp).
    """
    num_seqs, max_tokens = logp.shape
    lengths = [int(mask[i].sum()) for i in range(num_seqs)]
    total_tokens = sum(lengths)
    nonempty = sum(1 for n in lengths if n > 0)
    loss, grad = 0.0, np.zeros_like(logp)
    for i in range(num_seqs):
        for t in range(max_tokens):
            if not mask[i, t]:
                continue
            a = adv[i]
            rho = math.exp(logp[i, t] - old[i, t])
            rho_clipped = min(max(rho, 1 - eps_low), 1 + eps_high)
            unclipped_active = rho * a <= rho_clipped * a
            surrogate = min(rho * a, rho_clipped * a)
            x = ref[i, t] - logp[i, t]
            kl = math.exp(x) - x - 1
            token_loss = -(surrogate - beta * kl)
            token_grad = -((rho * a if unclipped_active else 0.0) - beta * (1 - math.exp(x)))
            if aggregation == "grpo":
                weight = 1.0 / (lengths[i] * nonempty)
            elif aggregation == "token":
                weight = 1.0 / total_tokens
            else:
                weight = 1.0 / (num_seqs * norm)
            loss += weight * token_loss
            grad[i, t] = weight * token_grad
    return loss, grad


# ----------------------------------------------------------------------------- inputs


def make_batch(seed, num_seqs=6, max_tokens=9, empty_row=False):
    """Random log-probs, variable lengths, and tokens far outside the clip range on both sides."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, max_tokens + 1, size=num_seqs)
    lengths[0] = max_tokens
    if empty_row:
        lengths[-1] = 0
    mask = np.arange(max_tokens)[None, :] < lengths[:, None]
    logp = f32(-rng.uniform(0.05, 4.0, size=(num_seqs, max_tokens)))
    # Log-ratios mostly within ±0.3, with some forced to ±1 (ratio 2.7 / 0.37: clipped whatever
    # the clip range we test) so every branch of the min is exercised.
    log_ratio = rng.normal(0.0, 0.15, size=(num_seqs, max_tokens))
    far = rng.random((num_seqs, max_tokens)) < 0.25
    log_ratio[far] = rng.choice([-1.0, 1.0], size=far.sum())
    adv = rng.normal(size=num_seqs)
    # Whatever the seed: one token clipped at the top edge (A > 0) and one at the bottom (A < 0).
    adv[0], adv[1] = abs(adv[0]), -abs(adv[1])
    log_ratio[0, 0], log_ratio[1, 0] = 1.0, -1.0
    old = f32(logp - log_ratio)
    ref = f32(logp + rng.normal(0.0, 0.3, size=(num_seqs, max_tokens)))
    adv = f32(adv)
    return logp, old, ref, adv, mask


CASES = [
    # (aggregation, clip_eps, clip_eps_high, kl_beta, max_len_normalizer)
    ("grpo", 0.2, None, 0.0, None),
    ("grpo", 0.2, 0.28, 0.04, None),
    ("token", 0.2, None, 0.04, None),
    ("token", 0.2, 0.28, 0.0, None),
    ("dr_grpo", 0.2, None, 0.001, None),
    ("dr_grpo", 0.2, 0.28, 0.04, 16),
]


@pytest.mark.parametrize("empty_row", [False, True])
@pytest.mark.parametrize("aggregation,clip_eps,clip_eps_high,kl_beta,normalizer", CASES)
def test_grpo_loss_and_grad_match_reference(
    aggregation, clip_eps, clip_eps_high, kl_beta, normalizer, empty_row
):
    logp, old, ref, adv, mask = make_batch(
        seed=len(aggregation) + int(1e3 * kl_beta), empty_row=empty_row
    )
    eps_high = clip_eps if clip_eps_high is None else clip_eps_high
    norm = logp.shape[1] if normalizer is None else normalizer
    want_loss, want_grad = ref_grpo_loss_and_grad(
        logp, old, ref, adv, mask, clip_eps, eps_high, kl_beta, aggregation, norm
    )

    loss_fn = functools.partial(
        grpo.grpo_loss,
        clip_eps=clip_eps,
        clip_eps_high=clip_eps_high,
        kl_beta=kl_beta,
        aggregation=aggregation,
        max_len_normalizer=normalizer,
    )
    args = [jnp.asarray(x, jnp.float32) for x in (old, ref, adv, mask)]
    (loss, metrics), grad = jax.value_and_grad(loss_fn, has_aux=True)(
        jnp.asarray(logp, jnp.float32), *args
    )
    np.testing.assert_allclose(float(loss), want_loss, rtol=RTOL)
    np.testing.assert_allclose(np.asarray(grad), want_grad, rtol=RTOL, atol=GRAD_ATOL)
    assert np.all(np.asarray(grad)[~mask] == 0.0)

    # The batch really exercises both clip edges, so the test would catch a wrong branch.
    rho = np.exp(logp - old)
    a = adv[:, None]
    want_high = ((rho > 1 + eps_high) & (a > 0))[mask]
    want_low = ((rho < 1 - clip_eps) & (a < 0))[mask]
    assert want_high.any() and want_low.any()
    np.testing.assert_allclose(float(metrics["clip_fraction_high"]), want_high.mean(), rtol=RTOL)
    np.testing.assert_allclose(float(metrics["clip_fraction_low"]), want_low.mean(), rtol=RTOL)
    np.testing.assert_allclose(
        float(metrics["clip_fraction"]), (want_high | want_low).mean(), rtol=RTOL
    )
    x = ref - logp
    np.testing.assert_allclose(float(metrics["kl"]), (np.exp(x) - x - 1)[mask].mean(), rtol=RTOL)
    np.testing.assert_allclose(float(metrics["ratio_mean"]), rho[mask].mean(), rtol=RTOL)


def test_jit_matches_eager():
    """Under jit the options are static (they pick the program), the arrays are traced."""
    logp, old, ref, adv, mask = (jnp.asarray(x, jnp.float32) for x in make_batch(seed=2))
    options = dict(clip_eps_high=0.28, kl_beta=0.04, aggregation="token")
    jitted = jax.jit(grpo.grpo_loss, static_argnames=tuple(options))
    eager_loss, eager_metrics = grpo.grpo_loss(logp, old, ref, adv, mask, **options)
    jit_loss, jit_metrics = jitted(logp, old, ref, adv, mask, **options)
    np.testing.assert_allclose(float(jit_loss), float(eager_loss), rtol=RTOL)
    np.testing.assert_allclose(float(jit_metrics["kl"]), float(eager_metrics["kl"]), rtol=RTOL)


@pytest.mark.parametrize("aggregation", ["grpo", "token", "dr_grpo"])
def test_microbatches_with_batch_normalizer_sum_to_the_batch(aggregation):
    """Gradient accumulation: microbatch losses with the whole-batch denominator add up exactly."""
    logp, old, ref, adv, mask = (
        jnp.asarray(x, jnp.float32) for x in make_batch(seed=12, empty_row=True)
    )
    options = dict(clip_eps_high=0.28, kl_beta=0.04, aggregation=aggregation)
    whole_loss, _ = grpo.grpo_loss(logp, old, ref, adv, mask, **options)
    norm = grpo.aggregation_normalizer(mask, aggregation)
    parts = [
        grpo.grpo_loss(logp[s], old[s], ref[s], adv[s], mask[s], normalizer=norm, **options)[0]
        for s in (slice(0, 2), slice(2, None))
    ]
    np.testing.assert_allclose(float(parts[0] + parts[1]), float(whole_loss), rtol=RTOL)


def test_reference_gradient_matches_finite_differences():
    """The analytic numpy gradient is itself checked by central differences in float64."""
    logp, old, ref, adv, mask = make_batch(seed=7)
    args = (old, ref, adv, mask, 0.2, 0.28, 0.04, "grpo", logp.shape[1])
    _, grad = ref_grpo_loss_and_grad(logp, *args)
    h = 1e-6
    numeric = np.zeros_like(logp)
    for idx in np.ndindex(*logp.shape):
        plus, minus = logp.copy(), logp.copy()
        plus[idx] += h
        minus[idx] -= h
        numeric[idx] = (
            ref_grpo_loss_and_grad(plus, *args)[0] - ref_grpo_loss_and_grad(minus, *args)[0]
        ) / (2 * h)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)


def test_per_token_advantages_equal_broadcast_sequence_advantages():
    logp, old, ref, adv, mask = make_batch(seed=3)
    as_jnp = [jnp.asarray(x, jnp.float32) for x in (logp, old, ref)]
    per_seq, _ = grpo.grpo_loss(*as_jnp, jnp.asarray(adv), jnp.asarray(mask), kl_beta=0.04)
    per_tok, _ = grpo.grpo_loss(
        *as_jnp,
        jnp.asarray(np.repeat(adv[:, None], logp.shape[1], 1)),
        jnp.asarray(mask),
        kl_beta=0.04,
    )
    assert float(per_seq) == float(per_tok)


def test_garbage_in_padding_changes_nothing():
    logp, old, ref, adv, mask = make_batch(seed=5)
    dirty = [x.copy() for x in (logp, old, ref)]
    dirty[0][~mask], dirty[1][~mask], dirty[2][~mask] = -np.inf, np.nan, np.inf

    def loss_and_grad(lp, old_lp, ref_lp):
        def loss(x):
            return grpo.grpo_loss(
                x, old_lp, ref_lp, jnp.asarray(adv), jnp.asarray(mask), kl_beta=0.04
            )[0]

        return jax.value_and_grad(loss)(lp)

    clean_loss, clean_grad = loss_and_grad(*(jnp.asarray(x, jnp.float32) for x in (logp, old, ref)))
    dirty_loss, dirty_grad = loss_and_grad(*(jnp.asarray(x, jnp.float32) for x in dirty))
    assert float(dirty_loss) == float(clean_loss)
    np.testing.assert_array_equal(np.asarray(dirty_grad), np.asarray(clean_grad))


def test_on_policy_gradient_is_policy_gradient():
    """At ρ = 1 with β = 0 the "grpo" gradient is -A_i / (|o_i| N) per token [S8 eq. 3]."""
    logp, _, ref, adv, mask = make_batch(seed=11)
    grad = jax.grad(
        lambda lp: grpo.grpo_loss(lp, lp, jnp.asarray(ref), jnp.asarray(adv), jnp.asarray(mask))[0]
    )(jnp.asarray(logp, jnp.float32))
    lengths = mask.sum(1, keepdims=True)
    want = np.where(mask, -adv[:, None] / (lengths * logp.shape[0]), 0.0)
    np.testing.assert_allclose(np.asarray(grad), want, rtol=RTOL, atol=GRAD_ATOL)


def test_rejects_bad_arguments():
    x = jnp.zeros((2, 3))
    with pytest.raises(ValueError, match="aggregation='seq'"):
        grpo.grpo_loss(x, x, x, jnp.zeros(2), x, aggregation="seq")
    with pytest.raises(ValueError, match="advantages.shape"):
        grpo.grpo_loss(x, x, x, jnp.zeros(3), x)
    with pytest.raises(ValueError, match="mask.shape"):
        grpo.grpo_loss(x, x, x, jnp.zeros(2), jnp.zeros((2, 4)))


# ----------------------------------------------------------------------------- advantages, KL


@pytest.mark.parametrize("normalize_std", [True, False])
@pytest.mark.parametrize("shape", [(12,), (3, 4)])
def test_group_advantages_match_reference(normalize_std, shape):
    rewards = f32(np.random.default_rng(0).normal(size=shape))
    got = grpo.group_advantages(jnp.asarray(rewards, jnp.float32), 4, normalize_std=normalize_std)
    assert got.shape == shape
    np.testing.assert_allclose(
        np.asarray(got), ref_advantages(rewards, 4, normalize_std), rtol=RTOL, atol=1e-6
    )


def test_group_advantages_binary_rewards_and_degenerate_groups():
    # Group 1: one success in four -> mean 0.25, sample std 0.5; group 2: all equal -> 0.
    rewards = jnp.array([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0])
    got = np.asarray(grpo.group_advantages(rewards, 4))
    np.testing.assert_allclose(
        got[:4], np.array([0.75, -0.25, -0.25, -0.25]) / (0.5 + 1e-6), rtol=RTOL
    )
    assert np.all(got[4:] == 0.0)
    with pytest.raises(ValueError, match="group_size=3"):
        grpo.group_advantages(rewards, 3)
    with pytest.raises(ValueError, match="group_size=1"):
        grpo.group_advantages(rewards, 1)


def test_k3_kl_matches_reference_and_is_nonnegative():
    rng = np.random.default_rng(1)
    logp, ref = f32(-rng.uniform(0, 6, (5, 7))), f32(-rng.uniform(0, 6, (5, 7)))
    got = np.asarray(grpo.k3_kl(jnp.asarray(logp, jnp.float32), jnp.asarray(ref, jnp.float32)))
    want = np.array(
        [[math.exp(r - p) - (r - p) - 1 for p, r in zip(lp, rf)] for lp, rf in zip(logp, ref)]
    )
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=1e-6)
    assert np.all(got >= 0)
    assert float(grpo.k3_kl(jnp.float32(-1.5), jnp.float32(-1.5))) == 0.0


def test_token_logprobs_match_log_softmax_gather():
    rng = np.random.default_rng(2)
    logits = f32(rng.normal(0, 3, (2, 5, 11)))
    tokens = rng.integers(0, 11, (2, 5))
    got = np.asarray(
        grpo.token_logprobs(
            jnp.asarray(logits, jnp.bfloat16).astype(jnp.float32), jnp.asarray(tokens)
        )
    )
    logits_bf16 = np.asarray(jnp.asarray(logits, jnp.bfloat16).astype(jnp.float32), np.float64)
    for n in range(2):
        for t in range(5):
            row = logits_bf16[n, t]
            want = row[tokens[n, t]] - math.log(sum(math.exp(v) for v in row))
            np.testing.assert_allclose(got[n, t], want, rtol=RTOL)
    assert (
        grpo.token_logprobs(jnp.asarray(logits, jnp.bfloat16), jnp.asarray(tokens)).dtype
        == jnp.float32
    )


# ----------------------------------------------------------------------------- DAPO helpers


def test_dynamic_sampling_mask_drops_constant_groups():
    rewards = jnp.array([1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0])
    got = np.asarray(grpo.dynamic_sampling_mask(rewards, 3))
    np.testing.assert_array_equal(got, [False] * 3 + [True] * 3 + [False] * 3)
    got_2d = np.asarray(grpo.dynamic_sampling_mask(rewards.reshape(3, 3), 3))
    np.testing.assert_array_equal(got_2d, got.reshape(3, 3))


def test_overlong_penalty_dapo_numbers():
    # L_max = 20480, L_cache = 4096 [DAPO]: free up to 16384, -1 beyond 20480, linear between.
    lengths = jnp.array([100, 16384, 16385, 18432, 20480, 20481])
    got = np.asarray(grpo.overlong_penalty(lengths, 20480, 4096))
    np.testing.assert_allclose(got, [0.0, 0.0, -1 / 4096, -0.5, -1.0, -1.0], rtol=RTOL)
    with pytest.raises(ValueError, match="cache_len=0"):
        grpo.overlong_penalty(lengths, 20480, 0)


def test_overlong_filter_mask():
    lengths = jnp.array([3, 8, 8])
    np.testing.assert_array_equal(
        np.asarray(grpo.overlong_filter_mask(lengths, 8)), [True, False, False]
    )
    finished = jnp.array([True, True, False])
    np.testing.assert_array_equal(
        np.asarray(grpo.overlong_filter_mask(lengths, 8, finished)), [True, True, False]
    )
