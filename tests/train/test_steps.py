"""The SFT/pretrain step: gradient accumulation is exact, loss falls, routing bias follows load;
the optimizer's roles come from the variable types of both architectures."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax import config, models
from r1jax.models import qwen2
from r1jax.train.optim import OptimConfig, learning_rate, make_optimizer
from r1jax.train.state import init_state
from r1jax.train.steps import sft_step_fn


def toy_batch(cfg, b=4, t=16, seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, cfg.vocab_size, (b, t + 1)).astype(np.int32)
    seg = np.ones((b, t), np.int32)
    seg[0, 9:] = 2  # a packed row with two documents
    seg[1, 12:] = 0  # padding
    positions = np.concatenate([np.arange(9), np.arange(t - 9)])[None].repeat(b, 0)
    positions[1:] = np.arange(t)
    return {"inputs": jnp.asarray(tokens[:, :-1]), "targets": jnp.asarray(tokens[:, 1:]),
            "loss_mask": jnp.asarray(seg > 0), "segment_ids": jnp.asarray(seg),
            "positions": jnp.asarray(positions.astype(np.int32))}


@pytest.fixture(scope="module")
def setup():
    cfg = config.tiny()
    ocfg = OptimConfig(lr=3e-3, warmup_steps=1)
    tx = make_optimizer(ocfg, 100, models.param_roles(cfg))
    return cfg, tx, learning_rate(ocfg, 100)


def test_grad_accumulation_is_exact(setup):
    cfg, tx, _ = setup
    state = init_state(cfg, tx, jax.random.key(0))
    batch = toy_batch(cfg)
    with jax.default_matmul_precision("highest"):
        s1, m1 = jax.jit(sft_step_fn(cfg, tx, grad_accum=1))(state, batch)
        s2, m2 = jax.jit(sft_step_fn(cfg, tx, grad_accum=2))(state, batch)
    for key in ("loss", "nll", "mtp_loss", "grad_norm"):
        np.testing.assert_allclose(float(m1[key]), float(m2[key]), rtol=2e-5, err_msg=key)
    diff = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), s1.params, s2.params)
    assert max(jax.tree.leaves(diff)) < 1e-5


def test_loss_falls_and_bias_moves(setup):
    cfg, tx, lr = setup
    state = init_state(cfg, tx, jax.random.key(1))
    step = jax.jit(sft_step_fn(cfg, tx, bias_update_speed=1e-3, lr_schedule=lr))
    batch = toy_batch(cfg, seed=3)
    losses = []
    for _ in range(30):
        state, m = step(state, batch)
        losses.append(float(m["loss"]))
    assert losses[-1] < 0.7 * losses[0], losses
    bias = state.params["layers"][1]["moe"]["bias"]
    assert float(jnp.abs(bias).max()) > 0  # moved by the rule, not frozen at 0
    # |b| grows by exactly speed per step at most (sign rule), never by gradients.
    assert float(jnp.abs(bias).max()) <= 30 * 1e-3 + 1e-7
    assert int(state.step) == 30 and float(m["lr"]) > 0


def flat_roles(cfg) -> dict:
    leaves = jax.tree_util.tree_flatten_with_path(models.param_roles(cfg))[0]
    return {"/".join(str(getattr(k, "key", k)) for k in path): role for path, role in leaves}


def test_param_roles_come_from_variable_types():
    deepseek = flat_roles(config.tiny())
    assert deepseek["layers/1/moe/bias"] == "frozen"  # routing bias: moved by the rule only
    assert deepseek["mtp/0/block/moe/bias"] == "frozen"
    for name in ("layers/0/attn_norm/scale", "layers/0/attn/q_norm/scale", "final_norm/scale",
                 "mtp/0/enorm/scale"):
        assert deepseek[name] == "no_decay", name
    for name in ("embed", "lm_head", "layers/0/attn/q_a", "layers/1/moe/gate", "mtp/0/eh_proj"):
        assert deepseek[name] == "decay", name
    assert set(deepseek.values()) == {"decay", "no_decay", "frozen"}
    student = flat_roles(qwen2.tiny())
    for name in ("layers/0/attn/q_bias", "layers/0/attn/k_bias", "layers/0/attn/v_bias",
                 "layers/0/attn_norm/scale", "final_norm/scale"):
        assert student[name] == "no_decay", name  # Qwen2's q/k/v biases are not decayed
    assert student["layers/0/attn/q"] == "decay" and "frozen" not in student.values()


def test_weight_decay_follows_the_roles():
    """One AdamW step on zero gradients: only weight decay moves params, and only "decay" ones."""
    cfg = qwen2.tiny()
    tx = make_optimizer(OptimConfig(lr=0.1, warmup_steps=0, weight_decay=0.5), 10,
                        models.param_roles(cfg))
    params = jax.tree.map(jnp.ones_like, models.init(cfg, jax.random.key(0)))
    updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    roles = models.param_roles(cfg)
    moved = jax.tree.map(lambda u, r: (bool(jnp.any(u != 0)), r), updates, roles)
    for is_moved, role in jax.tree.leaves(moved, is_leaf=lambda x: isinstance(x, tuple)):
        assert is_moved == (role == "decay"), role
    with pytest.raises(ValueError, match=r"param roles \['trainable'\]"):
        make_optimizer(OptimConfig(), 10, {"w": "trainable"})
