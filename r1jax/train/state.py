"""TrainState: float32 master params (routing biases inside, frozen for the optimizer),
optimizer state, step and rng. Built sharded: shapes from eval_shape, shardings from the
logical-axis table, then one jitted init with out_shardings."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax.sharding import Mesh

from r1jax import models
from r1jax.config import ModelConfig
from r1jax.sharding import replicated, shardings_like


@struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array


def init_state(model_cfg: ModelConfig, tx: optax.GradientTransformation, rng) -> TrainState:
    params_rng, state_rng = jax.random.split(rng)
    return state_from_params(tx, models.init(model_cfg, params_rng), state_rng)


def state_from_params(tx: optax.GradientTransformation, params, rng) -> TrainState:
    """Step 0 of training `params` (e.g. restored from an earlier stage): fresh optimizer state."""
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                      rng=rng)


def state_shardings(model_cfg: ModelConfig, tx, mesh: Mesh):
    """NamedShardings for every leaf of TrainState: params by their logical axes, optimizer
    moments like the params they belong to, scalars replicated."""
    abstract = jax.eval_shape(lambda k: init_state(model_cfg, tx, k), jax.random.key(0))
    axes = models.param_axes(model_cfg)
    param_sh = shardings_like(abstract.params, axes, mesh)
    flat_axes = {jax.tree_util.keystr(p): a for p, a in
                 jax.tree_util.tree_flatten_with_path(axes, is_leaf=lambda x: isinstance(x, tuple))[0]}

    def opt_leaf(path, leaf):
        # optax moment trees mirror the params: match on the path suffix naming the param.
        key = jax.tree_util.keystr(path)
        for pkey, a in flat_axes.items():
            if key.endswith(pkey) and len(a) == leaf.ndim:
                return shardings_like(leaf, a, mesh)
        return replicated(mesh)

    opt_sh = jax.tree_util.tree_map_with_path(opt_leaf, abstract.opt_state)
    rep = replicated(mesh)
    return TrainState(step=rep, params=param_sh, opt_state=opt_sh, rng=rep), abstract


def create_sharded_state(model_cfg: ModelConfig, tx, mesh: Mesh, rng) -> tuple[TrainState, Any]:
    shardings, _ = state_shardings(model_cfg, tx, mesh)
    init = jax.jit(lambda k: init_state(model_cfg, tx, k), out_shardings=shardings)
    return init(rng), shardings
