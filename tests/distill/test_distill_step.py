"""distill_step: its gradient is jax.grad of `distill_loss` on the two models' logits (online
teacher and stored top-k), accumulation is exact, top-k with k = V is the full loss, and a
student trained on a fixed batch moves toward its teacher.

Tolerance rule: the step and the references run the same float32 math in different programs
(value_and_grad + microbatch scan vs one jax.grad), so they differ by float32 rounding only:
rtol 1e-5, with an absolute floor of 1e-6 x the largest entry for gradients that cross zero.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from r1jax import config, models
from r1jax.distill.distill_step import distill_step_fn, teacher_topk_batch
from r1jax.distill.losses import distill_loss, topk_teacher
from r1jax.train.state import TrainState

RTOL = 1e-5
# An MoE teacher (dense + MoE layer) and a smaller dense student (one layer, half the width, no
# MTP): the R1-Distill shape in miniature. Same vocabulary.
STUDENT = config.tiny(num_layers=1, hidden_size=32, num_mtp_modules=0, init_std=0.05)
TEACHER = config.tiny(num_layers=2, num_mtp_modules=0, init_std=0.3)
FULL = dict(temperature=2.0, hard_label_weight=0.25)  # exercises τ² and the hard-label term


def capture_grads() -> optax.GradientTransformation:
    """An 'optimizer' whose state after a step is exactly that step's gradient."""
    return optax.GradientTransformation(
        lambda params: jax.tree.map(jnp.zeros_like, params),
        lambda grads, state, params=None: (jax.tree.map(jnp.zeros_like, grads), grads))


def token_batch(b=4, t=12, seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, STUDENT.vocab_size, (b, t + 1)).astype(np.int32)
    seg = np.ones((b, t), np.int32)
    seg[1, 7:] = 0  # padding: the two grad_accum halves hold different numbers of tokens
    loss_mask = seg > 0
    loss_mask[0, :4] = False  # a masked prompt
    return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "loss_mask": loss_mask,
            "segment_ids": seg, "positions": np.broadcast_to(np.arange(t, dtype=np.int32), (b, t))}


def forward(cfg, params, batch):
    seg = batch["segment_ids"]
    return models.forward(cfg, params, batch["inputs"], positions=batch["positions"],
                          attention_mask=seg > 0, segment_ids=seg, with_mtp=False)


def start_state(student_params, tx):
    return TrainState(step=jnp.zeros((), jnp.int32), params=student_params,
                      opt_state=tx.init(student_params), rng=jax.random.key(0))


def step_grads(student_params, batch, **kw):
    """(metrics, grads) of one distill_step from the shared initial student."""
    tx = capture_grads()
    step = jax.jit(distill_step_fn(STUDENT, tx, **kw))
    state, metrics = step(start_state(student_params, tx), batch)
    return metrics, state.opt_state


def reference_grads(student_params, teacher, batch, **kw):
    """jax.grad of distill_loss (+ the student's balance loss) on the two forwards' logits."""

    def loss(p):
        logits, aux = forward(STUDENT, p, batch)
        value, _ = distill_loss(logits, teacher, batch["loss_mask"], labels=batch["targets"], **kw)
        return value + aux["balance_loss"]

    return jax.jit(jax.value_and_grad(loss))(student_params)


def assert_trees_close(actual, expected):
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        a, e = np.asarray(a), np.asarray(e)
        np.testing.assert_allclose(a, e, rtol=RTOL, atol=1e-6 * np.abs(e).max())


def host_init(cfg, seed):
    """Params distributed as models.init makes them (N(0, init_std^2) weights, unit norm scales,
    zero routing biases), drawn with numpy: compiling jax's RNG for every weight of even a tiny
    model takes ~10 s on CPU."""
    rng = np.random.default_rng(seed)

    def leaf(path, abstract):
        name = path[-1].key
        if name in ("scale", "bias"):
            return np.full(abstract.shape, 1.0 if name == "scale" else 0.0, abstract.dtype)
        return rng.normal(0.0, cfg.init_std, abstract.shape).astype(abstract.dtype)

    return jax.tree_util.tree_map_with_path(leaf, models.abstract_params(cfg))


@pytest.fixture(scope="module")
def student_params():
    return host_init(STUDENT, 0)


@pytest.fixture(scope="module")
def teacher_params():
    return host_init(TEACHER, 1)


@pytest.fixture(scope="module")
def batch():
    return token_batch()


@pytest.fixture(scope="module")
def teacher_logits(teacher_params, batch):
    return jax.jit(forward, static_argnums=0)(TEACHER, teacher_params, batch)[0]  # (B, T, V)


@pytest.fixture(scope="module")
def online(student_params, teacher_params, batch):
    """One online forward-KL step (full logits, τ = 2, hard labels), shared by three tests."""
    return step_grads(student_params, {**batch, "teacher": teacher_params}, teacher_cfg=TEACHER,
                      **FULL)


def test_online_gradient_is_grad_of_distill_loss(online, student_params, teacher_logits, batch):
    metrics, grads = online
    loss, expected = reference_grads(student_params, teacher_logits, batch, kind="forward_kl",
                                     **FULL)
    np.testing.assert_allclose(float(metrics["loss"]), float(loss), rtol=RTOL)
    assert float(metrics["hard_ce"]) > 0 and float(metrics["forward_kl"]) > 0
    assert_trees_close(grads, expected)


def test_topk_gradient_is_grad_of_topk_distill_loss(student_params, teacher_params, teacher_logits,
                                                    batch):
    kw = dict(kind="reverse_kl", temperature=1.5)
    stored = teacher_topk_batch(TEACHER, teacher_params, batch, 8, temperature=1.5)
    assert stored["teacher_topk_ids"].shape == (4, 12, 8)
    metrics, grads = step_grads(student_params, {**batch, **stored}, topk=8, **kw)
    teacher = topk_teacher(teacher_logits, 8, temperature=1.5)
    loss, expected = reference_grads(student_params, teacher, batch, **kw)
    np.testing.assert_allclose(float(metrics["loss"]), float(loss), rtol=RTOL)
    assert_trees_close(grads, expected)


def test_grad_accum_2_equals_1(online, student_params, teacher_params, batch):
    metrics, grads = online
    metrics2, grads2 = step_grads(student_params, {**batch, "teacher": teacher_params},
                                  teacher_cfg=TEACHER, grad_accum=2, **FULL)
    for name in ("loss", "forward_kl", "hard_ce", "grad_norm"):
        np.testing.assert_allclose(float(metrics2[name]), float(metrics[name]), rtol=RTOL)
    assert_trees_close(grads2, grads)


def test_topk_with_k_equal_vocab_is_the_full_loss(online, student_params, teacher_params, batch):
    metrics, grads = online
    stored = teacher_topk_batch(TEACHER, teacher_params, batch, TEACHER.vocab_size,
                                temperature=FULL["temperature"])
    metrics_k, grads_k = step_grads(student_params, {**batch, **stored}, **FULL)
    np.testing.assert_allclose(float(metrics_k["loss"]), float(metrics["loss"]), rtol=RTOL)
    assert_trees_close(grads_k, grads)


def test_student_learns_a_fixed_teacher(student_params, teacher_params):
    batch = {**token_batch(seed=2), "teacher": teacher_params}
    tx = optax.adam(3e-2)
    state = start_state(student_params, tx)
    step = jax.jit(distill_step_fn(STUDENT, tx, teacher_cfg=TEACHER, bias_update_speed=1e-3))
    kl = []
    for _ in range(30):
        state, metrics = step(state, batch)
        kl.append(float(metrics["forward_kl"]))
    assert kl[0] > 1.0, kl  # a sharp random teacher is far from the near-uniform student
    assert kl[-1] < 0.25 * kl[0], kl


def test_vocab_mismatch_fails_at_construction():
    with pytest.raises(ValueError, match=r"student vocab_size=256 != teacher vocab_size=128"):
        distill_step_fn(STUDENT, optax.sgd(0.1), teacher_cfg=TEACHER.replace(vocab_size=128))


def test_missing_teacher_is_named(student_params, teacher_params, batch):
    tx = optax.sgd(0.1)
    state = start_state(student_params, tx)
    with pytest.raises(ValueError, match="teacher_topk_logprobs"):
        distill_step_fn(STUDENT, tx)(state, batch)
    with pytest.raises(ValueError, match=r"batch\['teacher'\]"):
        distill_step_fn(STUDENT, tx, teacher_cfg=TEACHER)(state, batch)
    with pytest.raises(ValueError, match="without teacher_cfg"):
        distill_step_fn(STUDENT, tx)(state, {**batch, "teacher": teacher_params})
