"""AdamW as in DeepSeek-V3 [§4.2]: betas (0.9, 0.95), weight decay 0.1, grad clip 1.0, warmup
then cosine or constant, no decay on norms/biases, routing biases frozen (updated by rule)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    lr: float = 3e-4
    warmup_steps: int = 100
    schedule: str = "cosine"  # "cosine" (decay to end_lr_ratio * lr) or "constant"
    decay_steps: int = 0  # cosine length; 0 = the run's total steps
    end_lr_ratio: float = 0.1
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    bf16_moments: bool = False  # V3 keeps AdamW moments in BF16 [§3.3]


def learning_rate(cfg: OptimConfig, total_steps: int) -> optax.Schedule:
    warmup = optax.linear_schedule(0.0, cfg.lr, max(cfg.warmup_steps, 1))
    if cfg.schedule == "constant":
        after = optax.constant_schedule(cfg.lr)
    elif cfg.schedule == "cosine":
        length = max((cfg.decay_steps or total_steps) - cfg.warmup_steps, 1)
        after = optax.cosine_decay_schedule(cfg.lr, length, alpha=cfg.end_lr_ratio)
    else:
        raise ValueError(f"optim.schedule={cfg.schedule!r}; choose 'cosine' or 'constant'")
    return optax.join_schedules([warmup, after], [cfg.warmup_steps])


def is_routing_bias(path) -> bool:
    return path[-1] == "bias" and "moe" in path


def _labels(params):
    def label(path, _):
        keys = tuple(getattr(k, "key", getattr(k, "idx", None)) for k in path)
        if is_routing_bias(keys):
            return "frozen"
        # Norm scales (1-D) are not decayed; matrices are.
        return "decay" if keys[-1] != "scale" else "no_decay"
    return jax.tree_util.tree_map_with_path(label, params)


def make_optimizer(cfg: OptimConfig, total_steps: int) -> optax.GradientTransformation:
    lr = learning_rate(cfg, total_steps)

    def adamw(wd):
        inner = optax.adamw(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=wd)
        return store_moments_in_bf16(inner) if cfg.bf16_moments else inner

    # Clip on the global norm of all trainable grads first, then per-group AdamW.
    return optax.chain(
        optax.clip_by_global_norm(cfg.grad_clip),
        optax.multi_transform({"decay": adamw(cfg.weight_decay), "no_decay": adamw(0.0),
                               "frozen": optax.set_to_zero()}, _labels),
    )


def store_moments_in_bf16(inner: optax.GradientTransformation) -> optax.GradientTransformation:
    """Keep float state (both Adam moments) in bfloat16 between steps, math in float32."""
    def down(tree):
        return jax.tree.map(lambda x: x.astype(jnp.bfloat16)
                            if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)

    def up(tree):
        return jax.tree.map(lambda x: x.astype(jnp.float32) if x.dtype == jnp.bfloat16 else x, tree)

    def init(params):
        return down(inner.init(params))

    def update(updates, state, params=None):
        updates, state = inner.update(updates, up(state), params)
        return updates, down(state)

    return optax.GradientTransformation(init, update)
