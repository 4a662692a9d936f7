"""AdamW as in DeepSeek-V3 [§4.2]: betas (0.9, 0.95), weight decay 0.1, grad clip 1.0, warmup
then cosine or constant. Which params are decayed, not decayed (norms, biases) or frozen (routing
biases, updated by rule) is their variable type (`models.param_roles`)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from r1jax.field_checks import at_least, between, check_fields, one_of, positive
from r1jax.nn.params import ROLES


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

    def __post_init__(self):
        check_fields(self, lr=positive(), warmup_steps=at_least(0),
                     schedule=one_of("cosine", "constant"), decay_steps=at_least(0),
                     end_lr_ratio=between(0, 1), b1=between(0, 1, include_high=False),
                     b2=between(0, 1, include_high=False), eps=positive(),
                     weight_decay=at_least(0), grad_clip=positive())


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


def make_optimizer(cfg: OptimConfig, total_steps: int, roles) -> optax.GradientTransformation:
    """AdamW per param role: `roles` is the tree of `models.param_roles(model_cfg)` ("decay",
    "no_decay", "frozen"), read from the variable types, never from names."""
    lr = learning_rate(cfg, total_steps)

    def adamw(wd):
        inner = optax.adamw(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=wd)
        return store_moments_in_bf16(inner) if cfg.bf16_moments else inner

    unknown = sorted({r for r in jax.tree.leaves(roles)} - set(ROLES))
    if unknown:
        raise ValueError(f"param roles {unknown} are not among {ROLES}")
    # Clip on the global norm of all trainable grads first, then per-role AdamW.
    return optax.chain(
        optax.clip_by_global_norm(cfg.grad_clip),
        optax.multi_transform({"decay": adamw(cfg.weight_decay), "no_decay": adamw(0.0),
                               "frozen": optax.set_to_zero()}, roles),
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
