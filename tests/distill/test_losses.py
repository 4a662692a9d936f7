"""Distillation losses vs float64 numpy references written from the definitions.

Tolerance rule: jax runs in float32, the references in float64 on the same float32-rounded
logits; the losses are O(1) sums of O(V) terms, so float32 rounding stays below rtol 1e-5, and
per-logit gradients (O(1/(N*T)), crossing zero) get an extra atol of 1e-7.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax.distill import losses

RTOL = 1e-5
GRAD_ATOL = 1e-7
VOCAB = 16


def f32(x):
    return np.asarray(x, np.float32).astype(np.float64)


# ----------------------------------------------------------------------------- reference


def softmax64(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def ref_divergence_and_grad(student, teacher, kind, beta):
    """Divergence between bucket probabilities and its derivative w.r.t. the student's buckets."""
    s, p = student, teacher
    if kind == "jsd" and beta == 0.0:
        kind = "forward_kl"
    if kind == "jsd" and beta == 1.0:
        kind = "reverse_kl"
    if kind == "forward_kl":
        return sum(pi * math.log(pi / si) for pi, si in zip(p, s) if pi > 0), -p / s
    if kind == "reverse_kl":
        return sum(si * math.log(si / pi) for pi, si in zip(p, s) if si > 0), np.log(s / p) + 1
    m = beta * p + (1 - beta) * s
    value = beta * sum(pi * math.log(pi / mi) for pi, mi in zip(p, m) if pi > 0)
    value += (1 - beta) * sum(si * math.log(si / mi) for si, mi in zip(s, m) if si > 0)
    return value, (1 - beta) * np.log(s / m)


def ref_loss_and_grad(student_logits, teacher_logits, mask, kind, beta, temperature, k=None):
    """τ² token-mean divergence and d/d(student logits), token by token in float64.

    With k, the teacher's top-k tokens are buckets of their own and all other tokens share one
    "rest" bucket (for both distributions). The gradient goes through the buckets (d/ds_j =
    d/dS_bucket(j)) and then the softmax: d/dz = (1/τ) s ⊙ (g - <s, g>).
    """
    num_seqs, max_tokens, vocab = student_logits.shape
    total = mask.sum()
    loss, grad = 0.0, np.zeros_like(student_logits)
    for n in range(num_seqs):
        for t in range(max_tokens):
            if not mask[n, t]:
                continue
            s = softmax64(student_logits[n, t] / temperature)
            p = softmax64(teacher_logits[n, t] / temperature)
            if k is None or k == vocab:
                bucket = np.arange(vocab)
            else:
                top = np.argsort(-p, kind="stable")[:k]
                bucket = np.full(vocab, k)  # everything else goes to bucket k, the rest
                bucket[top] = np.arange(k)
            num_buckets = bucket.max() + 1
            s_b = np.bincount(bucket, weights=s, minlength=num_buckets)
            p_b = np.bincount(bucket, weights=p, minlength=num_buckets)
            value, g_b = ref_divergence_and_grad(s_b, p_b, kind, beta)
            g = g_b[bucket]
            loss += temperature**2 * value / total
            grad[n, t] = temperature**2 / total * (s * (g - s @ g)) / temperature
    return loss, grad


def make_logits(seed, num_seqs=3, max_tokens=5, vocab=VOCAB):
    rng = np.random.default_rng(seed)
    student = f32(rng.normal(0, 1.5, (num_seqs, max_tokens, vocab)))
    teacher = f32(rng.normal(0, 2.5, (num_seqs, max_tokens, vocab)))
    lengths = np.array([max_tokens, 2, 0])[:num_seqs]
    mask = np.arange(max_tokens)[None, :] < lengths[:, None]
    return student, teacher, mask


KINDS = [
    ("forward_kl", 0.0),
    ("reverse_kl", 0.0),
    ("jsd", 0.0),
    ("jsd", 0.1),
    ("jsd", 0.5),
    ("jsd", 0.9),
    ("jsd", 1.0),
]


def jax_loss_fn(kind, beta, temperature, k):
    """The public per-kind function (full or top-k) as a function of the student logits."""

    def full(student, teacher, mask):
        if kind == "forward_kl":
            return losses.forward_kl(student, teacher, mask, temperature)
        if kind == "reverse_kl":
            return losses.reverse_kl(student, teacher, mask, temperature)
        return losses.generalized_jsd(student, teacher, mask, beta, temperature)

    def topk(student, teacher, mask):
        teacher_topk = losses.topk_teacher(teacher, k, temperature=temperature)
        if kind == "forward_kl":
            return losses.topk_forward_kl(student, teacher_topk, mask, temperature)
        if kind == "reverse_kl":
            return losses.topk_reverse_kl(student, teacher_topk, mask, temperature)
        return losses.topk_generalized_jsd(student, teacher_topk, mask, beta, temperature)

    return full if k is None else topk


@pytest.mark.parametrize("k", [None, 1, 5])
@pytest.mark.parametrize("kind,beta", KINDS)
def test_loss_and_grad_match_reference(kind, beta, k):
    student, teacher, mask = make_logits(seed=len(kind) + int(10 * beta))
    for temperature in (0.5, 2.0):  # τ = 1 is covered by the tests below
        want_loss, want_grad = ref_loss_and_grad(student, teacher, mask, kind, beta, temperature, k)
        fn = jax_loss_fn(kind, beta, temperature, k)
        loss, grad = jax.value_and_grad(fn)(
            *(jnp.asarray(x, jnp.float32) for x in (student, teacher, mask))
        )
        np.testing.assert_allclose(float(loss), want_loss, rtol=RTOL)
        np.testing.assert_allclose(np.asarray(grad), want_grad, rtol=RTOL, atol=GRAD_ATOL)
        assert np.all(np.asarray(grad)[~mask] == 0.0)


def test_reference_gradient_matches_finite_differences():
    """The analytic reference gradient (buckets, then softmax) checked by central differences."""
    student, teacher, mask = make_logits(seed=4, num_seqs=2, max_tokens=2, vocab=6)
    for kind, beta in [("forward_kl", 0.0), ("reverse_kl", 0.0), ("jsd", 0.3)]:
        for k in (None, 2):
            _, grad = ref_loss_and_grad(student, teacher, mask, kind, beta, 1.7, k)
            numeric = np.zeros_like(student)
            for idx in np.ndindex(*student.shape):
                plus, minus = student.copy(), student.copy()
                plus[idx] += 1e-6
                minus[idx] -= 1e-6
                numeric[idx] = (
                    ref_loss_and_grad(plus, teacher, mask, kind, beta, 1.7, k)[0]
                    - ref_loss_and_grad(minus, teacher, mask, kind, beta, 1.7, k)[0]
                ) / 2e-6
            np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)


def test_jsd_endpoints_are_the_kl_limits():
    """JSD_β/β -> forward KL (β -> 0) and JSD_β/(1-β) -> reverse KL (β -> 1), in float64."""
    rng = np.random.default_rng(5)
    s, p = softmax64(rng.normal(size=VOCAB)), softmax64(2 * rng.normal(size=VOCAB))
    forward, _ = ref_divergence_and_grad(s, p, "forward_kl", 0.0)
    reverse, _ = ref_divergence_and_grad(s, p, "reverse_kl", 0.0)
    for small in (1e-4, 1e-5):
        near_zero, _ = ref_divergence_and_grad(s, p, "jsd", small)
        near_one, _ = ref_divergence_and_grad(s, p, "jsd", 1 - small)
        # The next term of the expansion is O(β), so the relative error is a few times β.
        np.testing.assert_allclose(near_zero / small, forward, rtol=20 * small)
        np.testing.assert_allclose(near_one / small, reverse, rtol=20 * small)
    student, teacher, mask = (jnp.asarray(x, jnp.float32) for x in make_logits(seed=6))
    assert losses.generalized_jsd(student, teacher, mask, 0.0, 1.3) == losses.forward_kl(
        student, teacher, mask, 1.3
    )
    assert losses.generalized_jsd(student, teacher, mask, 1.0, 1.3) == losses.reverse_kl(
        student, teacher, mask, 1.3
    )


@pytest.mark.parametrize("kind,beta", [("forward_kl", 0.0), ("reverse_kl", 0.0), ("jsd", 0.5)])
def test_topk_with_k_equal_vocab_is_the_full_loss(kind, beta):
    student, teacher, mask = (jnp.asarray(x, jnp.float32) for x in make_logits(seed=7))
    for temperature in (0.7, 1.0, 2.0):

        def loss_vs(target, s, temperature=temperature):
            return losses.distill_loss(
                s, target, mask, kind=kind, beta=beta, temperature=temperature
            )[0]

        topk = losses.topk_teacher(teacher, VOCAB, temperature=temperature)
        full_loss, full_grad = jax.value_and_grad(loss_vs, argnums=1)(teacher, student)
        top_loss, top_grad = jax.value_and_grad(loss_vs, argnums=1)(topk, student)
        np.testing.assert_array_equal(np.asarray(top_loss), np.asarray(full_loss))
        np.testing.assert_array_equal(np.asarray(top_grad), np.asarray(full_grad))


def test_topk_teacher_values_ids_and_bytes():
    _, teacher, _ = make_logits(seed=8)
    topk = losses.topk_teacher(jnp.asarray(teacher, jnp.float32), 4, temperature=2.0)
    assert topk.logprobs.shape == topk.ids.shape == (3, 5, 4) and topk.ids.dtype == jnp.int32
    assert topk.rest_logprob.shape == (3, 5)
    for n, t in np.ndindex(3, 5):
        z = teacher[n, t] / 2.0
        logp = z - math.log(np.exp(z).sum())
        want_ids = np.argsort(-logp, kind="stable")[:4]
        np.testing.assert_array_equal(np.asarray(topk.ids[n, t]), want_ids)
        np.testing.assert_allclose(np.asarray(topk.logprobs[n, t]), logp[want_ids], rtol=RTOL)
        rest = np.exp(np.delete(logp, want_ids)).sum()
        np.testing.assert_allclose(float(topk.rest_logprob[n, t]), math.log(rest), rtol=RTOL)
    # K*(fp32 + int32) vs V*4 (fp32) or V*2 (bf16), DeepSeek-V3 vocabulary.
    assert losses.teacher_bytes_per_token(129280, 64) == 64 * (4 + 4) + 4
    assert losses.teacher_bytes_per_token(129280) == 517120
    assert losses.teacher_bytes_per_token(129280, logit_bytes=2) == 258560
    with pytest.raises(ValueError, match="k=17"):
        losses.topk_teacher(jnp.asarray(teacher), 17)


def test_confident_teacher_and_padded_vocab_stay_finite():
    # Row 0: a confident teacher (rest mass ~e^-119, below float32). Row 1: the teacher's rest is
    # padding only (-inf logits). The rest bucket is floored at float32 tiny, never log(0).
    student = jnp.zeros((1, 2, VOCAB))
    teacher = np.zeros((1, 2, VOCAB), np.float32)
    teacher[0, 0, 3], teacher[0, 0, 5] = 120.0, 119.0
    teacher[0, 1, :] = -np.inf
    teacher[0, 1, 3], teacher[0, 1, 5] = 1.0, 0.0
    topk, mask = losses.topk_teacher(jnp.asarray(teacher), 2), jnp.ones((1, 2))
    assert float(topk.rest_logprob[0, 1]) == -np.inf

    def three_losses(s):
        fns = (losses.topk_forward_kl, losses.topk_reverse_kl, losses.topk_generalized_jsd)
        values = jnp.stack([fn(s, topk, mask) for fn in fns])
        return values, values

    grads, values = jax.jit(jax.jacrev(three_losses, has_aux=True))(student)
    assert np.all(np.isfinite(np.asarray(values))) and np.all(np.isfinite(np.asarray(grads)))

    # Vocabulary padded with -inf logits in both models: the padding is ignored, as if absent.
    student, teacher, mask = make_logits(seed=9)
    pad = np.full(student.shape[:2] + (4,), -np.inf)
    kinds = [("forward_kl", 0.0), ("reverse_kl", 0.0), ("jsd", 0.5)]

    def all_kinds(s, t):
        values = jnp.stack([losses.distill_loss(s, t, mask, kind=k, beta=b)[0] for k, b in kinds])
        return values, values

    padded = [jnp.asarray(np.concatenate([x, pad], -1), jnp.float32) for x in (student, teacher)]
    grads, values = jax.jit(jax.jacrev(all_kinds, has_aux=True))(*padded)
    for i, (kind, beta) in enumerate(kinds):
        want, want_grad = ref_loss_and_grad(student, teacher, mask, kind, beta, 1.0)
        np.testing.assert_allclose(float(values[i]), want, rtol=RTOL)
        np.testing.assert_allclose(
            np.asarray(grads[i])[..., :VOCAB], want_grad, rtol=RTOL, atol=GRAD_ATOL
        )
        assert np.all(np.asarray(grads[i])[..., VOCAB:] == 0.0)


def test_distill_loss_mixes_hard_label_cross_entropy():
    student, teacher, mask = make_logits(seed=10)
    labels = np.random.default_rng(10).integers(0, VOCAB, mask.shape)
    weight, temperature = 0.3, 2.0
    soft, soft_grad = ref_loss_and_grad(student, teacher, mask, "jsd", 0.5, temperature)
    hard, hard_grad = 0.0, np.zeros_like(student)
    for n, t in zip(*np.nonzero(mask)):
        s = softmax64(student[n, t])  # cross-entropy at τ = 1
        hard -= math.log(s[labels[n, t]]) / mask.sum()
        hard_grad[n, t] = (s - np.eye(VOCAB)[labels[n, t]]) / mask.sum()

    def fn(s):
        return losses.distill_loss(
            s,
            jnp.asarray(teacher, jnp.float32),
            jnp.asarray(mask),
            kind="jsd",
            beta=0.5,
            temperature=temperature,
            hard_label_weight=weight,
            labels=jnp.asarray(labels),
        )

    (loss, metrics), grad = jax.value_and_grad(fn, has_aux=True)(jnp.asarray(student, jnp.float32))
    np.testing.assert_allclose(float(metrics["soft_loss"]), soft, rtol=RTOL)
    np.testing.assert_allclose(float(metrics["hard_loss"]), hard, rtol=RTOL)
    np.testing.assert_allclose(float(loss), (1 - weight) * soft + weight * hard, rtol=RTOL)
    np.testing.assert_allclose(
        np.asarray(grad), (1 - weight) * soft_grad + weight * hard_grad, rtol=RTOL, atol=GRAD_ATOL
    )


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="student vocab_size=100 != teacher vocab_size=128"):
        losses.check_same_vocab(100, 128)
    x = jnp.zeros((1, 2, VOCAB))
    with pytest.raises(ValueError, match="vocab_size=8"):
        losses.forward_kl(jnp.zeros((1, 2, 8)), x, jnp.ones((1, 2)))
    with pytest.raises(ValueError, match="needs labels"):
        losses.distill_loss(x, x, jnp.ones((1, 2)), hard_label_weight=0.5)
    with pytest.raises(ValueError, match="kind='kl'"):
        losses.distill_loss(x, x, jnp.ones((1, 2)), kind="kl")
    with pytest.raises(ValueError, match="beta=1.5"):
        losses.generalized_jsd(x, x, jnp.ones((1, 2)), beta=1.5)
