"""Parameter creation with logical axis names, and the variable types that give params roles.

Every weight carries `axes` metadata: one logical name per dimension (`embed`, `vocab`, `heads`,
`q_lora`, `kv_lora`, `mlp`, `expert`, ...). `r1jax/sharding.py` maps those names to mesh axes in
one table; no model code ever names a mesh axis.

A param's role in training is its variable type, never its name:
  nnx.Param    trained, weight-decayed (matrices, embeddings)
  NoDecay      trained, not decayed (norm scales, additive biases)
  RoutingBias  not trained by gradients: the aux-loss-free balancing rule moves it
`variable_roles` reads these types into a tree of labels (`ROLES`) that the optimizer uses.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


class RoutingBias(nnx.Variable):
    """The aux-loss-free expert bias b_i [V3 eq. 16]: used only for expert selection, updated by
    the balancing rule after each step (never by gradients), so it is its own variable type and
    training code can split it from the trainable `nnx.Param`s."""


class NoDecay(nnx.Param):
    """A trained param that weight decay leaves alone: RMSNorm scales and additive biases (decay
    would pull a norm's gain toward 0, and neither adds capacity that decay should restrain)."""


ROLES = ("decay", "no_decay", "frozen")


def variable_roles(state: nnx.State):
    """Pure-dict tree of each variable's role in `ROLES`, from its type."""
    def role(variable: nnx.Variable) -> str:
        if isinstance(variable, RoutingBias):
            return "frozen"
        if isinstance(variable, NoDecay):
            return "no_decay"
        if isinstance(variable, nnx.Param):
            return "decay"
        raise TypeError(f"{type(variable).__name__} has no training role; use nnx.Param, NoDecay "
                        "or RoutingBias")
    return nnx.to_pure_dict(jax.tree.map(role, state, is_leaf=lambda x: isinstance(x, nnx.Variable)))


def normal_param(rngs: nnx.Rngs, shape: tuple[int, ...], axes: tuple[str | None, ...],
                 std: float, dtype) -> nnx.Param:
    if len(shape) != len(axes):
        raise ValueError(f"{shape=} and {axes=} must have the same rank")
    value = std * jax.random.normal(rngs.params(), shape, jnp.float32)
    return nnx.Param(value.astype(dtype), axes=axes)


def ones_param(shape: tuple[int, ...], axes: tuple[str | None, ...], dtype) -> NoDecay:
    """A norm scale: starts at 1, not weight-decayed."""
    return NoDecay(jnp.ones(shape, dtype), axes=axes)


def zeros_param(shape: tuple[int, ...], axes: tuple[str | None, ...], dtype) -> NoDecay:
    """An additive bias: starts at 0, not weight-decayed."""
    return NoDecay(jnp.zeros(shape, dtype), axes=axes)


def variable_axes(state: nnx.State):
    """Pure-dict tree of the logical axes of every variable in `state`."""
    return nnx.to_pure_dict(
        jax.tree.map(lambda v: v.get_metadata().get("axes"), state,
                     is_leaf=lambda x: isinstance(x, nnx.Variable)))


def merge_params(abstract_module: nnx.Module, params: dict):
    """The module `abstract_module` describes, holding `params` (a pure dict, e.g. tracers)."""
    graphdef, state = nnx.split(abstract_module)
    try:
        nnx.replace_by_pure_dict(state, params)
    except (KeyError, ValueError) as e:
        raise ValueError(f"params do not match the config's structure: {e}") from e
    return nnx.merge(graphdef, state)
